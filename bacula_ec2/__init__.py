"""bacula-ec2: block-level backup and restore of Amazon EC2 instances for Bacula."""

__version__ = "0.1.0"
