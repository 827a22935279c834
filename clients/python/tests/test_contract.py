"""The Python client's copies of the rules in PROTOCOL.md ("What every client does") say
what the document says."""
import conformance

from baton.client import DEFAULT_SOCKET, REPEATABLE
from baton.errors import LEASE_ENDING_CODES, RETRY_LATER_CODES


def test_the_ops_resent_after_a_lost_reply_are_the_documented_ones():
    assert REPEATABLE == conformance.documented_names("Ops safe to resend")


def test_the_codes_that_stop_a_worker_are_the_documented_ones():
    assert LEASE_ENDING_CODES == conformance.documented_names("Codes that end a lease")


def test_the_codes_retried_later_are_the_documented_ones():
    assert RETRY_LATER_CODES == conformance.documented_names("Codes to retry later")


def test_the_default_socket_is_the_documented_one():
    assert DEFAULT_SOCKET == "baton-data/baton.sock"
