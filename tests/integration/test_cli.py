"""The command line as a user meets it: the demo, check's diagnostics and exit codes, version."""
import os
import subprocess

from harness import BIN, Pki, tmpdir


def run(*args, timeout=120):
    return subprocess.run([BIN, *args], capture_output=True, text=True, timeout=timeout)


def test_demo_shows_allowed_and_denied_requests_and_exits_0():
    r = run("demo")
    assert r.returncode == 0, r.stdout + r.stderr
    out = r.stdout
    assert "frontend: GET /api/v1/products/42\n   -> 200" in out
    assert "frontend: DELETE /api/v1/products/42\n   -> 403" in out
    assert "intruder: GET /api/v1/products/42\n   -> 403" in out
    assert "no rule allows DELETE /api/v1/products/42 for spiffe://demo.local/ns/shop/sa/frontend" in out
    assert "-> 400" in out and "encoded slash" in out
    assert "(no client certificate): GET /api/v1/products\n   -> TLS handshake refused" in out
    assert '"event.outcome":"allow"' in out
    assert "All requests behaved as the policy says." in out


def test_version():
    r = run("version")
    assert r.returncode == 0 and r.stdout.startswith("portcullis ")


def test_check_reports_every_error_with_its_position_and_exits_1():
    d = tmpdir()
    path = os.path.join(d, "bad.yaml")
    with open(path, "w") as f:
        f.write("""upstreams:
  app: { address: tcp://127.0.0.1:8080 }
listeners:
  - name: inbound
    address: 0.0.0.0:15006
    upstream: ap
    policy: inbound
    limits: { idle_timeout_ms: never }
policies:
  inbound:
    rules:
      - name: r
        http: { pathz: ["/x"] }
""")
    r = run("check", "-c", path)
    assert r.returncode == 1
    lines = r.stderr.splitlines()
    assert f"{path}:6:15: listener 'inbound': upstream 'ap' is not defined under upstreams:" in lines
    assert any(l.startswith(f"{path}:8:32: ") and "must be a whole number, not 'never'" in l for l in lines), lines
    assert any(l.startswith(f"{path}:13:17: unknown key 'pathz'") for l in lines), lines
    assert any(l.startswith(f"{path}:5:14: ") and "plaintext listener" in l for l in lines), lines


def test_check_accepts_a_good_config_and_prints_warnings():
    d = tmpdir()
    pki = Pki(d)
    path = os.path.join(d, "good.yaml")
    with open(path, "w") as f:
        f.write(f"""tls:
  w: {{ cert: {pki.server_cert}, key: {pki.server_key}, ca: {pki.ca.ca_path} }}
upstreams:
  app: {{ address: tcp://127.0.0.1:8080 }}
listeners:
  - {{ name: inbound, address: 0.0.0.0:15006, tls: w, upstream: app, policy: inbound }}
policies:
  inbound:
    rules: []
""")
    r = run("check", "-c", path)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == f"{path}: ok (with warnings)"
    assert "warning: policies.inbound has no rules: it denies everything" in r.stderr


def test_check_refuses_a_key_that_does_not_match_its_certificate():
    d = tmpdir()
    pki = Pki(d)
    other_cert, other_key = pki.client("someone")
    path = os.path.join(d, "mismatch.yaml")
    with open(path, "w") as f:
        f.write(f"""tls:
  w: {{ cert: {pki.server_cert}, key: {other_key}, ca: {pki.ca.ca_path} }}
upstreams:
  app: {{ address: tcp://127.0.0.1:8080 }}
listeners:
  - {{ name: inbound, address: 127.0.0.1:15006, tls: w, upstream: app, policy: inbound }}
policies:
  inbound:
    rules: [ {{ name: r, http: {{ paths: ["/**"] }} }} ]
""")
    r = run("check", "-c", path)
    assert r.returncode == 1
    assert r.stderr.startswith(f"{path}:2:3: tls.w (used by listener inbound): "), r.stderr


def test_run_with_a_broken_config_exits_1_without_listening():
    d = tmpdir()
    path = os.path.join(d, "broken.yaml")
    with open(path, "w") as f:
        f.write("listeners: 3\n")
    r = run("run", "-c", path, timeout=30)
    assert r.returncode == 1
    assert f"{path}:1:12: listeners must be a list" in r.stderr


def test_run_warns_about_a_certificate_close_to_expiry():
    from harness import Proxy, RecordingUpstream
    d = tmpdir()
    pki = Pki(d)  # the harness issues certificates valid for 10 days
    up = RecordingUpstream()
    cfg = f"""tls:
  w: {{ cert: {pki.server_cert}, key: {pki.server_key}, ca: {pki.ca.ca_path}, expiry_warning_days: 30 }}
upstreams:
  app: {{ address: {up.address} }}
listeners:
  - name: inbound
    address: 127.0.0.1:0
    tls: w
    upstream: app
    policy: inbound
policies:
  inbound:
    rules: [ {{ name: r, http: {{ paths: ["/**"] }} }} ]
"""
    p = Proxy(cfg, d)
    assert p.stop() == 0
    assert "tls bundle 'w': certificate" in p.stderr() and "expires in" in p.stderr()
    up.close()
