"""Replays the protocol's conformance vectors through this client's own line channel."""
import conformance
import pytest
from conformance import Batond

from baton import LineChannel


class VectorConnection:
    def __init__(self, path):
        self.channel = LineChannel(path)

    def send_line(self, line):
        self.channel.send_line(line)

    def read_reply(self, timeout):
        return self.channel.read_reply(timeout)

    def close(self):
        self.channel.close()


@pytest.mark.parametrize("vector", conformance.all_vectors(), ids=lambda vector: vector.name)
def test_vector(vector):
    server = Batond(vector.flags)
    try:
        conformance.replay(vector, lambda: VectorConnection(server.socket_path))
    finally:
        server.stop()
