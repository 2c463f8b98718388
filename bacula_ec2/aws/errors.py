"""One error type for everything AWS answers, and one classification of those answers.

Both ways of calling AWS end here: the boto3 clients (a botocore `ClientError`, or a
connection error) and the hand-signed block path of `blocks.py` (a status line, headers and
a restJson body). Either way an answer becomes an `AwsError` that names the operation, the
resource if known, AWS's code and message, the HTTP status and the request id (what AWS
Support asks for); the exception it came from stays its `__cause__` (`raise ... from exc`).

`kind_of` is the one rule saying what an answer means for the caller (one table below:
`THROTTLE_CODES`, `REASON_KINDS`, `SNAPSHOT_LIMIT_CODES`, `TRANSIENT_CODES`, ...):

- `Kind.THROTTLED`: slow down and try again (the pacer is told): botocore's whole throttle
  list, any HTTP 429, and EBS direct's throttling reasons (`DEPENDENCY_REQUEST_THROTTLED`...);
- `Kind.NOT_YET_VISIBLE`: EBS direct does not see a snapshot that was just created or just
  completed (ebs-direct-facts §1.5), or EC2 does not see yet an id this job just created
  (the client's `fresh=True` calls): try again for a bounded time (`RetryPolicy.not_found_window`);
- `Kind.SNAPSHOT_LIMIT`: one of EC2's snapshot quotas (pending snapshots per region,
  concurrent snapshots per volume, 15 s between snapshots of a volume): try again after a
  long pause (15-30 s; jobs/ decide, the client never retries CreateSnapshot(s));
- `Kind.RETRYABLE`: a 5xx or a transient code: try again a bounded number of times;
- `Kind.AMBIGUOUS`: only on `AmbiguousCreate`: a CreateSnapshot(s) that got no definite
  answer (5xx, reset, read timeout): the snapshots may exist; look them up before trying again;
- `Kind.FINAL`: anything else: trying again cannot help (access denied, clock skew, an
  expired session token, an untrusted TLS certificate...).

A retryable answer is a `RetryableAwsError`: an `AwsError` (so it reads the same if it ends a
job) and a `retry.Retryable` (so `retry.call_with_retry` tries it again).

Some final answers get a message that says what to fix instead of AWS's terse one (still
naming AWS's code and keeping its text): a refusal for clock skew gives the offset computed
from the answer's `Date` header ("the host's clock is N s off AWS's: fix NTP"), an expired
session token says to use role_arn= or a profile, an untrusted certificate names the host
and `ca_bundle=`. docs/TROUBLESHOOTING.md lists them all.
"""

from __future__ import annotations

import contextlib
import enum
import json
import socket
import ssl
import time
import urllib.parse
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    ConnectTimeoutError,
    CredentialRetrievalError,
    EndpointConnectionError,
    HTTPClientError,
    IncompleteReadError,
    MetadataRetrievalError,
    NoCredentialsError,
    ProxyConnectionError,
    SSLError,
)
from botocore.exceptions import ConnectionError as BotoConnectionError

from .. import timefmt
from ..retry import Retryable

T = TypeVar("T")


class Kind(enum.Enum):
    FINAL = "final"
    RETRYABLE = "retryable"
    THROTTLED = "throttled"
    NOT_YET_VISIBLE = "not-yet-visible"
    SNAPSHOT_LIMIT = "snapshot-limit"
    AMBIGUOUS = "ambiguous"

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


# ---------------------------------------------------------------------- the table

#: botocore's standard retry mode (`botocore/retries/standard.py` _THROTTLED_ERROR_CODES and
#: `_retry.json`, botocore 1.44) plus the EBS direct docs (§1.5): throttling, whatever the status.
THROTTLE_CODES = frozenset(
    {
        "Throttling",
        "ThrottlingException",
        "ThrottledException",
        "RequestThrottledException",
        "TooManyRequestsException",
        "ProvisionedThroughputExceededException",
        "TransactionInProgressException",
        "RequestLimitExceeded",
        "BandwidthLimitExceeded",
        "LimitExceededException",
        "RequestThrottled",
        "SlowDown",
        "PriorRequestNotComplete",
        "EC2ThrottledException",
    }
)
#: HTTP statuses that mean throttling whatever the code (`_retry.json`: too_many_requests).
THROTTLE_STATUSES = frozenset({429})
#: EBS direct's `Reason` values (botocore model enums of the ebs service), checked before the
#: code: a dependency (KMS) throttling is throttling; a dependency refusing access is final
#: (a KMS key policy does not change by retrying); only SNAPSHOT_NOT_FOUND is "not yet".
REASON_KINDS: Mapping[str, Kind] = {
    "ACCOUNT_THROTTLED": Kind.THROTTLED,
    "RESOURCE_LEVEL_THROTTLE": Kind.THROTTLED,
    "DEPENDENCY_REQUEST_THROTTLED": Kind.THROTTLED,
    "DEPENDENCY_SERVICE_QUOTA_EXCEEDED": Kind.THROTTLED,
    "DEPENDENCY_ACCESS_DENIED": Kind.FINAL,
    "UNAUTHORIZED_ACCOUNT": Kind.FINAL,
    "DEPENDENCY_RESOURCE_NOT_FOUND": Kind.FINAL,
    "GRANT_NOT_FOUND": Kind.FINAL,
    "IMAGE_NOT_FOUND": Kind.FINAL,
    "SNAPSHOT_NOT_FOUND": Kind.NOT_YET_VISIBLE,
}
#: EC2's snapshot quotas (EC2 error codes page; tidb #44325): retried after a long pause.
#: `ConcurrentLimitExceededException` is EBS direct StartSnapshot's ("too many snapshots
#: being written"). SnapshotLimitExceeded (the account's total) is final: waiting cannot help.
SNAPSHOT_LIMIT_CODES = frozenset(
    {
        "PendingSnapshotLimitExceeded",
        "ConcurrentSnapshotLimitExceeded",
        "SnapshotCreationPerVolumeRateExceeded",
        "ConcurrentLimitExceededException",
    }
)
#: Codes that are transient whatever their HTTP status (botocore's _TRANSIENT_ERROR_CODES too).
TRANSIENT_CODES = frozenset(
    {
        "InternalServerException",
        "InternalError",
        "InternalFailure",
        "ServiceUnavailable",
        "ServiceUnavailableException",
        "Unavailable",
        "RequestTimeout",
        "RequestTimeoutException",
    }
)
#: EBS direct's "does not exist" for a snapshot StartSnapshot just opened or EC2 just completed
#: (ebs-direct-facts §1.5, coldsnap #43 and #141). EC2's own *.NotFound codes are final unless
#: the call is about an id this job just created (`fresh_not_found`).
NOT_YET_VISIBLE_CODES = frozenset({"ResourceNotFoundException"})
#: Refusals for a request signed too far from AWS's time (SigV4 allows 5 minutes).
CLOCK_SKEW_CODES = frozenset({"RequestTimeTooSkewed", "RequestInTheFuture"})
#: These mean skew or an expired token; the message (and the Date header) tell which.
EXPIRED_CODES = frozenset({"RequestExpired", "InvalidSignatureException", "SignatureDoesNotMatch"})
#: A session token past its expiry (STS-issued credentials that nobody refreshed).
EXPIRED_TOKEN_CODES = frozenset({"ExpiredToken", "ExpiredTokenException", "TokenRefreshRequired"})
#: More than this between the host's clock and the answer's Date header is clock skew.
SKEW_TOLERANCE_S = 240.0


def subject(operation: str, resource: str | None) -> str:
    """What a message names: the operation, and the resource if known ("GetSnapshotBlock
    snap-0abc block 7")."""
    return f"{operation} {resource}" if resource else operation


def kind_of(code: str, status: int, reason: str | None = None) -> Kind:
    """The one classification of an AWS error answer (its code, HTTP status, EBS reason)."""
    if reason and reason in REASON_KINDS:
        return REASON_KINDS[reason]
    if code in THROTTLE_CODES or status in THROTTLE_STATUSES:
        return Kind.THROTTLED
    if code in SNAPSHOT_LIMIT_CODES:
        return Kind.SNAPSHOT_LIMIT
    if code in NOT_YET_VISIBLE_CODES:
        return Kind.NOT_YET_VISIBLE
    if code in CLOCK_SKEW_CODES or code in EXPIRED_CODES or code in EXPIRED_TOKEN_CODES:
        return Kind.FINAL
    if code in TRANSIENT_CODES or status >= 500:
        return Kind.RETRYABLE
    return Kind.FINAL


def is_not_found(code: str) -> bool:
    """EC2's `Invalid<Resource>.NotFound` family (InvalidSnapshot.NotFound, InvalidAMIID.NotFound...)."""
    return code.startswith("Invalid") and code.endswith(".NotFound")


class AwsError(Exception):
    """An AWS call failed; the message names the operation, the resource, AWS's reason and
    the request id: "<operation> [<resource>] failed: <code>: <message> (request id <id>)".
    `reason` is EBS direct's Reason enum when there is one (INVALID_PAGE_TOKEN...).
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
        reason: str | None = None,
    ) -> None:
        self.operation = operation
        self.code = code
        self.message = message
        self.resource = resource
        self.request_id = request_id
        self.status = status
        self.reason = reason
        text = f"{subject(operation, resource)} failed: {code}: {message}"
        if request_id:
            text += f" (request id {request_id})"
        super().__init__(text)


class RetryableAwsError(AwsError, Retryable):
    """An AWS answer worth trying again (throttled, not yet visible, a quota, or transient)."""

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
        reason: str | None = None,
    ) -> None:
        if kind in (Kind.FINAL, Kind.AMBIGUOUS):
            raise ValueError(f"a RetryableAwsError cannot be {kind.value}")
        super().__init__(
            operation, code, message, resource=resource, request_id=request_id, status=status, reason=reason
        )
        self.kind = kind
        self.throttled = kind is Kind.THROTTLED
        self.not_found = kind is Kind.NOT_YET_VISIBLE


class AmbiguousCreate(AwsError):
    """CreateSnapshot(s) got no definite answer (a 5xx, a reset, a read timeout): AWS may have
    made the snapshots. Never retried blindly: look the job's snapshots up by their tags
    first. The failure that made it ambiguous is the `__cause__`."""

    kind = Kind.AMBIGUOUS


def aws_error(
    operation: str,
    code: str,
    message: str,
    *,
    status: int,
    request_id: str | None = None,
    resource: str | None = None,
    reason: str | None = None,
) -> AwsError:
    """The exception for one AWS error answer, classified by `kind_of`."""
    kind = kind_of(code, status, reason)
    if kind is Kind.FINAL:
        return AwsError(
            operation, code, message, resource=resource, request_id=request_id, status=status, reason=reason
        )
    return RetryableAwsError(
        operation,
        code,
        message,
        kind=kind,
        resource=resource,
        request_id=request_id,
        status=status,
        reason=reason,
    )


def _with_reason(message: str, reason: object) -> str:
    """EBS direct adds a Reason enum (e.g. SNAPSHOT_NOT_FOUND) to some errors."""
    if reason and str(reason) not in message:
        return f"{message} ({reason})" if message else str(reason)
    return message


def clock_offset(date_header: str | None, now: float | None = None) -> float | None:
    """AWS's clock minus the host's, in seconds, from an answer's HTTP `Date` header (None:
    no usable header)."""
    aws_time = timefmt.parse_http_date(date_header)
    if aws_time is None:
        return None
    return aws_time.timestamp() - (time.time() if now is None else now)


def explain(code: str, message: str, date_header: str | None, now: float | None = None) -> str:
    """AWS's message, or for a clock-skew or expired-token refusal a message that says what
    to fix (AWS's own text kept at its end)."""
    lower = message.lower()
    expired_text = any(word in lower for word in ("expired", "not yet current", "skew"))
    if code in EXPIRED_TOKEN_CODES or (
        code == "InvalidSignatureException" and "token" in lower and "expired" in lower
    ):
        return (
            "the session token has expired (a static session_token= is never refreshed): "
            "use role_arn= or a profile so credentials refresh"
            + (f"; AWS answered at {date_header}" if date_header else "")
            + f" (AWS: {message})"
        )
    if code in CLOCK_SKEW_CODES or (code in EXPIRED_CODES and (expired_text or code == "RequestExpired")):
        offset = clock_offset(date_header, now)
        if offset is not None and abs(offset) > SKEW_TOLERANCE_S:
            direction = "behind" if offset > 0 else "ahead of"
            return (
                f"the host's clock is {abs(offset):.0f} s {direction} AWS's "
                f"(Date header of the answer: {date_header}): fix NTP on this host (AWS: {message})"
            )
        if code in CLOCK_SKEW_CODES:
            return f"the host's clock is off AWS's: fix NTP on this host (AWS: {message})"
        if offset is not None:
            return (
                f"request expired, though the host's clock is within {abs(offset):.0f} s of AWS's: "
                "a static session_token= has probably expired: use role_arn= or a profile so "
                f"credentials refresh (AWS: {message})"
            )
        return (
            "request expired: either the host's clock is off AWS's (fix NTP) or a static "
            f"session_token= has expired (use role_arn= or a profile) (AWS: {message})"
        )
    return message


def from_client_error(operation: str, exc: ClientError, *, resource: str | None = None) -> AwsError:
    """The boto3 path: botocore's parsed error response."""
    response: Mapping[str, Any] = exc.response
    err = response.get("Error", {})
    meta = response.get("ResponseMetadata", {})
    headers = meta.get("HTTPHeaders") or {}
    code = str(err.get("Code") or "Unknown")
    reason = response.get("Reason") or err.get("Reason")
    message = _with_reason(str(err.get("Message") or ""), reason)
    message = explain(code, message, headers.get("date"))
    called = getattr(exc, "operation_name", None)
    if called and called != operation and called in ("AssumeRole", "AssumeRoleWithWebIdentity"):
        message = f"{message} (while refreshing credentials: {called})"
    status = int(meta.get("HTTPStatusCode") or 0)
    request_id = meta.get("RequestId") or headers.get("x-amzn-requestid")
    return aws_error(
        operation,
        code,
        message,
        status=status,
        request_id=str(request_id) if request_id else None,
        resource=resource,
        reason=str(reason) if reason else None,
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
    reason = doc.get("Reason")
    message = _with_reason(message, reason)
    message = explain(code, message, headers.get("date"))
    return aws_error(
        operation,
        code,
        message,
        status=status,
        request_id=headers.get("x-amzn-requestid"),
        resource=resource,
        reason=str(reason) if reason else None,
    )


def transient(operation: str, exc: BaseException, *, resource: str | None = None) -> Retryable:
    """A connection that failed or a body that broke off: no answer, so no code; retryable."""
    return Retryable(f"{subject(operation, resource)}: {type(exc).__name__}: {exc}")


def untrusted_certificate(
    operation: str, host: str, exc: BaseException, *, resource: str | None = None
) -> AwsError:
    """A TLS certificate we cannot verify: final (retrying cannot make it trusted)."""
    return AwsError(
        operation,
        "TLSCertificateNotTrusted",
        f"TLS certificate of {host} not trusted: {exc}; set ca_bundle= or AWS_CA_BUNDLE "
        "to the CA that signed it",
        resource=resource,
    )


def _certificate_failure(exc: BaseException) -> bool:
    """Whether a TLS failure (anywhere in its chain) is a certificate that did not verify."""
    seen: set[int] = set()
    todo: list[BaseException | None] = [exc]
    while todo:
        cur = todo.pop()
        if cur is None or id(cur) in seen:
            continue
        seen.add(id(cur))
        if isinstance(cur, ssl.SSLCertVerificationError) or "CERTIFICATE_VERIFY_FAILED" in str(cur):
            return True
        todo += [cur.__cause__, cur.__context__]
        todo += [a for a in getattr(cur, "args", ()) if isinstance(a, BaseException)]
        kwargs = getattr(cur, "kwargs", None)
        if isinstance(kwargs, dict):
            todo += [v for v in kwargs.values() if isinstance(v, BaseException)]
    return False


#: No request left the host: it cannot have done anything (CreateSnapshots may be tried again).
NOT_SENT_ERRORS = (EndpointConnectionError, ConnectTimeoutError, ProxyConnectionError, SSLError)
#: No answer (or half of one): retryable where the call may be repeated.
_CONNECTION_ERRORS = (BotoConnectionError, HTTPClientError, IncompleteReadError)
#: botocore could not get credentials this time (IMDS or STS hiccup): like a transient error.
_CREDENTIAL_REFRESH_ERRORS = (CredentialRetrievalError, MetadataRetrievalError)


def classify(operation: str, exc: Exception, *, resource: str | None = None) -> Exception:
    """A botocore failure as our exception (AwsError, RetryableAwsError or Retryable).

    Anything else (our own exceptions included) comes back unchanged, so mapping twice is
    harmless. The caller raises the result `from exc` unless it is `exc` itself.
    """
    if isinstance(exc, ClientError):
        return from_client_error(operation, exc, resource=resource)
    if isinstance(exc, SSLError) and _certificate_failure(exc):
        url = str(getattr(exc, "kwargs", {}).get("endpoint_url") or "")
        host = urllib.parse.urlsplit(url).hostname or url or "the endpoint"
        return untrusted_certificate(operation, host, exc, resource=resource)
    if isinstance(exc, _CONNECTION_ERRORS):
        return transient(operation, exc, resource=resource)
    if isinstance(exc, _CREDENTIAL_REFRESH_ERRORS):
        return Retryable(f"{subject(operation, resource)}: credentials could not be refreshed: {exc}")
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


def fresh_not_found(exc: Exception) -> Exception:
    """For an id this job just created: EC2's `Invalid*.NotFound` means "not visible yet"
    (EC2's eventual consistency), so it becomes NOT_YET_VISIBLE (retried within the
    policy's window); anything else comes back unchanged."""
    if isinstance(exc, AwsError) and exc.kind is Kind.FINAL and is_not_found(exc.code):
        return RetryableAwsError(
            exc.operation,
            exc.code,
            exc.message,
            kind=Kind.NOT_YET_VISIBLE,
            resource=exc.resource,
            request_id=exc.request_id,
            status=exc.status,
            reason=exc.reason,
        )
    return exc


def ambiguous_create(exc: BaseException) -> bool:
    """Whether a failed create may still have created: no definite answer came back (a
    5xx or transient code, a reset, a read timeout). A 4xx answer (throttling and quotas
    included: EC2 refused before acting) or a request that never left (connect failure,
    TLS) is definite."""
    if isinstance(exc, AwsError):
        return exc.kind is Kind.RETRYABLE
    if isinstance(exc, Retryable):
        cause = exc.__cause__
        return not isinstance(cause, (*NOT_SENT_ERRORS, ConnectionRefusedError, socket.gaierror))
    return False


def call(operation: str, fn: Callable[[], T], *, resource: str | None = None, fresh: bool = False) -> T:
    """`fn()`, with botocore failures raised as our exceptions, their cause kept. `fresh`:
    the call names ids this job just created (see `fresh_not_found`)."""
    try:
        return fn()
    except Exception as exc:
        mapped = classify(operation, exc, resource=resource)
        if fresh:
            mapped = fresh_not_found(mapped)
        if mapped is exc:
            raise
        raise mapped from exc
