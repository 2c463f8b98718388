"""Through real Bacula: a job the backend fails shows the backend's reason as its first Fatal
line, once, followed only by the FD's own "PTCOMM cannot get packet header from backend."
(which the 15.0.3 FD always logs after an A: ptcomm.cpp handle_read_header; the reason says
the PTCOMM line is its consequence; docs/TROUBLESHOOTING.md, "One error, then PTCOMM").

One stack and one simulator for every failure point: before the first file (a bad
parameter, a credentials file that does not exist), mid-backup (AWS refuses a block read),
at the commit (AWS refuses the base tag), in a restore (the target is a file), in an
estimate and in a listing (`.ls`). The same stack then shows bconsole's Plugin Options
list, which gives every restore option's default (plugin_items_dump[] of ec2-fd.c).
"""

from __future__ import annotations

import importlib.util
import os
import re
from pathlib import Path
from typing import Any

from bacula_ec2.backend import PTCOMM_NOTE
from bacula_ec2.params import restore_option_items

from .common import BLOCK, plugin_line

PTCOMM = "ec2: PTCOMM cannot get packet header from backend."
REPO = Path(__file__).resolve().parents[2]


def _option_default() -> Any:
    spec = importlib.util.spec_from_file_location(
        "gen_params_header", REPO / "packaging" / "gen_params_header.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.option_default


def _fatal_lines(log: str) -> list[str]:
    """The text after "Fatal error: " of every Fatal line of a `list joblog` table."""
    out = []
    for line in log.splitlines():
        if "Fatal error:" in line:
            out.append(line.split("Fatal error:", 1)[1].rstrip(" |\\").strip())
    return out


def _assert_one_error(log: str, reason: str) -> None:
    fatal = _fatal_lines(log)
    assert len(fatal) == 2, log
    ours, theirs = fatal
    assert ours.startswith("ec2: ") and reason in ours and ours.endswith(PTCOMM_NOTE), log
    assert theirs == PTCOMM, log
    assert "PTCOMM" not in ours.split(PTCOMM_NOTE)[0], log


def _assert_one_console_error(out: str, reason: str) -> None:
    """Estimate and listing answer in bconsole: the FD's messages are plain `ec2: ...` lines."""
    lines = [line.strip() for line in out.splitlines() if line.startswith("ec2: ")]
    ours = [n for n, line in enumerate(lines) if reason in line]
    theirs = [n for n, line in enumerate(lines) if "PTCOMM" in line and PTCOMM_NOTE not in line]
    assert len(ours) == 1 and lines[ours[0]].endswith(PTCOMM_NOTE), out
    assert len(theirs) == 1 and lines[theirs[0]] == PTCOMM and ours[0] < theirs[0], out


def _assert_plugin_options_show_defaults(stack: Any, jobid: int) -> None:
    """bconsole `restore` -> mod -> Plugin Options: "Option  Current Value  Default Value";
    the list is left with `no`, and the restore is not run."""
    out = stack.bconsole(
        f"restore jobid={jobid} client={stack.client} all done where=/", "mod", "13", "no", "no"
    )
    assert "Default Value" in out, out
    default_of = _option_default()
    for name, _kind, _prompt, given in restore_option_items():
        match = re.search(rf"^{name}:\s+\*None\*\s+\((.+)\)\s*$", out, re.M)
        assert match, f"{name}: no default shown\n{out}"
        assert match.group(1) == default_of(name, given), out
    assert "Job queued" not in out, out


def test_a_failing_job_shows_its_reason_once_first(sim, bacula_stack, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    inst = sim.client.create_instance("one-err", volumes=[{"size_gib": 1, "device": "/dev/sda1"}])
    sim.client.write_volume(inst["volume_ids"][0], 0, os.urandom(2 * BLOCK))
    good = plugin_line(sim.endpoint, "instances=one-err")
    stack = bacula_stack([plugin_line(sim.endpoint, "instances=one-err", "bogus=1")])

    def fileset(line: str) -> None:
        # The Director re-reads its FileSet (same ports and passwords, other Plugin line).
        stack.plugin_commands = [line]
        stack._write_configs()
        stack.bconsole("reload")

    def failed_job() -> str:
        jobid = stack.run_job(level="Full", timeout=120)
        log = stack.job_log(jobid)
        assert stack.job_status(jobid) in ("f", "E"), log
        return log

    # Before the first file: a parameter the product does not know.
    _assert_one_error(failed_job(), "unknown parameter 'bogus'")
    # ... and in an estimate of that FileSet.
    _assert_one_console_error(stack.estimate(), "unknown parameter 'bogus'")
    # In a listing.
    out = stack.bconsole(f'.ls client={stack.client} plugin="{plugin_line(sim.endpoint, "bogus=2")}" path=/')
    _assert_one_console_error(out, "unknown parameter 'bogus'")

    # Before the first file: credentials from a file that does not exist (no keys given).
    missing = tmp_path / "no-such-credentials"
    no_keys = re.sub(r" (access_key|secret_key)=\S+", "", good)
    fileset(f"{no_keys} credentials_file={missing}")
    _assert_one_error(failed_job(), str(missing))

    # Mid-backup: AWS refuses the block reads (every block token has expired).
    fileset(good)
    sim.client.set_options(block_token_ttl=0.000001)
    _assert_one_error(failed_job(), "GetSnapshotBlock")
    sim.client.set_options(block_token_ttl=604800)

    # At the commit: AWS refuses the tag that makes the snapshots bases.
    sim.client.set_options(deny_tags=["bacula-ec2:state=base"])
    _assert_one_error(failed_job(), "could not be committed")
    sim.client.set_options(deny_tags=[])

    # In a restore: the target is a regular file.
    ok = stack.run_job(level="Full", timeout=120)
    assert stack.job_status(ok) == "T", stack.job_log(ok)
    _assert_plugin_options_show_defaults(stack, ok)
    target = tmp_path / "a-file"
    target.write_text("not a directory")
    rjobid, status = stack.restore(ok, where=target)
    log = stack.job_log(rjobid)
    assert status in ("f", "E"), log
    _assert_one_error(log, f"cannot restore into {target}")
    assert target.read_text() == "not a directory"
