"""The job's own failure, in a module that imports nothing: `bacula_ec2.guest` and
`jobs.safefs` raise it without pulling in the AWS clients (`jobs.context` re-exports it)."""

from __future__ import annotations


class JobError(Exception):
    """The job cannot go on; the message says what was wrong and what to do."""
