"""`ec2-backend --help` and `--version` (a person at a shell) print something useful and exit
0; with no argument it is a protocol backend (the FD's way of starting it)."""

from __future__ import annotations

import subprocess
import sys

from bacula_ec2 import __version__

BACKEND = [sys.executable, "-m", "bacula_ec2.backend"]


def _run(*args: str, stdin: bytes = b"") -> subprocess.CompletedProcess[bytes]:
    return subprocess.run([*BACKEND, *args], input=stdin, capture_output=True, timeout=60, check=False)


def test_help_says_what_it_is_and_where_to_look() -> None:
    for flag in ("--help", "-h"):
        done = _run(flag)
        text = done.stdout.decode()
        assert done.returncode == 0 and not done.stderr, done
        assert text.startswith(f"ec2-backend {__version__}: ")
        for needed in (
            "File Daemon starts it",
            "--version",
            "bacula-ec2.log",
            "/usr/share/doc/bacula-ec2-plugin/",
        ):
            assert needed in text, (needed, text)


def test_version_and_no_argument() -> None:
    done = _run("--version")
    assert done.returncode == 0 and done.stdout.decode() == f"ec2-backend {__version__}\n"
    # No argument: the protocol. EOF at once is the FD going away: nothing printed, exit 0.
    done = _run()
    assert done.returncode == 0 and done.stdout == b"" and done.stderr == b"", done
    # A wrong Hello is answered with an A packet on stdout (the protocol, not a usage text).
    hello = b"Hello other 9\n"
    done = _run(stdin=b"C%06d\n" % len(hello) + hello)
    assert done.returncode == 0 and done.stdout.startswith(b"A") and b"usage" not in done.stdout.lower(), done
