"""The one module that talks to AWS (EC2 control plane and EBS direct reads).

Everything above it sees plain dicts, small dataclasses and our own exceptions; nothing
above it imports boto3. Secrets go into botocore and nowhere else.
"""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import boto3
import botocore.session
from botocore.config import Config
from botocore.credentials import AssumeRoleCredentialFetcher, DeferredRefreshableCredentials
from botocore.exceptions import NoRegionError, ProfileNotFound

from ..retry import REAL_CLOCK, Clock, Retryable, RetryPolicy, RetryStats, call_with_retry
from . import errors, shapes, wait
from .errors import AwsError as AwsError  # defined in errors.py, imported from here too
from .errors import classify as classify
from .model import Instance, Snapshot, Volume
from .restore_ops import RestoreCalls
from .settings import AwsSettings
from .shapes import tag_list as tag_list  # upload.py's TagSpecifications
from .wait import WaitParams


@dataclass(frozen=True)
class BlockRef:
    """A block to read; `token` None means "known to read as zeros": nothing to fetch."""

    index: int
    token: str | None


@dataclass(frozen=True)
class BlockBody:
    index: int
    data: bytes | bytearray
    sha256: bytes  # the checksum AWS sent, already verified against data


class ChecksumMismatch(Retryable):
    pass


def verified_block(
    operation: str, index: int, data: bytes | bytearray, length: object, algorithm: object, checksum: object
) -> BlockBody:
    """ebs-direct-facts §1.3: the body is not covered by SigV4; check length and SHA-256."""
    expected = int(str(length)) if length is not None else len(data)
    if len(data) != expected:
        raise ChecksumMismatch(f"{operation}: body has {len(data)} bytes, header says {expected}")
    if (algorithm or "SHA256") != "SHA256":
        raise AwsError(operation, "UnsupportedChecksum", f"checksum algorithm {algorithm}")
    digest = hashlib.sha256(data).digest()
    if base64.b64encode(digest).decode() != checksum:
        raise ChecksumMismatch(f"{operation}: body does not match its SHA-256 checksum")
    return BlockBody(index, data, digest)


def _session(settings: AwsSettings) -> boto3.Session:
    core = botocore.session.Session(profile=settings.profile)
    if settings.credentials_file:
        core.set_config_variable("credentials_file", settings.credentials_file)
    if settings.access_key or settings.secret_key:
        if not (settings.access_key and settings.secret_key):
            raise AwsError(
                "credentials", "InvalidParameter", "access_key and secret_key must be given together"
            )
        core.set_credentials(
            settings.access_key,
            settings.secret_key.reveal(),
            settings.session_token.reveal() if settings.session_token else None,
        )
    if settings.role_arn:
        extra: dict[str, Any] = {"RoleSessionName": settings.role_session_name}
        if settings.external_id:
            extra["ExternalId"] = settings.external_id
        source = core.get_credentials()
        if source is None:
            raise AwsError("AssumeRole", "NoCredentials", "no source credentials to assume role_arn with")
        endpoint = settings.endpoint_url

        def sts_client(*args: Any, **kwargs: Any) -> Any:
            """STS goes where the other services go when an endpoint is set (tests, VPC)."""
            if endpoint and not kwargs.get("endpoint_url"):
                kwargs["endpoint_url"] = endpoint
            kwargs.setdefault("region_name", settings.region)
            return core.create_client(*args, **kwargs)

        fetcher = AssumeRoleCredentialFetcher(
            client_creator=sts_client,
            source_credentials=source,
            role_arn=settings.role_arn,
            extra_args=extra,
        )
        core._credentials = DeferredRefreshableCredentials(
            method="assume-role", refresh_using=fetcher.fetch_credentials
        )
    try:
        return boto3.Session(botocore_session=core, region_name=settings.region)
    except ProfileNotFound as exc:
        raise AwsError("credentials", "ProfileNotFound", str(exc)) from exc


class Aws(RestoreCalls):
    """EC2 and EBS direct clients of one region, with the calls the jobs need (the restore
    ones come from `restore_ops.RestoreCalls`). Takes and returns the product's own model
    (`model.py`); EC2's request and response shapes stay in `shapes.py`."""

    #: What waits (aws/wait.py) sleep on; tests substitute a fake clock.
    clock: Clock = REAL_CLOCK

    def __init__(
        self,
        settings: AwsSettings,
        *,
        stats: RetryStats | None = None,
        cancel: threading.Event | None = None,
        policy: RetryPolicy | None = None,
    ) -> None:
        self.stats = stats or RetryStats()
        self.cancel = cancel
        self.policy = policy or RetryPolicy()
        try:
            session = _session(settings)
        except ProfileNotFound as exc:
            raise AwsError("credentials", "ProfileNotFound", str(exc)) from exc
        self.credentials = session.get_credentials()  # botocore Credentials, refreshable
        self.region = settings.region or session.region_name
        if not self.region:
            raise AwsError(
                "configuration", "NoRegion", "no region: add region=<name> (e.g. region=eu-west-1)"
            )
        control = Config(
            retries={"mode": "standard", "max_attempts": settings.control_attempts},
            connect_timeout=settings.connect_timeout,
            read_timeout=settings.read_timeout,
        )
        data = Config(
            retries={"mode": "standard", "max_attempts": 1},
            connect_timeout=settings.connect_timeout,
            read_timeout=settings.read_timeout,
            max_pool_connections=settings.block_threads + 8,
            tcp_keepalive=True,
        )
        try:
            self.ec2 = session.client(
                "ec2",
                region_name=self.region,
                config=control,
                endpoint_url=settings.ec2_endpoint_url or settings.endpoint_url,
            )
            self.ebs = session.client(
                "ebs",
                region_name=self.region,
                config=data,
                endpoint_url=settings.ebs_endpoint_url or settings.endpoint_url,
            )
        except NoRegionError as exc:
            raise AwsError("configuration", "NoRegion", "no region: add region=<name>") from exc

    # ------------------------------------------------------------------ plumbing
    def _call(
        self, operation: str, fn: Callable[[], Any], retry: bool = True, *, resource: str | None = None
    ) -> Any:
        """One control-plane or listing call: failures mapped by `errors.classify` (AwsError,
        with the botocore exception as its cause), retryable ones retried under the policy
        unless `retry` is False (calls that must not be repeated blindly)."""

        def once() -> Any:
            return errors.call(operation, fn, resource=resource)

        if not retry:
            return once()
        what = errors.subject(operation, resource)
        return call_with_retry(once, what=what, policy=self.policy, stats=self.stats, cancel=self.cancel)

    def _pages(
        self,
        operation: str,
        method: Callable[..., Any],
        key: str,
        *,
        resource: str | None = None,
        **kwargs: Any,
    ) -> Iterator[dict[str, Any]]:
        token: str | None = None
        while True:
            args = dict(kwargs)
            if token:
                args["NextToken"] = token
            page = self._call(operation, lambda a=args: method(**a), resource=resource)  # type: ignore[misc]
            if key == "Reservations":
                for res in page.get(key, []):
                    yield from res.get("Instances", [])
            else:
                yield from page.get(key, [])
            token = page.get("NextToken")
            if not token:
                return

    # ------------------------------------------------------------------ EC2
    def describe_instances(
        self,
        *,
        ids: Sequence[str] | None = None,
        names: Sequence[str] | None = None,
        tags: Mapping[str, str] | None = None,
    ) -> list[Instance]:
        """Instances with one of these ids, one of these Name tags, and all of these tags
        (each given criterion applies; none: every instance). An id that does not exist is
        simply absent."""
        found = []
        if ids:
            found.append(shapes.match("instance-id", ids))
        if names:
            found.append(shapes.match("tag:Name", names))
        found.extend(shapes.tag_filters(tags or {}))
        kwargs: dict[str, Any] = {"Filters": found} if found else {}
        pages = self._pages("DescribeInstances", self.ec2.describe_instances, "Reservations", **kwargs)
        return [shapes.instance(d) for d in pages]

    def describe_instance(self, instance_id: str) -> Instance:
        """One instance by id; AwsError (InvalidInstanceID.NotFound) if there is none."""
        found = self._instances_by_id(instance_id)
        if not found:
            raise AwsError("DescribeInstances", "InvalidInstanceID.NotFound", f"no instance {instance_id}")
        return found[0]

    def instance_state(self, instance_id: str) -> str:
        """pending, running, stopping, stopped, ...; `terminated` once EC2 no longer lists it."""
        found = self._instances_by_id(instance_id)
        return found[0].state if found else "terminated"

    def _instances_by_id(self, instance_id: str) -> list[Instance]:
        pages = self._pages(
            "DescribeInstances", self.ec2.describe_instances, "Reservations", InstanceIds=[instance_id]
        )
        return [shapes.instance(d) for d in pages]

    def describe_volumes_filtered(self, volume_ids: Sequence[str]) -> list[Volume]:
        """Like describe_volumes, but ids that do not exist are simply absent (no error)."""
        filters = [shapes.match("volume-id", volume_ids)]
        pages = self._pages("DescribeVolumes", self.ec2.describe_volumes, "Volumes", Filters=filters)
        return [shapes.volume(d) for d in pages]

    def tagged_volumes(self, key: str, value: str) -> list[Volume]:
        """Volumes tagged `key=value`."""
        filters = shapes.tag_filters({key: value})
        pages = self._pages("DescribeVolumes", self.ec2.describe_volumes, "Volumes", Filters=filters)
        return [shapes.volume(d) for d in pages]

    def create_snapshot(self, volume_id: str, tags: Mapping[str, str], description: str) -> Snapshot:
        """One volume on its own. Not retried blindly, like CreateSnapshots."""
        out = self._call(
            "CreateSnapshot",
            lambda: self.ec2.create_snapshot(
                VolumeId=volume_id,
                Description=description,
                TagSpecifications=[shapes.tag_spec("snapshot", tags)],
            ),
            retry=False,
            resource=volume_id,
        )
        return shapes.snapshot(out)

    def describe_regions(self) -> list[str]:
        out = self._call("DescribeRegions", lambda: self.ec2.describe_regions())
        return sorted(str(r["RegionName"]) for r in out.get("Regions", []))

    def describe_all_volumes(self) -> list[Volume]:
        return [
            shapes.volume(d) for d in self._pages("DescribeVolumes", self.ec2.describe_volumes, "Volumes")
        ]

    def describe_volumes(self, volume_ids: Sequence[str]) -> list[Volume]:
        """Volumes by id (AwsError if one does not exist)."""
        if not volume_ids:
            return []
        pages = self._pages(
            "DescribeVolumes", self.ec2.describe_volumes, "Volumes", VolumeIds=list(volume_ids)
        )
        return [shapes.volume(d) for d in pages]

    def volume_state(self, volume_id: str) -> str:
        """creating, available, in-use, error, ...; `deleted` once EC2 no longer lists it."""
        vols = self.describe_volumes([volume_id])
        return (vols[0].state or "") if vols else "deleted"

    def instance_user_data(self, instance_id: str) -> str | None:
        out = self._call(
            "DescribeInstanceAttribute",
            lambda: self.ec2.describe_instance_attribute(InstanceId=instance_id, Attribute="userData"),
        )
        value = out.get("UserData", {}).get("Value")
        return str(value) if value else None

    def create_snapshots(
        self,
        instance_id: str,
        exclude_volume_ids: Sequence[str],
        exclude_boot: bool,
        tags: Mapping[str, str],
        description: str,
    ) -> list[Snapshot]:
        """One crash-consistent snapshot of each of the instance's volumes but the excluded."""
        spec: dict[str, Any] = {"InstanceId": instance_id, "ExcludeBootVolume": exclude_boot}
        if exclude_volume_ids:
            spec["ExcludeDataVolumeIds"] = list(exclude_volume_ids)
        # Not retried blindly: a retried CreateSnapshots could leave duplicate snapshots.
        out = self._call(
            "CreateSnapshots",
            lambda: self.ec2.create_snapshots(
                InstanceSpecification=spec,
                Description=description,
                TagSpecifications=[shapes.tag_spec("snapshot", tags)],
            ),
            retry=False,
            resource=instance_id,
        )
        return [shapes.snapshot(d) for d in out.get("Snapshots", [])]

    def describe_snapshots(
        self,
        *,
        ids: Sequence[str] | None = None,
        tags: Mapping[str, str] | None = None,
        volume_ids: Sequence[str] | None = None,
        tag_key: str | None = None,
    ) -> list[Snapshot]:
        """This account's snapshots with one of these ids, all of these tags, on one of these
        volumes, having the tag `tag_key` (each given criterion applies)."""
        kwargs: dict[str, Any] = {"OwnerIds": ["self"]}
        if ids:
            kwargs["SnapshotIds"] = list(ids)
        found = shapes.tag_filters(tags or {})
        if volume_ids:
            found.append(shapes.match("volume-id", volume_ids))
        if tag_key is not None:
            found.append(shapes.match("tag-key", [tag_key]))
        if found:
            kwargs["Filters"] = found
        pages = self._pages("DescribeSnapshots", self.ec2.describe_snapshots, "Snapshots", **kwargs)
        return [shapes.snapshot(d) for d in pages]

    def delete_snapshot(self, snapshot_id: str) -> None:
        try:
            self._call(
                "DeleteSnapshot",
                lambda: self.ec2.delete_snapshot(SnapshotId=snapshot_id),
                resource=snapshot_id,
            )
        except AwsError as exc:
            if exc.code != "InvalidSnapshot.NotFound":
                raise

    def tag(self, resource_ids: Sequence[str], tags: Mapping[str, str]) -> None:
        self._call(
            "CreateTags",
            lambda: self.ec2.create_tags(Resources=list(resource_ids), Tags=shapes.tag_list(tags)),
            resource=", ".join(resource_ids),
        )

    def wait_snapshots(
        self,
        snapshot_ids: Sequence[str],
        timeout: float,
        progress: Callable[[list[Snapshot]], None] | None = None,
        max_interval: float = 15.0,
    ) -> list[Snapshot]:
        """Poll until every snapshot is completed; fail on `error`, or when their Progress
        has not grown for `timeout` seconds (in all at most max(24 h, 4 x timeout)): the one
        waiter, aws/wait.py. An id EC2 does not list yet (eventual consistency) is waited for."""
        params = dataclasses.replace(WaitParams.for_snapshots(timeout), max_interval=max_interval)
        return wait.wait_snapshots(
            lambda ids: self.describe_snapshots(ids=ids),
            snapshot_ids,
            params,
            clock=self.clock,
            cancel=self.cancel,
            progress=progress,
        )

    # ------------------------------------------------------------------ EBS direct
    def _block_pages(
        self, operation: str, method: Callable[..., Any], key: str, args: dict[str, Any]
    ) -> Iterator[Any]:
        """Every entry of a NextToken chain, page by page (never the whole list at once)."""
        token: str | None = None
        while True:
            call = dict(args, NextToken=token) if token else args
            # ResourceNotFoundException (a snapshot EBS does not see yet) is retried: errors.kind_of
            page = self._call(operation, lambda a=call: method(**a))  # type: ignore[misc]
            yield from page.get(key, [])
            token = page.get("NextToken")
            if not token:
                return

    def list_snapshot_blocks(self, snapshot_id: str, page_size: int = 10000) -> Iterator[BlockRef]:
        """A snapshot's written blocks in index order."""
        args = {"SnapshotId": snapshot_id, "MaxResults": page_size}
        for blk in self._block_pages("ListSnapshotBlocks", self.ebs.list_snapshot_blocks, "Blocks", args):
            yield BlockRef(int(blk["BlockIndex"]), str(blk["BlockToken"]))

    def list_changed_blocks(
        self, first_id: str, second_id: str, page_size: int = 10000
    ) -> Iterator[BlockRef]:
        """Blocks that differ between two snapshots of one lineage, in index order.

        A block absent from the second snapshot (no SecondBlockToken) reads as zeros there:
        it comes back with token None, so that the restore zeroes it.
        """
        args = {"FirstSnapshotId": first_id, "SecondSnapshotId": second_id, "MaxResults": page_size}
        for blk in self._block_pages(
            "ListChangedBlocks", self.ebs.list_changed_blocks, "ChangedBlocks", args
        ):
            second = blk.get("SecondBlockToken")
            yield BlockRef(int(blk["BlockIndex"]), str(second) if second else None)

    def get_snapshot_block(self, snapshot_id: str, ref: BlockRef) -> BlockBody:
        """One attempt: fetch, read the whole body, verify length and SHA-256."""
        if ref.token is None:
            raise ValueError(f"block {ref.index} has no token to read it with")

        resource = f"{snapshot_id} block {ref.index}"

        def fetch() -> tuple[dict[str, Any], bytes]:
            out = self.ebs.get_snapshot_block(
                SnapshotId=snapshot_id, BlockIndex=ref.index, BlockToken=ref.token
            )
            body = out["BlockData"]
            try:
                return out, body.read()  # a body that breaks off is a botocore error too
            finally:
                body.close()

        out, data = errors.call("GetSnapshotBlock", fetch, resource=resource)
        return verified_block(
            f"GetSnapshotBlock {resource}",
            ref.index,
            data,
            out.get("DataLength"),
            out.get("ChecksumAlgorithm"),
            out.get("Checksum"),
        )
