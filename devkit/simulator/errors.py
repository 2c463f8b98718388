"""One error type shared by the model and every wire protocol.

The model raises :class:`SimError` with the code AWS would use; each API layer renders it
in its own protocol (EC2 XML, EBS JSON, control JSON), so a fault or quota policy can also
produce errors without knowing the protocol.
"""

from __future__ import annotations


class SimError(Exception):
    """An AWS-style error: code, message, HTTP status and (EBS only) a reason enum value."""

    def __init__(
        self, code: str, message: str, status: int = 400, reason: str | None = None
    ) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
        self.status = status
        self.reason = reason


class DropConnection(Exception):
    """Fault injection: the server closes the socket without sending a response."""
