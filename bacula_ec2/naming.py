"""Catalog paths: where each instance, volume and block file lives under /@amazon-ec2/.

Every backup's block image gets a name unique to that backup (product.md §3): Bacula keeps
only the newest version of a path, so unique names are what let "restore the latest
state" bring back a whole Full + Differential + Incremental chain.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

NAMESPACE = "@amazon-ec2"
ROOT = f"/{NAMESPACE}/"
#: Folder of the volumes selected on their own (volumes=), in place of an instance id.
STANDALONE = "volumes"
#: Volume sizes are whole GiB (the `<N>G` of a volume's file names, EC2's `Size`).
GIB = 1 << 30
#: Bacula's level letters, as job messages spell them.
LEVEL_NAMES = {"F": "Full", "I": "Incremental", "D": "Differential"}

_VOL_FILE = re.compile(
    r"^(?P<vol>vol-[0-9a-zA-Z]+)(?:-(?P<dev>[^/]+?)-(?P<gib>\d+)G)?"
    r"(?:\.(?P<mark>[ID])(?P<jobid>\d+))?\.(?P<ext>json|bimg|bmp|abmp)$"
)


#: EC2 and EBS direct take at most 255 characters of Description (CreateSnapshot(s),
#: StartSnapshot, RegisterImage; botocore's ebs model: Description max 255).
DESCRIPTION_MAX = 255
_ELLIPSIS = "..."


def description(text: str, limit: int = DESCRIPTION_MAX) -> str:
    """`text` if it fits in `limit` characters, else cut to fit, ending in "..."."""
    if len(text) <= limit:
        return text
    return text[: limit - len(_ELLIPSIS)] + _ELLIPSIS


def snapshot_description(job_name: str, label: str) -> str:
    """A backup snapshot's Description: `bacula-ec2 <job> (<instance label>)`, at most 255
    characters. A long label (an instance's Name tag may have 256) is cut first, so the
    job name stays whole when it can; a job name that alone is too long is cut as well."""
    head = f"bacula-ec2 {job_name} ("
    room = DESCRIPTION_MAX - len(head) - 1
    if room >= len(label):
        return f"{head}{label})"
    if room > len(_ELLIPSIS):
        return f"{head}{label[: room - len(_ELLIPSIS)]}{_ELLIPSIS})"
    return description(f"{head}{label})")


def device_short_name(device: str) -> str:
    """`/dev/sda1` -> `sda1`, `xvdf` -> `xvdf` (the product's `<dev>`)."""
    name = device.removeprefix("/dev/").strip("/")
    return name.replace("/", "_") or "unattached"


def instance_dir(instance_id: str) -> str:
    return f"{ROOT}{instance_id}/"


def instance_json(instance_id: str) -> str:
    return f"{ROOT}{instance_id}/{instance_id}.json"


def _volume_stem(instance_id: str, volume_id: str, device: str, size_gib: int) -> str:
    return f"{ROOT}{instance_id}/{volume_id}-{device_short_name(device)}-{size_gib}G"


def volume_json(instance_id: str, volume_id: str, device: str, size_gib: int) -> str:
    return _volume_stem(instance_id, volume_id, device, size_gib) + ".json"


def volume_image(
    instance_id: str, volume_id: str, device: str, size_gib: int, level: str, job_id: int
) -> str:
    """Full: `vol-Y-sda-8G.bimg`; Incremental/Differential: `vol-Y-sda-8G.I42.bimg`."""
    marker = "" if level == "F" else f".{level}{job_id}"
    return _volume_stem(instance_id, volume_id, device, size_gib) + marker + ".bimg"


def volume_map(instance_id: str, volume_id: str) -> str:
    return f"{ROOT}{instance_id}/{volume_id}.bmp"


def volume_empty_map(instance_id: str, volume_id: str) -> str:
    return f"{ROOT}{instance_id}/{volume_id}.abmp"


@dataclass(frozen=True)
class CatalogPath:
    """What a path under /@amazon-ec2/ names."""

    instance_id: str
    kind: str  # "dir", "instance", "volume-json", "bimg", "bmp", "abmp"
    volume_id: str | None = None
    device: str | None = None
    size_gib: int | None = None
    level: str = "F"
    job_id: int | None = None
    relative: str = ""  # path below the namespace, e.g. "i-1/vol-2.bmp"

    @property
    def image_name(self) -> str:
        """The local raw image file restored from this volume's block images."""
        return f"{self.volume_id}-{self.device}-{self.size_gib}G.img"


def strip_where(fname: str, where: str | None) -> str:
    """Undo Bacula's where= prefix (metaplugin-protocol.md §6.6).

    The FD sends `<where>/@amazon-ec2/...`; the prefix is removed exactly when it is
    there, so a where= that itself contains /@amazon-ec2/ cannot confuse it.
    """
    prefix = (where or "").rstrip("/")
    if prefix and fname.startswith(prefix + ROOT):
        return fname[len(prefix) :]
    idx = fname.find(ROOT)
    if idx < 0:
        raise ValueError(f"'{fname}' is not a bacula-ec2 path (no {ROOT} in it)")
    return fname[idx:]


def parse_catalog_path(path: str) -> CatalogPath:
    if not path.startswith(ROOT):
        raise ValueError(f"'{path}' is not under {ROOT}")
    rel = path[len(ROOT) :]
    parts = rel.split("/")
    if len(parts) == 2 and parts[1] == "" and parts[0]:
        return CatalogPath(parts[0], "dir", relative=rel)
    if len(parts) != 2 or not parts[0] or not parts[1]:
        raise ValueError(f"'{path}' is not a path this plugin writes")
    instance_id, name = parts
    if name == f"{instance_id}.json":
        return CatalogPath(instance_id, "instance", relative=rel)
    m = _VOL_FILE.match(name)
    if not m:
        raise ValueError(f"'{path}' is not a path this plugin writes")
    ext = m["ext"]
    kind = {"json": "volume-json", "bimg": "bimg", "bmp": "bmp", "abmp": "abmp"}[ext]
    if kind in ("volume-json", "bimg") and not m["dev"]:
        raise ValueError(f"'{path}' lacks the device and size part of a volume file name")
    if m["mark"] and kind != "bimg":
        raise ValueError(f"'{path}': only block images carry a level marker")
    return CatalogPath(
        instance_id,
        kind,
        volume_id=m["vol"],
        device=m["dev"],
        size_gib=int(m["gib"]) if m["gib"] else None,
        level=m["mark"] or "F",
        job_id=int(m["jobid"]) if m["jobid"] else None,
        relative=rel,
    )
