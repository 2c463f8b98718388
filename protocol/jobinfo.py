"""Setup data: the Job block (§3.3), the Params block (§3.4) and the start command (§3.5)."""

from __future__ import annotations

import enum
from collections.abc import Iterable
from dataclasses import dataclass, field

from .errors import ProtocolError


class Mode(enum.Enum):
    """What the FD asked for, keyed by the start command it sends (§3.1, §3.5)."""

    BACKUP = "BackupStart"
    ESTIMATE = "EstimateStart"
    LISTING = "ListingStart"
    QUERY = "QueryStart"
    RESTORE = "RestoreStart"

    @property
    def has_data_phase(self) -> bool:
        """§4.2, §5.1, §10.13: only a backup sends file data."""
        return self is Mode.BACKUP


class EndReason(enum.Enum):
    """How the session ended (§2.4)."""

    #: END was received and answered: the job succeeded.
    END = "END"
    #: T without END: the normal end of a `.query` (§5.3).
    TERMINATE = "T"
    #: EOF without END: the job failed, was cancelled, or setup failed.
    EOF = "EOF"


@dataclass(frozen=True, slots=True)
class JobInfo:
    """The Job block (§3.3). Absent lines are None; present-but-empty lines are "".

    The difference matters: `where == ""` means "restore to the original location"
    (§10.21), `where is None` means RegexWhere is used or this is not a restore.
    """

    name: str
    jobid: int
    type: str
    level: str | None = None
    since: int | None = None
    where: str | None = None
    regex_where: str | None = None
    replace: str | None = None
    namespace: str | None = None
    prev_job_name: str | None = None
    working_dir: str | None = None
    sysconfig_path: str | None = None
    exe_path: str | None = None
    extra: dict[str, str] = field(default_factory=dict)


_JOB_KEYS = {
    "Level": "level",
    "Where": "where",
    "RegexWhere": "regex_where",
    "Replace": "replace",
    "Namespace": "namespace",
    "PrevJobName": "prev_job_name",
    "WorkingDir": "working_dir",
    "SysconfigPath": "sysconfig_path",
    "ExePath": "exe_path",
}
JOB_TYPES = frozenset("BER")


def split_line(line: str) -> tuple[str, str]:
    """Split `key=value` at the first `=`; a line without `=` has value "" (§3.3, §3.4.1)."""
    key, _, value = line.partition("=")
    return key, value


def _int(key: str, value: str) -> int:
    try:
        return int(value)
    except ValueError:  # from None: the message has key and value, all int()'s error said
        raise ProtocolError(f"Job block: {key}={value!r} is not an integer") from None


def parse_job_lines(lines: Iterable[str]) -> JobInfo:
    """Build a JobInfo from the lines of the Job block. Keys are case-sensitive (§3.3);
    unknown keys go to `extra` so newer FDs keep working (Appendix A); later lines win."""
    known: dict[str, str] = {}
    extra: dict[str, str] = {}
    name = ""
    jobid = 0
    jtype = ""
    since: int | None = None
    for line in lines:
        key, value = split_line(line)
        if key == "Name":
            name = value
        elif key == "JobID":
            jobid = _int(key, value)
        elif key == "Type":
            jtype = value
        elif key == "Since":
            since = _int(key, value)
        elif key in _JOB_KEYS:
            known[_JOB_KEYS[key]] = value
        else:
            extra[key] = value
    if jtype not in JOB_TYPES:
        raise ProtocolError(f"Job block: Type={jtype!r}, expected one of B, E, R (§3.3)")
    return JobInfo(
        name=name,
        jobid=jobid,
        type=jtype,
        since=since,
        extra=extra,
        level=known.get("level") or None,
        where=known.get("where"),
        regex_where=known.get("regex_where"),
        replace=known.get("replace"),
        namespace=known.get("namespace"),
        prev_job_name=known.get("prev_job_name"),
        working_dir=known.get("working_dir"),
        sysconfig_path=known.get("sysconfig_path"),
        exe_path=known.get("exe_path"),
    )


def last_wins(params: Iterable[tuple[str, str]]) -> dict[str, str]:
    """Collapse repeated parameters, last value winning (§3.4.5, §10.18)."""
    return dict(params)
