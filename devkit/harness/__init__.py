"""Test harness: a real Bacula Director/SD/FD stack driving the ec2 backend."""

from .bacula import (
    BACKEND_CMD_ENV,
    BaculaBuild,
    BaculaError,
    BaculaStack,
    StackFactory,
    ensure_bacula,
    ensure_build,
    ensure_plugin,
)

__all__ = [
    "BACKEND_CMD_ENV",
    "BaculaBuild",
    "BaculaError",
    "BaculaStack",
    "StackFactory",
    "ensure_bacula",
    "ensure_build",
    "ensure_plugin",
]
