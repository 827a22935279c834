"""The errors a Baton client raises."""
from typing import Optional


class BatonError(Exception):
    """batond refused a request. ``code`` is the protocol's error code: match on it.

    ``state`` is the job's current state when the refusal is about one job
    (``invalid_transition``, ``lease_lost``, ``cancelled``, ``paused``).
    """

    def __init__(self, code: str, message: str, state: Optional[str] = None) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
        self.state = state


class ConnectionLost(Exception):
    """The connection to batond closed, or could not be made, before the reply came."""


class ProtocolError(Exception):
    """batond sent something that is not a valid reply; the connection is closed."""


# Codes after which an op safe to resend is sent again after a pause ("Codes to retry later").
RETRY_LATER_CODES = frozenset({"unavailable"})

LEASE_ENDING_CODES = frozenset(
    {"lease_lost", "cancelled", "paused", "timed_out", "invalid_transition", "not_found", "forbidden"}
)
