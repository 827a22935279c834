"""Starts the real batond for each test, with the protocol's shared test helper."""
import pathlib
import sys

import pytest

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[3] / "protocol"))

from conformance import Batond  # noqa: E402


@pytest.fixture
def batond():
    server = Batond()
    yield server
    server.stop()
