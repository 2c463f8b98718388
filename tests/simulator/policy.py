"""Where latency, quotas/throttling and fault injection will plug in (a later issue).

Every AWS call passes through :meth:`Policy.admit` once its operation is known and before it
touches the model. A policy may sleep (latency), raise :class:`~.errors.SimError` (e.g.
``RequestThrottledException`` / ``ThrottlingException`` from per-snapshot and per-account
token buckets, ``InternalServerException``), or ask for a damaged response through the
returned :class:`Effects` (e.g. a truncated or corrupted GetSnapshotBlock body). Errors are
rendered by each API layer in its own protocol, so a policy never deals with wire formats.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Call:
    api: str  # "ec2" | "ebs"
    operation: str  # e.g. "GetSnapshotBlock"
    region: str
    resource: str | None = None  # e.g. the snapshot id, for per-resource quotas


@dataclass(frozen=True, slots=True)
class Effects:
    """What a policy wants done to an admitted call's response (none yet)."""


NO_EFFECTS = Effects()


class Policy:
    """The first version admits every call unchanged."""

    def admit(self, call: Call) -> Effects:
        return NO_EFFECTS
