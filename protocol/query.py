"""Producer for `.query` answers (§5.3).

The FD splits every C answer at each `,` and each part at its first `=`, so a `,` inside a
key or value cannot be transmitted: it is refused with ValueError (no escaping exists on
the FD side, §10.26). Free text goes out as a D packet, which the FD forwards verbatim up
to the first NUL.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

from .framing import PacketBatch
from .text import encode_command, encode_text

if TYPE_CHECKING:
    from .session import BackendSession

_BLANKS = " \t\r\n\v\f"


def format_pair(key: str, value: str) -> str:
    """`key=value`, refusing what the FD would split or mangle (§5.3, §1.7)."""
    if not key or key.strip() != key:
        raise ValueError(f"query key {key!r} is empty or has surrounding blanks")
    if "=" in key:
        raise ValueError(f"query key {key!r} contains '=' (the FD splits at the first '=')")
    for part in (key, value):
        if "," in part:
            raise ValueError(f"query text {part!r} contains ',', which the FD splits on (§5.3)")
        if "\x00" in part or "\n" in part:
            raise ValueError(f"query text {part!r} contains NUL or newline")
    return f"{key}={value}"


class QueryStream:
    """Answer lines of a query, then `finish()` (F), after which the FD sends T (§5.3)."""

    def __init__(self, session: BackendSession) -> None:
        self.session = session
        self.finished = False

    def _send(self, batch: PacketBatch) -> None:
        if self.finished:
            raise RuntimeError("query answer already finished")
        self.session.send_batch(batch)

    def send_kv(self, key: str, value: str) -> None:
        """One `C key=value` line: shown as `key=value`."""
        self.send_pairs([(key, value)])

    def send_pairs(self, pairs: Iterable[tuple[str, str]]) -> None:
        """One `C k1=v1,k2=v2` line: shown as a list when there is more than one pair."""
        line = ",".join(format_pair(k, v) for k, v in pairs)
        if not line:
            raise ValueError("send_pairs needs at least one pair")
        if line[-1] in _BLANKS:
            raise ValueError(f"query line {line!r} ends in whitespace, which the FD strips")
        self._send(PacketBatch().add("C", encode_command(line)))

    def send_text(self, text: str | bytes) -> None:
        """One `D` packet forwarded verbatim as a console message (stops at NUL)."""
        raw = encode_text(text) if isinstance(text, str) else text
        if not raw:
            raise ValueError("empty query text: a zero-length D is forbidden (§1.6)")
        if b"\x00" in raw:
            raise ValueError("query text contains NUL; the FD would truncate it (§5.3)")
        batch = PacketBatch()
        batch.add_data(raw)  # > 999999 bytes become several messages (§1.3)
        self._send(batch)

    def finish(self) -> None:
        """The final F of the answer (§5.3)."""
        self._send(PacketBatch().add("F"))
        self.finished = True
