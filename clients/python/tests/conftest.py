"""Starts the real batond for each test, with the protocol's shared test helper."""
import pathlib
import sys

import pytest

HERE = pathlib.Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "src"))
sys.path.insert(0, str(HERE.parents[2] / "protocol"))

from conformance import Batond  # noqa: E402


@pytest.fixture
def batond():
    server = Batond()
    yield server
    server.stop()


@pytest.fixture
def client(batond):
    from baton import Client

    with Client(batond.socket_path, timeout=10, reconnect_timeout=10) as connected:
        yield connected
