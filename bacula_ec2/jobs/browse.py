"""`.ls` (browse regions / instances / volumes) and `.query` answers (product.md §5,
docs/LISTING.md).

Both only describe: nothing is created. Listing paths are the plugin's own namespace:
`/` lists regions, `/<region>` the instances there, `/<region>/<instance>` its volumes,
where `<instance>` is an instance id or its Name tag (an ambiguous Name is refused, naming
the ids it matches).

An instance with a Name is listed as a directory whose link target is the Name: bconsole
prints `drwxr-x---  ...  i-0abc.../ -> web-1` (the FD appends ` -> <target>` for a link,
and draws the mode it is given), so the id stays what an admin copies into the next path
and the Name is on the same line.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .. import naming, timefmt
from ..aws import Aws
from ..aws.model import Instance
from .chain import STATE_TAG, TAG
from .context import JobError
from .selection import GONE_STATES, INSTANCE_ID, select_instances

_CONTROL = re.compile(r"[\x00-\x1f\x7f]")

#: Every `.query parameter=<p>` value, with what it answers (one line each for `help`).
QUERY_HELP: dict[str, str] = {
    "help": "this list (also an empty parameter=)",
    "regions": "one region=<name> line per region this account can use",
    "instances": (
        "one list per instance: instance; name; state; type; az; volumes "
        "(the Plugin line's selection when it has one; else every instance of the region)"
    ),
    "volumes": "one list per volume of the region: volume; instance; device; size_gib; type; encrypted",
    "snapshots": (
        "one list per snapshot this plugin made in the region: snapshot; volume; job; jobid; "
        "level; state (pending or base); start"
    ),
}
QUERIES = tuple(QUERY_HELP)


@dataclass(frozen=True)
class Entry:
    """One `.ls` line: a directory (name ends in `/`) or a file; `label` (a directory's
    Name) is shown as its link target."""

    name: str
    directory: bool
    size: int = 0
    mtime: int = 0
    label: str | None = None


def _epoch(value: dt.datetime | None) -> int:
    return timefmt.epoch(value, default=0)


def clean(value: object) -> str:
    """Query values cannot hold ',' (the FD splits on it) nor '=' safely."""
    return str(value).replace(",", ";").replace("\n", " ")


def shown_name(name: str | None) -> str | None:
    """A Name tag as one listing line can show it: control characters as `?`, no
    surrounding blanks (the FD strips trailing ones); None when nothing is left."""
    if not name:
        return None
    text = _CONTROL.sub("?", name).strip()
    return text or None


def find_instance(aws: Aws, key: str) -> Instance:
    """The instance `key` names in this region: its id, else its Name tag (instances being
    terminated are not candidates for a Name). Refuses a Name that matches none or several."""
    if INSTANCE_ID.match(key):
        found = aws.describe_instances(ids=[key])
        if found:
            return found[0]
    named = [i for i in aws.describe_instances(names=[key]) if i.state not in GONE_STATES]
    if len(named) == 1:
        return named[0]
    region = aws.region
    if not named:
        raise JobError(
            f"no instance with the id or Name '{key}' in region {region} "
            f"(path=/{region} lists the instances there)"
        )
    ids = sorted(i.instance_id for i in named)
    raise JobError(
        f"the Name '{key}' is ambiguous in region {region}: instances {', '.join(ids)} carry it; "
        f"use the id (path=/{region}/{ids[0]})"
    )


def listing(aws_for: Callable[[str | None], Aws], path: str) -> list[Entry]:
    """One level of the namespace under `path`."""
    parts = [p for p in path.strip().strip("/").split("/") if p]
    if len(parts) > 2:
        raise JobError(f"nothing to list under '{path}': use /, /<region> or /<region>/<instance id or Name>")
    if not parts:
        return [Entry(f"{region}/", True) for region in aws_for(None).describe_regions()]
    aws = aws_for(parts[0])
    if len(parts) == 1:
        instances = sorted(aws.describe_instances(), key=lambda i: i.instance_id)
        return [
            Entry(f"{i.instance_id}/", True, mtime=_epoch(i.launch_time), label=shown_name(i.name))
            for i in instances
        ]
    inst = find_instance(aws, parts[1])
    devices = inst.ebs_devices
    volumes = {v.volume_id: v for v in aws.describe_volumes([str(d.volume_id) for d in devices])}
    entries = []
    for d in devices:
        vol = volumes.get(str(d.volume_id))
        if vol is None:
            continue
        dev = naming.device_short_name(d.device_name)
        name = f"{vol.volume_id}-{dev}-{vol.size_gib}G"
        entries.append(Entry(name, False, vol.size_gib * naming.GIB, _epoch(vol.create_time)))
    return entries


def query_help() -> list[list[tuple[str, str]]]:
    """`.query parameter=help`: one `<parameter>=<what it answers>` line each."""
    return [[(name, clean(text))] for name, text in QUERY_HELP.items()]


def query(aws_for: Callable[[], Aws], params: Any, what: str) -> list[list[tuple[str, str]]]:
    """Rows of key/value pairs for `.query parameter=<what>` (`help` or empty: the list of
    parameters, without connecting to AWS)."""
    if what in ("", "help"):
        return query_help()
    if what not in QUERY_HELP:
        raise JobError(
            f"unknown query '{what}': use one of {', '.join(QUERIES)} (parameter=help describes them)"
        )
    aws = aws_for()
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
