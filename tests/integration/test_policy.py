"""The L7 allowlist through the running proxy (issue 3): real mTLS clients, a recording upstream.

An allowed identity gets 200 and another 403; traversal spellings are denied or refused and never
reach the upstream, which receives the normalised path; in a pipeline the denied request is
answered 403 without touching the upstream; every smuggling form is answered 400 and the
connection closed; `portcullis explain` says why."""
import json
import re
import subprocess

import pytest

from harness import BIN, Pki, Proxy, RecordingUpstream, curl, raw_exchange, tmpdir

FRONTEND = "spiffe://cluster.local/ns/shop/sa/frontend"
OTHER = "spiffe://cluster.local/ns/x/sa/y"


def config(pki, upstream, mode="enforce"):
    return f"""
admin:
  address: 127.0.0.1:0
log:
  level: info
  access_log: stdout
tls:
  workload:
    cert: {pki.server_cert}
    key: {pki.server_key}
    ca: {pki.ca.ca_path}
upstreams:
  app: {{ address: {upstream.address} }}
listeners:
  - name: inbound
    address: 127.0.0.1:0
    tls: workload
    protocol: http
    upstream: app
    policy: inbound
policies:
  inbound:
    mode: {mode}
    rules:
      - name: frontend-reads
        from:
          spiffe: ["{FRONTEND}"]
        http:
          methods: [GET, HEAD]
          paths: ["/public/**", "/api/items/*"]
"""


@pytest.fixture(scope="module")
def env():
    d = tmpdir()
    pki = Pki(d)
    pki.client("frontend", spiffe=FRONTEND)
    pki.client("other", spiffe=OTHER)
    upstream = RecordingUpstream()
    proxy = Proxy(config(pki, upstream), d)
    yield pki, upstream, proxy
    proxy.stop()
    upstream.close()


def https(pki, proxy, client, path, *extra):
    crt, key = pki.client(client)
    return curl("--cacert", pki.ca.ca_path, "--cert", crt, "--key", key, "-o", "-", "-w", "\n%{http_code}",
                *extra, f"https://localhost:{proxy.port('inbound')}{path}")


def status_and_body(out):
    body, _, code = out.rpartition(b"\n")
    return int(code), body


def raw(pki, proxy, data, client="frontend"):
    return raw_exchange(proxy.port("inbound"), data, pki=pki, client=client, timeout=5)


def statuses(response):
    # Responses follow each other directly (a body has no trailing CRLF): find every status line.
    return [int(code) for code in re.findall(rb"HTTP/1\.1 (\d{3}) ", response)]


def test_allowed_identity_gets_200_and_another_identity_403(env):
    pki, upstream, proxy = env
    rc, out, err = https(pki, proxy, "frontend", "/public/index.html")
    assert rc == 0, err
    code, body = status_and_body(out)
    assert code == 200
    assert json.loads(body)["path"] == "/public/index.html"

    before = len(upstream.paths())
    rc, out, err = https(pki, proxy, "other", "/public/index.html")
    assert rc == 0, err
    code, body = status_and_body(out)
    assert code == 403
    denial = json.loads(body)
    assert denial["error"] == "denied"
    assert denial["reason"] == f"no rule allows GET /public/index.html for {OTHER}"
    assert len(upstream.paths()) == before


def test_method_outside_the_rule_is_denied(env):
    pki, upstream, proxy = env
    rc, out, _ = https(pki, proxy, "frontend", "/public/x", "-X", "DELETE")
    assert rc == 0
    assert status_and_body(out)[0] == 403


@pytest.mark.parametrize("target,expected_status", [
    ("/public/../admin", 403),
    ("/public/%2e%2e/admin", 403),
    ("/public/.%2E/admin", 403),
    ("//admin", 403),
    ("/public/%2Fadmin", 400),
    ("/public/..%2Fadmin", 400),
    ("/public/%5C..%5Cadmin", 400),
    ("/public/..\\admin", 400),
    ("/public/../../admin", 400),
    ("/public/%252e%252e/admin", 400),
    ("/public/%C0%AE%C0%AE/admin", 400),
    ("/admin;/public/x", 400),
    ("/public/x%00", 400),
])
def test_traversal_never_reaches_the_upstream(env, target, expected_status):
    pki, upstream, proxy = env
    before = upstream.paths()
    response = raw(pki, proxy, f"GET {target} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n".encode())
    assert statuses(response) == [expected_status], response
    assert upstream.paths() == before


def test_upstream_receives_the_normalised_path(env):
    pki, upstream, proxy = env
    response = raw(pki, proxy, b"GET /public/a/./b//c/../%64?x=%2F HTTP/1.1\r\nHost: localhost\r\n"
                               b"Connection: close\r\n\r\n")
    assert statuses(response) == [200], response
    assert upstream.paths()[-1] == "/public/a/b/d?x=%2F"


def test_pipelined_second_request_denied(env):
    pki, upstream, proxy = env
    before = len(upstream.paths())
    response = raw(pki, proxy, b"GET /public/one HTTP/1.1\r\nHost: localhost\r\n\r\n"
                               b"GET /admin HTTP/1.1\r\nHost: localhost\r\n\r\n"
                               b"GET /api/items/7 HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
    assert statuses(response) == [200, 403, 200], response
    assert upstream.paths()[before:] == ["/public/one", "/api/items/7"]


SMUGGLING = {
    "content-length with transfer-encoding":
        b"POST /public/x HTTP/1.1\r\nHost: localhost\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"0\r\n\r\n",
    "duplicate content-length":
        b"POST /public/x HTTP/1.1\r\nHost: localhost\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\nA",
    "differing content-length":
        b"POST /public/x HTTP/1.1\r\nHost: localhost\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nAB",
    "content-length not digits":
        b"POST /public/x HTTP/1.1\r\nHost: localhost\r\nContent-Length: +1\r\n\r\nA",
    "transfer-encoding not exactly chunked":
        b"POST /public/x HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n",
    "obs-fold":
        b"GET /public/x HTTP/1.1\r\nHost: localhost\r\nX-A: 1\r\n 2\r\n\r\n",
    "whitespace before colon":
        b"GET /public/x HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding : chunked\r\n\r\n",
    "bare LF":
        b"GET /public/x HTTP/1.1\nHost: localhost\n\n",
    "NUL in a header":
        b"GET /public/x HTTP/1.1\r\nHost: localhost\r\nX-A: a\x00b\r\n\r\n",
    "missing Host":
        b"GET /public/x HTTP/1.1\r\n\r\n",
    "duplicate Host":
        b"GET /public/x HTTP/1.1\r\nHost: localhost\r\nHost: evil\r\n\r\n",
    "extra space in the request line":
        b"GET  /public/x HTTP/1.1\r\nHost: localhost\r\n\r\n",
    "absolute-form host differs from Host":
        b"GET http://evil.example/public/x HTTP/1.1\r\nHost: localhost\r\n\r\n",
    # An upstream that never reads a GET body (python3 -m http.server --protocol HTTP/1.1) takes
    # it for its next request, which no rule saw (third red-team round).
    "GET with a body":
        b"GET /public/x HTTP/1.1\r\nHost: localhost\r\nContent-Length: 24\r\n\r\n"
        b"GET /admin HTTP/1.1\r\nX: ",
    "HEAD with a chunked body":
        b"HEAD /public/x HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"5\r\nabcde\r\n0\r\n\r\n",
}


@pytest.mark.parametrize("name", sorted(SMUGGLING))
def test_smuggling_forms_get_400_and_the_connection_closed(env, name):
    pki, upstream, proxy = env
    before = upstream.paths()
    # A valid request follows on the same connection: after a 400 it must never be read.
    follow = b"GET /public/after HTTP/1.1\r\nHost: localhost\r\n\r\n"
    response = raw(pki, proxy, SMUGGLING[name] + follow)
    assert statuses(response) == [400], response
    assert upstream.paths() == before


def test_explain_names_the_rule_and_the_failed_conditions(env):
    pki, upstream, proxy = env
    p = subprocess.run([BIN, "explain", "-c", proxy.config_path, "--spiffe", FRONTEND, "GET", "/public/a/../b"],
                       capture_output=True, text=True, timeout=30)
    assert p.returncode == 0, p.stderr
    assert "request    GET /public/b" in p.stdout
    assert "decision   allow" in p.stdout
    assert "rule       frontend-reads" in p.stdout

    p = subprocess.run([BIN, "explain", "-c", proxy.config_path, "--spiffe", OTHER, "DELETE", "/admin"],
                       capture_output=True, text=True, timeout=30)
    assert p.returncode == 0, p.stderr
    assert "decision   deny" in p.stdout
    assert f"reason     no rule allows DELETE /admin for {OTHER}" in p.stdout
    assert f"    - peer {OTHER} not in from [spiffe {FRONTEND}]" in p.stdout
    assert "    - method DELETE not in [GET, HEAD]" in p.stdout
    assert "    - path /admin matches none of [/public/**, /api/items/*]" in p.stdout

    crt, _ = pki.client("frontend")
    p = subprocess.run([BIN, "explain", "-c", proxy.config_path, "--cert", crt, "GET", "/api/items/1"],
                       capture_output=True, text=True, timeout=30)
    assert p.returncode == 0, p.stderr
    assert "decision   allow" in p.stdout

    p = subprocess.run([BIN, "explain", "-c", proxy.config_path, "GET", "/public/%2Fx"],
                       capture_output=True, text=True, timeout=30)
    assert p.returncode == 0, p.stderr
    assert "refused before policy (400" in p.stdout
    assert "encoded slash %2F in path" in p.stdout

    p = subprocess.run([BIN, "explain", "-c", proxy.config_path, "--listener", "nope", "GET", "/"],
                       capture_output=True, text=True, timeout=30)
    assert p.returncode == 1
    assert "no listener named nope (listeners: inbound)" in p.stderr


def test_audit_mode_forwards_what_it_would_deny_and_logs_it():
    d = tmpdir()
    pki = Pki(d)
    pki.client("other", spiffe=OTHER)
    upstream = RecordingUpstream()
    proxy = Proxy(config(pki, upstream, mode="audit"), d)
    try:
        rc, out, err = https(pki, proxy, "other", "/admin")
        assert rc == 0, err
        assert status_and_body(out)[0] == 200
        assert upstream.paths() == ["/admin"]
        proxy.stop()
        outcomes = [e.get("event.outcome", e.get("event", {}).get("outcome")) for e in proxy.access_log()]
        assert "audit-deny" in outcomes
    finally:
        proxy.stop()
        upstream.close()
