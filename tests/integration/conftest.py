"""Shared pytest hooks for the integration tests."""
import pytest

from harness import Proxy


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
