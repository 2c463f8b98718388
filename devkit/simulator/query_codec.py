"""Model-driven codec for the EC2 query protocol.

Requests are decoded and responses encoded by walking botocore's own EC2 service model, so
every member name, list wrapper (``<fooSet><item>``) and scalar encoding is the one the SDK
uses. Handlers work on the same Python dicts boto3 returns (``{"Reservations": [...]}``);
adding an action later means writing only its logic, never its wire names.
"""

from __future__ import annotations

import base64
import binascii
import functools
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any
from xml.sax.saxutils import escape

import botocore.session
from botocore.model import ListShape, MapShape, ServiceModel, Shape, StructureShape

from .errors import SimError

EC2_NAMESPACE = "http://ec2.amazonaws.com/doc/2016-11-15/"
_MISSING: Any = object()


@functools.cache
def service_model(name: str) -> ServiceModel:
    """Load (once per process) botocore's model for ``name`` ("ec2", "ebs")."""
    return botocore.session.get_session().get_service_model(name)


# --------------------------------------------------------------------------- requests


def _query_name(shape: Shape, default: str) -> str:
    """The wire name botocore's EC2Serializer gives a member (queryName, else LocationName)."""
    ser = shape.serialization
    if "queryName" in ser:
        return str(ser["queryName"])
    if "name" in ser:
        name = str(ser["name"])
        return name[0].upper() + name[1:]
    return default


def parse_query(params: Mapping[str, str], shape: StructureShape | None) -> dict[str, Any]:
    """Decode flat ``Foo.1.Bar=x`` parameters into the nested dict boto3 was given.

    Raises MissingParameter / InvalidParameterValue / UnknownParameter like EC2 does.
    """
    used: set[str] = {"Action", "Version"}
    result: dict[str, Any] = {}
    if shape is not None:
        parsed = _parse(params, shape, "", used, top=True)
        if parsed is not _MISSING:
            result = parsed
    unknown = sorted(set(params) - used)
    if unknown:
        raise SimError("UnknownParameter", f"The parameter {unknown[0]} is not recognized")
    return result


def _parse(params: Mapping[str, str], shape: Shape, key: str, used: set[str], top: bool = False
           ) -> Any:
    if isinstance(shape, StructureShape):
        prefix = f"{key}." if key else ""
        out: dict[str, Any] = {}
        for member, mshape in shape.members.items():
            value = _parse(params, mshape, prefix + _query_name(mshape, member), used)
            if value is not _MISSING:
                out[member] = value
        if not out and not top:
            return _MISSING
        for member in shape.required_members:
            if member not in out:
                name = prefix + _query_name(shape.members[member], member)
                raise SimError("MissingParameter",
                               f"The request must contain the parameter {name}")
        return out
    if isinstance(shape, ListShape):
        start = f"{key}."
        indexes = sorted({
            int(head) for k in params if k.startswith(start)
            for head in [k[len(start):].split(".", 1)[0]] if head.isdigit()
        })
        if not indexes:
            if key in params:  # "Foo=" is how an explicitly empty list is sent
                used.add(key)
                return []
            return _MISSING
        items = [_parse(params, shape.member, f"{key}.{i}", used) for i in indexes]
        return [item for item in items if item is not _MISSING]
    if isinstance(shape, MapShape):  # no EC2 input we serve uses maps
        return _MISSING
    if key not in params:
        return _MISSING
    used.add(key)
    return _scalar(shape, key, params[key])


def _scalar(shape: Shape, key: str, raw: str) -> Any:
    kind = shape.type_name
    try:
        if kind in ("integer", "long"):
            return int(raw)
        if kind in ("float", "double"):
            return float(raw)
        if kind == "boolean":
            if raw.lower() not in ("true", "false"):
                raise ValueError(raw)
            return raw.lower() == "true"
        if kind == "timestamp":
            return datetime.fromisoformat(raw.replace("Z", "+00:00"))
        if kind == "blob":
            return base64.b64decode(raw, validate=True)
    except (ValueError, binascii.Error):
        raise SimError("InvalidParameterValue",
                       f"Value ({raw}) for parameter {key} is invalid.") from None
    return raw


# --------------------------------------------------------------------------- responses


def iso_timestamp(value: datetime | float) -> str:
    """EC2's timestamp format: ISO 8601 UTC with milliseconds."""
    if not isinstance(value, datetime):
        value = datetime.fromtimestamp(value, UTC)
    value = value.astimezone(UTC)
    return value.strftime("%Y-%m-%dT%H:%M:%S") + f".{value.microsecond // 1000:03d}Z"


def to_xml(operation: str, shape: StructureShape | None, value: Mapping[str, Any],
           request_id: str) -> bytes:
    """Encode a boto3-style result dict as the EC2 ``<OperationResponse>`` document."""
    parts = [f'<?xml version="1.0" encoding="UTF-8"?>\n<{operation}Response '
             f'xmlns="{EC2_NAMESPACE}"><requestId>{request_id}</requestId>']
    if shape is None:
        parts.append("<return>true</return>")
    else:
        _members(parts, shape, value)
    parts.append(f"</{operation}Response>")
    return "".join(parts).encode()


def _members(parts: list[str], shape: StructureShape, value: Mapping[str, Any]) -> None:
    members = shape.members
    for name, item in value.items():
        if item is None:
            continue
        if name not in members:  # a typo in a handler must fail loudly, not vanish
            raise KeyError(f"{shape.name} has no member {name!r}")
        mshape = members[name]
        _value(parts, mshape, item, str(mshape.serialization.get("name", name)))


def _value(parts: list[str], shape: Shape, value: Any, tag: str) -> None:
    if isinstance(shape, StructureShape):
        parts.append(f"<{tag}>")
        _members(parts, shape, value)
        parts.append(f"</{tag}>")
    elif isinstance(shape, ListShape):
        item_tag = str(shape.member.serialization.get("name", "member"))
        parts.append(f"<{tag}>")
        for item in value:
            _value(parts, shape.member, item, item_tag)
        parts.append(f"</{tag}>")
    elif isinstance(shape, MapShape):
        key_tag = str(shape.key.serialization.get("name", "key"))
        val_tag = str(shape.value.serialization.get("name", "value"))
        parts.append(f"<{tag}>")
        for k, v in value.items():
            parts.append("<entry>")
            _value(parts, shape.key, k, key_tag)
            _value(parts, shape.value, v, val_tag)
            parts.append("</entry>")
        parts.append(f"</{tag}>")
    else:
        parts.append(f"<{tag}>{escape(_text(shape, value))}</{tag}>")


def _text(shape: Shape, value: Any) -> str:
    kind = shape.type_name
    if kind == "boolean":
        return "true" if value else "false"
    if kind == "timestamp":
        return iso_timestamp(value)
    if kind == "blob":
        return base64.b64encode(value).decode()
    return str(value)


def error_xml(code: str, message: str, request_id: str) -> bytes:
    """EC2's error document (note ``RequestID``, not ``requestId``)."""
    return (f'<?xml version="1.0" encoding="UTF-8"?>\n<Response><Errors><Error>'
            f"<Code>{escape(code)}</Code><Message>{escape(message)}</Message></Error></Errors>"
            f"<RequestID>{request_id}</RequestID></Response>").encode()
