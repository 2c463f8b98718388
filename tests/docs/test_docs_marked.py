"""Every fenced block of README.md and docs/*.md is marked (docs/TESTING.md, "Docs that
run"), the skips are the ones listed here with their reasons, and the blocks that need no
simulator (FileSet lines, JSON policies) are checked here; the extractor itself is tested
on made-up Markdown."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bacula_ec2.params import parse_parameters, restore_option_items
from devkit import doctest_md as md

#: Why blocks do not run here, per document, when no other test runs them: a new reason
#: must be added here. A skip whose reason names the test that runs the block elsewhere
#: (`tests/...py`) needs no entry: that test must exist and read the document.
NOT_RUN = {
    ("README.md", "`make test` is this suite itself; `make demo` sets up its own simulator and Bacula stack"),
    (
        "docs/INSTALL.md",
        "needs the source tree of another Bacula 15.0.x FD; the suite's own build runs this script",
    ),
    ("docs/PERFORMANCE.md", "benchmarks take minutes each and need the whole machine: make bench"),
}
_TEST = re.compile(r"\btests/\S+?\.py\b")


def _name(block: md.Block) -> str:
    return block.where.rsplit(":", 1)[0]


def test_every_block_is_marked() -> None:
    found = md.all_blocks()  # raises, listing every unmarked or badly marked block
    assert {_name(b) for b in found} >= {"README.md", "docs/RESTORE.md"}
    assert {b.kind for b in found} >= {"bec2", "bconsole", "fileset", "json"}


def test_skips_are_listed_or_run_elsewhere() -> None:
    skips = [b for b in md.all_blocks() if b.kind == "skip"]
    listing = "\n".join(f"  {b.where}: {b.reason}" for b in skips)
    elsewhere = [b for b in skips if _TEST.search(b.reason)]
    assert {(_name(b), b.reason) for b in skips if b not in elsewhere} == NOT_RUN, (
        f"the blocks that run nowhere changed; the skips now:\n{listing}"
    )
    for block in elsewhere:
        for named in _TEST.findall(block.reason):
            test = md.REPO / named
            assert test.is_file(), f"{block.where}: the skip names {named}, which does not exist"
            assert block.path.name in test.read_text(), (
                f"{block.where}: {named} does not read {block.path.name}"
            )


def test_fileset_lines_parse() -> None:
    """Every Plugin line of a FileSet snippet is valid for the parameter model."""
    lines = [(b, ln) for b in md.all_blocks() if b.kind == "fileset" for ln in md.plugin_lines(b.text)]
    assert lines
    for block, line in lines:
        try:
            parse_parameters(md.plugin_pairs(line))
        except Exception as exc:
            pytest.fail(f"{block.where}: {line!r}: {exc}")


def test_inline_plugin_lines_parse() -> None:
    """A complete `Plugin = "ec2: ..."` written inline in the text is valid too."""
    lines = [i for p in md.documents() for i in md.inline_commands(p)[1]]
    assert lines
    for inline in lines:
        for line in md.plugin_lines(inline.text):
            try:
                parse_parameters(md.plugin_pairs(line))
            except Exception as exc:
                pytest.fail(f"{inline.where}: {line!r}: {exc}")


def test_inline_commands_are_found() -> None:
    text = (
        "Run `restore jobid=1 client=fd all done yes where=/x` or `restore ... before=`;\n"
        '`.ls client=fd plugin="ec2: region=r" path=/r` `estimate job=<job>` `status dir`\n'
        "<!-- doc-test: bconsole -->\n```\n`restore client=fd all done`\n```\n"
        'As a line: `Plugin = "ec2: region=r instances=a"`, not `Plugin = "ec2: ..."`.\n'
    )
    console, plugins = md.inline_commands(Path("made-up.md"), text)
    assert [(i.line, i.text) for i in console] == [
        (1, "restore jobid=1 client=fd all done yes where=/x"),
        (2, '.ls client=fd plugin="ec2: region=r" path=/r'),
    ]
    assert [(i.line, i.text) for i in plugins] == [(7, 'Plugin = "ec2: region=r instances=a"')]


def test_json_blocks_are_policies() -> None:
    blocks = [b for b in md.all_blocks() if b.kind == "json"]
    assert blocks
    for block in blocks:
        doc = json.loads(block.text)
        assert doc["Version"] == "2012-10-17", block.where
        for statement in doc["Statement"]:
            assert statement["Effect"] in ("Allow", "Deny"), block.where
            actions = statement["Action"] if isinstance(statement["Action"], list) else [statement["Action"]]
            assert all(a.split(":")[0] in ("ec2", "ebs", "kms", "sts") for a in actions), block.where


# ------------------------------------------------------------------ the checker itself


def _blocks(text: str) -> list[md.Block]:
    return md.blocks(Path("made-up.md"), text)


def test_unmarked_and_bad_markers_are_refused() -> None:
    with pytest.raises(md.MarkerError, match=r"made-up\.md:3: fenced block without"):
        _blocks("text\n\n```\nbec2 --operation=list --output=/b\n```\n")
    with pytest.raises(md.MarkerError, match="needs its reason"):
        _blocks("<!-- doc-test: skip -->\n```\napt install x\n```\n")
    with pytest.raises(md.MarkerError, match="unknown doc-test marker"):
        _blocks("<!-- doc-test: shell -->\n```\nls\n```\n")
    with pytest.raises(md.MarkerError, match="exit= applies to bec2"):
        _blocks("<!-- doc-test: bconsole exit=1 -->\n```\nrestore all\n```\n")
    with pytest.raises(md.MarkerError, match="holds a command"):
        _blocks("<!-- doc-test: output (a layout) -->\n```\n/x/y  a file\n$ bec2 --operation=list\n```\n")
    with pytest.raises(md.MarkerError, match="holds a command"):
        _blocks('<!-- doc-test: output (a layout) -->\n```\n    Plugin = "ec2: region=x"\n```\n')
    # The marker is on the last non-blank line before the fence; a marker further up does not count.
    with pytest.raises(md.MarkerError, match="without"):
        _blocks("<!-- doc-test: bec2 -->\nsome text\n```\nbec2 --help\n```\n")


def test_markers_and_blocks_are_read() -> None:
    text = (
        "# t\n<!-- doc-test: bec2 exit=2 -->\n\n```sh\nbec2 --level=X\n```\n"
        "<!-- doc-test: skip (needs root) -->\n````\n```\napt install x\n````\n"
        "<!-- doc-test: output (a tree) -->\n```\nprotocol/  restore.py  the dispatcher\n```\n"
    )
    a, b, c = _blocks(text)
    assert (a.kind, a.exit, a.info, a.text, a.line) == ("bec2", 2, "sh", "bec2 --level=X", 4)
    assert (b.kind, b.reason, b.text) == ("skip", "needs root", "```\napt install x")
    assert (c.kind, c.reason) == ("output", "a tree")


def test_shell_commands() -> None:
    (block,) = _blocks(
        "<!-- doc-test: bec2 -->\n```\nbec2 --a=1 \\\n     --b=2   # two\n\n"
        "# a comment\nbec2 --c='x y'\n```\n"
    )
    assert md.shell_commands(block) == ["bec2 --a=1 --b=2", "bec2 '--c=x y'"]
    (block,) = _blocks(
        "<!-- doc-test: bec2 -->\n```\n$ bec2 --operation=list\nJOBID  STARTED\n    1  x\n```\n"
    )
    assert md.shell_commands(block) == ["bec2 --operation=list"]


def test_console_dialog() -> None:
    names = [name for name, *_ in restore_option_items()]
    (block,) = _blocks(
        "<!-- doc-test: bconsole -->\n```\n* restore client=c select current where=/\n"
        "  cd /@amazon-ec2/i-1/\n  mark vol-1*\n  done\n  mod → 13 → mod → restore_region = us-west-2\n"
        "             mod → restore_iops = 8000   mod → restore_start = no\n  yes → yes\nsome output\n"
        "* messages\n```\n"
    )
    first, second = md.console_commands(block, names)
    number = {n: str(names.index(n) + 1) for n in ("restore_region", "restore_iops", "restore_start")}
    assert first.line == "restore client=c select current where=/"
    assert first.dialog == (
        "cd /@amazon-ec2/i-1/", "mark vol-1*", "done", "mod", "13",
        "mod", number["restore_region"], "us-west-2", "mod", number["restore_iops"], "8000",
        "mod", number["restore_start"], "no", "yes", "yes",
    )  # fmt: skip
    assert first.options == (
        ("restore_region", "us-west-2"),
        ("restore_iops", "8000"),
        ("restore_start", "no"),
    )
    assert second == md.ConsoleCommand("messages")
    (block,) = _blocks(
        "<!-- doc-test: bconsole -->\n```\n* restore all\n  mod → 13 → mod → restore_color = red\n```\n"
    )
    with pytest.raises(md.MarkerError, match="restore_color"):
        md.console_commands(block, names)


_AFFIX = st.text(alphabet="ab01-_./=\"'", max_size=4)


def _replaced(key: str, prefix: str, suffix: str) -> bool:
    """The model: a placeholder is replaced unless it continues a word, an id or a path."""
    if key.startswith("/"):
        starts = prefix == "" or prefix[-1] in "=\"'"
    else:
        starts = prefix == "" or not (prefix[-1].isalnum() or prefix[-1] in "_.-")
    return starts and (suffix == "" or not (suffix[0].isalnum() or suffix[0] in "_-"))


@given(
    st.lists(st.tuples(_AFFIX, st.booleans(), _AFFIX), max_size=8), st.sampled_from(["i-0abc", "/backups"])
)
def test_substitute_replaces_whole_tokens_only(tokens: list[tuple[str, bool, str]], key: str) -> None:
    text = " ".join(pre + (key if has else "") + post for pre, has, post in tokens)
    want = " ".join(
        pre + (("NEW" if _replaced(key, pre, post) else key) if has else "") + post
        for pre, has, post in tokens
    )
    assert md.substitute(text, {key: "NEW"}) == want


def test_substitute_examples() -> None:
    table = {"/backups": "/t/b", "/srv/restores": "/t/s", "i-0abc": "i-1", "client=fd": "client=x"}
    text = 'cd /@amazon-ec2/i-0abc/ --output=/backups x/backups /backupsx "/srv/restores" i-0abcd '
    text += "client=fdx client=fd"
    assert (
        md.substitute(text, table)
        == 'cd /@amazon-ec2/i-1/ --output=/t/b x/backups /backupsx "/t/s" i-0abcd client=fdx client=x'
    )
