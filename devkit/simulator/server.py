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
"""

from __future__ import annotations

import contextlib
import re
import socket
import struct
import sys
import threading
import time
import traceback
import uuid
from email.utils import formatdate
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
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


def _http_date() -> str:
    """RFC 7231 date, formatted once per second."""
    global _date_cache
    now = int(time.time())
    if _date_cache[0] != now:
        _date_cache = (now, formatdate(now, usegmt=True))
    return _date_cache[1]


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
            if kind in ("ec2", "ebs"):
                scope = credential_scope(self.headers.get("Authorization"), query)
                if scope is None:
                    return self._auth_error(kind, request_id)
                region, service = scope
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
                 f"Date: {_http_date()}\r\nContent-Type: {resp.content_type}\r\n"
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
