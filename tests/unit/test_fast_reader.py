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
