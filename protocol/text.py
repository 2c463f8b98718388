"""Text rules for packet payloads (§1.5, §1.7).

Inbound (FD→BE) text is decoded with `surrogateescape`, because the FD does not guarantee
UTF-8 and file names must survive a round trip byte for byte. Outbound commands are encoded
the same way; outbound *messages* are human text and are encoded with `errors="replace"`.
"""

from __future__ import annotations

ENCODING = "utf-8"

#: §1.5, §10.30: the FD truncates job messages at about 2000 bytes including its prefix.
MAX_MESSAGE_BYTES = 1980
#: Sent instead of an empty message: a zero-length C packet would end the FD's block (§1.6).
EMPTY_MESSAGE_PLACEHOLDER = "(no message text)"
_ELLIPSIS = b"..."


def decode_text(payload: bytes | bytearray | memoryview) -> str:
    """Decode an FD→BE C payload, stripping exactly one trailing newline.

    §1.7: every FD command ends in `\\n` except `METADATA_*`, which arrives without it.
    """
    raw = bytes(payload)
    if raw.endswith(b"\n"):
        raw = raw[:-1]
    return raw.decode(ENCODING, "surrogateescape")


def encode_text(text: str) -> bytes:
    """Encode a str that came from `decode_text` (or the OS) back to its exact bytes."""
    return text.encode(ENCODING, "surrogateescape")


def encode_command(text: str) -> bytes:
    """Encode a BE→FD command line: exact bytes plus the recommended trailing `\\n` (§1.7).

    Raises ValueError for empty text (§1.6: zero-length C is forbidden) and for NUL, which
    would silently truncate the command at the FD (§1.7).
    """
    if not text:
        raise ValueError("empty command: a zero-length C packet would end the FD's block (§1.6)")
    if "\x00" in text:
        raise ValueError(f"NUL in command {text[:60]!r}: the FD would truncate it (§1.7)")
    return encode_text(text) + b"\n"


def encode_message(text: str) -> bytes:
    """Encode a job-message payload (I W Q S N R P O V E A, §1.5).

    UTF-8 with replacement, NUL shown as `\\0` (the FD treats the payload as a C string),
    truncated at a character boundary to `MAX_MESSAGE_BYTES` with `...`, one trailing `\\n`,
    and never empty (a placeholder is used).
    """
    raw = text.replace("\x00", "\\0").encode(ENCODING, "replace")
    if raw.endswith(b"\n"):
        raw = raw[:-1]
    if not raw:
        raw = EMPTY_MESSAGE_PLACEHOLDER.encode(ENCODING)
    limit = MAX_MESSAGE_BYTES - 1  # room for the newline
    if len(raw) > limit:
        cut = raw[: limit - len(_ELLIPSIS)].decode(ENCODING, "ignore").encode(ENCODING)
        raw = cut + _ELLIPSIS
    return raw + b"\n"
