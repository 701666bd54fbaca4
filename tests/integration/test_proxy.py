"""The foundation, through the real binary with real clients: curl and openssl s_client over
mTLS, to real upstreams (tcp, unix socket, TLS)."""
import hashlib
import os
import re
import signal
import socket
import ssl
import subprocess
import threading
import time

import pytest

from harness import (CA, BioTls, Pki, Proxy, RecordingUpstream, client_tls_context, curl, keepalive_requests, metric, paths_rule,
                     free_port, raw_exchange, read_response, sidecar_config, tmpdir, wait_until)


def http_config(pki, upstream, extra_listener="", rules=None, top=""):
    return sidecar_config(upstream, pki.server_cert, pki.server_key, pki.ca.ca_path,
                          rules or paths_rule("everything", '["/**"]'), top, extra_listener)


@pytest.fixture
def env():
    d = tmpdir()
    pki = Pki(d)
    pki.client("alice", orgs=["ops"], spiffe="spiffe://cluster.local/ns/shop/sa/frontend")
    up = RecordingUpstream()
    yield d, pki, up
    up.close()


def curl_mtls(pki, client="alice"):
    crt, key = pki.client(client)
    return ["--cacert", pki.ca.ca_path, "--cert", crt, "--key", key]


def test_keepalive_reuses_one_client_connection(env):
    d, pki, up = env
    p = Proxy(http_config(pki, up.address), d)
    port = p.port("inbound")
    rc, out, err = curl(*curl_mtls(pki), f"https://localhost:{port}/a", f"https://localhost:{port}/b")
    assert rc == 0, err
    assert up.paths() == ["/a", "/b"]
    assert p.stop() == 0  # a request's log line is written after its response: read it after the stop
    log = [l for l in p.access_log() if l.get("url.path") in ("/a", "/b")]
    assert len(log) == 2 and log[0]["source.port"] == log[1]["source.port"], "curl should reuse one connection"
    assert all(l["event.outcome"] == "allow" and l["http.response.status_code"] == 200 for l in log)


PERSISTENCE_CASES = [  # request version, its Connection header, kept?, the Connection header we must answer with
    ("1.0", None, False, "close"),
    ("1.0", "Keep-Alive", True, "keep-alive"),  # an HTTP/1.0 client keeps only a connection it is told is kept
    ("1.1", None, True, None),
    ("1.1", "close", False, "close"),
]


@pytest.mark.parametrize("path", ["/api/allowed", "/denied"])
@pytest.mark.parametrize("version,asked,kept,answer", PERSISTENCE_CASES)
def test_the_connection_is_kept_or_closed_as_the_client_asked_and_it_is_told_which(env, path, version, asked, kept,
                                                                                    answer):
    """RFC 9112 9.3 and 9.6, for a proxied response and for our own 403 alike: an HTTP/1.1 client
    keeps its connection unless it sends `close`, and then we close after the response; an
    HTTP/1.0 client keeps it only with `keep-alive`, and only when the response says
    `Connection: keep-alive` (without it the client waits for our close, as ab -k does)."""
    d, pki, up = env
    p = Proxy(http_config(pki, up.address, rules=paths_rule("api", '["/api/**"]')), d)
    s = client_tls_context(pki, "alice").wrap_socket(socket.create_connection(("127.0.0.1", p.port("inbound")), timeout=5),
                                                     server_hostname="localhost")
    conn = f"Connection: {asked}\r\n" if asked else ""
    s.sendall(f"GET {path} HTTP/{version}\r\nHost: x\r\n{conn}\r\n".encode())
    head, body, rest = read_response(s)
    assert head is not None and head.split(b" ")[1] == (b"200" if path == "/api/allowed" else b"403"), head
    said = [l.split(b":", 1)[1].strip().lower() for l in head.split(b"\r\n")[1:] if l.lower().startswith(b"connection:")]
    assert said == ([answer.encode()] if answer else []), head
    s.settimeout(2)
    if kept:
        # Still open, and it serves the next request.
        s.sendall(f"GET /api/again HTTP/{version}\r\nHost: x\r\n{conn}\r\n".encode())
        head, _, _ = read_response(s, rest)
        assert head is not None and head.startswith(b"HTTP/1.1 200"), head
    else:
        assert rest == b"" and s.recv(100) == b"", "the connection should have been closed after the response"
    s.close()
    p.stop()


def test_ab_keep_alive_over_http10_completes_every_request(env):
    """ApacheBench speaks HTTP/1.0 with `Connection: Keep-Alive` and keeps a connection only when the
    response says so: before the fix each connection's first response never ended for it."""
    d, pki, up = env
    p = Proxy(http_config(pki, up.address), d)
    crt, key = pki.client("alice")
    pem = os.path.join(d, "alice.pem")
    with open(pem, "w") as f:
        f.write(open(crt).read() + open(key).read())
    r = subprocess.run(["ab", "-k", "-c", "4", "-n", "400", "-s", "10", "-E", pem, f"https://127.0.0.1:{p.port('inbound')}/ab"],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr
    for want in ("Complete requests:      400", "Failed requests:        0", "Keep-Alive requests:    400"):
        assert want in r.stdout, r.stdout
    assert "Non-2xx" not in r.stdout, r.stdout
    assert up.paths().count("/ab") == 400
    p.stop()


def test_identity_header_is_ours_not_the_clients(env):
    d, pki, up = env
    p = Proxy(http_config(pki, up.address), d)
    rc, out, err = curl(*curl_mtls(pki), "-H", "X-Forwarded-Client-Cert: URI=spiffe://evil/admin",
                        "-H", "X-Remote-User: root", f"https://localhost:{p.port('inbound')}/x")
    assert rc == 0, err
    req = up.requests[-1]
    xfcc = [v for k, v in req["header_list"] if k == "x-forwarded-client-cert"]
    assert len(xfcc) == 1 and "URI=spiffe://cluster.local/ns/shop/sa/frontend" in xfcc[0]
    assert "spiffe://evil" not in xfcc[0]
    assert "x-remote-user" not in req["headers"]
    p.stop()


FORGED_ORIGIN = ["-H", "X-Forwarded-For: 203.0.113.9", "-H", "X-Forwarded-For: 198.51.100.1",
                 "-H", "X-Real-IP: 203.0.113.9", "-H", "Forwarded: for=203.0.113.9;host=admin.internal",
                 "-H", "X-Forwarded-Host: admin.internal", "-H", "X-Forwarded-Proto: http",
                 "-H", "X-Forwarded-Port: 80", "-H", "X-Forwarded-Prefix: /admin"]


def test_where_a_request_came_from_is_what_the_proxy_saw_not_what_the_client_claims(env):
    """Third red-team round: a client's X-Forwarded-For, X-Real-IP, Forwarded and X-Forwarded-Host
    reached the app as sent, so an app that trusts its sidecar took the client's claimed address,
    host or scheme (an IP allowlist, a rate limit, an audit line, a host the rules never saw).
    By default they are replaced by what the proxy saw: X-Forwarded-For is the peer's address,
    X-Forwarded-Proto the listener's scheme. forwarded_headers: append keeps the client's (a front
    proxy that is itself a peer) and appends the peer's address."""
    d, pki, up = env
    p = Proxy(http_config(pki, up.address), d)
    rc, out, err = curl(*curl_mtls(pki), *FORGED_ORIGIN, f"https://localhost:{p.port('inbound')}/x")
    assert rc == 0, err
    got = up.requests[-1]["header_list"]
    forwarded = [(k, v) for k, v in got if k.startswith("x-forwarded-") and k != "x-forwarded-client-cert"
                 or k in ("x-real-ip", "forwarded")]
    assert sorted(forwarded) == [("x-forwarded-for", "127.0.0.1"), ("x-forwarded-proto", "https")], got
    p.stop()

    p = Proxy(http_config(pki, up.address).replace("    policy: inbound\n", "    policy: inbound\n"
                                                    "    forwarded_headers: append\n", 1), d)
    rc, out, err = curl(*curl_mtls(pki), *FORGED_ORIGIN, f"https://localhost:{p.port('inbound')}/x")
    assert rc == 0, err
    got = up.requests[-1]["header_list"]
    assert [v for k, v in got if k == "x-forwarded-for"] == ["203.0.113.9, 198.51.100.1, 127.0.0.1"], got
    assert [v for k, v in got if k == "x-forwarded-proto"] == ["http"], got  # the front proxy's word
    assert [v for k, v in got if k == "x-forwarded-host"] == ["admin.internal"], got
    assert [v for k, v in got if k == "x-real-ip"] == ["203.0.113.9"], got
    p.stop()


@pytest.mark.parametrize("header", ["X-HTTP-Method-Override: DELETE", "X-HTTP-Method: DELETE",
                                    "X-Method-Override: DELETE", "X-Original-URL: /admin/users",
                                    "X-Rewrite-URL: /admin/users", "X_HTTP_Method_Override: DELETE"])
def test_a_header_that_overrides_the_method_or_path_is_refused(env, header):
    """Third red-team round: Rails/Rack, Express and ASP.NET middleware run the method in
    X-HTTP-Method-Override and its kin, IIS and Symfony serve the path in X-Original-URL: a
    `methods:` or `paths:` rule judged another request than the app ran. Such a request is
    refused with 400 and reaches no upstream, in the '_' spelling too when headers_with_underscores
    lets those through."""
    d, pki, up = env
    p = Proxy(http_config(pki, up.address).replace("    policy: inbound\n", "    policy: inbound\n"
                                                    "    headers_with_underscores: allow\n", 1), d)
    rc, out, err = curl(*curl_mtls(pki), "-H", header, "-X", "POST", "--data", "x",
                        f"https://localhost:{p.port('inbound')}/public/x")
    assert rc == 0, err
    assert out.startswith(b"{") and b"asks the upstream to" in out, out
    assert b"another method" in out if "URL" not in header else b"another path" in out, out
    assert up.requests == []
    def logged():
        return [r["http.response.status_code"] for r in p.access_log() if "asks the upstream to" in r.get("reason", "")]
    assert wait_until(lambda: logged() == [400], 5), p.access_log()
    p.stop()


def test_chunked_upload_and_download_of_50_mb(env):
    d, pki, up = env
    p = Proxy(http_config(pki, up.address), d)
    port = p.port("inbound")
    data = os.urandom(50 * 1024 * 1024)
    path = os.path.join(d, "upload.bin")
    with open(path, "wb") as f:
        f.write(data)
    rc, out, err = curl(*curl_mtls(pki), "-H", "Transfer-Encoding: chunked", "--data-binary", f"@{path}",
                        f"https://localhost:{port}/upload")
    assert rc == 0, err
    import json
    body = json.loads(out)
    assert body["bytes"] == len(data) and body["sha256"] == hashlib.sha256(data).hexdigest()
    assert up.requests[-1]["headers"].get("transfer-encoding") == "chunked"

    size = 50 * 1024 * 1024
    rc, out, err = curl(*curl_mtls(pki), f"https://localhost:{port}/download?size={size}")
    assert rc == 0, err
    block = bytes(range(256)) * 256
    expected = (block * (size // len(block) + 1))[:size]
    assert len(out) == size and hashlib.sha256(out).digest() == hashlib.sha256(expected).digest()
    p.stop()


def test_streaming_response_arrives_in_pieces(env):
    d, pki, up = env
    p = Proxy(http_config(pki, up.address), d)
    port = p.port("inbound")
    crt, key = pki.client("alice")
    proc = subprocess.Popen(["curl", "-sSN", "--cacert", pki.ca.ca_path, "--cert", crt, "--key", key,
                             f"https://localhost:{port}/stream?n=4&delay=0.7"], stdout=subprocess.PIPE)
    first = proc.stdout.readline()
    first_seen = time.time()
    rest = proc.stdout.read()
    proc.wait(30)
    lines = [first] + rest.splitlines(keepends=True)
    assert len(lines) == 4, lines
    last_sent = float(lines[-1].split(b" at ")[1])
    # The first event reached the client before the upstream had produced the last one: the
    # response was relayed as it arrived, not buffered whole.
    assert first_seen < last_sent, (first_seen, last_sent)
    p.stop()


def test_upgrade_switches_to_a_raw_relay(env):
    d, pki, up = env
    p = Proxy(http_config(pki, up.address), d)
    port = p.port("inbound")
    ctx = ssl.create_default_context(cafile=pki.ca.ca_path)
    ctx.load_cert_chain(*pki.client("alice"))
    s = ctx.wrap_socket(socket.create_connection(("127.0.0.1", port), timeout=10), server_hostname="localhost")
    s.sendall(b"GET /ws HTTP/1.1\r\nHost: localhost\r\nConnection: Upgrade\r\nUpgrade: echo-protocol\r\n\r\n")
    head = b""
    while b"\r\n\r\n" not in head:
        head += s.recv(1)
    assert head.startswith(b"HTTP/1.1 101"), head
    for msg in (b"hello", b"x" * 100000):
        s.sendall(msg)
        got = b""
        while len(got) < len(msg):
            got += s.recv(65536)
        assert got == msg
    s.close()
    p.stop()


def test_h2c_upgrade_is_never_passed_upstream(env):
    d, pki, up = env
    p = Proxy(http_config(pki, up.address), d)
    out = raw_exchange(p.port("inbound"), b"GET /x HTTP/1.1\r\nHost: localhost\r\nConnection: Upgrade, HTTP2-Settings\r\n"
                       b"Upgrade: h2c\r\nHTTP2-Settings: AAMAAABkAAQAAP__\r\n\r\n", pki, "alice", timeout=3)
    assert out.startswith(b"HTTP/1.1 200"), out[:200]
    hdrs = up.requests[-1]["headers"]
    assert "upgrade" not in hdrs and "http2-settings" not in hdrs
    p.stop()


def test_unix_socket_upstream(env):
    d, pki, _ = env
    sock = os.path.join(d, "app.sock")
    up = RecordingUpstream(unix_path=sock)
    p = Proxy(http_config(pki, up.address), d)
    rc, out, err = curl(*curl_mtls(pki), f"https://localhost:{p.port('inbound')}/over-unix")
    assert rc == 0, err
    assert up.paths() == ["/over-unix"]
    up.close()
    p.stop()


def test_tls_upstream_with_client_certificate(env):
    d, pki, _ = env
    # The upstream requires a client certificate from the proxy and has a cert for "app.internal".
    up_cert, up_key = pki.ca.issue("upstream", dns=["app.internal"], server=True, client=False)
    proxy_cert, proxy_key = pki.ca.issue("proxy-client", client=True)
    sctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    sctx.load_cert_chain(up_cert, up_key)
    sctx.load_verify_locations(pki.ca.ca_path)
    sctx.verify_mode = ssl.CERT_REQUIRED
    up = RecordingUpstream(tls_context=sctx)
    cfg = http_config(pki, f"tls://127.0.0.1:{up.port}")
    cfg = cfg.replace("  app: {", f"  app: {{ tls: upclient, server_name: app.internal, ")
    cfg = cfg.replace("tls:\n", f"tls:\n  upclient: {{ cert: {proxy_cert}, key: {proxy_key}, ca: {pki.ca.ca_path} }}\n", 1)
    p = Proxy(cfg, d)
    rc, out, err = curl(*curl_mtls(pki), f"https://localhost:{p.port('inbound')}/over-tls")
    assert rc == 0 and b'"path": "/over-tls"' in out, (err, out)
    p.stop()

    # The wrong server name: the proxy refuses the upstream (502), nothing is sent.
    before = len(up.requests)
    p = Proxy(cfg.replace("server_name: app.internal", "server_name: other.internal"), d)
    rc, out, err = curl(*curl_mtls(pki), "-w", "%{http_code}", f"https://localhost:{p.port('inbound')}/x")
    assert out.endswith(b"502") and b"upstream_unavailable" in out, out
    assert len(up.requests) == before
    p.stop()
    up.close()


def line_echo_server():
    """A TCP upstream that upper-cases what it reads and, after the client's FIN, says BYE."""
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen()

    def serve():
        c, _ = srv.accept()
        with c:
            while True:
                data = c.recv(65536)
                if not data:
                    break
                c.sendall(data.upper())
            c.sendall(b"BYE\n")

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    return srv, t


def tcp_config(pki, port, tls=True):
    cfg = http_config(pki, f"tcp://127.0.0.1:{port}", rules="      - name: alice-only\n        from: { users: [alice] }\n"
                      if tls else "      - name: anyone\n        from: { any: true }\n")
    cfg = cfg.replace("    upstream: app\n", "    upstream: app\n    protocol: tcp\n")
    if not tls:
        cfg = cfg.replace("    tls: workload\n", "", 1)
    return cfg


def test_tcp_listener_relays_openssl_s_client(env):
    d, pki, _ = env
    srv, t = line_echo_server()
    p = Proxy(tcp_config(pki, srv.getsockname()[1]), d)
    crt, key = pki.client("alice")
    proc = subprocess.Popen(["openssl", "s_client", "-quiet", "-connect", f"127.0.0.1:{p.port('inbound')}",
                             "-CAfile", pki.ca.ca_path, "-cert", crt, "-key", key, "-verify_return_error"],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    proc.stdin.write(b"hello through tcp\n")
    proc.stdin.flush()
    assert proc.stdout.readline() == b"HELLO THROUGH TCP\n"
    proc.kill()
    proc.wait()
    t.join(10)
    p.stop()
    log = [l for l in p.access_log() if l["listener.name"] == "inbound"]
    assert log[-1]["event.outcome"] == "allow" and log[-1]["bytes.in"] == 18
    assert log[-1]["client.identity.user"] == "alice"


def test_tcp_relay_passes_half_close_on(env):
    d, pki, _ = env
    srv, t = line_echo_server()
    p = Proxy(tcp_config(pki, srv.getsockname()[1], tls=False), d)
    c = socket.create_connection(("127.0.0.1", p.port("inbound")), timeout=10)
    c.sendall(b"half\n")
    c.shutdown(socket.SHUT_WR)  # our FIN must reach the upstream, and its reply must still reach us
    got = b""
    while True:
        data = c.recv(100)
        if not data:
            break
        got += data
    assert got == b"HALF\nBYE\n"
    p.stop()


def test_tcp_listener_refuses_an_identity_not_in_from(env):
    d, pki, up = env
    pki.client("mallory")
    cfg = http_config(pki, up.address, rules="      - name: alice-only\n        from: { users: [alice] }\n")
    cfg = cfg.replace("    upstream: app\n", "    upstream: app\n    protocol: tcp\n")
    p = Proxy(cfg, d)
    out = raw_exchange(p.port("inbound"), b"GET / HTTP/1.0\r\n\r\n", pki, "mallory", timeout=5)
    assert out == b""
    assert up.requests == []
    p.stop()
    assert p.access_log()[-1]["event.outcome"] == "deny"


def test_no_client_certificate_and_a_foreign_ca_are_refused(env):
    d, pki, up = env
    p = Proxy(http_config(pki, up.address), d)
    port = p.port("inbound")
    rc, out, err = curl("--cacert", pki.ca.ca_path, f"https://localhost:{port}/x")
    assert rc != 0
    other = CA(d, name="Other CA")
    crt, key = other.issue("alice-from-elsewhere", cn="alice")
    rc, out, err = curl("--cacert", pki.ca.ca_path, "--cert", crt, "--key", key, f"https://localhost:{port}/x")
    assert rc != 0
    assert up.requests == []
    p.stop()
    reasons = [l.get("reason", "") for l in p.access_log()]
    assert any("did not return a certificate" in r for r in reasons), reasons
    assert any("unknown ca" in r.lower() or "unable to get local issuer" in r.lower() or "certificate verify failed" in r.lower()
               for r in reasons), reasons


def test_slow_request_head_is_cut_at_the_header_timeout(env):
    d, pki, up = env
    cfg = http_config(pki, up.address).replace("    policy: inbound\n", "    policy: inbound\n    limits: { header_timeout_ms: 1000 }\n", 1)
    p = Proxy(cfg, d)
    ctx = ssl.create_default_context(cafile=pki.ca.ca_path)
    ctx.load_cert_chain(*pki.client("alice"))
    s = ctx.wrap_socket(socket.create_connection(("127.0.0.1", p.port("inbound")), timeout=30), server_hostname="localhost")
    s.sendall(b"GET /slow HTTP/1.1\r\n")
    closed = False
    for _ in range(20):  # one header byte at a time, slower than the timeout allows in total
        try:
            s.sendall(b"X")
            time.sleep(0.25)
        except (BrokenPipeError, ConnectionResetError, ssl.SSLError):
            closed = True
            break
    if not closed:
        s.settimeout(5)
        try:
            closed = s.recv(1) == b""
        except (ConnectionResetError, ssl.SSLError, socket.timeout):
            closed = True
    assert closed, "the connection should be closed at the header timeout"
    assert up.requests == []
    p.stop()


def _tls_keepalive_get(pki, port, path=b"/idle"):
    """One TLS connection with one keep-alive GET answered; returns the socket."""
    s = client_tls_context(pki, "alice").wrap_socket(socket.create_connection(("127.0.0.1", port), timeout=10),
                                                     server_hostname="localhost")
    s.sendall(b"GET " + path + b" HTTP/1.1\r\nHost: x\r\n\r\n")
    head, _, rest = read_response(s)
    assert head is not None, "closed before the response"
    assert head.startswith(b"HTTP/1.1 200"), head[:80]
    assert rest == b"", "more bytes than the response"
    return s


def _closed_within(s, seconds):
    """True when the peer closes s (close_notify/FIN, or a reset) within `seconds`."""
    s.settimeout(seconds)
    try:
        data = s.recv(1)
        assert data == b"", f"unexpected bytes on an idle connection: {data!r}"
        return True
    except (ConnectionResetError, ssl.SSLError):
        return True
    except socket.timeout:
        return False


def test_idle_keepalive_connection_is_closed_at_the_idle_timeout_and_a_busy_one_is_not(env):
    d, pki, up = env
    cfg = http_config(pki, up.address).replace("    policy: inbound\n", "    policy: inbound\n    limits: { idle_timeout_ms: 1500 }\n", 1)
    p = Proxy(cfg, d)
    port = p.port("inbound")
    # A client that sends its next request inside the timeout, several times over more than
    # the timeout in total, is still served: the clock restarts with each request.
    assert keepalive_requests(port, pki, [b"GET /busy HTTP/1.1\r\nHost: x\r\n\r\n"] * 4, pause=0.8) == [200] * 4
    # A connection idle after its response, and one idle right after the handshake, are closed.
    after_request = _tls_keepalive_get(pki, port)
    after_handshake = client_tls_context(pki, "alice").wrap_socket(
        socket.create_connection(("127.0.0.1", port), timeout=10), server_hostname="localhost")
    started = time.time()
    assert not _closed_within(after_request, 0.7), "closed before the idle timeout"
    assert _closed_within(after_request, 5), "an idle connection must be closed at idle_timeout_ms"
    assert _closed_within(after_handshake, 5), "a connection that never sends a request must be closed too"
    assert time.time() - started < 5
    assert up.paths().count("/busy") == 4
    p.stop()


def test_a_key_update_from_an_idle_client_does_not_start_the_header_timeout(env):
    # A TLS 1.3 KeyUpdate wakes an idle connection but carries no request byte: the connection
    # stays under idle_timeout_ms (4 s here), not header_timeout_ms (1 s), which starts with the
    # first byte of a request. openssl s_client sends one for the command "k".
    d, pki, up = env
    cfg = http_config(pki, up.address).replace(
        "    policy: inbound\n", "    policy: inbound\n    limits: { header_timeout_ms: 1000, idle_timeout_ms: 4000 }\n", 1)
    p = Proxy(cfg, d)
    crt, key = pki.client("alice")
    c = subprocess.Popen(["openssl", "s_client", "-connect", f"127.0.0.1:{p.port('inbound')}", "-servername", "localhost",
                          "-CAfile", pki.ca.ca_path, "-cert", crt, "-key", key, "-tls1_3"],
                         stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        time.sleep(1.0)  # handshake done
        c.stdin.write(b"k\n")
        c.stdin.flush()
        woke = time.time()
        time.sleep(2.5)  # well past the header timeout
        assert c.poll() is None, "the connection was closed at the header timeout after a KeyUpdate"
        # Still usable: a request is answered on it.
        c.stdin.write(b"GET /after-key-update HTTP/1.1\r\nHost: x\r\n\r\n")
        c.stdin.flush()
        deadline = time.time() + 5
        while "/after-key-update" not in up.paths() and time.time() < deadline:
            time.sleep(0.05)
        assert "/after-key-update" in up.paths()
        # And idle again after it, the idle timeout closes it (s_client exits on the close).
        c.wait(10)
        assert time.time() - woke < 10
    finally:
        if c.poll() is None:
            c.kill()
        out = c.stdout.read().decode(errors="replace")
    assert "KEYUPDATE" in out, out[-2000:]
    p.stop()


def test_sigterm_closes_idle_connections_at_once_and_exits(env):
    d, pki, up = env
    p = Proxy(http_config(pki, up.address), d)
    port = p.port("inbound")
    idle = [_tls_keepalive_get(pki, port) for _ in range(8)]  # spread over both workers
    _sigterm_closes_at_once(p, idle)


def _sigterm_closes_at_once(p, idle):
    started = time.time()
    p.proc.send_signal(signal.SIGTERM)
    for s in idle:
        assert _closed_within(s, 5), "an idle connection must be closed by the drain"
    assert p.proc.wait(10) == 0
    # The drain may wait up to 10 s for busy connections; idle ones must not hold it up.
    assert time.time() - started < 5, f"exit took {time.time() - started:.1f}s with only idle connections"


def _server_side_inode(client):
    """The socket inode of the proxy's end of `client`'s TCP connection (from /proc/net/tcp)."""
    lport = client.getsockname()[1]
    pport = client.getpeername()[1]
    want_local = f"0100007F:{pport:04X}"
    want_remote = f"0100007F:{lport:04X}"
    with open("/proc/net/tcp") as f:
        for line in f.readlines()[1:]:
            fields = line.split()
            if fields[1] == want_local and fields[2] == want_remote:
                return int(fields[9])
    raise AssertionError("the proxy's end of the connection is not in /proc/net/tcp")


def _epoll_masks(pid, inode):
    """The event masks of every epoll set of process `pid` that holds the socket `inode`."""
    masks = []
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            if os.readlink(f"/proc/{pid}/fd/{fd}") != "anon_inode:[eventpoll]":
                continue
            with open(f"/proc/{pid}/fdinfo/{fd}") as f:
                info = f.read()
        except FileNotFoundError:
            continue
        # "tfd:       15 events: 8000001b data:     5567b3268aa0  pos:0 ino:e19599 sdev:f"
        for events, ino in re.findall(r"^tfd:\s*\d+\s+events:\s*([0-9a-f]+)\s.*?\bino:([0-9a-f]+)", info, re.M):
            if int(ino, 16) == inode:
                masks.append(int(events, 16))
    return masks


EPOLLET = 1 << 31


def _is_cold(pid, client):
    """True when the proxy keeps this connection in its own epoll set, outside asio's reactor
    (level-triggered; asio registers sockets edge-triggered)."""
    masks = _epoll_masks(pid, _server_side_inode(client))
    return len(masks) == 1 and not masks[0] & EPOLLET


def test_connections_idle_for_seconds_are_still_served_and_noticed_when_the_client_leaves(env):
    """A connection idle for over a second leaves asio's reactor for a cheaper epoll set of the
    worker's own (proxy/http/session.cpp, IdleParking). What a client sees must not change:
    requests after a long pause are served, bytes sent in pieces arrive whole, and a client that
    goes away is noticed (no socket left in CLOSE_WAIT), and portcullis_connections_idle_cold
    counts them."""
    d, pki, up = env
    p = Proxy(http_config(pki, up.address, top="admin: { address: 127.0.0.1:0 }"), d)
    port, admin = p.port("inbound"), p.port("admin")
    after_request = [_tls_keepalive_get(pki, port, b"/first") for _ in range(6)]  # both workers
    after_handshake = [client_tls_context(pki, "alice").wrap_socket(
        socket.create_connection(("127.0.0.1", port), timeout=10), server_hostname="localhost") for _ in range(2)]
    leaving = _tls_keepalive_get(pki, port, b"/first")
    everyone = after_request + after_handshake + [leaving]
    # What this test is about: all of them have moved out of asio (one to two seconds).
    assert wait_until(lambda: all(_is_cold(p.proc.pid, s) for s in everyone), 5), \
        [_epoll_masks(p.proc.pid, _server_side_inode(s)) for s in everyone]
    assert metric(admin, "portcullis_connections_idle_cold") == len(everyone)

    for s in after_request + after_handshake:
        s.sendall(b"GET /again HTTP/1.1\r\nHost: x\r\n\r\n")
        head, _, rest = read_response(s)
        assert head is not None and head.startswith(b"HTTP/1.1 200"), head
    # Back in asio while in use.
    assert all(not _is_cold(p.proc.pid, s) for s in after_request)

    # A request whose head arrives in two pieces, the first one while the connection is cold.
    s = after_request[0]
    assert wait_until(lambda: _is_cold(p.proc.pid, s), 5)
    s.sendall(b"GET /in-pieces HTTP/1.1\r\n")
    time.sleep(0.3)
    s.sendall(b"Host: x\r\n\r\n")
    head, _, _ = read_response(s)
    assert head is not None and head.startswith(b"HTTP/1.1 200"), head
    assert up.paths().count("/again") == 8 and "/in-pieces" in up.paths()

    # The client leaves a cold connection: the proxy closes its end too.
    inode = _server_side_inode(leaving)
    leaving.close()

    def gone():
        with open("/proc/net/tcp") as f:
            return all(int(line.split()[9]) != inode for line in f.readlines()[1:])
    assert wait_until(gone, 5), "the proxy kept its end of a connection the client closed"
    for s in after_request + after_handshake:
        s.close()
    assert wait_until(lambda: metric(admin, "portcullis_connections_idle_cold") == 0, 5), \
        metric(admin, "portcullis_connections_idle_cold")
    assert metric(admin, "portcullis_connections_active") == 0
    p.stop()


def test_a_plaintext_connection_idle_for_seconds_is_still_served(env):
    """The same move out of asio and back for a listener without TLS: there asio reads the
    socket itself (not OpenSSL), after the socket is handed back to it."""
    d, pki, up = env
    extra = "  - name: plain\n    address: 127.0.0.1:0\n    upstream: app\n    policy: inbound\n"
    p = Proxy(http_config(pki, up.address, extra_listener=extra), d)
    s = socket.create_connection(("127.0.0.1", p.port("plain")), timeout=10)
    statuses = []
    for path in (b"/plain-one", b"/plain-two", b"/plain-three"):
        s.sendall(b"GET " + path + b" HTTP/1.1\r\nHost: x\r\n\r\n")
        head, _, rest = read_response(s)
        assert head is not None, f"closed before the response to {path}"
        statuses.append(head.split(b" ")[1])
        assert wait_until(lambda: _is_cold(p.proc.pid, s), 5), "the connection did not leave asio"
    # No certificate, so the policy refuses; what matters is that every request was read and
    # answered alike on the same connection, each after a pause out of asio.
    assert len(set(statuses)) == 1, statuses
    port = s.getsockname()[1]
    s.close()
    p.stop()  # a request's line is written after its response: read the log once the proxy is gone
    logged = [(r["url.path"], r["source.port"]) for r in p.access_log() if r["listener.name"] == "plain"]
    assert logged == [(path, port) for path in ("/plain-one", "/plain-two", "/plain-three")], logged


def test_a_connection_idle_outside_asio_still_closes_at_the_idle_timeout_and_on_sigterm(env):
    d, pki, up = env
    cfg = http_config(pki, up.address).replace("    policy: inbound\n", "    policy: inbound\n    limits: { idle_timeout_ms: 4000 }\n", 1)
    p = Proxy(cfg, d)
    port = p.port("inbound")
    timing_out = _tls_keepalive_get(pki, port)
    started = time.time()
    assert wait_until(lambda: _is_cold(p.proc.pid, timing_out), 3)
    assert not _closed_within(timing_out, 4000 / 1000 - (time.time() - started) - 0.5), "closed before the idle timeout"
    assert _closed_within(timing_out, 3), "a connection idle outside asio must still be closed at idle_timeout_ms"
    p.stop()

    p = Proxy(http_config(pki, up.address), d)
    port = p.port("inbound")
    idle = [_tls_keepalive_get(pki, port) for _ in range(8)]
    assert wait_until(lambda: all(_is_cold(p.proc.pid, s) for s in idle), 5)
    _sigterm_closes_at_once(p, idle)


def _refuse_cold_epoll_shim(directory):
    """Builds tests/integration/shims/refuse_cold_epoll.c (an LD_PRELOAD library) into directory."""
    src = os.path.join(os.path.dirname(os.path.abspath(__file__)), "shims", "refuse_cold_epoll.c")
    out = os.path.join(directory, "refuse_cold_epoll.so")
    r = subprocess.run(["cc", "-shared", "-fPIC", "-O1", "-o", out, src, "-ldl"], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    return out


def test_when_the_kernel_refuses_the_idle_epoll_set_connections_stay_in_asio_and_are_served(env):
    """The move of an idle connection out of asio (IdleParking) adds its socket to the worker's
    own epoll set, which the kernel can refuse (ENOSPC once the user's epoll watch limit,
    /proc/sys/fs/epoll/max_user_watches, is reached). A shim makes every such addition fail.
    The connections must stay in asio's reactor and be served as before; the refusal is said in
    the log, once per worker and pause, not once per connection; and a worker that was refused
    does not try again at each one-second sweep."""
    d, pki, up = env
    refusals_path = os.path.join(d, "refusals")
    asan = os.environ.get("ASAN_OPTIONS", "")
    # ASan insists on being the first library loaded; the shim comes first here.
    p = Proxy(http_config(pki, up.address, top="admin: { address: 127.0.0.1:0 }"), d,
              env={"LD_PRELOAD": _refuse_cold_epoll_shim(d), "REFUSE_COLD_EPOLL_LOG": refusals_path,
                   "ASAN_OPTIONS": (asan + ":" if asan else "") + "verify_asan_link_order=0"})
    port, admin = p.port("inbound"), p.port("admin")

    def refusals():
        try:
            with open(refusals_path) as f:
                return len(f.readlines())
        except FileNotFoundError:
            return 0

    idle = [_tls_keepalive_get(pki, port, b"/first") for _ in range(6)]  # both workers
    assert wait_until(lambda: refusals() > 0, 5), "no connection was offered to the idle epoll set"
    # The other worker's first sweep with connections to move may come up to about two seconds
    # later (its connections parked later, its sweep runs at its own phase).
    time.sleep(2.5)
    first = refusals()
    assert first <= len(idle), f"{first} refused attempts for {len(idle)} connections: some were tried twice"
    time.sleep(3)  # three more sweeps of each worker, all inside the ten-second pause
    assert refusals() == first, "a refused worker tried again at the next sweeps"

    for s in idle:
        masks = _epoll_masks(p.proc.pid, _server_side_inode(s))
        assert len(masks) == 1 and masks[0] & EPOLLET, f"not (only) in asio's reactor: {masks}"
    assert metric(admin, "portcullis_connections_idle_cold") == 0
    for s in idle:
        s.sendall(b"GET /again HTTP/1.1\r\nHost: x\r\n\r\n")
        head, _, rest = read_response(s)
        assert head is not None and head.startswith(b"HTTP/1.1 200"), head
    assert up.paths().count("/again") == len(idle)

    said = re.findall(r"worker (\d+): the kernel refused to move an idle connection out of asio's reactor "
                      r"\(No space left on device\)", p.stderr())
    assert said and len(said) == len(set(said)), p.stderr()
    for s in idle:
        s.close()
    assert wait_until(lambda: metric(admin, "portcullis_connections_active") == 0, 5)
    p.stop()


def test_an_address_another_process_listens_on_is_refused_not_shared(env):
    """Each worker listens with SO_REUSEPORT, which would let a second process of the same user
    bind the address too, and the kernel would split the connections between them: a second
    Portcullis started by mistake, with another policy, would silently serve part of the traffic.
    It must refuse to start instead, whether the other listener is a Portcullis or any program
    that set SO_REUSEPORT itself, and the first one keeps serving."""
    d, pki, up = env
    port = free_port()
    cfg = http_config(pki, up.address).replace("address: 127.0.0.1:0", f"address: 127.0.0.1:{port}", 1)
    first = Proxy(cfg, d)
    d2 = os.path.join(d, "second")
    os.mkdir(d2)
    second = Proxy(cfg, d2, expect_ready=False)
    assert second.proc.wait(20) != 0
    assert (f"listener 'inbound': cannot listen on 127.0.0.1:{port}: another process is listening there "
            "(another portcullis?)") in second.stderr(), second.stderr()
    rc, out, err = curl(*curl_mtls(pki), "-w", "%{http_code}", f"https://localhost:{port}/still-the-first")
    assert out.endswith(b"200"), (out, err)
    first.stop()

    other = socket.socket()
    other.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    other.bind(("127.0.0.1", port))
    other.listen(8)
    try:
        third = Proxy(cfg, d2, expect_ready=False)
        assert third.proc.wait(20) != 0
        assert "another process is listening there" in third.stderr(), third.stderr()
    finally:
        other.close()
    # Once the address is free again, it starts.
    Proxy(cfg, d2).stop()


def test_default_deny_without_rules(env):
    d, pki, up = env
    cfg = http_config(pki, up.address).replace('      - name: everything\n        http: { paths: ["/**"] }\n', "")
    cfg = cfg.replace("    rules:\n", "    rules: []\n")
    p = Proxy(cfg, d)
    rc, out, err = curl(*curl_mtls(pki), "-w", "%{http_code}", f"https://localhost:{p.port('inbound')}/x")
    assert out.endswith(b"403") and b'"error":"denied"' in out
    assert up.requests == []
    p.stop()


def test_upstream_down_gives_502_with_a_reason(env):
    d, pki, up = env
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    dead = s.getsockname()[1]
    s.close()
    p = Proxy(http_config(pki, f"tcp://127.0.0.1:{dead}"), d)
    rc, out, err = curl(*curl_mtls(pki), "-w", "%{http_code}", f"https://localhost:{p.port('inbound')}/x")
    assert out.endswith(b"502") and b"connection refused" in out.lower(), out
    p.stop()


def test_sigterm_lets_an_in_flight_request_finish(env):
    d, pki, up = env
    p = Proxy(http_config(pki, up.address), d)
    crt, key = pki.client("alice")
    proc = subprocess.Popen(["curl", "-sSN", "--cacert", pki.ca.ca_path, "--cert", crt, "--key", key,
                             f"https://localhost:{p.port('inbound')}/stream?n=3&delay=0.5"], stdout=subprocess.PIPE)
    proc.stdout.readline()  # the request is in flight
    p.proc.terminate()
    rest = proc.stdout.read()
    assert proc.wait(30) == 0
    assert rest.count(b"event") == 2
    assert p.proc.wait(30) == 0


def with_limits(cfg, limits):
    return cfg.replace("    policy: inbound\n", f"    policy: inbound\n    limits: {{ {limits} }}\n", 1)


def test_oversized_request_head_gets_431(env):
    d, pki, up = env
    p = Proxy(with_limits(http_config(pki, up.address), "header_bytes: 2048"), d)
    out = raw_exchange(p.port("inbound"), b"GET /x HTTP/1.1\r\nHost: localhost\r\nX-Big: " + b"a" * 4096 + b"\r\n\r\n", pki, "alice")
    assert out.startswith(b"HTTP/1.1 431"), out[:100]
    assert up.requests == []
    p.stop()


def test_body_over_max_body_bytes_gets_413(env):
    d, pki, up = env
    p = Proxy(with_limits(http_config(pki, up.address), "max_body_bytes: 1000"), d)
    out = raw_exchange(p.port("inbound"), b"POST /upload HTTP/1.1\r\nHost: localhost\r\nContent-Length: 5000\r\n\r\n" + b"x" * 5000,
                       pki, "alice")
    assert out.startswith(b"HTTP/1.1 413"), out[:100]
    assert b"max_body_bytes" in out
    p.stop()


def test_hanging_upstream_gets_504_at_upstream_timeout(env):
    d, pki, _ = env
    hang = socket.socket()
    hang.bind(("127.0.0.1", 0))
    hang.listen()  # accepts (in the kernel) and never answers
    p = Proxy(with_limits(http_config(pki, f"tcp://127.0.0.1:{hang.getsockname()[1]}"), "upstream_timeout_ms: 500"), d)
    rc, out, err = curl(*curl_mtls(pki), "-w", "%{http_code}", f"https://localhost:{p.port('inbound')}/slow")
    assert out.endswith(b"504") and b"upstream_timeout_ms" in out, out
    # The proxy keeps serving.
    rc, out, err = curl(*curl_mtls(pki), "-w", "%{http_code}", f"https://localhost:{p.port('inbound')}/again")
    assert out.endswith(b"504")
    p.stop()
    hang.close()


def test_connections_beyond_max_connections_are_closed_and_the_others_kept(env):
    d, pki, up = env
    p = Proxy(with_limits(http_config(pki, up.address), "max_connections: 2"), d)
    ctx = ssl.create_default_context(cafile=pki.ca.ca_path)
    ctx.load_cert_chain(*pki.client("alice"))
    port = p.port("inbound")
    held = [ctx.wrap_socket(socket.create_connection(("127.0.0.1", port), timeout=5), server_hostname="localhost")
            for _ in range(2)]
    refused = False
    try:
        extra = ctx.wrap_socket(socket.create_connection(("127.0.0.1", port), timeout=5), server_hostname="localhost")
        extra.sendall(b"GET /third HTTP/1.1\r\nHost: localhost\r\n\r\n")
        refused = extra.recv(100) == b""
    except (ssl.SSLError, ConnectionResetError, BrokenPipeError, socket.timeout):
        refused = True
    assert refused, "a third connection must be refused"
    for i, s in enumerate(held):
        s.sendall(f"GET /held{i} HTTP/1.1\r\nHost: localhost\r\n\r\n".encode())
        assert s.recv(100).startswith(b"HTTP/1.1 200")
    assert "/third" not in up.paths()
    p.stop()


def _discard_until_closed(c):
    """Reads, and discards, until the peer closes (or the socket's timeout passes): no reset for
    what the peer writes meanwhile."""
    try:
        while c.recv(65536):
            pass
    except OSError:
        pass


class ScriptedUpstream:
    """An upstream that treats the Nth request it receives (on any connection) as script[N]:
    "answer" (200 with keep-alive framing, then close, like a server whose keep-alive timeout
    just passed), "answer_close" (the same, the close right behind the response: the proxy may
    see both in one readiness edge), "halfclose" (200 and the FIN in one segment, then it goes
    on reading, and discards, until the proxy closes: no reset for what is written to it), "junk"
    (200 and a second, unasked response in one segment, connection kept), "keep" (200,
    connection kept), "stray" (200, then 0.1 s later a second response
    nobody asked for, connection kept), "hints" (103 Early Hints, then as "answer"), "hold" (no
    answer: it reads, and discards, until the proxy closes), or "drop" (close without
    answering); after the script,
    "answer". Records (connection number, method, path, body bytes) of every request."""

    def __init__(self, script=()):
        self.script = list(script)
        self.seen = []
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.address = f"tcp://127.0.0.1:{self.sock.getsockname()[1]}"
        threading.Thread(target=self._serve, daemon=True).start()

    def _read_request(self, c, data):
        while b"\r\n\r\n" not in data:
            try:
                chunk = c.recv(65536)
            except ConnectionResetError:  # the proxy closed with unread bytes (the stray response)
                chunk = b""
            if not chunk:
                return None, b""
            data += chunk
        head, _, rest = data.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        length = 0
        for line in lines[1:]:
            name, _, value = line.partition(":")
            if name.strip().lower() == "content-length":
                length = int(value)
        while len(rest) < length:
            chunk = c.recv(65536)
            if not chunk:
                break
            rest += chunk
        method, path = lines[0].split(" ")[:2]
        return (method, path, len(rest[:length])), rest[length:]

    def _serve(self):
        n = 0
        while True:
            try:
                c, _ = self.sock.accept()
            except OSError:
                return
            n += 1
            data = b""
            while True:
                req, data = self._read_request(c, data)
                if req is None:
                    break
                self.seen.append((n, *req))
                action = self.script[len(self.seen) - 1] if len(self.seen) <= len(self.script) else "answer"
                if action == "drop":
                    break
                if action == "hold":
                    _discard_until_closed(c)
                    break
                if action == "hints":
                    c.sendall(b"HTTP/1.1 103 Early Hints\r\nLink: </style.css>; rel=preload\r\n\r\n")
                if action in ("halfclose", "junk"):
                    c.setsockopt(socket.IPPROTO_TCP, socket.TCP_CORK, 1)  # one segment for all
                    c.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
                    if action == "junk":
                        c.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nJUNK!")
                    else:
                        c.shutdown(socket.SHUT_WR)
                    c.setsockopt(socket.IPPROTO_TCP, socket.TCP_CORK, 0)
                    if action == "junk":
                        continue
                    c.settimeout(30)
                    _discard_until_closed(c)
                    break
                c.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
                if action == "stray":
                    time.sleep(0.1)  # after the proxy has read the answer: a second, unasked response
                    c.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nSTRAY")
                if action in ("answer", "hints"):
                    time.sleep(0.05)  # the proxy reads the response before the FIN follows
                    break
                if action == "answer_close":
                    break
            c.close()

    def close(self):
        self.sock.close()


def get(path):
    return f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode()


POST = b"POST /p HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello"


def test_an_interim_response_reaches_http11_clients_only(env):
    """A 103 Early Hints from the upstream is passed on to an HTTP/1.1 client, before the final
    response; an HTTP/1.0 client gets the final response only (RFC 9110 15.2: it cannot tell
    a 1xx from the final response)."""
    d, pki, _ = env
    # "hints" closes after the response: the stand-in serves one connection at a time, and the
    # two requests may come through different workers, each with its own upstream connection.
    up = ScriptedUpstream(["hints", "hints"])
    p = Proxy(http_config(pki, up.address), d)
    for version, want_hints in (("1.1", True), ("1.0", False)):
        close = "Connection: close\r\n" if version == "1.1" else ""  # both end after the response
        out = raw_exchange(p.port("inbound"), f"GET /h HTTP/{version}\r\nHost: x\r\n{close}\r\n".encode(), pki, "alice",
                           timeout=5)
        assert out.endswith(b"\r\n\r\nok"), out
        if want_hints:
            assert out.startswith(b"HTTP/1.1 103 Early Hints\r\n") and b"link: </style.css>; rel=preload" in out.lower(), out
            assert out.count(b"HTTP/1.1 200 OK") == 1, out
        else:
            assert out.startswith(b"HTTP/1.1 200 OK\r\n") and b" 103 " not in out, out
    assert [r[2] for r in up.seen] == ["/h", "/h"]
    up.close()
    p.stop()


def test_upstream_closing_kept_alive_connections_costs_the_client_nothing(env):
    # The upstream closes each connection after its response (its keep-alive timeout passed).
    # The liveness check before each request sees the close, and every request, GET or POST,
    # goes out once, on a new connection.
    d, pki, _ = env
    up = ScriptedUpstream(["answer"] * 5)
    p = Proxy(http_config(pki, up.address), d)
    statuses = keepalive_requests(p.port("inbound"), pki, [get("/1"), get("/2"), POST, get("/3"), POST])
    assert statuses == [200, 200, 200, 200, 200], (statuses, up.seen)
    # Every request reached the upstream exactly once, each on its own connection.
    assert [(m, path, n) for _, m, path, n in up.seen] == [
        ("GET", "/1", 0), ("GET", "/2", 0), ("POST", "/p", 5), ("GET", "/3", 0), ("POST", "/p", 5)], up.seen
    assert [c for c, *_ in up.seen] == [1, 2, 3, 4, 5]
    assert p.stop() == 0
    log = [l for l in p.access_log() if l.get("url.path")]
    assert [l["http.response.status_code"] for l in log] == [200] * 5
    up.close()


def test_an_upstream_close_that_comes_with_the_response_costs_the_client_nothing(env):
    # As above, with no pause between the response and the FIN. A GET trusts what the kept
    # connection's last read found (EdgeReadiness: no recv() to check it), so it may be written
    # to the closed connection and is then sent again on a new one; a POST is never sent twice,
    # so its check asks the kernel and sees the close first. Either way the client gets every
    # answer, and the upstream's application sees every request once.
    d, pki, _ = env
    up = ScriptedUpstream(["answer_close"] * 6)
    p = Proxy(http_config(pki, up.address), d)
    statuses = keepalive_requests(p.port("inbound"), pki, [get("/1"), get("/2"), POST, get("/3"), POST, get("/4")],
                                  pause=0.05)
    assert statuses == [200] * 6, (statuses, up.seen)
    assert [(m, path, n) for _, m, path, n in up.seen] == [
        ("GET", "/1", 0), ("GET", "/2", 0), ("POST", "/p", 5), ("GET", "/3", 0), ("POST", "/p", 5), ("GET", "/4", 0)], up.seen
    assert [c for c, *_ in up.seen] == [1, 2, 3, 4, 5, 6]
    assert p.stop() == 0
    up.close()


def test_an_upstream_that_half_closes_after_its_response_is_not_written_to_again(env):
    # The upstream's FIN comes in the same segment as its response, and it keeps reading (a
    # lingering close), so a request written to that connection is neither answered nor reset.
    # The check before the next request must see the FIN: a read that returned the response's
    # bytes (fewer than it asked for) does not show it, only one that finds the socket empty.
    d, pki, _ = env
    for method_request in (get("/next"), POST):
        up = ScriptedUpstream(["halfclose", "keep"])
        p = Proxy(http_config(pki, up.address), d)
        statuses = keepalive_requests(p.port("inbound"), pki, [get("/first"), method_request], pause=0.1)
        assert statuses == [200, 200], (statuses, up.seen)
        assert [c for c, *_ in up.seen] == [1, 2], up.seen  # the second request on a new connection
        assert p.stop() == 0
        up.close()


def test_bytes_after_an_upstream_response_never_answer_the_next_request(env):
    # A second response nobody asked for, in the same segment as the first: the connection goes,
    # and with it those bytes. The next request is answered by its own response.
    d, pki, _ = env
    up = ScriptedUpstream(["junk", "keep"])
    p = Proxy(http_config(pki, up.address), d)
    answers = keepalive_requests(p.port("inbound"), pki, [get("/first"), get("/second")], pause=0.1, bodies=True)
    assert answers == [(200, b"ok"), (200, b"ok")], (answers, up.seen)
    assert [(c, path) for c, _, path, _ in up.seen] == [(1, "/first"), (2, "/second")], up.seen
    assert p.stop() == 0
    up.close()


def test_a_drain_that_times_out_on_a_kept_upstream_connection_frees_the_waiting_session(env):
    """SIGTERM while a request waits for its response on a kept upstream connection, in the read
    started before the request was written (net::Stream::start_early_read), and the upstream
    never answers: the drain times out and the session is destroyed with its worker's
    io_context, the read never completed. The waiting coroutine and the read's slot used to own
    each other then, and LeakSanitizer failed the exit (the ASan run of this suite).
    The drain lasts drain_timeout_ms of the config in force at the signal: here a reload set it
    to 1.5 s (the default is 10 s)."""
    d, pki, _ = env
    up = ScriptedUpstream(["keep", "hold"])
    p = Proxy(http_config(pki, up.address), d)
    with open(p.config_path, "w") as f:
        f.write(http_config(pki, up.address, top="drain_timeout_ms: 1500"))
    p.proc.send_signal(signal.SIGHUP)
    assert wait_until(lambda: "reload complete" in p.stderr(), 10), p.stderr()
    s = client_tls_context(pki, "alice").wrap_socket(
        socket.create_connection(("127.0.0.1", p.port("inbound")), timeout=30), server_hostname="localhost")
    s.sendall(get("/a"))
    head, body, _ = read_response(s)
    assert head.startswith(b"HTTP/1.1 200") and body == b"ok", head
    s.sendall(get("/held"))
    assert wait_until(lambda: len(up.seen) == 2, 5), up.seen
    assert [(c, path) for c, _, path, _ in up.seen] == [(1, "/a"), (1, "/held")], up.seen  # the kept connection
    time.sleep(0.2)  # the proxy is waiting for the response now
    started = time.time()
    rc = p.stop()
    took = time.time() - started
    assert rc == 0, f"exit status {rc}:\n{p.stderr()[-4000:]}"
    assert "SIGTERM: stop accepting, draining for up to 1500 ms" in p.stderr(), p.stderr()[-2000:]
    assert "drain timeout: closing 1 connection(s)" in p.stderr()
    # The busy connection was given its 1.5 s, and not the default 10 s.
    assert 1.4 < took < 6, f"the drain took {took:.1f} s"
    s.close()
    up.close()


def test_a_request_is_sent_again_at_most_once_and_never_a_post(env):
    d, pki, _ = env
    # /a is answered on a kept connection; /b arrives on it and the upstream drops it unanswered:
    # the proxy sends /b once more on a new connection, which is dropped too, and the client gets
    # 502 (no third attempt). The same with upstream_timeout_ms armed: a close is not a timeout.
    for limits in (None, "upstream_timeout_ms: 5000"):
        up = ScriptedUpstream(["keep", "drop", "drop"])
        cfg = http_config(pki, up.address)
        p = Proxy(with_limits(cfg, limits) if limits else cfg, d)
        statuses = keepalive_requests(p.port("inbound"), pki, [get("/a"), get("/b")])
        assert statuses == [200, 502], (limits, statuses, up.seen)
        assert [(c, path) for c, _, path, _ in up.seen] == [(1, "/a"), (1, "/b"), (2, "/b")], (limits, up.seen)
        p.stop()
        up.close()
    # A POST whose connection is dropped unanswered is never sent twice: the upstream may have acted on it.
    up = ScriptedUpstream(["keep", "drop"])
    p = Proxy(http_config(pki, up.address), d)
    statuses = keepalive_requests(p.port("inbound"), pki, [get("/a"), POST])
    assert statuses == [200, 502], (statuses, up.seen)
    assert [(c, m) for c, m, _, _ in up.seen] == [(1, "GET"), (1, "POST")], up.seen
    p.stop()
    up.close()
    # A fresh connection that fails is not a stale one: no second attempt either.
    up = ScriptedUpstream(["drop"])
    p = Proxy(http_config(pki, up.address), d)
    out = raw_exchange(p.port("inbound"), get("/once"), pki, "alice")
    assert out.startswith(b"HTTP/1.1 502") and b"closed the connection before responding" in out, out
    assert [path for _, _, path, _ in up.seen] == ["/once"], up.seen
    assert p.stop() == 0
    up.close()


def test_a_response_nobody_asked_for_is_never_taken_for_the_next_one(env):
    # After answering /a the upstream sends a second response on the kept connection (what a
    # request smuggled past the proxy would produce). The next request must not get it: the
    # connection is dropped and /b goes out on a new one.
    d, pki, _ = env
    up = ScriptedUpstream(["stray"])
    p = Proxy(http_config(pki, up.address), d)
    got = keepalive_requests(p.port("inbound"), pki, [get("/a"), get("/b"), POST], bodies=True)
    assert got == [(200, b"ok"), (200, b"ok"), (200, b"ok")], (got, up.seen)
    # /b's connection is closed after its answer ("answer" once the script is done): the POST
    # goes out on a third.
    assert [(c, path) for c, _, path, _ in up.seen] == [(1, "/a"), (2, "/b"), (3, "/p")], up.seen
    assert p.stop() == 0
    up.close()


def _context_switches(pid):
    total = 0
    for tid in os.listdir(f"/proc/{pid}/task"):
        with open(f"/proc/{pid}/task/{tid}/status") as f:
            for line in f:
                if line.startswith(("voluntary_ctxt_switches", "nonvoluntary_ctxt_switches")):
                    total += int(line.split()[1])
    return total


def test_an_idle_proxy_sleeps(env):
    """With no traffic, no thread wakes up on a timer: a host running a proxy per pod pays nothing
    for the idle ones. (The drain check used to tick every 50 ms from start-up on.)"""
    d, pki, up = env
    p = Proxy(http_config(pki, up.address), d)
    rc, out, err = curl(*curl_mtls(pki), "-w", "%{http_code}", f"https://localhost:{p.port('inbound')}/x")
    assert out.endswith(b"200")
    time.sleep(1)  # the finished connection's last steps
    before = _context_switches(p.proc.pid)
    time.sleep(3)
    woke = _context_switches(p.proc.pid) - before
    assert woke <= 3, f"an idle proxy's threads woke {woke} times in 3 s"
    p.stop()


def _strace_summary(path):
    """{syscall: (calls, errors)} from `strace -c` output."""
    out = {}
    for line in open(path):
        f = line.split()
        if len(f) >= 5 and f[-1].isidentifier() and f[0][0].isdigit() and f[-1] != "total":
            calls = int(f[3])
            errors = int(f[4]) if len(f) == 6 else 0
            out[f[-1]] = (calls, errors)
    return out


def test_kept_alive_requests_make_no_readiness_system_calls(env):
    """Waiting for a kept-alive connection's next request must not re-arm its socket in epoll
    (epoll_ctl) nor read it to find nothing (proxy/net/edge_wait.hpp): the read that took the
    request found the socket empty, and the next byte brings an edge. Counted with strace over
    200 requests on one connection; the proxy before this change made one epoll_ctl per request.
    The kept upstream connection is still checked with one recv() per request that finds nothing
    (EAGAIN): only such a read, not a short one, shows that no FIN is waiting."""
    d, pki, _ = env
    # Each answer in one send(), so the proxy reads it in one recv() (the Python HTTP server
    # writes head and body apart, and how they arrive would decide the counts).
    up = ScriptedUpstream(["keep"] * 300)
    p = Proxy(http_config(pki, up.address), d)
    port = p.port("inbound")
    s = client_tls_context(pki, "alice").wrap_socket(socket.create_connection(("127.0.0.1", port), timeout=10),
                                                     server_hostname="localhost")

    def get(n):
        for _ in range(n):
            s.sendall(b"GET /count HTTP/1.1\r\nHost: x\r\n\r\n")
            head, body, rest = read_response(s)
            assert head is not None and head.startswith(b"HTTP/1.1 200") and body == b"ok", head
            assert rest == b""

    get(5)  # the connection and the upstream connection are set up before counting
    out = os.path.join(d, "strace.txt")
    tracer = subprocess.Popen(["strace", "-f", "-c", "-o", out, "-e", "trace=epoll_ctl,poll,recvfrom,read,sendto,write",
                               "-p", str(p.proc.pid)], stderr=subprocess.PIPE, text=True)
    # "Process N attached with T threads", once it holds them all.
    first = tracer.stderr.readline()
    assert "attached" in first, first
    requests = 200
    get(requests)
    tracer.send_signal(signal.SIGINT)
    tracer.wait(timeout=20)
    s.close()
    p.stop()
    up.close()
    counts = _strace_summary(out)
    # The work itself: each request is read, sent upstream, answered and relayed.
    assert counts.get("sendto", (0, 0))[0] >= requests, counts
    assert counts.get("write", (0, 0))[0] >= requests, counts
    # What the change removed, with room for a few wake-ups that find nothing: no epoll_ctl, no
    # poll(), and no TLS read() of the client's socket that finds nothing.
    slack = requests // 10
    assert counts.get("epoll_ctl", (0, 0))[0] <= slack, counts
    assert counts.get("poll", (0, 0))[0] <= slack, counts
    assert counts.get("read", (0, 0))[1] <= slack, counts
    # And what it keeps: the upstream's check, one recv() per request that finds nothing.
    assert requests - slack <= counts.get("recvfrom", (0, 0))[1] <= requests + slack, counts


def test_a_client_that_half_closes_after_its_request_gets_the_answer_and_the_close(env):
    """`printf 'GET ...' | nc`: the request and the client's FIN arrive together. The answer
    must come whole, and the proxy must then close its side too. The FIN may reach the proxy in
    the same readiness edge as the request, which an idle wait does not see again
    (EdgeReadiness::quiet); the idle sweep moves the connection to a level-triggered epoll set
    within one to two seconds, which does (proxy/http/session.cpp, IdleParking)."""
    d, pki, up = env
    extra = "  - name: plain\n    address: 127.0.0.1:0\n    upstream: app\n    policy: inbound\n"
    p = Proxy(http_config(pki, up.address, extra_listener=extra), d)
    for listener in ("plain", "inbound"):
        for attempt in range(3):
            raw = socket.create_connection(("127.0.0.1", p.port(listener)), timeout=10)
            if listener == "inbound":
                s = client_tls_context(pki, "alice").wrap_socket(raw, server_hostname="localhost")
                s.sendall(b"GET /half HTTP/1.1\r\nHost: x\r\n\r\n")
                # The FIN right behind the record (no close_notify): shut down through a second
                # descriptor of the socket, as SSLSocket.shutdown would drop the TLS state.
                with socket.socket(fileno=os.dup(s.fileno())) as same:
                    same.shutdown(socket.SHUT_WR)
            else:
                s = raw
                s.sendall(b"GET /half HTTP/1.1\r\nHost: x\r\n\r\n")
                s.shutdown(socket.SHUT_WR)
            started = time.time()
            head, _, rest = read_response(s)
            assert head is not None, f"{listener}: no answer"
            status = int(head.split(b" ")[1])
            assert status in (200, 403), head  # the plain listener has no certificate to allow
            s.settimeout(5)
            try:
                tail = rest + s.recv(100)
            except (ssl.SSLError, ConnectionResetError):
                tail = b""
            assert tail == b"", f"{listener}: bytes after the answer: {tail[:80]!r}"
            # Not a speed bound: the alternative is the 60 s idle timeout (the sweep takes 1-2 s).
            assert time.time() - started < 4, f"{listener}: the proxy kept the connection open"
            s.close()
    assert p.stop() == 0


def test_a_tls_client_that_sends_close_notify_with_its_request_gets_the_answer_and_the_close(env):
    """The request and the client's close_notify in one segment, and no FIN (the client waits for
    the answer). OpenSSL reads both records at once; the close_notify it then holds must end
    the connection after the answer, not leave it parked until the idle timeout."""
    d, pki, up = env
    p = Proxy(http_config(pki, up.address), d)
    for attempt in range(3):
        c = BioTls(p.port("inbound"), pki, "alice")
        c.sock.sendall(c.records(b"GET /bye HTTP/1.1\r\nHost: x\r\n\r\n", close_notify=True))
        started = time.time()
        out, ended = c.read_all()
        assert out.startswith(b"HTTP/1.1 200 ") and b'"path": "/bye"' in out, out
        assert ended == "close_notify", "the proxy closed without its own close_notify"
        # Not a speed bound: the alternative is the 60 s idle timeout.
        assert time.time() - started < 4, "the proxy kept the connection open"
        c.sock.close()
    assert [r["path"] for r in up.requests] == ["/bye"] * 3
    assert p.stop() == 0


def test_a_tls_client_fin_without_close_notify_ends_its_stream_like_a_close_notify(env):
    """A FIN with no close_notify before it (a client that only shuts its socket down): over a TCP
    relay it reaches the upstream as a half-close, and the upstream's answer still reaches the
    client, as for a plain TCP client; on an HTTP listener the request is answered. Neither gets
    a decode_error alert in place of the rest (OpenSSL 3's default)."""
    d, pki, up = env
    srv, t = line_echo_server()
    relay = Proxy(tcp_config(pki, srv.getsockname()[1]), d)
    c = BioTls(relay.port("inbound"), pki, "alice")
    c.sock.sendall(c.records(b"half\n"))
    c.sock.shutdown(socket.SHUT_WR)
    out, ended = c.read_all()
    assert out == b"HALF\nBYE\n", out
    assert ended == "close_notify", ended
    t.join(10)
    relay.stop()
    log = [l for l in relay.access_log() if l["listener.name"] == "inbound"]
    assert log[-1]["event.outcome"] == "allow" and log[-1]["bytes.in"] == 5 and log[-1]["bytes.out"] == 9, log[-1]

    p = Proxy(http_config(pki, up.address), d)
    c = BioTls(p.port("inbound"), pki, "alice")
    c.sock.sendall(c.records(b"GET /fin HTTP/1.1\r\nHost: x\r\n\r\n"))
    c.sock.shutdown(socket.SHUT_WR)
    out, ended = c.read_all()
    assert out.startswith(b"HTTP/1.1 200 ") and b'"path": "/fin"' in out, out
    assert ended == "close_notify", ended
    assert p.stop() == 0
