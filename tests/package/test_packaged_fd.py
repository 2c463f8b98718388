"""Debian 13's own bacula-fd 15.0.3-3 (from a debootstrapped trixie root, run chrooted in a
private mount namespace) driven by the project's Director and SD over loopback.

First without the plugin (a plain FileSet: proves the harness drives the packaged FD at
all), then with the project's .deb installed in the root by apt: Full + Incremental of a
simulated instance and local restores, compared byte for byte.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
import time
from pathlib import Path

from devkit.helpers import sha256_file

from ..e2e.common import BLOCK, SECRET, end_time, plugin_line, restore_before
from .conftest import FD, Release, TrixieRoot, apt_install, full_restored_exactly, project_version


def _fd_root_of(stack) -> str:  # type: ignore[no-untyped-def]
    """Where the running FD's / is (its /proc/PID/root): the root, not this machine's /."""
    return os.readlink(f"/proc/{stack._procs['fd'].pid}/root")


def test_root_has_debians_bacula_fd(trixie_root: TrixieRoot) -> None:
    assert trixie_root.info["bacula_fd_deb"] == "15.0.3-3"
    out = trixie_root.run("/usr/bin/dpkg-query", "-W", "-f=${Version} ${Status}", "bacula-fd")
    assert out.strip() == "15.0.3-3 install ok installed", out
    usage = trixie_root.run(FD, "-?", check=False)
    assert re.search(r"Version: 15\.0\.3\b", usage), usage
    assert trixie_root.info["plugin_dir"] == "/usr/lib/bacula"
    assert (trixie_root.path / "usr/lib/bacula/bpipe-fd.so").is_file()


def test_packaged_fd_backs_up_and_restores_a_directory_of_the_root(
    trixie_root: TrixieRoot, root_stack, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    data = trixie_root.path / "srv" / "p2-data"
    assert not Path("/srv/p2-data").exists(), "the source must exist only inside the root"
    (data / "sub" / "deeper").mkdir(parents=True)
    files = {
        "empty": b"",
        "small.txt": b"hello from the trixie root\n",
        "sub/random.bin": os.urandom(3 << 20),
        "sub/deeper/odd-size.bin": os.urandom(123457),
    }
    for name, content in files.items():
        (data / name).write_bytes(content)

    stack = root_stack(trixie_root, [], fileset_files=["/srv/p2-data"])
    assert _fd_root_of(stack) == str(trixie_root.path)
    status = stack.status_client()
    assert "Version: 15.0.3" in status and "bpipe" in status, status

    jobid = stack.run_job(level="Full", timeout=120)
    log = stack.job_log(jobid)
    assert stack.job_status(jobid) == "T" and "Backup OK" in log, log + stack.logs()
    listed = set(stack.list_files(jobid))
    assert {f"/srv/p2-data/{name}" for name in files} <= listed, listed

    where = tmp_path / "restored"
    rjobid, rstatus = stack.restore(jobid, where=where)
    assert rstatus == "T", stack.job_log(rjobid) + stack.logs()
    restored = {
        str(p.relative_to(where / "srv" / "p2-data")): p.read_bytes()
        for p in (where / "srv" / "p2-data").rglob("*")
        if p.is_file()
    }
    assert {k: hashlib.sha256(v).hexdigest() for k, v in restored.items()} == {
        k: hashlib.sha256(v).hexdigest() for k, v in files.items()
    }


def test_packaged_plugin_full_incremental_and_local_restores(
    packaged_root: TrixieRoot, root_stack, sim, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    root = packaged_root
    owned = root.run("/usr/bin/dpkg-query", "-L", "bacula-ec2-plugin").split()
    assert f"{root.info['plugin_dir']}/ec2-fd.so" in owned and "/usr/sbin/ec2-backend" in owned, owned
    # The root has no Python at all (minbase + bacula-fd), and the package brings none in:
    # the backend below runs on its own runtime.
    assert not list((root.path / "usr/bin").glob("python*")), "a Python in the root"
    assert root.run("/usr/sbin/ec2-backend", "--version").strip() == f"ec2-backend {project_version()}"
    assert root.run("/usr/bin/bec2", "--version").strip() == f"bec2 {project_version()}"

    inst = sim.client.create_instance("pkg-web", volumes=[{"size_gib": 1, "device": "/dev/sda1"}])
    iid, vid = inst["instance_id"], inst["volume_ids"][0]
    sim.client.write_volume(vid, 0, os.urandom(3 * BLOCK))
    sim.client.write_volume(vid, 300 * BLOCK + 5, os.urandom(5000))

    stack = root_stack(root, [plugin_line(sim.endpoint, "instances=pkg-web")])
    assert _fd_root_of(stack) == str(root.path)
    status = stack.status_client()
    assert re.search(rf"\bec2\({re.escape(project_version())}\)", status), status

    points = []
    for level, writes in (
        ("Full", []),
        ("Incremental", [(BLOCK + 17, b"changed for the incremental"), (800 * BLOCK, os.urandom(BLOCK))]),
    ):
        for offset, payload in writes:
            sim.client.write_volume(vid, offset, payload)
        jobid = stack.run_job(level=level, timeout=180)
        log = stack.job_log(jobid)
        assert stack.job_status(jobid) == "T", log + stack.logs()
        assert "Backup OK" in log and "with warnings" not in log, log
        points.append((level, jobid, end_time(stack, jobid), sim.client.volume_sha256(vid)))
        time.sleep(1.1)  # Bacula's times have a one-second resolution
    assert points[0][3] != points[1][3]
    assert f"/@amazon-ec2/{iid}/{vid}-sda1-1G.I{points[1][1]}.bimg" in set(stack.list_files(points[1][1]))

    logs = []
    for level, _jobid, when, want in points:
        where = tmp_path / f"restore-{level}"
        rjobid, rstatus = restore_before(stack, when, where)
        rlog = stack.job_log(rjobid)
        logs.append(rlog)
        assert rstatus == "T" and "Restore OK" in rlog, rlog + stack.logs()
        image = where / "@amazon-ec2" / iid / f"{vid}-sda1-1G.img"
        assert image.stat().st_size == 1 << 30
        assert sha256_file(image) == want, f"{level}: {image} differs from the volume at backup time"

    fd_log = stack.working["fd"] / "bacula-ec2.log"
    assert fd_log.exists(), "the packaged backend logs into the FD's working directory"
    for text in (*logs, fd_log.read_text(), stack.messages()):
        assert SECRET not in text


def test_packaged_so_refuses_a_backend_of_another_release_then_the_upgrade_runs(
    packaged_root: TrixieRoot, next_release: Release, root_stack, sim, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    """The package's ec2-fd.so (release N) with the backend of release N+1 put over it by
    hand, as on a host where only one half was upgraded: the job fails at its start with one
    message naming both releases, and takes no snapshot. Then `apt install` of N+1 (a real
    upgrade, the FD restarted as docs/INSTALL.md says) and the same job runs and restores."""
    root, version = packaged_root, project_version()
    unpacked = tmp_path / "n+1"
    subprocess.run(["dpkg-deb", "-x", str(next_release.deb), str(unpacked)], check=True)
    frozen = root.path / "usr/lib/bacula-ec2"
    shutil.rmtree(frozen)
    shutil.copytree(unpacked / "usr/lib/bacula-ec2", frozen, symlinks=True)
    assert root.run("/usr/sbin/ec2-backend", "--version").strip() == f"ec2-backend {next_release.version}"

    inst = sim.client.create_instance("pkg-next", volumes=[{"size_gib": 1, "device": "/dev/sda1"}])
    iid, vid = inst["instance_id"], inst["volume_ids"][0]
    sim.client.write_volume(vid, 7 * BLOCK, os.urandom(2 * BLOCK + 99))
    line = plugin_line(sim.endpoint, "instances=pkg-next")
    stack = root_stack(root, [line])
    jobid = stack.run_job(level="Full", timeout=120)
    log = stack.job_log(jobid)
    assert stack.job_status(jobid) == "f", log
    want = f"the FD plugin ec2 is release {version}, this backend is release {next_release.version}"
    assert want in log and "bacula-ec2-plugin package" in log, log
    assert not [s for s in sim.client.snapshots() if s.get("volume_id") == vid], "a snapshot was taken"
    stack.stop()

    apt_install(root, next_release.deb)  # dpkg replaces the hand-copied tree with its own
    stack = root_stack(root, [line])
    full_restored_exactly(
        stack, sim, next_release.version, tmp_path / "restored", iid, vid, f"{vid}-sda1-1G.img"
    )


def test_packaged_bec2_restores_single_files_of_ext4_xfs_and_vfat(
    packaged_root: TrixieRoot, tmp_path: Path
) -> None:
    """The frozen bec2 of the package (its own Python, dissect.* bundled by PyInstaller) reads
    guest filesystems made by their own mkfs tools: a folder with a GPT disk (EFI vfat + ext4)
    and an MBR XFS disk, `ls-files` and `restore-files` run inside the root."""
    import datetime as dt

    from bacula_ec2.formats.blockimage import BLOCK_SIZE
    from devkit import guestdisks as gd

    t0 = dt.datetime(2026, 11, 20, 10, 0, tzinfo=dt.UTC)
    tree, efi = tmp_path / "tree", tmp_path / "efi"
    gd.make_tree(tree, 1, owners=True)
    gd.make_efi_tree(efi)
    gpt = gd.gpt_disk(tmp_path / "gpt.img", tree, efi)
    xfs = gd.mbr_xfs_disk(tmp_path / "xfs.img", tree)
    folder = tmp_path / "folder"
    for k, (vid, disk) in enumerate((("vol-0gpt000000000009", gpt), ("vol-0xfs000000000009", xfs))):
        when = t0.strftime("%Y-%m-%dT%H:%M:%SZ")
        spec = gd.PartSpec(vid, disk.size, f"snap-0pkg{k}", when, instance_id="i-0pkg0000000000009")
        gd.folder_backup(
            folder, spec, gd.image_blocks(disk.path, BLOCK_SIZE), started=t0.timestamp() + 60 * k
        )
    root = packaged_root
    listed = root.run("/usr/bin/bec2", "--operation=ls-files", f"--output={folder}", "--path=/etc/nginx",
                      bind=tmp_path)  # fmt: skip
    assert "nginx.conf" in listed and "sites-enabled" in listed, listed
    out = tmp_path / "out"
    root.run("/usr/bin/bec2", "--operation=restore-files", f"--output={folder}", f"--local_path={out}",
             "--files=/etc/nginx/**,/EFI/**", bind=tmp_path)  # fmt: skip
    got = sorted(out.rglob("nginx.conf"))
    assert len(got) == 2, got  # from the ext4 and from the XFS partition
    for path in got:
        assert path.read_bytes() == (tree / "etc/nginx/nginx.conf").read_bytes(), path
    assert list(out.rglob("EFI")), sorted(p.name for p in out.rglob("*"))
