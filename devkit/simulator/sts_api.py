"""STS query API (signing name ``sts``): AssumeRole and GetCallerIdentity.

Enough for the product's ``role_arn`` parameter: AssumeRole validates its parameters like
STS and returns temporary credentials (``ASIA…`` key, secret, session token, expiration).
No IAM policy or trust policy is evaluated, and the simulator accepts any credentials on
later calls, temporary or not, except that a session token it issued (AssumeRole, or
``POST /_sim/session-token``) is refused once expired (the server checks it, see
``server.expired_token_error``). Each AssumeRole is recorded for tests
(``SimulatorClient.sts_sessions()``). Expirations are on the service's clock (real time +
``clock_offset_s``).
"""

from __future__ import annotations

import re
import secrets
import time
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qsl
from xml.sax.saxutils import escape

from .errors import SimError
from .messages import Request, Response
from .model import OWNER_ID, World
from .policy import Call, Policy
from .query_codec import iso_timestamp

XML = "text/xml"
_NS = "https://sts.amazonaws.com/doc/2011-06-15/"
_ROLE_RE = re.compile(r"^arn:aws[a-z-]*:iam::(\d{12}):role/([\w+=,.@/-]{1,512})$")
_SESSION_RE = re.compile(r"^[\w+=,.@-]{2,64}$")


def issue_session(world: World, ttl: float) -> dict[str, Any]:
    """New temporary credentials valid for ``ttl`` seconds of the service's clock; the token
    is remembered so that requests signed with it are refused once it has expired."""
    expiry = time.time() + world.opts.clock_offset_s + ttl
    token = secrets.token_urlsafe(96)
    with world.lock:
        world.session_tokens[token] = expiry
    return {"access_key_id": "ASIA" + secrets.token_hex(8).upper(),
            "secret_access_key": secrets.token_urlsafe(30), "session_token": token,
            "expiration": iso_timestamp(datetime.fromtimestamp(expiry, UTC))}


def error_xml(code: str, message: str, request_id: str, sender: bool = True) -> bytes:
    return (f'<ErrorResponse xmlns="{_NS}"><Error><Type>{"Sender" if sender else "Receiver"}'
            f"</Type><Code>{escape(code)}</Code><Message>{escape(message)}</Message></Error>"
            f"<RequestId>{request_id}</RequestId></ErrorResponse>").encode()


class StsApi:
    def __init__(self, world: World, policy: Policy) -> None:
        self.world = world
        self.policy = policy

    def handle(self, req: Request) -> Response:
        params = dict(req.query)
        if req.body:
            params.update(parse_qsl(req.body.decode("utf-8", "replace"), keep_blank_values=True))
        action = params.get("Action", "")
        try:
            self.policy.admit(Call("sts", action, req.region))
            if action == "AssumeRole":
                inner = self._assume_role(params, req)
            elif action == "GetCallerIdentity":
                inner = (f"<Arn>arn:aws:iam::{OWNER_ID}:user/simulator</Arn>"
                         f"<UserId>AIDASIMULATOR</UserId><Account>{OWNER_ID}</Account>")
            else:
                raise SimError("InvalidAction", f"Could not find operation {action} for "
                               f"version 2011-06-15")
        except SimError as err:
            return Response(err.status, error_xml(err.code, err.message, req.request_id), XML)
        body = (f'<{action}Response xmlns="{_NS}"><{action}Result>{inner}</{action}Result>'
                f"<ResponseMetadata><RequestId>{req.request_id}</RequestId></ResponseMetadata>"
                f"</{action}Response>")
        return Response(200, body.encode(), XML)

    def _assume_role(self, params: dict[str, str], req: Request) -> str:
        role_arn = params.get("RoleArn")
        session = params.get("RoleSessionName")
        if role_arn is None or session is None:
            missing = "roleArn" if role_arn is None else "roleSessionName"
            raise SimError("ValidationError", f"1 validation error detected: Value null at "
                           f"'{missing}' failed to satisfy constraint: Member must not be null")
        match = _ROLE_RE.match(role_arn)
        if not match:
            raise SimError("ValidationError", f"{role_arn} is invalid")
        if not _SESSION_RE.match(session):
            raise SimError("ValidationError", f"1 validation error detected: Value "
                           f"'{session}' at 'roleSessionName' failed to satisfy constraint")
        try:
            duration = int(params.get("DurationSeconds", "3600"))
        except ValueError:
            raise SimError("ValidationError", "DurationSeconds must be a number") from None
        if not 900 <= duration <= 43200:
            raise SimError("ValidationError", f"1 validation error detected: Value "
                           f"'{duration}' at 'durationSeconds' failed to satisfy constraint: "
                           f"Member must have value between 900 and 43200")
        creds = issue_session(self.world, duration)
        key = creds["access_key_id"]
        role_name = match.group(2).rsplit("/", 1)[-1]
        role_id = "AROA" + secrets.token_hex(8).upper()
        record: dict[str, Any] = {
            "role_arn": role_arn, "session_name": session, "duration": duration,
            "external_id": params.get("ExternalId"), "access_key_id": key,
            "region": req.region,
        }
        with self.world.lock:
            self.world.sts_sessions.append(record)
        return ("<Credentials>"
                f"<AccessKeyId>{key}</AccessKeyId>"
                f"<SecretAccessKey>{creds['secret_access_key']}</SecretAccessKey>"
                f"<SessionToken>{creds['session_token']}</SessionToken>"
                f"<Expiration>{creds['expiration']}</Expiration></Credentials>"
                f"<AssumedRoleUser><AssumedRoleId>{role_id}:{escape(session)}</AssumedRoleId>"
                f"<Arn>arn:aws:sts::{match.group(1)}:assumed-role/{escape(role_name)}/"
                f"{escape(session)}</Arn></AssumedRoleUser>")
