"""One error type and one classification (aws/errors.py): the boto3 path and the
hand-signed path make the same AwsError of the same HTTP answer (botocore's real parser on
one side, `from_http` on the other), the request id is in the message, causes are kept."""

from __future__ import annotations

import email.utils
import json
import logging
import os
import ssl
import time
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.awsrequest import AWSResponse
from botocore.config import Config
from botocore.exceptions import (
    ClientError,
    ConnectTimeoutError,
    CredentialRetrievalError,
    EndpointConnectionError,
    MetadataRetrievalError,
    NoCredentialsError,
    SSLError,
)
from hypothesis import given, settings
from hypothesis import strategies as st

from bacula_ec2.aws import AwsError
from bacula_ec2.aws.errors import (
    SKEW_TOLERANCE_S,
    Kind,
    RetryableAwsError,
    call,
    classify,
    explain,
    from_client_error,
    from_http,
    kind_of,
)
from bacula_ec2.jobs.restore_local import RestoreFailed
from bacula_ec2.retry import Retryable

from .restore_local_kit import TWO, files_under, new_restore


@pytest.mark.parametrize(
    ("code", "status", "kind"),
    [
        ("ThrottlingException", 400, Kind.THROTTLED),
        ("RequestThrottledException", 400, Kind.THROTTLED),
        ("RequestLimitExceeded", 503, Kind.THROTTLED),  # EC2's, whatever the status
        ("ResourceNotFoundException", 404, Kind.NOT_YET_VISIBLE),
        ("InternalServerException", 500, Kind.RETRYABLE),
        ("InternalError", 500, Kind.RETRYABLE),
        ("ServiceUnavailable", 503, Kind.RETRYABLE),
        ("SomethingNew", 502, Kind.RETRYABLE),  # any 5xx
        ("ValidationException", 400, Kind.FINAL),
        ("AccessDeniedException", 403, Kind.FINAL),
        ("UnauthorizedOperation", 403, Kind.FINAL),
        ("InvalidSnapshot.NotFound", 400, Kind.FINAL),  # EC2's NotFound is final
        ("ConflictException", 409, Kind.FINAL),
    ],
)
def test_kind_of(code: str, status: int, kind: Kind) -> None:
    assert kind_of(code, status) is kind
    err = from_client_error(
        "Op", ClientError({"Error": {"Code": code}, "ResponseMetadata": {"HTTPStatusCode": status}}, "Op")
    )
    assert err.kind is kind and Kind.of(err) is kind
    assert isinstance(err, Retryable) == (kind is not Kind.FINAL)
    if isinstance(err, Retryable):
        assert err.throttled == (kind is Kind.THROTTLED) and err.not_found == (kind is Kind.NOT_YET_VISIBLE)


def boto3_error(status: int, headers: dict[str, str], body: bytes) -> ClientError:
    """What a real boto3 EBS client raises for this HTTP answer (botocore parses it)."""
    client = boto3.client(
        "ebs",
        region_name="eu-west-1",
        aws_access_key_id="AKID",
        aws_secret_access_key="SECRET",
        config=Config(retries={"mode": "standard", "total_max_attempts": 1}),
    )

    class Raw:
        def stream(self, **_kw: object) -> object:
            return iter([body])

    def answer(request: object, **_kw: object) -> AWSResponse:
        return AWSResponse("https://ebs.eu-west-1.amazonaws.com", status, headers, Raw())

    client.meta.events.register("before-send.ebs.ListSnapshotBlocks", answer)
    with pytest.raises(ClientError) as info:
        client.list_snapshot_blocks(SnapshotId="snap-0123456789abcdef0")
    return info.value


CODES = [
    "ThrottlingException",
    "RequestThrottledException",
    "ResourceNotFoundException",
    "ValidationException",
    "AccessDeniedException",
    "InternalServerException",
    "ServiceQuotaExceededException",
    "InvalidSignatureException",
    "ExpiredTokenException",
    "ConcurrentLimitExceededException",
]
REASONS = {
    "RequestThrottledException": "ACCOUNT_THROTTLED",
    "ResourceNotFoundException": "SNAPSHOT_NOT_FOUND",
    "ValidationException": "INVALID_SNAPSHOT_ID",
    "AccessDeniedException": "UNAUTHORIZED_ACCOUNT",
    "ServiceQuotaExceededException": "DEPENDENCY_SERVICE_QUOTA_EXCEEDED",
}


@settings(max_examples=40, deadline=None)
@given(
    code=st.sampled_from(CODES),
    status=st.sampled_from([400, 402, 403, 404, 409, 500, 503]),
    message=st.text(st.characters(min_codepoint=32, max_codepoint=126), min_size=1, max_size=60),
    with_reason=st.booleans(),
    request_id=st.uuids().map(str),
    skew=st.one_of(st.none(), st.integers(-7200, 7200)),
)
def test_both_paths_make_the_same_error_of_the_same_answer(
    code: str, status: int, message: str, with_reason: bool, request_id: str, skew: int | None
) -> None:
    doc: dict[str, Any] = {"message": message}
    if with_reason and code in REASONS:
        doc["Reason"] = REASONS[code]
    headers = {
        "x-amzn-RequestId": request_id,
        "x-amzn-ErrorType": f"{code}:http://internal.amazon.com/coral/com.amazon.coral.service/",
        "Content-Type": "application/json",
    }
    if skew is not None:  # whole minutes, so the two classifications (a moment apart) agree
        headers["Date"] = email.utils.formatdate(time.time() // 60 * 60 + skew * 60, usegmt=True)
    body = json.dumps(doc).encode()
    boto = from_client_error("ListSnapshotBlocks", boto3_error(status, headers, body), resource="snap-1")
    fast = from_http(
        "ListSnapshotBlocks", status, {k.lower(): v for k, v in headers.items()}, body, resource="snap-1"
    )
    seen = [(e.code, e.message, e.status, e.request_id, e.kind, type(e), str(e)) for e in (boto, fast)]
    assert seen[0] == seen[1]
    assert boto.code == code and boto.request_id == request_id and boto.status == status
    assert str(boto).startswith(f"ListSnapshotBlocks snap-1 failed: {code}: ")
    assert str(boto).endswith(f" (request id {request_id})")
    if "Reason" in doc:
        assert doc["Reason"] in str(boto)


def test_ec2_error_keeps_its_request_id() -> None:
    """EC2's XML errors: botocore puts <RequestID> into ResponseMetadata."""
    exc = ClientError(
        {
            "Error": {
                "Code": "UnauthorizedOperation",
                "Message": "You are not authorized to perform this operation.",
            },
            "ResponseMetadata": {"RequestId": "7a62c49f-347e-4fc4-9331-6e8eEXAMPLE", "HTTPStatusCode": 403},
        },
        "CreateTags",
    )
    err = classify("CreateTags", exc, resource="snap-1")
    assert isinstance(err, AwsError) and not isinstance(err, Retryable)
    assert str(err) == (
        "CreateTags snap-1 failed: UnauthorizedOperation: You are not authorized to perform this "
        "operation. (request id 7a62c49f-347e-4fc4-9331-6e8eEXAMPLE)"
    )


def test_old_constructor_and_no_request_id() -> None:
    err = AwsError("CreateSnapshots", "Timeout", "not completed after 10 s")
    assert str(err) == "CreateSnapshots failed: Timeout: not completed after 10 s"
    assert err.request_id is None and err.resource is None and err.kind is Kind.FINAL
    with pytest.raises(ValueError):
        RetryableAwsError("Op", "X", "y", kind=Kind.FINAL)


def test_call_keeps_the_cause_and_leaves_our_own_exceptions_alone() -> None:
    def refused() -> None:
        raise ClientError({"Error": {"Code": "ValidationException", "Message": "bad"}}, "PutSnapshotBlock")

    with pytest.raises(AwsError) as info:
        call("PutSnapshotBlock", refused, resource="snap-1 block 3")
    assert isinstance(info.value.__cause__, ClientError)

    def unreachable() -> None:
        raise EndpointConnectionError(endpoint_url="https://ebs.example")

    with pytest.raises(Retryable, match="PutSnapshotBlock snap-1 block 3: EndpointConnectionError") as rinfo:
        call("PutSnapshotBlock", unreachable, resource="snap-1 block 3")
    assert Kind.of(rinfo.value) is Kind.RETRYABLE and isinstance(
        rinfo.value.__cause__, EndpointConnectionError
    )

    def no_credentials() -> None:
        raise NoCredentialsError()

    with pytest.raises(AwsError, match="NoCredentials: no AWS credentials"):
        call("DescribeInstances", no_credentials)

    mine = Retryable("already ours", throttled=True)

    def ours() -> None:
        raise mine

    with pytest.raises(Retryable) as same:
        call("Op", ours)
    assert same.value is mine and same.value.__cause__ is None  # mapped once, never wrapped
    assert classify("Op", mine) is mine
    plain = KeyError("x")
    assert classify("Op", plain) is plain and Kind.of(plain) is Kind.FINAL


def test_an_os_error_while_writing_a_restore_leaves_a_traceback_in_the_log(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    full = TWO.parts[0]
    r, _rec = new_restore(tmp_path / "t")

    def no_space(fd: int, data: bytes, offset: int) -> int:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "pwrite", no_space)
    r.start(full.name)
    with caplog.at_level(logging.ERROR, logger="bacula-ec2.restore"), pytest.raises(RestoreFailed) as info:
        r.data(memoryview(full.data))
    assert "No space left on device" in str(info.value) and full.name in str(info.value)
    logged = [rec for rec in caplog.records if rec.name == "bacula-ec2.restore"]
    assert logged and logged[0].exc_info is not None and logged[0].exc_info[0] is OSError
    assert full.name in logged[0].getMessage()
    monkeypatch.undo()
    r.abandon()
    assert not files_under(tmp_path / "t")


# ---------------------------------------------------------------------- the one table (issue 11)


def _botocore_throttle_codes() -> list[str]:
    """botocore's own list of throttling codes (standard retry mode) and the codes of
    `_retry.json` for EC2: if botocore learns a new one, this test says so."""
    import botocore.retries.standard as standard
    from botocore.loaders import Loader

    codes = set(standard.ThrottledRetryableChecker._THROTTLED_ERROR_CODES)
    retry = Loader().load_data("_retry")
    for policy in retry["retry"].get("ec2", {}).get("__default__", {}).get("policies", {}).values():
        code = policy.get("applies_when", {}).get("response", {}).get("service_error_code")
        if code:
            codes.add(code)
    return sorted(codes)


def _ebs_reason_enums() -> dict[str, list[str]]:
    from botocore.loaders import Loader

    model = Loader().load_service_model("ebs", "service-2")
    return {
        name: list(shape["enum"])
        for name, shape in model["shapes"].items()
        if name.endswith("Reason") and "enum" in shape
    }


@pytest.mark.parametrize("code", _botocore_throttle_codes())
@pytest.mark.parametrize("status", [400, 403, 503])
def test_every_botocore_throttle_code_is_throttling(code: str, status: int) -> None:
    assert kind_of(code, status) is Kind.THROTTLED


@pytest.mark.parametrize("code", ["SomethingNew", "TooManyRequests", ""])
def test_any_http_429_is_throttling(code: str) -> None:
    assert kind_of(code, 429) is Kind.THROTTLED


def test_every_ebs_reason_of_the_model_has_a_kind() -> None:
    """Every Reason enum of the ebs model is classified on purpose: throttling reasons
    (DEPENDENCY_REQUEST_THROTTLED...) throttle whatever the code, a dependency that denies
    access (KMS) is final, only SNAPSHOT_NOT_FOUND is 'not yet visible'."""
    enums = _ebs_reason_enums()
    for reason in enums["RequestThrottledExceptionReason"]:
        assert kind_of("RequestThrottledException", 400, reason) is Kind.THROTTLED, reason
    for reason in enums["AccessDeniedExceptionReason"]:
        assert kind_of("AccessDeniedException", 403, reason) is Kind.FINAL, reason
    for reason in enums["ResourceNotFoundExceptionReason"]:
        want = Kind.NOT_YET_VISIBLE if reason == "SNAPSHOT_NOT_FOUND" else Kind.FINAL
        assert kind_of("ResourceNotFoundException", 404, reason) is want, reason
    for reason in enums["ServiceQuotaExceededExceptionReason"]:
        assert kind_of("ServiceQuotaExceededException", 402, reason) is Kind.THROTTLED, reason
    for reason in enums["ValidationExceptionReason"]:
        assert kind_of("ValidationException", 400, reason) is Kind.FINAL, reason
    # a dependency refusing access stays final even if the status looks transient
    assert kind_of("AccessDeniedException", 500, "DEPENDENCY_ACCESS_DENIED") is Kind.FINAL


@pytest.mark.parametrize(
    "code",
    [
        "PendingSnapshotLimitExceeded",
        "ConcurrentSnapshotLimitExceeded",
        "SnapshotCreationPerVolumeRateExceeded",
        "ConcurrentLimitExceededException",
    ],
)
def test_snapshot_quotas_have_their_own_kind(code: str) -> None:
    err = from_client_error(
        "CreateSnapshots",
        ClientError(
            {"Error": {"Code": code, "Message": "m"}, "ResponseMetadata": {"HTTPStatusCode": 400}}, "Op"
        ),
    )
    assert err.kind is Kind.SNAPSHOT_LIMIT and Kind.of(err) is Kind.SNAPSHOT_LIMIT
    assert isinstance(err, Retryable) and not err.throttled and not err.not_found
    assert kind_of("SnapshotLimitExceeded", 400) is Kind.FINAL  # the account's total: waiting cannot help


@settings(max_examples=60, deadline=None)
@given(
    offset=st.integers(-86400, 86400), code=st.sampled_from(["RequestExpired", "InvalidSignatureException"])
)
def test_a_time_refusal_names_the_clock_offset_or_the_token(offset: int, code: str) -> None:
    now = 1_800_000_000.0
    date = email.utils.formatdate(now + offset, usegmt=True)
    message = (
        "Request has expired."
        if code == "RequestExpired"
        else "Signature expired: 20270115T080000Z is now earlier than ..."
    )
    text = explain(code, message, date, now=now)
    assert text.endswith(f"(AWS: {message})")
    if abs(offset) > SKEW_TOLERANCE_S:
        direction = "behind" if offset > 0 else "ahead of"
        assert f"the host's clock is {abs(offset)} s {direction} AWS's" in text and "fix NTP" in text
    else:
        assert "session_token=" in text and "role_arn=" in text and "NTP" not in text.split("(AWS:")[0]


def test_an_expired_token_says_to_use_a_role_or_a_profile() -> None:
    err = from_http(
        "GetSnapshotBlock",
        403,
        {"x-amzn-errortype": "ExpiredTokenException", "date": "Tue, 01 Dec 2026 12:00:00 GMT"},
        b'{"message": "The security token included in the request is expired"}',
    )
    assert err.kind is Kind.FINAL
    assert "session token has expired" in err.message and "role_arn= or a profile" in err.message
    assert "Tue, 01 Dec 2026 12:00:00 GMT" in err.message


def test_other_signature_failures_keep_awss_message() -> None:
    text = "The request signature we calculated does not match the signature you provided."
    assert explain("InvalidSignatureException", text, None) == text
    assert explain("SignatureDoesNotMatch", text, "Tue, 01 Dec 2026 12:00:00 GMT") == text


@pytest.mark.parametrize(
    "failure",
    [
        CredentialRetrievalError(provider="assume-role", error_msg="timed out"),
        MetadataRetrievalError(error_msg="IMDS"),
    ],
)
def test_credential_refresh_failures_are_transient(failure: Exception) -> None:
    mapped = classify("DescribeInstances", failure)
    assert isinstance(mapped, Retryable) and Kind.of(mapped) is Kind.RETRYABLE
    assert "credentials could not be refreshed" in str(mapped)


def test_an_sts_5xx_while_refreshing_is_transient_and_says_so() -> None:
    exc = ClientError(
        {
            "Error": {"Code": "InternalFailure", "Message": "oops"},
            "ResponseMetadata": {"HTTPStatusCode": 500},
        },
        "AssumeRole",
    )
    mapped = classify("DescribeInstances", exc)
    assert isinstance(mapped, RetryableAwsError) and mapped.kind is Kind.RETRYABLE
    assert "while refreshing credentials: AssumeRole" in str(mapped)


def test_a_certificate_failure_is_final_other_tls_failures_transient() -> None:
    bad = SSLError(
        endpoint_url="https://ec2.eu-west-1.amazonaws.com/",
        error=ssl.SSLCertVerificationError("[SSL: CERTIFICATE_VERIFY_FAILED] certificate verify failed"),
    )
    mapped = classify("DescribeInstances", bad)
    assert isinstance(mapped, AwsError) and mapped.kind is Kind.FINAL and not isinstance(mapped, Retryable)
    assert "TLS certificate of ec2.eu-west-1.amazonaws.com not trusted" in str(mapped)
    assert "ca_bundle=" in str(mapped) and "AWS_CA_BUNDLE" in str(mapped)
    eof = SSLError(
        endpoint_url="https://ec2/", error=ssl.SSLEOFError("EOF occurred in violation of protocol")
    )
    assert isinstance(classify("DescribeInstances", eof), Retryable)
    timeout = ConnectTimeoutError(endpoint_url="https://ec2/")
    assert isinstance(classify("DescribeInstances", timeout), Retryable)  # cdb0bf7: final
