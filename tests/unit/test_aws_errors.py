"""One error type and one classification (aws/errors.py): the boto3 path and the
hand-signed path make the same AwsError of the same HTTP answer (botocore's real parser on
one side, `from_http` on the other), the request id is in the message, causes are kept."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.awsrequest import AWSResponse
from botocore.config import Config
from botocore.exceptions import ClientError, EndpointConnectionError, NoCredentialsError
from hypothesis import given, settings
from hypothesis import strategies as st

from bacula_ec2.aws import AwsError
from bacula_ec2.aws.errors import (
    Kind,
    RetryableAwsError,
    call,
    classify,
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
)
def test_both_paths_make_the_same_error_of_the_same_answer(
    code: str, status: int, message: str, with_reason: bool, request_id: str
) -> None:
    doc: dict[str, Any] = {"message": message}
    if with_reason and code in REASONS:
        doc["Reason"] = REASONS[code]
    headers = {
        "x-amzn-RequestId": request_id,
        "x-amzn-ErrorType": f"{code}:http://internal.amazon.com/coral/com.amazon.coral.service/",
        "Content-Type": "application/json",
    }
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
