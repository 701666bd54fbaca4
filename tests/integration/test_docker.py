"""protocol: docker (issue 9): the real docker CLI (v28) in TLS mode through Portcullis to a
private real dockerd (dockerd.py). Denials must reach the user as the CLI prints them
("Error response from daemon: portcullis: ..."), every body that cannot be inspected is refused
(raw requests over mTLS), and what dockerd receives is what was checked."""
import io
import json
import os
import queue
import shutil
import signal
import socket
import ssl
import subprocess
import tarfile
import threading

import pytest

from dockerd import BUSYBOX, DOCKER, dockerd  # noqa: F401  (dockerd is a fixture)
from harness import BIN, Pki, Proxy, client_tls_context, raw_exchange, tmpdir, wait_until

INSPECT_LIMIT = 65536
# Every container action but container.commit (which, with `images:`, `check` warns about).
CONTAINER_ACTIONS = ("container.create, container.start, container.stop, container.restart, container.kill, "
                     "container.wait, container.attach, container.resize, container.logs, container.exec, "
                     "container.remove, container.rename, container.update, container.pause, container.unpause, "
                     "container.archive, container.export, container.prune, container.checkpoint")


def docker_config(pki, sock, data_dir):
    return f"""
workers: 2
tls:
  gateway: {{ cert: {pki.server_cert}, key: {pki.server_key}, ca: {pki.ca.ca_path} }}
upstreams:
  docker: {{ address: unix://{sock} }}
listeners:
  - name: docker
    address: 127.0.0.1:0
    tls: gateway
    protocol: docker
    upstream: docker
    policy: docker
    limits: {{ inspect_body_bytes: {INSPECT_LIMIT} }}
policies:
  docker:
    rules:
      - name: readers-read
        from: {{ groups: [readers] }}
        docker: {{ actions: [read] }}
      - name: admins-every-action
        from: {{ groups: [admins] }}
        docker: {{ actions: ["*"] }}
      - name: ops-run-official
        from: {{ groups: [ops] }}
        docker:
          actions: [read, {CONTAINER_ACTIONS}, image.pull, volume.create, service.create, service.update, swarm.init, swarm.update]
          images: ["docker.io/library/*"]
          bind_sources: ["{data_dir}/**"]
"""


class Gateway:
    def __init__(self, daemon):
        self.daemon = daemon
        self.dir = tmpdir()
        self.pki = Pki(self.dir)
        self.pki.client("reader", orgs=["readers"])
        self.pki.client("ops", orgs=["ops"])
        self.pki.client("admin", orgs=["admins"])
        self.data = os.path.join(self.dir, "data")
        os.makedirs(self.data)
        with open(os.path.join(self.data, "greeting"), "w") as f:
            f.write("hello from the host\n")
        self.proxy = Proxy(docker_config(self.pki, daemon.sock, self.data), self.dir)
        self.port = self.proxy.port("docker")

    def cert_path(self, client):
        """A DOCKER_CERT_PATH for `client`: ca.pem, cert.pem, key.pem."""
        d = os.path.join(self.dir, "docker-" + client)
        if not os.path.isdir(d):
            os.makedirs(d)
            crt, key = self.pki.client(client)
            shutil.copy(self.pki.ca.ca_path, os.path.join(d, "ca.pem"))
            shutil.copy(crt, os.path.join(d, "cert.pem"))
            shutil.copy(key, os.path.join(d, "key.pem"))
        return d

    def env(self, client):
        e = {k: v for k, v in os.environ.items() if not k.startswith("DOCKER_")}
        e.update(DOCKER_HOST=f"tcp://127.0.0.1:{self.port}", DOCKER_TLS_VERIFY="1",
                 DOCKER_CERT_PATH=self.cert_path(client), DOCKER_CONFIG=os.path.join(self.dir, "cli-config"))
        return e

    def docker(self, client, *args, input=None, timeout=120):
        """The docker CLI through the gateway as `client`; returns (rc, stdout, stderr)."""
        p = subprocess.run([DOCKER, *args], capture_output=True, text=True, input=input, timeout=timeout,
                           env=self.env(client))
        return p.returncode, p.stdout, p.stderr

    def popen(self, client, *args):
        return subprocess.Popen([DOCKER, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                env=self.env(client))

    def raw(self, data, client="ops"):
        """One raw HTTP/1.1 exchange over mTLS; returns (status, parsed JSON body or text)."""
        out = raw_exchange(self.port, data, self.pki, client, timeout=30)
        head, _, body = out.partition(b"\r\n\r\n")
        status = int(head.split(b" ")[1]) if head.startswith(b"HTTP/1.1 ") else 0
        try:
            return status, json.loads(body)
        except ValueError:
            return status, body.decode(errors="replace")

    def raw_early_answer(self, data, client="ops"):
        """Like raw(), for a request the proxy may answer before the client has sent it all: sends
        in pieces and stops sending as soon as an answer is readable or sending fails."""
        s = socket.create_connection(("127.0.0.1", self.port), timeout=30)
        s = client_tls_context(self.pki, client).wrap_socket(s, server_hostname="localhost")
        out = b""
        try:
            for i in range(0, len(data), 8192):
                s.sendall(data[i:i + 8192])
                s.setblocking(False)  # an answer already? (TLS 1.3 tickets alone make select() say yes)
                try:
                    out += s.recv(65536)
                except (ssl.SSLWantReadError, BlockingIOError):
                    pass
                finally:
                    s.settimeout(30)
                if out:
                    break
        except (ssl.SSLError, OSError):
            pass
        try:
            while True:
                chunk = s.recv(65536)
                if not chunk:
                    break
                out += chunk
        except (socket.timeout, ssl.SSLError, OSError):
            pass
        s.close()
        head, _, body = out.partition(b"\r\n\r\n")
        status = int(head.split(b" ")[1]) if head.startswith(b"HTTP/1.1 ") else 0
        return status, json.loads(body) if status else out

    def close(self):
        self.proxy.stop()


@pytest.fixture(scope="module")
def gw(dockerd):  # noqa: F811
    g = Gateway(dockerd)
    yield g
    g.close()


def container_names(daemon):
    out = daemon.cli("ps", "-a", "--format", "{{.Names}}").stdout
    return set(out.split())


def post(path, body, headers=(), content_type="application/json"):
    """A POST with a Content-Length body (bytes) and Connection: close."""
    h = [f"POST {path} HTTP/1.1", "Host: docker", "Connection: close"]
    if content_type:
        h.append(f"Content-Type: {content_type}")
    h += list(headers)
    if not any(x.lower().startswith(("content-length", "transfer-encoding")) for x in headers):
        h.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(h) + "\r\n\r\n").encode() + body


def chunked(body, size=7):
    out = b""
    for i in range(0, len(body), size):
        piece = body[i:i + size]
        out += b"%x\r\n%s\r\n" % (len(piece), piece)
    return out + b"0\r\n\r\n"


def line_reader(p):
    """A queue of p's stdout lines, so every wait on a stream can be bounded (a hang fails)."""
    lines = queue.Queue()
    threading.Thread(target=lambda: [lines.put(line.strip()) for line in p.stdout], daemon=True).start()
    return lines


# ---------------------------------------------------------------------------------------------
# The docker CLI


def test_read_only_identity_sees_version_and_ps_but_cannot_run(gw):
    rc, out, err = gw.docker("reader", "version", "--format", "{{.Server.Version}}")
    assert rc == 0, err
    assert out.strip() == gw.daemon.server_version
    gw.daemon.cli("create", "--name", "listed-for-reader", "--network", "none", "busybox", "true")
    rc, out, err = gw.docker("reader", "ps", "-a", "--format", "{{.Names}}")
    assert rc == 0, err
    assert "listed-for-reader" in out.split()
    rc, out, err = gw.docker("reader", "run", "--rm", "--network", "none", "busybox", "echo", "hi")
    assert rc != 0
    assert "Error response from daemon: portcullis:" in err
    assert "container.create" in err
    assert "hi" not in out


def test_allowed_identity_runs_an_official_image_and_sees_its_output(gw):
    rc, out, err = gw.docker("ops", "run", "--rm", "--network", "none", "busybox", "echo", "hi")
    assert rc == 0, err
    assert out == "hi\n"


def test_bind_inside_bind_sources_reaches_the_container(gw):
    rc, out, err = gw.docker("ops", "run", "--rm", "--network", "none", "-v", f"{gw.data}:/data:ro",
                             "busybox", "cat", "/data/greeting")
    assert rc == 0, err
    assert out == "hello from the host\n"


def test_stdin_reaches_the_container_and_output_comes_back_after_stdin_closes(gw):
    # `-i`: the hijacked attach stream; the CLI half-closes when stdin ends and keeps reading.
    rc, out, err = gw.docker("ops", "run", "--rm", "-i", "--network", "none", "busybox", "cat",
                             input="line one\nline two\n")
    assert rc == 0, err
    assert out == "line one\nline two\n"


def test_exec_into_a_running_container(gw):
    rc, out, err = gw.docker("ops", "run", "-d", "--name", "exec-target", "--network", "none", "busybox",
                             "sleep", "300")
    assert rc == 0, err
    try:
        rc, out, err = gw.docker("ops", "exec", "exec-target", "echo", "from exec")
        assert rc == 0, err
        assert out == "from exec\n"
        rc, out, err = gw.docker("ops", "exec", "-i", "exec-target", "cat", input="piped through exec\n")
        assert rc == 0, err
        assert out == "piped through exec\n"
        rc, out, err = gw.docker("ops", "exec", "--privileged", "exec-target", "true")
        assert rc != 0
        assert "Error response from daemon: portcullis:" in err and "privileged" in err.lower()
    finally:
        gw.daemon.cli("rm", "-f", "exec-target", check=False)


def _on_a_terminal(gw, client, args, rows, cols, resize_to, expect, timeout=60):
    """Runs the docker CLI on a pseudo-terminal of rows x cols, as a user's shell would, and reads
    what it prints until every string of `expect` has appeared. Once the first has, the terminal
    is resized to `resize_to` (the CLI gets SIGWINCH and asks dockerd to resize). Returns the
    output; a missing string fails after `timeout` seconds."""
    import fcntl
    import pty
    import select
    import struct
    import termios
    import time

    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))
    p = subprocess.Popen([DOCKER, *args], stdin=slave, stdout=slave, stderr=slave, env=gw.env(client),
                         start_new_session=True, preexec_fn=lambda: fcntl.ioctl(0, termios.TIOCSCTTY, 0))
    os.close(slave)
    out, resized, deadline = b"", False, time.monotonic() + timeout
    try:
        while not all(e.encode() in out for e in expect) and time.monotonic() < deadline:
            if select.select([master], [], [], 0.2)[0]:
                try:
                    out += os.read(master, 4096)
                except OSError:  # the CLI exited and closed the terminal
                    break
            if not resized and expect[0].encode() in out:
                fcntl.ioctl(master, termios.TIOCSWINSZ, struct.pack("HHHH", *resize_to, 0, 0))
                os.killpg(p.pid, signal.SIGWINCH)
                resized = True
    finally:
        if p.poll() is None:
            p.kill()
        p.wait(timeout=30)
        os.close(master)
    text = out.decode(errors="replace")
    for e in expect:
        assert e in text, "%r not printed by `docker %s`; the terminal showed: %r" % (e, " ".join(args), text)
    return text


def test_interactive_terminal_and_its_resizes_reach_the_container(gw):
    """`docker run -it` and `docker exec -it` from a real terminal: the container gets a tty of
    the terminal's size, and a resize of the user's window reaches it (POST .../resize)."""
    # The container waits until its terminal has a size (the CLI sends it just after the start),
    # prints it, then waits for the size to change (our resize of the window) and prints that.
    script = ("w() { i=0; while [ $i -lt 150 ] && [ \"$(stty size 2>/dev/null)\" = \"$1\" ]; do sleep 0.1; "
              "i=$((i+1)); done; echo \"size $(stty size 2>/dev/null)\"; }; tty; w ''; w '24 80'")
    _on_a_terminal(gw, "ops", ["run", "--rm", "-it", "--network", "none", "busybox", "sh", "-c", script],
                   24, 80, (33, 111), ["size 24 80", "/dev/pts/", "size 33 111"])
    rc, out, err = gw.docker("ops", "run", "-d", "--name", "tty-target", "--network", "none", "busybox",
                             "sleep", "300")
    assert rc == 0, err
    try:
        _on_a_terminal(gw, "ops", ["exec", "-it", "tty-target", "sh", "-c", script],
                       24, 80, (40, 132), ["size 24 80", "/dev/pts/", "size 40 132"])
    finally:
        gw.daemon.cli("rm", "-f", "tty-target", check=False)


def test_attach_over_websocket(gw):
    """GET /containers/{id}/attach/ws (what web consoles use): dockerd's websocket handshake passes
    our 101 check (Sec-WebSocket-Accept for the client's key) and the output arrives in frames."""
    rc, out, err = gw.docker("ops", "run", "-d", "--name", "ws-target", "--network", "none", "busybox", "sh", "-c",
                             "sleep 1; echo hello over websocket; sleep 30")
    assert rc == 0, err
    try:
        s = client_tls_context(gw.pki, "ops").wrap_socket(socket.create_connection(("127.0.0.1", gw.port), timeout=15),
                                                          server_hostname="localhost")
        s.sendall(b"GET /containers/ws-target/attach/ws?stream=1&stdout=1 HTTP/1.1\r\nHost: docker\r\n"
                  b"Connection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\n"
                  b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nOrigin: http://docker\r\n\r\n")
        got = b""
        while b"hello over websocket" not in got:
            chunk = s.recv(4096)
            assert chunk, got
            got += chunk
        assert got.startswith(b"HTTP/1.1 101 "), got[:300]
        assert b"s3pPLMBiTxaQ9kYGzzhZRbK+xOo=" in got.split(b"\r\n\r\n")[0], got[:300]
        s.close()
    finally:
        gw.daemon.cli("rm", "-f", "ws-target", check=False)


def test_logs_follow_streams_while_the_container_runs(gw):
    rc, out, err = gw.docker("ops", "run", "-d", "--name", "chatty", "--network", "none", "busybox", "sh", "-c",
                             "echo first; sleep 300")
    assert rc == 0, err
    p = gw.popen("ops", "logs", "-f", "chatty")
    lines = line_reader(p)
    try:
        assert lines.get(timeout=60) == "first"
        # The line arrived while the container is still running: the response was streamed.
        assert gw.daemon.cli("inspect", "-f", "{{.State.Running}}", "chatty").stdout.strip() == "true"
        assert p.poll() is None
    finally:
        p.kill()
        p.communicate(timeout=30)
        gw.daemon.cli("rm", "-f", "chatty", check=False)


def test_events_stream(gw):
    p = gw.popen("reader", "events", "--filter", "container=evented", "--format", "{{.Action}}")
    lines = line_reader(p)
    try:
        # Events flow only once the subscription is in place: repeat until the first arrives.
        first = None
        for _ in range(10):
            gw.daemon.cli("create", "--name", "evented", "--network", "none", "busybox", "true")
            gw.daemon.cli("rm", "evented")
            try:
                first = lines.get(timeout=10)
                break
            except queue.Empty:
                assert p.poll() is None, p.stderr.read()
        assert first in ("create", "destroy")
        # The stream stays open: later events keep arriving on it, in order. First let the
        # rest of the pair above arrive (under ASan its destroy can come after the create was
        # read): drain until the stream has been quiet for 3 s.
        while True:
            try:
                lines.get(timeout=3)
            except queue.Empty:
                break
        gw.daemon.cli("create", "--name", "evented", "--network", "none", "busybox", "true")
        assert lines.get(timeout=60) == "create"
        gw.daemon.cli("rm", "evented")
        assert lines.get(timeout=60) == "destroy"
        assert p.poll() is None
    finally:
        p.kill()
        p.communicate(timeout=30)


REFUSED_RUNS = [
    (["--privileged"], "privileged"),
    (["-v", "/:/host"], "bind"),
    (["--pid=host"], "pid"),
    (["--cap-add", "SYS_ADMIN"], "cap"),
    (["--security-opt", "seccomp=unconfined"], "seccomp"),
    (["--volumes-from", "exec-target"], "volumes"),
    (["--sysctl", "net.ipv4.ip_forward=1"], "sysctl"),
    # Third red-team round: a host profile or SELinux domain that does not confine.
    (["--security-opt", "apparmor=lxc-container-default-with-nesting"], "apparmor_unconfined"),
    (["--security-opt", "label=type:container_runtime_t"], "label_disable"),
]


@pytest.mark.parametrize("flags,word", REFUSED_RUNS, ids=[" ".join(f) for f, _ in REFUSED_RUNS])
def test_dangerous_run_is_refused_with_our_reason(gw, flags, word):
    before = container_names(gw.daemon)
    rc, out, err = gw.docker("ops", "run", "--rm", "--network", "none", *flags, "busybox", "echo", "ran")
    assert rc != 0
    assert "Error response from daemon: portcullis:" in err, err
    assert word in err.lower(), err
    assert "ran" not in out
    assert container_names(gw.daemon) == before


def test_docker_socket_bind_is_refused_even_through_a_symlink(gw):
    link = os.path.join(gw.data, "innocent.sock")
    if not os.path.lexists(link):
        os.symlink(gw.daemon.sock, link)
    for source in (gw.daemon.sock, link, "/var/run/docker.sock"):
        rc, out, err = gw.docker("ops", "run", "--rm", "--network", "none", "-v", f"{source}:/var/run/docker.sock",
                                 "busybox", "true")
        assert rc != 0
        assert "Error response from daemon: portcullis:" in err, err
        assert "socket" in err.lower() or "resolved" in err.lower(), err


def test_unofficial_image_and_image_id_are_refused(gw):
    rc, out, err = gw.docker("ops", "run", "--rm", "--network", "none", "evil.example/tool:1", "true")
    assert rc != 0
    assert "Error response from daemon: portcullis:" in err and "evil.example/tool:1" in err, err
    short_id = gw.daemon.image_id.split(":")[1][:12]
    rc, out, err = gw.docker("ops", "run", "--rm", "--network", "none", short_id, "true")
    assert rc != 0
    assert "Error response from daemon: portcullis:" in err and "image_ids" in err, err


def test_allowed_settings_arrive_at_dockerd_as_checked(gw):
    rc, out, err = gw.docker("ops", "create", "--name", "checked-settings", "--network", "none", "-e", "COLOR=blue",
                             "--label", "team=ops", "-v", f"{gw.data}:/data", "busybox", "true")
    assert rc == 0, err
    try:
        info = json.loads(gw.daemon.cli("inspect", "checked-settings").stdout)[0]
        assert "COLOR=blue" in info["Config"]["Env"]
        assert info["Config"]["Labels"] == {"team": "ops"}
        assert info["HostConfig"]["Binds"] == [f"{gw.data}:/data"]
        assert info["HostConfig"]["Privileged"] is False
    finally:
        gw.daemon.cli("rm", "-f", "checked-settings", check=False)


# ---------------------------------------------------------------------------------------------
# Raw requests: every body that cannot be inspected is refused


PRIVILEGED = b'{"Image":"busybox","Cmd":["true"],"HostConfig":{"Privileged":true,"NetworkMode":"none"}}'


def allowed_body(label):
    return json.dumps({"Image": "busybox", "Cmd": ["true"], "Labels": {"checked": label},
                       "HostConfig": {"NetworkMode": "none"}}).encode()


def assert_refused(gw, data, *words, client="ops", early=False):
    before = container_names(gw.daemon)
    status, body = gw.raw_early_answer(data, client) if early else gw.raw(data, client)
    assert status == 403, body
    assert isinstance(body, dict) and body["message"].startswith("portcullis: "), body
    for w in words:
        assert w in body["message"].lower(), body
    assert container_names(gw.daemon) == before
    return body["message"]


def created_label(gw, name):
    info = json.loads(gw.daemon.cli("inspect", name).stdout)[0]
    gw.daemon.cli("rm", "-f", name, check=False)
    return info["Config"]["Labels"].get("checked"), info["HostConfig"]["Privileged"]


def test_content_length_zero_with_a_body_is_refused(gw):
    # CVE-2024-41110: a zero Content-Length made the authz plugin skip the body dockerd then read.
    data = post("/v1.41/containers/create?name=cl0", b"", headers=["Content-Length: 0"]) + PRIVILEGED
    assert_refused(gw, data, "empty")


def test_missing_body_is_refused(gw):
    assert_refused(gw, post("/containers/create?name=nobody", b""), "empty")


def test_chunked_body_is_inspected_and_forwarded_with_its_length(gw):
    assert_refused(gw, post("/containers/create?name=chunky-bad", chunked(PRIVILEGED),
                            headers=["Transfer-Encoding: chunked"]), "privileged")
    status, body = gw.raw(post("/containers/create?name=chunky-good", chunked(allowed_body("chunked")),
                               headers=["Transfer-Encoding: chunked"]))
    assert status == 201, body
    assert created_label(gw, "chunky-good") == ("chunked", False)


def test_charset_parameter_is_inspected_not_skipped(gw):
    # moby#36317: `application/json; charset=utf-8` gave the authz plugin an empty body.
    assert_refused(gw, post("/containers/create?name=cs-bad", PRIVILEGED, content_type="application/json; charset=utf-8"),
                   "privileged")
    status, body = gw.raw(post("/containers/create?name=cs-good", allowed_body("charset"),
                               content_type="application/json; charset=utf-8"))
    assert status == 201, body
    assert created_label(gw, "cs-good") == ("charset", False)


def test_other_charsets_and_form_bodies_are_refused(gw):
    assert_refused(gw, post("/containers/create?name=latin", allowed_body("x"),
                            content_type="application/json; charset=iso-8859-1"), "charset")
    assert_refused(gw, post("/containers/create?name=form", b"fromImage=evil.example/tool",
                            content_type="application/x-www-form-urlencoded"), "form")
    assert_refused(gw, post("/containers/create?name=twotypes", allowed_body("x"),
                            headers=["Content-Type: text/plain"]), "content-type")


def test_content_encoded_body_is_refused(gw):
    import gzip
    assert_refused(gw, post("/containers/create?name=gz", gzip.compress(PRIVILEGED),
                            headers=["Content-Encoding: gzip"]), "content-encoding")


def test_expect_continue_gets_100_before_the_body_is_inspected(gw):
    body = allowed_body("expect")
    head = post("/containers/create?name=expecting", b"", headers=["Expect: 100-continue",
                                                                     f"Content-Length: {len(body)}"])
    s = client_tls_context(gw.pki, "ops").wrap_socket(socket.create_connection(("127.0.0.1", gw.port), timeout=30),
                                                      server_hostname="localhost")
    try:
        s.sendall(head)
        interim = b""
        while b"\r\n\r\n" not in interim:
            chunk = s.recv(1)
            assert chunk, interim
            interim += chunk
        assert interim.startswith(b"HTTP/1.1 100 "), interim
        s.sendall(body)
        answer = b""
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            answer += chunk
    finally:
        s.close()
    assert answer.startswith(b"HTTP/1.1 201 "), answer
    assert b"100 Continue" not in answer  # only one interim response
    assert created_label(gw, "expecting") == ("expect", False)


def test_body_over_the_inspection_limit_is_refused(gw):
    # CVE-2026-34040: oversized bodies were dropped before the plugin saw them.
    big = json.dumps({"Image": "busybox", "Cmd": ["true"], "Labels": {"pad": "x" * INSPECT_LIMIT},
                      "HostConfig": {"Privileged": True}}).encode()
    assert_refused(gw, post("/containers/create?name=big", big), "inspect_body_bytes", early=True)
    assert_refused(gw, post("/containers/create?name=bigchunked", chunked(big, 4096),
                            headers=["Transfer-Encoding: chunked"]), "inspect_body_bytes", early=True)


def test_duplicate_keys_are_refused(gw):
    twice = b'{"Image":"busybox","HostConfig":{"Privileged":false,"Privileged":true}}'
    assert_refused(gw, post("/containers/create?name=dup", twice), "duplicate")
    # Go's encoding/json matches field names case-insensitively: `privileged` is Privileged.
    folded = b'{"Image":"busybox","HostConfig":{"Privileged":false,"privileged":true}}'
    assert_refused(gw, post("/containers/create?name=dupcase", folded), "duplicate")


def test_not_json_is_refused(gw):
    assert_refused(gw, post("/containers/create?name=notjson", b'{"Image":"busybox",'), "json")
    assert_refused(gw, post("/containers/create?name=trailing", allowed_body("x") + b' {"HostConfig":{}}'))


def test_service_create_with_privileges_is_refused(gw):
    caps = json.dumps({"Name": "svc", "TaskTemplate": {"ContainerSpec": {
        "Image": "busybox", "CapabilityAdd": ["CAP_SYS_ADMIN"]}}}).encode()
    assert_refused(gw, post("/v1.41/services/create", caps), "cap")
    root = json.dumps({"Name": "svc", "TaskTemplate": {"ContainerSpec": {
        "Image": "busybox", "Mounts": [{"Type": "bind", "Source": "/", "Target": "/host"}]}}}).encode()
    assert_refused(gw, post("/v1.41/services/create", root), "/")


def test_reading_the_swarm_and_its_join_tokens_is_not_a_read(gw):
    """Third red-team round: GET /swarm was `read`, and on a manager its answer holds the manager
    join token: a reader could join a host of its own as a manager and run services here."""
    msg = assert_refused(gw, b"GET /v1.41/swarm HTTP/1.1\r\nHost: docker\r\nConnection: close\r\n\r\n",
                         client="reader")
    assert "swarm.inspect" in msg
    rc, _, err = gw.docker("reader", "swarm", "join-token", "manager")
    assert rc != 0 and "portcullis:" in err, err
    assert gw.docker("reader", "info")[0] == 0


def test_a_distribution_inspect_is_a_pull_of_that_name(gw):
    """Third red-team round: GET /distribution/{name}/json was `read`; dockerd then sent HTTP
    requests to any port of 127.0.0.1 (an insecure registry by default) and echoed the answer."""
    get = b"GET /v1.41/distribution/127.0.0.1:9/foo/json HTTP/1.1\r\nHost: docker\r\nConnection: close\r\n\r\n"
    assert "image.pull" in assert_refused(gw, get, client="reader")
    assert_refused(gw, get, "does not match", client="ops")  # ops may pull docker.io/library/* only


def test_a_service_rollback_is_refused_as_its_spec_is_not_in_the_body(gw):
    """Third red-team round: with rollback=previous dockerd ignores the body and applies the
    service's previous spec (host network, CAP_SYS_ADMIN, set by someone another rule allowed)."""
    clean = json.dumps({"Name": "svc", "TaskTemplate": {"ContainerSpec": {"Image": "busybox"}}}).encode()
    assert_refused(gw, post("/v1.41/services/svc/update?version=3&rollback=previous", clean), "service rollback",
                   "never allowed")
    # Without the rollback the same body passes the rule and reaches dockerd (no swarm here).
    status, body = gw.raw(post("/v1.41/services/svc/update?version=3", clean))
    assert status == 503 and not body["message"].startswith("portcullis"), (status, body)


def test_volume_binding_the_host_root_is_refused(gw):
    body = json.dumps({"Name": "rootvol", "Driver": "local",
                       "DriverOpts": {"type": "none", "o": "bind", "device": "/"}}).encode()
    assert_refused(gw, post("/volumes/create", body), "/")
    assert "rootvol" not in gw.daemon.cli("volume", "ls", "-q").stdout.split()


# Red-team findings (session 13), each a way around the rules that worked against this dockerd.

def _host_config(gw, name):
    return json.loads(gw.daemon.cli("inspect", name).stdout)[0]["HostConfig"]


def test_legacy_api_start_body_cannot_give_a_container_host_settings(gw):
    """Below API 1.24 dockerd applies a start body as the container's whole HostConfig; we do not
    read start bodies, so those versions are refused."""
    legacy = json.dumps({"NetworkMode": "host", "Binds": ["/:/host"]}).encode()
    try:
        # The premise, straight on dockerd's socket: the body is applied.
        assert gw.daemon.cli("create", "--name", "legacy-direct", "--network", "none", "busybox", "true").returncode == 0
        p = subprocess.run(["curl", "-sS", "--unix-socket", gw.daemon.sock, "-H", "Content-Type: application/json",
                            "--data-binary", legacy.decode(), "http://docker/v1.23/containers/legacy-direct/start"],
                           capture_output=True, text=True, timeout=60)
        assert p.returncode == 0, p.stderr
        assert _host_config(gw, "legacy-direct")["NetworkMode"] == "host", "dockerd no longer applies start bodies"
        # Through the gateway: refused, and the container keeps what create checked.
        rc, out, err = gw.docker("ops", "create", "--name", "legacy-start", "--network", "none", "busybox", "true")
        assert rc == 0, err
        assert_refused(gw, post("/v1.23/containers/legacy-start/start", legacy), "api version 1.23 is refused")
        hc = _host_config(gw, "legacy-start")
        assert (hc["NetworkMode"], hc["Binds"]) == ("none", None), hc
        # The docker CLI pinned to an old version hears why.
        env = dict(gw.env("ops"), DOCKER_API_VERSION="1.23")
        p = subprocess.run([DOCKER, "start", "legacy-start"], capture_output=True, text=True, timeout=60, env=env)
        assert p.returncode != 0 and "portcullis: Docker API version 1.23 is refused" in p.stderr, p.stderr
        assert gw.docker("ops", "start", "legacy-start")[0] == 0  # the CLI's own version is fine
    finally:
        gw.daemon.cli("rm", "-f", "legacy-direct", "legacy-start", check=False)


def test_local_volumes_with_relative_paths_or_kernel_filesystems_are_refused(gw):
    """The local driver mounts in dockerd's mount namespace, where "dev/vda" is the host's disk
    (relative to dockerd's working directory) and type proc is the host's /proc."""
    for opts, words in (({"type": "ext4", "device": "dev/vda"}, ["not an absolute path"]),
                        ({"type": "overlay", "device": "overlay", "o": "lowerdir=etc:root"}, ["not an absolute path"]),
                        ({"type": "proc", "device": "proc"}, ["type is proc", "kernel filesystem"])):
        body = json.dumps({"Name": "hostvol", "Driver": "local", "DriverOpts": opts}).encode()
        assert_refused(gw, post("/volumes/create", body), *words)
        mount = json.dumps({"Image": "busybox", "HostConfig": {"NetworkMode": "none", "Mounts": [
            {"Type": "volume", "Source": "hostvol2", "Target": "/h",
             "VolumeOptions": {"DriverConfig": {"Name": "local", "Options": opts}}}]}}).encode()
        assert_refused(gw, post("/containers/create?name=hostvol", mount), *words)
    volumes = gw.daemon.cli("volume", "ls", "-q").stdout.split()
    assert "hostvol" not in volumes and "hostvol2" not in volumes


def test_device_volumes_plugins_and_network_log_drivers_need_their_allow_names(gw):
    """Second red-team round: a disk filesystem volume on a device node inside bind_sources (a
    container there may mknod the host's disk), a volume driver named by a path (dockerd loads a
    legacy plugin from a .spec file the caller wrote), and a log driver that sends from the host's
    network (gelf to an address the caller chose)."""
    disk = json.dumps({"Name": "diskvol", "DriverOpts": {"type": "ext4", "device": os.path.join(gw.data, "disk")}}).encode()
    assert_refused(gw, post("/volumes/create", disk), "(add \"devices\" to allow)")
    plugin = json.dumps({"Name": "plugvol", "Driver": "../../../../tmp/evil"}).encode()
    assert_refused(gw, post("/volumes/create", plugin), "names a path, is never allowed")
    gelf = json.dumps({"Image": "busybox", "HostConfig": {"NetworkMode": "none", "LogConfig": {
        "Type": "gelf", "Config": {"gelf-address": "udp://127.0.0.1:12201"}}}}).encode()
    assert_refused(gw, post("/containers/create?name=gelf", gelf), "(add \"log_drivers\" to allow)")
    assert not {"diskvol", "plugvol"} & set(gw.daemon.cli("volume", "ls", "-q").stdout.split())


def test_a_swarm_default_log_driver_needs_log_drivers_too(gw):
    """TaskDefaults.LogDriver is the log driver of every service task that names none: set
    through swarm init or update, it would send every task's output from the host's network,
    where TaskTemplate.LogDriver needs log_drivers."""
    gelf = {"Name": "gelf", "Options": {"gelf-address": "udp://127.0.0.1:12201"}}
    init = json.dumps({"ListenAddr": "127.0.0.1:2377", "Spec": {"TaskDefaults": {"LogDriver": gelf}}}).encode()
    assert_refused(gw, post("/swarm/init", init), "spec.taskdefaults.logdriver", "(add \"log_drivers\" to allow)")
    update = json.dumps({"Name": "default", "taskdefaults": {"logdriver": gelf}}).encode()  # Go matches keys in any case
    assert_refused(gw, post("/v1.41/swarm/update?version=1", update), "taskdefaults.logdriver", "log_drivers")
    assert json.loads(gw.daemon.cli("info", "--format", "{{json .Swarm.LocalNodeState}}").stdout) == "inactive"
    # A host-only default passes the rule and reaches dockerd, which is no swarm manager here.
    local = json.dumps({"Name": "default", "TaskDefaults": {"LogDriver": {"Name": "json-file"}}}).encode()
    status, body = gw.raw(post("/v1.41/swarm/update?version=1", local))
    assert status == 503 and not body["message"].startswith("portcullis"), (status, body)


def _plugin_tarball(marker):
    """A managed plugin whose config.json binds the host's / and writes `marker` there when it runs."""
    rootfs = {"bin/busybox": open(BUSYBOX, "rb").read()}
    config = {"description": "rt", "documentation": "x", "interface": {"types": ["docker.volumedriver/1.0"],
              "socket": "p.sock"}, "entrypoint": ["/bin/busybox", "sh", "-c", f"/bin/busybox touch /host{marker}"],
              "network": {"type": "host"}, "linux": {"capabilities": ["CAP_SYS_ADMIN"]},
              "mounts": [{"source": "/", "destination": "/host", "type": "bind", "options": ["rbind", "rw"]}]}
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w") as tar:
        for name, data in [("config.json", json.dumps(config).encode())] + [("rootfs/" + k, v) for k, v in rootfs.items()]:
            info = tarfile.TarInfo(name)
            info.size, info.mode = len(data), 0o755
            tar.addfile(info, io.BytesIO(data))
        for d in ("rootfs/host", "rootfs/run/docker/plugins"):
            info = tarfile.TarInfo(d)
            info.type, info.mode = tarfile.DIRTYPE, 0o755
            tar.addfile(info)
    return out.getvalue()


def test_a_plugin_asks_for_its_own_privileges_so_installing_or_enabling_one_needs_plugins(gw):
    """Third red-team round: a rule with actions ["*"] and no allow let /plugins/create take a
    tarball whose config.json binds the host's / read-write, and /plugins/NAME/enable then ran its
    entrypoint as root on the host."""
    marker = os.path.join(gw.dir, "plugin-ran")
    tar = _plugin_tarball(marker)
    assert_refused(gw, post("/v1.41/plugins/create?name=rtplug:latest", tar, content_type="application/x-tar"),
                   "plugin.create", "(add \"plugins\" to allow)", client="admin", early=True)
    assert_refused(gw, post("/v1.41/plugins/rtplug:latest/enable?timeout=5", b"", content_type=None),
                   "(add \"plugins\" to allow)", client="admin")
    assert_refused(gw, post("/v1.41/plugins/pull?remote=evil.example/plug:1", b"[]"), "plugins", client="admin")
    assert "rtplug" not in gw.daemon.cli("plugin", "ls").stdout
    assert not os.path.exists(marker)
    # What admins may still do with plugins: list them.
    assert gw.docker("admin", "plugin", "ls")[0] == 0


def test_networks_on_the_hosts_own_interfaces_need_host_network(gw):
    """Third red-team round: network.create was not inspected, and a macvlan network on the host's
    interface put containers on the host's physical network, past its nftables, under a rule with
    actions ["*"] and no host_network."""
    parent = sorted(os.listdir("/sys/class/net"))[0]
    for body, words in (({"Name": "rtmac", "Driver": "macvlan", "Options": {"parent": parent}}, ["host_network"]),
                        ({"Name": "rtipv", "Driver": "ipvlan", "Options": {"parent": parent}}, ["host_network"]),
                        ({"Name": "rtbr", "Options": {"com.docker.network.bridge.name": parent}}, ["host_network"]),
                        ({"Name": "rtplug", "Driver": "weave"}, ["network_plugins"]),
                        ({"Name": "rtpath", "Driver": "../../../tmp/evil"}, ["names a path"])):
        assert_refused(gw, post("/v1.41/networks/create", json.dumps(body).encode()), *words, client="admin")
    assert not {"rtmac", "rtipv", "rtbr", "rtplug", "rtpath"} & set(gw.daemon.cli("network", "ls", "--format",
                                                                                   "{{.Name}}").stdout.split())
    # A body that passes reaches dockerd, which has its own say (one null network only).
    status, body = gw.raw(post("/v1.41/networks/create", json.dumps({"Name": "rtnull", "Driver": "null"}).encode()),
                          client="admin")
    assert "only one instance" in body["message"] and not body["message"].startswith("portcullis"), (status, body)


def test_form_fields_cannot_hide_behind_unicode_spaces_or_multipart(gw):
    """dockerd reads form fields ahead of the query (/images/create: a pull becomes an import) and
    multipart fields where the query is silent (/build: networkmode=host)."""
    before = gw.daemon.cli("image", "inspect", "busybox", "--format", "{{.Id}}").stdout
    form = b"fromImage=&fromSrc=http://127.0.0.1:9/evil.tar&repo=busybox&tag=latest"
    for ct in ("application/x-www-form-urlencoded\u00a0", "\u00a0application/x-www-form-urlencoded",
               "appl\u0130cation/x-www-form-urlencoded"):
        data = post("/images/create?fromImage=busybox&tag=latest", b"", content_type=None,
                    headers=["Content-Length: %d" % len(form)])
        data = data.replace(b"Host: docker\r\n", b"Host: docker\r\nContent-Type: " + ct.encode() + b"\r\n") + form
        assert_refused(gw, data, "printable ascii")
    multipart = (b"--XB\r\nContent-Disposition: form-data; name=\"networkmode\"\r\n\r\nhost\r\n"
                 b"--XB\r\nContent-Disposition: form-data; name=\"remote\"\r\n\r\nhttp://127.0.0.1:9/Dockerfile\r\n--XB--\r\n")
    assert_refused(gw, post("/build", multipart, content_type="multipart/form-data; boundary=XB"), "multipart")
    assert gw.daemon.cli("image", "inspect", "busybox", "--format", "{{.Id}}").stdout == before


def test_reader_cannot_create_even_with_a_clean_body(gw):
    msg = assert_refused(gw, post("/containers/create?name=reader", allowed_body("x")), client="reader")
    assert "container.create" in msg


def test_access_log_names_the_docker_action(gw):
    gw.docker("reader", "ps")
    assert_refused(gw, post("/containers/create?name=reader", allowed_body("x")), client="reader")

    def actions():
        return {line.get("docker.action") for line in gw.proxy.access_log() if line.get("listener.name") == "docker"}
    # A request's line is written after its response is sent, so the client can be done first.
    assert wait_until(lambda: {"read", "container.create"} <= actions(), 15), actions()


# ---------------------------------------------------------------------------------------------
# The shipped config and `portcullis check`


def test_check_warns_about_renaming_actions_with_images_and_an_open_socket(tmp_path):
    d = str(tmp_path)
    pki = Pki(d)
    sock = os.path.join(d, "open.sock")
    s = socket.socket(socket.AF_UNIX)
    s.bind(sock)
    os.chmod(sock, 0o666)
    cfg = os.path.join(d, "c.yaml")
    with open(cfg, "w") as f:
        f.write(docker_config(pki, sock, d).replace("swarm.update]", "swarm.update, image.tag]"))
    p = subprocess.run([BIN, "check", "-c", cfg], capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stderr
    assert "warning:" in p.stderr and "image.tag" in p.stderr and "ops-run-official" in p.stderr, p.stderr
    assert f"socket {sock} is mode 0666" in p.stderr, p.stderr
    # A family, `*` or an empty list grants container.commit / image.tag as surely as the name does.
    listed = "actions: [read, " + CONTAINER_ACTIONS + ", image.pull, volume.create, service.create, service.update, swarm.init, swarm.update]"
    for actions in ('[read, "container.*", image.pull]', '["*"]', "[]"):
        with open(cfg, "w") as f:
            f.write(docker_config(pki, sock, d).replace(listed, "actions: " + actions))
        p = subprocess.run([BIN, "check", "-c", cfg], capture_output=True, text=True, timeout=60)
        assert p.returncode == 0, p.stderr
        assert "ops-run-official" in p.stderr and "container.commit" in p.stderr, (actions, p.stderr)
    os.chmod(sock, 0o600)
    with open(cfg, "w") as f:
        f.write(docker_config(pki, sock, d))
    p = subprocess.run([BIN, "check", "-c", cfg], capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stderr
    assert "warning" not in p.stderr, p.stderr
    s.close()


ROOT = os.path.join(os.path.dirname(__file__), "../..")


def test_shipped_gateway_config_passes_check_and_keeps_2375_closed(tmp_path):
    # configs/docker-gateway.yaml with certificates where its relative paths point.
    d = str(tmp_path)
    os.makedirs(os.path.join(d, "configs"))
    shutil.copy(os.path.join(ROOT, "configs/docker-gateway.yaml"), os.path.join(d, "configs"))
    pki = os.path.join(d, "pki")
    for args in (["certs", "init", "--dir", pki],
                 ["certs", "issue", "--ca", pki, "--out", pki, "--name", "docker-gateway", "--server",
                  "--ip", "127.0.0.1"]):
        p = subprocess.run([BIN, *args], capture_output=True, text=True, timeout=60)
        assert p.returncode == 0, p.stderr
    cfg = os.path.join(d, "configs", "docker-gateway.yaml")
    p = subprocess.run([BIN, "check", "-c", cfg], capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stderr
    assert "image.tag" not in p.stderr and "image.build" not in p.stderr and "container.commit" not in p.stderr, p.stderr
    plan = subprocess.run([BIN, "firewall", "plan", "-c", cfg], capture_output=True, text=True, timeout=60)
    assert plan.returncode == 0, plan.stderr
    # Only the listed CIDRs reach 2376; everything else addressed to the host, 2375 included, is dropped.
    assert "10.20.0.0/16 . tcp . 2376" in plan.stdout
    assert "2375" not in plan.stdout
    allow_chain = plan.stdout.split("chain ingress_allow {")[1].split("}")[0]
    assert allow_chain.strip().splitlines()[-1].strip() == "counter drop"


def test_systemd_unit_verifies(tmp_path):
    # systemd-analyze checks every directive and that ExecStart* binaries exist: point them at ours.
    unit = open(os.path.join(ROOT, "configs/systemd/portcullis-docker-gateway.service")).read()
    assert "ExecStartPre=/usr/local/bin/portcullis firewall apply" in unit
    for hardening in ("NoNewPrivileges=yes", "ProtectSystem=strict", "CapabilityBoundingSet=CAP_NET_ADMIN",
                      "--no-firewall"):
        assert hardening in unit
    path = os.path.join(str(tmp_path), "portcullis-docker-gateway.service")
    with open(path, "w") as f:
        f.write(unit.replace("/usr/local/bin/portcullis", os.path.abspath(BIN)))
    analyze = shutil.which("systemd-analyze")
    assert analyze, "systemd-analyze is missing (Debian package systemd)"
    p = subprocess.run([analyze, "verify", path], capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    complaints = [line for line in p.stderr.splitlines() if "portcullis-docker-gateway" in line]
    assert complaints == [], p.stderr
