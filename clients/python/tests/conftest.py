"""Starts the real batond for each test. BATOND names the binary (default: the debug build)."""
import os
import pathlib
import subprocess
import sys
import tempfile
import time
from typing import List, Optional

import pytest

HERE = pathlib.Path(__file__).resolve().parent
ROOT = HERE.parents[2]
sys.path.insert(0, str(HERE.parent / "src"))
sys.path.insert(0, str(ROOT / "protocol"))

BATOND = os.environ.get("BATOND", str(ROOT / ".build" / "debug" / "batond"))


class Batond:
    """A batond process on a private socket and store, which a test may restart."""

    def __init__(self, flags: Optional[List[str]] = None) -> None:
        self.directory = tempfile.mkdtemp(prefix="baton-python-")
        self.socket_path = os.path.join(self.directory, "b.sock")
        self.flags = flags or []
        self.process: Optional[subprocess.Popen] = None
        self.start()

    def start(self) -> None:
        self.process = subprocess.Popen(
            [BATOND, "--socket", self.socket_path, "--store", os.path.join(self.directory, "store.sqlite"), *self.flags],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        deadline = time.monotonic() + 20
        while not os.path.exists(self.socket_path):
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.process.kill()
                raise RuntimeError("batond did not start: " + self.process.stderr.read().decode())
            time.sleep(0.02)

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            assert self.process.wait(timeout=20) == 0, "batond did not stop cleanly"


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
