"""One error type for everything AWS answers, and one classification of those answers.

Both ways of calling AWS end here: the boto3 clients (a botocore `ClientError`, or a
connection error) and the hand-signed block path of `blocks.py` (a status line, headers and
a restJson body). Either way an answer becomes an `AwsError` that names the operation, the
resource if known, AWS's code and message, the HTTP status and the request id (what AWS
Support asks for); the exception it came from stays its `__cause__` (`raise ... from exc`).

`kind_of` is the one rule saying what an answer means for the caller:

- `Kind.THROTTLED`: slow down and try again (the pacer is told);
- `Kind.NOT_YET_VISIBLE`: EBS direct does not see a snapshot that was just created or just
  completed (ebs-direct-facts §1.5): try again for a bounded time (`RetryPolicy.not_found_window`);
- `Kind.RETRYABLE`: a 5xx or a transient code: try again a bounded number of times;
- `Kind.FINAL`: anything else: trying again cannot help.

A retryable answer is a `RetryableAwsError`: an `AwsError` (so it reads the same if it ends a
job) and a `retry.Retryable` (so `retry.call_with_retry` tries it again).
"""

from __future__ import annotations

import contextlib
import enum
import json
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    ConnectionClosedError,
    EndpointConnectionError,
    IncompleteReadError,
    NoCredentialsError,
    ReadTimeoutError,
    ResponseStreamingError,
)

from ..retry import Retryable

T = TypeVar("T")


class Kind(enum.Enum):
    FINAL = "final"
    RETRYABLE = "retryable"
    THROTTLED = "throttled"
    NOT_YET_VISIBLE = "not-yet-visible"

    @classmethod
    def of(cls, exc: BaseException) -> Kind:
        """What an exception we raise means: its kind, or FINAL for anything not retryable."""
        if isinstance(exc, AwsError):
            return exc.kind
        if isinstance(exc, Retryable):
            if exc.throttled:
                return cls.THROTTLED
            return cls.NOT_YET_VISIBLE if exc.not_found else cls.RETRYABLE
        return cls.FINAL


#: botocore's standard retry mode and the EBS direct docs treat these as throttling (§1.5).
THROTTLE_CODES = frozenset(
    {"ThrottlingException", "RequestThrottledException", "RequestLimitExceeded", "Throttling"}
)
#: Codes that are transient whatever their HTTP status.
TRANSIENT_CODES = frozenset({"InternalServerException", "InternalError", "ServiceUnavailable", "Unavailable"})
#: EBS direct's "does not exist" for a snapshot StartSnapshot just opened or EC2 just completed
#: (ebs-direct-facts §1.5, coldsnap #43 and #141). EC2's own *.NotFound codes are final: a
#: missing volume, snapshot or instance there is missing.
NOT_YET_VISIBLE_CODES = frozenset({"ResourceNotFoundException"})


def subject(operation: str, resource: str | None) -> str:
    """What a message names: the operation, and the resource if known ("GetSnapshotBlock
    snap-0abc block 7")."""
    return f"{operation} {resource}" if resource else operation


def kind_of(code: str, status: int) -> Kind:
    """The one classification of an AWS error answer (its code and HTTP status)."""
    if code in THROTTLE_CODES:
        return Kind.THROTTLED
    if code in NOT_YET_VISIBLE_CODES:
        return Kind.NOT_YET_VISIBLE
    if code in TRANSIENT_CODES or status >= 500:
        return Kind.RETRYABLE
    return Kind.FINAL


class AwsError(Exception):
    """An AWS call failed; the message names the operation, the resource, AWS's reason and
    the request id: "<operation> [<resource>] failed: <code>: <message> (request id <id>)".
    """

    kind: Kind = Kind.FINAL

    def __init__(
        self,
        operation: str,
        code: str,
        message: str,
        *,
        resource: str | None = None,
        request_id: str | None = None,
        status: int | None = None,
    ) -> None:
        self.operation = operation
        self.code = code
        self.message = message
        self.resource = resource
        self.request_id = request_id
        self.status = status
        text = f"{subject(operation, resource)} failed: {code}: {message}"
        if request_id:
            text += f" (request id {request_id})"
        super().__init__(text)


class RetryableAwsError(AwsError, Retryable):
    """An AWS answer worth trying again (throttled, not yet visible, or transient)."""

    def __init__(
        self,
        operation: str,
        code: str,
        message: str,
        *,
        kind: Kind,
        resource: str | None = None,
        request_id: str | None = None,
        status: int | None = None,
    ) -> None:
        if kind is Kind.FINAL:
            raise ValueError("a RetryableAwsError cannot be final")
        super().__init__(operation, code, message, resource=resource, request_id=request_id, status=status)
        self.kind = kind
        self.throttled = kind is Kind.THROTTLED
        self.not_found = kind is Kind.NOT_YET_VISIBLE


def aws_error(
    operation: str,
    code: str,
    message: str,
    *,
    status: int,
    request_id: str | None = None,
    resource: str | None = None,
) -> AwsError:
    """The exception for one AWS error answer, classified by `kind_of`."""
    kind = kind_of(code, status)
    if kind is Kind.FINAL:
        return AwsError(operation, code, message, resource=resource, request_id=request_id, status=status)
    return RetryableAwsError(
        operation, code, message, kind=kind, resource=resource, request_id=request_id, status=status
    )


def _with_reason(message: str, reason: object) -> str:
    """EBS direct adds a Reason enum (e.g. SNAPSHOT_NOT_FOUND) to some errors."""
    if reason and str(reason) not in message:
        return f"{message} ({reason})" if message else str(reason)
    return message


def from_client_error(operation: str, exc: ClientError, *, resource: str | None = None) -> AwsError:
    """The boto3 path: botocore's parsed error response."""
    response: Mapping[str, Any] = exc.response
    err = response.get("Error", {})
    meta = response.get("ResponseMetadata", {})
    code = str(err.get("Code") or "Unknown")
    message = _with_reason(str(err.get("Message") or ""), response.get("Reason"))
    status = int(meta.get("HTTPStatusCode") or 0)
    request_id = meta.get("RequestId") or (meta.get("HTTPHeaders") or {}).get("x-amzn-requestid")
    return aws_error(
        operation,
        code,
        message,
        status=status,
        request_id=str(request_id) if request_id else None,
        resource=resource,
    )


def from_http(
    operation: str,
    status: int,
    headers: Mapping[str, str],
    body: bytes,
    *,
    resource: str | None = None,
) -> AwsError:
    """The hand-signed path: a restJson error answer (headers with lower-case names)."""
    doc: dict[str, Any] = {}
    with contextlib.suppress(ValueError):
        parsed = json.loads(body or b"{}")
        if isinstance(parsed, dict):
            doc = parsed
    code = (headers.get("x-amzn-errortype") or "").split(":", 1)[0]
    code = code or str(doc.get("__type", "")).rsplit("#", 1)[-1] or f"HTTP{status}"
    message = str(doc.get("Message") or doc.get("message") or f"HTTP status {status}")
    message = _with_reason(message, doc.get("Reason"))
    return aws_error(
        operation, code, message, status=status, request_id=headers.get("x-amzn-requestid"), resource=resource
    )


def transient(operation: str, exc: BaseException, *, resource: str | None = None) -> Retryable:
    """A connection that failed or a body that broke off: no answer, so no code; retryable."""
    return Retryable(f"{subject(operation, resource)}: {type(exc).__name__}: {exc}")


_CONNECTION_ERRORS = (
    EndpointConnectionError,
    ConnectionClosedError,
    ReadTimeoutError,
    ResponseStreamingError,
    IncompleteReadError,
)


def classify(operation: str, exc: Exception, *, resource: str | None = None) -> Exception:
    """A botocore failure as our exception (AwsError, RetryableAwsError or Retryable).

    Anything else (our own exceptions included) comes back unchanged, so mapping twice is
    harmless. The caller raises the result `from exc` unless it is `exc` itself.
    """
    if isinstance(exc, ClientError):
        return from_client_error(operation, exc, resource=resource)
    if isinstance(exc, _CONNECTION_ERRORS):
        return transient(operation, exc, resource=resource)
    if isinstance(exc, NoCredentialsError):
        return AwsError(
            operation,
            "NoCredentials",
            "no AWS credentials: set profile=, role_arn= or access_key=/secret_key=",
            resource=resource,
        )
    if isinstance(exc, BotoCoreError):
        return AwsError(operation, type(exc).__name__, str(exc), resource=resource)
    return exc


def call(operation: str, fn: Callable[[], T], *, resource: str | None = None) -> T:
    """`fn()`, with botocore failures raised as our exceptions, their cause kept."""
    try:
        return fn()
    except Exception as exc:
        mapped = classify(operation, exc, resource=resource)
        if mapped is exc:
            raise
        raise mapped from exc
