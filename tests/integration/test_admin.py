"""The admin listener (issue 6): /healthz, /readyz, /config and /metrics through the real
binary, checked with promtool and scraped by a real Prometheus server."""
import fcntl
import json
import os
import re
import shutil
import signal
import socket
import struct
import subprocess
import termios
import threading
import time
import urllib.error
import urllib.parse
import urllib.request

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from harness import (Pki, Proxy, RecordingUpstream, curl, free_port, keepalive_requests, metric, paths_rule,
                     sidecar_config, tmpdir, wait_until)


def config(pki, upstream, paths='["/allowed/**"]'):
    return sidecar_config(upstream, pki.server_cert, pki.server_key, pki.ca.ca_path,
                          paths_rule("allowed-paths", paths), top="admin: { address: 127.0.0.1:0 }")


@pytest.fixture
def env():
    d = tmpdir()
    pki = Pki(d)
    pki.client("alice", orgs=["ops"], spiffe="spiffe://cluster.local/ns/shop/sa/frontend")
    up = RecordingUpstream()
    yield d, pki, up
    up.close()


def get(port, path, timeout=10):
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=timeout) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def request(pki, port, path):
    crt, key = pki.client("alice")
    rc, out, err = curl("--cacert", pki.ca.ca_path, "--cert", crt, "--key", key, "-o", "/dev/null",
                        "-w", "%{http_code}", f"https://localhost:{port}{path}")
    assert rc == 0, err
    return int(out)


def samples(text, name):
    """{frozenset of (label, value): value} for every sample of metric `name`."""
    out = {}
    for line in text.splitlines():
        m = re.match(r"^" + re.escape(name) + r"(?:\{(.*)\})? (\S+)$", line)
        if m:
            labels = frozenset(re.findall(r'(\w+)="((?:[^"\\]|\\.)*)"', m.group(1) or ""))
            out[labels] = float(m.group(2))
    return out


def promtool_check(text):
    p = subprocess.run(["promtool", "check", "metrics"], input=text.encode(), capture_output=True, timeout=30)
    # promtool exits 1 for lint warnings too; fail on anything it reports.
    assert p.returncode == 0, p.stdout.decode() + p.stderr.decode()


def requests_by_decision(text, listener="inbound"):
    totals = {}
    for labels, v in samples(text, "portcullis_requests_total").items():
        d = dict(labels)
        if d.get("listener") == listener:
            totals[d["decision"]] = totals.get(d["decision"], 0) + v
    return totals


def test_admin_endpoints_and_metrics(env):
    d, pki, up = env
    p = Proxy(config(pki, up.address), d)
    admin = p.port("admin")
    try:
        assert get(admin, "/healthz") == (200, "ok\n")
        assert get(admin, "/readyz")[0] == 200
        assert get(admin, "/nope")[0] == 404

        assert request(pki, p.port("inbound"), "/allowed/x") == 200
        assert request(pki, p.port("inbound"), "/secret") == 403

        status, text = get(admin, "/metrics")
        assert status == 200
        promtool_check(text)
        assert requests_by_decision(text) == {"allow": 1, "deny": 1}
        allow = samples(text, "portcullis_requests_total")
        assert frozenset({("listener", "inbound"), ("policy", "inbound"), ("rule", "allowed-paths"),
                          ("decision", "allow")}) in allow
        responses = {dict(k)["class"]: v for k, v in samples(text, "portcullis_responses_total").items()}
        assert responses == {"2xx": 1, "4xx": 1}
        assert samples(text, "portcullis_request_duration_seconds_count") == {frozenset({("listener", "inbound")}): 2}
        assert samples(text, "portcullis_tls_handshakes_total") == {frozenset({("listener", "inbound")}): 2}
        assert samples(text, "portcullis_connections_total") == {frozenset({("listener", "inbound")}): 2}
        expiry = samples(text, "portcullis_certificate_expiry_seconds")
        assert expiry and all(dict(k)["bundle"] == "workload" and v > 0 for k, v in expiry.items())

        status, cfg = get(admin, "/config")
        assert status == 200
        doc = json.loads(cfg)
        assert doc["tls"]["workload"]["key"] == pki.server_key  # the path, not the contents
        assert "BEGIN" not in cfg and "PRIVATE" not in cfg
        key_text = open(pki.server_key).read()
        body = "".join(l for l in key_text.splitlines() if l and not l.startswith("-----"))
        assert body[:40] not in cfg
        assert doc["listeners"][0]["name"] == "inbound"

        # A broken config on SIGHUP: counted as a failure, the old policy stays in force.
        with open(p.config_path, "a") as f:
            f.write("this is: [not valid\n")
        p.proc.send_signal(signal.SIGHUP)
        deadline = time.time() + 10
        failures = {}
        while time.time() < deadline:
            failures = samples(get(admin, "/metrics")[1], "portcullis_config_reloads_total")
            if failures.get(frozenset({("result", "failure")})):
                break
            time.sleep(0.1)
        assert failures.get(frozenset({("result", "failure")})) == 1, p.stderr()
        assert request(pki, p.port("inbound"), "/allowed/y") == 200
        assert request(pki, p.port("inbound"), "/secret") == 403
        text = get(admin, "/metrics")[1]
        promtool_check(text)
        assert requests_by_decision(text) == {"allow": 2, "deny": 2}
        assert get(admin, "/readyz")[0] == 200
    finally:
        assert p.stop() == 0


def test_failed_handshake_is_counted_by_reason(env):
    d, pki, up = env
    p = Proxy(config(pki, up.address), d)
    try:
        # No client certificate on a listener that requires one.
        rc, out, err = curl("--cacert", pki.ca.ca_path, f"https://localhost:{p.port('inbound')}/allowed/x")
        assert rc != 0
        text = get(p.port("admin"), "/metrics")[1]
        promtool_check(text)
        fails = samples(text, "portcullis_tls_handshake_failures_total")
        assert sum(fails.values()) == 1
        assert dict(next(iter(fails)))["reason"] in ("no_cert", "protocol")
        assert requests_by_decision(text) == {}
    finally:
        p.stop()


@pytest.mark.skipif(shutil.which("prometheus") is None and not os.environ.get("CI"),
                    reason="prometheus is not installed (under CI this fails instead)")
def test_real_prometheus_scrapes_the_admin_endpoint(env):
    d, pki, up = env
    p = Proxy(config(pki, up.address), d)
    prom = None
    try:
        assert request(pki, p.port("inbound"), "/allowed/x") == 200
        assert request(pki, p.port("inbound"), "/secret") == 403
        prom_dir = os.path.join(d, "prometheus")
        os.makedirs(prom_dir)
        cfg = os.path.join(prom_dir, "prometheus.yml")
        with open(cfg, "w") as f:
            f.write(f"""global:
  scrape_interval: 1s
  evaluation_interval: 1s
scrape_configs:
  - job_name: portcullis
    scrape_interval: 1s
    static_configs:
      - targets: ["127.0.0.1:{p.port('admin')}"]
""")
        web = free_port()
        prom = subprocess.Popen(["prometheus", f"--config.file={cfg}", f"--storage.tsdb.path={prom_dir}/data",
                                 f"--web.listen-address=127.0.0.1:{web}"],
                                stdout=open(os.path.join(prom_dir, "out"), "wb"),
                                stderr=open(os.path.join(prom_dir, "err"), "wb"))
        query = urllib.parse.quote('sum by (decision) (portcullis_requests_total{listener="inbound"})')
        deadline = time.time() + 60
        result = None
        while time.time() < deadline:
            assert prom.poll() is None, open(os.path.join(prom_dir, "err")).read()
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{web}/api/v1/query?query={query}", timeout=5) as r:
                    doc = json.loads(r.read())
                result = {s["metric"]["decision"]: float(s["value"][1]) for s in doc["data"]["result"]}
                if result:
                    break
            except (OSError, ValueError, KeyError):
                pass
            time.sleep(0.5)
        assert result == {"allow": 1.0, "deny": 1.0}, open(os.path.join(prom_dir, "err")).read()[-3000:]
    finally:
        if prom is not None:
            prom.terminate()
            try:
                prom.wait(15)
            except subprocess.TimeoutExpired:
                prom.kill()
                prom.wait()
        p.stop()


def wait_for_log(p, text, count=1, timeout=30):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if p.stderr().count(text) >= count:
            return
        time.sleep(0.05)
    raise AssertionError(f"no {text!r} in the proxy's log:\n{p.stderr()}")


def logging_config(pki, up, access_log):
    return sidecar_config(up.address, pki.server_cert, pki.server_key, pki.ca.ca_path,
                          paths_rule("allowed-paths", '["/allowed/**"]'),
                          top=f"admin: {{ address: 127.0.0.1:0 }}\nlog: {{ access_log: {access_log} }}")


def log_lines(path):
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def logged_paths(path, want, timeout=15):
    """The url.path of each line in the access log at `path`, once they are `want` or the
    timeout passes. A request's line is written after its response is sent, so a client can
    read the response before the line is in the file."""
    wait_until(lambda: [l["url.path"] for l in log_lines(path)] == want, timeout)
    return [l["url.path"] for l in log_lines(path)]


def test_access_log_file_is_reopened_on_sigusr1_like_logrotate_expects(env):
    """logrotate renames the file, then signals: lines before go to the old file, lines after to
    a new file under the configured name; nothing is lost or duplicated."""
    d, pki, up = env
    log = os.path.join(d, "access.log")
    p = Proxy(logging_config(pki, up, log), d)
    try:
        assert request(pki, p.port("inbound"), "/allowed/before") == 200
        # The logrotate config we ship (configs/logging/), run by the real logrotate, with this
        # test's file and process in place of the production path and pkill.
        shipped = open(os.path.join(ROOT, "configs", "logging", "logrotate.conf")).read()
        assert "/var/log/portcullis/access.log" in shipped and "pkill -USR1 -x portcullis" in shipped
        conf = os.path.join(d, "logrotate.conf")
        with open(conf, "w") as f:
            f.write(shipped.replace("/var/log/portcullis/access.log", log)
                    .replace("pkill -USR1 -x portcullis", f"kill -USR1 {p.proc.pid}"))
        os.chmod(conf, 0o644)
        rot = subprocess.run(["logrotate", "-f", "-s", os.path.join(d, "logrotate.state"), conf],
                             capture_output=True, text=True, timeout=30)
        assert rot.returncode == 0, rot.stdout + rot.stderr
        wait_for_log(p, "access log reopened")
        assert request(pki, p.port("inbound"), "/secret-after") == 403
        assert logged_paths(log + ".1", ["/allowed/before"]) == ["/allowed/before"]
        assert logged_paths(log, ["/secret-after"]) == ["/secret-after"]
        after = log_lines(log)
        assert after[0]["event.outcome"] == "deny" and after[0]["http.response.status_code"] == 403
    finally:
        assert p.stop() == 0


def test_reopen_failure_keeps_writing_to_the_old_file(env):
    d, pki, up = env
    logdir = os.path.join(d, "logs")
    os.makedirs(logdir)
    log = os.path.join(logdir, "access.log")
    p = Proxy(logging_config(pki, up, log), d)
    try:
        assert request(pki, p.port("inbound"), "/allowed/1") == 200
        os.rename(logdir, logdir + ".gone")  # the configured path cannot be created any more
        p.proc.send_signal(signal.SIGUSR1)
        wait_for_log(p, "cannot reopen")
        assert request(pki, p.port("inbound"), "/allowed/2") == 200
        want = ["/allowed/1", "/allowed/2"]
        assert logged_paths(os.path.join(logdir + ".gone", "access.log"), want) == want
    finally:
        assert p.stop() == 0


def test_an_access_log_that_cannot_be_opened_stops_startup(env):
    d, pki, up = env
    bad = os.path.join(d, "no-such-dir", "access.log")
    p = Proxy(logging_config(pki, up, bad), d, expect_ready=False)
    assert p.proc.wait(20) == 1
    assert f"access log: cannot open {bad}: No such file or directory" in p.stderr()


def test_admin_listener_moves_on_reload_and_a_taken_address_is_refused(env):
    d, pki, up = env
    first, second = free_port(), free_port()

    def cfg(port):
        return sidecar_config(up.address, pki.server_cert, pki.server_key, pki.ca.ca_path,
                              paths_rule("allowed-paths", '["/allowed/**"]'),
                              top=f"admin: {{ address: 127.0.0.1:{port} }}")

    p = Proxy(cfg(first), d)
    taken = socket.socket()
    try:
        assert get(first, "/healthz") == (200, "ok\n")
        with open(p.config_path, "w") as f:
            f.write(cfg(second))
        p.proc.send_signal(signal.SIGHUP)
        wait_for_log(p, "reload complete")
        assert get(second, "/healthz") == (200, "ok\n")
        with pytest.raises(OSError):
            get(first, "/healthz", timeout=2)
        # A new admin address that is taken: the reload is refused whole, admin stays where it is.
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        with open(p.config_path, "w") as f:
            f.write(cfg(taken.getsockname()[1]).replace('"/allowed/**"', '"/other/**"'))
        p.proc.send_signal(signal.SIGHUP)
        wait_for_log(p, "reload rejected")
        assert "admin listener: cannot listen on 127.0.0.1:%d" % taken.getsockname()[1] in p.stderr()
        assert get(second, "/healthz") == (200, "ok\n")
        assert request(pki, p.port("inbound"), "/allowed/x") == 200  # the old policy is in force
        # The file watcher and SIGHUP may each trigger a reload of the same file: at least one each.
        reloads = samples(get(second, "/metrics")[1], "portcullis_config_reloads_total")
        assert reloads.get(frozenset({("result", "success")}), 0) >= 1
        assert reloads.get(frozenset({("result", "failure")}), 0) >= 1
        assert set(reloads) <= {frozenset({("result", "success")}), frozenset({("result", "failure")})}
    finally:
        taken.close()
        assert p.stop() == 0


def test_access_log_lines_wait_for_room_in_a_full_nonblocking_pipe(env):
    """A parent may hand the proxy a non-blocking stdout. When that pipe is full, lines wait for
    room (the audit trail applies backpressure); none is dropped."""
    d, pki, up = env
    r, w = os.pipe()
    fcntl.fcntl(w, fcntl.F_SETPIPE_SZ, 4096)  # a page: full after a few lines
    fcntl.fcntl(w, fcntl.F_SETFL, fcntl.fcntl(w, fcntl.F_GETFL) | os.O_NONBLOCK)
    p = Proxy(logging_config(pki, up, "stdout"), d, stdout=w)
    os.close(w)
    chunks = []
    was_full = threading.Event()

    def reader():
        # Read nothing until the pipe is full (no room left for another line), then hold off a
        # little longer: lines written meanwhile meet EAGAIN.
        deadline = time.time() + 60
        while time.time() < deadline:
            if struct.unpack("i", fcntl.ioctl(r, termios.FIONREAD, b"\0\0\0\0"))[0] > 4096 - 300:
                was_full.set()
                break
            time.sleep(0.02)
        time.sleep(1.0)
        while True:
            b = os.read(r, 65536)
            if not b:
                break
            chunks.append(b)

    t = threading.Thread(target=reader)
    t.start()
    n = 60  # ~570 bytes a line: about eight pipes' worth
    try:
        statuses = keepalive_requests(p.port("inbound"), pki, [b"GET /allowed/x HTTP/1.1\r\nHost: x\r\n\r\n"] * n,
                                      pause=0)
        assert statuses == [200] * n
    finally:
        assert p.stop() == 0
        t.join(10)
        os.close(r)
    assert was_full.is_set(), "the pipe never filled: the test did not exercise a full pipe"
    lines = [json.loads(line) for line in b"".join(chunks).decode().splitlines() if line.strip()]
    assert len([l for l in lines if l["url.path"] == "/allowed/x"]) == n
    assert "could not be written" not in p.stderr()


def test_denials_are_logged_even_with_the_access_log_off(env):
    d, pki, up = env
    p = Proxy(logging_config(pki, up, "\"off\""), d)
    try:
        assert request(pki, p.port("inbound"), "/allowed/quiet") == 200
        assert request(pki, p.port("inbound"), "/secret") == 403
    finally:
        assert p.stop() == 0
    assert open(p.stdout_path).read() == ""
    lines = [json.loads(l) for l in p.stderr().splitlines() if l.startswith("{")]
    assert [(l["event.outcome"], l["url.path"]) for l in lines] == [("deny", "/secret")]
    assert lines[0]["reason"].startswith("no rule allows GET /secret")


def test_connections_handed_between_workers_are_served_and_counted(env):
    # Two workers. SO_REUSEPORT hashes 16 connections from one client over the two acceptors
    # unevenly; the accepting worker hands a connection to the one with fewer. Every connection
    # must be served (the handed-over ones on the other worker's thread) and the gauges must
    # return to 0 when they close, whichever worker ran them.
    from harness import client_tls_context
    d, pki, up = env
    p = Proxy(config(pki, up.address), d)
    try:
        port, admin = p.port("inbound"), p.port("admin")
        conns = []
        for _ in range(16):
            s = socket.create_connection(("127.0.0.1", port), timeout=10)
            conns.append(client_tls_context(pki, "alice").wrap_socket(s, server_hostname="localhost"))
        assert metric(admin, "portcullis_connections_active") == 16
        for i, s in enumerate(conns):
            s.sendall(f"GET /allowed/{i} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        for s in conns:
            data = b""
            while b"\r\n\r\n" not in data:
                data += s.recv(65536)
            assert data.startswith(b"HTTP/1.1 200"), data
        assert sorted(r["path"] for r in up.requests) == sorted(f"/allowed/{i}" for i in range(16))
        for s in conns:
            s.close()
        assert wait_until(lambda: metric(admin, "portcullis_connections_active") == 0, 10), \
            get(admin, "/metrics")[1]
        assert metric(admin, "portcullis_connections_total") == 16
    finally:
        assert p.stop() == 0
