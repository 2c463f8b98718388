"""Exceptions of the metaplugin protocol layer.

`EndOfStream` is deliberately *not* a `ProtocolError`: EOF on stdin is the FD's normal way of
ending a backend (§2.4, §3.6) and the caller exits 0 quietly, whereas a `ProtocolError` means
the byte stream no longer makes sense.
"""

from __future__ import annotations


class EndOfStream(Exception):
    """The FD closed the pipe (EOF on read, EPIPE on write): stop and exit 0 (§2.4, §10.8)."""


class ProtocolError(Exception):
    """The peer sent something the protocol does not allow at this point."""


class FramingError(ProtocolError):
    """A packet header or payload is malformed (§1.2): the stream is desynchronised."""


class TruncatedPacket(FramingError):
    """EOF arrived in the middle of a header or payload."""


class UnexpectedPacket(ProtocolError):
    """A well-formed packet arrived where the protocol requires another one."""


class HandshakeError(ProtocolError):
    """The FD's Hello named another plugin or API version (§3.2)."""


class SessionAborted(RuntimeError):
    """The session sent `A` (§4.10); only draining stdin is allowed afterwards."""


class RestoreRefused(Exception):
    """Raised by a restore handler to refuse a file with a reason.

    The session answers the FNAME block with an `E` packet carrying the reason (§6.3: file
    not restored, job error logged, restore continues).
    """

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason
