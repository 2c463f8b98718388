"""bec2's progress as an admin sees it: in a terminal (a tmux pane, read with capture-pane)
one live line with percent and ETA, then a summary line in its place; without a terminal the
summary lines only; with --quiet nothing.

The simulator delays every GetSnapshotBlock (latency knob) and bec2 reads one block at a time,
so that the backup lasts a few seconds and the live line is seen several times.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from bacula_ec2.cli import main
from devkit.helpers import sha256_file
from devkit.simulator.fixtures import ACCESS_KEY

from .bec2_common import BLOCK, SECRET

BLOCKS = 16  # 8 MiB of data
LATENCY_MS = 150  # per block, one at a time: about 2.4 s of transfer
SUMMARY = r"bec2: (vol-[0-9a-f]+): ([0-9.]+) MiB (backed up|restored) in [0-9.]+ s \(([0-9.]+) MiB/s\)"
LIVE = re.compile(
    r"bec2: vol-[0-9a-f]+ backed up +(\d+)%  [0-9.]+ MiB / 8\.0 MiB  [0-9.]+ MiB/s  ETA \d+:\d\d"
)


def sim_args(sim: Any) -> list[str]:
    return [
        "--region=us-east-1",
        f"--access_key={ACCESS_KEY}",
        f"--secret_key={SECRET}",
        f"--endpoint_url={sim.endpoint}",
    ]


@pytest.fixture
def volume(sim: Any) -> str:
    sim.client.set_options(snapshot_delay=0.05)
    inst = sim.client.create_instance("prog-web", volumes=[{"size_gib": 1, "device": "/dev/sda1"}])
    vid: str = inst["volume_ids"][0]
    for n in range(BLOCKS):
        sim.client.write_volume(vid, n * 7 * BLOCK, os.urandom(BLOCK))
    return vid


def test_a_terminal_shows_the_live_line_then_the_summary(sim: Any, volume: str, tmp_path: Path) -> None:
    tmux = shutil.which("tmux")
    if tmux is None:
        pytest.fail("tmux is missing: packaging/install-deps.sh installs it")
    sim.client.set_options(latency_ms=LATENCY_MS, latency_operations=["GetSnapshotBlock"])
    sock = str(tmp_path / "tmux.sock")
    command = [
        sys.executable,
        "-m",
        "bacula_ec2.cli",
        "--operation=backup",
        f"--output={tmp_path / 'store'}",
        "--instances=prog-web",
        "--concurrent_threads=1",
        *sim_args(sim),
    ]
    shell = f"{shlex.join(command)}; echo EXIT=$?; sleep 60"
    base = [tmux, "-S", sock, "-f", "/dev/null"]
    subprocess.run(
        [*base, "new-session", "-d", "-s", "bec2", "-x", "160", "-y", "30", shell],
        check=True,
        # COLUMNS/LINES of the test's own environment (pytest-xdist's workers have them)
        # would override the pane's 160 columns (shutil.get_terminal_size reads them first).
        env={**{k: v for k, v in os.environ.items() if k not in ("COLUMNS", "LINES")}, "TERM": "xterm"},
    )
    screens: list[str] = []
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            screen = subprocess.run(
                [*base, "capture-pane", "-p", "-t", "bec2"], check=True, capture_output=True, text=True
            ).stdout
            screens.append(screen)
            if "EXIT=" in screen:
                break
            time.sleep(0.1)
    finally:
        subprocess.run([*base, "kill-server"], check=False, capture_output=True)
    final = screens[-1]
    assert "EXIT=0" in final, final
    assert SECRET not in "".join(screens)
    # during the job: the live line, with percent and ETA, growing
    percents = [int(m.group(1)) for s in screens for m in LIVE.finditer(s)]
    assert len(set(percents)) >= 3, screens
    assert percents == sorted(percents) and 0 < percents[-1] <= 100, percents
    # after it: the summary in its place, no live line left
    lines = [line for line in final.splitlines() if line.strip()]
    summaries = [m for line in lines if (m := re.fullmatch(SUMMARY, line.strip()))]
    assert [(m.group(1), m.group(2), m.group(3)) for m in summaries] == [(volume, "8.0", "backed up")], final
    assert not any("ETA" in line for line in lines), final
    [live_row] = {i for s in screens for i, line in enumerate(s.splitlines()) if LIVE.search(line)}
    assert re.fullmatch(SUMMARY, final.splitlines()[live_row].strip()), final  # the same row


def test_without_a_terminal_only_summaries_and_quiet_prints_nothing(
    sim: Any, volume: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    store, restored = tmp_path / "store", tmp_path / "restored"
    common = [f"--output={store}", "--instances=prog-web", *sim_args(sim)]
    assert main(["--operation=backup", *common]) == 0
    out, err = capsys.readouterr()
    assert out == ""
    [m] = [re.fullmatch(SUMMARY, line) for line in err.splitlines()]
    assert m is not None and m.group(1) == volume and m.group(2) == "8.0", err
    assert "\r" not in err and "ETA" not in err

    assert main(["--operation=backup", "--quiet", *common]) == 0
    out, err = capsys.readouterr()
    assert (out, err) == ("", "")

    assert main(["--operation=restore", f"--local_path={restored}", *common]) == 0
    out, err = capsys.readouterr()
    assert out == ""
    [m] = [re.fullmatch(SUMMARY, line) for line in err.splitlines()]
    assert m is not None and m.group(1) == volume and m.group(3) == "restored", err
    [image] = list((restored / "@amazon-ec2").glob("*/*.img"))
    assert sha256_file(image) == sim.client.volume_sha256(volume)

    assert main(["--operation=restore", "--quiet", f"--local_path={tmp_path / 'again'}", *common]) == 0
    assert capsys.readouterr() == ("", "")
