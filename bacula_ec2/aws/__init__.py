"""The only place that talks to AWS: EC2 control plane and EBS direct.

`client.Aws` holds the boto3 clients and the control-plane calls the jobs need; other
modules here add capabilities on top of it (one file per capability). Everything above
this package sees plain dicts, small dataclasses and our own exceptions.
"""

from .client import Aws, AwsError, BlockBody, BlockRef, ChecksumMismatch, classify

__all__ = ["Aws", "AwsError", "BlockBody", "BlockRef", "ChecksumMismatch", "classify"]
