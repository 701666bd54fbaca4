"""The measuring instrument of benchmarks/: the load generator (portcullis-loadgen) and
compare.sh, run against the real peers they measure. A benchmark is only as honest as its
counts, so each count is checked against an independent one: the proxy's own metrics, the
upload sink's byte count, the kernel's socket table. Nothing here asserts a speed: the smoke run
of compare.sh checks that every scenario produced a number for every proxy, not what it was.

The job the three proxies do comes from benchmarks/peers/ and the certificates from
benchmarks/make_certs.sh, exactly as compare.sh uses them."""
import json
import os
import random
import re
import shutil
import socket
import subprocess
import time

import pytest

from harness import BIN, free_port, metric, tmpdir

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "../.."))
BENCH = os.path.join(ROOT, "benchmarks")
BUILD = os.environ.get("PORTCULLIS_BUILD", os.path.join(ROOT, "build"))
LOADGEN = os.path.join(BUILD, "portcullis-loadgen")


def listening(port):
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


def wait_listening(port, proc, timeout=20):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if listening(port):
            return
        assert proc.poll() is None, f"exited with {proc.returncode} before listening on {port}"
        time.sleep(0.05)
    raise AssertionError(f"nothing listening on {port} after {timeout} s")


def render(template, out, run, **ports):
    text = open(os.path.join(BENCH, "peers", template)).read()
    for key, value in {"RUN": run, "CERTS": os.path.join(run, "certs"), "WORKERS": "2", **ports}.items():
        text = text.replace(f"@{key}@", str(value))
    with open(out, "w") as f:
        f.write(text)
    return out


def loadgen(*args, timeout=120):
    """Runs the load generator; returns (exit status, the JSON line, stderr)."""
    p = subprocess.run([LOADGEN, *map(str, args)], capture_output=True, text=True, timeout=timeout)
    report = json.loads(p.stdout) if p.stdout.strip() else None
    return p.returncode, report, p.stderr


class BenchSetup:
    """Portcullis doing the bench job in front of the bench upstream (nginx `return 200`), and
    the upload sink of the load generator behind a second Portcullis listener's upstream."""

    def __init__(self):
        self.run = tmpdir()
        os.makedirs(os.path.join(self.run, "tmp"))
        subprocess.run(["bash", os.path.join(BENCH, "make_certs.sh"), os.path.join(self.run, "certs")], check=True,
                       capture_output=True, timeout=60)
        self.certs = os.path.join(self.run, "certs")
        self.upstream_port, self.sink_port, self.admin_port = free_port(), free_port(), free_port()
        self.port, self.upload_port = free_port(), free_port()
        self.procs = []
        conf = render("upstream-nginx.conf", os.path.join(self.run, "upstream.conf"), self.run,
                      UPSTREAM_PORT=self.upstream_port)
        self.start(["nginx", "-p", self.run, "-c", conf, "-e", os.path.join(self.run, "upstream-error.log")],
                   self.upstream_port)
        self.sink_log = os.path.join(self.run, "sink.log")
        self.start([LOADGEN, "--serve", self.sink_port, "-t", "1", "--sink-log", self.sink_log, "--serve-seconds", 600],
                   self.sink_port)
        # The bench job as compare.sh runs it, plus a second listener whose upstream is the sink.
        conf = render("portcullis.yaml", os.path.join(self.run, "portcullis.yaml"), self.run, PORT=self.port,
                      UPSTREAM_PORT=self.upstream_port, ADMIN_PORT=self.admin_port)
        text = open(conf).read()
        text = text.replace("upstreams:\n", f"upstreams:\n  sink: {{ address: tcp://127.0.0.1:{self.sink_port} }}\n")
        listener = text[text.index("  - name: bench\n"):text.index("\npolicies:")]
        text = text.replace(listener, listener + "\n" + listener.replace("name: bench", "name: upload")
                            .replace(f"127.0.0.1:{self.port}", f"127.0.0.1:{self.upload_port}")
                            .replace("upstream: app", "upstream: sink"))
        open(conf, "w").write(text)
        self.start([BIN, "run", "-c", conf, "--no-firewall"], self.port)
        wait_listening(self.upload_port, self.procs[-1])

    def start(self, argv, port):
        log = open(os.path.join(self.run, f"{os.path.basename(str(argv[0]))}-{port}.out"), "w")
        p = subprocess.Popen([str(a) for a in argv], stdout=log, stderr=subprocess.STDOUT)
        self.procs.append(p)
        wait_listening(port, p)
        return p

    def tls(self, cert="bench-client.pem"):
        return ["--cert", os.path.join(self.certs, cert), "--ca", os.path.join(self.certs, "ca.crt"), "--tls13"]

    def url(self, path, port=None):
        return f"https://127.0.0.1:{port or self.port}{path}"

    def close(self):
        for p in reversed(self.procs):
            p.terminate()
        for p in self.procs:
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        shutil.rmtree(self.run, ignore_errors=True)


@pytest.fixture(scope="module")
def bench():
    assert os.access(LOADGEN, os.X_OK), f"{LOADGEN} is not built (scripts/build.sh builds it)"
    b = BenchSetup()
    yield b
    b.close()


def test_keepalive_run_counts_exactly_the_responses_the_proxy_sent(bench):
    before_2xx = metric(bench.admin_port, "portcullis_responses_total", listener="bench", **{"class": "2xx"})
    before_hs = metric(bench.admin_port, "portcullis_tls_handshakes_total", listener="bench")
    rc, r, err = loadgen(bench.url("/api/bench"), *bench.tls(), "-c", 4, "-t", 2, "-n", 400)
    assert rc == 0, err
    assert (r["responses"], r["ok"], r["status"], r["error_total"]) == (400, 400, {"200": 400}, 0), r
    assert r["handshakes"] == 4 and r["keepalive"] is True and r["mode"] == "closed"
    assert (r["tls_version"], r["connections"]) == ("TLSv1.3", 4)
    # The proxy's own counters agree: 400 answers, on 4 connections.
    assert metric(bench.admin_port, "portcullis_responses_total", listener="bench", **{"class": "2xx"}) - before_2xx == 400
    assert metric(bench.admin_port, "portcullis_tls_handshakes_total", listener="bench") - before_hs == 4
    lat = r["latency_us"]
    assert 0 < lat["min"] <= lat["p50"] <= lat["p90"] <= lat["p99"] <= lat["p999"] <= lat["max"], lat
    assert lat["min"] <= lat["mean"] <= lat["max"]
    # Every response is "HTTP/1.1 200 OK ... ok": the bytes received cover 400 of them.
    assert r["bytes_received"] >= 400 * len("HTTP/1.1 200 OK\r\n\r\nok")
    assert "400 responses, 400 2xx" in err


def test_new_connection_mode_pays_one_handshake_per_request(bench):
    before = metric(bench.admin_port, "portcullis_tls_handshakes_total", listener="bench")
    rc, r, err = loadgen(bench.url("/api/bench"), *bench.tls(), "-c", 2, "-n", 20, "--new-connection")
    assert rc == 0, err
    assert (r["responses"], r["ok"], r["handshakes"], r["keepalive"]) == (20, 20, 20, False), r
    assert metric(bench.admin_port, "portcullis_tls_handshakes_total", listener="bench") - before == 20


def test_refusals_are_counted_by_status_and_not_as_ok(bench):
    rc, r, err = loadgen(bench.url("/not-allowed"), *bench.tls(), "-c", 1, "-n", 10)
    assert rc == 0, err
    assert (r["responses"], r["ok"], r["status"], r["error_total"]) == (10, 0, {"403": 10}, 0), r
    # Another client's certificate: refused by the allowlist, and counted the same way.
    rc, r, err = loadgen(bench.url("/api/bench"), *bench.tls("other-client.pem"), "-c", 1, "-n", 5)
    assert (r["ok"], r["status"]) == (0, {"403": 5}), r


def test_a_client_without_a_certificate_gets_errors_and_a_failing_exit(bench):
    rc, r, err = loadgen(bench.url("/api/bench"), "--ca", os.path.join(bench.certs, "ca.crt"), "--tls13", "-c", 1,
                         "-n", 3)
    assert rc == 2, err
    assert (r["responses"], r["ok"], r["error_total"]) == (0, 0, 3), r
    # TLS 1.3: the client's side of each handshake completed; the proxy then refused it with an
    # alert. Refused handshakes, not handshakes followed by read errors.
    assert (r["handshakes"], r["errors"]) == (0, {"handshake": 3}), r
    assert "0 responses" in err


def test_a_closed_port_is_a_connect_error_not_a_hang(bench):
    port = free_port()
    rc, r, err = loadgen(f"https://127.0.0.1:{port}/", *bench.tls(), "-c", 2, "-n", 4, timeout=60)
    assert rc == 2
    assert r["responses"] == 0 and r["errors"].get("connect", 0) == r["error_total"] > 0, r


def test_a_target_off_loopback_is_refused_before_any_traffic(bench):
    # 192.0.2.1 is TEST-NET-1 (RFC 5737): nothing should ever be sent there, and nothing is.
    rc, r, err = loadgen("https://192.0.2.1:443/api/x", *bench.tls(), "-n", 1, timeout=30)
    assert rc == 1 and r is None
    assert "refusing non-loopback target 192.0.2.1" in err and "loopback only" in err


def test_open_loop_sends_on_schedule_and_reports_the_rate_it_was_given(bench):
    rc, r, err = loadgen(bench.url("/api/bench"), *bench.tls(), "-c", 4, "-t", 2, "-R", 200, "-d", 1)
    assert rc == 0, err
    assert (r["mode"], r["rate_target"], r["error_total"]) == ("open", 200.0, 0), r
    # 200 requests/s for 1 s is 200 scheduled sends (201 counting both ends of the second).
    assert r["responses"] in (200, 201) and r["ok"] == r["responses"], r
    assert err.startswith("open-loop")


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
def test_an_upload_reaches_the_sink_whole(bench, chunked):
    size = 30_000_000
    args = ["--chunked"] if chunked else []
    rc, r, err = loadgen(bench.url("/upload/bench", bench.upload_port), *bench.tls(), "-n", 1, "--body-bytes", size,
                         *args, "--timeout-ms", 30000)
    assert rc == 0, err
    assert (r["responses"], r["ok"]) == (1, 1), r
    assert r["upload_MBps"] > 0 and r["bytes_sent"] >= size
    # The sink answers only after the last byte, and logs how many it read.
    with open(bench.sink_log) as f:
        assert f.read().split()[-1] == str(size)


def established(port):
    out = subprocess.run(["ss", "-Htn", "state", "established", f"sport = :{port}"], capture_output=True, text=True,
                         check=True).stdout
    return len([line for line in out.splitlines() if line.strip()])


def test_idle_mode_holds_every_connection_open_until_the_hold_ends(bench):
    ready = os.path.join(bench.run, "idle-ready")
    p = subprocess.Popen([LOADGEN, bench.url("/api/bench"), *bench.tls(), "--idle", "150", "--hold", "3",
                          "--ready-file", ready], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        while not os.path.exists(ready) and time.monotonic() < deadline and p.poll() is None:
            time.sleep(0.05)
        assert open(ready).read().strip() == "150"
        # The proxy's side of the 150 connections, from the kernel's socket table and its gauge.
        assert established(bench.port) == 150
        assert metric(bench.admin_port, "portcullis_connections_active", listener="bench") == 150
        out, err = p.communicate(timeout=60)
    finally:
        p.kill()
        p.wait()
    assert p.returncode == 0, err
    assert "150 established, 0 failed" in err
    deadline = time.monotonic() + 10
    while established(bench.port) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert established(bench.port) == 0


# ---------------------------------------------------------------------------------------------
# compare.sh


def free_port_base():
    """A base for compare.sh's ports (base .. base + 13) with none of them in use. Below the
    kernel's ephemeral range (32768 and up here): a port in it can be taken at any moment as the
    local port of some test's outgoing connection, and nginx's bind() then fails."""
    with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
        top = max(min(int(f.read().split()[0]), 32768) - 20, 10020)
    for _ in range(50):
        base = random.randrange(10000, top, 20)
        if not any(listening(base + i) for i in range(14)):
            return base
    raise AssertionError("no free range of 14 ports")


def compare(env, timeout):
    runs_before = set(os.listdir("/tmp"))
    full_env = dict(os.environ, LOADGEN=LOADGEN, PORTCULLIS_BIN=BIN, BENCH_PORT_BASE=str(free_port_base()), **env)
    p = subprocess.run(["bash", os.path.join(BENCH, "compare.sh")], capture_output=True, text=True, env=full_env,
                       timeout=timeout)
    base = int(full_env["BENCH_PORT_BASE"])
    # It cleans up after itself: no run directory left, nothing left listening.
    left = {d for d in set(os.listdir("/tmp")) - runs_before if d.startswith("portcullis-bench.")}
    assert not left, f"compare.sh left {left}"
    assert not [base + i for i in range(14) if listening(base + i)], "compare.sh left a process listening"
    return p


SCENARIOS = {  # scenario -> which way is better
    "keepalive_rps": "high", "keepalive_cpu_us_per_req": "low", "keepalive_closed_p99_ms": "low",
    "open_loop_p99_ms": "low", "open_loop_p50_ms": "low", "handshakes_per_s": "high",
    "handshake_cpu_us_per_conn": "low", "upload_MBps": "high", "idle_rss_KiB_per_conn": "low",
    "idle_rss_baseline_MiB": "low", "idle_rss_total_MiB": "low",
}
LINE = re.compile(r"^(\w+)(?:@\d+rps)? portcullis=(\S+) haproxy=(\S+) nginx=(\S+) ratio_vs_best=(\S+) "
                  r"paired_ratio=(\S+)")


def test_compare_runs_every_scenario_against_all_three_and_prints_honest_ratios():
    p = compare(dict(ROUNDS="1", RUN_SECONDS="1", CONNS="4", HANDSHAKE_CONNS="2", UPLOAD_BYTES="20000000",
                     UPLOAD_ROUNDS="1", IDLE_CONNS="200", IDLE_HOLD="1", CROSSCHECK_REQUESTS="300"), timeout=600)
    assert p.returncode == 0, p.stdout + p.stderr
    for name in ("portcullis", "haproxy", "nginx"):
        assert f"{name} passes the allowlist check (TLSv1.3, TLS_AES_128_GCM_SHA256)" in p.stderr, p.stderr
    assert "DIED" not in p.stderr and "n/a" not in p.stdout, p.stdout + p.stderr
    seen = {}
    for line in p.stdout.splitlines():
        m = LINE.match(line)
        if m:
            seen[m.group(1)] = [float(v) for v in m.groups()[1:]]
    assert set(seen) == set(SCENARIOS), p.stdout
    for scenario, (ours, haproxy, nginx, ratio, paired) in seen.items():
        assert ours > 0 and haproxy > 0 and nginx > 0, (scenario, seen[scenario])
        # The ratio is Portcullis against the best peer, above 1 when Portcullis is better.
        if SCENARIOS[scenario] == "high":
            want = ours / max(haproxy, nginx)
        else:
            want = min(haproxy, nginx) / ours
        assert ratio == pytest.approx(want, abs=0.011, rel=0.02), (scenario, seen[scenario])
        assert paired == ratio, (scenario, seen[scenario])  # one round: the same comparison
    reference = re.search(r"^reference aes128gcm_1core_MBps=(\d+) loopback_tcp_MBps=(\d+) direct_upstream_rps=(\d+) "
                          r"direct_upstream_p99_us=(\d+) direct_upload_MBps=(\d+)", p.stdout, re.M)
    assert reference and all(int(v) > 0 for v in reference.groups()), p.stdout
    assert re.search(r"^crosscheck against \w+, 8 connections, 1 thread: ab_k_rps=[1-9]\d* loadgen_rps=[1-9]\d*",
                     p.stdout, re.M), p.stdout


def stats_line(rows, scenario, better):
    d = tmpdir()
    try:
        path = os.path.join(d, "results.tsv")
        with open(path, "w") as f:
            f.writelines(" ".join(map(str, r)) + "\n" for r in rows)
        p = subprocess.run(["python3", os.path.join(BENCH, "bench_stats.py"), "line", path, scenario, better],
                           capture_output=True, text=True, timeout=30)
        assert p.returncode == 0, p.stderr
        return p.stdout.strip()
    finally:
        shutil.rmtree(d, ignore_errors=True)


def test_paired_ratio_compares_each_round_with_its_own_best_peer():
    # Round 1 was a slow minute for Portcullis only in the medians' eyes: taken round by round,
    # Portcullis beat the best peer in rounds 0 and 2 (by 11 %) and lost round 1.
    rows = [("upload_MBps", "portcullis", 0, 10), ("upload_MBps", "haproxy", 0, 9), ("upload_MBps", "nginx", 0, 1),
            ("upload_MBps", "portcullis", 1, 20), ("upload_MBps", "haproxy", 1, 25), ("upload_MBps", "nginx", 1, 1),
            ("upload_MBps", "portcullis", 2, 30), ("upload_MBps", "haproxy", 2, 27), ("upload_MBps", "nginx", 2, 1)]
    out = stats_line(rows, "upload_MBps", "high")
    assert out.startswith("upload_MBps portcullis=20.0 haproxy=25.0 nginx=1 ratio_vs_best=0.80 paired_ratio=1.11 "), out
    # Lower is better: each round's best peer is its fastest; a peer missing in a round (n/a) is
    # left out of that round only; a round without Portcullis is left out.
    rows = [("p99", "portcullis", 0, 2), ("p99", "haproxy", 0, 4), ("p99", "nginx", 0, 3),
            ("p99", "portcullis", 1, 8), ("p99", "haproxy", 1, 4), ("p99", "nginx", 1, "n/a"),
            ("p99", "portcullis", 2, 5), ("p99", "haproxy", 2, 6), ("p99", "nginx", 2, 10),
            ("p99", "haproxy", 3, 1), ("p99", "nginx", 3, 1)]
    out = stats_line(rows, "p99", "low")
    assert out.startswith("p99 portcullis=5 haproxy=4 nginx=3 ratio_vs_best=0.60 paired_ratio=1.20 "), out


def test_the_copy_of_portcullis_is_a_control_and_never_a_peer():
    # portcullis_copy is a second, identical Portcullis (PROXIES=... portcullis_copy): the ratio
    # to the best peer ignores it, and copy_ratio is Portcullis against the copy alone.
    rows = [("keepalive_rps", "portcullis", r, v) for r, v in enumerate((100, 104, 96))] + \
           [("keepalive_rps", "portcullis_copy", r, v) for r, v in enumerate((110, 120, 90))] + \
           [("keepalive_rps", "haproxy", r, v) for r, v in enumerate((80, 80, 80))]
    out = stats_line(rows, "keepalive_rps", "high")
    assert out.startswith("keepalive_rps portcullis=100 haproxy=80.0 nginx=n/a ratio_vs_best=1.25 paired_ratio=1.25 "
                          "portcullis_copy=110 copy_ratio=0.91  (median of 3"), out
    low = [("p99", "portcullis", 0, 4), ("p99", "portcullis_copy", 0, 2), ("p99", "haproxy", 0, 5)]
    assert "ratio_vs_best=1.25 paired_ratio=1.25 portcullis_copy=2 copy_ratio=0.50 " in stats_line(low, "p99", "low")
    # Without the copy the line is the one the issue asks for, with nothing after the ratios.
    plain = stats_line([r for r in rows if r[1] != "portcullis_copy"], "keepalive_rps", "high")
    assert "portcullis_copy" not in plain and "copy_ratio" not in plain, plain


def test_compare_with_a_copy_of_portcullis_measures_it_like_the_others():
    p = compare(dict(PROXIES="portcullis portcullis_copy haproxy", ROUNDS="1", RUN_SECONDS="1", CONNS="4",
                     HANDSHAKE_CONNS="2", UPLOAD_BYTES="20000000", UPLOAD_ROUNDS="1", IDLE_CONNS="200", IDLE_HOLD="1",
                     CROSSCHECK_REQUESTS="300"), timeout=600)
    assert p.returncode == 0, p.stdout + p.stderr
    for name in ("portcullis", "portcullis_copy", "haproxy"):
        assert f"{name} passes the allowlist check (TLSv1.3, TLS_AES_128_GCM_SHA256)" in p.stderr, p.stderr
    assert "DIED" not in p.stderr, p.stderr
    copy_line = re.compile(r"^(\w+)(?:@\d+rps)? portcullis=(\S+) haproxy=(\S+) nginx=n/a ratio_vs_best=(\S+) "
                           r"paired_ratio=\S+ portcullis_copy=(\S+) copy_ratio=(\S+)  \(median of 1;")
    seen = {m.group(1): [float(v) for v in m.groups()[1:]] for m in map(copy_line.match, p.stdout.splitlines()) if m}
    assert set(seen) == set(SCENARIOS), p.stdout
    for scenario, (ours, haproxy, ratio, copy, copy_ratio) in seen.items():
        assert ours > 0 and haproxy > 0 and copy > 0, (scenario, seen[scenario])
        high = SCENARIOS[scenario] == "high"
        assert ratio == pytest.approx(ours / haproxy if high else haproxy / ours, abs=0.011, rel=0.02), scenario
        assert copy_ratio == pytest.approx(ours / copy if high else copy / ours, abs=0.011, rel=0.02), scenario


def test_compare_names_a_proxy_it_does_not_know():
    p = compare(dict(PROXIES="portcullis haproxxy", CHECK_ONLY="1"), timeout=180)
    assert p.returncode == 1, p.stdout + p.stderr
    assert "unknown proxy 'haproxxy' in PROXIES (portcullis, portcullis_copy, haproxy, nginx)" in p.stderr, p.stderr
    assert "portcullis passes the allowlist check" in p.stderr


@pytest.fixture
def peers_copy():
    d = tmpdir()
    shutil.copytree(os.path.join(BENCH, "peers"), os.path.join(d, "peers"))
    yield os.path.join(d, "peers")
    shutil.rmtree(d, ignore_errors=True)


def test_compare_refuses_to_measure_a_peer_that_allows_more_than_the_job(peers_copy):
    # HAProxy without its deny rule answers every path: faster perhaps, but not the same job.
    cfg = os.path.join(peers_copy, "haproxy.cfg")
    text = open(cfg).read()
    assert "http-request deny" in text
    open(cfg, "w").write("\n".join(l for l in text.splitlines() if "http-request deny" not in l) + "\n")
    p = compare(dict(PEERS_DIR=peers_copy, PROXIES="portcullis haproxy", CHECK_ONLY="1"), timeout=180)
    assert p.returncode == 1, p.stdout + p.stderr
    assert "haproxy fails the allowlist check" in p.stderr and "gave '200', want 403" in p.stderr, p.stderr
    assert "portcullis passes the allowlist check" in p.stderr
    assert "check: haproxy does not do the bench job" in p.stderr


def test_compare_refuses_a_portcullis_that_lets_another_identity_in(peers_copy):
    conf = os.path.join(peers_copy, "portcullis.yaml")
    text = open(conf).read()
    assert text.count("users: [bench-client]") == 2
    open(conf, "w").write(text.replace("users: [bench-client]", "users: [bench-client, other-client]"))
    p = compare(dict(PEERS_DIR=peers_copy, PROXIES="portcullis nginx", CHECK_ONLY="1"), timeout=180)
    assert p.returncode == 1, p.stdout + p.stderr
    assert "portcullis fails the allowlist check" in p.stderr and "other-client.pem) gave '200', want 403" in p.stderr, \
        p.stderr
    assert "nginx passes the allowlist check" in p.stderr
