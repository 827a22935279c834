"""Replays the example sessions in examples/ against a real batond and checks every
request and reply against the JSON Schemas in schema/.

This keeps PROTOCOL.md, the schemas, the examples and the server saying the same thing.
Run with pytest; BATOND names the binary (default: the debug build).
"""
import json
import os
import pathlib
import re
import socket
import subprocess
import tempfile
import time

import jsonschema
import pytest

HERE = pathlib.Path(__file__).resolve().parent
ROOT = HERE.parent
BATOND = os.environ.get("BATOND", str(ROOT / ".build" / "debug" / "batond"))
SCHEMAS = {path.name: json.loads(path.read_text()) for path in (HERE / "schema").glob("*.json")}
EXAMPLES = sorted((HERE / "examples").glob("*.txt"))


@pytest.fixture
def server():
    directory = tempfile.mkdtemp(prefix="baton-protocol-")
    socket_path = os.path.join(directory, "b.sock")
    process = subprocess.Popen(
        [BATOND, "--socket", socket_path, "--store", os.path.join(directory, "store.sqlite")],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    deadline = time.monotonic() + 20
    while not os.path.exists(socket_path):
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            pytest.fail("batond did not start: " + process.stderr.read().decode())
        time.sleep(0.02)
    yield socket_path
    process.terminate()
    assert process.wait(timeout=20) == 0, "batond did not stop cleanly"


def validator(name):
    return jsonschema.Draft202012Validator(SCHEMAS[name])


def match(expected, actual, captured, where):
    """Structural match: "$name" captures or compares, "*" matches anything."""
    if isinstance(expected, str) and expected == "*":
        return
    if isinstance(expected, str) and expected.startswith("$"):
        name = expected[1:]
        if name in captured:
            assert actual == captured[name], f"{where}: expected {name}={captured[name]!r}, got {actual!r}"
        else:
            captured[name] = actual
        return
    if isinstance(expected, dict):
        assert isinstance(actual, dict), f"{where}: expected an object, got {actual!r}"
        assert set(expected) == set(actual), f"{where}: fields {sorted(actual)} != {sorted(expected)}"
        for key in expected:
            match(expected[key], actual[key], captured, f"{where}.{key}")
        return
    if isinstance(expected, list):
        assert isinstance(actual, list) and len(actual) == len(expected), f"{where}: {actual!r} != {expected!r}"
        for index, (want, got) in enumerate(zip(expected, actual)):
            match(want, got, captured, f"{where}[{index}]")
        return
    assert expected == actual and type(expected) is type(actual), f"{where}: {actual!r} != {expected!r}"


def steps(path):
    """The (request line, expected reply) pairs of an example file."""
    pending = None
    for number, line in enumerate(path.read_text().splitlines(), 1):
        if line.startswith("> "):
            assert pending is None, f"{path.name}:{number}: two requests in a row"
            pending = line[2:]
        elif line.startswith("< "):
            assert pending is not None, f"{path.name}:{number}: a reply without a request"
            yield number, pending, json.loads(line[2:])
            pending = None
        else:
            assert not line.strip() or line.startswith("#"), f"{path.name}:{number}: not a step: {line}"


def test_schemas_are_valid():
    assert len(SCHEMAS) >= 37
    for name, schema in SCHEMAS.items():
        jsonschema.Draft202012Validator.check_schema(schema)
        assert schema["$id"].endswith("/" + name)


@pytest.mark.parametrize("example", EXAMPLES, ids=lambda path: path.stem)
def test_example(example, server):
    connection = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    connection.settimeout(10)
    connection.connect(server)
    stream = connection.makefile("rwb")
    captured = {}
    for number, request, expected in steps(example):
        line = re.sub(r"\$(\w+)", lambda m: json.dumps(captured[m.group(1)]), request)
        try:
            sent = json.loads(line)
        except json.JSONDecodeError:
            sent = None
        if isinstance(sent, dict) and f"request.{sent.get('op')}.json" in SCHEMAS:
            errors = list(validator(f"request.{sent['op']}.json").iter_errors(sent))
            if expected.get("ok"):
                assert not errors, f"{example.name}:{number}: the request breaks its schema: {errors[0].message}"
        stream.write(line.encode() + b"\n")
        stream.flush()
        reply = json.loads(stream.readline())
        schema = f"reply.{sent['op']}.json" if reply.get("ok") else "error.json"
        errors = list(validator(schema).iter_errors(reply))
        assert not errors, f"{example.name}:{number}: the reply breaks {schema}: {errors[0].message}\n{reply}"
        match(expected, reply, captured, f"{example.name}:{number}")
    connection.close()
