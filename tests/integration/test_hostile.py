"""Hostile clients and failing upstreams (issue 11), through the real binary: slowloris, a
connection flood beyond the process-wide cap, malformed and smuggling requests, and upstreams
that refuse, reset mid-response or hang. Throughout, a normal client keeps being served and the
admin endpoint's /metrics counts what happened.

Every loop here is bounded in count and in time; at most ~450 sockets are open at once."""
import os
import re
import select
import socket
import ssl
import threading
import time
import urllib.request

import pytest

from harness import Pki, Proxy, RecordingUpstream, client_tls_context, curl, paths_rule, raw_exchange, wait_until, \
    sidecar_config, tmpdir
from test_reload import keepalive_client, status_of


@pytest.fixture
def env():
    d = tmpdir()
    pki = Pki(d)
    pki.client("alice", orgs=["ops"])
    up = RecordingUpstream()
    yield d, pki, up
    up.close()


def config(pki, upstream, limits="", top=""):
    cfg = sidecar_config(upstream, pki.server_cert, pki.server_key, pki.ca.ca_path,
                         paths_rule("everything", '["/**"]'), top="admin: { address: 127.0.0.1:0 }\n" + top)
    if limits:
        cfg = cfg.replace("    policy: inbound\n", f"    policy: inbound\n    limits: {{ {limits} }}\n", 1)
    return cfg


def get_status(pki, port, path, timeout=30):
    """A normal client: curl over mTLS. Returns (HTTP status, body)."""
    crt, key = pki.client("alice")
    rc, out, err = curl("--cacert", pki.ca.ca_path, "--cert", crt, "--key", key, "-w", "\n%{http_code}",
                        f"https://localhost:{port}{path}", timeout=timeout)
    body, _, code = out.rpartition(b"\n")
    return int(code or 0), body


def metrics(p):
    with urllib.request.urlopen(f"http://127.0.0.1:{p.port('admin')}/metrics", timeout=10) as r:
        return r.read().decode()


def metric(text, name, **labels):
    """Sum of the samples of `name` whose labels include `labels`."""
    total = 0.0
    for line in text.splitlines():
        m = re.match(r"^" + re.escape(name) + r"(?:\{(.*)\})? (\S+)$", line)
        if not m:
            continue
        have = dict(re.findall(r'(\w+)="((?:[^"\\]|\\.)*)"', m.group(1) or ""))
        if all(have.get(k) == v for k, v in labels.items()):
            total += float(m.group(2))
    return total


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        return int(re.search(r"^VmRSS:\s+(\d+) kB", f.read(), re.M).group(1))


def is_closed(s):
    """True when the peer has closed `s` (EOF, reset, or a TLS alert instead of data)."""
    try:
        s.settimeout(0.5)
        return s.recv(1) == b""
    except socket.timeout:
        return False
    except (ConnectionResetError, BrokenPipeError, ssl.SSLError, OSError):
        return True


def wait_all_closed(socks, within):
    """Waits (at most `within` seconds) until every socket in `socks` is closed by the peer;
    returns how many were."""
    open_ = list(socks)
    deadline = time.time() + within
    while open_ and time.time() < deadline:
        readable, _, _ = select.select(open_, [], [], 0.5)
        for s in readable:
            if is_closed(s):
                open_.remove(s)
    return len(socks) - len(open_)


def test_slowloris_is_cut_at_the_header_timeout_and_others_are_served(env):
    d, pki, up = env
    header_timeout_ms = 4000
    p = Proxy(config(pki, up.address, f"header_timeout_ms: {header_timeout_ms}"), d)
    port = p.port("inbound")
    ctx = client_tls_context(pki, "alice")
    slow = []
    try:
        # 300 TLS connections, each then sending a request head one byte per second.
        for _ in range(300):
            s = ctx.wrap_socket(socket.create_connection(("127.0.0.1", port), timeout=10), server_hostname="localhost")
            slow.append(s)
        head = b"GET /slowloris HTTP/1.1\r\nHost: localhost\r\nX-Pad: " + b"a" * 64
        served = []
        cut = set()
        started = time.time()
        for i in range(int(header_timeout_ms / 1000) + 6):  # bounded: past the timeout with margin
            for s in slow:
                if s in cut:
                    continue
                try:
                    s.sendall(head[i:i + 1])
                except (BrokenPipeError, ConnectionResetError, ssl.SSLError, OSError):
                    cut.add(s)
            # A normal client is served while the slow ones hold their connections.
            served.append(get_status(pki, port, f"/normal{i}")[0])
            time.sleep(max(0.0, started + i + 1 - time.time()))
        assert served and all(code == 200 for code in served), served
        # Every slow connection is closed by the proxy (none ever finished its head).
        assert wait_all_closed([s for s in slow if s not in cut], 20) + len(cut) == len(slow)
        assert not any(path.startswith("/slowloris") for path in up.paths())
        text = metrics(p)
        assert metric(text, "portcullis_slow_clients_total", listener="inbound", phase="header") >= 300
        assert get_status(pki, port, "/after")[0] == 200
    finally:
        for s in slow:
            s.close()
        assert p.stop() == 0


def test_connection_flood_beyond_the_process_cap_is_refused_and_keepalive_clients_keep_working(env):
    d, pki, up = env
    cap = 40
    p = Proxy(config(pki, up.address, top=f"max_connections: {cap}\n"), d)
    port = p.port("inbound")
    keep = keepalive_client(pki, port)
    flood = []
    try:
        assert status_of(keep, "/before") == 200
        rss_before = rss_kib(p.proc.pid)
        # 400 plain TCP connections that never even start TLS: `cap - 1` fit, the rest are closed.
        # (Those that fit wait for a TLS handshake that never comes: cut at handshake_timeout_ms.)
        for _ in range(400):
            flood.append(socket.create_connection(("127.0.0.1", port), timeout=10))
        assert status_of(keep, "/during") == 200
        rss_during = rss_kib(p.proc.pid)
        # Generous: the flood may not cost more than 64 MiB on top of the idle proxy.
        assert rss_during < rss_before + 64 * 1024, (rss_before, rss_during)
        closed = wait_all_closed(flood, 5)
        assert closed >= 400 - (cap - 1), f"only {closed} of 400 flood connections were refused"
        text = metrics(p)
        assert metric(text, "portcullis_limit_hits_total", listener="inbound", limit="process_max_connections") >= 400 - cap
        assert status_of(keep, "/during2") == 200
        assert "process-wide connection cap: 40" in p.stderr()
        for s in flood:
            s.close()
        flood = []
        # Once the flood is gone, new clients are served again.
        deadline = time.time() + 20
        code = 0
        while time.time() < deadline and code != 200:
            code = get_status(pki, port, "/after")[0]
            time.sleep(0.2)
        assert code == 200
        assert status_of(keep, "/still") == 200
    finally:
        for s in flood:
            s.close()
        keep.close()
        assert p.stop() == 0


def test_malformed_and_smuggling_requests_are_refused_and_counted(env):
    d, pki, up = env
    p = Proxy(config(pki, up.address, "header_bytes: 2048, max_body_bytes: 1000"), d)
    port = p.port("inbound")
    try:
        smuggling = [
            b"POST /a HTTP/1.1\r\nHost: localhost\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
            b"POST /a HTTP/1.1\r\nHost: localhost\r\nContent-Length: 4\r\nContent-Length: 5\r\n\r\nabcde",
            b"GET /a HTTP/1.1\r\nHost: localhost\r\nX-Folded: a\r\n b\r\n\r\n",
            b"GET /a HTTP/1.1\nHost: localhost\n\n",
        ]
        malformed = [b"GET /a%zz HTTP/1.1\r\nHost: localhost\r\n\r\n",
                     b"GET http://elsewhere.example/a HTTP/1.1\r\nHost: localhost\r\n\r\n"]
        for req in smuggling + malformed:
            out = raw_exchange(port, req, pki, "alice")
            assert out.startswith(b"HTTP/1.1 400"), (req, out[:200])
            assert b'"error":"bad_request"' in out
        big_head = raw_exchange(port, b"GET /a HTTP/1.1\r\nHost: localhost\r\nX: " + b"a" * 4096 + b"\r\n\r\n", pki, "alice")
        assert big_head.startswith(b"HTTP/1.1 431")
        big_body = raw_exchange(port, b"POST /a HTTP/1.1\r\nHost: localhost\r\nContent-Length: 5000\r\n\r\n" + b"x" * 5000,
                                pki, "alice")
        assert big_body.startswith(b"HTTP/1.1 413")
        assert get_status(pki, port, "/fine")[0] == 200
        assert up.paths() == ["/fine"]
        text = metrics(p)
        assert metric(text, "portcullis_smuggling_attempts_total", listener="inbound") == len(smuggling)
        assert metric(text, "portcullis_malformed_requests_total", listener="inbound") == len(smuggling) + len(malformed)
        assert metric(text, "portcullis_limit_hits_total", listener="inbound", limit="header_bytes") == 1
        assert metric(text, "portcullis_limit_hits_total", listener="inbound", limit="max_body_bytes") == 1
    finally:
        assert p.stop() == 0


class FaultyUpstream:
    """An upstream on 127.0.0.1 that answers by path, one request per connection:
    /ok 200; /reset a Content-Length 100000 response cut after 1000 bytes by a TCP reset;
    /hang reads the request and never answers. stop_listening() makes new connects refused."""

    def __init__(self):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.port = self.sock.getsockname()[1]
        self.held = []
        self.stopped = False
        self.thread = threading.Thread(target=self.serve, daemon=True)
        self.thread.start()

    def serve(self):
        while not self.stopped:
            try:
                c, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self.handle, args=(c,), daemon=True).start()

    def handle(self, c):
        c.settimeout(30)
        data = b""
        try:
            while b"\r\n\r\n" not in data:
                chunk = c.recv(4096)
                if not chunk:
                    return c.close()
                data += chunk
        except OSError:
            return c.close()
        path = data.split(b" ")[1]
        if path.startswith(b"/hang"):
            self.held.append(c)  # never answered, closed at teardown
            return
        if path.startswith(b"/reset"):
            c.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\n" + b"r" * 1000)
            time.sleep(0.2)
            c.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")  # RST on close
            return c.close()
        c.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok")
        c.close()

    def stop_listening(self):
        self.stopped = True
        try:
            self.sock.shutdown(socket.SHUT_RDWR)  # wakes the blocked accept(); the port stops listening
        except OSError:
            pass
        self.sock.close()
        self.thread.join(10)

    def close(self):
        self.stop_listening()
        for c in self.held:
            c.close()


def test_upstream_refused_reset_and_hanging_while_others_are_served(env):
    d, pki, _ = env
    faulty = FaultyUpstream()
    p = Proxy(config(pki, f"tcp://127.0.0.1:{faulty.port}", "upstream_timeout_ms: 1500"), d)
    port = p.port("inbound")
    crt, key = pki.client("alice")
    try:
        assert get_status(pki, port, "/ok")[0] == 200

        # Hanging: 504 at upstream_timeout_ms, while other requests are served meanwhile.
        hung = {}
        t = threading.Thread(target=lambda: hung.update(r=get_status(pki, port, "/hang")))
        t.start()
        during = [get_status(pki, port, f"/ok{i}")[0] for i in range(3)]
        t.join(60)
        assert during == [200, 200, 200]
        assert hung["r"][0] == 504 and b"upstream_timeout_ms" in hung["r"][1], hung

        # Reset mid-response: the client gets the head and a truncated body; the proxy lives on.
        rc, out, err = curl("--cacert", pki.ca.ca_path, "--cert", crt, "--key", key, "-o", "/dev/null",
                            "-w", "%{http_code} %{size_download}", f"https://localhost:{port}/reset")
        assert rc == 18, (rc, out, err)  # curl: "transfer closed with outstanding read data remaining"
        code, size = out.split()
        assert code == b"200" and 0 < int(size) < 100000
        assert get_status(pki, port, "/ok-after-reset")[0] == 200

        # Refused: 502 with a JSON reason naming the refusal.
        faulty.stop_listening()
        code, body = get_status(pki, port, "/refused")
        assert code == 502, body
        assert b'"error":"upstream_unavailable"' in body and b"refused" in body.lower(), body

        with urllib.request.urlopen(f"http://127.0.0.1:{p.port('admin')}/healthz", timeout=10) as r:
            assert r.status == 200
        assert p.proc.poll() is None
        text = metrics(p)
        assert metric(text, "portcullis_upstream_failures_total", listener="inbound", reason="timeout") == 1
        assert metric(text, "portcullis_upstream_failures_total", listener="inbound", reason="truncated") == 1
        assert metric(text, "portcullis_upstream_failures_total", listener="inbound", reason="unavailable") >= 1
        assert metric(text, "portcullis_upstream_connect_failures_total", upstream="app") >= 1
    finally:
        faulty.close()
        assert p.stop() == 0


# ---------------------------------------------------------------------------------------------
# Parser differences between us and the upstream (red-team findings, session 13)

class SwitchingUpstream:
    """Answers each connection's first request with `answer(request_head)` (bytes), then records
    whatever else arrives on that connection as raw bytes (what a relay would let through)."""

    def __init__(self, answer):
        self.answer = answer
        self.after = []
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(8)
        self.address = f"tcp://127.0.0.1:{self.sock.getsockname()[1]}"
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self):
        while True:
            try:
                c, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._one, args=(c,), daemon=True).start()

    def _one(self, c):
        c.settimeout(5)
        data = b""
        try:
            while b"\r\n\r\n" not in data:
                chunk = c.recv(65536)
                if not chunk:
                    return
                data += chunk
            head, _, rest = data.partition(b"\r\n\r\n")
            c.sendall(self.answer(head.decode("latin-1")))
            later = rest
            while True:
                chunk = c.recv(65536)
                if not chunk:
                    break
                later += chunk
        except OSError:
            later = b""
        finally:
            c.close()
        if later:
            self.after.append(later)

    def close(self):
        self.sock.close()


def _ws_accept(head):
    import base64
    import hashlib
    key = [line.split(":", 1)[1].strip() for line in head.split("\r\n") if line.lower().startswith("sec-websocket-key:")]
    return base64.b64encode(hashlib.sha1((key[0] + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11").encode()).digest()).decode()


WS_REQUEST = (b"GET /chat HTTP/1.1\r\nHost: localhost\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n"
              b"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n")
SMUGGLED = b"GET /admin/secret HTTP/1.1\r\nHost: localhost\r\n\r\n"


@pytest.mark.parametrize("answer", [
    # httpbin's /status/101: a status, not a switch.
    lambda head: b"HTTP/1.1 101 Switching Protocols\r\n\r\n",
    lambda head: b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\n",
    lambda head: b"HTTP/1.1 101 Switching Protocols\r\nConnection: upgrade\r\nUpgrade: h2c\r\n\r\n",
    lambda head: b"HTTP/1.1 101 Switching Protocols\r\nConnection: upgrade\r\nUpgrade: websocket\r\n"
                 b"Sec-WebSocket-Accept: AAAAAAAAAAAAAAAAAAAAAAAAAAA=\r\n\r\n",
], ids=["bare", "no-connection", "other-protocol", "wrong-accept"])
def test_a_101_that_is_not_a_switch_is_a_502_and_nothing_more_is_relayed(env, answer):
    """Once switched, bytes are relayed and no rule sees them: an upstream that answers 101 without
    switching to what the client asked would let a pipelined request through unchecked."""
    d, pki, _ = env
    up = SwitchingUpstream(answer)
    p = Proxy(config(pki, up.address), d)
    try:
        out = raw_exchange(p.port("inbound"), WS_REQUEST + SMUGGLED, pki, "alice", timeout=5)
        assert out.startswith(b"HTTP/1.1 502 "), out[:300]
        assert b"101 Switching Protocols" in out and b"without" in out or b"not one protocol" in out, out[:600]
        time.sleep(0.3)
        assert not up.after, up.after  # the pipelined request never reached the upstream
    finally:
        p.stop()
        up.close()


def test_a_real_websocket_switch_is_relayed(env):
    d, pki, _ = env
    up = SwitchingUpstream(lambda head: ("HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n"
                                         "Sec-WebSocket-Accept: %s\r\n\r\n" % _ws_accept(head)).encode())
    p = Proxy(config(pki, up.address), d)
    try:
        s = client_tls_context(pki, "alice").wrap_socket(socket.create_connection(("127.0.0.1", p.port("inbound")), timeout=5),
                                                         server_hostname="localhost")
        s.sendall(WS_REQUEST)
        head = b""
        while b"\r\n\r\n" not in head:
            head += s.recv(4096)
        assert head.startswith(b"HTTP/1.1 101 "), head
        s.sendall(b"frames after the switch")
        s.close()
        assert wait_until(lambda: up.after == [b"frames after the switch"], 5), up.after
    finally:
        p.stop()
        up.close()


def test_header_names_with_underscores(env, tmp_path):
    """X_Forwarded_Client_Cert is X-Forwarded-Client-Cert to CGI/WSGI and to nginx with
    underscores_in_headers: by default such names are dropped (nginx's default); `reject` answers
    400; `allow` forwards them, except the spellings of the headers only we set."""
    d, pki, up = env
    forged = "X_Forwarded_Client_Cert: Hash=00;URI=spiffe://cluster.local/ns/shop/sa/frontend"
    request = ("GET /tenant HTTP/1.1\r\nHost: localhost\r\n%s\r\nX_Tenant: red\r\nX-Tenant: blue\r\n"
               "X_Remote_User: admin\r\nConnection: close\r\n\r\n" % forged).encode()
    for mode, status, forwarded in (("drop", 200, []), (None, 200, []), ("reject", 400, None),
                                    ("allow", 200, [("x_tenant", "red")])):
        cfg = config(pki, up.address)
        if mode:
            cfg = cfg.replace("    policy: inbound\n", f"    policy: inbound\n    headers_with_underscores: {mode}\n", 1)
        p = Proxy(cfg, d)
        try:
            before = len(up.requests)
            out = raw_exchange(p.port("inbound"), request, pki, "alice")
            assert out.startswith(b"HTTP/1.1 %d " % status), (mode, out[:300])
            if forwarded is None:
                assert b"x_forwarded_client_cert" in out and b"headers_with_underscores: reject" in out, out
                assert len(up.requests) == before
                continue
            r = up.requests[before]
            assert [(k, v) for k, v in r["header_list"] if "_" in k] == forwarded, (mode, r["header_list"])
            assert [v for k, v in r["header_list"] if k == "x-tenant"] == ["blue"]
            assert [v for k, v in r["header_list"] if k == "x-forwarded-client-cert"][0].startswith("Hash="), r
            assert "frontend" not in str(r["header_list"])
        finally:
            p.stop()


def test_forwarded_identity_is_exactly_what_was_verified(env):
    """A subject name with a space at either end (which parsers drop) or control characters is not
    forwarded in another spelling: the request is refused. A DNS SAN that is not a host name (a ';'
    would start an XFCC field of its own) is left out of the identity."""
    from cryptography import x509
    from cryptography.x509.oid import NameOID
    d, pki, up = env
    p = Proxy(config(pki, up.address), d)
    try:
        port = p.port("inbound")
        crt, key = pki.ca.issue("spaced", subject=[x509.NameAttribute(NameOID.ORGANIZATION_NAME, " system:masters"),
                                                   x509.NameAttribute(NameOID.COMMON_NAME, "mallory")])
        pki.clients["spaced"] = (crt, key)
        before = len(up.requests)
        out = raw_exchange(port, b"GET /x HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n", pki, "spaced")
        assert out.startswith(b"HTTP/1.1 403 ") and b"cannot be forwarded as it is" in out, out[:400]
        assert len(up.requests) == before
        crt, key = pki.ca.issue("sans", dns=["ok.shop.svc", "x.shop.svc;URI=spiffe://cluster.local/ns/shop/sa/frontend"],
                                cn="mallory,O=ops")
        pki.clients["sans"] = (crt, key)
        out = raw_exchange(port, b"GET /x HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n", pki, "sans")
        assert out.startswith(b"HTTP/1.1 200 "), out[:300]
        xfcc = up.requests[-1]["headers"]["x-forwarded-client-cert"]
        assert xfcc.endswith(";DNS=ok.shop.svc") and "frontend" not in xfcc, xfcc
        # The CN stays one RFC 4514 value (then quoted for XFCC: each backslash doubled).
        assert ';Subject="CN=mallory\\\\,O\\\\=ops";' in xfcc, xfcc
    finally:
        p.stop()


def test_remote_user_refuses_a_group_with_a_comma(env):
    """X-Remote-Group carries one group per line; a WSGI app joins lines with commas, so one group
    "viewer,ops" would read as two (second red-team round)."""
    from cryptography import x509
    from cryptography.x509.oid import NameOID
    d, pki, up = env
    cfg = config(pki, up.address).replace("    policy: inbound\n", "    policy: inbound\n    forward_identity: remote_user\n", 1)
    p = Proxy(cfg, d)
    try:
        port = p.port("inbound")
        pki.clients["commas"] = pki.ca.issue("commas", subject=[x509.NameAttribute(NameOID.ORGANIZATION_NAME, "viewer,ops"),
                                                                x509.NameAttribute(NameOID.COMMON_NAME, "eve")])
        before = len(up.requests)
        out = raw_exchange(port, b"GET /x HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n", pki, "commas")
        assert out.startswith(b"HTTP/1.1 403 ") and b"group name with a comma" in out, out[:300]
        assert len(up.requests) == before
        out = raw_exchange(port, b"GET /x HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n", pki, "alice")
        assert out.startswith(b"HTTP/1.1 200 "), out[:300]
        assert [v for k, v in up.requests[-1]["header_list"] if k == "x-remote-group"] == ["ops"]
    finally:
        p.stop()
