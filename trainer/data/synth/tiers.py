"""Which persona gets how many examples: a small TOML file of tiers.

    # accepted examples per persona in each tier
    [counts]
    main = 150
    major = 100
    supporting = 60
    minor = 30

    # persona id or name → its tier
    [personas]
    wren-alder = "main"
    "Barnaby Fitch" = "major"

    # optional (top level, before the tables): the tier of personas the file does not list
    # default = "minor"

Why a file: a cast of thirty is easier to tier in one reviewed file than on a command line, and re-running
`home data synth` with the same file (and more counts) continues the same dataset.
"""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

from trainer.data.synth import SynthError

EXAMPLE_COUNTS = {"main": 150, "major": 100, "supporting": 60, "minor": 30}
MAX_COUNT = 100_000


@dataclass
class Tiers:
    path: Path
    counts: dict[str, int]
    personas: dict[str, str] = field(default_factory=dict)  # key as written → tier
    default: str | None = None

    def tier_of(self, persona_id: str, name: str = "") -> str | None:
        """The persona's tier: its id, its name or a key that slugs to its id; else the default."""
        want = {persona_id.casefold(), name.casefold()}
        for key, tier in self.personas.items():
            if key.casefold() in want or _slug(key) == persona_id:
                return tier
        return self.default

    def unknown_keys(self, known_ids: set[str], known_names: set[str]) -> list[str]:
        names = {n.casefold() for n in known_names}
        return [k for k in self.personas if _slug(k) not in known_ids and k.casefold() not in names]


def _slug(text: str) -> str:
    return re.sub(r"[\W_]+", "-", text.lower()).strip("-")


def read_tiers(path: str | Path) -> Tiers:
    """Parse and check the tiers file; every problem names the file, the line when known, and the field."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise SynthError(f"{path}: cannot read the tiers file ({exc.strerror or exc})") from None
    except UnicodeDecodeError:
        raise SynthError(f"{path}: not UTF-8 text") from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise SynthError(f"{path}: not valid TOML ({exc})") from None

    def bad(key: str, why: str, table: str | None = None) -> SynthError:
        line = _line_of(text, key, table)
        where = f"{path}:{line}" if line else str(path)
        return SynthError(f"{where}: {f'{table}.' if table else ''}{key}: {why}")

    for key in data:
        if key not in ("counts", "personas", "default"):
            raise bad(key, "unknown setting (expected [counts], [personas] and optionally default)")
    counts = data.get("counts")
    if not isinstance(counts, dict) or not counts:
        raise SynthError(f"{path}: counts: missing; add a [counts] table, e.g. main = 150, minor = 30")
    for tier, n in counts.items():
        if isinstance(n, bool) or not isinstance(n, int) or not 0 <= n <= MAX_COUNT:
            raise bad(tier, f"expected a whole number of examples from 0 to {MAX_COUNT}, got {n!r}", "counts")
    personas = data.get("personas", {})
    if not isinstance(personas, dict):
        raise bad("personas", "expected a table of persona = \"tier\"")
    for key, tier in personas.items():
        if not isinstance(tier, str) or tier not in counts:
            raise bad(key, f"expected one of the tiers in [counts] ({', '.join(counts)}), got {tier!r}",
                      "personas")
    default = data.get("default")
    if default is not None and (not isinstance(default, str) or default not in counts):
        raise bad("default", f"expected one of the tiers in [counts] ({', '.join(counts)}), got {default!r}")
    return Tiers(path, dict(counts), dict(personas), default)


def _line_of(text: str, key: str, table: str | None) -> int | None:
    """The line where `key` is set (inside `[table]` when given), for messages; None if not found."""
    current = None
    pattern = re.compile(rf'^\s*(?:"{re.escape(key)}"|\'{re.escape(key)}\'|{re.escape(key)})\s*=')
    for n, line in enumerate(text.splitlines(), 1):
        header = re.match(r"^\s*\[\s*([^\]]+?)\s*\]", line)
        if header:
            current = header.group(1)
            if table is None and current == key:
                return n
            continue
        if current == table and pattern.match(line):
            return n
    return None
