"""docs/INSTALL.md's recipe for bacula.org's `/opt/bacula` layout, run as written.

The two shell blocks of "bacula.org's packages" are taken from the document itself: the
build block runs on this machine (the tarball name and /tmp substituted), the install block
runs as root inside a Debian 13 root (its `systemctl` line left out: no init there). The FD
is a stand-in for bacula.org's: Bacula 15.0.3 from the upstream tarball built by
tests/package/opt-bacula-fd.sh with packaging/opt-bacula/configure-flags and installed
under /opt/bacula in the root. It loads the recipe's ec2-fd.so and runs the backend the
recipe linked into /opt/bacula/bin; a Full of a simulated instance is restored and compared.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

from ..e2e.common import BLOCK, plugin_line
from .conftest import (
    REPO,
    TrixieRoot,
    doc_block,
    find_deb,
    full_restored_exactly,
    project_version,
    without_systemctl,
)

FLAGS = REPO / "packaging" / "opt-bacula" / "configure-flags"
TARBALL = Path(os.environ.get("BACULA_EC2_CACHE", Path.home() / ".cache/bacula-ec2")) / (
    "downloads/bacula_15.0.3.orig.tar.gz"
)
OPT_FD = "/opt/bacula/bin/bacula-fd"


def test_opt_bacula_recipe_as_written(trixie_root: TrixieRoot, root_stack, sim, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    root = trixie_root
    build = doc_block("test_opt_bacula.py, with the tarball")
    install = doc_block("test_opt_bacula.py inside a Debian 13 root")
    assert "packaging/opt-bacula/configure-flags" in build and "/opt/bacula/plugins/" in install

    # 1. The build block, on this machine: /tmp -> a scratch directory, the tarball -> the
    #    upstream 15.0.3 tarball that build-deb.sh fetched (Debian's orig.tar.gz is it).
    scratch = tmp_path / "build"
    scratch.mkdir()
    script = build.replace("bacula-15.0.3.tar.gz", str(TARBALL)).replace("/tmp/", f"{scratch}/")
    script = script.replace("-C /tmp\n", f"-C {scratch}\n")
    proc = subprocess.run(["bash", "-euo", "pipefail", "-c", script], cwd=REPO, capture_output=True,
                          text=True, check=False)  # fmt: skip
    assert proc.returncode == 0, f"{script}\n{proc.stderr}{proc.stdout}"
    so = scratch / "ec2-plugin" / "ec2-fd.so"
    assert so.is_file(), proc.stdout

    # 2. The stand-in for bacula.org's FD, installed under /opt/bacula in the root.
    stage = subprocess.run(["bash", str(Path(__file__).with_name("opt-bacula-fd.sh")), str(FLAGS)],
                           capture_output=True, text=True, check=False)  # fmt: skip
    assert stage.returncode == 0, stage.stderr
    shutil.copytree(Path(stage.stdout.strip().splitlines()[-1]) / "opt", root.path / "opt", symlinks=True,
                    dirs_exist_ok=True)  # fmt: skip
    assert "Version: 15.0.3" in root.run(OPT_FD, "-?", check=False)

    # 3. The install block, as root inside the root, with the files where it expects them.
    deb = find_deb()
    (root.path / "tmp/ec2-plugin").mkdir(parents=True)
    shutil.copy2(so, root.path / "tmp/ec2-plugin/ec2-fd.so")
    shutil.copy2(deb, root.path / "tmp" / deb.name)
    script = without_systemctl(install).replace("bacula-ec2-plugin_0.1.0_amd64.deb", deb.name)
    root.run("/usr/bin/apt-get", "update")
    root.run("/bin/sh", "-ec", script)
    assert (root.path / "opt/bacula/plugins/ec2-fd.so").is_file()
    assert root.run("/opt/bacula/bin/ec2-backend", "--version").strip() == f"ec2-backend {project_version()}"
    assert root.run("/usr/local/bin/bec2", "--version").strip() == f"bec2 {project_version()}"
    assert not (root.path / "usr/lib/bacula/ec2-fd.so").exists(), "Debian's plugin dir must not be used"

    # 4. That FD, its plugin and its backend: a Full, restored and compared.
    inst = sim.client.create_instance("opt-web", volumes=[{"size_gib": 1, "device": "/dev/xvda"}])
    iid, vid = inst["instance_id"], inst["volume_ids"][0]
    sim.client.write_volume(vid, 3 * BLOCK, os.urandom(BLOCK + 4321))
    stack = root_stack(
        root,
        [plugin_line(sim.endpoint, "instances=opt-web")],
        fd_command=root.fd_command(tmp_path, fd=OPT_FD),
        fd_plugin_dir="/opt/bacula/plugins",
    )
    assert os.readlink(f"/proc/{stack._procs['fd'].pid}/exe").endswith(OPT_FD)
    full_restored_exactly(
        stack, sim, project_version(), tmp_path / "restored", iid, vid, f"{vid}-xvda-1G.img"
    )
