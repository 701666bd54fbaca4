"""Live reload (issue 6): under traffic, with listeners added and removed, and the access log's
documented fields on every line."""
import os
import signal
import socket
import ssl
import threading
import time

from harness import Pki, Proxy, RecordingUpstream, curl, free_port, paths_rule, sidecar_config, tmpdir

ECS_FIELDS = {"@timestamp", "event.outcome", "listener.name", "source.ip", "source.port",
              "bytes.in", "bytes.out", "duration_us"}


def config(pki, upstream, paths, extra_listener=""):
    return sidecar_config(upstream, pki.server_cert, pki.server_key, pki.ca.ca_path,
                          paths_rule("allowed-paths", paths), extra_listener=extra_listener)


def wait_for_log(p, text, count=1, timeout=20):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if p.stderr().count(text) >= count:
            return
        time.sleep(0.05)
    raise AssertionError(f"no {text!r} in the log:\n{p.stderr()}")


def keepalive_client(pki, port):
    ctx = ssl.create_default_context(cafile=pki.ca.ca_path)
    ctx.load_cert_chain(*pki.client("alice"))
    return ctx.wrap_socket(socket.create_connection(("127.0.0.1", port), timeout=10), server_hostname="localhost")


def status_of(sock, path):
    sock.sendall(f"GET {path} HTTP/1.1\r\nHost: localhost\r\n\r\n".encode())
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        assert chunk, "connection closed"
        data += chunk
    head, rest = data.split(b"\r\n\r\n", 1)
    length = int([l for l in head.split(b"\r\n") if l.lower().startswith(b"content-length:")][0].split(b":")[1])
    while len(rest) < length:
        rest += sock.recv(65536)
    return int(head.split(b" ")[1])


def test_reload_under_traffic_follows_the_new_policy_and_fails_no_request():
    d = tmpdir()
    pki = Pki(d)
    pki.client("alice")
    up = RecordingUpstream()
    p = Proxy(config(pki, up.address, '["/a/**"]'), d)
    port = p.port("inbound")
    results = []  # (path, status) from a client that keeps sending on new and kept-alive connections
    stop = threading.Event()

    def traffic():
        sock = keepalive_client(pki, port)
        n = 0
        while not stop.is_set() and n < 5000:
            n += 1
            for path in ("/a/x", "/b/x"):
                try:
                    results.append((path, status_of(sock, path), time.time()))
                except Exception as e:  # any failure is a failed request
                    results.append((path, f"error: {e}", time.time()))
                    sock = keepalive_client(pki, port)

    t = threading.Thread(target=traffic)
    t.start()
    time.sleep(0.5)
    with open(p.config_path, "w") as f:
        f.write(config(pki, up.address, '["/b/**"]'))
    sighup_at = time.time()
    p.proc.send_signal(signal.SIGHUP)
    wait_for_log(p, "reload complete")
    reloaded_at = time.time()
    time.sleep(0.5)
    stop.set()
    t.join(30)
    errors = [r for r in results if not isinstance(r[1], int)]
    assert errors == [], errors[:5]
    before = [r for r in results if r[2] < sighup_at]
    after = [r for r in results if r[2] > reloaded_at + 0.1]
    assert before and after
    # Before: /a allowed, /b denied. After (same kept-alive connection): the other way round.
    assert {(path, s) for path, s, _ in before} == {("/a/x", 200), ("/b/x", 403)}
    assert {(path, s) for path, s, _ in after} == {("/a/x", 403), ("/b/x", 200)}
    p.stop()
    up.close()


def test_listeners_added_and_removed_by_reload_leave_the_others_connected():
    d = tmpdir()
    pki = Pki(d)
    pki.client("alice")
    up = RecordingUpstream()
    p = Proxy(config(pki, up.address, '["/**"]'), d)
    held = keepalive_client(pki, p.port("inbound"))
    assert status_of(held, "/before") == 200
    second = """  - name: second
    address: 127.0.0.1:0
    tls: workload
    upstream: app
    policy: inbound
"""
    with open(p.config_path, "w") as f:
        f.write(config(pki, up.address, '["/**"]', second))
    p.proc.send_signal(signal.SIGHUP)
    wait_for_log(p, "listener 'second' ready on")
    p.wait_ready()
    rc, out, err = curl("--cacert", pki.ca.ca_path, "--cert", pki.client("alice")[0], "--key", pki.client("alice")[1],
                        "-w", "%{http_code}", f"https://localhost:{p.port('second')}/on-second")
    assert out.endswith(b"200"), (out, err)
    assert status_of(held, "/still-here") == 200  # the untouched listener's connection survived
    # Remove it again: its port stops accepting, the first listener's connection still works.
    second_port = p.port("second")
    with open(p.config_path, "w") as f:
        f.write(config(pki, up.address, '["/**"]'))
    p.proc.send_signal(signal.SIGHUP)
    wait_for_log(p, "reload complete", count=2)
    time.sleep(0.3)
    refused = False
    try:
        socket.create_connection(("127.0.0.1", second_port), timeout=2).close()
    except OSError:
        refused = True
    assert refused, "the removed listener's port still accepts"
    assert status_of(held, "/after-removal") == 200
    p.stop()
    up.close()


def test_a_listener_renamed_by_reload_keeps_its_address():
    """A rename is a new listener on an address this process already listens on: it binds beside
    the old one (SO_REUSEPORT within the process) before the old one closes, and the check that
    keeps other processes off the address must not refuse it."""
    d = tmpdir()
    pki = Pki(d)
    pki.client("alice")
    up = RecordingUpstream()
    port = free_port()
    text = config(pki, up.address, '["/**"]').replace("address: 127.0.0.1:0", f"address: 127.0.0.1:{port}", 1)
    p = Proxy(text, d)
    with open(p.config_path, "w") as f:
        f.write(text.replace("- name: inbound", "- name: renamed", 1))
    p.proc.send_signal(signal.SIGHUP)
    wait_for_log(p, "reload complete")
    assert "reload rejected" not in p.stderr(), p.stderr()
    assert f"listener 'renamed' ready on 127.0.0.1:{port}" in p.stderr(), p.stderr()
    rc, out, err = curl("--cacert", pki.ca.ca_path, "--cert", pki.client("alice")[0], "--key", pki.client("alice")[1],
                        "-w", "%{http_code}", f"https://localhost:{port}/after-rename")
    assert out.endswith(b"200"), (out, err)
    p.stop()
    up.close()


def test_every_access_log_line_has_the_documented_fields():
    d = tmpdir()
    pki = Pki(d)
    pki.client("alice", orgs=["ops"], spiffe="spiffe://cluster.local/ns/shop/sa/frontend")
    up = RecordingUpstream()
    p = Proxy(config(pki, up.address, '["/a/**"]'), d)
    crt, key = pki.client("alice")
    for path in ("/a/ok?x=1", "/b/denied"):
        curl("--cacert", pki.ca.ca_path, "--cert", crt, "--key", key, f"https://localhost:{p.port('inbound')}{path}")
    p.stop()
    lines = p.access_log()
    assert len(lines) == 2
    for line in lines:
        assert ECS_FIELDS <= set(line), set(line) ^ ECS_FIELDS
        assert line["client.identity.spiffe"] == "spiffe://cluster.local/ns/shop/sa/frontend"
        assert line["client.identity.groups"] == ["ops"]
    allow, deny = lines
    assert allow["event.outcome"] == "allow" and allow["url.query"] == "x=1" and allow["rule.name"] == "allowed-paths"
    assert deny["event.outcome"] == "deny" and deny["http.response.status_code"] == 403
    assert deny["reason"] == "no rule allows GET /b/denied for spiffe://cluster.local/ns/shop/sa/frontend"
    up.close()
