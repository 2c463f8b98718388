"""What every job needs to know and where it reports, independent of Bacula or bec2."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Protocol

from ..aws import Aws
from ..aws.settings import AwsSettings, Secret
from ..params import Parameters
from .errors import JobError

__all__ = ["JobContext", "JobError", "Reporter", "aws_settings", "connect"]


class Reporter(Protocol):
    """Job messages: Bacula job log in the backend, stderr in bec2.

    A reporter may also have `progress(update: jobs.progress.Progress)`, called a few times
    a second during a volume's transfer and once at its end (`final`): bec2 draws its live
    line and prints the summaries from these, the backend puts the ones marked `log` (at
    most one a minute per volume) into the job log. Job code calls it through
    `progress.emitter(reporter)`, which tolerates a reporter without it.
    """

    def info(self, text: str) -> None: ...
    def warning(self, text: str) -> None: ...
    def error(self, text: str) -> None: ...


@dataclass
class JobContext:
    params: Parameters
    job_name: str
    job_id: int
    level: str  # F, I or D
    reporter: Reporter
    working_dir: str
    reference_job: str | None = None  # unique name of that job (Bacula's PrevJobName=)
    cancel: threading.Event = field(default_factory=threading.Event)

    @property
    def job_info(self) -> dict[str, object]:
        return {"job_name": self.job_name, "job_id": self.job_id, "level": self.level}


def aws_settings(params: Parameters, region: str | None = None, pace_dir: str | None = None) -> AwsSettings:
    """What `aws/` needs of the parameters: credentials, region (`region` overrides
    `region=`), endpoints, how many block requests run at once, and where the list pacers
    of this host's backends keep one schedule (`pace_dir`, None: this process's own)."""
    return AwsSettings(
        access_key=params.access_key,
        secret_key=Secret(params.secret_key.get_secret_value()) if params.secret_key else None,
        session_token=Secret(params.session_token.get_secret_value()) if params.session_token else None,
        profile=params.profile,
        credentials_file=params.credentials_file,
        role_arn=params.role_arn,
        external_id=params.external_id,
        role_session_name=params.role_session_name,
        region=region or params.region,
        endpoint_url=params.endpoint_url,
        ec2_endpoint_url=params.ec2_endpoint_url,
        ebs_endpoint_url=params.ebs_endpoint_url,
        ca_bundle=params.ca_bundle,
        block_threads=params.concurrent_threads,
        pace_dir=pace_dir,
    )


def connect(
    params: Parameters,
    *,
    region: str | None = None,
    cancel: threading.Event | None = None,
    pace_dir: str | None = None,
) -> Aws:
    """The AWS clients of one region (`region` None: the parameters' region); `pace_dir`:
    see `aws_settings`."""
    return Aws(aws_settings(params, region, pace_dir), cancel=cancel)
