"""`portcullis webhook` over real TLS, driven with curl as the apiserver would call it: an
AdmissionReview (admission.k8s.io/v1) in, `allowed` with a base64 JSONPatch out, which applied
to the pod gives exactly what `portcullis inject` writes for the same pod."""
import base64
import copy
import json
import os
import re
import shutil
import signal
import ssl
import subprocess
import time

import pytest
import yaml

from harness import BIN, Pki, curl, tmpdir

ROOT = os.path.join(os.path.dirname(__file__), "../..")
GOLDEN = os.path.join(ROOT, "tests/unit/inject/golden")


def apply_patch(doc, patch):
    """A small RFC 6902 applier (add, remove, replace), enough to check the webhook's patches."""
    doc = copy.deepcopy(doc)
    for op in patch:
        assert op["op"] in ("add", "remove", "replace"), op
        tokens = [t.replace("~1", "/").replace("~0", "~") for t in op["path"].split("/")[1:]]
        parent = doc
        for t in tokens[:-1]:
            parent = parent[int(t)] if isinstance(parent, list) else parent[t]
        last = tokens[-1]
        if isinstance(parent, list):
            i = len(parent) if last == "-" else int(last)
            if op["op"] == "add":
                parent.insert(i, op["value"])
            elif op["op"] == "remove":
                del parent[i]
            else:
                parent[i] = op["value"]
        else:
            if op["op"] == "remove":
                del parent[last]
            else:
                assert (last in parent) == (op["op"] == "replace"), op
                parent[last] = op["value"]
    return doc


class Webhook:
    def __init__(self, directory, file_text):
        self.path = os.path.join(directory, "webhook.yaml")
        with open(self.path, "w") as f:
            f.write(file_text)
        self.err = os.path.join(directory, "webhook.stderr")
        self.proc = subprocess.Popen([BIN, "webhook", "-c", self.path], stdout=subprocess.DEVNULL,
                                     stderr=open(self.err, "wb"))
        deadline = time.time() + 15
        while time.time() < deadline:
            m = re.search(r"listener 'webhook' ready on 127\.0\.0\.1:(\d+)", self.stderr())
            if m:
                self.port = int(m.group(1))
                return
            if self.proc.poll() is not None:
                raise AssertionError(f"webhook exited {self.proc.returncode}: {self.stderr()}")
            time.sleep(0.05)
        self.stop()
        raise AssertionError(f"webhook not ready: {self.stderr()}")

    def stderr(self):
        with open(self.err, "rb") as f:
            return f.read().decode(errors="replace")

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            self.proc.wait(20)
        return self.proc.returncode


@pytest.fixture(scope="module")
def hook():
    d = tmpdir()
    pki = Pki(d)
    w = Webhook(d, f"""address: 127.0.0.1:0
tls:
  cert: {pki.server_cert}
  key: {pki.server_key}
inject:
  image: registry.example/portcullis:9.9
  secret: shop-workload
""")
    w.pki = pki
    yield w
    assert w.stop() == 0
    shutil.rmtree(d)


def post(hook, body, path="/inject"):
    code, out, err = curl("--cacert", hook.pki.ca.ca_path, "-X", "POST", "-H", "Content-Type: application/json",
                          "--data-binary", body, "-w", "\n%{http_code}",
                          f"https://localhost:{hook.port}{path}")
    assert code == 0, err
    text = out.decode()
    body_text, status = text.rsplit("\n", 1)
    return int(status), body_text


def review(pod, uid="c0ffee-1", operation="CREATE"):
    return json.dumps({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
                       "request": {"uid": uid, "kind": {"group": "", "version": "v1", "kind": "Pod"},
                                   "resource": {"group": "", "version": "v1", "resource": "pods"},
                                   "operation": operation, "namespace": "shop", "object": pod}})


def inject_cli(pod_yaml, *args):
    p = subprocess.run([BIN, "inject", "-f", "-", *args], input=pod_yaml, capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stderr
    return yaml.safe_load(p.stdout)


def test_patch_applied_to_the_pod_equals_inject_output(hook):
    pod_yaml = open(os.path.join(GOLDEN, "pod.in.yaml")).read()
    pod = yaml.safe_load(pod_yaml)
    status, body = post(hook, review(pod))
    assert status == 200, body
    answer = json.loads(body)
    assert answer["apiVersion"] == "admission.k8s.io/v1" and answer["kind"] == "AdmissionReview"
    resp = answer["response"]
    assert resp["uid"] == "c0ffee-1"
    assert resp["allowed"] is True
    assert resp["patchType"] == "JSONPatch"
    patch = json.loads(base64.b64decode(resp["patch"]))
    patched = apply_patch(pod, patch)
    expected = inject_cli(pod_yaml, "--image", "registry.example/portcullis:9.9", "--secret", "shop-workload")
    assert patched == expected
    assert [c["name"] for c in patched["spec"]["initContainers"]][:2] == ["portcullis-init", "portcullis-proxy"]


def test_a_pod_without_init_containers_or_volumes(hook):
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"generateName": "web-", "namespace": "shop"},
           "spec": {"containers": [{"name": "web", "image": "web:1", "ports": [{"containerPort": 8080}]}]}}
    status, body = post(hook, review(pod, uid="u-2"))
    assert status == 200
    resp = json.loads(body)["response"]
    patched = apply_patch(pod, json.loads(base64.b64decode(resp["patch"])))
    assert patched == inject_cli(yaml.safe_dump(pod), "--image", "registry.example/portcullis:9.9",
                                 "--secret", "shop-workload")


def test_curl_expect_100_continue_is_answered(hook):
    """Clients that ask `Expect: 100-continue` (curl does for large bodies) are told to go on."""
    body = review(yaml.safe_load(open(os.path.join(GOLDEN, "pod.in.yaml"))), uid="big")
    code, out, err = curl("-v", "--cacert", hook.pki.ca.ca_path, "-H", "Content-Type: application/json",
                          "-H", "Expect: 100-continue",
                          "--data-binary", body, f"https://localhost:{hook.port}/inject")
    assert code == 0, err
    assert "> Expect: 100-continue" in err and "< HTTP/1.1 100 Continue" in err
    assert json.loads(out)["response"]["uid"] == "big"


def test_opted_out_and_already_injected_pods_get_no_patch(hook):
    pod = yaml.safe_load(open(os.path.join(GOLDEN, "pod.in.yaml")))
    pod["metadata"]["annotations"] = {"portcullis.io/inject": "false"}
    status, body = post(hook, review(pod, uid="opt-out"))
    assert status == 200
    resp = json.loads(body)["response"]
    assert resp == {"uid": "opt-out", "allowed": True}

    injected = inject_cli(open(os.path.join(GOLDEN, "pod.in.yaml")).read())
    status, body = post(hook, review(injected, uid="again"))
    assert json.loads(body)["response"] == {"uid": "again", "allowed": True}


def test_a_pod_that_cannot_be_injected_is_refused(hook):
    pod = {"kind": "Pod", "metadata": {"name": "x"}, "spec": {"containers": "web"}}
    status, body = post(hook, review(pod, uid="bad-pod"))
    assert status == 200
    resp = json.loads(body)["response"]
    assert resp["uid"] == "bad-pod" and resp["allowed"] is False
    assert resp["status"]["message"] == "portcullis: spec.containers must be a list"


def test_malformed_reviews_are_400_with_a_message(hook):
    status, body = post(hook, "this is not json")
    assert status == 400
    assert json.loads(body)["error"] == "bad AdmissionReview"
    assert json.loads(body)["reason"].startswith("the body is not JSON")
    status, body = post(hook, json.dumps({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
                                          "request": {"operation": "CREATE"}}))
    assert status == 400 and json.loads(body)["reason"] == "request.uid is missing"
    status, body = post(hook, "{}", path="/other")
    assert status == 404
    code, out, _ = curl("--cacert", hook.pki.ca.ca_path, f"https://localhost:{hook.port}/healthz")
    assert code == 0 and out == b"ok\n"
    # Plain HTTP on the TLS port gets no answer it could mistake for an admission decision.
    code, out, _ = curl(f"http://127.0.0.1:{hook.port}/inject", "-d", "{}")
    assert code != 0 or b"AdmissionReview" not in out
    assert hook.proc.poll() is None


def test_a_renewed_serving_certificate_is_picked_up():
    """cert-manager renews the Secret in place; the webhook serves the new certificate without a
    restart."""
    d = tmpdir()
    pki = Pki(d)
    cert, key = os.path.join(d, "tls.crt"), os.path.join(d, "tls.key")
    shutil.copy(pki.server_cert, cert)
    shutil.copy(pki.server_key, key)
    w = Webhook(d, f"address: 127.0.0.1:0\ntls: {{cert: {cert}, key: {key}}}\n")
    try:
        served = lambda: ssl.get_server_certificate(("127.0.0.1", w.port))  # noqa: E731
        assert served().strip() == open(pki.server_cert).read().strip()
        new_cert, new_key = pki.ca.issue("renewed", dns=["localhost"], server=True, client=False)
        for src, dst in ((new_key, key), (new_cert, cert)):
            shutil.copy(src, dst + ".tmp")
            os.rename(dst + ".tmp", dst)
        for _ in range(200):  # bounded: up to 20 s for inotify, the settle delay and the swap
            if "serving certificate reloaded" in w.stderr():
                break
            time.sleep(0.1)
        assert served().strip() == open(new_cert).read().strip(), w.stderr()
        w.pki = pki
        status, body = post(w, review({"kind": "Pod", "spec": {"containers": [{"name": "a", "image": "a"}]}}))
        assert status == 200 and json.loads(body)["response"]["allowed"] is True
    finally:
        assert w.stop() == 0
    shutil.rmtree(d)


def test_webhook_file_errors_are_file_line_col():
    d = tmpdir()
    path = os.path.join(d, "webhook.yaml")
    with open(path, "w") as f:
        f.write("address: 127.0.0.1:0\ntls:\n  cert: a.crt\n  key: a.key\n  ca: x\n")
    p = subprocess.run([BIN, "webhook", "-c", path], capture_output=True, text=True, timeout=30)
    assert p.returncode == 1
    assert p.stderr.strip() == f"{path}:5:3: unknown key 'ca' in tls"
    with open(path, "w") as f:
        f.write("address: nowhere\ntls: {cert: a.crt, key: a.key}\n")
    p = subprocess.run([BIN, "webhook", "-c", path], capture_output=True, text=True, timeout=30)
    assert p.returncode == 1 and p.stderr.strip() == f"{path}:1:10: address: 'nowhere' is not IP:PORT"
    with open(path, "w") as f:
        f.write("tls: {cert: missing.crt, key: missing.key}\n")
    p = subprocess.run([BIN, "webhook", "-c", path], capture_output=True, text=True, timeout=30)
    assert p.returncode == 1 and "missing" in p.stderr
    shutil.rmtree(d)


def test_the_shipped_webhook_file_runs():
    docs = list(yaml.safe_load_all(open(os.path.join(ROOT, "configs/kubernetes/webhook/webhook.yaml"))))
    text = [d for d in docs if d and d["kind"] == "ConfigMap"][0]["data"]["webhook.yaml"]
    d = tmpdir()
    pki = Pki(d)
    text = (text.replace("0.0.0.0:9443", "127.0.0.1:0")
            .replace("/etc/portcullis-webhook/tls/tls.crt", pki.server_cert)
            .replace("/etc/portcullis-webhook/tls/tls.key", pki.server_key))
    w = Webhook(d, text)
    try:
        w.pki = pki
        pod = {"kind": "Pod", "metadata": {"name": "p"}, "spec": {"containers": [{"name": "a", "image": "a"}]}}
        status, body = post(w, review(pod))
        assert status == 200 and json.loads(body)["response"]["patchType"] == "JSONPatch"
    finally:
        assert w.stop() == 0
    shutil.rmtree(d)
