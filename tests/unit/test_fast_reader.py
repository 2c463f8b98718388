"""The fast GetSnapshotBlock path signs exactly as botocore does, and maps errors alike."""

from __future__ import annotations

import datetime as dt

import pytest
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials
from hypothesis import given, settings
from hypothesis import strategies as st

from bacula_ec2.aws.blocks import SigV4, uri_encode

token_chars = st.text(
    alphabet="ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/=", min_size=1, max_size=200
)


def botocore_auth(url: str, creds: Credentials, region: str) -> dict[str, str]:
    request = AWSRequest(method="GET", url=url, headers={})
    SigV4Auth(creds, "ebs", region).add_auth(request)
    return dict(request.headers.items())


@settings(max_examples=50, deadline=None)
@given(token=token_chars, index=st.integers(0, 2**31 - 1), session=st.booleans())
def test_signature_matches_botocore(token: str, index: int, session: bool) -> None:
    creds = Credentials(
        "AKIDEXAMPLE", "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY", "TOKEN/+=" if session else None
    )
    host = "ebs.eu-west-1.amazonaws.com"
    path = f"/snapshots/snap-0123456789abcdef0/blocks/{index}"
    url = f"https://{host}{path}?blockToken={uri_encode(token)}"
    expected = botocore_auth(url, creds, "eu-west-1")
    when = dt.datetime.strptime(expected["X-Amz-Date"], "%Y%m%dT%H%M%SZ").replace(tzinfo=dt.UTC)
    ours = SigV4("eu-west-1").headers(
        "GET", host, path, [("blockToken", token)], creds.access_key, creds.secret_key, creds.token, when
    )
    assert ours["Authorization"] == expected["Authorization"]
    assert ours["X-Amz-Date"] == expected["X-Amz-Date"]
    if session:
        assert ours["X-Amz-Security-Token"] == expected["X-Amz-Security-Token"]


@pytest.mark.parametrize(("text", "encoded"), [("a+b/c=", "a%2Bb%2Fc%3D"), ("~-_.", "~-_.")])
def test_uri_encode(text: str, encoded: str) -> None:
    assert uri_encode(text) == encoded


@settings(max_examples=300, deadline=None)
@given(text=st.one_of(token_chars, st.text(), st.text(alphabet="+/=-_.~%aZ09 \u00e9")))
def test_uri_encode_is_sigv4_encoding_for_any_text(text: str) -> None:
    """The fast path for base64 tokens gives what percent-encoding every byte but the
    unreserved ones gives (the general rule, kept for anything else)."""
    import urllib.parse

    assert uri_encode(text) == urllib.parse.quote(text, safe="-_.~")


def test_put_signature_matches_botocore() -> None:
    """PutSnapshotBlock: botocore signs the checksum headers and sends the payload unsigned."""
    import base64
    import hashlib

    import boto3
    from botocore.awsrequest import AWSResponse

    client = boto3.client(
        "ebs", region_name="eu-west-1", aws_access_key_id="AKID", aws_secret_access_key="S/+ECRET"
    )
    seen: dict[str, object] = {}

    class Raw:
        def stream(self, **_kw: object) -> object:
            return iter([b"{}"])

    def capture(request: object, **_kw: object) -> AWSResponse:
        seen["request"] = request
        return AWSResponse("https://x", 201, {}, Raw())

    client.meta.events.register("before-send.ebs.PutSnapshotBlock", capture)
    data = b"\x01" * 524288
    checksum = base64.b64encode(hashlib.sha256(data).digest()).decode()
    client.put_snapshot_block(
        SnapshotId="snap-0123456789abcdef0",
        BlockIndex=77,
        BlockData=data,
        DataLength=524288,
        Checksum=checksum,
        ChecksumAlgorithm="SHA256",
    )
    request = seen["request"]
    headers = {k: (v.decode() if isinstance(v, bytes) else v) for k, v in request.headers.items()}  # type: ignore[attr-defined]
    when = dt.datetime.strptime(headers["X-Amz-Date"], "%Y%m%dT%H%M%SZ").replace(tzinfo=dt.UTC)
    ours = SigV4("eu-west-1").headers(
        "PUT",
        "ebs.eu-west-1.amazonaws.com",
        "/snapshots/snap-0123456789abcdef0/blocks/77",
        [],
        "AKID",
        "S/+ECRET",
        None,
        when,
        extra={
            "x-amz-Data-Length": "524288",
            "x-amz-Checksum": checksum,
            "x-amz-Checksum-Algorithm": "SHA256",
            "X-Amz-Content-SHA256": "UNSIGNED-PAYLOAD",
        },
        payload_hash="UNSIGNED-PAYLOAD",
    )
    assert ours["Authorization"] == headers["Authorization"]
