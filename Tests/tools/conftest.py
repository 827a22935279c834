"""End-to-end tests of batond's HTTP metrics endpoint and `baton top`, against the real
binaries of the debug build (BATOND and BATON name them)."""
import pathlib
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "protocol"))

from conformance import Batond  # noqa: E402


@pytest.fixture
def batond():
    server = Batond(["--metrics-listen", "127.0.0.1:0"])
    yield server
    server.stop()
