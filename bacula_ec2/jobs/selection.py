"""Which instances and which of their volumes a job covers (product.md §3 "Selection").

`select` resolves the selection and says what it could not resolve (`Failure`: an id or a
Name that is not there, an instance whose volumes cannot be described), so that a job
backs up the others and reports these (abort_on_error=0), or fails at the first one
(abort_on_error=1). `select_instances` is the strict form: any failure is a JobError.

Resources a bacula-ec2 restore created carry `bacula-ec2:restored-from` (jobs/restore_aws.py):
they are skipped (an instance; a volume attached to a selected instance), with a note for
the job log, unless the FileSet names them by id (instances=i-..., volumes=vol-...) or says
include_restored=yes. Selecting by Name therefore finds the original, not its restored copy,
which keeps the Name tag.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from ..aws import Aws, AwsError
from ..aws.model import Instance, Volume
from ..naming import STANDALONE, device_short_name
from ..params import Parameters
from .chain import TAG
from .context import JobError

#: An instance id, as instances= may give it (else a Name); states no longer backed up.
INSTANCE_ID = re.compile(r"^i-[0-9a-f]{8,17}$")
GONE_STATES = {"terminated", "shutting-down"}
#: The tag every resource a restore creates carries (value: the source instance or volume).
RESTORED_TAG = TAG + "restored-from"


@dataclass(frozen=True)
class Failure:
    """Something selected that cannot be backed up, and why (for the job log and bec2)."""

    what: str  # "instance nope-1", "volume vol-...", "instance i-... (web-1)"
    reason: str
    missing: bool = False  # named by the selection and not there (not an AWS failure)

    def __str__(self) -> str:
        return f"{self.what}: {self.reason}"


class NothingSelected(JobError):
    """The selection names nothing that exists (or nothing at all): the configuration is to
    be fixed, not the job retried (bec2 exits 2 for it)."""


def _nothing_to_back_up(failures: list[Failure]) -> JobError:
    text = "nothing to back up: " + "; ".join(str(f) for f in failures)
    return NothingSelected(text) if all(f.missing for f in failures) else JobError(text)


@dataclass
class VolumeTarget:
    volume: Volume
    device: str  # as attached, e.g. /dev/sda1
    is_root: bool

    @property
    def volume_id(self) -> str:
        return self.volume.volume_id

    @property
    def size_gib(self) -> int:
        return self.volume.size_gib


@dataclass
class InstanceTarget:
    """An instance and its volumes; or, `standalone`, the volumes selected on their own."""

    instance: Instance
    volumes: list[VolumeTarget] = field(default_factory=list)
    excluded: list[VolumeTarget] = field(default_factory=list)
    standalone: bool = False

    @property
    def instance_id(self) -> str:
        return self.instance.instance_id

    @property
    def name(self) -> str | None:
        return self.instance.name

    @property
    def label(self) -> str:
        if self.standalone:
            return "standalone volumes"
        return f"{self.instance_id} ({self.name})" if self.name else self.instance_id


@dataclass
class Selection:
    """What `select` resolved: the targets, what it could not resolve, what it skipped."""

    targets: list[InstanceTarget] = field(default_factory=list)
    failures: list[Failure] = field(default_factory=list)
    #: Job-log lines: resources left out on purpose (restored ones), and why.
    skipped: list[str] = field(default_factory=list)


def _restored_from(tags: dict[str, str]) -> str | None:
    return tags.get(RESTORED_TAG)


def _describe_selected(aws: Aws, params: Parameters, sel: Selection) -> list[Instance]:
    ids = [i for i in params.instances if INSTANCE_ID.match(i)]
    names = [i for i in params.instances if not INSTANCE_ID.match(i)]
    found: dict[str, Instance] = {}
    if ids:
        for inst in aws.describe_instances(ids=ids):
            found[inst.instance_id] = inst
        missing = [i for i in ids if i not in found]
        for iid in missing:
            sel.failures.append(
                Failure(
                    f"instance {iid}",
                    f"not found in region {aws.region}: check instances= and region=",
                    missing=True,
                )
            )
    if names:
        by_name: dict[str, list[Instance]] = {}
        for inst in aws.describe_instances(names=names):
            if inst.state in GONE_STATES:
                continue
            by_name.setdefault(inst.name or "", []).append(inst)
        missing = [n for n in names if n not in by_name]
        for name in missing:
            sel.failures.append(
                Failure(
                    f"instance {name}",
                    f"no instance named '{name}' in region {aws.region} (instances= takes instance ids or "
                    "Name tags; a terminated instance is not backed up)",
                    missing=True,
                )
            )
        for group in by_name.values():
            for inst in group:
                found[inst.instance_id] = inst
    if params.instance_tags or (params.instance_regex and not params.instances):
        for inst in aws.describe_instances(tags=params.instance_tags):
            found.setdefault(inst.instance_id, inst)
    selected = list(found.values())
    if params.instance_regex:
        rx = re.compile(params.instance_regex)
        selected = [i for i in selected if rx.search(i.name or "")]
    return selected


def _volume_excluded(target: VolumeTarget, params: Parameters) -> bool:
    if params.exclude_boot_volume and target.is_root:
        return True
    short = device_short_name(target.device)
    for item in params.exclude_volumes:
        if item == target.volume_id or device_short_name(item) == short:
            return True
    return False


def select_instances(aws: Aws, params: Parameters) -> list[InstanceTarget]:
    """Resolve the selection to instances and volumes, strictly: nothing selected, and any
    id or Name that cannot be resolved, is a JobError."""
    return select(aws, params, strict=True).targets


def select(aws: Aws, params: Parameters, *, strict: bool = False) -> Selection:
    """Resolve the selection to instances and volumes.

    Nothing selected (no selection parameter) is a JobError, and so is a selection that
    leaves nothing to back up. What cannot be resolved is a `Failure` of the result, or
    (`strict`) a JobError naming it. Restored resources are skipped (module docstring).
    """
    if not params.selects_instances() and not params.volumes:
        raise NothingSelected("nothing selected: set instances=, instance_tags=, instance_regex= or volumes=")
    sel = Selection()

    def check() -> None:
        if strict and sel.failures:
            raise JobError("; ".join(str(f) for f in sel.failures))

    targets = sel.targets
    if params.selects_instances():
        excluded = set(params.exclude_instances)
        by_id = {i for i in params.instances if INSTANCE_ID.match(i)}
        described = _describe_selected(aws, params, sel)
        check()
        for inst in sorted(described, key=lambda i: i.instance_id):
            name = inst.name
            if inst.instance_id in excluded or (name and name in excluded):
                continue
            if inst.state in GONE_STATES:
                continue
            source = _restored_from(inst.tags)
            named = inst.instance_id in by_id
            if source and not named and not params.include_restored:
                label = f"{inst.instance_id} ({name})" if name else inst.instance_id
                sel.skipped.append(
                    f"instance {label}: skipped, a bacula-ec2 restore created it (from {source}); "
                    "name it by id in instances= or set include_restored=yes to back it up"
                )
                continue
            try:
                targets.append(_instance_target(aws, params, inst, sel, whole=bool(source)))
            except AwsError as exc:
                label = f"{inst.instance_id} ({name})" if name else inst.instance_id
                sel.failures.append(Failure(f"instance {label}", f"its volumes cannot be described: {exc}"))
                check()
        if not targets and not params.volumes:
            if sel.failures:
                raise _nothing_to_back_up(sel.failures)
            hint = f"; {'; '.join(sel.skipped)}" if sel.skipped else ""
            raise NothingSelected(
                f"the selection matched no instance in region {aws.region} "
                f"(check instances=, instance_tags=, instance_regex=, exclude_instances=){hint}"
            )
    if params.volumes:
        covered = {v.volume_id for t in targets for v in t.volumes}
        standalone = _standalone_target(aws, params, covered, sel)
        check()
        if standalone.volumes:
            targets.append(standalone)
        elif not targets and sel.failures:
            raise _nothing_to_back_up(sel.failures)
    return sel


def _standalone_target(aws: Aws, params: Parameters, covered: set[str], sel: Selection) -> InstanceTarget:
    """volumes=: each by id, snapshotted on its own (a volume already backed up with its
    instance in this job is not read twice). Named by id, a restored volume is backed up."""
    wanted = list(dict.fromkeys(params.volumes))
    bad = [v for v in wanted if not re.match(r"^vol-[0-9a-f]{8,17}$", v)]
    if bad:
        raise JobError(f"volumes= takes volume ids (vol-...): {', '.join(bad)}")
    found = {v.volume_id: v for v in aws.describe_volumes_filtered(wanted)}
    missing = [v for v in wanted if v not in found]
    for vid in missing:
        sel.failures.append(
            Failure(
                f"volume {vid}", f"not found in region {aws.region}: check volumes= and region=", missing=True
            )
        )
    target = InstanceTarget(Instance(STANDALONE), standalone=True)
    for vid in wanted:
        if vid in covered or vid not in found:
            continue
        vol = found[vid]
        target.volumes.append(VolumeTarget(vol, vol.attachment.device or "detached", is_root=False))
    return target


def _instance_target(
    aws: Aws, params: Parameters, inst: Instance, sel: Selection, *, whole: bool = False
) -> InstanceTarget:
    """The instance's volumes, minus the excluded ones and (unless `whole`: the instance is a
    restored one selected by id, or include_restored=yes) the restored ones attached to it."""
    devices = inst.ebs_devices
    volumes = {v.volume_id: v for v in aws.describe_volumes([str(d.volume_id) for d in devices])}
    target = InstanceTarget(inst)
    named = set(params.volumes)
    for dev in devices:
        vol = volumes.get(str(dev.volume_id))
        if vol is None:
            continue
        vt = VolumeTarget(vol, dev.device_name, is_root=dev.device_name == inst.root_device_name)
        source = _restored_from(vol.tags)
        if source and not whole and not params.include_restored:
            target.excluded.append(vt)
            also = (
                "it is backed up on its own (volumes=)"
                if vol.volume_id in named
                else "name it in volumes= or set include_restored=yes to back it up"
            )
            sel.skipped.append(
                f"volume {vol.volume_id} ({device_short_name(dev.device_name)}) of {target.label}: "
                f"skipped with its instance, a bacula-ec2 restore created it (from {source}); {also}"
            )
            continue
        (target.excluded if _volume_excluded(vt, params) else target.volumes).append(vt)
    return target
