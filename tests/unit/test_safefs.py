"""safefs and LocalRestore: nothing is ever written through a link planted in the target."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from bacula_ec2 import naming
from bacula_ec2.jobs import safefs
from bacula_ec2.jobs.restore_local import RestoreFailed

from .restore_local_kit import IID, TWO, VID, feed, files_under, new_restore, sha, volume_doc

VICTIM = b"the victim's own bytes\n"


def victims(tmp_path: Path) -> tuple[Path, Path]:
    outside = tmp_path / "outside"
    outside.mkdir(exist_ok=True)
    victim = outside / "victim"
    victim.write_bytes(VICTIM)
    vdir = outside / "victim-dir"
    vdir.mkdir(exist_ok=True)
    return victim, vdir


def assert_victims_intact(victim: Path, vdir: Path) -> None:
    assert victim.read_bytes() == VICTIM
    assert list(vdir.iterdir()) == []


# ---------------------------------------------------------------------------- primitives


def test_open_target_creates_it_and_refuses_a_link(tmp_path: Path) -> None:
    d = safefs.open_target(str(tmp_path / "a" / "b" / "target"))
    assert (tmp_path / "a" / "b" / "target").is_dir()
    d.close()
    victim, vdir = victims(tmp_path)
    (tmp_path / "link").symlink_to(vdir)
    with pytest.raises(safefs.UnsafePath, match=r"link is a symbolic link"):
        safefs.open_target(str(tmp_path / "link"))
    (tmp_path / "file").write_bytes(b"x")
    with pytest.raises(safefs.UnsafePath, match=r"file exists and is not a directory"):
        safefs.open_target(str(tmp_path / "file"))
    with pytest.raises(safefs.UnsafePath, match="not an absolute path"):
        safefs.open_target("relative/dir")
    # a link among the parents is the administrator's choice: followed
    (tmp_path / "parent-link").symlink_to(tmp_path / "a")
    safefs.open_target(str(tmp_path / "parent-link" / "b" / "target")).close()
    assert_victims_intact(victim, vdir)


def test_subdir_refuses_links_files_and_odd_names(tmp_path: Path) -> None:
    victim, vdir = victims(tmp_path)
    root = safefs.open_target(str(tmp_path / "t"))
    (tmp_path / "t" / "dirlink").symlink_to(vdir)
    (tmp_path / "t" / "dangling").symlink_to(tmp_path / "nowhere")
    (tmp_path / "t" / "plain").write_bytes(b"x")
    for name in ("dirlink", "dangling"):
        with pytest.raises(safefs.UnsafePath, match="symbolic link"):
            root.subdir(name)
    with pytest.raises(safefs.UnsafePath, match="not a directory"):
        root.subdir("plain")
    for odd in ("", ".", "..", "a/b", "a\0b"):
        with pytest.raises(safefs.UnsafePath):
            root.subdir(odd)
    assert not (tmp_path / "nowhere").exists()
    sub = root.subdir("new")
    assert sub is not None and (tmp_path / "t" / "new").is_dir()
    assert root.subdir("missing", create=False) is None
    root.close()
    sub.close()
    assert_victims_intact(victim, vdir)


def test_replace_swaps_links_instead_of_writing_through(tmp_path: Path) -> None:
    victim, vdir = victims(tmp_path)
    root = safefs.open_target(str(tmp_path / "t"))
    (tmp_path / "t" / "sym").symlink_to(victim)
    os.link(victim, tmp_path / "t" / "hard")
    for name in ("sym", "hard"):
        fd, tmp = root.create_temp(name)
        os.write(fd, b"restored")
        os.close(fd)
        root.replace(tmp, root, name)
        p = tmp_path / "t" / name
        assert not p.is_symlink() and p.read_bytes() == b"restored"
    assert sorted(os.listdir(tmp_path / "t")) == ["hard", "sym"]  # no temporary left
    root.close()
    assert_victims_intact(victim, vdir)


def test_create_temp_never_opens_an_existing_name(tmp_path: Path) -> None:
    root = safefs.open_target(str(tmp_path / "t"))
    names = set()
    for _ in range(50):
        fd, tmp = root.create_temp("x.img")
        os.close(fd)
        assert tmp.startswith(".x.img.") and tmp not in names
        names.add(tmp)
    root.close()


def test_link_new_keeps_whatever_exists(tmp_path: Path) -> None:
    victim, vdir = victims(tmp_path)
    root = safefs.open_target(str(tmp_path / "t"))
    (tmp_path / "t" / "sym").symlink_to(victim)
    (tmp_path / "t" / "dangling").symlink_to(tmp_path / "outside" / "created-through-link")
    for name in ("sym", "dangling"):
        fd, tmp = root.create_temp(name)
        os.close(fd)
        assert root.link_new(tmp, root, name) is False
        assert (tmp_path / "t" / name).is_symlink()
    fd, tmp = root.create_temp("free")
    os.write(fd, b"new")
    os.close(fd)
    assert root.link_new(tmp, root, "free") is True
    assert sorted(os.listdir(tmp_path / "t")) == ["dangling", "free", "sym"]
    assert not (tmp_path / "outside" / "created-through-link").exists()
    root.close()
    assert_victims_intact(victim, vdir)


# ---------------------------------------------------------------------------- LocalRestore

IMAGE = f"{VID}-sda1-1G.img"
VJSON = f"{VID}-sda1-1G.json"


def restore_files() -> list[tuple[str, bytes]]:
    full, inc = TWO.parts
    return [
        (naming.instance_dir(IID), b""),
        (naming.instance_json(IID), b'{"instance_id": "i-0aaa"}'),
        (naming.volume_json(IID, VID, "sda1", 1), volume_doc(inc)),
        (full.name, full.data),
        (inc.name, inc.data),
    ]


@pytest.mark.parametrize("level", ["target", "@amazon-ec2", "instance"])
@pytest.mark.parametrize("replace", ["a", "n"])
def test_a_directory_link_at_any_level_fails_the_restore_and_is_not_followed(
    tmp_path: Path, level: str, replace: str
) -> None:
    victim, vdir = victims(tmp_path)
    target = tmp_path / "target"
    planted = {
        "target": target,
        "@amazon-ec2": target / "@amazon-ec2",
        "instance": target / "@amazon-ec2" / IID,
    }[level]
    planted.parent.mkdir(parents=True, exist_ok=True)
    planted.symlink_to(vdir)
    out = feed(target, restore_files(), replace=replace)
    assert not out.ok and out.final is not None
    assert f"{planted} is a symbolic link" in out.final, out.final
    assert planted.is_symlink()
    assert_victims_intact(victim, vdir)
    assert not [p for p in files_under(target) if not Path(target / p).is_symlink()]


@pytest.mark.parametrize("name", [f"{IID}.json", IMAGE, VJSON])
@pytest.mark.parametrize("link", ["symlink", "hardlink", "dangling", "symlink-to-dir"])
def test_a_file_link_is_replaced_never_written_through(tmp_path: Path, name: str, link: str) -> None:
    victim, vdir = victims(tmp_path)
    target = tmp_path / "target"
    folder = target / "@amazon-ec2" / IID
    folder.mkdir(parents=True)
    dest = folder / name
    if link == "symlink":
        dest.symlink_to(victim)
    elif link == "hardlink":
        os.link(victim, dest)
    elif link == "dangling":
        dest.symlink_to(tmp_path / "outside" / "created-through-link")
    else:
        dest.symlink_to(vdir)
    out = feed(target, restore_files())
    assert out.ok, out.final
    assert not dest.is_symlink() and dest.is_file()
    assert set(files_under(target)) == {f"@amazon-ec2/{IID}/{n}" for n in (f"{IID}.json", IMAGE, VJSON)}
    assert sha((folder / IMAGE).read_bytes()) == sha(TWO.parts[-1].content)
    assert not (tmp_path / "outside" / "created-through-link").exists()
    assert_victims_intact(victim, vdir)


@pytest.mark.parametrize("name", [f"{IID}.json", IMAGE, VJSON])
def test_replace_never_leaves_a_planted_link_alone(tmp_path: Path, name: str) -> None:
    victim, vdir = victims(tmp_path)
    target = tmp_path / "target"
    folder = target / "@amazon-ec2" / IID
    folder.mkdir(parents=True)
    (folder / name).symlink_to(victim)
    out = feed(target, restore_files(), replace="n")
    assert out.ok, out.final
    assert (folder / name).is_symlink()
    assert any(s == "W" and "Replace=never" in t for s, t in out.reporter.lines)
    assert_victims_intact(victim, vdir)


def test_a_directory_where_a_file_goes_fails_naming_it(tmp_path: Path) -> None:
    target = tmp_path / "target"
    (target / "@amazon-ec2" / IID / IMAGE).mkdir(parents=True)
    out = feed(target, restore_files())
    assert not out.ok and out.final is not None and f"{IMAGE} is a directory" in out.final
    assert not [n for n in files_under(target) if n.endswith(".img")]


def test_paths_that_climb_out_are_refused(tmp_path: Path) -> None:
    r, _rec = new_restore(tmp_path / "t")
    for name in (
        "/@amazon-ec2/../../etc.json",
        "/@amazon-ec2/../",
        "/@amazon-ec2/./x.json",
        "/@amazon-ec2/../...json",
    ):
        with pytest.raises(RestoreFailed):
            r.start(name)
    r.close()
    assert not files_under(tmp_path / "t")
    assert sorted(os.listdir(tmp_path / "t")) == ["@amazon-ec2"]
