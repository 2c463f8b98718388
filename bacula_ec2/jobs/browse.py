"""`.ls` (browse regions / instances / volumes) and `.query` answers (product.md §5).

Both only describe: nothing is created. Listing paths are the plugin's own namespace:
`/` lists regions, `/<region>` the instances there, `/<region>/<instance>` its volumes.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from typing import Any

from .. import naming, timefmt
from ..aws import Aws
from .chain import STATE_TAG, TAG
from .context import JobError
from .selection import select_instances
from .sink import BackupSink, FileInfo

QUERIES = ("regions", "instances", "volumes", "snapshots")


def _epoch(value: dt.datetime | None) -> int:
    return timefmt.epoch(value, default=0)


def clean(value: object) -> str:
    """Query values cannot hold ',' (the FD splits on it) nor '=' safely."""
    return str(value).replace(",", ";").replace("\n", " ")


def listing(aws_for: Callable[[str | None], Aws], path: str, sink: BackupSink) -> int:
    """Send one level of the namespace under `path`; returns the number of entries."""
    parts = [p for p in path.strip().strip("/").split("/") if p]
    if len(parts) > 2:
        raise JobError(f"nothing to list under '{path}': use /, /<region> or /<region>/<instance-id>")
    if not parts:
        regions = aws_for(None).describe_regions()
        for region in regions:
            sink.directory(f"{region}/", 0)
        return len(regions)
    aws = aws_for(parts[0])
    if len(parts) == 1:
        instances = sorted(aws.describe_instances(), key=lambda i: i.instance_id)
        for inst in instances:
            sink.directory(f"{inst.instance_id}/", _epoch(inst.launch_time))
        return len(instances)
    found = aws.describe_instances(ids=[parts[1]])
    if not found:
        raise JobError(f"instance {parts[1]} not found in region {parts[0]}")
    devices = found[0].ebs_devices
    volumes = {v.volume_id: v for v in aws.describe_volumes([str(d.volume_id) for d in devices])}
    count = 0
    for d in devices:
        vol = volumes.get(str(d.volume_id))
        if vol is None:
            continue
        dev = naming.device_short_name(d.device_name)
        name = f"{vol.volume_id}-{dev}-{vol.size_gib}G"
        sink.file(FileInfo(name, vol.size_gib * naming.GIB, _epoch(vol.create_time)), b"")
        count += 1
    return count


def query(aws: Aws, params: Any, what: str) -> list[list[tuple[str, str]]]:
    """Rows of key/value pairs for `.query parameter=<what>`."""
    if what == "regions":
        return [[("region", r)] for r in aws.describe_regions()]
    if what == "instances":
        if params.selects_instances():
            instances = [t.instance for t in select_instances(aws, params)]
        else:
            instances = aws.describe_instances()
        rows = []
        for inst in sorted(instances, key=lambda i: i.instance_id):
            rows.append(
                [
                    ("instance", inst.instance_id),
                    ("name", clean(inst.name or "")),
                    ("state", inst.state),
                    ("type", inst.instance_type or ""),
                    ("az", inst.availability_zone or ""),
                    ("volumes", str(len(inst.block_devices))),
                ]
            )
        return rows
    if what == "volumes":
        rows = []
        for vol in sorted(aws.describe_all_volumes(), key=lambda v: v.volume_id):
            att = vol.attachment
            rows.append(
                [
                    ("volume", vol.volume_id),
                    ("instance", att.instance_id or ""),
                    ("device", att.device or ""),
                    ("size_gib", str(vol.size_gib)),
                    ("type", vol.volume_type or ""),
                    ("encrypted", "yes" if vol.encrypted else "no"),
                ]
            )
        return rows
    if what == "snapshots":
        snaps = aws.describe_snapshots(tag_key=STATE_TAG)
        rows = []
        never = dt.datetime.fromtimestamp(0, dt.UTC)
        for snap in sorted(snaps, key=lambda s: (s.volume_id, s.start_time or never)):
            tags = snap.tags
            start = snap.start_time
            rows.append(
                [
                    ("snapshot", snap.snapshot_id),
                    ("volume", snap.volume_id),
                    ("job", clean(tags.get(TAG + "job", ""))),
                    ("jobid", tags.get(TAG + "jobid", "")),
                    ("level", tags.get(TAG + "level", "")),
                    ("state", tags.get(STATE_TAG, "")),
                    ("start", start.isoformat() if start is not None else ""),
                ]
            )
        return rows
    raise JobError(f"unknown query '{what}': use one of {', '.join(QUERIES)}")
