"""Shared fixtures for integration tests: real certificates, a recording upstream, and the real
portcullis binary started with a config. Everything listens on 127.0.0.1, on ports the kernel
picks (the proxy prints "listener 'NAME' ready on ADDR", which we read back)."""
import datetime
import hashlib
import http.server
import ipaddress
import json
import os
import re
import signal
import socket
import socketserver
import ssl
import subprocess
import tempfile
import threading
import time
import urllib.request

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

BIN = os.environ.get("PORTCULLIS_BIN", os.path.join(os.path.dirname(__file__), "../../build/portcullis"))


# ---------------------------------------------------------------------------------------------
# Certificates


class CA:
    """An ECDSA P-256 CA that issues server and client certificates into a directory."""

    def __init__(self, directory, name="Test CA"):
        self.dir = directory
        self.key = ec.generate_private_key(ec.SECP256R1())
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
        now = datetime.datetime.now(datetime.timezone.utc)
        self.cert = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(subject)
            .public_key(self.key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=30))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(
                x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True
            )
            .sign(self.key, hashes.SHA256())
        )
        self.name = name.replace(" ", "_")
        self.ca_path = os.path.join(directory, f"{self.name}.crt")
        with open(self.ca_path, "wb") as f:
            f.write(self.cert.public_bytes(serialization.Encoding.PEM))

    def issue(self, name, cn=None, orgs=(), spiffe=None, dns=(), ips=(), server=False, client=True,
              expired=False, subject=None):
        """subject: exact subject attributes (e.g. none with a CN) instead of orgs + CN."""
        key = ec.generate_private_key(ec.SECP256R1())
        attrs = []
        for o in orgs:
            attrs.append(x509.NameAttribute(NameOID.ORGANIZATION_NAME, o))
        attrs.append(x509.NameAttribute(NameOID.COMMON_NAME, cn or name))
        if subject is not None:
            attrs = list(subject)
        now = datetime.datetime.now(datetime.timezone.utc)
        sans = [x509.DNSName(d) for d in dns] + [x509.IPAddress(ipaddress.ip_address(i)) for i in ips]
        if spiffe:
            sans.append(x509.UniformResourceIdentifier(spiffe))
        ekus = []
        if server:
            ekus.append(ExtendedKeyUsageOID.SERVER_AUTH)
        if client:
            ekus.append(ExtendedKeyUsageOID.CLIENT_AUTH)
        before = now - datetime.timedelta(days=10 if expired else 0, minutes=5)
        after = now - datetime.timedelta(days=1) if expired else now + datetime.timedelta(days=10)
        b = (
            x509.CertificateBuilder()
            .subject_name(x509.Name(attrs))
            .issuer_name(self.cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(before)
            .not_valid_after(after)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage(ekus), critical=False)
        )
        if sans:
            b = b.add_extension(x509.SubjectAlternativeName(sans), critical=False)
        cert = b.sign(self.key, hashes.SHA256())
        crt = os.path.join(self.dir, f"{name}.crt")
        keyp = os.path.join(self.dir, f"{name}.key")
        with open(crt, "wb") as f:
            f.write(cert.public_bytes(serialization.Encoding.PEM))
        with open(keyp, "wb") as f:
            f.write(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                      serialization.NoEncryption()))
        os.chmod(keyp, 0o600)
        return crt, keyp


class Pki:
    """One CA, a server certificate for 127.0.0.1/localhost, and named client certificates."""

    def __init__(self, directory):
        self.dir = directory
        self.ca = CA(directory)
        self.server_cert, self.server_key = self.ca.issue("server", dns=["localhost"], ips=["127.0.0.1"],
                                                          server=True, client=False)
        self.clients = {}

    def client(self, name, **kw):
        if name not in self.clients:
            self.clients[name] = self.ca.issue(name, **kw)
        return self.clients[name]


# ---------------------------------------------------------------------------------------------
# A recording upstream


class RecordingUpstream:
    """An HTTP/1.1 server on 127.0.0.1 that records every request it receives.

    GET  /stream?n=N&delay=S  chunked response with N pieces, S seconds apart
    GET  /download?size=N     N bytes (a repeating pattern), Content-Length
    POST|PUT any              answers {"bytes": n, "sha256": ...} of the body it read
    GET  /ws (Upgrade)        101, then echoes bytes back
    otherwise                 {"method", "path", "headers"}
    """

    def __init__(self, unix_path=None, tls_context=None):
        self.requests = []
        self.lock = threading.Lock()
        upstream = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *a):
                pass

            def record(self, body_len=0, digest=None):
                with upstream.lock:
                    upstream.requests.append({"method": self.command, "path": self.path,
                                              "headers": {k.lower(): v for k, v in self.headers.items()},
                                              "header_list": [(k.lower(), v) for k, v in self.headers.items()],
                                              "body_bytes": body_len, "sha256": digest})

            def read_body(self):
                h = hashlib.sha256()
                n = 0
                if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
                    while True:
                        line = self.rfile.readline()
                        size = int(line.split(b";")[0].strip(), 16)
                        if size == 0:
                            while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                                pass
                            break
                        left = size
                        while left:
                            chunk = self.rfile.read(min(left, 1 << 16))
                            h.update(chunk)
                            n += len(chunk)
                            left -= len(chunk)
                        self.rfile.readline()
                else:
                    left = int(self.headers.get("Content-Length", "0"))
                    while left:
                        chunk = self.rfile.read(min(left, 1 << 16))
                        if not chunk:
                            break
                        h.update(chunk)
                        n += len(chunk)
                        left -= len(chunk)
                return n, h.hexdigest()

            def send_json(self, obj, status=200):
                body = json.dumps(obj).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_GET(self):
                from urllib.parse import urlsplit, parse_qs
                u = urlsplit(self.path)
                q = parse_qs(u.query)
                if self.headers.get("Upgrade"):
                    self.record()
                    self.send_response(101)
                    self.send_header("Connection", "Upgrade")
                    self.send_header("Upgrade", self.headers.get("Upgrade"))
                    self.end_headers()
                    self.wfile.flush()
                    while True:
                        data = self.connection.recv(65536)
                        if not data:
                            break
                        self.connection.sendall(data)
                    self.close_connection = True
                    return
                self.record()
                if u.path == "/stream":
                    n = int(q.get("n", ["3"])[0])
                    delay = float(q.get("delay", ["0.5"])[0])
                    self.send_response(200)
                    self.send_header("Content-Type", "text/plain")
                    self.send_header("Transfer-Encoding", "chunked")
                    self.end_headers()
                    for i in range(n):
                        piece = f"event {i} at {time.time():.3f}\n".encode()
                        self.wfile.write(b"%x\r\n%s\r\n" % (len(piece), piece))
                        self.wfile.flush()
                        time.sleep(delay)
                    self.wfile.write(b"0\r\n\r\n")
                    return
                if u.path == "/download":
                    size = int(q.get("size", ["0"])[0])
                    self.send_response(200)
                    self.send_header("Content-Type", "application/octet-stream")
                    self.send_header("Content-Length", str(size))
                    self.end_headers()
                    block = bytes(range(256)) * 256
                    left = size
                    while left:
                        n = min(left, len(block))
                        self.wfile.write(block[:n])
                        left -= n
                    return
                self.send_json({"method": self.command, "path": self.path,
                                "headers": {k.lower(): v for k, v in self.headers.items()}})

            do_HEAD = do_GET

            def do_POST(self):
                n, digest = self.read_body()
                self.record(n, digest)
                self.send_json({"bytes": n, "sha256": digest})

            do_PUT = do_POST
            do_DELETE = do_GET
            do_PATCH = do_POST

        if unix_path:
            class Server(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
                daemon_threads = True

            class UnixHandler(Handler):
                def address_string(self):
                    return "unix"

            self.server = Server(unix_path, UnixHandler)
            self.address = f"unix://{unix_path}"
        else:
            class Server(socketserver.ThreadingMixIn, http.server.HTTPServer):
                daemon_threads = True

            self.server = Server(("127.0.0.1", 0), Handler)
            if tls_context:
                self.server.socket = tls_context.wrap_socket(self.server.socket, server_side=True)
            self.port = self.server.server_address[1]
            self.address = f"{'tls' if tls_context else 'tcp'}://127.0.0.1:{self.port}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def paths(self):
        with self.lock:
            return [r["path"] for r in self.requests]

    def close(self):
        self.server.shutdown()
        self.server.server_close()


# ---------------------------------------------------------------------------------------------
# Configs


def paths_rule(name, paths):
    """One rule allowing every verified peer on `paths` (YAML flow list text)."""
    return f"      - name: {name}\n        http: {{ paths: {paths} }}\n"


def sidecar_config(upstream, cert, key, ca, rules, top="", extra_listener="", bundle_extra=""):
    """The config most tests start from: one mTLS listener `inbound` on a kernel-chosen port in
    front of `upstream`, with policy `inbound` made of `rules` (YAML list items)."""
    return f"""{top}
workers: 2
tls:
  workload: {{ cert: {cert}, key: {key}, ca: {ca}{bundle_extra} }}
upstreams:
  app: {{ address: {upstream} }}
listeners:
  - name: inbound
    address: 127.0.0.1:0
    tls: workload
    upstream: app
    policy: inbound
{extra_listener}
policies:
  inbound:
    rules:
{rules}
"""


# ---------------------------------------------------------------------------------------------
# The proxy


class Proxy:
    """Runs `portcullis run -c CONFIG` and learns where each listener is bound."""

    # Every proxy started, so that one a failed test left running is stopped after that test
    # (conftest.py) instead of holding its ports for the rest of the run.
    started = []

    def __init__(self, config_text, directory, extra_args=(), expect_ready=True, stdout=None, env=None):
        self.dir = directory
        self.config_path = os.path.join(directory, "portcullis.yaml")
        with open(self.config_path, "w") as f:
            f.write(config_text)
        self.stderr_path = os.path.join(directory, "proxy.stderr")
        self.stdout_path = os.path.join(directory, "proxy.stdout")
        self.proc = subprocess.Popen([BIN, "run", "-c", self.config_path, *extra_args],
                                     stdout=open(self.stdout_path, "wb") if stdout is None else stdout,
                                     stderr=open(self.stderr_path, "wb"),
                                     env=None if env is None else {**os.environ, **env})
        Proxy.started.append(self)
        self.listeners = {}
        if expect_ready:
            self.wait_ready()

    def wait_ready(self, timeout=15):
        deadline = time.time() + timeout
        text = open(self.config_path).read()
        block = re.search(r"^listeners:\n(.*?)(?=^\S|\Z)", text, re.M | re.S)
        names = set(re.findall(r"^\s*- name: (\S+)", block.group(1), re.M)) if block else set()
        if re.search(r"^admin:", text, re.M):
            names.add("admin")  # announced after the listeners: wait for it too
        while time.time() < deadline:
            text = self.stderr()
            for name, addr in re.findall(r"listener '([^']+)' ready on (\S+)", text):
                host, port = addr.rsplit(":", 1)
                self.listeners[name] = (host.strip("[]"), int(port))
            if names and names <= set(self.listeners):
                return
            if self.proc.poll() is not None:
                raise AssertionError(f"portcullis exited with {self.proc.returncode}:\n{text}")
            time.sleep(0.05)
        raise AssertionError(f"portcullis did not become ready:\n{self.stderr()}")

    def port(self, name):
        return self.listeners[name][1]

    def stderr(self):
        with open(self.stderr_path, "rb") as f:
            return f.read().decode(errors="replace")

    def access_log(self):
        with open(self.stdout_path, "rb") as f:
            return [json.loads(line) for line in f.read().decode().splitlines() if line.strip()]

    def stop(self, sig=signal.SIGTERM, timeout=20):
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
                raise AssertionError("portcullis did not exit after SIGTERM")
        return self.proc.returncode


def curl(*args, timeout=60):
    """Runs curl; returns (exit code, stdout bytes, stderr text)."""
    p = subprocess.run(["curl", "-sS", "--max-time", str(timeout), *args], capture_output=True, timeout=timeout + 10)
    return p.returncode, p.stdout, p.stderr.decode(errors="replace")


def client_tls_context(pki, client=None):
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.load_verify_locations(pki.ca.ca_path)
    if client:
        ctx.load_cert_chain(*pki.client(client))
    return ctx


def raw_exchange(port, data, pki=None, client=None, timeout=10, tls=True):
    """Sends raw bytes (over TLS with a client cert when tls), returns everything read until the
    server closes or the timeout passes."""
    s = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    if tls:
        s = client_tls_context(pki, client).wrap_socket(s, server_hostname="localhost")
    s.sendall(data)
    out = b""
    try:
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            out += chunk
    except (socket.timeout, ssl.SSLError, ConnectionResetError):
        pass
    s.close()
    return out


class BioTls:
    """A TLS client over a raw socket through memory BIOs, so a test decides which records leave in
    which TCP write: e.g. a request and its close_notify in one segment, which SSLSocket cannot send."""

    def __init__(self, port, pki, client, timeout=10):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        self.incoming, self.outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
        self.tls = client_tls_context(pki, client).wrap_bio(self.incoming, self.outgoing, server_hostname="localhost")
        while True:
            try:
                self.tls.do_handshake()
                break
            except ssl.SSLWantReadError:
                self.sock.sendall(self.outgoing.read())
                data = self.sock.recv(65536)
                assert data, "the server closed during the handshake"
                self.incoming.write(data)
        self.sock.sendall(self.outgoing.read())  # the client's Finished

    def records(self, data=b"", close_notify=False):
        """The bytes of data's records, then of a close_notify; nothing is sent."""
        if data:
            self.tls.write(data)
        if close_notify:
            try:
                self.tls.unwrap()
            except ssl.SSLWantReadError:  # close_notify written; the peer's is not there yet
                pass
        return self.outgoing.read()

    def read_all(self):
        """(plaintext, how it ended) until the server's TCP close: "close_notify" or "eof"."""
        out, ended = b"", "eof"
        while True:
            data = self.sock.recv(65536)
            if not data:
                self.incoming.write_eof()
            else:
                self.incoming.write(data)
            try:
                while chunk := self.tls.read(65536):
                    out += chunk
                ended = "close_notify"
            except ssl.SSLWantReadError:
                pass
            except ssl.SSLZeroReturnError:
                ended = "close_notify"
            except ssl.SSLEOFError:
                pass
            if not data:
                return out, ended


def read_response(s, buf=b""):
    """Reads one Content-Length framed response from s, after the bytes already in buf. Returns
    (head, body, rest), rest being what followed the body; head is None when s closed before a
    whole head arrived. A close in the middle of the body is an AssertionError."""
    while b"\r\n\r\n" not in buf:
        chunk = s.recv(65536)
        if not chunk:
            return None, b"", buf
        buf += chunk
    head, _, buf = buf.partition(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n")[1:]:
        if line.lower().startswith(b"content-length:"):
            length = int(line.split(b":")[1])
    while len(buf) < length:
        chunk = s.recv(65536)
        assert chunk, f"closed after {len(buf)} of {length} body bytes"
        buf += chunk
    return head, buf[:length], buf[length:]


def keepalive_requests(port, pki, requests, pause=0.3, bodies=False):
    """Sends each raw request on one TLS connection, waiting for each response (Content-Length
    framed) and `pause` seconds between them; returns the status codes, or (status, body) pairs
    with bodies=True."""
    s = client_tls_context(pki, "alice").wrap_socket(socket.create_connection(("127.0.0.1", port), timeout=10),
                                                     server_hostname="localhost")
    statuses = []
    buf = b""
    for req in requests:
        s.sendall(req)
        head, body, buf = read_response(s, buf)
        if head is None:
            statuses.append(None)
            s.close()
            return statuses
        status = int(head.split(b" ")[1])
        statuses.append((status, body) if bodies else status)
        time.sleep(pause)
    s.close()
    return statuses


made_dirs = []  # every tmpdir() of this process, removed when its tests all pass (conftest.py)


def tmpdir():
    d = tempfile.mkdtemp(prefix="portcullis-test-")
    made_dirs.append(d)
    return d


def metric(admin_port, name, **labels):
    """The sum of a Prometheus counter or gauge over the series whose labels include `labels`."""
    text = urllib.request.urlopen(f"http://127.0.0.1:{admin_port}/metrics", timeout=10).read().decode()
    total = 0.0
    for line in text.splitlines():
        m = re.match(r"^(\w+)(?:\{(.*)\})? (\S+)$", line)
        if not m or m.group(1) != name:
            continue
        have = dict(re.findall(r'(\w+)="([^"]*)"', m.group(2) or ""))
        if all(have.get(k) == v for k, v in labels.items()):
            total += float(m.group(3))
    return total


def wait_until(pred, seconds):
    """True once pred() is true, polling every 0.1 s; pred()'s last answer after `seconds`."""
    deadline = time.time() + seconds
    while time.time() < deadline:
        if pred():
            return True
        time.sleep(0.1)
    return pred()


def free_port():
    """A loopback port nothing listens on now (the kernel's pick), for a server that needs one."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
