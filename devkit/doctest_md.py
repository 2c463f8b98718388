"""Docs that run: the fenced code blocks of README.md and docs/*.md, and what each one is.

Every fenced block carries a marker, an HTML comment on the last non-blank line before its
opening fence (docs/TESTING.md, "Docs that run")::

    <!-- doc-test: bec2 -->                  bec2 command lines, run in order, exit 0
    <!-- doc-test: bec2 exit=2 -->           the same, each line must exit 2
    <!-- doc-test: bconsole -->              bconsole lines, run through a real Bacula stack
    <!-- doc-test: fileset -->               a FileSet resource or Plugin = "ec2: ..." lines
    <!-- doc-test: json -->                  a JSON document (an IAM policy)
    <!-- doc-test: output (what it is) -->   not a command: a layout, a format, an output
    <!-- doc-test: skip (why) -->            a command that cannot run here, and why

This module finds the blocks, checks the markers and turns a block into the commands a user
types (prompts stripped, continuation lines joined). Running them is the tests' business
(tests/docs/).
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

#: Kinds a marker may name.
RUNNABLE = ("bec2", "bconsole", "fileset", "json")
KINDS = (*RUNNABLE, "output", "skip")

_FENCE = re.compile(r"^(?P<indent> {0,3})(?P<fence>`{3,}|~{3,})(?P<info>[^`]*)$")
_MARKER = re.compile(r"^\s*<!--\s*doc-test:\s*(?P<body>.*?)\s*-->\s*$")
_MARKER_BODY = re.compile(r"^(?P<kind>[a-z0-9]+)(?:\s+exit=(?P<exit>\d+))?(?:\s*\((?P<reason>.*)\))?$", re.S)

#: A line a user would type: a bec2, bconsole or shell command (after an optional prompt).
_COMMAND_LINE = re.compile(
    r"^\s*(?:[$*#]\s*)?(?:bec2|\.venv/bin/bec2|restore|estimate|run|\.ls|\.query|status|"
    r"apt|apt-get|systemctl|make|curl|sudo|packaging/\S+|\.venv/bin/python|python3?)(?=\s|$)"
    r"|^\s*Plugin\s*=|^\s*ec2:\s"
)


class MarkerError(ValueError):
    """A block without a marker, or with one that does not parse."""


@dataclass(frozen=True)
class Block:
    """One fenced code block of a Markdown file and its marker."""

    path: Path  # the Markdown file
    line: int  # 1-based line of the opening fence
    info: str  # the fence's info string (``sh``, ``json``, ...)
    text: str  # the block's content, without the fences
    kind: str  # one of KINDS
    exit: int  # the exit code every command must end with (bec2)
    reason: str  # skip/output: why, or what it is

    @property
    def where(self) -> str:
        try:
            name = self.path.resolve().relative_to(REPO)
        except ValueError:
            name = self.path
        return f"{name}:{self.line}"


def documents(root: Path = REPO) -> list[Path]:
    """README.md and docs/*.md: the documents whose examples must run."""
    return [root / "README.md", *sorted((root / "docs").glob("*.md"))]


def parse_marker(body: str, where: str) -> tuple[str, int, str]:
    """``bec2 exit=2`` -> ("bec2", 2, ""); ``skip (why)`` -> ("skip", 0, "why")."""
    match = _MARKER_BODY.match(body.strip())
    if not match or match["kind"] not in KINDS:
        raise MarkerError(f"{where}: unknown doc-test marker {body!r} (kinds: {', '.join(KINDS)})")
    kind, reason = match["kind"], (match["reason"] or "").strip()
    if kind in ("skip", "output") and not reason:
        raise MarkerError(f"{where}: `doc-test: {kind}` needs its reason in parentheses")
    if match["exit"] is not None and kind != "bec2":
        raise MarkerError(f"{where}: exit= applies to bec2 blocks only")
    return kind, int(match["exit"] or 0), reason


def blocks(path: Path, text: str | None = None) -> list[Block]:
    """Every fenced block of ``path`` with its marker; MarkerError if one has none."""
    lines = (path.read_text(encoding="utf-8") if text is None else text).splitlines()
    found: list[Block] = []
    problems: list[str] = []
    i = 0
    while i < len(lines):
        opening = _FENCE.match(lines[i])
        if not opening:
            i += 1
            continue
        fence = opening["fence"]
        end = i + 1
        while end < len(lines):
            closing = _FENCE.match(lines[end])
            if closing and closing["fence"].startswith(fence) and not closing["info"].strip():
                break
            end += 1
        where = f"{path}:{i + 1}"
        content = "\n".join(lines[i + 1 : end])
        prev = i - 1
        while prev >= 0 and not lines[prev].strip():
            prev -= 1
        marker = _MARKER.match(lines[prev]) if prev >= 0 else None
        if marker is None:
            problems.append(f"{where}: fenced block without a `<!-- doc-test: ... -->` marker")
        else:
            try:
                kind, exit_code, reason = parse_marker(marker["body"], where)
            except MarkerError as exc:
                problems.append(str(exc))
            else:
                if kind == "output":
                    typed = [ln for ln in content.splitlines() if _COMMAND_LINE.match(ln)]
                    if typed:
                        problems.append(
                            f"{where}: block marked `output` holds a command ({typed[0].strip()!r}): "
                            "mark it runnable or `skip (why)`"
                        )
                found.append(Block(path, i + 1, opening["info"].strip(), content, kind, exit_code, reason))
        i = end + 1
    if problems:
        raise MarkerError("\n".join(problems))
    return found


def all_blocks(paths: Iterable[Path] | None = None) -> list[Block]:
    """The blocks of every document (MarkerError listing every unmarked or bad block)."""
    found: list[Block] = []
    problems: list[str] = []
    for path in documents() if paths is None else paths:
        try:
            found += blocks(path)
        except MarkerError as exc:
            problems.append(str(exc))
    if problems:
        raise MarkerError("\n".join(problems))
    return found


def logical_lines(text: str) -> list[str]:
    """Lines with ``\\`` continuations joined (the continuation's indent becomes one space)."""
    out: list[str] = []
    pending = ""
    for raw in text.splitlines():
        line = raw.rstrip()
        if line.endswith("\\"):
            pending += line[:-1].rstrip() + " "
            continue
        out.append((pending + line.lstrip()) if pending else line)
        pending = ""
    if pending:
        out.append(pending.rstrip())
    return out


def shell_commands(block: Block) -> list[str]:
    """The commands of a shell-like block: with ``$ `` prompts, only the prompted lines
    (the rest is their output); else every non-blank, non-comment line. Trailing
    ``# comments`` are dropped."""
    lines = logical_lines(block.text)
    prompted = [ln for ln in lines if ln.startswith("$ ")]
    chosen = [ln[2:] for ln in prompted] if prompted else lines
    commands = []
    for line in chosen:
        words = shlex.split(line, comments=True)
        if words:
            commands.append(shlex.join(words))
    return commands


@dataclass(frozen=True)
class ConsoleCommand:
    """One bconsole command and the dialog lines typed after it (``mod``, ``13``, values)."""

    line: str
    dialog: tuple[str, ...] = ()
    options: tuple[tuple[str, str], ...] = ()  # the Plugin Options the dialog sets, by name

    @property
    def text(self) -> str:
        """The command and its dialog as the document writes them (option names kept)."""
        return " ".join([self.line, *(f"{k}={v}" for k, v in self.options)])


def console_commands(block: Block, option_names: Sequence[str]) -> list[ConsoleCommand]:
    """The bconsole commands of a block. With ``* `` prompts, prompted lines are commands,
    indented lines after one are its dialog, other lines are output; without prompts every
    line is a command. Dialog shorthand: ``mod → 13 → mod → name = value  mod → ... yes → yes``,
    where ``mod → name = value`` is the Plugin Options step `mod`, the option's number (from
    ``option_names``, in the FD's order), and the value."""
    lines = [ln for ln in block.text.splitlines() if ln.strip()]
    prompted = any(ln.startswith("*") for ln in lines)
    result: list[ConsoleCommand] = []
    for line in lines:
        if prompted and line.startswith("*"):
            result.append(ConsoleCommand(line[1:].strip()))
        elif prompted and line[:1].isspace() and result:
            last = result[-1]
            typed, options = _dialog(line, option_names, block)
            result[-1] = ConsoleCommand(last.line, (*last.dialog, *typed), (*last.options, *options))
        elif not prompted:
            result.append(ConsoleCommand(line.strip()))
    return result


def _dialog(line: str, option_names: Sequence[str], block: Block) -> tuple[list[str], list[tuple[str, str]]]:
    steps = [s.strip() for s in re.split(r"→|\s{2,}", line) if s.strip()]
    typed: list[str] = []
    options: list[tuple[str, str]] = []
    for step in steps:
        if "=" in step and not step.startswith(("restore ", "mark ", "cd ")):
            name, _, value = (p.strip() for p in step.partition("="))
            if name not in option_names:
                raise MarkerError(f"{block.where}: {name!r} is not a restore Plugin Option")
            if not typed or typed[-1] != "mod":
                raise MarkerError(f"{block.where}: option {name!r} not preceded by `mod`")
            typed += [str(list(option_names).index(name) + 1), value]
            options.append((name, value))
        else:
            typed.append(step)
    return typed, options


def substitute(text: str, table: Mapping[str, str]) -> str:
    """Replace each placeholder of ``table`` (longest first) where it stands as a whole
    token: not inside a longer word or id, and a path (``/...``) only where a path starts
    (after a blank, ``=`` or a quote), never as the tail of a longer path."""
    for key in sorted(table, key=len, reverse=True):
        before = r"(?<![^\s=\"'])" if key.startswith("/") else r"(?<![\w.-])"
        pattern = rf"{before}{re.escape(key)}(?![\w-])"
        value = table[key]
        text = re.sub(pattern, lambda _m: value, text)  # noqa: B023 - used at once, in this iteration
    return text


def plugin_lines(text: str) -> list[str]:
    """The ``Plugin = "..."`` values of a FileSet snippet (or a bare ``ec2: ...`` line)."""
    found = re.findall(r'^\s*Plugin\s*=\s*"([^"]*)"', text, re.M)
    return found or [ln.strip() for ln in text.splitlines() if ln.strip().startswith("ec2:")]


def plugin_pairs(line: str) -> list[tuple[str, str]]:
    """``ec2: a=1 b=2`` -> [("a", "1"), ("b", "2")], as the FD hands them to the backend."""
    name, sep, rest = line.partition(":")
    if not sep or name.strip() != "ec2":
        raise MarkerError(f"not an ec2: plugin line: {line!r}")
    pairs = []
    for word in rest.split():
        key, eq, value = word.partition("=")
        if not eq:
            raise MarkerError(f"{word!r} in {line!r} is not key=value")
        pairs.append((key, value))
    return pairs


_INLINE = re.compile(r"(?<!`)`([^`\n]+)`(?!`)")
_INLINE_CONSOLE = re.compile(r"^(?:restore|\.ls|\.query|estimate|run)\s.*\bclient=\S")
_PLACEHOLDER = re.compile(r"\.\.\.|<[^>]*>|\[|\|")


@dataclass(frozen=True)
class Inline:
    """A complete bconsole command or FileSet Plugin line written inline (`` `...` ``)."""

    path: Path
    line: int
    text: str

    @property
    def where(self) -> str:
        try:
            name = self.path.resolve().relative_to(REPO)
        except ValueError:
            name = self.path
        return f"{name}:{self.line}"


def inline_spans(path: Path, text: str | None = None) -> list[Inline]:
    """Every inline code span (`` `...` ``) outside fenced blocks."""
    spans: list[Inline] = []
    fence: str | None = None
    for n, line in enumerate((path.read_text(encoding="utf-8") if text is None else text).splitlines(), 1):
        opening = _FENCE.match(line)
        if opening:
            if fence is None:
                fence = opening["fence"]
            elif opening["fence"].startswith(fence) and not opening["info"].strip():
                fence = None
            continue
        if fence is None:
            spans += [Inline(path, n, span.strip()) for span in _INLINE.findall(line)]
    return spans


def inline_commands(path: Path, text: str | None = None) -> tuple[list[Inline], list[Inline]]:
    """The inline bconsole commands (naming a ``client=``) and inline ``Plugin = "ec2: ..."``
    lines outside fenced blocks, without placeholders (``...``, ``<x>``, ``[x]``, ``a|b``):
    those are patterns, not commands. Returns (console commands, plugin lines)."""
    console: list[Inline] = []
    plugins: list[Inline] = []
    for span in inline_spans(path, text):
        if _PLACEHOLDER.search(span.text):
            continue
        if _INLINE_CONSOLE.match(span.text):
            console.append(span)
        elif re.match(r'^Plugin\s*=\s*"ec2:', span.text):
            plugins.append(span)
    return console, plugins
