"""Shared pytest hooks for the integration tests."""
import os
import shutil

import pytest

import harness
from harness import Proxy


def pytest_sessionfinish(session, exitstatus):
    """The scratch directories (configs, keys, logs) go when every test passed; a failure keeps
    them for a look at proxy.stderr, as does PORTCULLIS_KEEP_TEST_DIRS=1. A suite run made
    about 250 of them, each with private keys, and left them all in /tmp."""
    if exitstatus != 0 or os.environ.get("PORTCULLIS_KEEP_TEST_DIRS") == "1":
        return
    for d in harness.made_dirs:
        shutil.rmtree(d, ignore_errors=True)


@pytest.fixture(autouse=True)
def _no_proxy_outlives_its_test():
    """A test that fails before it stops its proxy would leave it running, holding its ports
    (and the default admin port) for the tests after it: kill what the test itself started.
    Proxies of module-scoped fixtures are set up before this fixture, so they are spared."""
    before = len(Proxy.started)
    yield
    for p in Proxy.started[before:]:
        if p.proc.poll() is None:
            p.proc.kill()
            p.proc.wait()
    del Proxy.started[before:]
