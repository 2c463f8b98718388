"""Text rules for packet payloads (§1.5, §1.7).

Inbound (FD→BE) text is decoded with `surrogateescape`, because the FD does not guarantee
UTF-8 and file names must survive a round trip byte for byte. Outbound commands are encoded
the same way. Outbound *messages* are human text: encoding them can never fail (a byte that
was not UTF-8 is shown as `\\xNN`), and the values of secret-looking `key=value` pairs are
masked, whatever text they came from (`scrub_secrets`).
"""

from __future__ import annotations

import re
from collections.abc import Callable

ENCODING = "utf-8"

#: §1.5, §10.30: the FD truncates job messages at about 2000 bytes including its prefix.
MAX_MESSAGE_BYTES = 1980
#: Sent instead of an empty message: a zero-length C packet would end the FD's block (§1.6).
EMPTY_MESSAGE_PLACEHOLDER = "(no message text)"
_ELLIPSIS = b"..."
MASK = "***"

#: Parameter names whose values are secrets, matched anywhere in a text (case-insensitive,
#: with any prefix or suffix: `secret_key`, `aws_secret_access_key`, `session_token`, ...).
_SECRET_NAME = r"(?:secret|session_token|password|passwd)[^\s=:'\"]*"
#: `name=value` (value quoted or not, quotes maybe unbalanced in a truncated text) and
#: `'name': 'value'` (a dict or JSON rendering).
_SECRET_PAIR = re.compile(
    rf"(?i)(?P<a>{_SECRET_NAME}\s*=\s*)"
    rf"(?:(?P<q>['\"])(?P<qv>[\s\S]*?)(?P<end>(?P=q)|$)|(?P<v>[^\s'\",;}})\]]+))"
    rf"|(?P<b>{_SECRET_NAME}['\"]\s*:\s*['\"])(?P<w>[^'\"]+)"
)
_SECRET_KEY = re.compile(rf"(?i).*{_SECRET_NAME}")


def looks_secret(name: str) -> bool:
    """Whether a parameter of this name holds a secret (its value is never shown)."""
    return _SECRET_KEY.match(name) is not None


def has_undecodable(text: str) -> bool:
    """Whether `text` holds bytes that were not UTF-8 (escaped by `decode_text`)."""
    try:
        text.encode(ENCODING)
    except UnicodeEncodeError:
        return True
    return False


def scrub_secrets(text: str) -> str:
    """Mask the value of every secret-looking `key=value` in `text` (parsed or not)."""

    def mask(m: re.Match[str]) -> str:
        if m.group("b") is not None:
            return m.group("b") + MASK
        if m.group("q") is not None:  # quoted: up to the closing quote, or the end of the text
            return m.group("a") + m.group("q") + MASK + m.group("end")
        return m.group("a") + MASK

    return _SECRET_PAIR.sub(mask, text)


#: Applied to every message text before it is encoded; a product may install a stronger
#: one (e.g. one that also masks values it learned), see `set_message_scrubber`.
_scrubber: Callable[[str], str] = scrub_secrets


def set_message_scrubber(scrub: Callable[[str], str] | None) -> None:
    """Install the filter every outbound message passes (None: `scrub_secrets` only)."""
    global _scrubber
    _scrubber = scrub or scrub_secrets


def printable(text: str) -> str:
    """Text that encodes as UTF-8 whatever it holds: escaped bytes (from `decode_text`)
    become `\\xNN`, other lone surrogates `\\uNNNN`. Never raises."""
    try:
        text.encode(ENCODING)
        return text
    except UnicodeEncodeError:
        pass
    out = []
    for ch in text:
        code = ord(ch)
        if 0xDC80 <= code <= 0xDCFF:
            out.append(f"\\x{code - 0xDC00:02x}")
        elif 0xD800 <= code <= 0xDFFF:
            out.append(f"\\u{code:04x}")
        else:
            out.append(ch)
    return "".join(out)


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

    Secrets masked (the installed scrubber), bytes that are not UTF-8 escaped (`printable`),
    NUL shown as `\\0` (the FD treats the payload as a C string), truncated at a character
    boundary to `MAX_MESSAGE_BYTES` with `...`, one trailing `\\n`, and never empty (a
    placeholder is used). Never raises for any str.
    """
    try:
        text = _scrubber(text)
    except Exception:  # a broken scrubber must not leak: fall back to the pattern
        text = scrub_secrets(text)
    raw = printable(text).replace("\x00", "\\0").encode(ENCODING, "replace")
    if raw.endswith(b"\n"):
        raw = raw[:-1]
    if not raw:
        raw = EMPTY_MESSAGE_PLACEHOLDER.encode(ENCODING)
    limit = MAX_MESSAGE_BYTES - 1  # room for the newline
    if len(raw) > limit:
        cut = raw[: limit - len(_ELLIPSIS)].decode(ENCODING, "ignore").encode(ENCODING)
        raw = cut + _ELLIPSIS
    return raw + b"\n"


def encode_message_with_note(text: str, note: str) -> bytes:
    """`encode_message(text)` with ` <note>` after it; when the whole is too long, the text
    is shortened (with `...`) so that the note always arrives whole."""
    if not note:
        return encode_message(text)
    body = encode_message(text)[:-1]
    tail = b" " + encode_message(note)[:-1]
    limit = MAX_MESSAGE_BYTES - 1 - len(tail)
    if len(body) > limit:
        body = body[: limit - len(_ELLIPSIS)].decode(ENCODING, "ignore").encode(ENCODING) + _ELLIPSIS
    return body + tail + b"\n"
