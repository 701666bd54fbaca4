"""The container image: scripts/image.sh builds it offline (FROM scratch: the binary, the shared
libraries ldd lists and the loader) against a private real dockerd (dockerd.py), and the image
runs `portcullis version` and the demo with no network but loopback."""
import json
import os
import subprocess

import pytest

from dockerd import DOCKER, start_dockerd
from harness import BIN

ROOT = os.path.join(os.path.dirname(__file__), "../..")
TAG = "portcullis:dev"


@pytest.fixture(scope="module")
def image():
    d = start_dockerd()
    try:
        p = subprocess.run(["bash", os.path.join(ROOT, "scripts/image.sh"), BIN, TAG], capture_output=True,
                           text=True, timeout=600, env=d.env(DOCKER=DOCKER))
        assert p.returncode == 0, p.stdout + p.stderr
        assert p.stdout.startswith(f"built {TAG} from {BIN}"), p.stdout
        yield d
    finally:
        d.stop()


def run(d, *args, timeout=180):
    return d.cli("run", "--rm", "--network", "none", *args, timeout=timeout, check=False)


def test_image_is_from_scratch_with_the_binary_as_entrypoint(image):
    info = json.loads(image.cli("image", "inspect", TAG).stdout)[0]
    assert info["Config"]["Entrypoint"] == ["/usr/local/bin/portcullis"]
    assert len(info["RootFS"]["Layers"]) == 1  # FROM scratch: our one layer, no base image
    # Only what the binary needs: no shell to exec into.
    p = image.cli("run", "--rm", "--network", "none", "--entrypoint", "/bin/sh", TAG, "-c", "true", check=False)
    assert p.returncode != 0


def test_version_in_the_image_matches_the_binary(image):
    expected = subprocess.run([BIN, "version"], capture_output=True, text=True, timeout=30).stdout
    assert expected.startswith("portcullis ")
    p = run(image, TAG, "version")
    assert p.returncode == 0, p.stderr
    assert p.stdout == expected
    # As the sidecar runs: UID 1337, read-only root filesystem, no capabilities.
    p = run(image, "--user", "1337:1337", "--read-only", "--cap-drop", "ALL", "--security-opt", "no-new-privileges",
            TAG, "version")
    assert p.returncode == 0, p.stderr
    assert p.stdout == expected


def test_demo_runs_in_the_image(image):
    p = run(image, TAG, "demo")
    assert p.returncode == 0, p.stdout + p.stderr
    out = p.stdout
    # The demo checks each answer against its policy and says so; two of them, to be sure.
    assert "All requests behaved as the policy says." in out
    assert "frontend: GET /api/v1/products/42\n   -> 200" in out
    assert "intruder: GET /api/v1/products/42\n   -> 403" in out
