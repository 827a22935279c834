"""Reads and replays the conformance vectors in vectors/ (format: vectors/README.md).

Standard library only, so that any Python test suite can use it: the caller supplies the
transport (how to open a connection, send a line, read a reply), this module supplies the
steps, the placeholders and the matching.
"""
import json
import os
import pathlib
import re
import socket
import subprocess
import tempfile
import time
import urllib.parse
import uuid
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional, Protocol

HERE = pathlib.Path(__file__).resolve().parent
VECTORS = HERE / "vectors"
BATOND = os.environ.get("BATOND", str(HERE.parent / ".build" / "debug" / "batond"))
REPLY_TIMEOUT = 10.0

_STEP = re.compile(r"^(?:([a-z]+))?([<>]) (.*)$")


@dataclass
class Step:
    line: int
    kind: str  # "send", "expect", "sleep", "closed"
    connection: str = "a"
    text: str = ""
    expected: Any = None
    milliseconds: int = 0


@dataclass
class Vector:
    path: pathlib.Path
    flags: List[str] = field(default_factory=list)
    steps: List[Step] = field(default_factory=list)

    @property
    def name(self) -> str:
        return self.path.stem


def all_vectors() -> List[Vector]:
    return [load(path) for path in sorted(VECTORS.glob("*.txt"))]


def load(path: pathlib.Path) -> Vector:
    vector = Vector(path)
    for number, line in enumerate(path.read_text().splitlines(), 1):
        where = f"{path.name}:{number}"
        if not line.strip() or line.startswith("#"):
            continue
        if line.startswith("! "):
            assert not vector.steps, f"{where}: flags come before the first step"
            vector.flags += line[2:].split()
        elif line.startswith("= sleep "):
            vector.steps.append(Step(number, "sleep", milliseconds=int(line[len("= sleep "):])))
        elif line == "= closed" or line.startswith("= closed "):
            vector.steps.append(Step(number, "closed", connection=line[len("= closed"):].strip() or "a"))
        else:
            found = _STEP.match(line)
            assert found, f"{where}: not a step: {line[:80]}"
            connection, direction, text = found.group(1) or "a", found.group(2), found.group(3)
            if direction == ">":
                vector.steps.append(Step(number, "send", connection, text=text))
            else:
                vector.steps.append(Step(number, "expect", connection, expected=json.loads(text)))
    return vector


def documented_names(heading: str) -> set:
    """The backquoted first cells of the table under `### heading` in PROTOCOL.md: the
    lists every client keeps a copy of (ops safe to resend, codes that end a lease)."""
    lines = (HERE / "PROTOCOL.md").read_text().split("\n")
    start = lines.index("### " + heading)
    names = set()
    for line in lines[start + 1:]:
        if line.startswith("#"):
            break
        if line.startswith("| `"):
            names.add(line[3:].split("`")[0])
    return names


def substitute(text: str, captured: Dict[str, Any]) -> str:
    """Replaces each unquoted $name in a request line with its captured value's JSON."""
    return re.sub(r"\$(\w+)", lambda found: json.dumps(captured[found.group(1)]), text)


def match(expected: Any, actual: Any, captured: Dict[str, Any], where: str) -> None:
    """Raises AssertionError unless `actual` matches `expected` (placeholders included)."""
    if expected == "*":
        return
    if isinstance(expected, str) and expected.startswith("$"):
        name = expected[1:]
        if name in captured:
            assert actual == captured[name] and type(actual) is type(captured[name]), (
                f"{where}: expected ${name} = {captured[name]!r}, got {actual!r}"
            )
        else:
            captured[name] = actual
        return
    if isinstance(expected, dict):
        assert isinstance(actual, dict), f"{where}: expected an object, got {actual!r}"
        assert set(expected) == set(actual), f"{where}: keys {sorted(actual)}, expected {sorted(expected)}"
        for key in expected:
            match(expected[key], actual[key], captured, f"{where}.{key}")
        return
    if isinstance(expected, list):
        assert isinstance(actual, list) and len(actual) == len(expected), f"{where}: {actual!r}, expected {expected!r}"
        for index, (want, got) in enumerate(zip(expected, actual)):
            match(want, got, captured, f"{where}[{index}]")
        return
    assert expected == actual and type(expected) is type(actual), f"{where}: {actual!r}, expected {expected!r}"


def test_store(directory: str) -> str:
    """A new store for one test's batond: a SQLite file in `directory`, or, with
    ``BATON_TEST_STORE=postgres``, a fresh database on the PostgreSQL server that
    ``$BATON_TEST_POSTGRES`` names (``scripts/test`` runs the suites both ways; the
    throwaway server goes, with its databases, when it ends)."""
    server = os.environ.get("BATON_TEST_POSTGRES")
    if os.environ.get("BATON_TEST_STORE") != "postgres" or not server:
        return os.path.join(directory, "store.sqlite")
    name = "baton_test_" + uuid.uuid4().hex
    subprocess.run(["psql", server, "-q", "-v", "ON_ERROR_STOP=1", "-c", f"CREATE DATABASE {name}"], check=True)
    return urllib.parse.urlsplit(server)._replace(path="/" + name).geturl()


class ThrowawayPostgres:
    """A PostgreSQL server of a test's own (``scripts/postgres``), which it can take down
    and bring back without disturbing the one the other tests share."""

    SCRIPT = str(HERE.parent / "scripts" / "postgres")

    def __init__(self) -> None:
        self.directory = tempfile.mktemp(prefix="baton-pg-")
        self._run("start")
        # From the file the script leaves: the server inherits its standard output, so a
        # pipe would not reach its end while the server runs.
        with open(os.path.join(self.directory, "url")) as url:
            self.url = url.read().strip()

    def _run(self, command: str) -> None:
        subprocess.run([self.SCRIPT, command, self.directory], stdout=subprocess.DEVNULL, check=True)

    def down(self) -> None:
        """Stops the server at once, as a crash would."""
        self._run("down")

    def up(self) -> None:
        self._run("up")

    def remove(self) -> None:
        self._run("stop")


class Batond:
    """A real batond on a private socket and store, for tests; it may be restarted.

    ``$BATOND`` names the binary (default: the repository's debug build).
    """

    def __init__(self, flags: Optional[List[str]] = None, store: Optional[str] = None) -> None:
        self.directory = tempfile.mkdtemp(prefix="baton-test-")
        self.store = store or test_store(self.directory)
        self.socket_path = os.path.join(self.directory, "b.sock")
        self.flags = flags or []
        self.process: Optional[subprocess.Popen] = None
        self.start()

    def start(self) -> None:
        # Its log goes to a file: a pipe nobody reads would fill up and stall its writer.
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                [BATOND, "--socket", self.socket_path, "--store", self.store, *self.flags],
                stdout=subprocess.DEVNULL,
                stderr=log,
            )
        # Ready once it answers a connection: the socket file appears at bind(), a moment
        # before listen(), and a connection between the two is refused.
        deadline = time.monotonic() + 20
        while not self._accepts():
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.process.kill()
                raise RuntimeError("batond did not start: " + self.log())
            time.sleep(0.02)

    def _accepts(self) -> bool:
        if not os.path.exists(self.socket_path):
            return False
        probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            probe.connect(self.socket_path)
            return True
        except OSError:
            return False
        finally:
            probe.close()

    @property
    def log_path(self) -> str:
        return os.path.join(self.directory, "batond.log")

    def log(self) -> str:
        """What batond has logged so far."""
        with open(self.log_path, "rb") as log:
            return log.read().decode(errors="replace")

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            assert self.process.wait(timeout=20) == 0, "batond did not stop cleanly"


def eventually(condition: Callable[[], bool], seconds: float = 15.0) -> bool:
    """Polls `condition` until it holds or `seconds` pass; whether it held."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.05)
    return False


class Connection(Protocol):
    def send_line(self, line: str) -> None: ...

    def read_reply(self, timeout: float) -> Optional[Dict[str, Any]]:
        """The next reply, or None at end of file; raises on timeout."""
        ...

    def close(self) -> None: ...


def replay(
    vector: Vector,
    connect: Callable[[], Connection],
    check: Optional[Callable[[str, Dict[str, Any], str], None]] = None,
) -> None:
    """Replays a vector over connections made by `connect`.

    `check(request_line, reply, where)`, if given, is called for every matched reply.
    """
    connections: Dict[str, Connection] = {}
    received: Dict[str, List[Dict[str, Any]]] = {}
    sent: Dict[str, Dict[Any, str]] = {}
    captured: Dict[str, Any] = {}

    def connection(name: str) -> Connection:
        if name not in connections:
            connections[name] = connect()
            received[name] = []
            sent[name] = {}
        return connections[name]

    try:
        for step in vector.steps:
            where = f"{vector.path.name}:{step.line}"
            if step.kind == "sleep":
                time.sleep(step.milliseconds / 1000)
            elif step.kind == "send":
                line = substitute(step.text, captured)
                connection(step.connection).send_line(line)
                try:
                    request_id = json.loads(line).get("id")
                except (ValueError, AttributeError):
                    request_id = None
                sent[step.connection].setdefault(json.dumps(request_id), line)
            elif step.kind == "expect":
                name = step.connection
                wanted_id = step.expected.get("id")
                if isinstance(wanted_id, str) and (wanted_id == "*" or wanted_id.startswith("$")):
                    wanted_id = None
                reply = _take(connection(name), received[name], wanted_id, where)
                match(step.expected, reply, captured, where)
                if check:
                    check(sent[name].get(json.dumps(reply.get("id")), ""), reply, where)
            elif step.kind == "closed":
                name = step.connection
                assert not received[name], f"{where}: unmatched replies before the close: {received[name]}"
                reply = connection(name).read_reply(REPLY_TIMEOUT)
                assert reply is None, f"{where}: expected the server to close the connection, got {reply}"
        for name, left in received.items():
            assert not left, f"{vector.path.name}: replies never matched on {name}: {left}"
    finally:
        for open_connection in connections.values():
            open_connection.close()


def _take(connection: Connection, received: List[Dict[str, Any]], wanted_id: Any, where: str) -> Dict[str, Any]:
    deadline = time.monotonic() + REPLY_TIMEOUT
    while True:
        for index, reply in enumerate(received):
            if wanted_id is None or (reply.get("id") == wanted_id and type(reply.get("id")) is type(wanted_id)):
                return received.pop(index)
        remaining = deadline - time.monotonic()
        assert remaining > 0, f"{where}: no reply with id {wanted_id!r} within {REPLY_TIMEOUT} s"
        reply = connection.read_reply(remaining)
        assert reply is not None, f"{where}: the server closed the connection before replying"
        received.append(reply)
