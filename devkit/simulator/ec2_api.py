"""EC2 Query API (``POST /`` with ``Action=...&Version=2016-11-15``).

Parameters are decoded and results encoded by :mod:`.query_codec` from botocore's EC2
model, so handlers here take and return the same dicts boto3 users see. To add an action
(RunInstances, DescribeImages, ...), write ``def _action(self, region, args) -> dict`` and
list it in ``_HANDLERS``.
"""

from __future__ import annotations

import base64
import hashlib
import re
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, TypeVar
from urllib.parse import parse_qsl

from . import tokens
from .errors import SimError
from .messages import Request, Response
from .model import (
    OWNER_ID,
    Image,
    Instance,
    Region,
    Snapshot,
    Volume,
    World,
    check_id,
    modification_state,
    not_found,
    state_code,
)
from .policy import Call, Policy
from .query_codec import error_xml, parse_query, service_model, to_xml

XML = "text/xml;charset=UTF-8"
T = TypeVar("T")
Handler = Callable[["Ec2Api", Region, dict[str, Any]], dict[str, Any]]

KNOWN_REGIONS = (
    "us-east-1", "us-east-2", "us-west-1", "us-west-2", "ca-central-1", "eu-west-1",
    "eu-west-2", "eu-west-3", "eu-central-1", "eu-north-1", "ap-south-1", "ap-northeast-1",
    "ap-northeast-2", "ap-southeast-1", "ap-southeast-2", "sa-east-1",
)


# ------------------------------------------------------------------ filters and paging


def _wildcard(value: str) -> re.Pattern[str]:
    """EC2 filter values accept ``*`` and ``?`` wildcards."""
    return re.compile("".join(
        ".*" if c == "*" else "." if c == "?" else re.escape(c) for c in value) + r"\Z")


def _tag_values(tags: Mapping[str, str], name: str) -> list[str] | None:
    if name.startswith("tag:"):
        key = name[4:]
        return [tags[key]] if key in tags else []
    if name == "tag-key":
        return list(tags)
    if name == "tag-value":
        return list(tags.values())
    return None


def _filter(items: Iterable[T], filters: Sequence[Mapping[str, Any]],
            fields: Mapping[str, Callable[[T], Iterable[Any]]],
            tags_of: Callable[[T], Mapping[str, str]] | None) -> list[T]:
    """Keep items matching every filter (any value of a filter may match)."""
    compiled: list[tuple[str, list[re.Pattern[str]]]] = []
    for f in filters:
        name = f.get("Name", "")
        if name not in fields and not (tags_of and (
                name.startswith("tag:") or name in ("tag-key", "tag-value"))):
            raise SimError("InvalidParameterValue", f"The filter '{name}' is invalid")
        compiled.append((name, [_wildcard(v) for v in f.get("Values", [])]))

    def values(item: T, name: str) -> list[str]:
        if name in fields:
            return [_str(v) for v in fields[name](item)]
        assert tags_of is not None
        return _tag_values(tags_of(item), name) or []

    return [item for item in items
            if all(any(p.match(v) for p in pats for v in values(item, name))
                   for name, pats in compiled)]


def _str(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _page(items: list[T], args: Mapping[str, Any], seq: Callable[[T], int], scope: str,
          ids_given: bool, limits: tuple[int, int] = (5, 1000)) -> tuple[list[T], str | None]:
    """EC2 MaxResults/NextToken paging; the token remembers the last item's creation order."""
    max_results = args.get("MaxResults")
    token = args.get("NextToken")
    if max_results is None and token is None:
        return items, None
    if ids_given:
        raise SimError("InvalidParameterCombination",
                       "The parameter MaxResults cannot be used with resource IDs")
    if max_results is None:
        max_results = limits[1]
    if not limits[0] <= max_results <= limits[1]:
        raise SimError("InvalidParameterValue",
                       f"Value ({max_results}) for parameter maxResults is invalid. "
                       f"Expecting a value between {limits[0]} and {limits[1]}.")
    if token:
        after = tokens.unwrap(token, scope)
        if after is None or not after.isdigit():
            raise SimError("InvalidPaginationToken", f"Invalid pagination token: {token}")
        items = [i for i in items if seq(i) > int(after)]
    page = items[:max_results]
    more = len(items) > max_results
    return page, tokens.opaque(str(seq(page[-1])), scope) if more else None


def _category(action: str, args: Mapping[str, Any]) -> str:
    """The EC2 request-throttling category of a call (docs/SIMULATOR.md, "Hard mode").

    Describe* calls are non-mutating; one with no filter, no ids/names/owners and no paging
    parameter is "unfiltered and unpaginated" (a smaller bucket). Every other action the
    simulator serves changes something, so it is mutating; none of them is in AWS's list of
    resource-intensive actions (security groups, key pairs, Spot, VPC peering).
    """
    if action.startswith("Describe"):
        narrowed = any(v not in (None, [], "") and (
            k in ("Filters", "MaxResults", "NextToken", "Owners", "OwnerIds",
                  "RestorableByUserIds", "InstanceId", "Attribute")
            or k.endswith("Ids") or k.endswith("Names")) for k, v in args.items())
        return "non_mutating" if narrowed else "unfiltered_non_mutating"
    return "mutating"


def _instance_count(action: str, args: Mapping[str, Any]) -> int:
    """Instances a call launches/starts/stops/terminates (EC2 resource token buckets)."""
    if action == "RunInstances":
        return int(args.get("MaxCount") or 1)
    if action in ("StartInstances", "StopInstances", "TerminateInstances"):
        return len(args.get("InstanceIds") or [])
    return 0


def _fraction(seed: int, *key: str) -> float:
    """A reproducible number in [0, 1) for ``key`` (eventual-consistency delays)."""
    digest = hashlib.blake2b("|".join((str(seed), *key)).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2.0 ** 64


def _volume_state(vol: Volume) -> str:
    """``deleting`` while a deleted volume is still listed (eventual consistency)."""
    return "deleting" if vol.deleted else vol.state


_PREFIXES = {"instance": "i-", "volume": "vol-", "snapshot": "snap-", "image": "ami-"}
_ID_ARGS = {"instance": "InstanceIds", "volume": "VolumeIds", "snapshot": "SnapshotIds",
            "image": "ImageIds"}


def _tag_list(tags: Mapping[str, str]) -> list[dict[str, str]] | None:
    """EC2 omits ``tagSet`` entirely when a resource has no tags."""
    return [{"Key": k, "Value": v} for k, v in tags.items()] or None


def _tag_specs(specs: Sequence[Mapping[str, Any]], resource_type: str) -> dict[str, str]:
    tags: dict[str, str] = {}
    for spec in specs:
        if spec.get("ResourceType") != resource_type:
            raise SimError("InvalidParameterValue",
                           f"'{spec.get('ResourceType')}' is not a valid taggable resource "
                           f"type for this operation.")
        for tag in spec.get("Tags", []):
            tags[tag["Key"]] = tag.get("Value", "")
    return tags


def _dns(region: str, ip: str) -> str:
    domain = "ec2.internal" if region == "us-east-1" else f"{region}.compute.internal"
    return f"ip-{ip.replace('.', '-')}.{domain}"


def _zone_id(region: str, az: str) -> str:
    parts = region.split("-")
    return f"{parts[0]}{''.join(p[0] for p in parts[1:-1])}{parts[-1]}-az{'abc'.index(az[-1]) + 1}"


# ------------------------------------------------------------------ API


class Ec2Api:
    """Decodes an EC2 query request, runs its handler against the model, encodes the XML."""

    def __init__(self, world: World, policy: Policy) -> None:
        self.world = world
        self.policy = policy
        self.model = service_model("ec2")

    def handle(self, req: Request) -> Response:
        params = dict(req.query)
        if req.body:
            params.update(parse_qsl(req.body.decode("utf-8", "replace"), keep_blank_values=True))
        try:
            action = params.get("Action")
            if not action:
                raise SimError("MissingAction", "The request must contain the parameter Action")
            handler = _HANDLERS.get(action)
            if handler is None:
                raise SimError("InvalidAction",
                               f"The action {action} is not valid for this web service.")
            op = self.model.operation_model(action)
            args = parse_query(params, op.input_shape)
            self.policy.admit(Call("ec2", action, req.region, category=_category(action, args),
                                   instances=_instance_count(action, args)))
            limit = self.world.opts.max_filter_values
            if limit and any(len(f.get("Values") or []) > limit
                             for f in args.get("Filters") or []):
                raise SimError("FilterLimitExceeded",
                               f"The maximum number of filter values specified on a single "
                               f"call is {limit}")
            if args.get("DryRun"):
                raise SimError("DryRunOperation",
                               "Request would have succeeded, but DryRun flag is set.", 412)
            with self.world.lock:  # each response is one consistent view of the world
                result = handler(self, self.world.region(req.region), args)
            return Response(200, to_xml(action, op.output_shape, result, req.request_id), XML)
        except SimError as err:
            return Response(err.status, error_xml(err.code, err.message, req.request_id), XML)

    # -------------------------------------------------------------- eventual consistency

    def _born(self, region: Region, resource_id: str) -> None:
        """A resource created through the EC2 API: invisible for a reproducible random part
        of ``ec2_not_found_window`` (EC2 eventual consistency)."""
        opts = self.world.opts
        if opts.ec2_not_found_window > 0:
            delay = opts.ec2_not_found_window * _fraction(opts.fault_seed, resource_id, "new")
            region.ec2_hidden_until[resource_id] = time.monotonic() + delay

    def _gone(self, region: Region, resource_id: str, resource: Any) -> None:
        """A deleted resource that Describe may still list for part of the window."""
        opts = self.world.opts
        if opts.ec2_not_found_window > 0:
            delay = opts.ec2_not_found_window * _fraction(opts.fault_seed, resource_id, "gone")
            region.ghosts[resource_id] = (resource, time.monotonic() + delay)

    @staticmethod
    def _hidden(region: Region, resource_id: str, now: float) -> bool:
        until = region.ec2_hidden_until.get(resource_id)
        if until is None:
            return False
        if now >= until:
            del region.ec2_hidden_until[resource_id]
            return False
        return True

    def _require_visible(self, region: Region, kind: str, ids: Iterable[str],
                         operation: str) -> None:
        """``Invalid…NotFound`` for ids EC2 does not know yet (just created)."""
        if not region.ec2_hidden_until:
            return
        now = time.monotonic()
        hidden = [rid for rid in dict.fromkeys(ids) if self._hidden(region, rid, now)]
        if hidden:
            self.policy.count_not_found(operation)
            if kind == "image":
                raise SimError("InvalidAMIID.NotFound",
                               f"The image id '[{hidden[0]}]' does not exist")
            raise not_found(kind, hidden)

    def _listed(self, region: Region, kind: str, args: Mapping[str, Any],
                table: Mapping[str, T], operation: str) -> list[T]:
        """What a Describe call sees: by explicit ids (unknown or not yet visible ones are
        ``NotFound``) or everything, minus resources not visible yet, plus deleted ones
        still listed; in creation order."""
        ids = list(dict.fromkeys(args.get(_ID_ARGS[kind]) or []))
        now = time.monotonic()
        ghosts: dict[str, Any] = {}
        if region.ghosts:
            for rid, (res, until) in list(region.ghosts.items()):
                if until <= now:
                    del region.ghosts[rid]
                elif rid.startswith(_PREFIXES[kind]):
                    ghosts[rid] = res
        if ghosts:
            self.policy.count_not_found(operation)
        if ids:
            for rid in ids:
                check_id(kind, rid)
            self._require_visible(region, kind, ids, operation)
            missing = [rid for rid in ids if rid not in table and rid not in ghosts]
            if missing:
                if kind == "image":
                    raise SimError("InvalidAMIID.NotFound",
                                   f"The image id '[{', '.join(missing)}]' does not exist")
                raise not_found(kind, missing)
            return [table[rid] if rid in table else ghosts[rid] for rid in ids]
        items = list(table.values())
        if region.ec2_hidden_until:
            visible = [i for i in items if not self._hidden(region, i.id, now)]  # type: ignore[attr-defined]
            if len(visible) < len(items):
                self.policy.count_not_found(operation)
            items = visible
        if ghosts:
            items = sorted([*items, *ghosts.values()], key=lambda i: i.seq)  # type: ignore[attr-defined]
        return items

    def _instance_state(self, region: Region, inst: Instance) -> str:
        """``shutting-down`` for part of the window after TerminateInstances."""
        if inst.state == "terminated" and inst.id in region.shutting_down_until:
            if time.monotonic() < region.shutting_down_until[inst.id]:
                return "shutting-down"
            del region.shutting_down_until[inst.id]
        return inst.state

    # -------------------------------------------------------------- renderers

    def _instance(self, region: Region, inst: Instance) -> dict[str, Any]:
        groups = [{"GroupId": gid, "GroupName": name} for gid, name in inst.security_groups]
        dns = _dns(region.name, inst.private_ip)
        mappings = []
        for device, vid in inst.devices:
            att = region.volumes[vid].attachment
            assert att is not None
            mappings.append({"DeviceName": device, "Ebs": {
                "AttachTime": att.attach_time, "DeleteOnTermination": att.delete_on_termination,
                "Status": "attached", "VolumeId": vid}})
        return {
            "AmiLaunchIndex": 0,
            "ImageId": inst.image_id,
            "InstanceId": inst.id,
            "InstanceType": inst.instance_type,
            "KeyName": inst.key_name,
            "LaunchTime": inst.launch_time,
            "Monitoring": {"State": "disabled"},
            "Placement": {"AvailabilityZone": inst.az, "GroupName": "", "Tenancy": "default",
                          "AvailabilityZoneId": _zone_id(region.name, inst.az)},
            "PrivateDnsName": dns,
            "PrivateIpAddress": inst.private_ip,
            "ProductCodes": [],
            "PublicDnsName": "",
            "State": {"Code": state_code(state := self._instance_state(region, inst)),
                      "Name": state},
            "StateTransitionReason": (f"{inst.state_reason[1]}" if inst.state_reason else ""),
            **({"StateReason": {"Code": inst.state_reason[0], "Message": inst.state_reason[1]}}
               if inst.state_reason else {}),
            "SubnetId": inst.subnet_id,
            "VpcId": inst.vpc_id,
            "Architecture": inst.architecture,
            "BlockDeviceMappings": mappings,
            "ClientToken": "",
            "EbsOptimized": False,
            "EnaSupport": True,
            "Hypervisor": "xen",
            "IamInstanceProfile": ({"Arn": inst.iam_instance_profile,
                                    "Id": "AIPA" + inst.id[2:].upper()}
                                   if inst.iam_instance_profile else None),
            "NetworkInterfaces": [{
                "Attachment": {"AttachTime": inst.launch_time,
                               "AttachmentId": "eni-attach-" + inst.eni_id[4:],
                               "DeleteOnTermination": True, "DeviceIndex": 0,
                               "Status": "attached", "NetworkCardIndex": 0},
                "Description": "",
                "Groups": groups,
                "Ipv6Addresses": [],
                "MacAddress": inst.mac,
                "NetworkInterfaceId": inst.eni_id,
                "OwnerId": OWNER_ID,
                "PrivateDnsName": dns,
                "PrivateIpAddress": inst.private_ip,
                "PrivateIpAddresses": [{"Primary": True, "PrivateDnsName": dns,
                                        "PrivateIpAddress": inst.private_ip}],
                "SourceDestCheck": True,
                "Status": "in-use",
                "SubnetId": inst.subnet_id,
                "VpcId": inst.vpc_id,
                "InterfaceType": "interface",
            }],
            "RootDeviceName": inst.root_device_name,
            "RootDeviceType": "ebs",
            "SecurityGroups": groups,
            "SourceDestCheck": True,
            "Tags": _tag_list(inst.tags),
            "VirtualizationType": "hvm",
            "CpuOptions": {"CoreCount": 1, "ThreadsPerCore": 2},
            "CapacityReservationSpecification": {"CapacityReservationPreference": "open"},
            "HibernationOptions": {"Configured": False},
            "MetadataOptions": {"State": "applied", "HttpTokens": "required",
                                "HttpPutResponseHopLimit": 2, "HttpEndpoint": "enabled",
                                "HttpProtocolIpv6": "disabled",
                                "InstanceMetadataTags": "disabled"},
            "EnclaveOptions": {"Enabled": False},
            "BootMode": "uefi-preferred",
            "PlatformDetails": "Linux/UNIX",
            "UsageOperation": "RunInstances",
            "UsageOperationUpdateTime": inst.launch_time,
            "PrivateDnsNameOptions": {"HostnameType": "ip-name",
                                      "EnableResourceNameDnsARecord": False,
                                      "EnableResourceNameDnsAAAARecord": False},
            "MaintenanceOptions": {"AutoRecovery": "default"},
            "CurrentInstanceBootMode": "uefi",
        }

    @staticmethod
    def _volume(vol: Volume) -> dict[str, Any]:
        att = vol.attachment
        return {
            "Attachments": [{
                "AttachTime": att.attach_time, "Device": att.device,
                "InstanceId": att.instance_id, "State": "attached", "VolumeId": vol.id,
                "DeleteOnTermination": att.delete_on_termination}] if att else [],
            "AvailabilityZone": vol.az,
            "CreateTime": vol.create_time,
            "Encrypted": vol.encrypted,
            "KmsKeyId": vol.kms_key_id,
            "Size": vol.size_gib,
            "SnapshotId": vol.snapshot_id or "",
            "State": _volume_state(vol),
            "VolumeId": vol.id,
            "Iops": vol.iops,
            "Tags": _tag_list(vol.tags),
            "VolumeType": vol.volume_type,
            "MultiAttachEnabled": False,
            "Throughput": vol.throughput,
        }

    @staticmethod
    def _snapshot(snap: Snapshot, info: bool = False) -> dict[str, Any]:
        """A ``Snapshot`` (Describe/CreateSnapshot) or, with ``info``, a ``SnapshotInfo``."""
        state = snap.state()
        out: dict[str, Any] = {
            "Description": snap.description,
            "Encrypted": snap.encrypted,
            "OwnerId": snap.owner_id,
            "Progress": snap.progress(),
            "SnapshotId": snap.id,
            "StartTime": snap.start_time,
            "State": state,
            "VolumeId": snap.volume_id,
            "VolumeSize": snap.volume_size,
            "Tags": _tag_list(snap.tags),
        }
        if not info:
            out["KmsKeyId"] = snap.kms_key_id
            out["StorageTier"] = "standard"
        return out

    # -------------------------------------------------------------- actions

    def _describe_instances(self, region: Region, args: dict[str, Any]) -> dict[str, Any]:
        ids = args.get("InstanceIds") or []
        found: list[Instance] = self._listed(region, "instance", args, region.instances,
                                             "DescribeInstances")
        found = _filter(found, args.get("Filters", []), {
            "instance-id": lambda i: [i.id],
            "instance-state-name": lambda i: [self._instance_state(region, i)],
            "instance-state-code": lambda i: [state_code(self._instance_state(region, i))],
            "instance-type": lambda i: [i.instance_type],
            "availability-zone": lambda i: [i.az],
            "image-id": lambda i: [i.image_id],
            "vpc-id": lambda i: [i.vpc_id],
            "subnet-id": lambda i: [i.subnet_id],
            "key-name": lambda i: [i.key_name or ""],
            "private-ip-address": lambda i: [i.private_ip],
            "reservation-id": lambda i: [i.reservation_id],
            "root-device-name": lambda i: [i.root_device_name],
            "block-device-mapping.volume-id": lambda i: [v for _, v in i.devices],
            "block-device-mapping.device-name": lambda i: [d for d, _ in i.devices],
        }, lambda i: i.tags)
        page, token = _page(found, args, lambda i: i.seq,
                            f"{region.name}/DescribeInstances", bool(ids))
        reservations: dict[str, dict[str, Any]] = {}
        for inst in page:
            res = reservations.setdefault(inst.reservation_id, {
                "ReservationId": inst.reservation_id, "OwnerId": OWNER_ID,
                "Groups": [], "Instances": []})
            res["Instances"].append(self._instance(region, inst))
        return {"Reservations": list(reservations.values()), "NextToken": token}

    def _describe_instance_attribute(self, region: Region, args: dict[str, Any]
                                     ) -> dict[str, Any]:
        inst = region.instance(args["InstanceId"])
        attr = args["Attribute"]
        out: dict[str, Any] = {"InstanceId": inst.id}
        if attr == "userData":
            out["UserData"] = ({"Value": base64.b64encode(inst.user_data).decode()}
                               if inst.user_data is not None else {})
        elif attr == "instanceType":
            out["InstanceType"] = {"Value": inst.instance_type}
        elif attr == "rootDeviceName":
            out["RootDeviceName"] = {"Value": inst.root_device_name}
        elif attr == "blockDeviceMapping":
            out["BlockDeviceMappings"] = self._instance(region, inst)["BlockDeviceMappings"]
        elif attr == "groupSet":
            out["Groups"] = [{"GroupId": g, "GroupName": n} for g, n in inst.security_groups]
        elif attr in ("disableApiTermination", "disableApiStop", "ebsOptimized"):
            out[attr[0].upper() + attr[1:]] = {"Value": False}
        elif attr in ("enaSupport", "sourceDestCheck"):
            out[attr[0].upper() + attr[1:]] = {"Value": True}
        elif attr == "instanceInitiatedShutdownBehavior":
            out["InstanceInitiatedShutdownBehavior"] = {"Value": "stop"}
        elif attr in ("kernel", "ramdisk", "sriovNetSupport"):
            out[{"kernel": "KernelId", "ramdisk": "RamdiskId",
                 "sriovNetSupport": "SriovNetSupport"}[attr]] = {}
        elif attr == "productCodes":
            out["ProductCodes"] = []
        elif attr == "enclaveOptions":
            out["EnclaveOptions"] = {"Enabled": False}
        else:
            raise SimError("InvalidParameterValue",
                           f"Value ({attr}) for parameter attribute is invalid. "
                           f"Unknown attribute.")
        return out

    def _describe_volumes(self, region: Region, args: dict[str, Any]) -> dict[str, Any]:
        ids = args.get("VolumeIds") or []
        found: list[Volume] = self._listed(region, "volume", args, region.volumes,
                                           "DescribeVolumes")
        found = _filter(found, args.get("Filters", []), {
            "volume-id": lambda v: [v.id],
            "attachment.instance-id": lambda v: [v.attachment.instance_id]
            if v.attachment else [],
            "attachment.device": lambda v: [v.attachment.device] if v.attachment else [],
            "attachment.status": lambda v: ["attached"] if v.attachment else [],
            "attachment.delete-on-termination": lambda v:
                [v.attachment.delete_on_termination] if v.attachment else [],
            "availability-zone": lambda v: [v.az],
            "encrypted": lambda v: [v.encrypted],
            "size": lambda v: [v.size_gib],
            "snapshot-id": lambda v: [v.snapshot_id or ""],
            "status": lambda v: [_volume_state(v)],
            "volume-type": lambda v: [v.volume_type],
        }, lambda v: v.tags)
        page, token = _page(found, args, lambda v: v.seq,
                            f"{region.name}/DescribeVolumes", bool(ids), (5, 500))
        return {"Volumes": [self._volume(v) for v in page], "NextToken": token}

    def _describe_snapshots(self, region: Region, args: dict[str, Any]) -> dict[str, Any]:
        ids = args.get("SnapshotIds") or []
        owners = args.get("OwnerIds") or []
        found: list[Snapshot] = self._listed(region, "snapshot", args, region.snapshots,
                                             "DescribeSnapshots")
        if owners and not {"self", OWNER_ID} & set(owners):
            found = []  # only this account's snapshots exist here
        found = _filter(found, args.get("Filters", []), {
            "snapshot-id": lambda s: [s.id],
            "volume-id": lambda s: [s.volume_id],
            "status": lambda s: [s.state()],
            "owner-id": lambda s: [s.owner_id],
            "description": lambda s: [s.description],
            "volume-size": lambda s: [s.volume_size],
            "encrypted": lambda s: [s.encrypted],
            "progress": lambda s: [s.progress()],
            "storage-tier": lambda s: ["standard"],
        }, lambda s: s.tags)
        page, token = _page(found, args, lambda s: s.seq, f"{region.name}/DescribeSnapshots",
                            bool(ids))
        return {"Snapshots": [self._snapshot(s) for s in page], "NextToken": token}

    def _create_snapshots(self, region: Region, args: dict[str, Any]) -> dict[str, Any]:
        spec = args["InstanceSpecification"]
        if "InstanceId" not in spec:
            raise SimError("MissingParameter",
                           "The request must contain the parameter InstanceSpecification.InstanceId")
        copy = args.get("CopyTagsFromSource")
        if copy not in (None, "volume"):
            raise SimError("InvalidParameterValue",
                           f"Value ({copy}) for parameter CopyTagsFromSource is invalid.")
        snaps = region.create_snapshots(
            spec["InstanceId"],
            exclude_boot_volume=bool(spec.get("ExcludeBootVolume", False)),
            exclude_volume_ids=spec.get("ExcludeDataVolumeIds", []),
            description=args.get("Description", ""),
            tags=_tag_specs(args.get("TagSpecifications", []), "snapshot"),
            copy_tags_from_volume=copy == "volume",
        )
        for snap in snaps:
            self._born(region, snap.id)
        return {"Snapshots": [self._snapshot(s, info=True) for s in snaps]}

    def _create_snapshot(self, region: Region, args: dict[str, Any]) -> dict[str, Any]:
        snap = region.create_snapshot(
            args["VolumeId"], description=args.get("Description", ""),
            tags=_tag_specs(args.get("TagSpecifications", []), "snapshot"))
        self._born(region, snap.id)
        return self._snapshot(snap)

    def _delete_snapshot(self, region: Region, args: dict[str, Any]) -> dict[str, Any]:
        sid = args["SnapshotId"]
        check_id("snapshot", sid)
        self._require_visible(region, "snapshot", [sid], "DeleteSnapshot")
        snap = region.snapshots.get(sid)
        region.delete_snapshot(sid)
        self._gone(region, sid, snap)
        return {}

    def _create_tags(self, region: Region, args: dict[str, Any]) -> dict[str, Any]:
        denied = self.world.opts.deny_tags
        for tag in args["Tags"] if denied else ():
            if tag["Key"] in denied or f"{tag['Key']}={tag.get('Value', '')}" in denied:
                # What an IAM policy denying ec2:CreateTags (e.g. on aws:RequestTag) answers;
                # nothing of the request is applied.
                raise SimError("UnauthorizedOperation",
                               "You are not authorized to perform this operation.", 403)
        for rid in args["Resources"]:
            kind = next((k for p, k in (("i-", "instance"), ("vol-", "volume"),
                                        ("snap-", "snapshot"), ("ami-", "image"))
                         if rid.startswith(p)), None)
            if kind is not None:
                self._require_visible(region, kind, [rid], "CreateTags")
        targets = [region.taggable(rid) for rid in args["Resources"]]
        for target in targets:
            for tag in args["Tags"]:
                target.tags[tag["Key"]] = tag.get("Value", "")
        return {}

    def _delete_tags(self, region: Region, args: dict[str, Any]) -> dict[str, Any]:
        targets = [region.taggable(rid) for rid in args["Resources"]]
        for target in targets:
            if "Tags" not in args:
                target.tags.clear()
            for tag in args.get("Tags", []):
                key = tag["Key"]
                if key in target.tags and (
                        "Value" not in tag or target.tags[key] == tag["Value"]):
                    del target.tags[key]
        return {}

    def _describe_availability_zones(self, region: Region, args: dict[str, Any]
                                     ) -> dict[str, Any]:
        zones = [{
            "State": "available", "OptInStatus": "opt-in-not-required", "Messages": [],
            "RegionName": region.name, "ZoneName": az, "ZoneId": _zone_id(region.name, az),
            "GroupName": region.name, "NetworkBorderGroup": region.name,
            "ZoneType": "availability-zone"} for az in region.azs]
        names = args.get("ZoneNames") or []
        for name in names:
            if name not in region.azs:
                raise SimError("InvalidParameterValue",
                               f"The zone '{name}' does not exist in region {region.name}.")
        if names:
            zones = [z for z in zones if z["ZoneName"] in names]
        zones = _filter(zones, args.get("Filters", []), {
            "zone-name": lambda z: [z["ZoneName"]], "zone-id": lambda z: [z["ZoneId"]],
            "region-name": lambda z: [z["RegionName"]], "state": lambda z: [z["State"]],
            "zone-type": lambda z: [z["ZoneType"]],
        }, None)
        return {"AvailabilityZones": zones}

    def _describe_regions(self, region: Region, args: dict[str, Any]) -> dict[str, Any]:
        names = list(dict.fromkeys([*KNOWN_REGIONS, *self.world.regions]))
        wanted = args.get("RegionNames") or []
        for name in wanted:
            if name not in names:
                raise SimError("InvalidParameterValue", f"Invalid region: {name}")
        regions = [{"RegionName": n, "Endpoint": f"ec2.{n}.amazonaws.com",
                    "OptInStatus": "opt-in-not-required"}
                   for n in names if not wanted or n in wanted]
        regions = _filter(regions, args.get("Filters", []), {
            "region-name": lambda r: [r["RegionName"]], "endpoint": lambda r: [r["Endpoint"]],
            "opt-in-status": lambda r: [r["OptInStatus"]],
        }, None)
        return {"Regions": regions}

    # -------------------------------------------------------------- volumes

    def _create_volume(self, region: Region, args: dict[str, Any]) -> dict[str, Any]:
        if "AvailabilityZone" not in args and "AvailabilityZoneId" not in args:
            raise SimError("MissingParameter",
                           "The request must contain the parameter AvailabilityZone")
        az = args.get("AvailabilityZone")
        if az is None:
            by_id = {_zone_id(region.name, z): z for z in region.azs}
            az = by_id.get(args["AvailabilityZoneId"])
            if az is None:
                raise SimError("InvalidParameterValue",
                               f"Invalid availability zone: [{args['AvailabilityZoneId']}]")
        if "Size" not in args and "SnapshotId" not in args:
            raise SimError("MissingParameter",
                           "The request must contain the parameter size/snapshotId")
        vol = region.create_volume(
            size_gib=args.get("Size"), az=az, volume_type=args.get("VolumeType", "gp2"),
            iops=args.get("Iops"), throughput=args.get("Throughput"),
            encrypted=bool(args.get("Encrypted", False)), kms_key_id=args.get("KmsKeyId"),
            tags=_tag_specs(args.get("TagSpecifications", []), "volume"),
            snapshot_id=args.get("SnapshotId"))
        self._born(region, vol.id)
        out = self._volume(vol)
        out["State"] = "creating"  # AWS answers "creating"; Describe then says "available"
        return out

    def _delete_volume(self, region: Region, args: dict[str, Any]) -> dict[str, Any]:
        vid = args["VolumeId"]
        vol = region.volume(vid)
        region.delete_volume(vid)
        if self.world.opts.ec2_not_found_window > 0:
            vol.deleted = True  # listed as "deleting" while it is a ghost
            self._gone(region, vid, vol)
        return {}

    @staticmethod
    def _attachment(vol: Volume, att: Any, state: str) -> dict[str, Any]:
        return {"AttachTime": att.attach_time, "Device": att.device,
                "InstanceId": att.instance_id, "State": state, "VolumeId": vol.id,
                "DeleteOnTermination": att.delete_on_termination}

    def _attach_volume(self, region: Region, args: dict[str, Any]) -> dict[str, Any]:
        check_id("volume", args["VolumeId"])
        check_id("instance", args["InstanceId"])
        self._require_visible(region, "volume", [args["VolumeId"]], "AttachVolume")
        self._require_visible(region, "instance", [args["InstanceId"]], "AttachVolume")
        vol = region.attach_volume(args["VolumeId"], args["InstanceId"], args["Device"])
        return self._attachment(vol, vol.attachment, "attaching")

    def _detach_volume(self, region: Region, args: dict[str, Any]) -> dict[str, Any]:
        vol, att = region.detach_volume(args["VolumeId"], args.get("InstanceId"),
                                        args.get("Device"))
        return self._attachment(vol, att, "detaching")

    def _modify_volume(self, region: Region, args: dict[str, Any]) -> dict[str, Any]:
        check_id("volume", args["VolumeId"])
        self._require_visible(region, "volume", [args["VolumeId"]], "ModifyVolume")
        mod = region.modify_volume(args["VolumeId"], args.get("Size"), args.get("VolumeType"),
                                   args.get("Iops"), args.get("Throughput"))
        return {"VolumeModification": self._modification(mod)}

    @staticmethod
    def _modification(mod: Mapping[str, Any]) -> dict[str, Any]:
        state = modification_state(mod)
        out = {k: v for k, v in mod.items() if not k.startswith("_")}
        out["ModificationState"] = state
        out["Progress"] = {"modifying": 0, "optimizing": 50, "completed": 100}[state]
        return out

    def _describe_volumes_modifications(self, region: Region, args: dict[str, Any]
                                        ) -> dict[str, Any]:
        ids = list(dict.fromkeys(args.get("VolumeIds") or []))
        for vid in ids:
            check_id("volume", vid)
        self._require_visible(region, "volume", ids, "DescribeVolumesModifications")
        if ids:
            vols = region.select("volume", ids)
            missing = [v.id for v in vols if v.modification is None]
            if missing:
                raise SimError("InvalidVolumeModification.NotFound",
                               f"Modification for volume '{missing[0]}' does not exist.")
        else:
            vols = [v for v in region.volumes.values() if v.modification is not None]
        mods = [self._modification(v.modification) for v in vols if v.modification]
        mods = _filter(mods, args.get("Filters", []), {
            "volume-id": lambda m: [m["VolumeId"]],
            "modification-state": lambda m: [m["ModificationState"]],
            "target-size": lambda m: [m["TargetSize"]],
            "target-volume-type": lambda m: [m["TargetVolumeType"]],
            "original-size": lambda m: [m["OriginalSize"]],
            "original-volume-type": lambda m: [m["OriginalVolumeType"]],
        }, None)
        return {"VolumesModifications": mods}

    # -------------------------------------------------------------- images

    @staticmethod
    def _image(image: Image) -> dict[str, Any]:
        return {
            "Architecture": image.architecture,
            "CreationDate": image.creation_date.strftime("%Y-%m-%dT%H:%M:%S.000Z"),
            "ImageId": image.id,
            "ImageLocation": f"{OWNER_ID}/{image.name}",
            "ImageType": "machine",
            "Public": False,
            "OwnerId": OWNER_ID,
            "PlatformDetails": "Linux/UNIX",
            "UsageOperation": "RunInstances",
            "State": image.state,
            "BlockDeviceMappings": image.mappings,
            "Description": image.description or None,
            "EnaSupport": image.ena_support,
            "Hypervisor": "xen",
            "Name": image.name,
            "RootDeviceName": image.root_device_name,
            "RootDeviceType": "ebs",
            "SriovNetSupport": "simple",
            "Tags": _tag_list(image.tags),
            "VirtualizationType": image.virtualization_type,
            "BootMode": image.boot_mode,
        }

    def _register_image(self, region: Region, args: dict[str, Any]) -> dict[str, Any]:
        if args.get("ImageLocation"):
            raise SimError("InvalidParameterCombination",
                           "Only EBS-backed images (BlockDeviceMappings) are simulated")
        mappings = args.get("BlockDeviceMappings") or []
        root = args.get("RootDeviceName") or (mappings[0].get("DeviceName") if mappings
                                              else None)
        if not root:
            raise SimError("MissingParameter",
                           "The request must contain the parameter RootDeviceName")
        image = region.register_image(
            args["Name"], root, mappings, args.get("Description", ""),
            args.get("Architecture", "x86_64"), args.get("VirtualizationType", "hvm"),
            bool(args.get("EnaSupport", True)), args.get("BootMode"),
            _tag_specs(args.get("TagSpecifications", []), "image"))
        self._born(region, image.id)
        return {"ImageId": image.id}

    def _deregister_image(self, region: Region, args: dict[str, Any]) -> dict[str, Any]:
        check_id("image", args["ImageId"])
        self._require_visible(region, "image", [args["ImageId"]], "DeregisterImage")
        image = region.images.get(args["ImageId"])
        snaps = dict(region.snapshots)
        deleted = region.deregister_image(args["ImageId"],
                                          bool(args.get("DeleteAssociatedSnapshots")))
        self._gone(region, args["ImageId"], image)
        for sid in deleted:
            self._gone(region, sid, snaps[sid])
        out: dict[str, Any] = {"Return": True}
        if args.get("DeleteAssociatedSnapshots"):
            out["DeleteSnapshotResults"] = [{"SnapshotId": sid, "ReturnCode": "success"}
                                            for sid in deleted]
        return out

    def _describe_images(self, region: Region, args: dict[str, Any]) -> dict[str, Any]:
        ids = args.get("ImageIds") or []
        owners = args.get("Owners") or []
        found: list[Image] = self._listed(region, "image", args, region.images,
                                          "DescribeImages")
        if owners and not {"self", OWNER_ID} & set(owners):
            found = []
        found = _filter(found, args.get("Filters", []), {
            "image-id": lambda i: [i.id],
            "name": lambda i: [i.name],
            "state": lambda i: [i.state],
            "architecture": lambda i: [i.architecture],
            "owner-id": lambda i: [OWNER_ID],
            "root-device-name": lambda i: [i.root_device_name],
            "root-device-type": lambda i: ["ebs"],
            "block-device-mapping.snapshot-id": lambda i: [
                (m.get("Ebs") or {}).get("SnapshotId", "") for m in i.mappings],
            "block-device-mapping.device-name": lambda i: [m.get("DeviceName", "")
                                                           for m in i.mappings],
            "virtualization-type": lambda i: [i.virtualization_type],
        }, lambda i: i.tags)
        page, token = _page(found, args, lambda i: i.seq,
                            f"{region.name}/DescribeImages", bool(ids))
        return {"Images": [self._image(i) for i in page], "NextToken": token}

    # -------------------------------------------------------------- instances

    def _run_instances(self, region: Region, args: dict[str, Any]) -> dict[str, Any]:
        image = region.image(args["ImageId"])
        if args["MinCount"] < 1 or args["MaxCount"] < args["MinCount"]:
            raise SimError("InvalidParameterValue", "Invalid MinCount/MaxCount")
        if args["MaxCount"] != 1:
            raise SimError("InvalidParameterValue",
                           "The simulator launches one instance per RunInstances call")
        overrides = {m["DeviceName"]: m for m in args.get("BlockDeviceMappings", [])
                     if "DeviceName" in m}
        merged: dict[str, dict[str, Any]] = {m["DeviceName"]: m for m in image.mappings}
        for name, m in overrides.items():
            base = dict(merged.get(name, {"DeviceName": name}))
            if "NoDevice" in m:
                merged.pop(name, None)
                continue
            merged_ebs = dict(base.get("Ebs") or {})
            merged_ebs.update(m.get("Ebs") or {})
            base["Ebs"] = merged_ebs
            merged[name] = base
        root = image.root_device_name
        order = [root] + [d for d in merged if d != root]
        specs: list[dict[str, Any]] = []
        volume_tags = _tag_specs([t for t in args.get("TagSpecifications", [])
                                  if t.get("ResourceType") == "volume"], "volume")
        for device in order:
            ebs: dict[str, Any] = (merged.get(device) or {}).get("Ebs") or {}
            if not ebs:
                continue
            spec: dict[str, Any] = {
                "device": device, "volume_type": ebs.get("VolumeType"),
                "iops": ebs.get("Iops"), "throughput": ebs.get("Throughput"),
                "encrypted": bool(ebs.get("Encrypted", False)),
                "kms_key_id": ebs.get("KmsKeyId"),
                "delete_on_termination": bool(ebs.get("DeleteOnTermination", True)),
                "tags": volume_tags}
            if ebs.get("SnapshotId"):
                spec["snapshot_id"] = ebs["SnapshotId"]
            if ebs.get("VolumeSize") is not None:
                spec["size_gib"] = ebs["VolumeSize"]
            specs.append(spec)
        profile = args.get("IamInstanceProfile") or {}
        profile_name = profile.get("Name") or (profile.get("Arn", "").rsplit("/", 1)[-1]
                                               or None)
        groups = list(args.get("SecurityGroupIds") or [])
        for name in args.get("SecurityGroups") or []:
            gid = next((g for g, n in region.security_groups.items() if n == name), None)
            if gid is None:
                raise SimError("InvalidGroup.NotFound",
                               f"The security group '{name}' does not exist in default VPC")
            groups.append(gid)
        user_data = args.get("UserData")
        raw_user_data = None
        if user_data is not None:
            try:
                raw_user_data = base64.b64decode(user_data, validate=True)
            except ValueError:
                raise SimError("InvalidParameterValue",
                               "Invalid BASE64 encoding of user data.") from None
        inst = region.create_instance(
            None, specs, az=(args.get("Placement") or {}).get("AvailabilityZone"),
            tags=_tag_specs([t for t in args.get("TagSpecifications", [])
                             if t.get("ResourceType") == "instance"], "instance"),
            instance_type=args.get("InstanceType", "m1.small"), user_data=raw_user_data,
            image_id=image.id, key_name=args.get("KeyName"),
            iam_instance_profile=profile_name, architecture=image.architecture,
            security_group_ids=groups or None, private_ip=args.get("PrivateIpAddress"),
            subnet_id=args.get("SubnetId"))
        self._born(region, inst.id)
        for _, vid in inst.devices:
            self._born(region, vid)
        rendered = self._instance(region, inst)
        rendered["State"] = {"Code": state_code("pending"), "Name": "pending"}
        return {"ReservationId": inst.reservation_id, "OwnerId": OWNER_ID, "Groups": [],
                "Instances": [rendered]}

    def _state_change(self, region: Region, args: dict[str, Any], action: str,
                      key: str) -> dict[str, Any]:
        for iid in args["InstanceIds"]:
            check_id("instance", iid)
        if action == "terminate":
            self._require_visible(region, "instance", args["InstanceIds"], "TerminateInstances")
        insts = region.select("instance", args["InstanceIds"])
        out = []
        window = self.world.opts.ec2_not_found_window
        for inst in insts:
            prev, now, _ = region.set_instance_state(inst.id, action)
            if action == "terminate" and prev != "terminated" and window > 0:
                region.shutting_down_until[inst.id] = time.monotonic() + window * _fraction(
                    self.world.opts.fault_seed, inst.id, "gone")
            out.append({"InstanceId": inst.id,
                        "CurrentState": {"Code": state_code(now), "Name": now},
                        "PreviousState": {"Code": state_code(prev), "Name": prev}})
        return {key: out}

    def _stop_instances(self, region: Region, args: dict[str, Any]) -> dict[str, Any]:
        return self._state_change(region, args, "stop", "StoppingInstances")

    def _start_instances(self, region: Region, args: dict[str, Any]) -> dict[str, Any]:
        return self._state_change(region, args, "start", "StartingInstances")

    def _terminate_instances(self, region: Region, args: dict[str, Any]) -> dict[str, Any]:
        return self._state_change(region, args, "terminate", "TerminatingInstances")


_HANDLERS: dict[str, Handler] = {
    "DescribeInstances": Ec2Api._describe_instances,
    "DescribeInstanceAttribute": Ec2Api._describe_instance_attribute,
    "DescribeVolumes": Ec2Api._describe_volumes,
    "DescribeSnapshots": Ec2Api._describe_snapshots,
    "CreateSnapshots": Ec2Api._create_snapshots,
    "CreateSnapshot": Ec2Api._create_snapshot,
    "DeleteSnapshot": Ec2Api._delete_snapshot,
    "CreateTags": Ec2Api._create_tags,
    "DeleteTags": Ec2Api._delete_tags,
    "DescribeAvailabilityZones": Ec2Api._describe_availability_zones,
    "DescribeRegions": Ec2Api._describe_regions,
    "CreateVolume": Ec2Api._create_volume,
    "DeleteVolume": Ec2Api._delete_volume,
    "ModifyVolume": Ec2Api._modify_volume,
    "DescribeVolumesModifications": Ec2Api._describe_volumes_modifications,
    "AttachVolume": Ec2Api._attach_volume,
    "DetachVolume": Ec2Api._detach_volume,
    "RegisterImage": Ec2Api._register_image,
    "DeregisterImage": Ec2Api._deregister_image,
    "DescribeImages": Ec2Api._describe_images,
    "RunInstances": Ec2Api._run_instances,
    "StopInstances": Ec2Api._stop_instances,
    "StartInstances": Ec2Api._start_instances,
    "TerminateInstances": Ec2Api._terminate_instances,
}
