"""Entry point of the frozen bec2 (packaging/debian/bacula-ec2.spec)."""

import sys

from bacula_ec2.cli import main

sys.exit(main())
