"""Backend side of the Bacula 15.0.3 metaplugin protocol (docs: metaplugin-protocol.md).

Knows nothing about the product: it frames packets, runs the session state machine and
offers producers/consumers for each mode. The File Daemon side, for tests, is `devkit.fdpeer.FDPeer`.
"""

from .attrs import FileAttrs, RestoreFile
from .backup import FileWriter, ItemStream
from .errors import (
    EndOfStream,
    FramingError,
    HandshakeError,
    ProtocolError,
    RestoreRefused,
    SessionAborted,
    TruncatedPacket,
    UnexpectedPacket,
)
from .framing import MAX_PAYLOAD, Connection, Packet, PacketBatch
from .jobinfo import EndReason, JobInfo, Mode, last_wins
from .query import QueryStream
from .restore import BaseRestoreHandler, Reply, RestoreHandler
from .session import BackendSession

__all__ = [
    "MAX_PAYLOAD",
    "BackendSession",
    "BaseRestoreHandler",
    "Connection",
    "EndOfStream",
    "EndReason",
    "FileAttrs",
    "FileWriter",
    "FramingError",
    "HandshakeError",
    "ItemStream",
    "JobInfo",
    "Mode",
    "Packet",
    "PacketBatch",
    "ProtocolError",
    "QueryStream",
    "Reply",
    "RestoreFile",
    "RestoreHandler",
    "RestoreRefused",
    "SessionAborted",
    "TruncatedPacket",
    "UnexpectedPacket",
    "last_wins",
]
