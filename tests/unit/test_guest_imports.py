"""The guest reader and safefs load without the AWS clients (JobError lives in
jobs/errors.py, which imports nothing): a file-level restore's reader pulls in no boto3."""

from __future__ import annotations

import subprocess
import sys


def test_guest_and_safefs_import_no_boto3() -> None:
    code = (
        "import sys, bacula_ec2.guest, bacula_ec2.jobs.safefs\n"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('boto3', 'botocore', 'pydantic') "
        "or m in ('bacula_ec2.jobs.context', 'bacula_ec2.aws'))\n"
        "print(','.join(bad))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True).stdout
    assert out.strip() == "", out


def test_job_error_is_one_class() -> None:
    from bacula_ec2.jobs import context, errors, safefs

    assert context.JobError is errors.JobError
    assert issubclass(safefs.UnsafePath, errors.JobError)
