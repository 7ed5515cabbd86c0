"""Front matter: the `key: value` header between two fence lines at the top of a markdown file.

One reader for gestalt files (vault/gestalts.py), character sheets (vault/sheets.py) and essays
(trainer/data/sources/essays.py), so all three agree on fences, comments, quotes and line numbers.

Why not YAML (`python-frontmatter`): these headers are flat `key: value` lines written by hand, and
their readers must name the line of a bad field; YAML would also turn a gestalt's time into a datetime
and an all-digit hash into an integer. What is accepted: `---` fences (and `+++`, Hugo's TOML fence, with
`key = value` lines), `# comment` lines and ` # comments` after a value, a value in matching quotes,
a markdown bullet or bold around the key (`- **Name**: Wren`). Lenient readers (essays) skip any other
line (a YAML list item); strict ones refuse it, naming the line.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

FENCES = ("---", "+++")
_FIELD = re.compile(r"^\s*(?:[-*]\s+)?\**([A-Za-z_][\w .-]{0,40}?)\**\s*([:=])\**\s*(.*?)\s*$")


class FrontMatterError(ValueError):
    """A header that cannot be read: `line` (1-based) and `reason`, for the caller to prefix with the file."""

    def __init__(self, line: int, reason: str) -> None:
        super().__init__(f"line {line}: {reason}")
        self.line = line
        self.reason = reason


@dataclass(frozen=True)
class Field:
    key: str  # as written (callers lowercase it where keys are case-insensitive)
    value: str  # comment and matching quotes removed
    line: int


@dataclass(frozen=True)
class FrontMatter:
    fields: list[Field] = field(default_factory=list)  # in file order, repeats kept (callers decide)
    body: str = ""  # everything after the closing fence (the whole text when there is no header)
    body_line: int = 1  # the line the body starts on
    fence: str | None = None  # None: the file has no header

    def get(self, key: str, default: str | None = None) -> str | None:
        """The last value given for `key`, compared case-insensitively."""
        found = [f.value for f in self.fields if f.key.lower() == key.lower()]
        return found[-1] if found else default


def read_front_matter(text: str, *, required: bool = False, strict: bool = True,
                      fences: tuple[str, ...] = FENCES) -> FrontMatter:
    """Split `text` into its header fields and body. `required`: a file without a header is an error
    (else it is all body). `strict`: a header line that is not `key: value` is an error (else skipped),
    and so is a header that never closes (else the text is all body: an opening `---` is a rule)."""
    lines = text.removeprefix("\ufeff").split("\n")
    fence = lines[0].strip()
    if fence not in fences:
        if required:
            raise FrontMatterError(1, f"expected '{fences[0]}' (the file starts with a header between "
                                      f"'{fences[0]}' lines)")
        return FrontMatter(body="\n".join(lines))
    end = next((n for n in range(1, len(lines)) if lines[n].strip() == fence), None)
    if end is None:
        if strict or required:
            raise FrontMatterError(1, f"no closing '{fence}' line")
        return FrontMatter(body="\n".join(lines))
    fields = []
    for n in range(1, end):
        line = lines[n].strip()
        if not line or line.startswith("#"):
            continue
        pair = parse_field(line, toml=fence == "+++")
        if pair is None:
            if strict:
                raise FrontMatterError(n + 1, f"expected 'key: value', got {line[:40]!r}")
            continue
        fields.append(Field(pair[0], pair[1], n + 1))
    return FrontMatter(fields, "\n".join(lines[end + 1:]), end + 2, fence)


def parse_field(line: str, toml: bool = False) -> tuple[str, str] | None:
    """(key, value) of one `key: value` line (`key = value` too with `toml`), else None. Sheets read the
    lines under a sheet's name heading with it as well."""
    m = _FIELD.match(line)
    if m is None or (m.group(2) == "=" and not toml):
        return None
    value = m.group(3).split(" #", 1)[0].strip()
    if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
        value = value[1:-1]
    return m.group(1).strip(), value
