"""A client and worker for batond, the Baton job-lease server.

    from baton import Client, Worker
"""
from .client import NULL, Client, Enqueued, Lease
from .connection import Connection, LineChannel
from .errors import BatonError, ConnectionLost, ProtocolError
from .worker import Completion, JobContext, PermanentFailure, Stopped, Worker

__all__ = [
    "NULL", "BatonError", "Client", "Completion", "Connection", "ConnectionLost", "Enqueued", "JobContext", "Lease",
    "LineChannel", "PermanentFailure", "ProtocolError", "Stopped", "Worker",
]
__version__ = "0.1.0"
