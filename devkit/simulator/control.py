"""Control API under ``/_sim/`` (JSON in/out, raw bytes for volume data) and its client.

Tests and the demo use it to build the world AWS would already contain (instances with
volumes holding data), to inspect what snapshots captured, and to turn knobs. It is not an
AWS API: no SigV4, region is a ``region`` parameter (default us-east-1).

Routes (``?region=`` on all that touch resources):
  POST /_sim/reset                         forget everything, restore start-up options
  GET|POST /_sim/options                   every knob of options.Options (POST: a subset)
  GET  /_sim/stats                         requests / throttled / faults counters
  POST /_sim/stats/reset                   zero the counters and empty the token buckets
  GET  /_sim/sts/sessions                  AssumeRole calls seen
  POST /_sim/instances                     create_instance JSON -> {instance_id, volume_ids}
  POST /_sim/volumes                       create_volume JSON -> {volume_id}
  PUT  /_sim/volumes/{id}/data?offset=N    body = bytes to write
  GET  /_sim/volumes/{id}/data?offset=&length=
  POST /_sim/volumes/{id}/trim?offset=&length=   unwrite whole blocks -> {trimmed_blocks}
  POST /_sim/volumes/{id}/modify           {size_gib?, volume_type?, iops?, throughput?}
  GET  /_sim/volumes/{id}/sha256           {"sha256": hex of the whole volume}
  GET  /_sim/snapshots/{id}/sha256         {"sha256": hex of what the snapshot captured}
  GET  /_sim/snapshots                     {"snapshots": [{id, volume_id, state, tags, ...}]}
  GET  /_sim/health                        {"ok": true}
  GET  /_sim/tls-ca.pem                    the CA certificate (PEM) the HTTPS side uses
  POST /_sim/session-token                 {"ttl": seconds} -> temporary credentials
                                           {access_key_id, secret_access_key,
                                           session_token, expiration} refused once expired
"""

from __future__ import annotations

import base64
import binascii
import json
import ssl
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping, Sequence
from typing import Any

from .errors import SimError
from .messages import Request, Response
from .model import DEFAULT_REGION, World
from .options import Options
from .policy import Policy
from .sts_api import issue_session
from .tls import material as tls_material

_OPTION_NAMES = set(Options.__dataclass_fields__)

# ------------------------------------------------------------------ server side


def _json(status: int, value: Any) -> Response:
    return Response(status, json.dumps(value).encode())


class ControlApi:
    """Serves ``/_sim/...`` against the world."""

    def __init__(self, world: World, policy: Policy | None = None) -> None:
        self.world = world
        self.policy = policy

    def handle(self, req: Request) -> Response:
        parts = req.path.strip("/").split("/")[1:]  # drop "_sim"
        try:
            return self._route(req, parts)
        except SimError as err:
            return _json(err.status if err.status != 400 or "NotFound" not in err.code
                         else 404, {"error": err.code, "message": err.message})

    def _route(self, req: Request, parts: list[str]) -> Response:
        world = self.world
        method = req.method
        region_name = req.query.get("region", DEFAULT_REGION)
        match parts:
            case ["health"]:
                return _json(200, {"ok": True})
            case ["tls-ca.pem"] if method == "GET":
                return Response(200, tls_material().ca_pem, "application/x-pem-file")
            case ["session-token"] if method == "POST":
                ttl = _body(req, {"ttl"}).get("ttl", 3600)
                if not isinstance(ttl, int | float) or isinstance(ttl, bool) or ttl <= 0:
                    raise SimError("InvalidParameterValue", "ttl must be a number of "
                                   "seconds > 0")
                return _json(200, issue_session(world, float(ttl)))
            case ["reset"] if method == "POST":
                world.reset()
                return _json(200, {"ok": True})
            case ["options"] if method == "GET":
                return _json(200, world.options())
            case ["options"] if method == "POST":
                return _json(200, world.set_options(**_body(req, _OPTION_NAMES)))
            case ["stats"] if method == "GET":
                return _json(200, self.policy.stats() if self.policy else {})
            case ["stats", "reset"] if method == "POST":
                if self.policy:
                    self.policy.reset()
                return _json(200, {"ok": True})
            case ["sts", "sessions"] if method == "GET":
                with world.lock:
                    return _json(200, {"sessions": list(world.sts_sessions)})
            case ["instances"] if method == "POST":
                return self._create_instance(req)
            case ["volumes"] if method == "POST":
                spec = _body(req, {"region", "size_gib", "az", "volume_type", "iops",
                                   "throughput", "encrypted", "kms_key_id", "tags",
                                   "snapshot_id"})
                region = world.region(spec.pop("region", region_name))
                vol = region.create_volume(**spec, kms_checked=False)  # seeding
                return _json(200, {"volume_id": vol.id, "availability_zone": vol.az})
            case ["volumes", vid, "data"] if method == "PUT":
                offset = _int(req.query.get("offset", "0"), "offset")
                written = world.region(region_name).write_volume(vid, offset, req.body)
                return _json(200, {"written": written})
            case ["volumes", vid, "data"] if method == "GET":
                data = world.region(region_name).read_volume(
                    vid, _int(req.query.get("offset", "0"), "offset"),
                    _int(req.query.get("length", "0"), "length"))
                return Response(200, data, "application/octet-stream")
            case ["volumes", vid, "trim"] if method == "POST":
                trimmed = world.region(region_name).trim_volume(
                    vid, _int(req.query.get("offset", "0"), "offset"),
                    _int(req.query.get("length", "0"), "length"))
                return _json(200, {"trimmed_blocks": trimmed})
            case ["volumes", vid, "modify"] if method == "POST":
                spec = _body(req, {"size_gib", "volume_type", "iops", "throughput"})
                mod = world.region(region_name).modify_volume(vid, **spec)
                return _json(200, {"volume_id": vid, "size_gib": mod["TargetSize"],
                                   "volume_type": mod["TargetVolumeType"]})
            case ["volumes", vid, "sha256"] if method == "GET":
                return _json(200, {"sha256": world.region(region_name).volume_sha256(vid)})
            case ["snapshots", sid, "sha256"] if method == "GET":
                return _json(200, {"sha256": world.region(region_name).snapshot_sha256(sid)})
            case ["snapshots"] if method == "GET":
                region = world.region(region_name)
                with world.lock:
                    snaps = list(region.snapshots.values())
                return _json(200, {"snapshots": [{
                    "id": s.id, "volume_id": s.volume_id, "state": s.state(),
                    "volume_size": s.volume_size, "description": s.description,
                    "tags": dict(s.tags), "written_blocks": len(s.blocks),
                    "origin": s.origin, "parent_id": s.parent_id, "lineage": s.lineage,
                    "encrypted": s.encrypted} for s in snaps]})
        raise SimError("NotFound", f"No control route {method} /_sim/{'/'.join(parts)}", 404)

    def _create_instance(self, req: Request) -> Response:
        spec = _body(req, {"region", "name", "volumes", "az", "tags", "instance_type",
                           "user_data_b64", "image_id", "key_name", "iam_instance_profile",
                           "architecture"})
        region = self.world.region(spec.pop("region", req.query.get("region", DEFAULT_REGION)))
        user_data = spec.pop("user_data_b64", None)
        if user_data is not None:
            try:
                spec["user_data"] = base64.b64decode(user_data, validate=True)
            except binascii.Error:
                raise SimError("InvalidParameterValue", "user_data_b64 is not base64") from None
        inst = region.create_instance(**spec, kms_checked=False)  # seeding
        return _json(200, {"instance_id": inst.id, "region": region.name,
                           "availability_zone": inst.az,
                           "volume_ids": [vid for _, vid in inst.devices],
                           "devices": [device for device, _ in inst.devices]})


def _body(req: Request, allowed: set[str]) -> dict[str, Any]:
    try:
        value = json.loads(req.body or b"{}")
    except ValueError:
        raise SimError("InvalidParameterValue", "Body is not JSON") from None
    if not isinstance(value, dict):
        raise SimError("InvalidParameterValue", "Body must be a JSON object")
    unknown = set(value) - allowed
    if unknown:
        raise SimError("InvalidParameterValue", f"Unknown fields: {sorted(unknown)}")
    return value


def _int(raw: str, name: str) -> int:
    try:
        return int(raw)
    except ValueError:
        raise SimError("InvalidParameterValue", f"{name} must be an integer") from None


# ------------------------------------------------------------------ client side


class SimulatorError(Exception):
    """A control call failed; ``code`` is the simulator's error code."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(f"{status} {code}: {message}")
        self.status = status
        self.code = code
        self.message = message


class SimulatorClient:
    """Typed client for the control API (stdlib only, usable from any test process)."""

    def __init__(self, endpoint: str, timeout: float = 60.0,
                 ca_path: str | None = None) -> None:
        """``endpoint`` may be ``https://``: ``ca_path`` is then the simulator's CA (PEM,
        from :meth:`tls_ca_pem` or ``RunningSimulator.ca_path``)."""
        self.endpoint = endpoint.rstrip("/")
        self.timeout = timeout
        self.ca_path = ca_path
        self._context = (ssl.create_default_context(cafile=ca_path)
                         if endpoint.startswith("https:") else None)

    def _call(self, method: str, path: str, query: Mapping[str, Any] | None = None,
              body: bytes | None = None, content_type: str = "application/json") -> bytes:
        url = f"{self.endpoint}/_sim/{path}"
        if query:
            url += "?" + urllib.parse.urlencode(query)
        request = urllib.request.Request(url, data=body, method=method)
        if body is not None:
            request.add_header("Content-Type", content_type)
        try:
            with urllib.request.urlopen(request, timeout=self.timeout,
                                        context=self._context) as resp:
                return bytes(resp.read())
        except urllib.error.HTTPError as err:
            raw = err.read()
            try:
                info = json.loads(raw)
                code, message = info["error"], info["message"]
            except (ValueError, KeyError, TypeError):
                code, message = "HTTPError", raw.decode(errors="replace")
            raise SimulatorError(err.code, code, message) from None

    def _json(self, method: str, path: str, query: Mapping[str, Any] | None = None,
              payload: Any = None) -> Any:
        body = None if payload is None else json.dumps(payload).encode()
        return json.loads(self._call(method, path, query, body))

    def health(self) -> bool:
        return bool(self._json("GET", "health")["ok"])

    def tls_ca_pem(self) -> bytes:
        """The PEM of the CA that signed the simulator's HTTPS certificate."""
        return self._call("GET", "tls-ca.pem")

    def session_token(self, ttl: float) -> dict[str, str]:
        """Temporary credentials (``access_key_id``, ``secret_access_key``,
        ``session_token``, ``expiration``) that AWS calls refuse after ``ttl`` seconds
        (EC2 ``RequestExpired``, EBS ``ExpiredTokenException``, STS ``ExpiredToken``)."""
        result: dict[str, str] = self._json("POST", "session-token", payload={"ttl": ttl})
        return result

    def reset(self) -> None:
        """Forget all resources in every region and restore start-up options."""
        self._json("POST", "reset", payload={})

    def set_options(self, snapshot_delay: float | None = None, **knobs: Any) -> dict[str, Any]:
        """Change knobs; returns all current values. ``snapshot_delay``: seconds a new
        snapshot stays pending (0 = born completed). Other knobs (``aws_like``,
        ``throttling``, ``latency_ms``, ``error_rate``, ``not_found_window``, ...): see
        docs/SIMULATOR.md. ``reset()`` restores every default."""
        payload = dict(knobs)
        if snapshot_delay is not None:
            payload["snapshot_delay"] = snapshot_delay
        result: dict[str, Any] = self._json("POST", "options", payload=payload)
        return result

    def stats(self) -> dict[str, Any]:
        """Counters since the last reset: ``requests``/``throttled``/``faults_by_operation``
        (operation -> n), ``throttled_by_reason`` (Reason or error code -> n), ``faults``
        (kind -> n), ``not_found_window`` (operation -> n), ``first_request_at`` (operation ->
        time.time() its first request arrived)."""
        result: dict[str, Any] = self._json("GET", "stats")
        return result

    def reset_stats(self) -> None:
        """Zero the counters and refill the token buckets (options unchanged)."""
        self._json("POST", "stats/reset", payload={})

    def sts_sessions(self) -> list[dict[str, Any]]:
        """Every STS AssumeRole call: role_arn, session_name, duration, external_id, ..."""
        result: list[dict[str, Any]] = self._json("GET", "sts/sessions")["sessions"]
        return result

    def options(self) -> dict[str, Any]:
        result: dict[str, Any] = self._json("GET", "options")
        return result

    def create_instance(
        self,
        name: str,
        volumes: Sequence[Mapping[str, Any]],
        region: str = DEFAULT_REGION,
        az: str | None = None,
        tags: Mapping[str, str] | None = None,
        instance_type: str = "t3.micro",
        user_data: bytes | str | None = None,
        image_id: str | None = None,
        key_name: str | None = "sim-key",
        iam_instance_profile: str | None = None,
    ) -> dict[str, Any]:
        """A running instance; ``volumes`` items are ``{size_gib, device, volume_type?,
        iops?, throughput?, encrypted?, kms_key_id?, delete_on_termination?, tags?}``.

        Returns ``{instance_id, region, availability_zone, volume_ids, devices}`` with
        volume ids in the given device order.
        """
        payload: dict[str, Any] = {
            "region": region, "name": name, "volumes": list(volumes), "az": az,
            "tags": dict(tags or {}), "instance_type": instance_type, "image_id": image_id,
            "key_name": key_name, "iam_instance_profile": iam_instance_profile,
        }
        if user_data is not None:
            raw = user_data.encode() if isinstance(user_data, str) else user_data
            payload["user_data_b64"] = base64.b64encode(raw).decode()
        result: dict[str, Any] = self._json("POST", "instances", payload=payload)
        return result

    def create_volume(
        self,
        size_gib: int | None,
        region: str = DEFAULT_REGION,
        az: str | None = None,
        volume_type: str = "gp3",
        iops: int | None = None,
        throughput: int | None = None,
        encrypted: bool = False,
        kms_key_id: str | None = None,
        tags: Mapping[str, str] | None = None,
        snapshot_id: str | None = None,
    ) -> str:
        """A standalone (available) volume; returns its id. With ``snapshot_id`` it holds
        that snapshot's data (``size_gib`` may then be None for the snapshot's size)."""
        payload = {"region": region, "size_gib": size_gib, "az": az,
                   "volume_type": volume_type, "iops": iops, "throughput": throughput,
                   "encrypted": encrypted, "kms_key_id": kms_key_id, "tags": dict(tags or {})}
        if snapshot_id is not None:
            payload["snapshot_id"] = snapshot_id
        return str(self._json("POST", "volumes", payload=payload)["volume_id"])

    def write_volume(self, volume_id: str, offset: int, data: bytes,
                     region: str = DEFAULT_REGION) -> int:
        """Write ``data`` at byte ``offset`` (any alignment); returns bytes written."""
        raw = self._call("PUT", f"volumes/{volume_id}/data",
                         {"region": region, "offset": offset}, data,
                         "application/octet-stream")
        return int(json.loads(raw)["written"])

    def read_volume(self, volume_id: str, offset: int, length: int,
                    region: str = DEFAULT_REGION) -> bytes:
        return self._call("GET", f"volumes/{volume_id}/data",
                          {"region": region, "offset": offset, "length": length})

    def trim_volume(self, volume_id: str, offset: int, length: int,
                    region: str = DEFAULT_REGION) -> int:
        """Unwrite (discard) ``[offset, offset+length)``: whole 512 KiB blocks in it become
        unwritten (the next snapshot does not have them); partial edges are zeroed. Returns
        the number of blocks unwritten."""
        result = self._json("POST", f"volumes/{volume_id}/trim",
                            {"region": region, "offset": offset, "length": length}, {})
        return int(result["trimmed_blocks"])

    def modify_volume(self, volume_id: str, size_gib: int | None = None,
                      volume_type: str | None = None, iops: int | None = None,
                      throughput: int | None = None,
                      region: str = DEFAULT_REGION) -> dict[str, Any]:
        """EC2 ModifyVolume without SigV4: grow a volume (visible at once)."""
        spec = {k: v for k, v in (("size_gib", size_gib), ("volume_type", volume_type),
                                  ("iops", iops), ("throughput", throughput)) if v is not None}
        result: dict[str, Any] = self._json("POST", f"volumes/{volume_id}/modify",
                                            {"region": region}, spec)
        return result

    def volume_sha256(self, volume_id: str, region: str = DEFAULT_REGION) -> str:
        """Hex SHA-256 of the whole volume, zeros included for unwritten blocks."""
        return str(self._json("GET", f"volumes/{volume_id}/sha256", {"region": region})
                   ["sha256"])

    def snapshot_sha256(self, snapshot_id: str, region: str = DEFAULT_REGION) -> str:
        """Hex SHA-256 of the full disk image the snapshot captured."""
        return str(self._json("GET", f"snapshots/{snapshot_id}/sha256", {"region": region})
                   ["sha256"])

    def snapshots(self, region: str = DEFAULT_REGION) -> list[dict[str, Any]]:
        """Every snapshot in ``region``: id, volume_id, state, tags, volume_size, ..."""
        result: list[dict[str, Any]] = self._json("GET", "snapshots",
                                                  {"region": region})["snapshots"]
        return result
