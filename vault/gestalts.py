"""Gestalts: durable facts and preferences about a user, one editable markdown file each.

`<vault>/gestalts/<user>/<id>.md` holds a small front-matter header and the fact as its body:

    ---
    id: g-1f3a9c0d2e
    user: maya
    kind: fact
    said: 2026-11-24T10:00:03.120Z
    created: 2026-11-24T12:00:00Z
    updated: 2026-11-24T12:00:00Z
    hash: 9c0d2e1f3a4b5c6d
    sources: [20261124-100000-000000-ab12:3]
    ---
    The user lives in Lisbon.

Why files: the user reads, corrects and deletes what Home believes about them with any editor, and a
deleted file is gone for good. Every header field may be left out when writing one by hand (defaults: the
file name, the folder, "fact", the file's time, the body's hash, no sources); a field that is there must
be valid, and an unknown one is refused, so a typo never passes silently. `said` is when the user said
it (the newest source turn): memory ranks a newer fact above the one it replaced.

Add-only: distillation writes new files and never touches an existing one. Duplicates are dropped by
`hash`, the normalised content hash the gestalt was created with (an edit keeps it, so Home does not learn
the old wording again), and by the hash of the current text. Forgetting (the command, or deleting the
file) records the hashes in `<user>/.forgotten`, so the same fact is not distilled again. A malformed file
is reported (file, line, field) and skipped, never rewritten.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable
from contextlib import nullcontext
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path

from .errors import VaultError
from .frontmatter import FrontMatterError, read_front_matter
from .fsio import FileLock, atomic_write_text, ensure_private_dir
from .layout import Vault
from .logs import turn_states

FORGOTTEN = ".forgotten"
MAX_CHARS = 2000
FIELDS = ("id", "user", "kind", "said", "created", "updated", "hash", "sources")
_ID = re.compile(r"[a-z0-9][a-z0-9_-]{0,63}")
_USER = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,63}")
_KIND = re.compile(r"[a-z][a-z-]{0,31}")
_HASH = re.compile(r"[0-9a-f]{16}")
_SOURCE = re.compile(r"[a-z0-9][a-z0-9.-]*:\d+")
_WORD = re.compile(r"[\w']+", re.UNICODE)


class GestaltError(VaultError):
    """A gestalt file is malformed, or a gestalt is unknown. `path`, `line`, `field` say where."""

    def __init__(self, message: str, path: Path | None = None, line: int | None = None,
                 field: str | None = None, detail: str | None = None) -> None:
        super().__init__(message)
        self.path, self.line, self.field = path, line, field
        self.detail = detail or message  # "field: reason", without the place


def _show(value: str) -> str:
    """A header value in a message, clipped (a damaged file's line may be megabytes)."""
    text = repr(value)
    return text if len(text) <= 60 else text[:59] + "…"


def _bad(path: Path, line: int, name: str, reason: str) -> GestaltError:
    return GestaltError(f"{path}:{line}: {name}: {reason}", path, line, name, f"{name}: {reason}")


@dataclass(frozen=True)
class Gestalt:
    id: str
    user: str
    kind: str
    text: str
    said: str
    created: str
    updated: str
    hash: str
    sources: tuple[str, ...] = ()
    path: Path | None = field(default=None, compare=False)

    def to_dict(self) -> dict:
        return {"id": self.id, "user": self.user, "kind": self.kind, "text": self.text, "said": self.said,
                "created": self.created, "updated": self.updated, "hash": self.hash,
                "sources": list(self.sources), "path": str(self.path) if self.path else None}


@dataclass(frozen=True)
class Draft:
    """A new fact, before it is written: what distillation proposes."""

    text: str
    kind: str = "fact"
    sources: tuple[str, ...] = ()
    said: str | None = None


@dataclass
class GestaltList:
    gestalts: list[Gestalt] = field(default_factory=list)
    problems: list[GestaltError] = field(default_factory=list)  # malformed files, skipped


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def normalise(text: str) -> str:
    return " ".join(_WORD.findall(text.casefold()))


def gestalt_hash(text: str) -> str:
    """The normalised content hash: case, spacing and punctuation do not make a new fact."""
    return hashlib.sha256(normalise(text).encode("utf-8")).hexdigest()[:16]


def parse_time(value: str) -> datetime | None:
    try:
        when = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
    except ValueError:
        return None
    return when if when.tzinfo else when.replace(tzinfo=UTC)


def user_dir(vault: Vault, user: str) -> Path:
    if not isinstance(user, str) or not _USER.fullmatch(user):
        raise GestaltError(f"user {_show(user)}: expected letters, digits, '_', '.' or '-' (a folder name)")
    return vault.gestalts_dir / user


# --- one file ---

def render(g: Gestalt) -> str:
    return (f"---\nid: {g.id}\nuser: {g.user}\nkind: {g.kind}\nsaid: {g.said}\ncreated: {g.created}\n"
            f"updated: {g.updated}\nhash: {g.hash}\nsources: [{', '.join(g.sources)}]\n---\n{g.text.strip()}\n")


def parse(text: str, path: Path, ident: str, user: str, mtime: float | None = None) -> Gestalt:
    """The gestalt in `text` (the file `path`, named `ident`, in `user`'s folder), or GestaltError."""
    try:
        header = read_front_matter(text, required=True, fences=("---",))
    except FrontMatterError as exc:
        raise _bad(path, exc.line, "header", exc.reason) from None
    end = header.body_line - 1  # the closing '---'
    values: dict[str, tuple[int, str]] = {}
    for f in header.fields:
        if f.key not in FIELDS:
            raise _bad(path, f.line, f.key, f"unknown field (known: {', '.join(FIELDS)})")
        if f.key in values:
            raise _bad(path, f.line, f.key, f"given twice (first on line {values[f.key][0]})")
        values[f.key] = (f.line, f.value)
    body = header.body.strip()
    if not body:
        raise _bad(path, end, "body", "empty: write the fact below the header (or delete the file to forget it)")
    if len(body) > MAX_CHARS:
        raise _bad(path, end + 1, "body", f"{len(body)} characters; a gestalt is one short fact (at most "
                                          f"{MAX_CHARS})")

    def get(name: str, default: str, pattern: re.Pattern | None = None, want: str = "") -> str:
        n, value = values.get(name, (0, default))
        if pattern is not None and not pattern.fullmatch(value):
            raise _bad(path, n, name, f"expected {want}, got {_show(value)}")
        return value

    found_id = get("id", ident, _ID, "lowercase letters, digits, '-' or '_'")
    if found_id != ident:
        raise _bad(path, values["id"][0], "id", f"{_show(found_id)} differs from the file name {ident!r}")
    found_user = get("user", user)
    if found_user != user:
        raise _bad(path, values["user"][0], "user", f"{_show(found_user)} differs from the folder {user!r}")
    kind = get("kind", "fact", _KIND, "one lowercase word such as fact or preference")
    stamp = datetime.fromtimestamp(mtime or 0, UTC).isoformat(timespec="seconds").replace("+00:00", "Z")
    times = {}
    for name in ("created", "updated", "said"):
        n, value = values.get(name, (0, times.get("created", stamp)))
        if parse_time(value) is None:
            raise _bad(path, n, name, f"expected an ISO-8601 time such as 2026-11-24T10:00:00Z, got {_show(value)}")
        times[name] = value
    h = get("hash", gestalt_hash(body), _HASH, "16 hex digits")
    n, raw = values.get("sources", (0, "[]"))
    inner = raw[1:-1] if raw.startswith("[") and raw.endswith("]") else raw
    sources = tuple(s.strip().strip("'\"") for s in inner.split(",") if s.strip())
    for s in sources:
        if not _SOURCE.fullmatch(s):
            raise _bad(path, n, "sources", f"expected log record ids <session>:<turn>, got {_show(s)}")
    return Gestalt(ident, user, kind, body, times["said"], times["created"], times["updated"], h, sources,
                   path)


def read(path: Path) -> Gestalt:
    """One gestalt file; its id is the file name, its user the folder."""
    try:
        raw = path.read_bytes()
        mtime = path.stat().st_mtime
    except OSError as exc:
        raise _bad(path, 0, "file", f"cannot read ({exc.strerror or exc})") from None
    if b"\x00" in raw:
        raise _bad(path, 0, "file", "binary (contains NUL bytes), not text")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise _bad(path, 0, "file", "not UTF-8 text") from None
    return parse(text, path, path.stem, path.parent.name, mtime)


def write(vault: Vault, g: Gestalt) -> Gestalt:
    """Write (or replace, after an edit) one gestalt atomically, 0600 in a 0700 folder."""
    folder = ensure_private_dir(user_dir(vault, g.user))
    path = folder / f"{g.id}.md"
    atomic_write_text(path, render(g))
    return replace(g, path=path)


# --- a user's folder ---

def _files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.glob("*.md") if not p.name.startswith(".") and p.is_file())


def _users(vault: Vault, user: str | None) -> list[str]:
    if user is not None:
        user_dir(vault, user)
        return [user]
    root = vault.gestalts_dir
    return sorted(p.name for p in root.iterdir() if p.is_dir() and _USER.fullmatch(p.name)) if root.is_dir() else []


def list_gestalts(vault: Vault, user: str | None = None) -> GestaltList:
    """Every readable gestalt of `user` (None: every user), oldest said first; malformed files are in
    `problems` and left as they are."""
    out = GestaltList()
    for name in _users(vault, user):
        for path in _files(vault.gestalts_dir / name):
            try:
                out.gestalts.append(read(path))
            except GestaltError as exc:
                out.problems.append(exc)
    out.gestalts.sort(key=lambda g: (g.user, parse_time(g.said) or datetime.min.replace(tzinfo=UTC), g.id))
    return out


def get_gestalt(vault: Vault, user: str, ident: str) -> Gestalt:
    """One gestalt of `user` by id (as `home gestalts list` prints it)."""
    if not _ID.fullmatch(ident or ""):
        raise GestaltError(f"gestalt id {_show(ident)}: expected lowercase letters, digits, '-' or '_'")
    path = user_dir(vault, user) / f"{ident}.md"
    if not path.is_file():
        raise GestaltError(f"no gestalt {ident!r} for user {user!r} in {path.parent} (see `home gestalts list`)")
    return read(path)


def find_user(vault: Vault, ident: str) -> str | None:
    """Whose folder holds gestalt `ident` (ids are unique in a vault; the memory store keys on them)."""
    if not _ID.fullmatch(ident or ""):
        return None
    for name in _users(vault, None):
        if (vault.gestalts_dir / name / f"{ident}.md").is_file():
            return name
    return None


def forgotten(vault: Vault, user: str) -> set[str]:
    path = user_dir(vault, user) / FORGOTTEN
    try:
        data = json.loads(path.read_text("utf-8"))
    except (OSError, ValueError, RecursionError):
        return set()  # none yet (or damaged: at worst a forgotten fact may be distilled again)
    return {h for h in data.get("hashes", []) if isinstance(h, str)} if isinstance(data, dict) else set()


def _remember_forgotten(vault: Vault, user: str, hashes: Iterable[str]) -> None:
    new = forgotten(vault, user) | {h for h in hashes if h}
    folder = ensure_private_dir(user_dir(vault, user))
    atomic_write_text(folder / FORGOTTEN, json.dumps({"hashes": sorted(new)}, indent=1) + "\n")


def record_forgotten(vault: Vault, user: str, hashes: Iterable[str]) -> None:
    """Never distil these again (a gestalt the user deleted by hand; the memory sync notices)."""
    with FileLock(vault.lock_path("gestalts")):
        _remember_forgotten(vault, user, hashes)


def forget_gestalt(vault: Vault, user: str, ident: str, locked: bool = False) -> Gestalt | None:
    """Delete a gestalt file and remember its hashes so it is not distilled again. A malformed file is
    deleted too (returns None: its hashes cannot be read). `locked`: the caller holds the gestalts lock
    (vault/forget.py, which deletes a turn's gestalts and logs its exclusion in one hold)."""
    if not _ID.fullmatch(ident or ""):
        raise GestaltError(f"gestalt id {_show(ident)}: expected lowercase letters, digits, '-' or '_'")
    path = user_dir(vault, user) / f"{ident}.md"
    if not path.is_file():
        raise GestaltError(f"no gestalt {ident!r} for user {user!r} in {path.parent} (see `home gestalts list`)")
    with nullcontext() if locked else FileLock(vault.lock_path("gestalts")):
        try:
            g = read(path)
        except GestaltError:
            g = None
        if g is not None:
            _remember_forgotten(vault, user, {g.hash, gestalt_hash(g.text)})
        path.unlink(missing_ok=True)
    return g


def derived_from(vault: Vault, turns: Iterable[str], read: dict[str, list[dict]] | None = None) -> list[Gestalt]:
    """The gestalts (every user's) learnt from these turns that nothing else still stands behind: one of
    their sources is in `turns` and every other one is forgotten too (its log excludes it) or gone (no
    log holds it). A gestalt with another source still standing stays: the user said it again elsewhere.
    Hand-written gestalts (no sources) and malformed files are never matched. `read`: see turn_states."""
    turns = set(turns)
    hit = [g for g in list_gestalts(vault).gestalts if turns & set(g.sources)]
    others = {s for g in hit for s in g.sources} - turns
    excluded, missing = turn_states(vault, others, read) if others else (set(), set())
    return [g for g in hit if set(g.sources) <= turns | excluded | missing]


def new_id(user: str, h: str, taken: set[str]) -> str:
    base = "g-" + hashlib.sha256(f"{user}\0{h}".encode()).hexdigest()[:10]
    ident, n = base, 2
    while ident in taken:
        ident, n = f"{base}-{n}", n + 1
    return ident


def add_gestalts(vault: Vault, user: str, drafts: Iterable[Draft]) -> list[Gestalt]:
    """Write the drafts that are new (by normalised hash, against every gestalt of `user`, forgotten ones
    included); returns what was written. Never replaces a file. Locked against other writers."""
    folder = user_dir(vault, user)
    with FileLock(vault.lock_path("gestalts")):
        have = list_gestalts(vault, user)
        seen = {g.hash for g in have.gestalts} | {gestalt_hash(g.text) for g in have.gestalts}
        seen |= forgotten(vault, user)
        taken = {p.stem for p in folder.glob("*.md")} if folder.is_dir() else set()
        taken |= {ident for name in _users(vault, None) if name != user
                  for ident in (p.stem for p in (vault.gestalts_dir / name).glob("*.md"))}
        # a fact from turns forgotten since they were read (a forget ran during the model call) is not
        # written: forgetting logs the exclusion under this lock, so it is either seen here or finds the file
        drafts = list(drafts)
        gone = turn_states(vault, {s for d in drafts for s in d.sources})[0]
        out = []
        for d in drafts:
            text = " ".join(d.text.split())
            h = gestalt_hash(text)
            if not normalise(text) or h in seen or (d.sources and set(d.sources) <= gone):
                continue
            if not _KIND.fullmatch(d.kind):
                raise GestaltError(f"kind {d.kind!r}: expected one lowercase word such as fact or preference")
            stamp = now_iso()
            g = Gestalt(new_id(user, h, taken), user, d.kind, text, d.said or stamp, stamp, stamp, h,
                        tuple(d.sources))
            out.append(write(vault, g))
            seen.add(h)
            taken.add(g.id)
        return out


def save_edit(vault: Vault, user: str, ident: str, edited: str, edited_path: Path) -> Gestalt | None:
    """Validate an edited copy of gestalt `ident` (the text of `edited_path`, whose name the errors
    give) and write it over the gestalt with `updated` set to now; None when nothing changed. Home's own
    fields (id, user, created and the original hash, which keeps the old wording from being distilled
    again) stay as they were. A broken gestalt file is replaced by a good edit: that is how it is fixed."""
    path = user_dir(vault, user) / f"{ident}.md"
    try:
        old = read(path)
    except GestaltError:
        old = None
    mtime = path.stat().st_mtime if path.exists() else None
    new = parse(edited, edited_path, ident, user, mtime)
    if old is None:
        return write(vault, replace(new, updated=now_iso()))
    if (new.text, new.kind, new.said, new.sources) == (old.text, old.kind, old.said, old.sources):
        return None
    return write(vault, replace(new, hash=old.hash, created=old.created, updated=now_iso()))
