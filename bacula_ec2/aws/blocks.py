"""GetSnapshotBlock and PutSnapshotBlock over plain keep-alive HTTP, signed here: the hot path.

A full read is one request per 512 KiB block, up to 1,000 a second. Through boto3 each
call costs about a millisecond and a half of CPU (model validation, event hooks, response
parsing), which alone would eat a core; this path costs a fraction of that. It speaks the
same wire protocol (the signature is checked against botocore's own signer in the tests),
keeps one connection per worker thread, reads the body straight into a recycled block
buffer (`BufferPool`: no fresh zero-filled 512 KiB per block), and reports errors
exactly as the boto3 path does (`errors.from_http` classifies them with the same rule as
`errors.classify`; request id kept, causes kept). Behind an HTTP(S) proxy it is
not used: boto3 honours proxies, this client does not.

It trusts what boto3 trusts (`Aws.verify`: the `ca_bundle` setting, AWS_CA_BUNDLE, the
profile's `ca_bundle`, else botocore's own bundle) and connects with boto3's connect and
read timeouts. A certificate that does not verify is final, with a message naming the host
and `ca_bundle=`; it is not retried.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import os
import re
import socket
import ssl
import struct
import threading
import urllib.parse
import urllib.request

from botocore.httpsession import get_cert_path

from ..formats.blockimage import BLOCK_SIZE
from . import errors
from .client import Aws, BlockBody, BlockRef, ChecksumMismatch, verified_block

SERVICE = "ebs"
EMPTY_SHA256 = hashlib.sha256(b"").hexdigest()
USER_AGENT = "bacula-ec2/0.1 (fast block reader)"
_UNRESERVED = "-_.~"
#: The first read of a response asks for this much: the headers (a few hundred bytes) and
#: at most this much of the body, which is then the only part copied (the rest is received
#: into the block buffer directly).
HEAD_FIRST = 2048
#: recv flag: wait until the whole body is in (plain TCP; TLS sockets take no flags).
_WAITALL = getattr(socket, "MSG_WAITALL", 0)


def _timeval(seconds: float) -> bytes:
    """A struct timeval for SO_RCVTIMEO / SO_SNDTIMEO (0 would mean: wait forever)."""
    whole = int(seconds)
    micro = max(1, int((seconds - whole) * 1e6)) if whole == 0 else int((seconds - whole) * 1e6)
    return struct.pack("@ll", whole, micro)


class PoolBuffer(bytearray):
    """A block buffer of a `BufferPool`; knows its pool and whether it is lent out."""

    pool: BufferPool | None = None
    lent = False


class BufferPool:
    """Block-sized receive buffers, recycled instead of allocated (and zero-filled, and
    page-faulted in) for every block.

    Ownership: `take` lends a buffer to exactly one holder; the holder gives it back with
    `give` when nothing refers to its content any more (for a download: when the consumer
    asks for the next block, `download.BlockDownloader.fetch`; a failed read, at once in
    `BlockClient`). `give` accepts only a lent buffer of this pool: a buffer that is not
    ours, or a second `give` of one lending, is ignored. Each lending has exactly one
    `give` (a late `give` after the buffer was lent again cannot be told apart, so there
    is none: `fetch` releases a block once, `get` gives back only what it does not return).
    A buffer that is never given back is simply garbage (an abandoned transfer): nothing
    leaks. At most `keep` free buffers are kept.
    """

    def __init__(self, size: int = BLOCK_SIZE, keep: int = 256) -> None:
        self.size = size
        self.keep = keep
        self._free: list[PoolBuffer] = []
        self._lock = threading.Lock()
        #: Buffers allocated so far (a measure of recycling: stays near the window).
        self.created = 0

    def take(self) -> PoolBuffer:
        with self._lock:
            if self._free:
                buf = self._free.pop()
            else:
                buf = PoolBuffer(self.size)
                buf.pool = self
                self.created += 1
            buf.lent = True
        return buf

    def give(self, buf: object) -> None:
        """Take back a buffer lent by this pool (anything else, or a second give: no-op)."""
        if not isinstance(buf, PoolBuffer) or buf.pool is not self:
            return
        with self._lock:
            if not buf.lent:
                return
            buf.lent = False
            if len(self._free) < self.keep:
                self._free.append(buf)


#: Block tokens are base64: of their characters only + / = need encoding. A translation
#: table does that in C; `urllib.parse.quote` loops over the bytes in Python (it was the
#: largest Python cost of a request, called for every block's token).
_BASE64ISH = re.compile(r"[A-Za-z0-9\-_.~+/=]*")
_BASE64_QUOTE = str.maketrans({"+": "%2B", "/": "%2F", "=": "%3D"})


def uri_encode(text: str) -> str:
    """SigV4 encoding: every byte but A-Z a-z 0-9 - _ . ~ is percent-encoded."""
    if _BASE64ISH.fullmatch(text):
        return text.translate(_BASE64_QUOTE)
    return urllib.parse.quote(text, safe=_UNRESERVED)


class SigV4:
    """Signs requests for one service and region; signing keys are cached per day."""

    def __init__(self, region: str, service: str = SERVICE) -> None:
        self.region = region
        self.service = service
        self._keys: dict[tuple[str, str], bytes] = {}
        #: (whole second, its X-Amz-Date, its credential scope): the block requests of one
        #: second share them (a thousand strftime calls a second otherwise).
        self._stamp: tuple[int, str, str] = (-1, "", "")

    def _key(self, secret: str, day: str) -> bytes:
        cached = self._keys.get((secret, day))
        if cached is None:
            k = hmac.digest(("AWS4" + secret).encode(), day.encode(), "sha256")
            for part in (self.region, self.service, "aws4_request"):
                k = hmac.digest(k, part.encode(), "sha256")
            self._keys = {(secret, day): k}
            cached = k
        return cached

    def headers(
        self,
        method: str,
        host: str,
        path: str,
        query: list[tuple[str, str]],
        access_key: str,
        secret_key: str,
        token: str | None,
        now: dt.datetime,
        extra: dict[str, str] | None = None,
        payload_hash: str = EMPTY_SHA256,
    ) -> dict[str, str]:
        """The X-Amz-Date, Authorization (and token) headers; `extra` headers are signed too."""
        second = int(now.timestamp())
        cached, amz_date, scope = self._stamp
        if cached != second:
            amz_date = now.strftime("%Y%m%dT%H%M%SZ")
            scope = f"{amz_date[:8]}/{self.region}/{self.service}/aws4_request"
            self._stamp = (second, amz_date, scope)
        day = amz_date[:8]
        signed = {"host": host, "x-amz-date": amz_date}
        signed.update({k.lower(): v for k, v in (extra or {}).items()})
        if token:
            signed["x-amz-security-token"] = token
        names = sorted(signed)
        canonical_query = "&".join(f"{uri_encode(k)}={uri_encode(v)}" for k, v in sorted(query))
        canonical = "\n".join(
            [
                method,
                uri_encode(path).replace("%2F", "/"),
                canonical_query,
                "".join(f"{n}:{signed[n]}\n" for n in names),
                ";".join(names),
                payload_hash,
            ]
        )
        to_sign = f"AWS4-HMAC-SHA256\n{amz_date}\n{scope}\n{hashlib.sha256(canonical.encode()).hexdigest()}"
        signature = hmac.digest(self._key(secret_key, day), to_sign.encode(), "sha256").hex()
        out = {
            "X-Amz-Date": amz_date,
            "Authorization": (
                f"AWS4-HMAC-SHA256 Credential={access_key}/{scope}, "
                f"SignedHeaders={';'.join(names)}, Signature={signature}"
            ),
        }
        if token:
            out["X-Amz-Security-Token"] = token
        return out


def proxied(url: str) -> bool:
    parts = urllib.parse.urlsplit(url)
    proxies = urllib.request.getproxies()
    if parts.scheme not in proxies:
        return False
    return not urllib.request.proxy_bypass(parts.hostname or "")


class BlockClient:
    """Thread-safe GetSnapshotBlock / PutSnapshotBlock client: one keep-alive connection
    per thread, requests written with one sendall, block bodies received into buffers of
    `pool` (a block `get` returns is lent: `release` it when its content is no longer used)."""

    def __init__(
        self,
        aws: Aws,
        timeout: float | None = None,
        connect_timeout: float | None = None,
        pool: BufferPool | None = None,
    ) -> None:
        url = urllib.parse.urlsplit(aws.ebs.meta.endpoint_url)
        self.https = url.scheme == "https"
        self.host = url.hostname or ""
        self.port = url.port or (443 if self.https else 80)
        self.host_header = url.netloc
        self.base_path = url.path.rstrip("/")
        self.credentials = aws.credentials
        self.signer = SigV4(aws.region)
        self.timeout = timeout if timeout is not None else getattr(aws, "read_timeout", 60.0)
        self.connect_timeout = (
            connect_timeout if connect_timeout is not None else getattr(aws, "connect_timeout", 10.0)
        )
        self._local = threading.local()
        self._ssl = tls_context(getattr(aws, "verify", True)) if self.https else None
        self.pool = pool if pool is not None else BufferPool()

    def release(self, data: object) -> None:
        """Give a block's buffer back for reuse (a body not from the pool: nothing)."""
        self.pool.give(data)

    @classmethod
    def usable(cls, aws: Aws) -> bool:
        """Only where boto3 would connect directly, with credentials we can sign with."""
        meta = getattr(getattr(aws, "ebs", None), "meta", None)
        if getattr(aws, "credentials", None) is None or meta is None:
            return False  # e.g. a test double without real boto3 clients
        return not proxied(meta.endpoint_url)

    def _sock(self) -> socket.socket:
        sock: socket.socket | None = getattr(self._local, "sock", None)
        if sock is None:
            sock = socket.create_connection((self.host, self.port), timeout=self.connect_timeout)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
            if self._ssl is not None:
                try:
                    sock = self._ssl.wrap_socket(sock, server_hostname=self.host)
                except BaseException:
                    sock.close()
                    raise
            if self._ssl is None:
                # A blocking socket whose timeouts the kernel keeps (SO_RCVTIMEO/SO_SNDTIMEO):
                # no poll() before every send and receive, and a body arrives in one
                # MSG_WAITALL receive. A receive that times out raises BlockingIOError.
                sock.settimeout(None)
                tv = _timeval(self.timeout)
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, tv)
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO, tv)
            else:
                sock.settimeout(self.timeout)
            self._local.sock = sock
            self._local.head = bytearray(16384)
        return sock

    def _drop(self) -> None:
        sock = getattr(self._local, "sock", None)
        self._local.sock = None
        if sock is not None:
            sock.close()

    def _exchange(
        self,
        operation: str,
        resource: str,
        method: str,
        path: str,
        query: list[tuple[str, str]],
        extra: dict[str, str],
        body: bytes | bytearray | memoryview = b"",
        payload_hash: str = EMPTY_SHA256,
        pool: BufferPool | None = None,
    ) -> tuple[int, dict[str, str], bytearray, int]:
        creds = self.credentials.get_frozen_credentials()
        headers = self.signer.headers(
            method,
            self.host_header,
            path,
            query,
            creds.access_key,
            creds.secret_key,
            creds.token,
            dt.datetime.now(dt.UTC),
            extra=extra,
            payload_hash=payload_hash,
        )
        target = path + ("?" + "&".join(f"{k}={uri_encode(v)}" for k, v in query) if query else "")
        lines = [
            f"{method} {target} HTTP/1.1",
            f"Host: {self.host_header}",
            f"User-Agent: {USER_AGENT}",
            "Accept-Encoding: identity",
        ]
        lines += [f"{k}: {v}" for k, v in {**extra, **headers}.items()]
        if method != "GET":
            lines.append(f"Content-Length: {len(body)}")
        head = ("\r\n".join(lines) + "\r\n\r\n").encode()
        try:
            sock = self._sock()
            self._send(sock, head, body)
            status, fields, data, got = self._read_response(sock, pool)
        except ssl.SSLCertVerificationError as exc:
            self._drop()
            raise errors.untrusted_certificate(operation, self.host, exc, resource=resource) from exc
        except BlockingIOError as exc:  # SO_RCVTIMEO / SO_SNDTIMEO ran out
            self._drop()
            stalled = TimeoutError(f"no data from {self.host} for {self.timeout:g} s")
            raise errors.transient(operation, stalled, resource=resource) from exc
        except (OSError, ValueError) as exc:
            self._drop()
            raise errors.transient(operation, exc, resource=resource) from exc
        if fields.get("connection", "").lower() == "close":
            self._drop()
        if status >= 300:
            raise errors.from_http(operation, status, fields, bytes(data[:got]), resource=resource)
        return status, fields, data, got

    def _send(self, sock: socket.socket, head: bytes, body: bytes | bytearray | memoryview) -> None:
        """Headers and block in as few system calls as the socket allows."""
        if not len(body):
            sock.sendall(head)
            return
        if self._ssl is not None:  # TLS sockets have no sendmsg
            sock.sendall(head)
            sock.sendall(body)
            return
        parts = [memoryview(head), memoryview(body).cast("B")]
        while parts:
            sent = sock.sendmsg(parts)
            while parts and sent >= len(parts[0]):
                sent -= len(parts[0])
                parts.pop(0)
            if parts and sent:
                parts[0] = parts[0][sent:]

    def get(self, snapshot_id: str, ref: BlockRef) -> BlockBody:
        """One attempt, like Aws.get_snapshot_block: fetch, read, verify length and SHA-256."""
        if ref.token is None:
            raise ValueError(f"block {ref.index} has no token to read it with")
        resource = f"{snapshot_id} block {ref.index}"
        path = f"{self.base_path}/snapshots/{snapshot_id}/blocks/{ref.index}"
        _status, fields, data, got = self._exchange(
            "GetSnapshotBlock", resource, "GET", path, [("blockToken", ref.token)], {}, pool=self.pool
        )
        try:
            if got != len(data):
                self._drop()
                raise ChecksumMismatch(
                    f"GetSnapshotBlock {resource}: body ended after {got} of {len(data)} bytes"
                )
            return verified_block(
                f"GetSnapshotBlock {resource}",
                ref.index,
                data,
                fields.get("x-amz-data-length"),
                fields.get("x-amz-checksum-algorithm"),
                fields.get("x-amz-checksum"),
            )
        except BaseException:
            self.pool.give(data)  # a failed attempt's buffer: nobody else holds it
            raise

    def put(self, snapshot_id: str, index: int, data: bytes | bytearray | memoryview, checksum: str) -> None:
        """One PutSnapshotBlock attempt (the payload is sent unsigned, as botocore does)."""
        resource = f"{snapshot_id} block {index}"
        path = f"{self.base_path}/snapshots/{snapshot_id}/blocks/{index}"
        extra = {
            "x-amz-Data-Length": str(len(data)),
            "x-amz-Checksum": checksum,
            "x-amz-Checksum-Algorithm": "SHA256",
            "X-Amz-Content-SHA256": "UNSIGNED-PAYLOAD",
        }
        self._exchange(
            "PutSnapshotBlock", resource, "PUT", path, [], extra, data, payload_hash="UNSIGNED-PAYLOAD"
        )

    def _read_response(
        self, sock: socket.socket, pool: BufferPool | None = None
    ) -> tuple[int, dict[str, str], bytearray, int]:
        """A minimal HTTP/1.1 response reader: status, lower-cased headers, body by length.

        A 200 body of exactly the pool's size is received into a buffer lent by `pool`
        (given back here if the read fails); any other body into a fresh buffer."""
        head: bytearray = self._local.head
        view = memoryview(head)
        have = 0
        while True:
            n = sock.recv_into(view[have:], HEAD_FIRST if not have else len(head) - have)
            if not n:
                raise ConnectionResetError("connection closed before the response headers")
            have += n
            end = head.find(b"\r\n\r\n", 0, have)
            if end >= 0:
                break
            if have == len(head):
                raise ValueError("response headers too large")
        lines = bytes(head[:end]).decode("latin-1").split("\r\n")
        parts = lines[0].split(" ", 2)
        if len(parts) < 2 or not parts[0].startswith("HTTP/1."):
            raise ValueError(f"not an HTTP response: {lines[0][:80]!r}")
        status = int(parts[1])
        fields = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            fields[name.strip().lower()] = value.strip()
        if "chunked" in fields.get("transfer-encoding", "").lower():
            raise ValueError("chunked responses are not expected from GetSnapshotBlock")
        length = int(fields.get("content-length", "0"))
        lend = pool is not None and status == 200 and length == pool.size
        body = pool.take() if pool is not None and lend else bytearray(length)
        try:
            bview = memoryview(body)
            extra = min(have - end - 4, length)
            bview[:extra] = view[end + 4 : end + 4 + extra]
            got = extra
            flags = _WAITALL if self._ssl is None else 0
            while got < length:
                n = sock.recv_into(bview[got:], length - got, flags)
                if not n:
                    break
                got += n
            bview.release()
        except BaseException:
            if pool is not None:
                pool.give(body)
            raise
        return status, fields, body, got


def tls_context(verify: str | bool) -> ssl.SSLContext:
    """The TLS trust boto3 uses: a CA bundle file (`verify` a path), botocore's own bundle
    (True), or no verification (False, as boto3's verify=False)."""
    if verify is False:
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        return context
    cafile = verify if isinstance(verify, str) else get_cert_path(True)
    return ssl.create_default_context(cafile=cafile if isinstance(cafile, str) else None)


def fast_client(aws: Aws, pool: BufferPool | None = None) -> BlockClient | None:
    """The fast path where it can be used (BACULA_EC2_BOTO3_BLOCKS=1 forces boto3)."""
    if os.environ.get("BACULA_EC2_BOTO3_BLOCKS") == "1" or not BlockClient.usable(aws):
        return None
    return BlockClient(aws, pool=pool)
