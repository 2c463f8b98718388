"""A real Bacula 15.0.3 Director + Storage Daemon + File Daemon on 127.0.0.1, for tests.

Only a real bacula-fd proves that the backend speaks the metaplugin protocol, so the
end-to-end tests drive the cached build of ``packaging/build-bacula.sh`` and the plugin
of ``packaging/build-plugin.sh``. Recipe and pitfalls: docs ``bacula-test-stack.md``.

Everything a stack needs lives in its own directory; daemons listen on free loopback
ports and are stopped by PID, so several stacks (and a system Bacula) can coexist.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import re
import secrets
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
import weakref
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import IO, Self

REPO = Path(__file__).resolve().parents[2]
PACKAGING = REPO / "packaging"

#: Environment variable: a shell command line the `ec2-backend` launcher execs instead
#: of ``<this python> -m bacula_ec2.backend`` (for throwaway or fake backends).
BACKEND_CMD_ENV = "BACULA_EC2_BACKEND_CMD"

DIR_NAME = "ec2test-dir"
FD_NAME = "ec2test-fd"
SD_NAME = "ec2test-sd"
STORAGE_NAME = "File1"
FILESET_NAME = "ec2-fs"
BACKUP_JOB = "ec2-backup"
RESTORE_JOB = "ec2-restore"

#: JobStatus letters after which a job will not change any more (catalog Status table).
FINAL_STATUSES = frozenset("TWEefAID")


class BaculaError(RuntimeError):
    """A build, daemon or bconsole step failed; the message carries the relevant log."""


def _run_script(script: str, *args: str) -> str:
    """Run a packaging script; return its last stdout line (the path it prints)."""
    proc = subprocess.run(
        ["bash", str(PACKAGING / script), *args],
        capture_output=True,
        text=True,
        check=False,
    )
    if proc.returncode != 0:
        raise BaculaError(f"{script} failed (exit {proc.returncode}):\n{_tail(proc.stderr + proc.stdout)}")
    lines = proc.stdout.strip().splitlines()
    if not lines:
        raise BaculaError(f"{script} printed nothing:\n{_tail(proc.stderr)}")
    return lines[-1]


def ensure_bacula() -> Path:
    """Build Bacula once (cached) and return its install prefix."""
    return Path(_run_script("build-bacula.sh"))


def ensure_plugin(python: str = sys.executable) -> Path:
    """Build ec2-fd.so once per source/params version (cached) and return its path."""
    return Path(_run_script("build-plugin.sh", "--python", python))


@dataclass(frozen=True)
class BaculaBuild:
    """The cached Bacula install prefix and the matching ec2-fd.so."""

    prefix: Path
    plugin_so: Path

    @property
    def params_header(self) -> Path:
        """The generated ec2-fd-params.h the .so was compiled with (kept beside it)."""
        return self.plugin_so.parent / "ec2-fd-params.h"


def ensure_build() -> BaculaBuild:
    """ensure_bacula() + ensure_plugin()."""
    return BaculaBuild(ensure_bacula(), ensure_plugin())


def _tail(text: str, lines: int = 40) -> str:
    return "\n".join(text.splitlines()[-lines:])


def _read_tail(path: Path, lines: int = 40) -> str:
    try:
        return _tail(path.read_text(errors="replace"), lines)
    except OSError:
        return f"(no {path})"


def _free_ports(count: int) -> list[int]:
    """Ask the kernel for distinct free loopback ports (held together so they differ)."""
    socks = []
    try:
        for _ in range(count):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.bind(("127.0.0.1", 0))
            socks.append(sock)
        return [s.getsockname()[1] for s in socks]
    finally:
        for sock in socks:
            sock.close()


def _quote(value: str) -> str:
    """Quote a string for a Bacula resource file (its lexer honours backslash escapes)."""
    if "\n" in value or "\r" in value:
        raise ValueError(f"newline in Bacula config value: {value!r}")
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _console_arg(value: str) -> str:
    """Quote a bconsole command argument value when it contains blanks or quotes."""
    if value and not re.search(r'[\s"]', value):
        return value
    return '"' + value.replace('"', '\\"') + '"'


@dataclass(frozen=True)
class Ports:
    """The three loopback ports of one stack."""

    dir: int
    fd: int
    sd: int


# Daemons still running when the interpreter exits (e.g. a test run interrupted
# between start and stop) are stopped here rather than left behind.
_LIVE_STACKS: weakref.WeakSet[BaculaStack] = weakref.WeakSet()


@atexit.register
def _stop_leftover_stacks() -> None:
    for stack in list(_LIVE_STACKS):
        stack.stop()


class BaculaStack:
    """Director, SD and FD (+ configs, SQLite catalog) under one directory.

    The FD runs from a private copy of bacula-fd, because the metaplugin looks for
    ``ec2-backend`` next to ``realpath(argv[0])`` of the FD; a symlink would resolve
    back into the shared cache.
    """

    def __init__(
        self,
        workdir: Path,
        plugin_commands: Sequence[str],
        *,
        prefix: Path | None = None,
        plugin_so: Path | None = None,
        debug_level: int = 0,
        backend_cmd: str | None = None,
        restore_where: Path | None = None,
        accurate: bool = False,
        fd_env: Mapping[str, str] | None = None,
        start_timeout: float = 15.0,
        fileset_files: Sequence[str] = (),
        fd_command: Sequence[str] | None = None,
        fd_plugin_dir: str | None = None,
        fd_network_buffer: int | None = None,
        fd_comm_compression: bool | None = None,
        fd_tls_psk: bool | None = None,
    ) -> None:
        """Describe a stack; nothing is written or started before ``start()``.

        ``backend_cmd`` (default: $BACULA_EC2_BACKEND_CMD) replaces the real backend in
        the launcher. ``fd_env`` is added to the FD's (and so the backend's) environment.
        ``fileset_files`` adds ``File =`` lines to the FileSet (then ``plugin_commands`` may
        be empty). ``fd_command`` is the argv that runs some other bacula-fd (e.g. one in a
        chroot, through a wrapper; the harness appends ``-t``/``-f -c CONF ...``): then no
        private FD copy, launcher or plugin is installed, and ``fd_plugin_dir`` (default:
        the stack's own plugins/) is that FD's ``Plugin Directory``. Paths in the configs
        are this machine's, so such a FD must see the stack directory at the same path.
        ``fd_network_buffer`` sets the FD's ``Maximum Network Buffer Size`` (the size of its
        data records and of its reads from the backend's pipe; Bacula's default: 65536),
        ``fd_comm_compression`` its ``CommCompression`` (LZ4 of every message to the SD;
        Bacula's default: yes), ``fd_tls_psk`` its ``TLS PSK Enable`` (TLS with the
        pre-shared key on its connections, FD->SD data included; Bacula 15's default: yes).
        """
        if not plugin_commands and not fileset_files:
            raise ValueError("a FileSet needs at least one plugin command or file")
        self.workdir = Path(workdir).resolve()
        self.plugin_commands = list(plugin_commands)
        self.prefix = prefix
        self.plugin_so = plugin_so
        self.debug_level = debug_level
        self.backend_cmd = backend_cmd or os.environ.get(BACKEND_CMD_ENV) or None
        self.accurate = accurate
        self.fd_env = dict(fd_env or {})
        self.start_timeout = start_timeout
        self.fileset_files = list(fileset_files)
        self.fd_command = list(fd_command) if fd_command else None
        self.fd_plugin_dir = fd_plugin_dir
        self.fd_network_buffer = fd_network_buffer
        self.fd_comm_compression = fd_comm_compression
        self.fd_tls_psk = fd_tls_psk

        w = self.workdir
        self.etc = w / "etc"
        self.sbin = w / "sbin"
        self.plugin_dir = w / "plugins"
        self.storage_dir = w / "storage"
        self.log_dir = w / "log"
        self.restore_dir = Path(restore_where) if restore_where else w / "restore"
        self.working = {d: w / "working" / d for d in ("dir", "sd", "fd")}
        self.ports = Ports(0, 0, 0)
        self.client = FD_NAME
        self.fileset = FILESET_NAME
        self._passwords = {d: secrets.token_hex(16) for d in ("dir", "sd", "fd")}
        self._procs: dict[str, subprocess.Popen[bytes]] = {}
        self._logs: list[IO[bytes]] = []

    # ----------------------------------------------------------------- lifecycle

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    @property
    def bconsole_conf(self) -> Path:
        return self.etc / "bconsole.conf"

    def _sbin(self, name: str) -> Path:
        assert self.prefix is not None
        return self.prefix / "sbin" / name

    def start(self) -> Self:
        """Write everything, check the configs with ``-t``, start the daemons, wait for them."""
        if self.prefix is None:
            self.prefix = ensure_bacula()
        if self.plugin_so is None and self.fd_command is None:
            self.plugin_so = ensure_plugin()
        self.ports = Ports(*_free_ports(3))
        for path in (
            self.etc,
            self.sbin,
            self.plugin_dir,
            self.storage_dir,
            self.log_dir,
            self.restore_dir,
            *self.working.values(),
        ):
            path.mkdir(parents=True, exist_ok=True)
        if self.fd_command is None:
            self._install_fd()
        self._create_catalog()
        self._write_configs()

        daemons = {
            "dir": ([str(self._sbin("bacula-dir"))], self.etc / "bacula-dir.conf"),
            "sd": ([str(self._sbin("bacula-sd"))], self.etc / "bacula-sd.conf"),
            "fd": (self.fd_command or [str(self.sbin / "bacula-fd")], self.etc / "bacula-fd.conf"),
        }
        for exe, conf in daemons.values():
            self._check(exe, conf)
        _LIVE_STACKS.add(self)
        try:
            for name in ("sd", "fd", "dir"):
                exe, conf = daemons[name]
                self._spawn(name, exe, conf)
            for name, port in (("sd", self.ports.sd), ("fd", self.ports.fd), ("dir", self.ports.dir)):
                self._wait_port(name, port)
        except BaseException:
            self.stop()
            raise
        return self

    def pid(self, daemon: str) -> int:
        """The process id of a running daemon of this stack: "dir", "sd" or "fd"."""
        proc = self._procs.get(daemon)
        if proc is None or proc.poll() is not None:
            raise BaculaError(f"bacula-{daemon} of {self.workdir} is not running")
        return proc.pid

    def stop(self, timeout: float = 5.0) -> None:
        """Stop our own daemons by PID: SIGTERM, then SIGKILL after ``timeout``."""
        for proc in self._procs.values():
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + timeout
        for proc in self._procs.values():
            try:
                proc.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
                proc.wait()
        self._procs.clear()
        for log in self._logs:
            log.close()
        self._logs.clear()
        _LIVE_STACKS.discard(self)

    def _install_fd(self) -> None:
        """Private bacula-fd copy + ec2-backend launcher beside it + plugin dir."""
        fd = self.sbin / "bacula-fd"
        shutil.copy2(self._sbin("bacula-fd"), fd)
        assert self.plugin_so is not None
        shutil.copy2(self.plugin_so, self.plugin_dir / "ec2-fd.so")
        target = self.backend_cmd or f"{shlex.quote(sys.executable)} -m bacula_ec2.backend"
        launcher = self.sbin / "ec2-backend"
        launcher.write_text(
            "#!/bin/sh\n"
            "# Written by devkit/harness/bacula.py: the FD runs this as its ec2 backend.\n"
            f'exec {target} "$@"\n'
        )
        launcher.chmod(0o755)

    def _create_catalog(self) -> None:
        """Create the SQLite catalog with Bacula's own scripts, in our working dir.

        The scripts ``cd`` into the build's working directory; run copies that ``cd``
        into this stack's Director working directory instead.
        """
        assert self.prefix is not None
        built_working = f"cd {self.prefix / 'working'}"
        scripts_dir = self.workdir / "catalog-scripts"
        scripts_dir.mkdir(exist_ok=True)
        log = self.log_dir / "catalog.log"
        for name in ("create_sqlite3_database", "make_sqlite3_tables", "grant_sqlite3_privileges"):
            text = (self.prefix / "scripts" / name).read_text()
            text = text.replace(built_working, f"cd {shlex.quote(str(self.working['dir']))}")
            script = scripts_dir / name
            script.write_text(text)
            with log.open("ab") as out:
                proc = subprocess.run(["sh", str(script)], stdout=out, stderr=out, check=False)
            if proc.returncode != 0:
                raise BaculaError(f"catalog script {name} failed:\n{_read_tail(log)}")
        if not (self.working["dir"] / "bacula.db").exists():
            raise BaculaError(f"no catalog created:\n{_read_tail(log)}")

    def _check(self, exe: Sequence[str], conf: Path) -> None:
        proc = subprocess.run(
            [*exe, "-t", "-c", str(conf)],
            capture_output=True,
            text=True,
            check=False,
            timeout=60,
        )
        if proc.returncode != 0:
            raise BaculaError(f"{shlex.join(exe)} -t -c {conf} failed:\n{proc.stdout}{proc.stderr}")

    def _spawn(self, name: str, exe: Sequence[str], conf: Path) -> None:
        args = [*exe, "-f", "-c", str(conf)]
        if name == "fd":
            args += ["-d", str(self.debug_level)]
            if self.debug_level > 0:
                args.append("-dt")  # timestamps, to line up with the backend's own log
        log = (self.log_dir / f"bacula-{name}.out").open("ab")
        self._logs.append(log)
        env = {**os.environ, **self.fd_env} if name == "fd" else None
        self._procs[name] = subprocess.Popen(
            args,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=self.workdir,
        )

    def _wait_port(self, name: str, port: int) -> None:
        deadline = time.monotonic() + self.start_timeout
        proc = self._procs[name]
        while True:
            if proc.poll() is not None:
                raise BaculaError(
                    f"bacula-{name} exited with {proc.returncode}:\n"
                    f"{_read_tail(self.log_dir / f'bacula-{name}.out')}"
                )
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
                sock.settimeout(0.5)
                if sock.connect_ex(("127.0.0.1", port)) == 0:
                    return
            if time.monotonic() > deadline:
                raise BaculaError(f"bacula-{name} does not listen on 127.0.0.1:{port}")
            time.sleep(0.05)

    # ----------------------------------------------------------------- configs

    def _write_configs(self) -> None:
        assert self.prefix is not None
        p, pw, wd = self.ports, self._passwords, self.working
        plugins = "\n".join(
            [f"    Plugin = {_quote(c)}" for c in self.plugin_commands]
            + [f"    File = {_quote(f)}" for f in self.fileset_files]
        )
        accurate = "yes" if self.accurate else "no"
        netbuf = ""
        if self.fd_network_buffer:
            netbuf = f"  Maximum Network Buffer Size = {int(self.fd_network_buffer)}\n"
        if self.fd_comm_compression is not None:
            netbuf += f"  CommCompression = {'yes' if self.fd_comm_compression else 'no'}\n"
        if self.fd_tls_psk is not None:
            netbuf += f"  TLS PSK Enable = {'yes' if self.fd_tls_psk else 'no'}\n"
        q = _quote
        (self.etc / "bacula-dir.conf").write_text(f"""\
Director {{
  Name = {DIR_NAME}
  DIRport = {p.dir}
  DirAddress = 127.0.0.1
  QueryFile = {q(str(self.prefix / "scripts" / "query.sql"))}
  WorkingDirectory = {q(str(wd["dir"]))}
  PidDirectory = {q(str(wd["dir"]))}
  Maximum Concurrent Jobs = 10
  Password = {q(pw["dir"])}
  Messages = Daemon
}}

Client {{
  Name = {FD_NAME}
  Address = 127.0.0.1
  FDPort = {p.fd}
  Catalog = MyCatalog
  Password = {q(pw["fd"])}
  AutoPrune = no
}}

Storage {{
  Name = {STORAGE_NAME}
  Address = 127.0.0.1
  SDPort = {p.sd}
  Password = {q(pw["sd"])}
  Device = FileStorage
  Media Type = File
}}

Catalog {{
  Name = MyCatalog
  dbname = "bacula"; dbuser = "bacula"; dbpassword = ""
}}

Pool {{
  Name = File
  Pool Type = Backup
  Label Format = "Vol-"
  Recycle = yes
  AutoPrune = yes
  Volume Retention = 365 days
  Maximum Volume Bytes = 5G
  Maximum Volumes = 100
}}

FileSet {{
  Name = {q(FILESET_NAME)}
  Include {{
{plugins}
  }}
}}

Job {{
  Name = {q(BACKUP_JOB)}
  Type = Backup
  Level = Full
  Client = {FD_NAME}
  FileSet = {q(FILESET_NAME)}
  Storage = {STORAGE_NAME}
  Pool = File
  Messages = Standard
  Accurate = {accurate}
  Write Bootstrap = {q(str(wd["dir"] / "%c.bsr"))}
}}

Job {{
  Name = {q(RESTORE_JOB)}
  Type = Restore
  Client = {FD_NAME}
  FileSet = {q(FILESET_NAME)}
  Storage = {STORAGE_NAME}
  Pool = File
  Messages = Standard
  Where = {q(str(self.restore_dir))}
}}

Messages {{
  Name = Standard
  console = all, !skipped, !saved
  append = {q(str(self.log_dir / "bacula.log"))} = all, !skipped
  catalog = all
}}

Messages {{
  Name = Daemon
  console = all, !skipped, !saved
  append = {q(str(self.log_dir / "bacula.log"))} = all, !skipped
}}
""")
        (self.etc / "bacula-sd.conf").write_text(f"""\
Storage {{
  Name = {SD_NAME}
  SDPort = {p.sd}
  SDAddress = 127.0.0.1
  WorkingDirectory = {q(str(wd["sd"]))}
  Pid Directory = {q(str(wd["sd"]))}
  Maximum Concurrent Jobs = 20
}}

Director {{
  Name = {DIR_NAME}
  Password = {q(pw["sd"])}
}}

Device {{
  Name = FileStorage
  Media Type = File
  Archive Device = {q(str(self.storage_dir))}
  LabelMedia = yes
  Random Access = yes
  AutomaticMount = yes
  RemovableMedia = no
  AlwaysOpen = no
  Maximum Concurrent Jobs = 5
}}

Messages {{
  Name = Standard
  director = {DIR_NAME} = all
}}
""")
        (self.etc / "bacula-fd.conf").write_text(f"""\
FileDaemon {{
  Name = {FD_NAME}
  FDport = {p.fd}
  FDAddress = 127.0.0.1
  WorkingDirectory = {q(str(wd["fd"]))}
  Pid Directory = {q(str(wd["fd"]))}
  Plugin Directory = {q(self.fd_plugin_dir or str(self.plugin_dir))}
  Maximum Concurrent Jobs = 20
{netbuf}}}

Director {{
  Name = {DIR_NAME}
  Password = {q(pw["fd"])}
}}

Messages {{
  Name = Standard
  director = {DIR_NAME} = all, !skipped, !restored
}}
""")
        self.bconsole_conf.write_text(f"""\
Director {{
  Name = {DIR_NAME}
  DIRport = {p.dir}
  Address = 127.0.0.1
  Password = {q(pw["dir"])}
}}
""")

    # ----------------------------------------------------------------- bconsole

    def bconsole(self, *commands: str, timeout: float = 60.0) -> str:
        """Run bconsole commands non-interactively and return the whole output."""
        if not self._procs:
            raise BaculaError("stack is not running")
        script = "".join(f"{c}\n" for c in commands) + "quit\n"
        try:
            proc = subprocess.run(
                [str(self._sbin("bconsole")), "-n", "-c", str(self.bconsole_conf)],
                input=script,
                capture_output=True,
                text=True,
                timeout=timeout,
                errors="replace",
                check=False,
            )
        except subprocess.TimeoutExpired as exc:
            raise BaculaError(f"bconsole timed out after {timeout}s on {commands!r}") from exc
        if proc.returncode != 0:
            raise BaculaError(
                f"bconsole failed ({proc.returncode}) on {commands!r}:\n{proc.stdout}{proc.stderr}"
            )
        return proc.stdout

    def status_client(self) -> str:
        return self.bconsole(f"status client={self.client}")

    def run_job(
        self,
        level: str = "Full",
        job: str = BACKUP_JOB,
        wait: bool = True,
        timeout: float = 120.0,
    ) -> int:
        """Queue a job, return its JobId; with ``wait``, return once it has finished."""
        out = self.bconsole(f"run job={_console_arg(job)} level={level} yes")
        jobid = _queued_jobid(out)
        if wait:
            self.wait_job(jobid, timeout)
        return jobid

    def job_status(self, jobid: int) -> str | None:
        """The catalog JobStatus letter, or None while the job has no catalog record."""
        out = self.bconsole(f"llist jobid={jobid}")
        match = re.search(r"^\s*jobstatus:\s*(\S)", out, re.IGNORECASE | re.MULTILINE)
        return match.group(1) if match else None

    def wait_job(self, jobid: int, timeout: float = 120.0) -> str:
        """Poll the catalog until the job reaches a final status; return the letter."""
        deadline = time.monotonic() + timeout
        delay = 0.1
        while True:
            status = self.job_status(jobid)
            if status is not None and status in FINAL_STATUSES:
                return status
            if time.monotonic() > deadline:
                raise BaculaError(
                    f"job {jobid} still in status {status!r} after {timeout}s\n"
                    f"{self.job_log(jobid)}\n{self.bconsole('messages')}"
                )
            time.sleep(delay)
            delay = min(delay * 1.5, 0.5)

    def job_log(self, jobid: int) -> str:
        return self.bconsole(f"list joblog jobid={jobid}")

    def messages(self) -> str:
        """Pending console messages (also consumes them)."""
        return self.bconsole("messages")

    def list_files(self, jobid: int) -> list[str]:
        """File names recorded in the catalog for a job (``list files``)."""
        out = self.bconsole(f"list files jobid={jobid}")
        return _table_column(out, "filename")

    def estimate(self, listing: bool = True, level: str = "Full", job: str = BACKUP_JOB) -> str:
        cmd = f"estimate job={_console_arg(job)} level={level}"
        return self.bconsole(cmd + (" listing" if listing else ""))

    def restore(self, jobid: int, where: str | Path | None = None, timeout: float = 120.0) -> tuple[int, str]:
        """Restore all files of ``jobid`` (``where``: default of the restore job; "" = empty).

        Returns (restore JobId, final status letter).
        """
        cmd = f"restore jobid={jobid} client={self.client} restorejob={RESTORE_JOB}"
        if where is not None:
            cmd += f" where={_console_arg(str(where))}"
        out = self.bconsole(cmd + " all done yes")
        rjobid = _queued_jobid(out)
        return rjobid, self.wait_job(rjobid, timeout)

    def logs(self) -> str:
        """Tail of the daemon logs, for assertion messages."""
        parts = [f"== {p.name}\n{_read_tail(p)}" for p in sorted(self.log_dir.glob("*"))]
        return "\n".join(parts)


def _queued_jobid(output: str) -> int:
    match = re.search(r"Job queued\. JobId=(\d+)", output)
    if not match:
        raise BaculaError(f"no job was queued:\n{output}")
    return int(match.group(1))


def _table_column(output: str, column: str) -> list[str]:
    """Values of one column of a bconsole ``+---+`` table (cells are `` | ``-separated)."""
    rows = [line for line in output.splitlines() if line.startswith("|")]
    if not rows:
        return []
    header = [cell.strip().lower() for cell in rows[0].strip("|").split("|")]
    if column not in header:
        raise BaculaError(f"no column {column!r} in:\n{output}")
    index = header.index(column)
    values = []
    for row in rows[1:]:
        cells = row[1:-1].split(" | ") if row.endswith("|") else row[1:].split(" | ")
        if len(cells) == len(header):
            values.append(cells[index].strip())
    return values


#: Type of the ``bacula_stack`` fixture: ``make(plugin_commands, **kw)`` -> started stack.
StackFactory = Callable[..., BaculaStack]
