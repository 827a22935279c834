"""The wire: JSON lines over a unix stream socket, and replies matched to requests by id."""
import itertools
import json
import socket
import threading
from typing import Any, Dict, Optional

from .errors import ConnectionLost, ProtocolError


class LineChannel:
    """A unix socket read and written one line at a time."""

    def __init__(self, path: str, timeout: float = 10.0) -> None:
        self._socket = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._socket.settimeout(timeout)
        try:
            self._socket.connect(path)
        except OSError as error:
            self._socket.close()
            raise ConnectionLost(f"cannot connect to {path}: {error}") from error
        self._buffer = b""
        self._write_lock = threading.Lock()

    def send_line(self, line: str) -> None:
        data = line.encode() + b"\n"
        with self._write_lock:
            try:
                self._socket.sendall(data)
            except OSError as error:
                raise ConnectionLost(f"batond went away: {error}") from error

    def read_line(self, timeout: Optional[float] = None) -> Optional[str]:
        """The next line without its newline, or None once the server has closed.

        Raises ``TimeoutError`` when nothing complete arrives within ``timeout`` seconds.
        """
        self._socket.settimeout(timeout)
        while b"\n" not in self._buffer:
            try:
                chunk = self._socket.recv(65536)
            except socket.timeout as error:
                raise TimeoutError("no reply from batond in time") from error
            except ConnectionResetError:
                chunk = b""
            if not chunk:
                return None
            self._buffer += chunk
        line, self._buffer = self._buffer.split(b"\n", 1)
        return line.decode()

    def read_reply(self, timeout: Optional[float] = None) -> Optional[Dict[str, Any]]:
        """The next reply, parsed; None once the server has closed."""
        line = self.read_line(timeout)
        if line is None:
            return None
        return parse_reply(line)

    def close(self) -> None:
        try:
            self._socket.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self._socket.close()


def parse_reply(line: str) -> Dict[str, Any]:
    try:
        reply = json.loads(line)
    except ValueError as error:
        raise ProtocolError(f"batond sent a line that is not JSON: {line[:200]!r}") from error
    if not isinstance(reply, dict) or not isinstance(reply.get("ok"), bool):
        raise ProtocolError(f"batond sent something that is not a reply: {line[:200]!r}")
    return reply


class _Pending:
    __slots__ = ("done", "reply", "error")

    def __init__(self) -> None:
        self.done = threading.Event()
        self.reply: Optional[Dict[str, Any]] = None
        self.error: Optional[BaseException] = None


class Connection:
    """One connection shared by many threads: each request gets an id, and a reader
    thread hands each reply to the request with that id, so requests are pipelined and a
    long-polling claim does not hold up a heartbeat sent behind it.
    """

    def __init__(self, path: str, connect_timeout: float = 10.0) -> None:
        self._channel = LineChannel(path, connect_timeout)
        self._ids = itertools.count(1)
        self._pending: Dict[int, _Pending] = {}
        self._lock = threading.Lock()
        self._failure: Optional[BaseException] = None
        self._reader = threading.Thread(target=self._read, name="baton-reader", daemon=True)
        self._reader.start()

    @property
    def is_open(self) -> bool:
        return self._failure is None

    def request(self, fields: Dict[str, Any], timeout: float) -> Dict[str, Any]:
        pending = _Pending()
        with self._lock:
            if self._failure is not None:
                raise self._failure
            request_id = next(self._ids)
            self._pending[request_id] = pending
        try:
            self._channel.send_line(json.dumps({**fields, "id": request_id}, separators=(",", ":")))
        except ConnectionLost as error:
            self._fail(error)
        if not pending.done.wait(timeout):
            with self._lock:
                self._pending.pop(request_id, None)
            raise TimeoutError(f"no reply from batond to {fields.get('op')} within {timeout:.0f} s")
        if pending.error is not None:
            raise pending.error
        assert pending.reply is not None
        return pending.reply

    def close(self) -> None:
        self._fail(ConnectionLost("the connection was closed"))

    def _read(self) -> None:
        try:
            while True:
                line = self._channel.read_line(None)
                if line is None:
                    raise ConnectionLost("batond closed the connection")
                reply = parse_reply(line)
                with self._lock:
                    pending = self._pending.pop(reply.get("id"), None) if isinstance(reply.get("id"), int) else None
                if pending is None:
                    raise ProtocolError(f"batond sent a reply to no request of ours: {line[:200]!r}")
                pending.reply = reply
                pending.done.set()
        except (ConnectionLost, ProtocolError) as error:
            self._fail(error)
        except OSError as error:
            self._fail(ConnectionLost(f"batond went away: {error}"))

    def _fail(self, error: BaseException) -> None:
        with self._lock:
            if self._failure is None:
                self._failure = error
            waiting = list(self._pending.values())
            self._pending.clear()
        for pending in waiting:
            pending.error = error
            pending.done.set()
        self._channel.close()
