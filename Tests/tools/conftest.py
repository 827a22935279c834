"""End-to-end tests of batond's HTTP listener (metrics, the web console) and `baton top`,
against the real binaries of the debug build (BATOND and BATON name them)."""
import pathlib
import re
import sys
import time

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "protocol"))

from conformance import Batond  # noqa: E402


@pytest.fixture
def batond():
    # The old name of --http-listen, which stays an alias.
    server = Batond(["--metrics-listen", "127.0.0.1:0"])
    yield server
    server.stop()


def http_port(batond):
    """The port the kernel chose for `--http-listen 127.0.0.1:0`, from batond's log."""
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        found = re.search(r"metrics served over HTTP .*127\.0\.0\.1:(\d+)", batond.log())
        if found:
            return int(found.group(1))
        time.sleep(0.05)
    raise AssertionError("batond did not say where it serves HTTP")
