"""Messages never point at files that are not on an FD host: no "docs/..." in the product's
strings (docstrings and comments aside), and every installed-docs path they name is what
packaging/build-deb.sh installs (files over 4096 bytes are gzipped there)."""

from __future__ import annotations

import ast
import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
DOC_DIR = "/usr/share/doc/bacula-ec2-plugin/"
SOURCES = sorted([*(REPO / "bacula_ec2").rglob("*.py"), *(REPO / "protocol").rglob("*.py")])


def _strings(path: Path) -> list[tuple[int, str]]:
    tree = ast.parse(path.read_text())
    bare = {id(node.value) for node in ast.walk(tree) if isinstance(node, ast.Expr)}
    return [
        (node.lineno, node.value)
        for node in ast.walk(tree)
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in bare
    ]


def _installed_docs() -> dict[str, Path]:
    """Installed name -> source file, by build-deb.sh's DOCS list and its gzip rule."""
    script = (REPO / "packaging" / "build-deb.sh").read_text()
    match = re.search(r'^DOCS=\("\$REPO/README\.md" "\$REPO"/docs/\{([A-Z,]+)\}\.md\)$', script, re.M)
    assert match, "build-deb.sh's DOCS line changed: update this test"
    assert re.search(r"-gt 4096 \]\]; then gz", script), "build-deb.sh's gzip rule changed"
    files = [REPO / "README.md", *(REPO / "docs" / f"{n}.md" for n in match.group(1).split(","))]
    return {f.name + (".gz" if f.stat().st_size > 4096 else ""): f for f in files}


def test_no_message_points_into_the_source_tree() -> None:
    bad = [
        f"{p.relative_to(REPO)}:{line}: {text!r}"
        for p in SOURCES
        for line, text in _strings(p)
        if re.search(r"(?<![\w/])docs/[A-Za-z]", text)
    ]
    assert not bad, "\n".join(bad)


def test_installed_doc_paths_exist_in_the_package() -> None:
    installed = _installed_docs()
    named = [
        (p, line, m.group(1))
        for p in SOURCES
        for line, text in _strings(p)
        for m in re.finditer(re.escape(DOC_DIR) + r"([\w.]+\w)", text)
    ]
    assert len(named) >= 4, named  # the messages of params, runner, snapshots, the release hint
    wrong = [f"{p.relative_to(REPO)}:{line}: {name}" for p, line, name in named if name not in installed]
    listing = f"not installed under these names (installed: {sorted(installed)}):\n"
    assert not wrong, listing + "\n".join(wrong)
