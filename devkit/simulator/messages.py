"""Protocol-neutral request/response records passed between the server and the API layers."""

from __future__ import annotations

from dataclasses import dataclass, field
from email.message import Message


@dataclass(slots=True)
class Request:
    method: str
    path: str  # without the query string, percent-decoding left to the API layer
    query: dict[str, str]
    headers: Message  # case-insensitive, as http.server parses them
    body: bytes
    region: str  # from the SigV4 credential scope (or the control API's parameter)
    service: str | None
    request_id: str


@dataclass(slots=True)
class Response:
    """``body`` is sent as is: API layers pass stored block bytes without copying them."""

    status: int
    body: bytes = b""
    content_type: str = "application/json"
    headers: list[tuple[str, str]] = field(default_factory=list)
    fault: str | None = None  # "connection_reset" | "truncated_body": the server misbehaves
