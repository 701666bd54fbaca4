"""`portcullis inject` as a user runs it, and the Kubernetes manifests in configs/kubernetes/:
the golden outputs through the real CLI (file, stdin, -o), idempotence, FILE:LINE:COL errors,
the example's "after" file being current, every manifest parsing with the structure its
deployment needs, the embedded configs passing `portcullis check`, and the injected init
container's arguments being accepted by `portcullis firewall`."""
import glob
import json
import os
import ssl
import shutil
import signal
import subprocess

import yaml

from harness import BIN, Pki, Proxy, RecordingUpstream, curl, paths_rule, sidecar_config, tmpdir, wait_until

ROOT = os.path.join(os.path.dirname(__file__), "../..")
GOLDEN = os.path.join(ROOT, "tests/unit/inject/golden")
KUBE = os.path.join(ROOT, "configs/kubernetes")


def inject(*args, input=None):
    return subprocess.run([BIN, "inject", *args], capture_output=True, text=True, input=input, timeout=60)


def load_all(path):
    with open(path) as f:
        return [d for d in yaml.safe_load_all(f) if d is not None]


def by_kind(docs, kind, name=None):
    found = [d for d in docs if d["kind"] == kind and (name is None or d["metadata"]["name"] == name)]
    assert found, f"no {kind} {name or ''} in {[d['kind'] for d in docs]}"
    return found[0]


def test_golden_files_through_the_cli_file_stdin_and_output_file():
    d = tmpdir()
    for src in sorted(glob.glob(os.path.join(GOLDEN, "*.in.yaml"))):
        expected = open(src.replace(".in.yaml", ".out.yaml")).read()
        p = inject("-f", src)
        assert p.returncode == 0, p.stderr
        assert p.stdout == expected, src
        p = inject("-f", "-", input=open(src).read())
        assert p.returncode == 0 and p.stdout == expected, src
        out = os.path.join(d, "out.yaml")
        p = inject("-f", src, "-o", out)
        assert p.returncode == 0 and p.stdout == "" and open(out).read() == expected, src
        # Idempotent: injecting the result again changes nothing.
        again = inject("-f", "-", input=expected)
        assert again.returncode == 0 and again.stdout == expected, src
    shutil.rmtree(d)


def test_injected_pod_shape_as_kubectl_would_read_it():
    p = inject("-f", os.path.join(GOLDEN, "pod.in.yaml"), "--image", "registry.example/portcullis:1.0",
               "--config-map", "mesh", "--secret", "mesh-tls")
    assert p.returncode == 0, p.stderr
    pod = yaml.safe_load(p.stdout)
    inits = pod["spec"]["initContainers"]
    assert [c["name"] for c in inits] == ["portcullis-init", "portcullis-proxy", "migrate", "warm-cache"]
    fw, proxy = inits[0], inits[1]
    assert fw["securityContext"]["capabilities"] == {"add": ["NET_ADMIN", "NET_RAW"], "drop": ["ALL"]}
    assert "restartPolicy" not in fw
    assert proxy["restartPolicy"] == "Always"
    assert proxy["image"] == fw["image"] == "registry.example/portcullis:1.0"
    assert proxy["securityContext"]["runAsUser"] == 1337
    assert proxy["securityContext"]["runAsNonRoot"] is True
    assert proxy["securityContext"]["readOnlyRootFilesystem"] is True
    assert proxy["securityContext"]["capabilities"] == {"drop": ["ALL"]}
    assert proxy["startupProbe"]["httpGet"]["port"] == 15021
    assert {v["name"]: v for v in pod["spec"]["volumes"]}["portcullis-config"]["configMap"]["name"] == "mesh"
    assert {v["name"]: v for v in pod["spec"]["volumes"]}["portcullis-certs"]["secret"]["secretName"] == "mesh-tls"
    app = pod["spec"]["containers"][0]
    assert app["livenessProbe"]["httpGet"] == {"path": "/app-health/app/livez", "port": 15021, "scheme": "HTTP"}
    # Types survive: quoted strings in the input stay strings for the apiserver.
    assert {e["name"]: e["value"] for e in app["env"]} == {"CACHE_MODE": "on", "WORKERS": "4"}


def test_malformed_yaml_is_file_line_col_and_exit_1():
    d = tmpdir()
    bad = os.path.join(d, "bad.yaml")
    with open(bad, "w") as f:
        f.write("apiVersion: v1\nkind: Pod\nspec:\n  containers: [ {name: a\n")
    p = inject("-f", bad)
    assert p.returncode == 1
    assert p.stdout == ""
    assert p.stderr.strip() == f"{bad}:5:1: end of map flow not found"
    p = inject("-f", "-", input="kind: Deployment\nspec:\n  template:\n    spec:\n      containers: {}\n")
    assert p.returncode == 1
    assert p.stderr.strip() == "<stdin>:5:19: spec.template.spec.containers must be a list"
    p = inject("-f", os.path.join(d, "missing.yaml"))
    assert p.returncode == 1 and "cannot read" in p.stderr
    shutil.rmtree(d)


def test_example_after_file_is_current_inject_output():
    before = os.path.join(KUBE, "example/deployment.yaml")
    after = os.path.join(KUBE, "example/deployment.injected.yaml")
    p = inject("-f", before)
    assert p.returncode == 0, p.stderr
    assert p.stdout == open(after).read(), \
        "configs/kubernetes/example/deployment.injected.yaml is stale: portcullis inject -f deployment.yaml -o it"


def test_every_manifest_parses():
    files = sorted(glob.glob(os.path.join(KUBE, "**/*.yaml"), recursive=True))
    assert len(files) >= 7
    for path in files:
        for doc in load_all(path):
            assert doc.get("apiVersion") and doc.get("kind"), path
            assert doc.get("metadata", {}).get("name"), path


def test_webhook_manifest_fails_closed_and_skips_system_namespaces():
    docs = load_all(os.path.join(KUBE, "webhook/webhook.yaml"))
    mwc = by_kind(docs, "MutatingWebhookConfiguration")
    (hook,) = mwc["webhooks"]
    assert hook["failurePolicy"] == "Fail"
    assert hook["sideEffects"] == "None"
    assert hook["admissionReviewVersions"] == ["v1"]
    assert hook["rules"] == [{"operations": ["CREATE"], "apiGroups": [""], "apiVersions": ["v1"],
                              "resources": ["pods"], "scope": "Namespaced"}]
    (expr,) = hook["namespaceSelector"]["matchExpressions"]
    assert expr["key"] == "kubernetes.io/metadata.name" and expr["operator"] == "NotIn"
    own = hook["clientConfig"]["service"]["namespace"]
    assert {"kube-system", own} <= set(expr["values"])
    assert not any(ns in expr["values"] for ns in ("default", "shop"))
    service = by_kind(docs, "Service", hook["clientConfig"]["service"]["name"])
    assert service["metadata"]["namespace"] == own
    deploy = by_kind(docs, "Deployment", "portcullis-webhook")
    c = deploy["spec"]["template"]["spec"]["containers"][0]
    assert c["args"][:2] == ["webhook", "-c"]
    assert c["securityContext"]["capabilities"] == {"drop": ["ALL"]}
    assert c["securityContext"]["readOnlyRootFilesystem"] is True


def test_dockerd_gateway_daemonset_and_apiserver_front_static_pod():
    docs = load_all(os.path.join(KUBE, "dockerd-gateway/daemonset.yaml"))
    ds = by_kind(docs, "DaemonSet")
    spec = ds["spec"]["template"]["spec"]
    assert spec["hostNetwork"] is True
    sock = [v for v in spec["volumes"] if v.get("hostPath", {}).get("path") == "/var/run/docker.sock"]
    assert sock and sock[0]["hostPath"]["type"] == "Socket"
    c = spec["containers"][0]
    assert c["securityContext"]["capabilities"] == {"drop": ["ALL"], "add": ["NET_ADMIN"]}
    assert "/var/run/docker.sock" in [m["mountPath"] for m in c["volumeMounts"]]

    (pod,) = load_all(os.path.join(KUBE, "apiserver-front/portcullis-apiserver-front.yaml"))
    assert pod["kind"] == "Pod" and pod["metadata"]["namespace"] == "kube-system"
    assert pod["spec"]["hostNetwork"] is True
    assert pod["spec"]["containers"][0]["securityContext"]["capabilities"]["add"] == ["NET_ADMIN"]

    rbac = load_all(os.path.join(KUBE, "apiserver-front/rbac.yaml"))
    role = by_kind(rbac, "ClusterRole")
    grants = {(g, r, v) for rule in role["rules"] for g in rule["apiGroups"] for r in rule["resources"]
              for v in rule["verbs"]}
    assert ("", "users", "impersonate") in grants and ("", "groups", "impersonate") in grants
    assert ("authentication.k8s.io", "tokenreviews", "create") in grants
    assert not any(v in ("*", "get", "list", "update", "delete") for _, _, v in grants)
    binding = by_kind(rbac, "ClusterRoleBinding")
    assert binding["roleRef"]["name"] == role["metadata"]["name"]
    # Host-network pods are never injected: their firewall is the node's on purpose.
    for path in ("dockerd-gateway/daemonset.yaml", "apiserver-front/portcullis-apiserver-front.yaml"):
        src = open(os.path.join(KUBE, path)).read()
        p = inject("-f", "-", input=src)
        assert p.returncode == 0 and "portcullis-proxy" not in p.stdout, path


def checkable(config_text, pki_dir):
    """The config with the in-pod certificate paths pointing at a test PKI."""
    pki = Pki(pki_dir)
    shutil.copy(pki.server_cert, os.path.join(pki_dir, "tls.crt"))
    shutil.copy(pki.server_key, os.path.join(pki_dir, "tls.key"))
    shutil.copy(pki.ca.ca_path, os.path.join(pki_dir, "ca.crt"))
    path = os.path.join(pki_dir, "config.yaml")
    with open(path, "w") as f:
        f.write(config_text.replace("/etc/portcullis/certs/", pki_dir + "/"))
    return path


def test_embedded_configs_pass_check_and_init_container_args_are_accepted():
    d = tmpdir()
    cm = by_kind(load_all(os.path.join(KUBE, "example/config.yaml")), "ConfigMap")
    config = checkable(cm["data"]["config.yaml"], d)
    p = subprocess.run([BIN, "check", "-c", config], capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stdout + p.stderr

    # The firewall init container's arguments, as injected for the StatefulSet golden file
    # (inbound-ports annotation) and the DaemonSet (exclude-outbound-ports), with `plan` for
    # `apply`: the redirect covers exactly the annotated ports.
    for name, redirected, excluded in (("statefulset", "5432", None), ("daemonset", "2020", "9200")):
        out = open(os.path.join(GOLDEN, f"{name}.out.yaml")).read()
        init = yaml.safe_load(out)["spec"]["template"]["spec"]["initContainers"][0]
        assert init["args"][:2] == ["firewall", "apply"]
        args = ["firewall", "plan", "-c", config] + init["args"][4:]
        p = subprocess.run([BIN, *args], capture_output=True, text=True, timeout=60)
        assert p.returncode == 0, p.stderr
        inbound = p.stdout.split("set intercept_inbound_ports {", 1)[1].split("}", 1)[0]
        assert redirected in inbound and "8080" not in inbound
        if excluded:
            assert excluded in p.stdout.split("set intercept_outbound_exclude {", 1)[1].split("}", 1)[0]

    gw = by_kind(load_all(os.path.join(KUBE, "dockerd-gateway/daemonset.yaml")), "ConfigMap")
    gw_dir = os.path.join(d, "gw")
    os.mkdir(gw_dir)
    p = subprocess.run([BIN, "check", "-c", checkable(gw["data"]["config.yaml"], gw_dir)], capture_output=True,
                       text=True, timeout=60)
    # `check` may warn (e.g. about the docker socket's mode on this host), but must not fail, nor
    # find an action that could rename images next to the `images:` restriction.
    assert p.returncode == 0, p.stdout + p.stderr
    assert "images` restriction" not in p.stderr, p.stderr
    shutil.rmtree(d)


def test_sidecar_probes_listener_serves_the_rewritten_app_probes():
    """The probes an injected pod's kubelet sends: /healthz/ready for the sidecar and the app's own
    probes at /app-health/..., forwarded to the app as PORTCULLIS_APP_PROBES (from inject) says."""
    out = inject("-f", os.path.join(GOLDEN, "pod.in.yaml"))
    pod = yaml.safe_load(out.stdout)
    proxy_c = pod["spec"]["initContainers"][1]
    recorded = json.loads({e["name"]: e["value"] for e in proxy_c["env"]}["PORTCULLIS_APP_PROBES"])
    d = tmpdir()
    pki = Pki(d)
    app = RecordingUpstream()
    tls_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    tls_ctx.load_cert_chain(pki.server_cert, pki.server_key)
    tls_app = RecordingUpstream(tls_context=tls_ctx)
    for probe in recorded.values():
        probe["httpGet"]["port"] = app.port  # the app's 8080, here a kernel-chosen port
    recorded["/app-health/app/startupz"] = {"httpGet": {"path": "/tls-start", "port": tls_app.port, "scheme": "HTTPS"}}
    recorded["/app-health/gone/livez"] = {"httpGet": {"path": "/x", "port": 1}, "timeoutSeconds": 1}
    config = sidecar_config(app.address, pki.server_cert, pki.server_key, pki.ca.ca_path, paths_rule("r", '["/**"]'),
                            top="probes:\n  address: 127.0.0.1:0\n")
    os.environ["PORTCULLIS_APP_PROBES"] = json.dumps(recorded)
    try:
        proxy = Proxy(config, d)
    finally:
        del os.environ["PORTCULLIS_APP_PROBES"]
    try:
        # Announced before the listeners, so wait_ready has read it already.
        port = proxy.port("probes")

        def get(path):
            code, body, err = curl("-o", "/dev/null", "-w", "%{http_code}", f"http://127.0.0.1:{port}{path}")
            assert code == 0, err
            return int(body)

        assert get("/healthz/ready") == 200
        assert get(pod["spec"]["containers"][0]["livenessProbe"]["httpGet"]["path"]) == 200
        assert get("/app-health/app/readyz") == 200
        assert get("/app-health/app/startupz") == 200
        live, ready = [r for r in app.requests if r["path"] in ("/healthz", "/ready")]
        assert (live["path"], live["headers"].get("x-probe")) == ("/healthz", "liveness")
        assert ready["path"] == "/ready"
        assert [r["path"] for r in tls_app.requests] == ["/tls-start"]
        assert get("/app-health/gone/livez") == 503  # nothing listens: the probe fails
        assert get("/app-health/nobody/livez") == 404
        assert get("/api/v1/products") == 404  # the probes port is not a way around the policy
        assert app.paths().count("/api/v1/products") == 0
    finally:
        proxy.stop()
        app.close()
        tls_app.close()
    shutil.rmtree(d)


def test_sidecar_reports_not_ready_from_the_start_of_a_drain():
    """After SIGTERM the sidecar drains its connections; from that moment its own readiness probe
    answers 503 (so the kubelet stops sending it new traffic), while the app's liveness probe is
    still forwarded (failing it would get the app restarted)."""
    d = tmpdir()
    pki = Pki(d)
    app = RecordingUpstream()
    config = sidecar_config(app.address, pki.server_cert, pki.server_key, pki.ca.ca_path, paths_rule("r", '["/**"]'),
                            top="probes:\n  address: 127.0.0.1:0\n")
    os.environ["PORTCULLIS_APP_PROBES"] = json.dumps({"/app-health/app/livez": {"httpGet": {"path": "/healthz", "port": app.port}}})
    try:
        proxy = Proxy(config, d)
    finally:
        del os.environ["PORTCULLIS_APP_PROBES"]
    crt, key = pki.client("caller")
    # A response streamed over ~10 s keeps a connection busy, so the drain lasts.
    stream = subprocess.Popen(["curl", "-sS", "--max-time", "30", "--cacert", pki.ca.ca_path, "--cert", crt, "--key", key,
                               "https://127.0.0.1:%d/stream?n=40&delay=0.25" % proxy.port("inbound")],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        port = proxy.port("probes")

        def get(path):
            code, body, err = curl("-w", "\n%{http_code}", f"http://127.0.0.1:{port}{path}")
            assert code == 0, err
            text, _, status = body.decode().rpartition("\n")
            return int(status), text

        assert wait_until(lambda: any(p.startswith("/stream") for p in app.paths()), 10), "the streamed request did not reach the app"
        assert get("/healthz/ready") == (200, "ready\n")
        proxy.proc.send_signal(signal.SIGTERM)
        assert wait_until(lambda: get("/healthz/ready")[0] == 503, 5), "still ready after SIGTERM"
        assert proxy.proc.poll() is None, "the drain should still be waiting for the streamed response"
        assert get("/healthz/ready") == (503, "not ready: draining (SIGTERM received)\n")
        assert get("/app-health/app/livez")[0] == 200
    finally:
        stream.kill()
        stream.wait(10)
        proxy.stop()
        app.close()
    shutil.rmtree(d)


def test_a_bad_probes_environment_stops_the_sidecar():
    d = tmpdir()
    pki = Pki(d)
    config = sidecar_config("tcp://127.0.0.1:9", pki.server_cert, pki.server_key, pki.ca.ca_path,
                            paths_rule("r", '["/**"]'), top="probes:\n  address: 127.0.0.1:0\n")
    os.environ["PORTCULLIS_APP_PROBES"] = '{"/app-health/a/livez": {"httpGet": {"path": "/x", "port": "http"}}}'
    try:
        proxy = Proxy(config, d, expect_ready=False)
        assert proxy.proc.wait(30) == 2
    finally:
        del os.environ["PORTCULLIS_APP_PROBES"]
    assert "PORTCULLIS_APP_PROBES: /app-health/a/livez: httpGet.port must be a port number" in proxy.stderr()
    shutil.rmtree(d)
