"""Entry point of the frozen ec2-backend (packaging/debian/bacula-ec2.spec).

The FD runs /usr/sbin/ec2-backend with no arguments; that launcher executes the
PyInstaller build of this file, which is ``python -m bacula_ec2.backend``.
"""

import sys

from bacula_ec2.backend import main

sys.exit(main())
