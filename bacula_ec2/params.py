"""Plugin parameters: one pydantic model for the FileSet line, restore options and bec2.

The FD hands parameters over as `key=value` lines, repeated keys included (restore Plugin
Options are sent twice, metaplugin-protocol.md §3.4.5), so the last value wins. Every
problem is reported with the parameter's name, and secrets never appear in a message.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)


class ParameterError(ValueError):
    """A parameter is unknown, missing or malformed; the message names it."""


_TRUE = {"1", "yes", "true", "on", "y"}
_FALSE = {"0", "no", "false", "off", "n", ""}


def _split_list(value: object) -> list[str]:
    if isinstance(value, list):
        return [str(v).strip() for v in value if str(v).strip()]
    return [part.strip() for part in str(value).split(",") if part.strip()]


def _split_tags(value: object) -> dict[str, str]:
    if isinstance(value, dict):
        return {str(k): str(v) for k, v in value.items()}
    tags: dict[str, str] = {}
    for item in _split_list(value):
        key, sep, val = item.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"'{item}' is not of the form key=value")
        tags[key.strip()] = val.strip()
    return tags


# --- AWS limits checked here, before any job touches AWS.
#: Tags per resource (EC2 "Tag your Amazon EC2 resources", Tag restrictions:
#: https://docs.aws.amazon.com/AWSEC2/latest/UserGuide/Using_Tags.html#tag-restrictions).
MAX_TAGS = 50
#: Tag key / value lengths on EC2 resources (the same page: 128 and 256 Unicode characters).
EC2_TAG_KEY_MAX, EC2_TAG_VALUE_MAX = 128, 256
#: StartSnapshot's tags are shorter (botocore's ebs model: TagKey max 127, TagValue max 255);
#: restore_tags go there (the restored snapshots), so they must fit both.
EBS_TAG_KEY_MAX, EBS_TAG_VALUE_MAX = 127, 255
#: Prefixes no user tag may carry: aws: is AWS's (any case; the same page), bacula-ec2: is
#: the product's own (its snapshot lifecycle reads them, docs/SNAPSHOTS.md).
RESERVED_TAG_PREFIXES = ("aws:", "bacula-ec2:")
#: Tags the product puts on each backup snapshot itself: job, jobname, jobid, level,
#: instance, state, owner, lease-until (jobs/snapshots.job_tags) + volume, position (set once
#: the snapshot exists). tests/unit/test_params.py counts them on a real backup's snapshots.
PRODUCT_SNAPSHOT_TAGS = 10
#: Tags a restore puts on what it creates: restored-from, restore-job, restore-temporary, and
#: Name (restore_name=) on volumes and instances (jobs/restore_aws.py).
PRODUCT_RESTORE_TAGS = 4
#: A KMS key ARN: what StartSnapshot's KmsKeyArn takes. botocore's ebs model only asks for
#: `arn:aws[a-z\-]*:kms:.*:[0-9]{12}:key/.*` (so a key id, an alias or an alias ARN is
#: refused by AWS); here the region and key id must be there too.
KMS_KEY_ARN = re.compile(
    r"arn:aws(?:-[a-z]+)*:kms:(?P<region>[a-z]{2}(?:-[a-z0-9]+)+-\d+):\d{12}:key/[A-Za-z0-9-]+"
)
_REGION = re.compile(r"[a-z]{2}(-[a-z0-9]+)+-\d+")
#: Zone names start with their region: us-east-1a, us-west-2-lax-1a (Local Zones).
_ZONE = re.compile(r"(?P<region>[a-z]{2}(?:-[a-z0-9]+)+-\d+)(?:[a-z]|-[a-z0-9-]+[a-z0-9])")


def check_tags(
    tags: dict[str, str], *, room: int, key_max: int, value_max: int, reserved: bool = True
) -> None:
    """ValueError naming the first tag that AWS would refuse, or the count over `room`."""
    for key, value in tags.items():
        if len(key) > key_max:
            raise ValueError(f"tag key '{key[:40]}...' has {len(key)} characters, AWS allows {key_max}")
        if len(value) > value_max:
            raise ValueError(f"the value of tag '{key}' has {len(value)} characters, AWS allows {value_max}")
        if reserved and key.lower().startswith(RESERVED_TAG_PREFIXES):
            raise ValueError(
                f"tag key '{key}' starts with a reserved prefix (aws: is AWS's, bacula-ec2: the product's)"
            )
    if len(tags) > room:
        raise ValueError(
            f"{len(tags)} tags, but only {room} fit: AWS allows {MAX_TAGS} tags per resource"
            + (f" and bacula-ec2 adds {MAX_TAGS - room} of its own" if room < MAX_TAGS else "")
        )


def kms_key_region(arn: str) -> str | None:
    """The region of a KMS key ARN (None if `arn` is not one)."""
    m = KMS_KEY_ARN.fullmatch(arn)
    return m["region"] if m else None


def kms_key_fits(arn: str, region: str) -> bool:
    """Whether the key can encrypt in `region` (a KMS key works in its own region only)."""
    return kms_key_region(arn) == region


#: The shortest region prefix of a zone name: us-east-1a, us-west-2-lax-1a (a Local Zone of us-west-2).
_ZONE_REGION = re.compile(r"(?P<region>[a-z]{2}(?:-[a-z0-9]+)+?-\d+)(?:[a-z]|-[a-z0-9-]+[a-z0-9])")


def zone_region(zone: str) -> str | None:
    """The region an availability zone name belongs to (None if `zone` is not one)."""
    m = _ZONE_REGION.fullmatch(zone)
    return m["region"] if m else None


#: Backup levels: Bacula's letters and names, any case (bec2 --level).
_LEVELS = {"f": "F", "full": "F", "i": "I", "incremental": "I", "d": "D", "differential": "D"}


def parse_level(text: str) -> str:
    """F, I or D from F/I/D or Full/Incremental/Differential (any case); ValueError else."""
    level = _LEVELS.get(text.strip().lower())
    if level is None:
        raise ValueError(f"'{text}' is not a level: F, I, D, Full, Incremental or Differential")
    return level


class Parameters(BaseModel):
    """Everything a FileSet `Plugin = "ec2: ..."` line, a restore or bec2 can set."""

    model_config = ConfigDict(extra="forbid", frozen=True, hide_input_in_errors=True)

    # --- AWS connection and credentials
    region: str | None = Field(None, description="AWS region of the instances, e.g. eu-west-1")
    access_key: str | None = Field(None, description="Access key id (prefer profile or role)")
    secret_key: SecretStr | None = Field(None, description="Secret access key")
    session_token: SecretStr | None = Field(None, description="Session token for temporary keys")
    profile: str | None = Field(None, description="Profile name in the AWS config/credentials files")
    credentials_file: str | None = Field(None, description="Path of an AWS shared credentials file")
    role_arn: str | None = Field(None, description="IAM role to assume for all AWS calls")
    external_id: str | None = Field(None, description="External id for role_arn")
    role_session_name: str = Field("bacula-ec2", description="Session name for role_arn")
    endpoint_url: str | None = Field(None, description="Endpoint for both EC2 and EBS (tests)")
    ec2_endpoint_url: str | None = Field(None, description="EC2 endpoint (overrides endpoint_url)")
    ebs_endpoint_url: str | None = Field(None, description="EBS direct endpoint (overrides endpoint_url)")
    ca_bundle: str | None = Field(
        None,
        description="PEM file of the CA certificates to trust for AWS's TLS (default: AWS_CA_BUNDLE, "
        "else botocore's bundle)",
    )

    # --- selection
    instances: list[str] = Field(
        default_factory=list, description="Instances by id (i-...) or Name tag, comma separated"
    )
    instance_tags: dict[str, str] = Field(
        default_factory=dict, description="Select instances having all these tags: k=v,k2=v2"
    )
    instance_regex: str | None = Field(None, description="Select instances whose Name matches")
    exclude_instances: list[str] = Field(
        default_factory=list, description="Instances (id or Name) never backed up"
    )
    volumes: list[str] = Field(
        default_factory=list,
        description="Standalone EBS volumes by id (vol-...), backed up under /@amazon-ec2/volumes/",
    )
    exclude_volumes: list[str] = Field(
        default_factory=list, description="Volume ids or device names (sdf, /dev/xvdf) to skip"
    )
    exclude_boot_volume: bool = Field(False, description="Skip each instance's root volume")
    include_restored: bool = Field(
        False,
        description="Also back up what a bacula-ec2 restore created (tag bacula-ec2:restored-from); "
        "by default only when named by id",
    )

    # --- behaviour
    keep_full_snapshot: bool = Field(
        False, description="Keep the Full's snapshot through Incrementals (allows Differentials)"
    )
    bitmap_headers: bool = Field(True, description="Also store the .bmp and .abmp block maps")
    concurrent_threads: int = Field(
        64, ge=1, le=512, description="Get/PutSnapshotBlock requests in flight per volume"
    )
    request_rate: int = Field(
        980,
        ge=1,
        le=100000,
        description="GetSnapshotBlock requests/s this job starts at most (AWS allows 1,000 per snapshot "
        "and per account); lowered automatically while AWS throttles",
    )
    snapshot_timeout: int = Field(3600, ge=10, description="Seconds a snapshot may go without progress")
    snapshot_tags: dict[str, str] = Field(
        default_factory=dict, description="Extra tags on the snapshots we create: k=v,k2=v2"
    )
    abort_on_error: bool = Field(
        False,
        description="0: an instance or volume that cannot be backed up is a job Error, the others are "
        "backed up; 1: the job fails at the first one (only 0 or 1/yes/true/on: the FD reads any value "
        "not starting with 0 as on)",
    )

    # --- restore
    restore_to: Literal["local", "aws"] | None = Field(
        None, description="local (raw images) or aws; default: where=/dir means local, where=/ aws"
    )
    local_path: str | None = Field(None, description="Directory for restore_to=local")
    restore_as: Literal["volume", "instance", "snapshot", "files"] = Field(
        "volume",
        description="Into AWS: new volumes, a new instance, or snapshots only (you build the rest); "
        "files: the guest files restore_files= names, under where=/dir",
    )
    restore_files: list[str] = Field(
        default_factory=list,
        description="With restore_as=files: paths or globs inside the guest, comma separated "
        "(/etc/nginx/**,/home/app/.env; a partition first: p2:/etc/**)",
    )
    restore_region: str | None = Field(None, description="Region to restore into (default: the backup's)")
    restore_availability_zone: str | None = Field(
        None, description="AZ of the new volumes/instance (default: the original's, or the attach target's)"
    )
    restore_volume_type: str | None = Field(
        None, description="Volume type of the new volumes (default: the original's)"
    )
    restore_iops: int | None = Field(None, ge=100, description="IOPS of the new volumes (io1/io2/gp3)")
    restore_throughput: int | None = Field(None, ge=125, description="Throughput MiB/s of new gp3 volumes")
    restore_kms_key: str | None = Field(
        None, description="KMS key (ARN) to encrypt the restored snapshots and volumes with"
    )
    restore_tags: dict[str, str] = Field(
        default_factory=dict, description="Extra tags on everything the restore creates: k=v,k2=v2"
    )
    restore_attach_instance: str | None = Field(
        None, description="Attach the restored volume to this existing instance (id)"
    )
    restore_attach_device: str | None = Field(
        None, description="Device name for restore_attach_instance, e.g. /dev/sdf"
    )
    restore_instance_type: str | None = Field(None, description="Instance type of the new instance")
    restore_subnet: str | None = Field(None, description="Subnet id of the new instance")
    restore_security_groups: list[str] = Field(
        default_factory=list, description="Security group ids of the new instance, comma separated"
    )
    restore_key_name: str | None = Field(None, description="Key pair name of the new instance")
    restore_private_ip: str | None = Field(None, description="Private IPv4 address of the new instance")
    restore_name: str | None = Field(None, description="Name tag of the new instance/volumes")
    restore_start: bool = Field(True, description="Leave the new instance running (no: stop it)")
    keep_restore_snapshots: bool = Field(
        False, description="Keep the intermediate snapshots (and image) after the volumes/instance exist"
    )
    restore_workdir: str | None = Field(
        None,
        description="Staging directory for restores into AWS (default: the FD working directory) "
        "and for restore_as=files (default: inside where=)",
    )
    restore_min_kib_per_s: int = Field(
        4096,
        ge=1,
        le=10_000_000,
        description="Slowest upload (KiB/s) a restored snapshot's StartSnapshot Timeout allows for: the "
        "Timeout is sized for the volume's data at this rate (10 minutes to 72 hours)",
    )

    # --- set by the FD itself
    listing: str | None = Field(None, description="(set by bconsole .ls) path to list")
    query: str | None = Field(None, description="(set by bconsole .query) what to answer")
    accurate: bool = Field(False, alias="Accurate", description="(set by the FD) accurate job")

    @field_validator(
        "instances",
        "exclude_instances",
        "volumes",
        "exclude_volumes",
        "restore_security_groups",
        "restore_files",
        mode="before",
    )
    @classmethod
    def _lists(cls, value: object) -> list[str]:
        return _split_list(value)

    @field_validator("instance_tags", "snapshot_tags", "restore_tags", mode="before")
    @classmethod
    def _tags(cls, value: object) -> dict[str, str]:
        return _split_tags(value)

    @field_validator(
        "exclude_boot_volume",
        "keep_full_snapshot",
        "bitmap_headers",
        "include_restored",
        "accurate",
        "restore_start",
        "keep_restore_snapshots",
        mode="before",
    )
    @classmethod
    def _bools(cls, value: object) -> bool:
        if isinstance(value, bool):
            return value
        text = str(value).strip().lower()
        if text in _TRUE:
            return True
        if text in _FALSE:
            return False
        raise ValueError(f"'{value}' is not a yes/no value")

    @field_validator("abort_on_error", mode="before")
    @classmethod
    def _abort_on_error(cls, value: object) -> bool:
        """The FD reads abort_on_error itself (metaplugin-protocol.md §3.4.4): a value starting
        with 0 is off, anything else on (no, false and an empty value too). Only the spellings
        both read the same way are accepted."""
        if isinstance(value, bool):
            return value
        text = str(value)
        if text == "0":
            return False
        if text.strip().lower() in _TRUE and not text.startswith("0"):
            return True
        raise ValueError(
            f"'{value}' is ambiguous: the File Daemon reads abort_on_error as on unless its value starts "
            "with 0 (so no, false and an empty value mean on to it); write abort_on_error=0 (the default: "
            "report what cannot be backed up and back up the rest) or abort_on_error=1 (fail the job)"
        )

    @field_validator("instance_regex")
    @classmethod
    def _regex(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                re.compile(value)
            except re.error as exc:
                raise ValueError(f"not a valid regular expression: {exc}") from exc
        return value

    @field_validator(
        "restore_region",
        "restore_availability_zone",
        "restore_volume_type",
        "restore_iops",
        "restore_throughput",
        "restore_kms_key",
        "restore_attach_instance",
        "restore_attach_device",
        "restore_instance_type",
        "restore_subnet",
        "restore_key_name",
        "restore_private_ip",
        "restore_name",
        "restore_workdir",
        "restore_to",
        "local_path",
        "ca_bundle",
        mode="before",
    )
    @classmethod
    def _empty_is_unset(cls, value: object) -> object:
        """An empty value (`restore_subnet=`, or a Plugin Option cleared) means "not set"."""
        if isinstance(value, str) and not value.strip():
            return None
        return value

    @field_validator("region", "restore_region")
    @classmethod
    def _region(cls, value: str | None) -> str | None:
        if value is not None and not _REGION.fullmatch(value):
            raise ValueError(f"'{value}' does not look like an AWS region (e.g. eu-west-1)")
        return value

    @field_validator("snapshot_tags")
    @classmethod
    def _snapshot_tags(cls, value: dict[str, str]) -> dict[str, str]:
        check_tags(
            value,
            room=MAX_TAGS - PRODUCT_SNAPSHOT_TAGS,
            key_max=EC2_TAG_KEY_MAX,
            value_max=EC2_TAG_VALUE_MAX,
        )
        return value

    @field_validator("restore_tags")
    @classmethod
    def _restore_tags(cls, value: dict[str, str]) -> dict[str, str]:
        check_tags(
            value,
            room=MAX_TAGS - PRODUCT_RESTORE_TAGS,
            key_max=EBS_TAG_KEY_MAX,
            value_max=EBS_TAG_VALUE_MAX,
        )
        return value

    @field_validator("instance_tags")
    @classmethod
    def _instance_tags(cls, value: dict[str, str]) -> dict[str, str]:
        # A filter, not tags we write: aws:* tags (CloudFormation's, ...) may be matched.
        check_tags(value, room=MAX_TAGS, key_max=EC2_TAG_KEY_MAX, value_max=EC2_TAG_VALUE_MAX, reserved=False)
        return value

    @field_validator("restore_name")
    @classmethod
    def _restore_name(cls, value: str | None) -> str | None:
        if value is not None and len(value) > EBS_TAG_VALUE_MAX:
            raise ValueError(f"{len(value)} characters; the Name tag takes at most {EBS_TAG_VALUE_MAX}")
        return value

    @field_validator("restore_kms_key")
    @classmethod
    def _kms_key(cls, value: str | None) -> str | None:
        if value is not None and not KMS_KEY_ARN.fullmatch(value):
            raise ValueError(
                f"'{value}' is not a KMS key ARN (arn:aws:kms:<region>:<12-digit account>:key/<key id>); "
                "StartSnapshot takes no key id, alias or alias ARN"
            )
        return value

    @field_validator("restore_availability_zone")
    @classmethod
    def _zone(cls, value: str | None) -> str | None:
        if value is not None and not _ZONE.fullmatch(value):
            raise ValueError(f"'{value}' does not look like an availability zone (e.g. eu-west-1b)")
        return value

    @field_validator("ca_bundle")
    @classmethod
    def _ca_bundle(cls, value: str | None) -> str | None:
        if value is None:
            return None
        if not os.path.isfile(value):
            raise ValueError(f"'{value}' is not a file (a PEM bundle of CA certificates)")
        try:
            with open(value, "rb") as fh:
                head = fh.read(1 << 20)
        except OSError as exc:
            raise ValueError(f"cannot read '{value}': {exc.strerror}") from exc
        if b"-----BEGIN CERTIFICATE-----" not in head:
            raise ValueError(f"'{value}' holds no PEM certificate (-----BEGIN CERTIFICATE-----)")
        return value

    @model_validator(mode="after")
    def _files(self) -> Parameters:
        """restore_as=files and restore_files= go together, and restore files, not into AWS."""
        if self.restore_as == "files":
            if not self.restore_files:
                raise ValueError(
                    "restore_as=files needs restore_files= (the paths or globs inside the guest, "
                    "e.g. /etc/nginx/**,/home/app/.env)"
                )
            if self.restore_to == "aws":
                raise ValueError(
                    "restore_as=files restores guest files into a directory (where=/dir): "
                    "it does not go with restore_to=aws"
                )
        elif self.restore_files:
            raise ValueError(
                f"restore_files= is given but restore_as={self.restore_as}: set restore_as=files "
                "to restore single files"
            )
        return self

    @model_validator(mode="after")
    def _places(self) -> Parameters:
        """A zone is in the region it is restored into; a KMS key too (KMS keys are regional)."""
        region = self.restore_region
        zone = self.restore_availability_zone
        if region and zone and not zone.startswith(region):
            raise ValueError(
                f"parameter restore_availability_zone: '{zone}' is not a zone of restore_region {region}"
            )
        key = KMS_KEY_ARN.fullmatch(self.restore_kms_key or "")
        in_zone = _ZONE.fullmatch(zone or "")
        target = region or (in_zone["region"] if in_zone else None)
        if key and target and not kms_key_fits(self.restore_kms_key or "", target):
            raise ValueError(
                f"parameter restore_kms_key: the key is in {key['region']}, the restore goes to {target} "
                "(a KMS key encrypts only in its own region)"
            )
        return self

    @field_validator("endpoint_url", "ec2_endpoint_url", "ebs_endpoint_url")
    @classmethod
    def _url(cls, value: str | None) -> str | None:
        if value is not None and not re.match(r"https?://", value):
            raise ValueError(f"'{value}' is not an http(s) URL")
        return value

    def selects_instances(self) -> bool:
        return bool(self.instances or self.instance_tags or self.instance_regex)

    def redacted(self) -> dict[str, Any]:
        """What may be logged: the parameters that were set, secrets masked."""
        out: dict[str, Any] = {}
        for name, value in self.model_dump(exclude_defaults=True).items():
            if name in SECRET_PARAMETERS:
                out[name] = "***"
            else:
                out[name] = value
        return out

    def secret_values(self) -> list[str]:
        """Secret strings to scrub from any text that leaves the process."""
        found = []
        for name in SECRET_PARAMETERS:
            value = getattr(self, name)
            if isinstance(value, SecretStr) and value.get_secret_value():
                found.append(value.get_secret_value())
        return found


SECRET_PARAMETERS = ("secret_key", "session_token")

_FIELD_BY_KEY: dict[str, str] = {(info.alias or name): name for name, info in Parameters.model_fields.items()}


def parse_parameters(pairs: Iterable[tuple[str, str]]) -> Parameters:
    """Build the model from FD `key=value` pairs (last value wins)."""
    values: dict[str, str] = {}
    for key, value in pairs:
        name = key.strip()
        if name not in _FIELD_BY_KEY:
            lowered = {k.lower(): k for k in _FIELD_BY_KEY}
            hint = lowered.get(name.lower())
            suggestion = f" (did you mean '{hint}'?)" if hint else ""
            raise ParameterError(
                f"unknown parameter '{name}'{suggestion}; the list: "
                "/usr/share/doc/bacula-ec2-plugin/PARAMETERS.md.gz"
            )
        values[name] = value
    try:
        return Parameters.model_validate(values)
    except ValidationError as exc:
        raise ParameterError(_describe(exc)) from None  # the cause echoes secrets; _describe has the rest


def _describe(exc: ValidationError) -> str:
    parts = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in err["loc"])
        msg = str(err["msg"]).removeprefix("Value error, ")
        if not loc:  # a check across parameters: its message names them
            parts.append(msg)
            continue
        value = err.get("input")
        if loc not in SECRET_PARAMETERS and isinstance(value, str) and value not in msg:
            shown = value if len(value) <= 80 else value[:77] + "..."
            msg += f" (got '{shown}')"
        parts.append(f"parameter {loc}: {msg}")
    return "; ".join(parts)


# name, kind, prompt, default shown in bconsole ("" = none)
RESTORE_OPTIONS: list[tuple[str, str, str, str]] = [
    ("restore_to", "str", "Restore target: local or aws (default: where=/ aws, where=/dir local)", ""),
    ("local_path", "str", "Local directory for restored images (with restore_to=local)", ""),
    ("restore_as", "str", "Into AWS as: volume, instance or snapshot; files: guest files under where=", ""),
    ("restore_region", "str", "Region to restore into (default: the backup's region)", ""),
    ("restore_availability_zone", "str", "Availability zone of the new volumes or instance", ""),
    ("restore_volume_type", "str", "Volume type of the new volumes (default: the original's)", ""),
    ("restore_iops", "int64", "IOPS of the new volumes", ""),
    ("restore_throughput", "int64", "Throughput (MiB/s) of new gp3 volumes", ""),
    ("restore_kms_key", "str", "KMS key ARN to encrypt the restored volumes with", ""),
    ("restore_tags", "str", "Extra tags on restored resources: k=v,k2=v2", ""),
    ("restore_attach_instance", "str", "Attach the restored volume to this instance id", ""),
    ("restore_attach_device", "str", "Device name for the attachment, e.g. /dev/sdf", ""),
    ("restore_instance_type", "str", "Instance type of the new instance", ""),
    ("restore_subnet", "str", "Subnet id of the new instance", ""),
    ("restore_security_groups", "str", "Security group ids of the new instance, comma separated", ""),
    ("restore_key_name", "str", "Key pair name of the new instance", ""),
    ("restore_private_ip", "str", "Private IP address of the new instance", ""),
    ("restore_name", "str", "Name tag of the new instance or volumes", ""),
    ("restore_start", "bool", "Leave the new instance running (no: stop it)", ""),
    ("keep_restore_snapshots", "bool", "Keep the intermediate snapshots and image", ""),
    ("restore_workdir", "str", "Staging directory for restores into AWS (and of restore_as=files)", ""),
    (
        "restore_files",
        "str",
        "With restore_as=files: guest paths or globs, e.g. /etc/nginx/**,p2:/home/app/.env",
        "",
    ),
]


def valid_param_names() -> list[str]:
    """Every key the FileSet line may carry (FD `valid_params[]`)."""
    return [info.alias or name for name, info in Parameters.model_fields.items()]


def restore_option_items() -> list[tuple[str, str, str, str]]:
    """Restore "Plugin Options" (FD `plugin_items_dump[]`): (name, str|int64|bool, prompt, default)."""
    return list(RESTORE_OPTIONS)


def parameter_docs() -> list[tuple[str, str, str]]:
    """(name, default, description) for docs/PARAMETERS.md and `bec2 --help`."""
    rows = []
    for name, info in Parameters.model_fields.items():
        default = info.get_default(call_default_factory=True)
        if isinstance(default, list | dict):
            default = ",".join(default) if default else ""
        rows.append((info.alias or name, "" if default is None else str(default), info.description or ""))
    return rows


def parameters_markdown() -> str:
    """The table in docs/PARAMETERS.md (a test keeps the two identical)."""
    lines = ["| parameter | default | meaning |", "|---|---|---|"]
    for name, default, text in parameter_docs():
        lines.append(f"| `{name}` | {f'`{default}`' if default else ''} | {text} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    print(parameters_markdown(), end="")
