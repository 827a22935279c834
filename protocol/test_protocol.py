"""Replays the conformance vectors in vectors/ against a real batond over plain sockets,
and checks every request and reply against the JSON Schemas in schema/.

This keeps PROTOCOL.md, the schemas, the vectors and the server saying the same thing.
Run with pytest; BATOND names the binary (default: the debug build).
"""
import json
import pathlib
import socket
import sys

import jsonschema
import pytest

HERE = pathlib.Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import conformance  # noqa: E402

SCHEMAS = {path.name: json.loads(path.read_text()) for path in (HERE / "schema").glob("*.json")}


class SocketConnection:
    """A bare unix socket, read a line at a time: what any client starts from."""

    def __init__(self, path):
        self.socket = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.socket.connect(path)
        self.stream = self.socket.makefile("rwb")

    def send_line(self, line):
        self.stream.write(line.encode() + b"\n")
        self.stream.flush()

    def read_reply(self, timeout):
        self.socket.settimeout(timeout)
        line = self.stream.readline()
        return json.loads(line) if line else None

    def close(self):
        self.stream.close()
        self.socket.close()


def check_schemas(request_line, reply, where):
    try:
        request = json.loads(request_line)
    except ValueError:
        request = None
    op = request.get("op") if isinstance(request, dict) else None
    if reply.get("ok") and f"request.{op}.json" in SCHEMAS:
        errors = list(jsonschema.Draft202012Validator(SCHEMAS[f"request.{op}.json"]).iter_errors(request))
        assert not errors, f"{where}: the request breaks its schema: {errors[0].message}"
    schema = f"reply.{op}.json" if reply.get("ok") else "error.json"
    errors = list(jsonschema.Draft202012Validator(SCHEMAS[schema]).iter_errors(reply))
    assert not errors, f"{where}: the reply breaks {schema}: {errors[0].message}\n{reply}"


def test_schemas_are_valid():
    assert len(SCHEMAS) >= 41
    for name, schema in SCHEMAS.items():
        jsonschema.Draft202012Validator.check_schema(schema)
        assert schema["$id"].endswith("/" + name)


def test_vectors_cover_every_op():
    sent_ops = set()
    for vector in conformance.all_vectors():
        for step in vector.steps:
            if step.kind == "send":
                try:
                    sent_ops.add(json.loads(conformance.substitute(step.text, _Anything())).get("op"))
                except (ValueError, AttributeError):
                    pass
    documented = {name[len("request."):-len(".json")] for name in SCHEMAS if name.startswith("request.")}
    assert documented <= sent_ops, f"ops no vector sends: {sorted(documented - sent_ops)}"


def test_vectors_cover_every_error_code_a_client_can_provoke():
    # `shutting_down`, `storage_full`, `too_many_connections`, `forbidden` and `internal` need a server
    # that is stopping, on a full disk, at its connection limit, under an access policy with
    # a second user, or whose store failed, which a vector cannot arrange; the Swift
    # integration tests provoke each of them.
    codes = set(SCHEMAS["error.json"]["properties"]["error"]["properties"]["code"]["description"].split(";")[0].split(", "))
    expected = set()
    for vector in conformance.all_vectors():
        for step in vector.steps:
            if step.kind == "expect" and step.expected.get("ok") is False:
                expected.add(step.expected["error"]["code"])
    assert codes - {"shutting_down", "storage_full", "too_many_connections", "forbidden", "internal"} <= expected, f"codes no vector expects: {sorted(codes - expected)}"


class _Anything(dict):
    def __missing__(self, key):
        return 1


@pytest.mark.parametrize("vector", conformance.all_vectors(), ids=lambda vector: vector.name)
def test_vector(vector):
    server = conformance.Batond(vector.flags)
    try:
        conformance.replay(vector, lambda: SocketConnection(server.socket_path), check=check_schemas)
    finally:
        server.stop()
