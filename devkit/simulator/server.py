"""The simulator's HTTP server: one port on 127.0.0.1 for EC2, EBS direct and control.

Routing: ``/_sim/...`` -> control, ``/snapshots...`` -> EBS direct, ``/`` with ``Action`` ->
EC2 (or STS when the SigV4 scope names ``sts``). The region (and service) of an AWS call come
from the SigV4 credential scope in the Authorization header; signatures are not verified,
but the header must be there. No credential or Authorization header is ever logged.

HTTP/1.1 keep-alive with Content-Length on every response and Nagle off. The response head
is built as one bytes object and sent with the stored body in a single ``sendmsg`` (no
copy of the 512 KiB block), because SDK clients reuse connections and the block read path
must not be what limits a benchmark (see bench/simulator_capacity.py).

Faults asked for by the policy happen here: ``connection_reset`` closes the socket without
a response (RST), ``truncated_body`` sends an honest Content-Length, half the body, and
closes.

Transport (docs/SIMULATOR.md, "Hard mode"): the port sniffs the first byte of each
connection and speaks TLS to a ClientHello (certificate from :mod:`.tls`, CA PEM at
``/_sim/tls-ca.pem``) and plain HTTP otherwise. With the ``tls`` knob, an EC2/EBS/STS request
over plain HTTP is refused by closing the connection; ``/_sim/`` works over both. Every AWS
request is then checked against the service's clock (real time + ``clock_offset_s``, also
sent in each response's ``Date``): a SigV4 date more than 5 minutes off, or a session token
this simulator issued that has expired, is refused with the code each protocol uses.
"""

from __future__ import annotations

import calendar
import contextlib
import re
import socket
import ssl
import struct
import sys
import threading
import time
import traceback
import uuid
from collections.abc import Mapping
from email.message import Message
from email.utils import formatdate, parsedate_to_datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from .control import ControlApi
from .ebs_api import EbsApi
from .ebs_api import error_response as ebs_error
from .ec2_api import XML, Ec2Api
from .errors import DropConnection, SimError
from .messages import Request, Response
from .model import DEFAULT_REGION, DEFAULT_SNAPSHOT_DELAY, World
from .policy import Policy
from .query_codec import error_xml
from .sts_api import StsApi
from .sts_api import error_xml as sts_error_xml
from .tls import is_tls_hello
from .tls import material as tls_material

_SCOPE_RE = re.compile(r"Credential=[^/,\s]+/\d{8}/([a-z0-9-]+)/([a-z0-9-]+)/aws4_request")
_QUERY_SCOPE_RE = re.compile(r"^[^/]+/\d{8}/([a-z0-9-]+)/([a-z0-9-]+)/aws4_request$")


def credential_scope(authorization: str | None, query: dict[str, str]) -> tuple[str, str] | None:
    """(region, service) from a SigV4 Authorization header or presigned query, else None."""
    if authorization:
        match = _SCOPE_RE.search(authorization)
        return (match.group(1), match.group(2)) if match else None
    cred = query.get("X-Amz-Credential")
    if cred:
        match = _QUERY_SCOPE_RE.match(cred)
        return (match.group(1), match.group(2)) if match else None
    return None


_date_cache: tuple[int, str] = (0, "")

# A SigV4 request whose date is further than this from the service's clock is refused.
# (AWS's SigV4 services answer "... (<now> - 5 min.)"; EC2's error list says 15 minutes:
# the simulator is the stricter of the two.)
MAX_SKEW_S = 300
_AMZ_DATE = "%Y%m%dT%H%M%SZ"


def _http_date(offset: float = 0.0) -> str:
    """RFC 7231 date of the service's clock, formatted once per second."""
    global _date_cache
    now = int(time.time() + offset)
    if _date_cache[0] != now:
        _date_cache = (now, formatdate(now, usegmt=True))
    return _date_cache[1]


def request_time(headers: Message | Mapping[str, str],
                 query: Mapping[str, str]) -> float | None:
    """Epoch seconds of a request's SigV4 date: ``X-Amz-Date`` (header or presigned query),
    else ``Date``, as AWS reads them; None if there is none or it does not parse."""
    raw = headers.get("X-Amz-Date") or query.get("X-Amz-Date")
    if raw:
        try:
            return float(calendar.timegm(time.strptime(raw.strip(), _AMZ_DATE)))
        except ValueError:
            return None
    raw = headers.get("Date")
    if raw:
        try:
            return parsedate_to_datetime(raw).timestamp()
        except (TypeError, ValueError):
            return None
    return None


def _amz(epoch: float) -> str:
    return time.strftime(_AMZ_DATE, time.gmtime(epoch))


def skew_error(kind: str, service: str | None, sent: float, now: float) -> SimError:
    """What AWS answers a request signed ``sent`` when its clock says ``now``: EC2
    ``RequestExpired`` (both directions), STS ``SignatureDoesNotMatch`` and EBS direct
    ``InvalidSignatureException`` with the SigV4 "Signature expired" wording."""
    if kind == "ec2" and service != "sts":
        return SimError("RequestExpired", "Request has expired.", 400)
    if sent < now:
        message = (f"Signature expired: {_amz(sent)} is now earlier than "
                   f"{_amz(now - MAX_SKEW_S)} ({_amz(now)} - 5 min.)")
    else:
        message = (f"Signature not yet current: {_amz(sent)} is still later than "
                   f"{_amz(now + MAX_SKEW_S)} ({_amz(now)} + 5 min.)")
    if service == "sts":
        return SimError("SignatureDoesNotMatch", message, 403)
    return SimError("InvalidSignatureException", message, 403)


def expired_token_error(kind: str, service: str | None) -> SimError:
    """An expired session token: EC2 ``RequestExpired``, STS ``ExpiredToken``, EBS direct
    ``ExpiredTokenException`` (403, AWS's common errors)."""
    if kind == "ec2" and service != "sts":
        return SimError("RequestExpired", "Request has expired.", 400)
    message = "The security token included in the request is expired"
    if service == "sts":
        return SimError("ExpiredToken", message, 403)
    return SimError("ExpiredTokenException", message, 403)


class SimulatorServer(ThreadingHTTPServer):
    """Threaded HTTP server holding the world and the three API layers."""

    daemon_threads = True
    block_on_close = False
    allow_reuse_address = True
    request_queue_size = 128

    def __init__(self, address: tuple[str, int] = ("127.0.0.1", 0), world: World | None = None,
                 policy: Policy | None = None, verbose: bool = False) -> None:
        super().__init__(address, SimulatorHandler)
        self.world = world or World()
        self.policy = policy or Policy(self.world)
        self.verbose = verbose
        self.ec2 = Ec2Api(self.world, self.policy)
        self.ebs = EbsApi(self.world, self.policy)
        self.sts = StsApi(self.world, self.policy)
        self.control = ControlApi(self.world, self.policy)
        self._tls_lock = threading.Lock()
        self._tls_context: ssl.SSLContext | None = None

    def finish_request(self, request: Any, client_address: Any) -> None:
        """Sniff the connection's first byte: 0x16 is a TLS ClientHello (wrap the socket and
        handshake here, in the connection's thread), anything else plain HTTP."""
        conn: socket.socket = request
        conn.settimeout(SimulatorHandler.timeout)
        try:
            first = conn.recv(1, socket.MSG_PEEK)
        except OSError:
            return
        if not first:
            return
        if is_tls_hello(first):
            try:
                conn = self.tls_context().wrap_socket(conn, server_side=True)
            except (ssl.SSLError, OSError) as exc:  # e.g. the client does not trust our CA
                if self.verbose:
                    sys.stderr.write(f"sim: TLS handshake failed: {exc}\n")
                return
        try:
            SimulatorHandler(conn, client_address, self)
        finally:
            if conn is not request:
                with contextlib.suppress(OSError):
                    conn.close()

    def tls_context(self) -> ssl.SSLContext:
        with self._tls_lock:
            if self._tls_context is None:
                self._tls_context = tls_material().server_context()
            return self._tls_context

    def server_bind(self) -> None:
        """Large socket buffers: 512 KiB bodies should leave in few syscalls."""
        self.socket.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4 << 20)
        super().server_bind()

    def handle_error(self, request: object, client_address: object) -> None:
        """Clients hanging up mid-response are normal; anything else is printed."""
        if isinstance(sys.exc_info()[1], ConnectionError) and not self.verbose:
            return
        super().handle_error(request, client_address)  # type: ignore[arg-type]

    @property
    def endpoint(self) -> str:
        host, port = self.server_address[:2]
        return f"http://{host!s}:{port}"

    @property
    def https_endpoint(self) -> str:
        """The same port over TLS (trust ``tls.material().ca_path``)."""
        host, port = self.server_address[:2]
        return f"https://{host!s}:{port}"


class SimulatorHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True
    server_version = "AWSSimulator/1"
    sys_version = ""
    timeout = 600  # seconds an idle keep-alive connection may hold a thread
    server: SimulatorServer

    def version_string(self) -> str:
        return self.server_version

    def do_GET(self) -> None:
        self._dispatch()

    do_POST = do_PUT = do_DELETE = do_HEAD = do_GET

    def _dispatch(self) -> None:
        request_id = str(uuid.uuid4())
        try:
            resp = self._respond(request_id)
        except DropConnection:
            self._drop()
            return
        self._send(resp, request_id)

    def _respond(self, request_id: str) -> Response:
        split = urlsplit(self.path)
        path = split.path or "/"
        kind = ("control" if path.startswith("/_sim/") else
                "ebs" if path == "/snapshots" or path.startswith("/snapshots/") else
                "ec2" if path == "/" else "unknown")
        try:
            if "chunked" in (self.headers.get("Transfer-Encoding") or "").lower():
                self.close_connection = True
                return Response(411, b'{"message":"Content-Length required"}')
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            query = dict(parse_qsl(split.query, keep_blank_values=True))
            region, service = DEFAULT_REGION, None
            if kind != "control" and self.server.world.opts.tls and not isinstance(
                    self.connection, ssl.SSLSocket):
                raise DropConnection  # plain HTTP to an AWS API that only speaks HTTPS
            if kind in ("ec2", "ebs"):
                scope = credential_scope(self.headers.get("Authorization"), query)
                if scope is None:
                    return self._auth_error(kind, request_id)
                region, service = scope
                refused = self._check_auth(kind, service, query)
                if refused is not None:
                    return self._refuse(kind, service, refused, request_id)
            elif kind == "unknown":
                return Response(404, b'{"message":"Not Found"}')
            req = Request(self.command, path, query, self.headers, body, region, service,
                          request_id)
            if kind == "control":
                return self.server.control.handle(req)
            if kind == "ebs":
                return self.server.ebs.handle(req)
            if service == "sts":
                return self.server.sts.handle(req)
            return self.server.ec2.handle(req)
        except DropConnection:
            raise
        except Exception:  # a simulator bug: say so loudly, answer like AWS's 500
            traceback.print_exc(file=sys.stderr)
            err = SimError("InternalError" if kind == "ec2" else "InternalServerException",
                           "Simulator internal error", 500)
            if kind == "ec2":
                return Response(500, error_xml(err.code, err.message, request_id), XML)
            return ebs_error(err)

    def _check_auth(self, kind: str, service: str | None,
                    query: Mapping[str, str]) -> SimError | None:
        """Clock skew, then an expired simulator-issued session token (None: accepted)."""
        world = self.server.world
        now = time.time() + world.opts.clock_offset_s
        sent = request_time(self.headers, query)
        if sent is not None and abs(sent - now) > MAX_SKEW_S:
            return skew_error(kind, service, sent, now)
        token = self.headers.get("X-Amz-Security-Token") or query.get("X-Amz-Security-Token")
        if token:
            expiry = world.session_tokens.get(token)
            if expiry is not None and now >= expiry:
                return expired_token_error(kind, service)
        return None

    @staticmethod
    def _refuse(kind: str, service: str | None, err: SimError, request_id: str) -> Response:
        if kind == "ebs":
            return ebs_error(err)
        if service == "sts":
            return Response(err.status, sts_error_xml(err.code, err.message, request_id), XML)
        return Response(err.status, error_xml(err.code, err.message, request_id), XML)

    @staticmethod
    def _auth_error(kind: str, request_id: str) -> Response:
        if kind == "ec2":
            return Response(403, error_xml(
                "AuthFailure", "AWS was not able to validate the provided access credentials",
                request_id), XML)
        return ebs_error(SimError("MissingAuthenticationTokenException",
                                  "Missing Authentication Token", 403))

    def _send(self, resp: Response, request_id: str) -> None:
        """Status line and headers as one bytes object, then one ``sendmsg`` with the body."""
        status = resp.status
        phrase = self.responses.get(status, ("",))[0]
        body: bytes | memoryview = resp.body if self.command != "HEAD" else b""
        lines = [f"HTTP/1.1 {status} {phrase}\r\nServer: {self.server_version}\r\n"
                 f"Date: {_http_date(self.server.world.opts.clock_offset_s)}\r\n"
                 f"Content-Type: {resp.content_type}\r\n"
                 f"Content-Length: {len(resp.body)}\r\nx-amzn-RequestId: {request_id}\r\n"]
        for name, value in resp.headers:
            lines.append(f"{name}: {value}\r\n")
        if self.close_connection:
            lines.append("Connection: close\r\n")
        lines.append("\r\n")
        head = "".join(lines).encode("latin-1")
        if resp.fault == "truncated_body":  # honest Content-Length, then hang up mid-body
            body = memoryview(body)[:len(body) // 2]
            self.close_connection = True
        sock = self.connection
        if isinstance(sock, ssl.SSLSocket):  # no sendmsg on TLS sockets
            sock.sendall(head)
            if body:
                sock.sendall(body)
            sent = len(head) + len(body)
        else:
            sent = sock.sendmsg([head, body]) if body else sock.send(head)
        total = len(head) + len(body)
        if sent < total:  # finish what the kernel did not take in one go
            rest = memoryview(body)[sent - len(head):] if sent >= len(head) else None
            if rest is None:
                sock.sendall(memoryview(head)[sent:])
                sock.sendall(body)
            else:
                sock.sendall(rest)
        if resp.fault == "truncated_body":
            self._drop(graceful=True)
        self.log_request(status, len(body))

    def _drop(self, graceful: bool = False) -> None:
        """Hang up: RST without a response (connection reset), or FIN after a partial body."""
        self.close_connection = True
        if not graceful:
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER,
                                       struct.pack("ii", 1, 0))
        with contextlib.suppress(OSError):
            self.connection.shutdown(socket.SHUT_RDWR if graceful else socket.SHUT_RD)

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        """Verbose mode logs method, path (no query string) and status; never headers."""
        if self.server.verbose:
            path = urlsplit(self.path).path
            sys.stderr.write(f"sim: {self.command} {path} {code}\n")

    def log_message(self, format: str, *args: object) -> None:
        if self.server.verbose:
            sys.stderr.write("sim: " + (format % args) + "\n")


def start_in_thread(port: int = 0, host: str = "127.0.0.1",
                    snapshot_delay: float = DEFAULT_SNAPSHOT_DELAY,
                    verbose: bool = False) -> tuple[SimulatorServer, str]:
    """Serve in a daemon thread (for in-process tests); returns (server, endpoint_url)."""
    server = SimulatorServer((host, port), World(snapshot_delay), verbose=verbose)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05},
                              name="aws-simulator", daemon=True)
    thread.start()
    return server, server.endpoint


def stop(server: SimulatorServer) -> None:
    """Stop serving and close the listening socket (open keep-alive threads are daemons)."""
    server.shutdown()
    server.server_close()
