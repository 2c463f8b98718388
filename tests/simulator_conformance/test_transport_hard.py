"""Hard mode, transport and EBS side (docs/SIMULATOR.md "Hard mode"): HTTPS with the
simulator's CA, the service's clock (skew refused per protocol, ``Date`` header), expired
session tokens, StartSnapshot Timeout counted from the start or from the last put, KMS keys
(format, denied keys on EBS direct and EC2) and NextToken expiry with StartingBlockIndex
resumption."""

from __future__ import annotations

import re
import socket
import ssl
import time
from email.utils import parsedate_to_datetime
from typing import TYPE_CHECKING, Any

import boto3
import botocore.exceptions
import pytest
from botocore.config import Config
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from devkit.simulator import BLOCK_SIZE, SimulatorClient

from .conftest import ClientFactory, block, error_of, put, read

if TYPE_CHECKING:
    from devkit.simulator.fixtures import RunningSimulator

REGION = "us-east-1"
KEY = "arn:aws:kms:us-east-1:123456789012:key/11111111-2222-3333-4444-555555555555"
OTHER_KEY = "arn:aws:kms:us-east-1:123456789012:key/66666666-7777-8888-9999-000000000000"
NO_RETRY = Config(retries={"total_max_attempts": 1, "mode": "standard"})


_SESSIONS: list[boto3.session.Session] = []


def _session() -> boto3.session.Session:
    if not _SESSIONS:
        _SESSIONS.append(boto3.session.Session())
    return _SESSIONS[0]


def _client(sim: RunningSimulator, service: str, tls: bool | None = None,
            **creds: Any) -> Any:
    kwargs = sim.boto3_kwargs(REGION, tls=tls)
    kwargs.update(creds)
    return _session().client(service, config=NO_RETRY, **kwargs)


def _seed_snapshot(sim: RunningSimulator, ec2: Any, indexes: list[int], size: int = 1,
                   encrypted: bool = False, kms_key_id: str | None = None) -> tuple[str, str]:
    vol = sim.client.create_volume(size, encrypted=encrypted, kms_key_id=kms_key_id)
    for i in indexes:
        sim.client.write_volume(vol, i * BLOCK_SIZE, block(i))
    snap = ec2.create_snapshot(VolumeId=vol)["SnapshotId"]
    return vol, snap


# ------------------------------------------------------------------ TLS


def test_https_with_the_simulator_ca_and_plain_http_refused(sim: RunningSimulator) -> None:
    pem = sim.client.tls_ca_pem()
    assert pem.startswith(b"-----BEGIN CERTIFICATE-----")
    sim.client.set_options(tls=True, snapshot_delay=0)
    assert sim.api_endpoint().startswith("https://127.0.0.1:")
    ec2, ebs = _client(sim, "ec2"), _client(sim, "ebs")
    assert ec2.meta.endpoint_url == sim.https_endpoint
    # The whole EBS read path over TLS: a 512 KiB body through the TLS send path.
    _, snap = _seed_snapshot(sim, ec2, [3])
    listed = ebs.list_snapshot_blocks(SnapshotId=snap)["Blocks"]
    assert [b["BlockIndex"] for b in listed] == [3]
    assert read(ebs, snap, 3, listed[0]["BlockToken"]) == block(3)
    assert _client(sim, "sts").get_caller_identity()["Account"] == "123456789012"

    # Plain HTTP to the AWS APIs: the connection is closed without an answer.
    plain = _client(sim, "ec2", tls=False)
    with pytest.raises((botocore.exceptions.ConnectionClosedError,
                        botocore.exceptions.EndpointConnectionError)):
        plain.describe_regions()
    # ... while the control API answers over both.
    assert SimulatorClient(sim.endpoint).health()
    assert SimulatorClient(sim.https_endpoint, ca_path=sim.ca_path).health()


def test_https_certificate_is_verified(sim: RunningSimulator) -> None:
    sim.client.set_options(tls=True)
    untrusting = _session().client(
        "ec2", config=NO_RETRY, **{**sim.boto3_kwargs(REGION), "verify": True})
    with pytest.raises(botocore.exceptions.SSLError):
        untrusting.describe_regions()
    # What a strict client checks: the chain to our CA and the name 127.0.0.1 / localhost.
    host, port = sim.https_endpoint.rsplit("/", 1)[1].split(":")
    context = ssl.create_default_context(cafile=sim.ca_path)
    context.verify_flags |= ssl.VERIFY_X509_STRICT
    for name in ("127.0.0.1", "localhost"):
        with socket.create_connection((host, int(port)), timeout=10) as raw, \
                context.wrap_socket(raw, server_hostname=name) as tls:
            assert tls.version() in ("TLSv1.2", "TLSv1.3")
    with socket.create_connection((host, int(port)), timeout=10) as raw, \
            pytest.raises(ssl.SSLCertVerificationError):
        context.wrap_socket(raw, server_hostname="example.com")


def test_plain_http_refused_only_while_tls_is_on(sim: RunningSimulator) -> None:
    host, port = sim.endpoint.rsplit("/", 1)[1].split(":")
    request = (b"POST / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
               b"Content-Type: application/x-www-form-urlencoded"
               b"\r\nAuthorization: AWS4-HMAC-SHA256 Credential=AKID/20260101/us-east-1/ec2/"
               b"aws4_request, SignedHeaders=host, Signature=0\r\nContent-Length: 41\r\n\r\n"
               b"Action=DescribeRegions&Version=2016-11-15")

    def answer() -> bytes:
        with socket.create_connection((host, int(port)), timeout=10) as conn:
            conn.sendall(request)
            chunks = []
            try:
                while chunk := conn.recv(65536):
                    chunks.append(chunk)
            except ConnectionResetError:
                pass
            return b"".join(chunks)

    assert answer().startswith(b"HTTP/1.1 200")
    sim.client.set_options(tls=True)
    assert answer() == b""
    sim.client.set_options(tls=False)
    assert answer().startswith(b"HTTP/1.1 200")


# ------------------------------------------------------------------ the service's clock


@pytest.mark.parametrize("offset", [400.0, -400.0])
def test_clock_skew_refused_per_protocol(sim: RunningSimulator, offset: float) -> None:
    sim.client.set_options(clock_offset_s=offset)
    ec2, ebs, sts = _client(sim, "ec2"), _client(sim, "ebs"), _client(sim, "sts")
    err = error_of(ec2.describe_regions)
    assert err["Error"]["Code"] == "RequestExpired"
    assert err["Error"]["Message"] == "Request has expired."
    assert err["ResponseMetadata"]["HTTPStatusCode"] == 400
    stamp = r"\d{8}T\d{6}Z"
    wording = (rf"^Signature expired: {stamp} is now earlier than {stamp} \({stamp} - 5 min\.\)$"
               if offset > 0 else
               rf"^Signature not yet current: {stamp} is still later than {stamp} "
               rf"\({stamp} \+ 5 min\.\)$")
    err = error_of(lambda: ebs.list_snapshot_blocks(SnapshotId="snap-0123456789abcdef0"))
    assert err["Error"]["Code"] == "InvalidSignatureException"
    assert err["ResponseMetadata"]["HTTPStatusCode"] == 403
    assert re.match(wording, err["Error"]["Message"]), err["Error"]["Message"]
    err = error_of(sts.get_caller_identity)
    assert err["Error"]["Code"] == "SignatureDoesNotMatch"
    assert err["ResponseMetadata"]["HTTPStatusCode"] == 403
    assert re.match(wording, err["Error"]["Message"])
    # The service's time in the message is the client's time plus the offset.
    now_in_message = re.findall(stamp, err["Error"]["Message"])[2]
    service_now = time.mktime(time.strptime(now_in_message, "%Y%m%dT%H%M%SZ")) - time.timezone
    assert abs(service_now - (time.time() + offset)) < 5


@pytest.mark.parametrize("offset", [-290.0, 30.0, 290.0])
def test_small_skew_accepted_and_date_header_is_the_service_clock(
        sim: RunningSimulator, offset: float) -> None:
    sim.client.set_options(clock_offset_s=offset)
    for service, call in (("ec2", "describe_regions"), ("sts", "get_caller_identity")):
        resp = getattr(_client(sim, service), call)()
        date = parsedate_to_datetime(resp["ResponseMetadata"]["HTTPHeaders"]["date"])
        assert abs(date.timestamp() - (time.time() + offset)) < 3
    ebs = _client(sim, "ebs")
    assert error_of(lambda: ebs.list_snapshot_blocks(
        SnapshotId="snap-0123456789abcdef0"))["Error"]["Code"] == "ResourceNotFoundException"


def test_block_token_expiry_time_is_on_the_service_clock(sim: RunningSimulator) -> None:
    sim.client.set_options(snapshot_delay=0, clock_offset_s=200.0, block_token_ttl=1000.0)
    ec2, ebs = _client(sim, "ec2"), _client(sim, "ebs")
    _, snap = _seed_snapshot(sim, ec2, [0])
    listed = ebs.list_snapshot_blocks(SnapshotId=snap)
    assert abs(listed["ExpiryTime"].timestamp() - (time.time() + 200 + 1000)) < 3
    assert read(ebs, snap, 0, listed["Blocks"][0]["BlockToken"]) == block(0)


# ------------------------------------------------------------------ credentials


def test_expired_session_token_refused_per_protocol(sim: RunningSimulator) -> None:
    creds = sim.client.session_token(ttl=1.0)
    signed = {"aws_access_key_id": creds["access_key_id"],
              "aws_secret_access_key": creds["secret_access_key"],
              "aws_session_token": creds["session_token"]}
    ec2, ebs, sts = (_client(sim, s, **signed) for s in ("ec2", "ebs", "sts"))
    ec2.describe_regions()  # valid until it expires
    unknown = _client(sim, "ec2", aws_session_token="not-issued-here")
    time.sleep(1.1)
    err = error_of(ec2.describe_regions)
    assert (err["Error"]["Code"], err["ResponseMetadata"]["HTTPStatusCode"]) == \
        ("RequestExpired", 400)
    err = error_of(lambda: ebs.list_snapshot_blocks(SnapshotId="snap-0123456789abcdef0"))
    assert (err["Error"]["Code"], err["ResponseMetadata"]["HTTPStatusCode"]) == \
        ("ExpiredTokenException", 403)
    assert err["Error"]["Message"] == "The security token included in the request is expired"
    err = error_of(sts.get_caller_identity)
    assert (err["Error"]["Code"], err["ResponseMetadata"]["HTTPStatusCode"]) == \
        ("ExpiredToken", 403)
    # A token the simulator did not issue is accepted, as any credentials are.
    unknown.describe_regions()


def test_assume_role_credentials_carry_their_expiry(sim: RunningSimulator) -> None:
    sts = _client(sim, "sts")
    creds = sts.assume_role(RoleArn="arn:aws:iam::123456789012:role/backup",
                            RoleSessionName="job-1", DurationSeconds=900)["Credentials"]
    assert abs(creds["Expiration"].timestamp() - (time.time() + 900)) < 5
    ec2 = _client(sim, "ec2", aws_access_key_id=creds["AccessKeyId"],
                  aws_secret_access_key=creds["SecretAccessKey"],
                  aws_session_token=creds["SessionToken"])
    ec2.describe_regions()


def test_assume_role_hiccups_can_be_injected(sim: RunningSimulator) -> None:
    sim.client.set_options(fault_operations=["AssumeRole"], error_rate=1.0)
    sts = _client(sim, "sts")
    err = error_of(lambda: sts.assume_role(RoleArn="arn:aws:iam::123456789012:role/backup",
                                           RoleSessionName="job-1"))
    assert err["ResponseMetadata"]["HTTPStatusCode"] == 500
    sts.get_caller_identity()  # other STS actions are not faulted
    sim.client.set_options(error_rate=0.0)
    assert sts.assume_role(RoleArn="arn:aws:iam::123456789012:role/backup",
                           RoleSessionName="job-1")["Credentials"]["SessionToken"]


# ------------------------------------------------------------------ StartSnapshot Timeout


@pytest.mark.parametrize("mode", ["inactivity", "absolute"])
def test_start_snapshot_timeout_modes(sim: RunningSimulator, aws: ClientFactory,
                                      mode: str) -> None:
    # Timeout=10 minutes of 0.1 s = 1.0 s; puts every 0.6 s for 1.2 s.
    sim.client.set_options(timeout_minute=0.1, start_snapshot_timeout=mode, snapshot_delay=0)
    ebs = aws("ebs")
    sid = ebs.start_snapshot(VolumeSize=1, Timeout=10)["SnapshotId"]
    time.sleep(0.6)
    put(ebs, sid, 0, block(0))
    time.sleep(0.6)
    if mode == "inactivity":
        put(ebs, sid, 1, block(1))
        assert ebs.complete_snapshot(SnapshotId=sid, ChangedBlocksCount=2)["Status"] in (
            "pending", "completed")
    else:
        err = error_of(lambda: put(ebs, sid, 1, block(1)))
        assert err["Error"]["Code"] == "ValidationException"
        assert "error" in err["Error"]["Message"]
        assert error_of(lambda: ebs.complete_snapshot(SnapshotId=sid, ChangedBlocksCount=1)
                        )["Error"]["Code"] == "ValidationException"


def test_inactivity_timeout_still_cancels_an_idle_snapshot(sim: RunningSimulator,
                                                           aws: ClientFactory) -> None:
    sim.client.set_options(timeout_minute=0.05, start_snapshot_timeout="inactivity")
    ebs = aws("ebs")
    sid = ebs.start_snapshot(VolumeSize=1, Timeout=10)["SnapshotId"]
    put(ebs, sid, 0, block(0))
    time.sleep(0.7)
    assert error_of(lambda: put(ebs, sid, 1, block(1)))["Error"]["Code"] == \
        "ValidationException"


# ------------------------------------------------------------------ KMS


def test_kms_key_arn_format_checked(sim: RunningSimulator, aws: ClientFactory) -> None:
    ebs = aws("ebs")
    alias = "arn:aws:kms:us-east-1:123456789012:alias/backup"
    # The model's pattern refuses an alias ARN with or without the knob.
    assert error_of(lambda: ebs.start_snapshot(VolumeSize=1, Encrypted=True, KmsKeyArn=alias)
                    )["Error"]["Code"] == "ValidationException"
    other_region = KEY.replace("us-east-1", "eu-west-1")
    assert ebs.start_snapshot(VolumeSize=1, Encrypted=True, KmsKeyArn=other_region)
    sim.client.set_options(kms=True)
    err = error_of(lambda: ebs.start_snapshot(VolumeSize=1, Encrypted=True,
                                              KmsKeyArn=other_region))
    assert (err["Error"]["Code"], err["Reason"]) == ("ValidationException",
                                                     "INVALID_CUSTOMER_KEY")
    started = ebs.start_snapshot(VolumeSize=1, Encrypted=True, KmsKeyArn=KEY)
    assert started["SseType"] == "sse-kms" and started["KmsKeyArn"] == KEY


def test_denied_kms_key_on_ebs_direct_writes(sim: RunningSimulator, aws: ClientFactory) -> None:
    sim.client.set_options(kms=True, kms_denied_keys=[OTHER_KEY], snapshot_delay=0)
    ebs = aws("ebs")
    err = error_of(lambda: ebs.start_snapshot(VolumeSize=1, Encrypted=True,
                                              KmsKeyArn=OTHER_KEY))
    assert (err["Error"]["Code"], err["Reason"], err["ResponseMetadata"]["HTTPStatusCode"]) \
        == ("AccessDeniedException", "DEPENDENCY_ACCESS_DENIED", 403)
    sid = ebs.start_snapshot(VolumeSize=1, Encrypted=True, KmsKeyArn=KEY)["SnapshotId"]
    put(ebs, sid, 0, block(0))
    sim.client.set_options(kms_denied_keys=[KEY])  # access revoked mid-upload
    for call in (lambda: put(ebs, sid, 1, block(1)),
                 lambda: ebs.complete_snapshot(SnapshotId=sid, ChangedBlocksCount=1)):
        err = error_of(call)
        assert (err["Error"]["Code"], err["Reason"]) == ("AccessDeniedException",
                                                         "DEPENDENCY_ACCESS_DENIED")
        assert sid in err["Error"]["Message"]
    sim.client.set_options(kms_denied_keys=[])
    ebs.complete_snapshot(SnapshotId=sid, ChangedBlocksCount=1)
    # A child of a snapshot whose key is denied cannot be started either.
    sim.client.set_options(kms_denied_keys=[KEY])
    err = error_of(lambda: ebs.start_snapshot(VolumeSize=1, ParentSnapshotId=sid))
    assert err["Reason"] == "DEPENDENCY_ACCESS_DENIED"


def test_denied_kms_key_on_ebs_direct_reads(sim: RunningSimulator, aws: ClientFactory) -> None:
    sim.client.set_options(kms=True, snapshot_delay=0)
    ec2, ebs = aws("ec2"), aws("ebs")
    vol, first = _seed_snapshot(sim, ec2, [0, 1], encrypted=True, kms_key_id=KEY)
    sim.client.write_volume(vol, 0, block("new"))
    second = ec2.create_snapshot(VolumeId=vol)["SnapshotId"]
    token = ebs.list_snapshot_blocks(SnapshotId=first)["Blocks"][0]["BlockToken"]
    sim.client.set_options(kms_denied_keys=[KEY])
    for call in (lambda: ebs.list_snapshot_blocks(SnapshotId=first),
                 lambda: ebs.list_changed_blocks(FirstSnapshotId=first,
                                                 SecondSnapshotId=second),
                 lambda: ebs.get_snapshot_block(SnapshotId=first, BlockIndex=0,
                                                BlockToken=token)):
        err = error_of(call)
        assert (err["Error"]["Code"], err["Reason"]) == ("AccessDeniedException",
                                                         "DEPENDENCY_ACCESS_DENIED")
    sim.client.set_options(kms_denied_keys=[OTHER_KEY])  # another key: reads work again
    assert read(ebs, first, 0, token) == block(0)


def test_denied_kms_key_on_ec2_create_volume_and_launch(sim: RunningSimulator,
                                                        aws: ClientFactory) -> None:
    sim.client.set_options(kms=True, kms_denied_keys=[OTHER_KEY], snapshot_delay=0)
    ec2 = aws("ec2")
    az = f"{REGION}a"
    err = error_of(lambda: ec2.create_volume(AvailabilityZone=az, Size=1, KmsKeyId=KEY))
    assert err["Error"]["Code"] == "InvalidParameterDependency"
    ok = ec2.create_volume(AvailabilityZone=az, Size=1, Encrypted=True, KmsKeyId=KEY)
    assert ec2.describe_volumes(VolumeIds=[ok["VolumeId"]])["Volumes"][0]["KmsKeyId"] == KEY
    # EC2 checks the key asynchronously: "creating", then the volume is gone.
    for key in (OTHER_KEY, KEY.replace("us-east-1", "eu-west-1"), "alias/backup"):
        gone = ec2.create_volume(AvailabilityZone=az, Size=1, Encrypted=True, KmsKeyId=key)
        assert gone["State"] == "creating" and gone["Encrypted"]
        assert error_of(lambda gone=gone: ec2.describe_volumes(
            VolumeIds=[gone["VolumeId"]]))["Error"]["Code"] == "InvalidVolume.NotFound"
    # A volume from a snapshot encrypted with a denied key vanishes the same way.
    _, snap = _seed_snapshot(sim, ec2, [0], encrypted=True, kms_key_id=OTHER_KEY)
    from_snap = ec2.create_volume(AvailabilityZone=az, SnapshotId=snap)
    assert error_of(lambda: ec2.describe_volumes(VolumeIds=[from_snap["VolumeId"]])
                    )["Error"]["Code"] == "InvalidVolume.NotFound"
    # An instance launched with it terminates at once; nothing is left behind.
    _, root = _seed_snapshot(sim, ec2, [0])
    image = ec2.register_image(Name="kms-test", RootDeviceName="/dev/xvda",
                               BlockDeviceMappings=[{"DeviceName": "/dev/xvda",
                                                     "Ebs": {"SnapshotId": root}}])["ImageId"]
    before = {v["VolumeId"] for v in ec2.describe_volumes()["Volumes"]}
    iid = ec2.run_instances(ImageId=image, MinCount=1, MaxCount=1, BlockDeviceMappings=[
        {"DeviceName": "/dev/xvda", "Ebs": {"Encrypted": True, "KmsKeyId": OTHER_KEY}}]
    )["Instances"][0]["InstanceId"]
    described = ec2.describe_instances(InstanceIds=[iid])["Reservations"][0]["Instances"][0]
    assert described["State"]["Name"] == "terminated"
    assert described["StateReason"] == {"Code": "Client.InternalError",
                                        "Message": "Client.InternalError: Client error on launch"}
    assert {v["VolumeId"] for v in ec2.describe_volumes()["Volumes"]} == before


# ------------------------------------------------------------------ NextToken lifetime


def _resume_all(ebs: Any, op: str, args: dict[str, Any], key: str,
                expire_at_page: int, ttl: float) -> tuple[list[int], int]:
    """Every BlockIndex of a listing whose NextToken expires once (after page
    ``expire_at_page``), resumed with StartingBlockIndex = last index + 1."""
    seen: list[int] = []
    expired = 0
    call = getattr(ebs, op)
    page_args = dict(args)
    page_no = 0
    while True:
        page = call(**page_args)
        seen += [b["BlockIndex"] for b in page[key]]
        token = page.get("NextToken")
        if not token:
            return seen, expired
        page_no += 1
        page_args = {**args, "NextToken": token}
        if page_no == expire_at_page:
            time.sleep(ttl + 0.05)
            err = error_of(lambda expired_args=page_args: call(**expired_args))
            assert (err["Error"]["Code"], err["Reason"]) == ("ValidationException",
                                                             "INVALID_PAGE_TOKEN")
            expired += 1
            start = seen[-1] + 1 if seen else 0
            page_args = {**args, "StartingBlockIndex": start}


@settings(max_examples=6, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(written=st.sets(st.integers(0, 2046), min_size=1, max_size=24),
       window=st.integers(64, 512), expire_at=st.integers(1, 3))
def test_expired_next_token_resumes_with_starting_block_index(
        sim: RunningSimulator, aws: ClientFactory, written: set[int], window: int,
        expire_at: int) -> None:
    ttl = 0.2
    sim.client.reset()
    sim.client.set_options(snapshot_delay=0, page_token_ttl=ttl, list_blocks_window=window,
                           changed_blocks_window=window)
    ec2, ebs = aws("ec2"), aws("ebs")
    vol, first = _seed_snapshot(sim, ec2, [2047])
    for i in written:
        sim.client.write_volume(vol, i * BLOCK_SIZE, block(f"w{i}"))
    second = ec2.create_snapshot(VolumeId=vol)["SnapshotId"]
    # A 1 GiB volume is 2048 block indexes: at least 4 scan windows, so the token does
    # expire once in each listing; no block is skipped or listed twice.
    listed, expired = _resume_all(ebs, "list_snapshot_blocks", {"SnapshotId": second},
                                  "Blocks", expire_at, ttl)
    assert (listed, expired) == (sorted(written | {2047}), 1)
    changed, expired = _resume_all(ebs, "list_changed_blocks",
                                   {"FirstSnapshotId": first, "SecondSnapshotId": second},
                                   "ChangedBlocks", expire_at, ttl)
    assert (changed, expired) == (sorted(written), 1)
