"""Portcullis in front of the kube-apiserver (issue 8), driven by the real kubectl (v1.32).

The upstream is kube_standin.StandInApiserver: a STAND-IN written for these tests, because no
kube-apiserver package exists on this machine. It serves discovery, a pod list, a watch that
emits events over time, TokenReview, and exec over WebSocket and SPDY, and records what it
receives. kubectl's stdin is always closed (it would prompt for a username otherwise).

Asserted: allowed gets succeed; denied requests print kubectl's Forbidden error with our
message (user, verb, resource, namespace, rule); watch events arrive while the stream is still
open; exec needs `create pods/exec` and then echoes over both upgrade protocols; bearer tokens
are checked with TokenReview (a bad one is refused); the apiserver receives Impersonate-* for the
verified client, never the client's own Authorization or forged identity headers."""
import json
import os
import subprocess
import time

import pytest

from harness import BIN, Pki, Proxy, curl, tmpdir
from kube_standin import FAILING_TOKEN, StandInApiserver

GOOD_TOKEN = "good-token-for-carol"
BAD_TOKEN = "not-a-token-the-apiserver-knows"


def proxy_config(pki, api, proxy_cert, proxy_key, forward_identity="impersonate"):
    return f"""
admin:
  address: 127.0.0.1:0
log:
  access_log: stdout
workers: 2
tls:
  front: {{ cert: {pki.server_cert}, key: {pki.server_key}, ca: {pki.ca.ca_path} }}
  apiserver-client: {{ cert: {proxy_cert}, key: {proxy_key}, ca: {pki.ca.ca_path} }}
upstreams:
  apiserver: {{ address: {api.address}, tls: apiserver-client, server_name: localhost }}
listeners:
  - name: kube
    address: 127.0.0.1:0
    tls: front
    client_certs: optional
    protocol: kubernetes
    upstream: apiserver
    policy: kube
    authenticate: [client_cert, token_review]
    forward_identity: {forward_identity}
policies:
  kube:
    rules:
      - name: discovery
        kubernetes:
          non_resource_urls: ["/api", "/api/**", "/apis", "/apis/**", "/version"]
      - name: dev-reads-prod
        from: {{ groups: [dev] }}
        kubernetes: {{ verbs: [get, list, watch], resources: [pods, pods/log], namespaces: [prod] }}
      - name: get-only-exec
        from: {{ groups: [getexec] }}
        kubernetes: {{ verbs: [get], resources: [pods, pods/exec], namespaces: [prod] }}
      - name: ops-execs-in-prod
        from: {{ groups: [ops] }}
        kubernetes: {{ verbs: [get, list, create], resources: [pods, pods/exec], namespaces: [prod] }}
      - name: patches-configmaps
        from: {{ groups: [patcher] }}
        kubernetes: {{ verbs: [get, patch], resources: [configmaps], namespaces: [prod] }}
      - name: applies-configmaps
        from: {{ groups: [applier] }}
        kubernetes: {{ verbs: [get, patch, create], resources: [configmaps], namespaces: [prod] }}
      - name: creates-one-widget
        from: {{ groups: [widgeteer] }}
        kubernetes: {{ verbs: [get, create], resources: [widgets.example.com], namespaces: [prod], names: [mine] }}
"""


@pytest.fixture(scope="module")
def env():
    d = tmpdir()
    pki = Pki(d)
    api_cert, api_key = pki.ca.issue("apiserver", dns=["localhost"], ips=["127.0.0.1"], server=True, client=False)
    proxy_cert, proxy_key = pki.ca.issue("portcullis-proxy", cn="portcullis-proxy")
    api = StandInApiserver(api_cert, api_key, pki.ca.ca_path, tokens={GOOD_TOKEN: ("carol", ["dev"])})
    proxy = Proxy(proxy_config(pki, api, proxy_cert, proxy_key), d)
    yield {"dir": d, "pki": pki, "api": api, "proxy": proxy}
    proxy.stop()
    api.close()


def kubeconfig(env, name, client=None, token=None, orgs=()):
    pki, port = env["pki"], env["proxy"].port("kube")
    user = {}
    if client:
        crt, key = pki.client(client, orgs=orgs)
        user = {"client-certificate": crt, "client-key": key}
    if token:
        user = {"token": token}
    cfg = {"apiVersion": "v1", "kind": "Config", "current-context": "c",
           "clusters": [{"name": "c", "cluster": {"server": f"https://127.0.0.1:{port}",
                                                  "certificate-authority": pki.ca.ca_path}}],
           "users": [{"name": "u", "user": user}],
           "contexts": [{"name": "c", "context": {"cluster": "c", "user": "u"}}]}
    path = os.path.join(env["dir"], f"kubeconfig-{name}")
    with open(path, "w") as f:
        json.dump(cfg, f)
    return path


def kubectl(env, config, *args, extra_env=None, timeout=60):
    e = dict(os.environ, HOME=env["dir"], KUBECONFIG=config)
    e.update(extra_env or {})
    p = subprocess.run(["kubectl", "--request-timeout=20s", "--cache-dir", os.path.join(env["dir"], "cache"), *args],
                       stdin=subprocess.DEVNULL, capture_output=True, env=e, timeout=timeout)
    return p.returncode, p.stdout.decode(errors="replace"), p.stderr.decode(errors="replace")


def log_lines(env, keep):
    """Access-log lines for which keep(line) holds; waits (up to 20 s) until there is one, since
    the proxy writes a line when the request ends, which may be after the client has gone."""
    deadline = time.time() + 20
    while True:
        lines = [l for l in env["proxy"].access_log() if keep(l)]
        if lines or time.time() > deadline:
            return lines
        time.sleep(0.1)


def headers_of(request, name):
    return [v for k, v in request["headers"] if k == name]


def test_get_pods_allowed_and_impersonated(env):
    api = env["api"]
    cfg = kubeconfig(env, "alice", client="alice", orgs=["dev"])
    rc, out, err = kubectl(env, cfg, "get", "pods", "-n", "prod")
    assert rc == 0, err
    assert "web-0" in out and "web-1" in out, out
    lists = api.seen("GET", "/api/v1/namespaces/prod/pods")
    assert lists, "the stand-in never saw the pod list"
    r = lists[-1]
    # The proxy connects with its own certificate and names the client in Impersonate-*.
    assert r["client_cn"] == "portcullis-proxy"
    assert headers_of(r, "impersonate-user") == ["alice"]
    assert headers_of(r, "impersonate-group") == ["dev"]
    assert not headers_of(r, "authorization")
    log = log_lines(env, lambda l: l.get("url.path") == "/api/v1/namespaces/prod/pods")
    assert log and log[-1]["kubernetes.verb"] == "list" and log[-1]["kubernetes.resource"] == "pods"
    assert log[-1]["kubernetes.namespace"] == "prod" and log[-1]["rule.name"] == "dev-reads-prod"


def test_get_secrets_forbidden_with_our_message(env):
    api = env["api"]
    cfg = kubeconfig(env, "alice", client="alice", orgs=["dev"])
    rc, out, err = kubectl(env, cfg, "get", "secrets", "-n", "prod")
    assert rc != 0
    assert "Error from server (Forbidden):" in err, err
    assert 'user "alice"' in err and "list secrets" in err and 'namespace "prod"' in err, err
    assert 'policy "kube"' in err and 'closest rule "dev-reads-prod"' in err, err
    assert not api.seen(path_prefix="/api/v1/namespaces/prod/secrets")


def test_delete_pod_forbidden(env):
    api = env["api"]
    cfg = kubeconfig(env, "alice", client="alice", orgs=["dev"])
    rc, out, err = kubectl(env, cfg, "delete", "pod", "x", "-n", "prod")
    assert rc != 0
    assert "Error from server (Forbidden):" in err and 'cannot delete pods "x" in namespace "prod"' in err, err
    assert not api.seen("DELETE")


def stream_until(env, cfg, args, wanted, release, finished):
    """Runs a streaming kubectl command; returns the stdout lines read up to the one containing
    `wanted`, asserting that the stand-in had not finished its stream by then."""
    e = dict(os.environ, HOME=env["dir"], KUBECONFIG=cfg)
    p = subprocess.Popen(["kubectl", "--cache-dir", os.path.join(env["dir"], "cache"), *args],
                         stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=e)
    seen = []
    try:
        deadline = time.time() + 30
        while time.time() < deadline:
            line = p.stdout.readline().decode()
            if not line:
                break
            seen.append(line)
            if wanted in line:
                break
        if not any(wanted in l for l in seen):
            p.kill()
            raise AssertionError(f"no line with {wanted!r} in {seen}; kubectl stderr: {p.stderr.read().decode()}")
        # Delivered while the stand-in still holds the stream open (it waits for `release`).
        assert not finished.is_set()
    finally:
        release.set()
        p.kill()
        p.wait()
    return seen


def test_watch_events_arrive_while_the_stream_is_open(env):
    api = env["api"]
    cfg = kubeconfig(env, "alice", client="alice", orgs=["dev"])
    stream_until(env, cfg, ["get", "pods", "-n", "prod", "--watch"], "watch-second", api.watch_release,
                 api.watch_finished)


def test_logs_follow_streams(env):
    api = env["api"]
    cfg = kubeconfig(env, "alice", client="alice", orgs=["dev"])
    seen = stream_until(env, cfg, ["logs", "-f", "web-0", "-n", "prod"], "log line one", api.logs_release,
                        api.logs_finished)
    assert seen == ["log line one\n"]
    # Written when the stream ends (kubectl was killed).
    log = log_lines(env, lambda l: l.get("url.path") == "/api/v1/namespaces/prod/pods/web-0/log")
    assert log and log[-1]["kubernetes.resource"] == "pods/log"


@pytest.mark.parametrize("websockets", ["true", "false"])
def test_exec_needs_create_pods_exec(env, websockets):
    api = env["api"]
    mode = {"KUBECTL_REMOTE_COMMAND_WEBSOCKETS": websockets}
    before = len(api.exec_protocols)
    dev = kubeconfig(env, "alice", client="alice", orgs=["dev"])
    rc, out, err = kubectl(env, dev, "exec", "web-0", "-n", "prod", "--", "echo", "hello", extra_env=mode)
    assert rc != 0
    assert "Forbidden" in err and "pods/exec" in err, err
    assert len(api.exec_protocols) == before, "a denied exec reached the apiserver"

    ops = kubeconfig(env, "olga", client="olga", orgs=["ops"])
    rc, out, err = kubectl(env, ops, "exec", "web-0", "-n", "prod", "--", "echo", "hello", "from", "olga",
                           extra_env=mode)
    assert rc == 0, err
    assert out == "echo hello from olga\n"
    assert api.exec_protocols[before:] == ["websocket" if websockets == "true" else "spdy"]
    upgrade = api.seen(path_prefix="/api/v1/namespaces/prod/pods/web-0/exec")[-1]
    assert headers_of(upgrade, "impersonate-user") == ["olga"]


def test_websocket_exec_with_get_but_not_create_is_denied(env):
    """The WebSocket upgrade is a GET, but like the apiserver since 1.35 we also want `create`."""
    api = env["api"]
    before = len(api.exec_protocols)
    cfg = kubeconfig(env, "gina", client="gina", orgs=["getexec"])
    rc, out, err = kubectl(env, cfg, "exec", "web-0", "-n", "prod", "--", "echo", "hi")
    assert rc != 0
    assert "Forbidden" in err and "pods/exec" in err, err
    assert len(api.exec_protocols) == before
    get_exec = log_lines(env, lambda l: l.get("url.path", "").endswith("/web-0/exec") and
                         l.get("http.request.method") == "GET" and l.get("client.identity.user") == "gina")
    assert get_exec and get_exec[-1]["event.outcome"] == "deny" and get_exec[-1]["kubernetes.verb"] == "get"


def test_bearer_token_through_token_review(env):
    api = env["api"]
    cfg = kubeconfig(env, "carol-token", token=GOOD_TOKEN)
    rc, out, err = kubectl(env, cfg, "get", "pods", "-n", "prod")
    assert rc == 0, err
    assert "web-0" in out
    reviews = api.seen("POST", "/apis/authentication.k8s.io/v1/tokenreviews")
    assert reviews and json.loads(reviews[0]["body"])["spec"]["token"] == GOOD_TOKEN
    assert reviews[0]["client_cn"] == "portcullis-proxy"
    r = api.seen("GET", "/api/v1/namespaces/prod/pods")[-1]
    assert headers_of(r, "impersonate-user") == ["carol"] and headers_of(r, "impersonate-group") == ["dev"]
    assert not headers_of(r, "authorization"), "the client's token went upstream"
    # Cached per worker (2 here): more runs, each several requests, send no more than one
    # TokenReview per worker.
    for _ in range(3):
        rc, out, err = kubectl(env, cfg, "get", "pods", "-n", "prod")
        assert rc == 0, err
    assert len(api.seen("POST", "/apis/authentication.k8s.io/v1/tokenreviews")) <= 2


@pytest.mark.parametrize("token,expected", [
    # The apiserver says no: 401, kubectl asks the user to log in, with our reason.
    (BAD_TOKEN, ["error: You must be logged in to the server (portcullis:", "did not authenticate"]),
    # The apiserver cannot say (TokenReview answered 500): 503, never an allow.
    (FAILING_TOKEN, ["ServiceUnavailable", "bearer token not checked", "500"]),
])
def test_unverified_bearer_token_refused(env, token, expected):
    api = env["api"]
    before = len(api.seen("GET", "/api/v1/namespaces/prod/pods"))
    cfg = kubeconfig(env, "token-" + token, token=token)
    rc, out, err = kubectl(env, cfg, "get", "pods", "-n", "prod")
    assert rc != 0
    assert all(e in err for e in expected), err
    assert len(api.seen("GET", "/api/v1/namespaces/prod/pods")) == before


def test_alpn_offers_only_http11(env):
    port = env["proxy"].port("kube")
    p = subprocess.run(["openssl", "s_client", "-connect", f"127.0.0.1:{port}", "-alpn", "h2,http/1.1",
                        "-CAfile", env["pki"].ca.ca_path], stdin=subprocess.DEVNULL, capture_output=True, timeout=30)
    out = p.stdout.decode(errors="replace")
    assert "ALPN protocol: http/1.1" in out, out


def test_forged_identity_headers_never_reach_the_apiserver(env):
    pki, port, api = env["pki"], env["proxy"].port("kube"), env["api"]
    crt, key = pki.client("alice", orgs=["dev"])
    url = f"https://127.0.0.1:{port}/api/v1/namespaces/prod/pods"
    base = ["--cacert", pki.ca.ca_path, "--cert", crt, "--key", key]
    # Impersonate-* from a client is refused before any rule.
    rc, body, err = curl(*base, "-H", "Impersonate-User: system:admin", "-w", "%{http_code}", url)
    assert body.endswith(b"403"), body
    assert b'"reason":"Forbidden"' in body and b"impersonate-user header refused" in body, body
    # X-Remote-* and Authorization are dropped, and our Impersonate-* sent instead.
    before = len(api.seen("GET", "/api/v1/namespaces/prod/pods"))
    rc, body, err = curl(*base, "-H", "X-Remote-User: system:admin", "-H", "X-Remote-Group: system:masters",
                         "-H", "Authorization: Bearer forged", url)
    assert rc == 0 and b"PodList" in body, (body, err)
    r = api.seen("GET", "/api/v1/namespaces/prod/pods")[before]
    names = [k for k, _ in r["headers"]]
    assert "x-remote-user" not in names and "x-remote-group" not in names and "authorization" not in names
    assert headers_of(r, "impersonate-user") == ["alice"]


def test_remote_user_mode_sends_x_remote_headers(env):
    pki, api = env["pki"], env["api"]
    d = tmpdir()
    proxy_cert, proxy_key = pki.client("portcullis-proxy")
    proxy = Proxy(proxy_config(pki, api, proxy_cert, proxy_key, forward_identity="remote_user"), d)
    try:
        crt, key = pki.client("alice", orgs=["dev"])
        before = len(api.seen("GET", "/api/v1/namespaces/prod/pods"))
        rc, body, err = curl("--cacert", pki.ca.ca_path, "--cert", crt, "--key", key,
                             "-H", "X-Remote-User: system:admin", "-H", "Authorization: Bearer forged",
                             # every client X-Remote-* (the apiserver may read X-Remote-Uid), any spelling
                             "-H", "X-Remote-Uid: 0", "-H", "X_Remote_User: system:admin", "-H", "X-Remote-Extra-Scopes: all",
                             f"https://127.0.0.1:{proxy.port('kube')}/api/v1/namespaces/prod/pods")
        assert rc == 0 and b"PodList" in body, (body, err)
        r = api.seen("GET", "/api/v1/namespaces/prod/pods")[before]
        assert headers_of(r, "x-remote-user") == ["alice"] and headers_of(r, "x-remote-group") == ["dev"]
        assert not headers_of(r, "impersonate-user") and not headers_of(r, "authorization")
        names = [k for k, _ in r["headers"]]
        assert [n for n in names if n.replace("_", "-").startswith("x-remote-")] == ["x-remote-user", "x-remote-group"], names
    finally:
        proxy.stop()


def test_certificate_that_cannot_be_impersonated_is_refused(env):
    from cryptography import x509
    from cryptography.x509.oid import NameOID
    pki, port, api = env["pki"], env["proxy"].port("kube"), env["api"]
    before = len(api.requests)
    url = f"https://127.0.0.1:{port}/api/v1/namespaces/prod/pods"
    # No CN: no user to name in Impersonate-User (the proxy must not forward as itself).
    crt, key = pki.ca.issue("no-cn", spiffe="spiffe://cluster.local/ns/x/sa/no-cn",
                            subject=[x509.NameAttribute(NameOID.ORGANIZATION_NAME, "dev")])
    rc, body, err = curl("--cacert", pki.ca.ca_path, "--cert", crt, "--key", key, "-w", "%{http_code}", url)
    assert body.endswith(b"403") and b"names no user" in body, body
    # A CN with CR LF would write a header line of its own choosing (the certificate layer already
    # reads no user from it; the gateway would refuse it too).
    crt, key = pki.ca.issue("crlf", subject=[x509.NameAttribute(NameOID.COMMON_NAME, "eve\r\nimpersonate-user: x"),
                                             x509.NameAttribute(NameOID.ORGANIZATION_NAME, "dev")])
    rc, body, err = curl("--cacert", pki.ca.ca_path, "--cert", crt, "--key", key, "-w", "%{http_code}", url)
    assert body.endswith(b"403") and (b"names no user" in body or b"control characters" in body), body
    assert len(api.requests) == before


# Red-team findings (session 13).

def test_names_with_spaces_at_either_end_are_never_impersonated(env):
    """The apiserver's Go parser drops the spaces around a header value: O=" system:masters" would
    be impersonated as system:masters (no RBAC at all). The proxy refuses such a certificate, and
    such a TokenReview answer, instead of forwarding what the apiserver would read differently."""
    from cryptography import x509
    from cryptography.x509.oid import NameOID
    pki, port, api = env["pki"], env["proxy"].port("kube"), env["api"]
    before = len(api.requests)
    url = f"https://127.0.0.1:{port}/api/v1/namespaces/prod/pods"
    for name, subject, words in (
            ("spaced-o", [x509.NameAttribute(NameOID.ORGANIZATION_NAME, " system:masters"),
                          x509.NameAttribute(NameOID.ORGANIZATION_NAME, "dev"),
                          x509.NameAttribute(NameOID.COMMON_NAME, "mallory")], b'O \\" system:masters\\" begins or ends'),
            ("spaced-cn", [x509.NameAttribute(NameOID.ORGANIZATION_NAME, "dev"),
                           x509.NameAttribute(NameOID.COMMON_NAME, "system:admin ")], b"begins or ends with a space"),
            # The last CN decides, as in Go; an unusable last CN is not replaced by an earlier one.
            ("cn-fallback", [x509.NameAttribute(NameOID.COMMON_NAME, "system:admin"),
                             x509.NameAttribute(NameOID.COMMON_NAME, "dave\n"),
                             x509.NameAttribute(NameOID.ORGANIZATION_NAME, "dev")], b"control characters")):
        pki.clients[name] = crt, key = pki.ca.issue(name, subject=subject)
        rc, body, err = curl("--cacert", pki.ca.ca_path, "--cert", crt, "--key", key, "-w", "%{http_code}", url)
        assert body.endswith(b"403") and b"cannot be impersonated as it is" in body and words in body, (name, body)
    # The same through kubectl, which prints our Status.
    cfg = kubeconfig(env, "spaced", client="spaced-o")
    rc, out, err = kubectl(env, cfg, "get", "pods", "-n", "prod")
    assert rc != 0 and "cannot be impersonated as it is" in err, err
    assert len(api.requests) == before
    # A TokenReview naming a group with a leading space.
    api.tokens["spaced-token"] = ("carol", [" system:masters", "dev"])
    rc, body, err = curl("--cacert", pki.ca.ca_path, "-H", "Authorization: Bearer spaced-token", "-w", "%{http_code}", url)
    assert body.endswith(b"403") and b"begins or ends with a space" in body, body
    assert not [r for r in api.requests[before:] if r["path"].startswith("/api/v1/namespaces/prod/pods")]


def test_a_kubernetes_listener_must_name_the_client(env, tmp_path):
    """forward_identity xfcc or none would have the apiserver act as the proxy for everyone."""
    pki, api = env["pki"], env["api"]
    for mode in ("none", "xfcc"):
        path = tmp_path / f"{mode}.yaml"
        path.write_text(proxy_config(pki, api, pki.server_cert, pki.server_key, forward_identity=mode))
        p = subprocess.run([BIN, "check", "-c", str(path)], capture_output=True, text=True, timeout=60)
        assert p.returncode != 0 and "must name the client to the apiserver" in p.stderr + p.stdout, p.stderr


def test_anonymous_request_is_denied(env):
    pki, port, api = env["pki"], env["proxy"].port("kube"), env["api"]
    # No certificate, no token: only rules for everyone apply; none here, so a 403 Status.
    rc, body, err = curl("--cacert", pki.ca.ca_path, f"https://127.0.0.1:{port}/api/v1/namespaces/prod/pods")
    assert b'"reason":"Forbidden"' in body and b"anonymous user" in body, body


def test_example_apiserver_config_checks_and_plans():
    """configs/apiserver.yaml passes `portcullis check` (with certificates where its relative
    paths point), and its firewall admits 6443 only from the node CIDR and 8443 only from clients."""
    import shutil
    from harness import BIN
    d = tmpdir()
    os.makedirs(os.path.join(d, "configs"))
    pki_dir = os.path.join(d, "pki")
    os.makedirs(pki_dir)
    pki = Pki(pki_dir)
    shutil.copy(os.path.join(os.path.dirname(__file__), "../../configs/apiserver.yaml"), os.path.join(d, "configs"))
    for src, dst in [(pki.server_cert, "apiserver-front.crt"), (pki.server_key, "apiserver-front.key"),
                     (pki.ca.ca_path, "ca.crt"), (pki.ca.ca_path, "cluster-ca.crt")]:
        shutil.copy(src, os.path.join(pki_dir, dst))
    pki.client("portcullis")  # writes pki/portcullis.crt and .key, the names the example uses
    cfg = os.path.join(d, "configs", "apiserver.yaml")
    r = subprocess.run([BIN, "check", "-c", cfg], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    plan = subprocess.run([BIN, "firewall", "plan", "-c", cfg], capture_output=True, text=True)
    assert plan.returncode == 0, plan.stderr
    lines = plan.stdout.splitlines()
    assert any("10.0.0.0/24" in l and "6443" in l for l in lines), plan.stdout
    assert not any("10.20.0.0/16" in l and "6443" in l for l in lines), plan.stdout
    assert any("10.20.0.0/16" in l and "8443" in l for l in lines), plan.stdout
    # Discovery of a group (/apis/apps/v1) is allowed for a verified client: `/apis/**`, not `/apis/*`.
    ex = subprocess.run([BIN, "explain", "-c", cfg, "--user", "someone", "GET", "/apis/apps/v1"],
                        capture_output=True, text=True)
    assert "allow" in ex.stdout and "discovery" in ex.stdout, ex.stdout + ex.stderr


def test_server_side_apply_needs_create(env):
    """A server-side apply creates the object when it does not exist: the apiserver then authorizes
    `create` itself (handlers/patch.go), which a rule granting only patch never allowed. Such a
    PATCH needs create too; other patch types (which never create) need patch alone."""
    pki, port, api = env["pki"], env["proxy"].port("kube"), env["api"]
    url = f"https://127.0.0.1:{port}/api/v1/namespaces/prod/configmaps/new-cm?fieldManager=kubectl"
    body = json.dumps({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "new-cm"}, "data": {"a": "b"}})
    before = len(api.seen("PATCH"))

    def patch(client, orgs, content_type):
        crt, key = pki.client(client, orgs=orgs)
        rc, out, err = curl("--cacert", pki.ca.ca_path, "--cert", crt, "--key", key, "-X", "PATCH",
                            "-H", f"Content-Type: {content_type}", "--data-binary", body, "-w", "%{http_code}", url)
        return out

    for content_type in ("application/apply-patch+yaml", "application/apply-patch+yaml; charset=utf-8"):
        out = patch("pat", ["patcher"], content_type)
        assert out.endswith(b"403") and b'"reason":"Forbidden"' in out, out
        assert b"a server-side apply creates a missing object" in out, out
    assert len(api.seen("PATCH")) == before, "an apply without create reached the apiserver"
    out = patch("pat", ["patcher"], "application/merge-patch+json")
    assert out.endswith(b"200"), out
    out = patch("appl", ["applier"], "application/apply-patch+yaml")
    assert out.endswith(b"201"), out
    types = [headers_of(r, "content-type") for r in api.seen("PATCH")[before:]]
    assert types == [["application/merge-patch+json"], ["application/apply-patch+yaml"]], types
    log = log_lines(env, lambda l: l.get("url.path") == "/api/v1/namespaces/prod/configmaps/new-cm" and
                    l.get("event.outcome") == "deny")
    assert log and log[-1]["kubernetes.verb"] == "patch" and log[-1]["client.identity.user"] == "pat"


def test_cached_token_review_ends_when_the_token_expires(env):
    """An allowed TokenReview is reused for up to 5 minutes, but never past the token's own `exp`:
    the apiserver refuses an expired token at once, so the proxy must not keep naming its user."""
    import base64
    import socket
    import ssl
    from harness import read_response
    pki, port, api = env["pki"], env["proxy"].port("kube"), env["api"]

    def b64(obj):
        return base64.urlsafe_b64encode(json.dumps(obj).encode()).rstrip(b"=").decode()

    exp = int(time.time()) + 2
    token = f"{b64({'alg': 'RS256'})}.{b64({'sub': 'system:serviceaccount:prod:shortlived', 'exp': exp})}.sig"
    api.tokens[token] = ("carol", ["dev"])
    get = (f"GET /api/v1/namespaces/prod/pods HTTP/1.1\r\nHost: localhost\r\n"
           f"Authorization: Bearer {token}\r\n\r\n").encode()
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.load_verify_locations(pki.ca.ca_path)
    # One kept-alive connection: both requests reach the same worker, hence the same cache.
    with ctx.wrap_socket(socket.create_connection(("127.0.0.1", port), timeout=10), server_hostname="localhost") as s:
        s.sendall(get)
        head, body, buf = read_response(s)
        assert head.startswith(b"HTTP/1.1 200"), head
        # The token expires; the apiserver now refuses it (the stand-in forgets it).
        del api.tokens[token]
        time.sleep(max(0.0, exp + 1 - time.time()))
        reviews = len(api.seen("POST", "/apis/authentication.k8s.io/v1/tokenreviews"))
        s.sendall(get)
        head, body, buf = read_response(s, buf)
    assert head is not None and head.startswith(b"HTTP/1.1 401"), (head, body)
    assert len(api.seen("POST", "/apis/authentication.k8s.io/v1/tokenreviews")) == reviews + 1


def test_a_create_names_its_object_in_the_body_not_the_url(env):
    """POST /apis/G/V/namespaces/NS/widgets/mine resolves (RequestInfo) to create widgets "mine", but
    a custom resource's handler serves it as a create of whatever name the body gives (handlers/
    create.go ignores the URL's name): a `names` rule never admits a create, as documented."""
    pki, port, api = env["pki"], env["proxy"].port("kube"), env["api"]
    path = "/apis/example.com/v1/namespaces/prod/widgets/mine"
    body = json.dumps({"apiVersion": "example.com/v1", "kind": "Widget", "metadata": {"name": "someone-elses"}})
    crt, key = pki.client("wendy", orgs=["widgeteer"])
    base = ["--cacert", pki.ca.ca_path, "--cert", crt, "--key", key, "-w", "%{http_code}"]
    rc, out, err = curl(*base, "-X", "POST", "-H", "Content-Type: application/json", "--data-binary", body,
                        f"https://127.0.0.1:{port}{path}")
    assert out.endswith(b"403") and b'"reason":"Forbidden"' in out, out
    assert b"a create takes its name from the body" in out, out
    assert not api.seen("POST", path), "the create reached the apiserver"
    # The named object itself is still readable under the rule.
    rc, out, err = curl(*base, f"https://127.0.0.1:{port}{path}")
    assert api.seen("GET", path), out


@pytest.mark.parametrize("header,status", [
    # bearertoken.go: SplitN(value, " ", 3)[1] is the token; "Bearer  x" holds an empty one.
    (f"Bearer  {GOOD_TOKEN}", 401),
    (f"Bearer {GOOD_TOKEN} trailing words", 200),
    (f"bEaReR {GOOD_TOKEN}", 200),
])
def test_bearer_token_is_read_as_the_apiserver_reads_it(env, header, status):
    """The token the proxy reviews is the one the apiserver's bearer authenticator would have read
    from the same header, so the proxy never names a user the apiserver would not have."""
    pki, port = env["pki"], env["proxy"].port("kube")
    rc, out, err = curl("--cacert", pki.ca.ca_path, "-H", f"Authorization: {header}", "-w", "%{http_code}",
                        f"https://127.0.0.1:{port}/api/v1/namespaces/prod/pods")
    assert out.endswith(str(status).encode()), out
