"""What a file-level restore selects: `[partition:]/path/glob`, e.g. `/etc/nginx/**`,
`/home/app/.env`, `p2:/etc/*.conf`.

- components are separated by `/`; `*` matches any run of characters within one component
  (dot files included), `?` one character, `[...]` a character class (`[!...]` negated);
- `**` as a whole component matches zero or more components (`/etc/**` matches `/etc`
  and everything below it);
- a match that is a directory selects the directory with everything below it;
- no partition named: every readable filesystem of the disk is searched.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from .disk import GuestError

_PART = re.compile(r"^(?P<part>[A-Za-z0-9_.+-]+(?:/[A-Za-z0-9_.+-]+)?):(?P<path>/.*)$")
_MAGIC = re.compile(r"[*?\[]")


def _component(text: str) -> str:
    out, i = [], 0
    while i < len(text):
        c = text[i]
        if c == "*":
            out.append("[^/]*")
        elif c == "?":
            out.append("[^/]")
        elif c == "[":
            j = i + 1
            if j < len(text) and text[j] in "!^":
                j += 1
            if j < len(text) and text[j] == "]":
                j += 1
            while j < len(text) and text[j] != "]":
                j += 1
            if j >= len(text):
                out.append(re.escape(c))
            else:
                body = text[i + 1 : j]
                neg = body[:1] in ("!", "^")
                body = body[1:] if neg else body
                body = body.replace("\\", "\\\\").replace("/", "")
                out.append(f"[{'^' if neg else ''}{body}]" if body else "(?!)")
                i = j
        else:
            out.append(re.escape(c))
        i += 1
    return "".join(out)


@dataclass(frozen=True)
class Pattern:
    text: str  # as given
    partition: str | None
    path: str  # the glob, absolute, normalised (no empty components)
    regex: re.Pattern[str]

    @property
    def prefix(self) -> str:
        """The longest leading path without glob characters: where a search starts."""
        parts = []
        for comp in self.path.split("/")[1:]:
            if comp == "**" or _MAGIC.search(comp):
                break
            parts.append(comp)
        return "/" + "/".join(parts)

    def matches(self, path: str) -> bool:
        """Whether an absolute guest path (`/` is the root) matches."""
        return self.regex.fullmatch("" if path == "/" else path) is not None


def parse_pattern(text: str) -> Pattern:
    raw = text.strip()
    part = None
    m = _PART.match(raw)
    if m:
        part, raw = m.group("part"), m.group("path")
    if not raw.startswith("/"):
        raise GuestError(f"'{text}' is not an absolute guest path (write /etc/... or p2:/etc/...)")
    if "\0" in raw:
        raise GuestError(f"'{text}' contains a NUL character")
    comps = [c for c in raw.split("/") if c and c != "."]
    if ".." in comps:
        raise GuestError(f"'{text}': '..' is not allowed in a guest path")
    regex = "".join("(?:/[^/]+)*" if c == "**" else "/" + _component(c) for c in comps)
    return Pattern(text, part, "/" + "/".join(comps), re.compile(regex, re.DOTALL))


def parse_patterns(text: str | list[str]) -> list[Pattern]:
    """A comma-separated list (as `restore_files=` and `--files=` give it) or a list."""
    items = text.split(",") if isinstance(text, str) else text
    out = [parse_pattern(t) for t in items if t.strip()]
    if not out:
        raise GuestError("no guest path given (e.g. /etc/nginx/** or p2:/home/app/.env)")
    return out
