"""Opaque, tamper-proof tokens for EBS direct: block tokens and page (Next) tokens.

A token is standard base64 (the model's pattern is ``^[A-Za-z0-9+/=]+$``, so not base64url)
of a small binary record plus a keyed BLAKE2b MAC over the record and the snapshot it is
bound to. The key is random per process, so tokens from an earlier simulator run are
invalid, and each List call mixes in a fresh nonce, so tokens change on every re-list as
they do on AWS. Expiry (epoch milliseconds) is part of the record: 7 days for block tokens,
60 minutes for page tokens (EBS direct FAQ), shortened by the ``*_token_ttl`` options.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import secrets
import struct
import time

BLOCK_TOKEN_TTL = 7 * 24 * 3600
PAGE_TOKEN_TTL = 3600

_KEY = secrets.token_bytes(32)
_BLOCK = struct.Struct(">BIQ8s")  # kind, block index, expiry (epoch ms), list nonce
_PAGE = struct.Struct(">BIQ")  # kind, next block index, expiry (epoch ms)
_MAC_LEN = 16
_KIND_BLOCK = 1
_KIND_PAGE = 2


def _mac(record: bytes, scope: str) -> bytes:
    return hashlib.blake2b(record + scope.encode(), key=_KEY, digest_size=_MAC_LEN).digest()


def _open(token: str, size: int, scope: str) -> bytes | None:
    """The verified record inside ``token``, or None if it is not one of ours."""
    try:
        raw = base64.b64decode(token, validate=True)
    except (binascii.Error, ValueError):
        return None
    if len(raw) != size + _MAC_LEN:
        return None
    record, mac = raw[:size], raw[size:]
    if not hmac.compare_digest(mac, _mac(record, scope)):
        return None
    return record


class BlockTokens:
    """Mints the block tokens of one List call (one nonce, one expiry)."""

    def __init__(self, scope: str, now: float | None = None,
                 ttl: float = BLOCK_TOKEN_TTL) -> None:
        self.scope = scope
        self.expiry_exact = (now or time.time()) + ttl
        self.expiry = int(self.expiry_exact)
        self._nonce = secrets.token_bytes(8)

    def mint(self, index: int) -> str:
        record = _BLOCK.pack(_KIND_BLOCK, index, int(self.expiry_exact * 1000), self._nonce)
        return base64.b64encode(record + _mac(record, self.scope)).decode()


def block_token_valid(token: str, scope: str, index: int, now: float | None = None) -> bool:
    """True if ``token`` was minted for block ``index`` of ``scope`` and has not expired."""
    record = _open(token, _BLOCK.size, scope)
    if record is None:
        return False
    kind, tok_index, expiry, _nonce = _BLOCK.unpack(record)
    return bool(kind == _KIND_BLOCK and tok_index == index
                and (now or time.time()) * 1000 < expiry)


def page_token(scope: str, next_index: int, now: float | None = None,
               ttl: float = PAGE_TOKEN_TTL) -> str:
    record = _PAGE.pack(_KIND_PAGE, next_index, int(((now or time.time()) + ttl) * 1000))
    return base64.b64encode(record + _mac(record, scope)).decode()


def page_token_index(token: str, scope: str, now: float | None = None) -> int | None:
    """The block index a page token resumes at, or None if invalid or expired."""
    record = _open(token, _PAGE.size, scope)
    if record is None:
        return None
    kind, next_index, expiry = _PAGE.unpack(record)
    if kind != _KIND_PAGE or (now or time.time()) * 1000 >= expiry:
        return None
    return int(next_index)


def opaque(payload: str, scope: str) -> str:
    """A signed, opaque wrapper for small state (EC2 Describe* NextToken)."""
    record = payload.encode()
    return base64.b64encode(record + _mac(record, scope)).decode()


def unwrap(token: str, scope: str) -> str | None:
    """The payload of an :func:`opaque` token, or None if it was not minted for ``scope``."""
    try:
        raw = base64.b64decode(token, validate=True)
    except (binascii.Error, ValueError):
        return None
    record, mac = raw[:-_MAC_LEN], raw[-_MAC_LEN:]
    if len(raw) <= _MAC_LEN or not hmac.compare_digest(mac, _mac(record, scope)):
        return None
    return record.decode(errors="replace")
