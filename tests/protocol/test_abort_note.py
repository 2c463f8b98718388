"""The note appended to every `A` (the FD's own "PTCOMM cannot get packet header" Fatal line
always follows an `A`, metaplugin-protocol.md §1.4): byte-exact, and never cut off."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from protocol import BackendSession, Connection, HandshakeError
from protocol.text import MAX_MESSAGE_BYTES, encode_message, encode_message_with_note

NOTE = "(the FD's next line follows from this)"
HELLO = b"C000017\nHello metatest 1\n"


def _session(data: bytes = b"", note: str = NOTE) -> tuple[BackendSession, Connection]:
    conn = Connection.in_memory(data)
    return BackendSession(conn, "metatest", "1", abort_note=note), conn


def test_abort_carries_the_note_byte_exact() -> None:
    s, conn = _session()
    s.abort("bad plugin parameters: unknown parameter 'x'\n")
    s.abort("again")  # idempotent: one A only
    text = b"bad plugin parameters: unknown parameter 'x' (the FD's next line follows from this)\n"
    assert conn.output == b"A%06d\n" % len(text) + text
    assert conn.output == (
        b"A000084\nbad plugin parameters: unknown parameter 'x' (the FD's next line follows from this)\n"
    )


def test_without_a_note_the_abort_is_unchanged() -> None:
    s, conn = _session(note="")
    s.abort("fatal")
    assert conn.output == b"A000006\nfatal\n"


def test_handshake_refusal_carries_the_note_too() -> None:
    s, conn = _session(b"C000019\nHello kubernetes 3\n")
    with pytest.raises(HandshakeError):
        s.handshake()
    assert conn.output.startswith(b"A") and conn.output.endswith(b" " + NOTE.encode() + b"\n")


def test_a_long_reason_is_shortened_and_the_note_kept() -> None:
    payload = encode_message_with_note("é" * 3000, NOTE)
    assert MAX_MESSAGE_BYTES - 4 <= len(payload) <= MAX_MESSAGE_BYTES
    assert payload.endswith(b"... " + NOTE.encode() + b"\n")
    payload.decode("utf-8")  # cut at a character boundary


@given(st.text(max_size=3000), st.text(min_size=1, max_size=200).filter(lambda t: t.strip() == t and t))
def test_note_always_whole_and_payload_bounded(text: str, note: str) -> None:
    payload = encode_message_with_note(text, note)
    note_raw = encode_message(note)[:-1]
    assert len(payload) <= MAX_MESSAGE_BYTES
    assert payload.endswith(b" " + note_raw + b"\n")
    body = payload[: -len(note_raw) - 2]
    full = encode_message(text)[:-1]
    # Either the whole text, or a prefix of it marked with "...".
    assert body == full or (body.endswith(b"...") and full.startswith(body[:-3]))
