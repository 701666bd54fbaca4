"""A private, real dockerd for integration tests (Debian's docker.io), and the docker CLI to talk
to it.

    from dockerd import Dockerd, dockerd   # `dockerd` is a module-scoped pytest fixture

    def test_something(dockerd):
        dockerd.cli("run", "--rm", "--network", "none", "busybox", "echo", "hi")

The daemon gets its own --data-root, --exec-root, socket and pidfile under a fresh temporary
directory, no iptables and no bridge, so several can run next to each other and nothing on the
host changes. It starts its own containerd (under the exec-root). Images are made without a
registry: `docker import` of a rootfs holding Debian's static busybox, tagged `busybox:latest`
(docker.io/library/busybox:latest, an "official" name) and `evil.example/tool:1`.

Under CI (the CI variable set) a daemon that cannot start fails the test; elsewhere it skips.
"""
import ctypes
import os
import re
import shutil
import signal
import subprocess
import tempfile
import time

import pytest

DOCKERD = os.environ.get("DOCKERD_BIN", "/usr/sbin/dockerd")
DOCKER = os.environ.get("DOCKER_BIN", "/usr/local/bin/docker" if os.path.exists("/usr/local/bin/docker")
                        else "docker")
BUSYBOX = "/bin/busybox"
BUSYBOX_APPLETS = ("sh", "echo", "cat", "ls", "sleep", "id", "true", "false", "env", "head", "wc", "mount")
OFFICIAL_IMAGE = "busybox:latest"
UNOFFICIAL_IMAGE = "evil.example/tool:1"


class DockerdError(RuntimeError):
    pass


def _die_with_parent():
    # A test run killed before its teardown (ctest timeout, ^C twice) must not leave dockerd
    # behind: it gets SIGTERM when the process that started it dies (PR_SET_PDEATHSIG).
    ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM, 0, 0, 0)


class Dockerd:
    """One private dockerd. `sock` is its unix socket path, `host` the DOCKER_HOST for it."""

    def __init__(self, directory=None, start_timeout=90):
        if os.geteuid() != 0:
            raise DockerdError("dockerd needs root (run the tests as root)")
        for path in (DOCKERD, BUSYBOX):
            if not os.path.exists(path):
                raise DockerdError(f"{path} is missing (scripts/setup.sh installs docker.io and busybox-static)")
        if shutil.which(DOCKER) is None:
            raise DockerdError(f"the docker CLI ({DOCKER}) is missing")
        # Short paths: containerd puts unix sockets under the exec-root (108-byte sun_path limit).
        self.dir = directory or tempfile.mkdtemp(prefix="pcd-", dir="/tmp")
        self.sock = os.path.join(self.dir, "docker.sock")
        self.host = f"unix://{self.sock}"
        self.pidfile = os.path.join(self.dir, "docker.pid")
        self.log_path = os.path.join(self.dir, "dockerd.log")
        # containerd namespaces must match ^[A-Za-z0-9]+(?:[._-][A-Za-z0-9]+)*$, and mkdtemp's
        # random part may end in "_": keep letters and digits only.
        ns = "pc" + re.sub(r"[^A-Za-z0-9]", "", os.path.basename(self.dir))
        self.proc = subprocess.Popen(
            [DOCKERD, "--data-root", os.path.join(self.dir, "data"), "--exec-root", os.path.join(self.dir, "exec"),
             "-H", self.host, "--pidfile", self.pidfile, "--iptables=false", "--ip6tables=false",
             "--bridge=none", "--containerd-namespace", ns, "--containerd-plugins-namespace", ns + "p",
             "--shutdown-timeout", "5"],
            stdout=open(self.log_path, "ab"), stderr=subprocess.STDOUT, start_new_session=True,
            preexec_fn=_die_with_parent)
        try:
            self._wait_ready(start_timeout)
        except BaseException:
            self.stop()
            raise

    def _wait_ready(self, timeout):
        deadline = time.time() + timeout
        last = ""
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise DockerdError(f"dockerd exited with {self.proc.returncode}:\n{self.log_tail()}")
            p = subprocess.run([DOCKER, "-H", self.host, "version", "--format", "{{.Server.Version}}"],
                               capture_output=True, text=True, timeout=30, env=self.env())
            if p.returncode == 0:
                self.server_version = p.stdout.strip()
                return
            last = p.stderr
            time.sleep(0.5)
        raise DockerdError(f"dockerd not ready after {timeout} s: {last}\n{self.log_tail()}")

    def log_tail(self, n=30):
        try:
            with open(self.log_path, "rb") as f:
                return "\n".join(f.read().decode(errors="replace").splitlines()[-n:])
        except OSError:
            return ""

    def env(self, **extra):
        """Environment for the docker CLI talking straight to this daemon (no TLS, own config dir)."""
        e = {k: v for k, v in os.environ.items() if not k.startswith("DOCKER_")}
        e["DOCKER_HOST"] = self.host
        e["DOCKER_CONFIG"] = os.path.join(self.dir, "cli-config")
        e.update(extra)
        return e

    def cli(self, *args, timeout=120, check=True, input=None):
        """Runs `docker ARGS` directly against the daemon; returns the CompletedProcess (text)."""
        p = subprocess.run([DOCKER, *args], capture_output=True, text=True, timeout=timeout, env=self.env(),
                           input=input)
        if check and p.returncode != 0:
            raise DockerdError(f"docker {' '.join(args)} exited {p.returncode}: {p.stderr}")
        return p

    def import_busybox(self, tags=(OFFICIAL_IMAGE, UNOFFICIAL_IMAGE)):
        """Imports a static-busybox rootfs under the first tag and adds the others; returns its ID."""
        root = os.path.join(self.dir, "rootfs")
        for sub in ("bin", "tmp", "etc", "proc", "sys", "dev"):
            os.makedirs(os.path.join(root, sub), exist_ok=True)
        shutil.copy2(BUSYBOX, os.path.join(root, "bin", "busybox"))
        for applet in BUSYBOX_APPLETS:
            link = os.path.join(root, "bin", applet)
            if not os.path.lexists(link):
                os.symlink("busybox", link)
        tar = os.path.join(self.dir, "rootfs.tar")
        subprocess.run(["tar", "-C", root, "-cf", tar, "."], check=True, timeout=60)
        image_id = self.cli("import", "-c", 'CMD ["/bin/sh"]', tar, tags[0]).stdout.strip()
        for tag in tags[1:]:
            self.cli("tag", tags[0], tag)
        return image_id

    def stop(self, timeout=30):
        """SIGTERM (dockerd stops its containers and its containerd), then SIGKILL the process
        group; unmounts whatever is left under the directory and removes it."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                pass
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            pass
        self._kill_leftover_shims()
        self._unmount_leftovers()
        shutil.rmtree(self.dir, ignore_errors=True)

    def _kill_leftover_shims(self):
        # containerd-shim processes run in their own sessions; only ours name our exec-root.
        mark = os.path.join(self.dir, "exec").encode()
        for pid in os.listdir("/proc"):
            if not pid.isdigit():
                continue
            try:
                with open(f"/proc/{pid}/cmdline", "rb") as f:
                    cmd = f.read()
            except OSError:
                continue
            if b"containerd-shim" in cmd and mark in cmd:
                try:
                    os.kill(int(pid), signal.SIGKILL)
                except ProcessLookupError:
                    pass

    def _unmount_leftovers(self):
        with open("/proc/self/mountinfo") as f:
            points = [line.split()[4] for line in f]
        for point in sorted((p for p in points if p.startswith(self.dir + "/")), key=len, reverse=True):
            subprocess.run(["umount", "-l", point], capture_output=True, timeout=30)


def start_dockerd(**kw):
    """A started daemon with the busybox images, or a skip (a failure under CI)."""
    try:
        d = Dockerd(**kw)
    except (DockerdError, OSError, subprocess.SubprocessError) as e:
        if os.environ.get("CI"):
            pytest.fail(f"cannot start a private dockerd: {e}")
        pytest.skip(f"cannot start a private dockerd: {e}")
    try:
        d.image_id = d.import_busybox()
    except BaseException:
        d.stop()
        raise
    return d


@pytest.fixture(scope="module")
def dockerd():
    d = start_dockerd()
    yield d
    d.stop()
