"""What `aws/` needs to connect: credentials, region, endpoints, timeouts.

Built once per region from the job's parameters, outside this package
(`jobs.context.aws_settings`): `aws/` knows nothing of the parameter model. Secrets are
`Secret`s, which never print; they go into botocore and nowhere else.
"""

from __future__ import annotations

import configparser
import dataclasses
import os
import stat
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Secret:
    """A secret value that does not show in repr, str or f-strings."""

    _value: str = field(repr=False)

    def reveal(self) -> str:
        return self._value

    def __str__(self) -> str:
        return "**********"

    def __repr__(self) -> str:
        return "Secret('**********')"


@dataclass(frozen=True)
class AwsSettings:
    # --- credentials (none given: botocore's default chain)
    access_key: str | None = None
    secret_key: Secret | None = None
    session_token: Secret | None = None
    profile: str | None = None
    credentials_file: str | None = None
    role_arn: str | None = None
    external_id: str | None = None
    role_session_name: str = "bacula-ec2"
    # --- where
    region: str | None = None  # None: the profile's or the environment's
    endpoint_url: str | None = None  # EC2, EBS and STS (tests, VPC endpoints)
    ec2_endpoint_url: str | None = None  # overrides endpoint_url for EC2
    ebs_endpoint_url: str | None = None  # overrides endpoint_url for EBS direct
    # --- trust: a PEM CA bundle for TLS (None: botocore's resolution, AWS_CA_BUNDLE or the
    # profile's ca_bundle, else its own bundle); boto3 and the fast block path both use it
    ca_bundle: str | None = None
    # --- connections and timeouts (boto3's and the fast block path's)
    connect_timeout: float = 10.0
    read_timeout: float = 60.0
    control_attempts: int = 8  # attempts of a control-plane or listing call in all (ours; botocore's are off)
    block_threads: int = 64  # block requests in flight: the EBS connection pool holds as many
    # --- pacing: a directory where the list pacers of every backend of this host keep one
    # schedule per region (pacing.SharedSchedule: two Plugin lines of a job are two
    # processes under one 50/s List quota); None: this process's own pacer
    pace_dir: str | None = None

    def in_region(self, region: str | None) -> AwsSettings:
        """The same settings for another region (None: unchanged)."""
        return dataclasses.replace(self, region=region) if region and region != self.region else self


def _sections(path: str) -> set[str] | None:
    """Section names of an INI file, or None if it cannot be parsed (never its content:
    a parser error quotes the line, which may hold a key)."""
    parser = configparser.RawConfigParser(strict=False, interpolation=None)
    try:
        parser.read(path, encoding="utf-8")
    except (configparser.Error, UnicodeDecodeError, OSError):
        return None
    return set(parser.sections())


def _keys_of(path: str, section: str) -> set[str]:
    parser = configparser.RawConfigParser(strict=False, interpolation=None)
    parser.read(path, encoding="utf-8")
    return {k.lower() for k in parser[section]} if parser.has_section(section) else set()


def credentials_file_problem(
    path: str, profile: str | None, *, keys_given: bool, config_file: str | None = None
) -> str | None:
    """What is wrong with `credentials_file=`, checked before the first AWS call, or None.

    Missing, not a file, unreadable, open to other users, not parseable, no such profile
    (unless the AWS config file defines it), or the profile has no keys (only when no
    `access_key=` was given). The text names the file and what to do; never its content."""
    shown = f"credentials_file={path}"
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return f"{shown}: no such file (check the path; the FD reads it as its own user)"
    except OSError as exc:
        return f"{shown}: cannot be checked: {exc.strerror}"
    if not stat.S_ISREG(st.st_mode):
        return f"{shown}: not a regular file"
    if st.st_mode & 0o007:
        return (
            f"{shown}: other users may read or write it (mode {stat.S_IMODE(st.st_mode):04o}): "
            f"it holds secrets, make it 0600 (or 0640 for the FD's group): chmod 600 {path}"
        )
    try:
        with open(path, "rb"):
            pass
    except OSError as exc:
        return f"{shown}: cannot be read by this user (uid {os.getuid()}): {exc.strerror}"
    sections = _sections(path)
    if sections is None:
        return f"{shown}: not an INI file of [profile] sections with aws_access_key_id= lines"
    name = profile or "default"
    if name not in sections:
        config = config_file or os.environ.get("AWS_CONFIG_FILE") or os.path.expanduser("~/.aws/config")
        in_config = (_sections(config) or set()) if os.path.isfile(config) else set()
        if name in in_config or f"profile {name}" in in_config:
            return None
        if keys_given:
            return None if profile is None else f"{shown}: has no profile [{name}]" + _listing(sections)
        return f"{shown}: has no profile [{name}]" + _listing(sections)
    if not keys_given and not {"aws_access_key_id", "aws_secret_access_key"} <= _keys_of(path, name):
        has_other = _keys_of(path, name) & {"role_arn", "credential_process", "sso_session", "sso_start_url"}
        if not has_other:
            return (
                f"{shown}: profile [{name}] has no aws_access_key_id and aws_secret_access_key "
                "(both are needed)"
            )
    return None


def _listing(sections: set[str]) -> str:
    return f" (it has: {', '.join(sorted(sections))})" if sections else " (it has no profiles)"
