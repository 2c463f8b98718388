"""The one module that talks to AWS (EC2 control plane and EBS direct reads).

Everything above it sees plain dicts, small dataclasses and our own exceptions; nothing
above it imports boto3 or botocore. Secrets go into botocore and nowhere else.

The clients are botocore's, made by a botocore session directly: boto3's `Session` adds
nothing the jobs use (its resources and S3 transfer manager), and importing it costs about
0.1 s of every job's start-up (s3transfer and more).
"""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import itertools
import logging
import os
import threading
from collections.abc import Callable, Generator, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import botocore.session
from botocore.config import Config
from botocore.credentials import AssumeRoleCredentialFetcher, DeferredRefreshableCredentials
from botocore.exceptions import NoRegionError, ProfileNotFound

from .. import __version__
from ..formats.blockimage import BLOCK_SIZE
from ..pacing import Pacer, SharedSchedule
from ..retry import REAL_CLOCK, Clock, RetriesExhausted, Retryable, RetryPolicy, RetryStats, call_with_retry
from . import errors, shapes, wait
from .errors import AmbiguousCreate as AmbiguousCreate
from .errors import AwsError as AwsError  # defined in errors.py, imported from here too
from .errors import classify as classify
from .model import Instance, Snapshot, Volume
from .restore_ops import RestoreCalls
from .settings import AwsSettings, credentials_file_problem
from .shapes import tag_list as tag_list  # upload.py's TagSpecifications
from .transfer import (
    RANGE_CHAINS,
    RANGE_MAX_COUNT,
    RANGE_MIN_BLOCKS,
    BlockRange,
    merge_ranges,
    paced_request,
    split_ranges,
)
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


#: Appended to botocore's User-Agent of every control-plane and listing request (AWS
#: CloudTrail shows it): which product and release made the call.
USER_AGENT_EXTRA = f"bacula-ec2/{__version__}"


def _session(settings: AwsSettings) -> botocore.session.Session:
    """The botocore session the clients are made from: credentials (given keys, a profile,
    a credentials file, else botocore's default chain; `role_arn`: assumed through STS,
    refreshed before they expire) and region (`region`, else the profile's or
    AWS_DEFAULT_REGION). Raises ProfileNotFound for a profile the config does not have."""
    if settings.credentials_file:
        # Before botocore reads it: its own answer would be a bare NoCredentials.
        problem = credentials_file_problem(
            settings.credentials_file, settings.profile, keys_given=bool(settings.access_key)
        )
        if problem:
            raise AwsError("credentials", "CredentialsFile", problem)
    core = botocore.session.Session(profile=settings.profile)
    core.user_agent_extra = USER_AGENT_EXTRA
    if settings.region:
        core.set_config_variable("region", settings.region)
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
            if settings.ca_bundle:
                kwargs.setdefault("verify", settings.ca_bundle)
            # One attempt: a refresh that fails fails the AWS call that needed it, which our
            # policy retries (a credential hiccup is transient): no nested retries here either.
            kwargs.setdefault(
                "config",
                Config(
                    retries={"mode": "standard", "total_max_attempts": 1},
                    connect_timeout=settings.connect_timeout,
                    read_timeout=settings.read_timeout,
                ),
            )
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
    return core


log = logging.getLogger("bacula-ec2.aws")

#: ListSnapshotBlocks and ListChangedBlocks allow 50 requests/s each per account
#: (ebs-direct-facts §1.4, not adjustable); one pacer a little under one of them serves both
#: operations and every volume of the job (and, through `pace_dir`, every backend of the
#: host): 48/s, so that a large Incremental's listing is bounded by the quota (a 1 TiB
#: volume's 216 ListChangedBlocks pages take 4.5 s); AIMD lowers it when AWS throttles.
LIST_RATE = 48.0
#: EC2 refuses more than 200 values in one filter (FilterLimitExceeded): bigger sets are
#: asked for in chunks and the answers merged.
MAX_FILTER_VALUES = 200
#: MaxResults of Describe calls without ids (EC2 answers an unpaginated call on a large
#: account slowly, or not at all). The botocore 1.44 model says 5-1000 for the three; older
#: EC2 docs (and the simulator) say 5-500 for DescribeVolumes: 500 is valid under both.
DESCRIBE_PAGES = {"DescribeInstances": 1000, "DescribeVolumes": 500, "DescribeSnapshots": 1000}


def list_schedule(directory: str | None, region: str) -> SharedSchedule | None:
    """The list pacers' schedule shared by the backends of this host in `directory` (one
    file per region), or None (no directory, or it cannot be used: the pacer is then this
    process's own, as it was, and a warning says why)."""
    if not directory:
        return None
    name = "".join(c if c.isalnum() or c == "-" else "_" for c in region)
    path = os.path.join(directory, f"bacula-ec2-list-{name}.pace")
    try:
        return SharedSchedule(path)
    except OSError as exc:
        log.warning("list pacing is not shared with other backends: %s: %s", path, exc.strerror)
        return None


def verify_setting(settings: AwsSettings, core: botocore.session.Session) -> str | bool:
    """The CA bundle the clients verify TLS with, resolved as botocore does: the `ca_bundle`
    setting (the clients' `verify=`), else AWS_CA_BUNDLE or the profile's `ca_bundle`,
    else True (botocore's own bundle)."""
    if settings.ca_bundle:
        return settings.ca_bundle
    configured = core.get_config_variable("ca_bundle")
    return str(configured) if configured else True


def expired_page_token(exc: AwsError) -> bool:
    """EBS direct's answer to a NextToken that expired (or was invalidated by another
    listing of the same snapshot)."""
    return exc.code == "ValidationException" and (
        exc.reason == "INVALID_PAGE_TOKEN" or "INVALID_PAGE_TOKEN" in exc.message
    )


class Aws(RestoreCalls):
    """EC2 and EBS direct clients of one region, with the calls the jobs need (the restore
    ones come from `restore_ops.RestoreCalls`). Takes and returns the product's own model
    (`model.py`); EC2's request and response shapes stay in `shapes.py`.

    Every call makes exactly the attempts its retry policy says: botocore's own retries are
    off (`total_max_attempts=1` on both clients), control-plane and listing calls are retried
    by `_call` under `policy` (`settings.control_attempts` attempts), block requests by the
    transfer engine (`transfer.BLOCK_RETRY`), and CreateSnapshot(s) get one attempt in all.
    """

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
        self.policy = policy or RetryPolicy(attempts=settings.control_attempts)
        self.connect_timeout = settings.connect_timeout
        self.read_timeout = settings.read_timeout
        try:
            session = _session(settings)
            self.credentials = session.get_credentials()  # botocore Credentials, refreshable
            self.verify = verify_setting(settings, session)  # also the fast path's (blocks.py)
            self.region = settings.region or session.get_config_variable("region")
        except ProfileNotFound as exc:
            raise AwsError("credentials", "ProfileNotFound", str(exc)) from exc
        if not self.region:
            raise AwsError(
                "configuration", "NoRegion", "no region: add region=<name> (e.g. region=eu-west-1)"
            )
        # total_max_attempts counts the first attempt (botocore's max_attempts does not: 1
        # there means two requests). Our own retry policies are the only retries.
        control = Config(
            retries={"mode": "standard", "total_max_attempts": 1},
            connect_timeout=settings.connect_timeout,
            read_timeout=settings.read_timeout,
        )
        data = Config(
            retries={"mode": "standard", "total_max_attempts": 1},
            connect_timeout=settings.connect_timeout,
            read_timeout=settings.read_timeout,
            max_pool_connections=settings.block_threads + 8,
            tcp_keepalive=True,
        )
        verify = settings.ca_bundle or None  # None: botocore resolves AWS_CA_BUNDLE / the profile
        try:
            self.ec2 = session.create_client(
                "ec2",
                region_name=self.region,
                config=control,
                endpoint_url=settings.ec2_endpoint_url or settings.endpoint_url,
                verify=verify,
            )
            self.ebs = session.create_client(
                "ebs",
                region_name=self.region,
                config=data,
                endpoint_url=settings.ebs_endpoint_url or settings.endpoint_url,
                verify=verify,
            )
        except NoRegionError as exc:
            raise AwsError("configuration", "NoRegion", "no region: add region=<name>") from exc
        except ProfileNotFound as exc:
            raise AwsError("credentials", "ProfileNotFound", str(exc)) from exc
        # Last: nothing after it can fail, so its file (the shared schedule) is closed by
        # `close()` or never opened.
        self.list_pacer = Pacer(LIST_RATE, floor=5.0, shared=list_schedule(settings.pace_dir, self.region))

    def close(self) -> None:
        """The job is done with these clients: the shared list schedule's file and the
        clients' connections are closed (idempotent). A call after it still works: on a
        new connection, with this process's own list pacer."""
        pacer: Pacer | None = getattr(self, "list_pacer", None)
        if pacer is not None:
            pacer.close_shared()
        for name in ("ec2", "ebs"):
            client = getattr(self, name, None)
            if client is not None:
                client.close()

    # ------------------------------------------------------------------ plumbing
    def _call(
        self,
        operation: str,
        fn: Callable[[], Any],
        retry: bool = True,
        *,
        resource: str | None = None,
        fresh: bool = False,
        deletes: bool = False,
    ) -> Any:
        """One control-plane or listing call: failures mapped by `errors.classify` (AwsError,
        with the botocore exception as its cause), retryable ones retried under the policy
        unless `retry` is False (calls that must not be repeated blindly).

        `fresh`: the call names ids this job just created, which EC2 may not show yet
        (eventual consistency): its `Invalid*.NotFound` is retried for the policy's
        `not_found_window`, then raised as `RetriesExhausted` with the NotFound as cause.
        `deletes`: the call deletes or terminates; once an attempt got no definite answer
        (it may have done the work), a NotFound is final again (the caller counts it done).
        """
        maybe_done = False

        def once() -> Any:
            nonlocal maybe_done
            try:
                return errors.call(operation, fn, resource=resource, fresh=fresh and not maybe_done)
            except Retryable as exc:
                if deletes and not exc.not_found and errors.ambiguous_create(exc):
                    maybe_done = True
                raise

        if not retry:
            return once()
        what = errors.subject(operation, resource)
        return call_with_retry(
            once, what=what, policy=self.policy, stats=self.stats, cancel=self.cancel, clock=self.clock
        )

    def _pages(
        self,
        operation: str,
        method: Callable[..., Any],
        key: str,
        *,
        resource: str | None = None,
        paged: bool = False,
        fresh: bool = False,
        **kwargs: Any,
    ) -> Iterator[dict[str, Any]]:
        """Every item of a Describe call, page by page (`paged`: with MaxResults, for the
        calls and parameters that allow it). Filters with more than MAX_FILTER_VALUES values,
        and id lists as long, are sent in chunks; the answers are merged, each item once."""
        requests = shapes.chunk_request(kwargs, MAX_FILTER_VALUES)
        page_size = DESCRIBE_PAGES[operation] if paged else None
        seen: set[str] = set()
        for request in requests:
            for item in self._request_pages(operation, method, key, request, resource, page_size, fresh):
                if len(requests) > 1:
                    ident = shapes.item_id(key, item)
                    if ident in seen:
                        continue
                    seen.add(ident)
                yield item

    def _request_pages(
        self,
        operation: str,
        method: Callable[..., Any],
        key: str,
        request: dict[str, Any],
        resource: str | None,
        page_size: int | None,
        fresh: bool,
    ) -> Iterator[dict[str, Any]]:
        token: str | None = None
        while True:
            args = dict(request)
            if page_size:
                args["MaxResults"] = page_size
            if token:
                args["NextToken"] = token
            page = self._call(operation, lambda a=args: method(**a), resource=resource, fresh=fresh)  # type: ignore[misc]
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
        # The model: MaxResults cannot go with InstanceIds or tag filters.
        paged = not names and not tags
        pages = self._pages(
            "DescribeInstances",
            self.ec2.describe_instances,
            "Reservations",
            paged=paged,
            **kwargs,
        )
        return [shapes.instance(d) for d in pages]

    def describe_instance(self, instance_id: str, *, fresh: bool = False) -> Instance:
        """One instance by id; AwsError (InvalidInstanceID.NotFound) if there is none
        (`fresh`: one this job just launched, waited for while EC2 does not show it yet)."""
        found = self._instances_by_id(instance_id, fresh=fresh)
        if not found:
            raise AwsError("DescribeInstances", "InvalidInstanceID.NotFound", f"no instance {instance_id}")
        return found[0]

    def _instances_by_id(self, instance_id: str, *, fresh: bool = False) -> list[Instance]:
        pages = self._pages(
            "DescribeInstances",
            self.ec2.describe_instances,
            "Reservations",
            fresh=fresh,
            InstanceIds=[instance_id],
        )
        return [shapes.instance(d) for d in pages]

    def describe_volumes_filtered(self, volume_ids: Sequence[str]) -> list[Volume]:
        """Like describe_volumes, but ids that do not exist are simply absent (no error)."""
        if not volume_ids:
            return []
        filters = [shapes.match("volume-id", volume_ids)]
        pages = self._pages(
            "DescribeVolumes", self.ec2.describe_volumes, "Volumes", paged=True, Filters=filters
        )
        return [shapes.volume(d) for d in pages]

    def tagged_volumes(self, key: str, value: str) -> list[Volume]:
        """Volumes tagged `key=value`."""
        filters = shapes.tag_filters({key: value})
        pages = self._pages(
            "DescribeVolumes", self.ec2.describe_volumes, "Volumes", paged=True, Filters=filters
        )
        return [shapes.volume(d) for d in pages]

    def create_snapshot(self, volume_id: str, tags: Mapping[str, str], description: str) -> Snapshot:
        """One volume on its own: one attempt, like CreateSnapshots (`_create`)."""
        out = self._create(
            "CreateSnapshot",
            lambda: self.ec2.create_snapshot(
                VolumeId=volume_id,
                Description=description,
                TagSpecifications=[shapes.tag_spec("snapshot", tags)],
            ),
            resource=volume_id,
        )
        return shapes.snapshot(out)

    def _create(self, operation: str, fn: Callable[[], Any], *, resource: str) -> Any:
        """Exactly one attempt (botocore's retries are off, ours are not used): a repeated
        create could leave duplicate snapshots. A failure without a definite answer (5xx,
        reset, read timeout) raises `AmbiguousCreate` (cause kept): the snapshots may exist,
        so the caller looks them up by the job's tags before trying again. Any other failure
        is definite: nothing was created (a throttled or snapshot-quota answer can be tried
        again as is: its kind says so)."""
        try:
            return errors.call(operation, fn, resource=resource)
        except (AwsError, Retryable) as exc:
            if not errors.ambiguous_create(exc):
                raise
            code = exc.code if isinstance(exc, AwsError) else "NoAnswer"
            request_id = exc.request_id if isinstance(exc, AwsError) else None
            raise AmbiguousCreate(
                operation,
                code,
                f"no definite answer ({exc}); the snapshot(s) may have been created: "
                "look them up by the job's tags before trying again",
                resource=resource,
                request_id=request_id,
            ) from exc

    def describe_regions(self) -> list[str]:
        out = self._call("DescribeRegions", lambda: self.ec2.describe_regions())
        return sorted(str(r["RegionName"]) for r in out.get("Regions", []))

    def describe_all_volumes(self) -> list[Volume]:
        pages = self._pages("DescribeVolumes", self.ec2.describe_volumes, "Volumes", paged=True)
        return [shapes.volume(d) for d in pages]

    def describe_volumes(self, volume_ids: Sequence[str], *, fresh: bool = False) -> list[Volume]:
        """Volumes by id (AwsError if one does not exist; `fresh`: ids this job just
        created, waited for while EC2 does not show them yet)."""
        if not volume_ids:
            return []
        pages = self._pages(
            "DescribeVolumes", self.ec2.describe_volumes, "Volumes", fresh=fresh, VolumeIds=list(volume_ids)
        )
        return [shapes.volume(d) for d in pages]

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
        # One attempt: a retried CreateSnapshots could leave duplicate snapshots (`_create`).
        out = self._create(
            "CreateSnapshots",
            lambda: self.ec2.create_snapshots(
                InstanceSpecification=spec,
                Description=description,
                TagSpecifications=[shapes.tag_spec("snapshot", tags)],
            ),
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
        fresh: bool = False,
    ) -> list[Snapshot]:
        """This account's snapshots with one of these ids, all of these tags, on one of these
        volumes, having the tag `tag_key` (each given criterion applies). `fresh`: the ids
        are snapshots this job just created, waited for while EC2 does not show them yet."""
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
        pages = self._pages(
            "DescribeSnapshots",
            self.ec2.describe_snapshots,
            "Snapshots",
            paged=not ids,  # MaxResults cannot go with SnapshotIds
            fresh=fresh,
            **kwargs,
        )
        return [shapes.snapshot(d) for d in pages]

    def delete_snapshot(self, snapshot_id: str, *, fresh: bool = False) -> None:
        """Delete a snapshot; one that is already gone is fine. `fresh`: one this job just
        created, so a NotFound may mean "not visible yet": it is retried for the policy's
        window and only then taken as gone (the caller confirms with Describe)."""
        try:
            self._call(
                "DeleteSnapshot",
                lambda: self.ec2.delete_snapshot(SnapshotId=snapshot_id),
                resource=snapshot_id,
                fresh=fresh,
                deletes=True,
            )
        except AwsError as exc:
            if exc.code != "InvalidSnapshot.NotFound":
                raise
        except RetriesExhausted as exc:
            cause = exc.__cause__
            if not (isinstance(cause, AwsError) and cause.code == "InvalidSnapshot.NotFound"):
                raise

    def tag(self, resource_ids: Sequence[str], tags: Mapping[str, str], *, fresh: bool = False) -> None:
        """CreateTags (`fresh`: on resources this job just created, which EC2 may not show yet)."""
        self._call(
            "CreateTags",
            lambda: self.ec2.create_tags(Resources=list(resource_ids), Tags=shapes.tag_list(tags)),
            resource=", ".join(resource_ids),
            fresh=fresh,
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
    def _list_call(
        self,
        operation: str,
        fn: Callable[[], Any],
        resource: str,
        urgent: Callable[[], bool] | None = None,
    ) -> Any:
        """One listing request: paced by the job's one list pacer (the 50/s account quota is
        shared by every volume), throttling told to it, retried under the policy.
        ResourceNotFoundException (a snapshot EBS does not see yet) is retried as not yet
        visible (errors.kind_of). `urgent`: see `transfer.paced_request`."""
        return paced_request(
            operation,
            fn,
            resource=resource,
            pacer=getattr(self, "list_pacer", None),
            policy=self.policy,
            stats=self.stats,
            cancel=self.cancel,
            clock=self.clock,
            urgent=urgent,
        )

    #: Resumptions in a row that yield nothing before a listing gives up (a token that
    #: expires again and again without progress is not worth more).
    MAX_RESUMES_WITHOUT_PROGRESS = 3
    #: How block listings are split (`transfer.split_ranges`, `transfer.merge_ranges`).
    LIST_RANGE_MIN_BLOCKS = RANGE_MIN_BLOCKS
    LIST_RANGE_MAX_COUNT = RANGE_MAX_COUNT
    LIST_RANGE_CHAINS = RANGE_CHAINS

    def _block_pages(
        self,
        operation: str,
        method: Callable[..., Any],
        key: str,
        args: dict[str, Any],
        resource: str,
    ) -> Iterator[Any]:
        """Every entry of a block listing in index order, page by page (never the whole list
        at once), from block-index ranges listed in parallel where that pays.

        ListChangedBlocks pages follow the volume's size where changes are sparse (AWS
        scans a window of indexes per page and returns empty pages with a NextToken), so a
        single NextToken chain of a large volume is bound by round trips (~17 pages/s), not
        by the 50/s quota. The first page (one request, from index 0) tells the volume's
        size; if it was not full (the pages follow the index space, not the data), the
        index space is split (`transfer.split_ranges`) and the ranges are listed in
        parallel (`transfer.merge_ranges`), each chain from its StartingBlockIndex until it
        meets an index past its range's end (dropped: the next range lists it), under the
        one list pacer: the range being read takes its slots first, the ranges after it take
        the spare ones. A full first page (pages follow the data: a Full of allocated
        blocks, or dense changes) is listed as one chain: its pages come far faster than
        their blocks can be read.
        """
        first_range = BlockRange(0, None, label=resource, urgent=True)
        first_chain = self._range_pages(operation, method, key, args, first_range)
        first = next(first_chain)
        wanted = max(100, min(10000, int(args.get("MaxResults", 10000))))
        ranges = split_ranges(
            first_range.volume_blocks,
            min_blocks=self.LIST_RANGE_MIN_BLOCKS,
            max_count=self.LIST_RANGE_MAX_COUNT,
        )
        if first_range.finished or len(first) >= wanted or len(ranges) == 1:
            yield from first
            for page in first_chain:
                yield from page
            return
        for rng in ranges:
            rng.label = f"{resource} ({rng})"
        first_range.hi, first_range.label = ranges[0].hi, ranges[0].label
        ranges[0] = first_range
        hi = ranges[1].lo
        inside = [entry for entry in first if int(entry["BlockIndex"]) < hi]
        pages: Iterable[list[Any]] = [inside]
        if len(inside) < len(first):
            first_chain.close()
            first_range.finished, first_range.ended_at = True, int(first[len(inside)]["BlockIndex"])
        else:
            pages = itertools.chain(pages, first_chain)

        def chain(rng: BlockRange) -> Iterator[list[Any]]:
            return self._range_pages(operation, method, key, args, rng)

        yield from merge_ranges(ranges, pages, chain, chains=self.LIST_RANGE_CHAINS)

    def _range_pages(
        self,
        operation: str,
        method: Callable[..., Any],
        key: str,
        args: dict[str, Any],
        rng: BlockRange,
    ) -> Generator[list[Any], None, None]:
        """The pages of one range's NextToken chain: each page's entries inside the range.

        The chain starts at StartingBlockIndex = rng.lo and stops at the first entry at or
        past rng.hi (`ended_at`; ListChangedBlocks has no end index) or where the listing
        ends. A NextToken lives 60 minutes (ebs-direct-facts §1.1); when Bacula stalls the
        stream (a tape change, a despool) the next page's token may have expired
        (ValidationException INVALID_PAGE_TOKEN). The chain then resumes without a token at
        StartingBlockIndex = the last index it yielded + 1 (or its range's start): indexes
        ascend, so no block is skipped or repeated.
        """
        token: str | None = None
        last: int | None = None
        resumes = 0
        while True:
            call = dict(args)
            if token:
                call["NextToken"] = token
            elif last is not None:
                call["StartingBlockIndex"] = last + 1
            elif rng.lo:
                call["StartingBlockIndex"] = rng.lo
            try:
                page = self._list_call(
                    operation,
                    lambda a=call: method(**a),  # type: ignore[misc]
                    rng.label,
                    urgent=lambda: rng.urgent,
                )
            except AwsError as exc:
                if not (token and expired_page_token(exc)):
                    raise
                resumes += 1
                if resumes > self.MAX_RESUMES_WITHOUT_PROGRESS:
                    raise
                token = None
                log.info(
                    "%s %s: the NextToken expired (the stream stalled); resuming at block %d",
                    operation,
                    rng.label,
                    rng.lo if last is None else last + 1,
                )
                continue
            size = page.get("VolumeSize")
            if rng.volume_blocks is None and isinstance(size, int) and size > 0:
                rng.volume_blocks = size * (1 << 30) // BLOCK_SIZE
            entries = page.get(key, [])
            if entries:
                resumes = 0
            inside: list[Any] = []
            for entry in entries:
                index = int(entry["BlockIndex"])
                if rng.hi is not None and index >= rng.hi:
                    rng.finished, rng.ended_at = True, index
                    yield inside
                    return
                last = index
                inside.append(entry)
            token = page.get("NextToken")
            if not token:
                rng.finished, rng.ended_at = True, None
                yield inside
                return
            yield inside

    def list_snapshot_blocks(self, snapshot_id: str, page_size: int = 10000) -> Iterator[BlockRef]:
        """A snapshot's written blocks in index order."""
        args = {"SnapshotId": snapshot_id, "MaxResults": page_size}
        for blk in self._block_pages(
            "ListSnapshotBlocks", self.ebs.list_snapshot_blocks, "Blocks", args, snapshot_id
        ):
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
            "ListChangedBlocks",
            self.ebs.list_changed_blocks,
            "ChangedBlocks",
            args,
            f"{second_id} against {first_id}",
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
