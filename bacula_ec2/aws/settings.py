"""What `aws/` needs to connect: credentials, region, endpoints, timeouts.

Built once per region from the job's parameters, outside this package
(`jobs.context.aws_settings`): `aws/` knows nothing of the parameter model. Secrets are
`Secret`s, which never print; they go into botocore and nowhere else.
"""

from __future__ import annotations

import dataclasses
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

    def in_region(self, region: str | None) -> AwsSettings:
        """The same settings for another region (None: unchanged)."""
        return dataclasses.replace(self, region=region) if region and region != self.region else self
