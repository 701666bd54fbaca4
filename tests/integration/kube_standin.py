"""A STAND-IN for the kube-apiserver, for test_kube.py.

No kube-apiserver package exists on this machine, so the Kubernetes tests run the real kubectl
against this small HTTPS server instead. It serves recorded-style apiserver responses -- legacy
discovery (/api, /apis, /api/v1), a pod list (as a meta.k8s.io Table when kubectl asks for one),
one pod, a watch stream that emits events over time, TokenReview -- and an exec endpoint that
accepts both the WebSocket (v5.channel.k8s.io) and the SPDY/3.1 (v4.channel.k8s.io) upgrades and
"runs" the command by echoing its arguments on stdout. It records every request's headers and
the client certificate it was sent with, so tests can assert what reached the apiserver.

It is not an apiserver: no storage, no authorization, only what kubectl 1.32 needs for
`get pods`, `get pods --watch`, `exec` and bearer-token logins (and a PATCH that answers as a
patch or a creating server-side apply would).
"""
import base64
import hashlib
import http.server
import json
import socketserver
import ssl
import struct
import threading
import time
import zlib
from urllib.parse import parse_qs, urlsplit

NOW = "2026-01-01T00:00:00Z"
FAILING_TOKEN = "token-whose-review-fails"  # TokenReview answers 500 for this one


def pod(name, namespace, phase="Running", rv="100"):
    return {"kind": "Pod", "apiVersion": "v1",
            "metadata": {"name": name, "namespace": namespace, "resourceVersion": rv, "uid": "uid-" + name,
                         "creationTimestamp": NOW},
            "spec": {"containers": [{"name": "app", "image": "busybox"}]},
            "status": {"phase": phase, "containerStatuses": [{"name": "app", "ready": True, "restartCount": 0,
                                                              "image": "busybox", "imageID": "",
                                                              "state": {"running": {"startedAt": NOW}}}]}}


def table(pods, rv="100"):
    """What the apiserver returns for Accept: application/json;as=Table;v=v1;g=meta.k8s.io."""
    return {"kind": "Table", "apiVersion": "meta.k8s.io/v1", "metadata": {"resourceVersion": rv},
            "columnDefinitions": [
                {"name": "Name", "type": "string", "format": "name", "description": "", "priority": 0},
                {"name": "Status", "type": "string", "format": "", "description": "", "priority": 0}],
            "rows": [{"cells": [p["metadata"]["name"], p["status"]["phase"]],
                      "object": {"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1",
                                 "metadata": p["metadata"]}} for p in pods]}


RESOURCES_V1 = {
    "kind": "APIResourceList", "apiVersion": "v1", "groupVersion": "v1",
    "resources": [
        {"name": "pods", "singularName": "pod", "namespaced": True, "kind": "Pod", "shortNames": ["po"],
         "verbs": ["create", "delete", "deletecollection", "get", "list", "patch", "update", "watch"]},
        {"name": "pods/exec", "singularName": "", "namespaced": True, "kind": "PodExecOptions",
         "verbs": ["create", "get"]},
        {"name": "pods/log", "singularName": "", "namespaced": True, "kind": "Pod", "verbs": ["get"]},
        {"name": "secrets", "singularName": "secret", "namespaced": True, "kind": "Secret",
         "verbs": ["create", "delete", "deletecollection", "get", "list", "patch", "update", "watch"]},
        {"name": "namespaces", "singularName": "namespace", "namespaced": False, "kind": "Namespace",
         "shortNames": ["ns"], "verbs": ["create", "delete", "get", "list", "patch", "update", "watch"]},
    ]}

# The zlib dictionary of SPDY/3 header blocks (draft-mbelshe-httpbis-spdy-00 section 2.6.10.1):
# length-prefixed words, then a run of common values.
_SPDY_WORDS = (
    "options head post put delete trace accept accept-charset accept-encoding accept-language accept-ranges "
    "age allow authorization cache-control connection content-base content-encoding content-language "
    "content-length content-location content-md5 content-range content-type date etag expect expires from "
    "host if-match if-modified-since if-none-match if-range if-unmodified-since last-modified location "
    "max-forwards pragma proxy-authenticate proxy-authorization range referer retry-after server te trailer "
    "transfer-encoding upgrade user-agent vary via warning www-authenticate method get status").split() + [
    "200 OK", "version", "HTTP/1.1", "url", "public", "set-cookie", "keep-alive", "origin"]
_SPDY_TAIL = (
    "100101201202205206300302303304305306307402405406407408409410411412413414415416417502504505"
    "203 Non-Authoritative Information204 No Content301 Moved Permanently400 Bad Request401 Unauthorized"
    "403 Forbidden404 Not Found500 Internal Server Error501 Not Implemented503 Service Unavailable"
    "Jan Feb Mar Apr May Jun Jul Aug Sept Oct Nov Dec 00:00:00 Mon, Tue, Wed, Thu, Fri, Sat, Sun, GMT"
    "chunked,text/html,image/png,image/jpg,image/gif,application/xml,application/xhtml+xml,text/plain,"
    "text/javascript,publicprivatemax-age=gzip,deflate,sdchcharset=utf-8charset=iso-8859-1,utf-,*,enq=0.")
SPDY_DICTIONARY = b"".join(struct.pack(">I", len(w)) + w.encode() for w in _SPDY_WORDS) + _SPDY_TAIL.encode()


def _recv_exact(conn, n):
    out = b""
    while len(out) < n:
        chunk = conn.recv(n - len(out))
        if not chunk:
            raise EOFError
        out += chunk
    return out


class StandInApiserver:
    """HTTPS on 127.0.0.1:<port>; `requests` lists what it received (method, path, headers,
    client certificate CN). `tokens` maps bearer tokens to (user, groups) for TokenReview."""

    def __init__(self, cert, key, ca, tokens=None, watch_delay=0.3):
        self.requests = []
        self.lock = threading.Lock()
        self.tokens = dict(tokens or {})
        self.watch_delay = watch_delay
        self.watch_release = threading.Event()  # the watch stream's last event waits for this
        self.watch_finished = threading.Event()
        self.logs_release = threading.Event()  # the same for `logs -f`
        self.logs_finished = threading.Event()
        self.exec_protocols = []  # "websocket" / "spdy" for each exec that upgraded
        api = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *a):
                pass

            def record(self, body=b""):
                peer = self.connection.getpeercert() or {}
                cn = ""
                for rdn in peer.get("subject", ()):
                    for k, v in rdn:
                        if k == "commonName":
                            cn = v
                with api.lock:
                    api.requests.append({"method": self.command, "path": self.path,
                                         "headers": [(k.lower(), v) for k, v in self.headers.items()],
                                         "client_cn": cn, "body": body})

            def send_json(self, obj, status=200):
                body = json.dumps(obj).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def status(self, code, reason, message):
                self.send_json({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                                "message": message, "reason": reason, "code": code}, code)

            def chunk(self, data):
                """One chunk of a chunked response, sent at once."""
                self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
                self.wfile.flush()

            def wants_table(self):
                return "as=Table" in self.headers.get("Accept", "")

            def do_GET(self):
                self.record()
                u = urlsplit(self.path)
                q = parse_qs(u.query)
                parts = [p for p in u.path.split("/") if p]
                if self.headers.get("Upgrade", "").lower() == "websocket" and parts[-1:] == ["exec"]:
                    return self.exec_websocket(q)
                if u.path == "/version":
                    return self.send_json({"major": "1", "minor": "32", "gitVersion": "v1.32.0-standin",
                                           "platform": "linux/amd64"})
                if u.path == "/api":
                    return self.send_json({"kind": "APIVersions", "versions": ["v1"],
                                           "serverAddressByClientCIDRs": [
                                               {"clientCIDR": "0.0.0.0/0", "serverAddress": "127.0.0.1:6443"}]})
                if u.path == "/apis":
                    return self.send_json({"kind": "APIGroupList", "apiVersion": "v1", "groups": []})
                if u.path == "/api/v1":
                    return self.send_json(RESOURCES_V1)
                # /api/v1/namespaces/{ns}/pods[/{name}]
                if len(parts) >= 5 and parts[:3] == ["api", "v1", "namespaces"] and parts[4] == "pods":
                    ns = parts[3]
                    if len(parts) == 6:
                        return self.send_json(pod(parts[5], ns))
                    if len(parts) == 7 and parts[6] == "log":
                        return self.logs(q)
                    if len(parts) == 5:
                        if q.get("watch", ["false"])[0] not in ("false", "0"):
                            return self.watch(ns)
                        pods = [pod("web-0", ns), pod("web-1", ns)]
                        if self.wants_table():
                            return self.send_json(table(pods))
                        return self.send_json({"kind": "PodList", "apiVersion": "v1",
                                               "metadata": {"resourceVersion": "100"}, "items": pods})
                self.status(404, "NotFound", f"the stand-in serves no {u.path}")

            def watch(self, ns):
                """Chunked watch events: one at once, one after watch_delay, and the last only
                when the test sets watch_release (or 20 s pass), then the stream ends."""
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Transfer-Encoding", "chunked")
                self.end_headers()

                def event(name, rv):
                    p = pod(name, ns, rv=rv)
                    obj = table([p], rv) if self.wants_table() else p
                    self.chunk(json.dumps({"type": "ADDED", "object": obj}).encode() + b"\n")

                try:
                    event("watch-first", "101")
                    time.sleep(api.watch_delay)
                    event("watch-second", "102")
                    api.watch_release.wait(20)
                    event("watch-last", "103")
                    self.wfile.write(b"0\r\n\r\n")
                    self.wfile.flush()
                except (BrokenPipeError, ConnectionResetError, ssl.SSLError):
                    pass
                api.watch_finished.set()
                self.close_connection = True

            def logs(self, q):
                """A container log; with follow=true one line at once and the last only when the
                test sets logs_release (or 20 s pass)."""
                self.send_response(200)
                self.send_header("Content-Type", "text/plain")
                self.send_header("Transfer-Encoding", "chunked")
                self.end_headers()

                def line(text):
                    self.chunk(text.encode() + b"\n")

                try:
                    line("log line one")
                    if q.get("follow", ["false"])[0] == "true":
                        api.logs_release.wait(20)
                    line("log line last")
                    self.wfile.write(b"0\r\n\r\n")
                    self.wfile.flush()
                except (BrokenPipeError, ConnectionResetError, ssl.SSLError):
                    pass
                api.logs_finished.set()
                self.close_connection = True

            def do_POST(self):
                n = int(self.headers.get("Content-Length", "0") or 0)
                body = self.rfile.read(n) if n else b""
                self.record(body)
                u = urlsplit(self.path)
                if self.headers.get("Upgrade", "").lower().startswith("spdy/") and u.path.endswith("/exec"):
                    return self.exec_spdy(parse_qs(u.query))
                if u.path == "/apis/authentication.k8s.io/v1/tokenreviews":
                    review = json.loads(body)
                    token = review.get("spec", {}).get("token", "")
                    if token == FAILING_TOKEN:
                        return self.status(500, "InternalError", "the stand-in's authenticator is down")
                    status = {"authenticated": False, "error": "token not known to the stand-in"}
                    if token in api.tokens:
                        user, groups = api.tokens[token]
                        status = {"authenticated": True, "user": {"username": user, "groups": list(groups)}}
                    review["status"] = status
                    return self.send_json(review, 201)
                self.status(404, "NotFound", f"the stand-in serves no POST {u.path}")

            def do_PATCH(self):
                # Answers as the apiserver does to a patch of a configmap that exists (200), or to a
                # server-side apply that creates it (201).
                n = int(self.headers.get("Content-Length", "0") or 0)
                body = self.rfile.read(n) if n else b""
                self.record(body)
                name = urlsplit(self.path).path.rsplit("/", 1)[-1]
                created = self.headers.get("Content-Type", "").startswith("application/apply-patch")
                self.send_json({"kind": "ConfigMap", "apiVersion": "v1", "metadata": {"name": name}},
                               201 if created else 200)

            def do_DELETE(self):
                self.record()
                self.send_json({"kind": "Status", "apiVersion": "v1", "status": "Success", "metadata": {}})

            # -- exec: the command's arguments echoed on stdout, then a Success status ------------

            def exec_output(self, q):
                return (" ".join(q.get("command", [])) + "\n").encode()

            def switch_protocols(self, kind, headers):
                """Sends the 101 and returns the raw connection that now speaks `kind`."""
                self.send_response(101)
                self.send_header("Connection", "Upgrade")
                for k, v in headers.items():
                    self.send_header(k, v)
                self.end_headers()
                self.wfile.flush()
                with api.lock:
                    api.exec_protocols.append(kind)
                return self.connection

            def exec_websocket(self, q):
                offered = [p.strip() for p in self.headers.get("Sec-WebSocket-Protocol", "").split(",")]
                if "v5.channel.k8s.io" not in offered:
                    return self.status(400, "BadRequest", f"stand-in speaks v5.channel.k8s.io only, not {offered}")
                key = self.headers.get("Sec-WebSocket-Key", "")
                accept = base64.b64encode(hashlib.sha1((key + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11").encode())
                                          .digest()).decode()
                conn = self.switch_protocols("websocket", {"Upgrade": "websocket", "Sec-WebSocket-Accept": accept,
                                                           "Sec-WebSocket-Protocol": "v5.channel.k8s.io"})

                def frame(opcode, payload):
                    n = len(payload)
                    head = bytes([0x80 | opcode])
                    if n < 126:
                        head += bytes([n])
                    elif n < 65536:
                        head += bytes([126]) + struct.pack(">H", n)
                    else:
                        head += bytes([127]) + struct.pack(">Q", n)
                    conn.sendall(head + payload)

                # kubectl registers its streams just after the handshake and discards data for a
                # stream it has not registered yet ("Unknown stream id 1"); a real command takes a
                # moment to start, so the stand-in does too.
                time.sleep(0.5)
                frame(2, b"\x01" + self.exec_output(q))  # channel 1: stdout
                frame(2, b"\x03" + json.dumps({"metadata": {}, "status": "Success"}).encode())  # 3: status
                frame(8, struct.pack(">H", 1000))  # close
                conn.settimeout(5)
                try:  # until the client's close frame (or EOF)
                    while True:
                        b0, b1 = _recv_exact(conn, 2)
                        n = b1 & 0x7F
                        if n == 126:
                            n = struct.unpack(">H", _recv_exact(conn, 2))[0]
                        elif n == 127:
                            n = struct.unpack(">Q", _recv_exact(conn, 8))[0]
                        _recv_exact(conn, (4 if b1 & 0x80 else 0) + n)
                        if b0 & 0x0F == 8:
                            break
                except (EOFError, OSError):
                    pass
                self.close_connection = True

            def exec_spdy(self, q):
                offered = [v.strip() for k, v in self.headers.items() if k.lower() == "x-stream-protocol-version"]
                if "v4.channel.k8s.io" not in offered:
                    return self.status(400, "BadRequest", f"stand-in speaks v4.channel.k8s.io only, not {offered}")
                conn = self.switch_protocols("spdy", {"Upgrade": "SPDY/3.1",
                                                      "X-Stream-Protocol-Version": "v4.channel.k8s.io"})
                conn.settimeout(10)
                inflate = zlib.decompressobj(zdict=SPDY_DICTIONARY)
                deflate = zlib.compressobj(zdict=SPDY_DICTIONARY)
                streams = {}  # streamType -> stream id
                wanted = {"error"} | {t for t in ("stdout", "stderr") if q.get(t, ["false"])[0] == "true"}

                def send_control(ftype, flags, payload):
                    conn.sendall(struct.pack(">HHI", 0x8003, ftype, (flags << 24) | len(payload)) + payload)

                def send_data(sid, flags, payload):
                    conn.sendall(struct.pack(">II", sid, (flags << 24) | len(payload)) + payload)

                try:
                    while not wanted <= set(streams):
                        head = _recv_exact(conn, 8)
                        word, flags_len = struct.unpack(">II", head)
                        length = flags_len & 0xFFFFFF
                        payload = _recv_exact(conn, length)
                        if not word & 0x80000000:
                            continue  # data (stdin): not used
                        ftype = word & 0xFFFF
                        if ftype == 1:  # SYN_STREAM: id, associated id, priority, header block
                            sid = struct.unpack(">I", payload[:4])[0] & 0x7FFFFFFF
                            block = inflate.decompress(payload[10:])
                            count = struct.unpack(">I", block[:4])[0]
                            pos, headers = 4, {}
                            for _ in range(count):
                                nl = struct.unpack(">I", block[pos:pos + 4])[0]
                                name = block[pos + 4:pos + 4 + nl].decode()
                                pos += 4 + nl
                                vl = struct.unpack(">I", block[pos:pos + 4])[0]
                                headers[name] = block[pos + 4:pos + 4 + vl].decode()
                                pos += 4 + vl
                            streams[headers.get("streamtype", "")] = sid
                            reply = deflate.compress(struct.pack(">I", 0)) + deflate.flush(zlib.Z_SYNC_FLUSH)
                            send_control(2, 0, struct.pack(">I", sid) + reply)  # SYN_REPLY
                        elif ftype == 6:  # PING: echo it
                            send_control(6, 0, payload)
                    send_data(streams["stdout"], 0, self.exec_output(q))
                    for t in ("stdout", "stderr"):
                        if t in streams:
                            send_data(streams[t], 1, b"")  # FIN
                    send_data(streams["error"], 0, json.dumps({"metadata": {}, "status": "Success"}).encode())
                    send_data(streams["error"], 1, b"")
                    while conn.recv(65536):  # until the client hangs up
                        pass
                except (EOFError, OSError, zlib.error, KeyError):
                    pass
                self.close_connection = True

        class Server(socketserver.ThreadingMixIn, http.server.HTTPServer):
            daemon_threads = True

        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(cert, key)
        ctx.load_verify_locations(ca)
        ctx.verify_mode = ssl.CERT_OPTIONAL
        self.server = Server(("127.0.0.1", 0), Handler)
        self.server.socket = ctx.wrap_socket(self.server.socket, server_side=True)
        self.port = self.server.server_address[1]
        self.address = f"tls://127.0.0.1:{self.port}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def seen(self, method=None, path_prefix=""):
        with self.lock:
            return [r for r in self.requests
                    if (method is None or r["method"] == method) and r["path"].startswith(path_prefix)]

    def close(self):
        self.watch_release.set()
        self.logs_release.set()
        self.server.shutdown()
        self.server.server_close()
