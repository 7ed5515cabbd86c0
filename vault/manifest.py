"""`manifest.json`: which users, personas and adapters exist. The app and the trainer both write it.

Every write is read-modify-write under an inter-process lock, validated before it reaches disk, and
atomic; the previous good copy is kept as `manifest.json.bak`. A manifest that does not parse or
validate is reported (file and field) and never overwritten: the user's data matters more than ours.
Unknown top-level and entry keys are kept, so a newer Home's fields survive an older one's write.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, fields
from datetime import UTC, datetime
from typing import Any

from .errors import ManifestError
from .fsio import FileLock, LockTimeout, atomic_write_bytes, atomic_write_json
from .jsonparse import JSONProblem, clip, loads
from .layout import Vault

SCHEMA = 1
KINDS = ("voice", "persona", "task", "style", "other")


def name_key(name: str) -> str:
    """What adapter names are compared and ids made by: `Hamlet` and `hamlet` are one name, whose
    versions are `hamlet-1`, `hamlet-2`, ... (the trainer's naming since the first registration)."""
    s = re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")[:56]
    return s or "adapter"


def _a(word: str) -> str:
    return f"{'an' if word[:1] in 'aeiou' else 'a'} {word}"


def now_iso() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _kind_name(t: type | tuple) -> str:
    names = {str: "a string", float: "a number", int: "a whole number", list: "a list", dict: "an object",
             bool: "true or false", type(None): "null"}
    ts = t if isinstance(t, tuple) else (t,)
    return " or ".join(names.get(x, x.__name__) for x in ts)


def _check(where: str, value: Any, t: type | tuple) -> Any:
    ts = t if isinstance(t, tuple) else (t,)
    if isinstance(value, bool) and bool not in ts:
        ok = False
    elif float in ts and isinstance(value, int):
        ok = True
    else:
        ok = isinstance(value, ts)
    if not ok:
        raise ManifestError(f"{where}: expected {_kind_name(t)}, got {clip(value)}")
    return value


# field name → accepted JSON types, for AdapterEntry (declared order is the order written)
_ADAPTER_TYPES: dict[str, type | tuple] = {
    "id": str, "name": str, "file": str, "sha256": str, "base": dict, "owner": (str, type(None)),
    "kind": str, "users": list, "tasks": list, "tones": list, "priority": (int, float), "scale": float,
    "parent": (str, type(None)), "stack": list, "rank": (int, type(None)), "alpha": (float, type(None)),
    "dataset": dict, "metrics": dict, "training": dict, "verification": dict, "created": str,
}


@dataclass
class AdapterEntry:
    """One registered adapter. `file` is relative to the vault; `base.fingerprint` names its base model."""

    id: str
    name: str
    file: str
    sha256: str = ""
    base: dict = field(default_factory=dict)  # {"fingerprint", "name"}
    owner: str | None = None
    kind: str = "other"
    users: list = field(default_factory=list)  # router: users it serves ([] = its owner)
    tasks: list = field(default_factory=list)
    tones: list = field(default_factory=list)
    priority: float = 0
    scale: float = 1.0
    parent: str | None = None  # the adapter this one was trained on top of (two-phase training)
    stack: list = field(default_factory=list)  # adapters to apply with it: [{"id", "scale"}]
    rank: int | None = None
    alpha: float | None = None
    dataset: dict = field(default_factory=dict)  # {"hash", "counts"}
    metrics: dict = field(default_factory=dict)
    training: dict = field(default_factory=dict)
    verification: dict = field(default_factory=dict)
    created: str = field(default_factory=now_iso)
    extra: dict = field(default_factory=dict, repr=False)  # keys we do not know, kept as they were

    @classmethod
    def from_dict(cls, data: Any, where: str) -> AdapterEntry:
        _check(where, data, dict)
        for required in ("id", "name", "file"):
            if required not in data:
                raise ManifestError(f"{where}.{required}: missing")
        values = {k: _check(f"{where}.{k}", data[k], t) for k, t in _ADAPTER_TYPES.items() if k in data}
        if "scale" in values:
            values["scale"] = float(values["scale"])
        if values.get("alpha") is not None:
            values["alpha"] = float(values["alpha"])
        entry = cls(**values, extra={k: v for k, v in data.items() if k not in _ADAPTER_TYPES})
        entry.validate(where)
        return entry

    def validate(self, where: str) -> None:
        if not self.id.strip():
            raise ManifestError(f"{where}.id: must not be empty")
        if self.kind not in KINDS:
            raise ManifestError(f"{where}.kind: expected one of {', '.join(KINDS)}, got {clip(self.kind)}")
        if self.file.startswith("/") or ".." in self.file.split("/"):
            raise ManifestError(f"{where}.file: must be a path inside the vault, got {clip(self.file)}")
        for key in ("users", "tasks", "tones"):
            for i, item in enumerate(getattr(self, key)):
                _check(f"{where}.{key}[{i}]", item, str)
        for i, item in enumerate(self.stack):
            _check(f"{where}.stack[{i}]", item, dict)
            _check(f"{where}.stack[{i}].id", item.get("id"), str)
            _check(f"{where}.stack[{i}].scale", item.get("scale", 1.0), float)
        fp = self.base.get("fingerprint")
        if fp is not None:
            _check(f"{where}.base.fingerprint", fp, str)

    @property
    def version(self) -> int | None:
        """n of an id `<name>-<n>`; 1 for an id that is the bare name (`adapters add`'s first version);
        None for an id not made from the name (written by hand)."""
        key = name_key(self.name)
        if self.id == key:
            return 1
        m = re.fullmatch(rf"{re.escape(key)}-(\d+)", self.id)
        return int(m.group(1)) if m else None

    def to_dict(self) -> dict:
        d = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "extra"}
        d.update(self.extra)
        return d


@dataclass
class Manifest:
    users: dict[str, dict] = field(default_factory=dict)
    personas: dict[str, dict] = field(default_factory=dict)
    adapters: dict[str, AdapterEntry] = field(default_factory=dict)
    extra: dict = field(default_factory=dict)

    @classmethod
    def from_dict(cls, data: Any, path: str) -> Manifest:
        _check(path, data, dict)
        schema = data.get("schema")
        if schema != SCHEMA:
            raise ManifestError(
                f"{path}: schema: expected {SCHEMA}, got {clip(schema)} (written by another Home version?)"
            )
        m = cls(extra={k: v for k, v in data.items() if k not in ("schema", "users", "personas", "adapters")})
        for section in ("users", "personas"):
            raw = _check(f"{path}: {section}", data.get(section, {}), dict)
            for key, value in raw.items():
                _check(f"{path}: {section}.{key}", value, dict)
            setattr(m, section, dict(raw))
        raw = _check(f"{path}: adapters", data.get("adapters", {}), dict)
        for key, value in raw.items():
            entry = AdapterEntry.from_dict(value, f"{path}: adapters.{key}")
            if entry.id != key:
                raise ManifestError(f"{path}: adapters.{key}.id: expected {clip(key)}, got {clip(entry.id)}")
            m.adapters[key] = entry
        m.check_links(path)
        return m

    def check_links(self, path: str) -> None:
        """Stacks and parents must name adapters that exist: a dangling one would fail at chat time."""
        for entry in self.adapters.values():
            where = f"{path}: adapters.{entry.id}"
            if entry.parent is not None and entry.parent not in self.adapters:
                raise ManifestError(f"{where}.parent: no adapter {clip(entry.parent)}")
            for i, item in enumerate(entry.stack):
                if item["id"] not in self.adapters:
                    raise ManifestError(f"{where}.stack[{i}].id: no adapter {clip(item['id'])}")

    def to_dict(self) -> dict:
        return {"schema": SCHEMA, **self.extra, "users": self.users, "personas": self.personas,
                "adapters": {k: e.to_dict() for k, e in self.adapters.items()}}

    def versions(self, name: str) -> list[AdapterEntry]:
        """Every adapter registered under `name` (compared by `name_key`), oldest version first."""
        if not re.search(r"[a-z0-9]", name.lower()):
            return []
        key = name_key(name)
        same = [e for e in self.adapters.values() if name_key(e.name) == key]
        return sorted(same, key=lambda e: (e.version or 0, e.created, e.id))

    def newest(self) -> dict[str, AdapterEntry]:
        """Each name's newest version (by `name_key`, in `versions`' order): what the name means."""
        out: dict[str, AdapterEntry] = {}
        for e in self.adapters.values():
            key, have = name_key(e.name), out.get(name_key(e.name))
            if have is None or (e.version or 0, e.created, e.id) > (have.version or 0, have.created, have.id):
                out[key] = e
        return out

    def in_reach(self) -> set[str]:
        """Ids a turn can get without naming an older version: each name's newest version, each user's
        voice (which may be set back to an older one), and what those are trained over or stacked with.
        Every retraining keeps the earlier versions; these are the ones to load ahead and to route to."""
        todo: list = [e.id for e in self.newest().values()]
        todo += [u.get("voice_adapter") for u in self.users.values()]
        reach: set[str] = set()
        while todo:
            ident = todo.pop()
            entry = self.adapters.get(ident) if isinstance(ident, str) else None
            if entry is None or ident in reach:
                continue
            reach.add(ident)
            todo += [entry.parent] + [s.get("id") for s in entry.stack if isinstance(s, dict)]
        return reach

    def resolve(self, ref: str) -> AdapterEntry:
        """The one lookup of an adapter the user named: an exact id picks that version, else a name
        picks its newest version. Unknown, or a name two kinds share (an older manifest), → one line."""
        if ref in self.adapters:
            return self.adapters[ref]
        found = self.versions(ref)
        if not found:
            names: dict[str, list[str]] = {}
            for e in self.adapters.values():
                names.setdefault(name_key(e.name), []).append(e.id)
            known = ", ".join(f"{n[:40]} ({', '.join(i[:40] for i in sorted(ids))})" for n, ids in sorted(names.items()))
            known = known if len(known) <= 300 else known[:299] + "…"
            raise ManifestError(f"unknown adapter '{ref[:60]}' (known: {known or 'none registered'})")
        if len({e.kind for e in found}) > 1:
            shared = ", ".join(f"{e.id} ({e.kind})" for e in found)
            raise ManifestError(f"adapter name '{ref}' is shared by {shared}: name one by its id")
        return found[-1]

    def adapter(self, ref: str) -> AdapterEntry:
        """`resolve`: an id, or a name for its newest version."""
        return self.resolve(ref)

    def next_id(self, name: str, taken=lambda ident: False) -> str:
        """The id of `name`'s next version, `<name>-<n>`: a new version never replaces an older one, so
        the user can go back. `taken(id)`: True where something else holds that id (a folder)."""
        key = name_key(name)
        pattern = re.compile(rf"^{re.escape(key)}-(\d+)$")
        n = max([int(m.group(1)) for i in self.adapters if (m := pattern.match(i))]
                + [1 if key in self.adapters else 0]) + 1
        while f"{key}-{n}" in self.adapters or taken(f"{key}-{n}"):
            n += 1
        return f"{key}-{n}"

    def check_name(self, name: str, kind: str) -> None:
        """A name belongs to one kind: `--adapter hamlet` must not mean a voice today, a persona tomorrow."""
        other = [e for e in self.versions(name) if e.kind != kind]
        if other:
            ids = ", ".join(e.id for e in other)
            raise ManifestError(f"adapter name '{name}' already belongs to {_a(other[-1].kind)} adapter ({ids}): "
                                f"{_a(kind)} adapter needs another name")

    def add_adapter(self, entry: AdapterEntry) -> None:
        if entry.id in self.adapters:
            raise ManifestError(f"adapter '{entry.id}' is already registered")
        entry.validate(f"adapters.{entry.id}")
        self.check_name(entry.name, entry.kind)
        self.adapters[entry.id] = entry

    def remove_adapter(self, ref: str) -> AdapterEntry:
        """Remove the version `ref` resolves to (a name: its newest). A user whose voice it was gets the
        name's newest remaining version back, as `--adapter NAME` would now pick it."""
        entry = self.resolve(ref)
        users = [e.id for e in self.adapters.values()
                 if e.parent == entry.id or any(s["id"] == entry.id for s in e.stack)]
        if users:
            raise ManifestError(f"adapter '{entry.id}' is used by {', '.join(users)}: remove those first")
        del self.adapters[entry.id]
        left = [e for e in self.versions(entry.name) if e.kind == entry.kind]
        for user in self.users.values():
            if user.get("voice_adapter") == entry.id:
                user["voice_adapter"] = left[-1].id if left else None
        return entry

    def remove_versions(self, ref: str) -> list[AdapterEntry]:
        """Remove every version of the name `ref` resolves to, newest first (a version trained on top of
        an older one goes before it); an adapter outside the name that uses one → nothing removed."""
        entry = self.resolve(ref)
        return [self.remove_adapter(e.id) for e in reversed(self.versions(entry.name))]

    def ensure_user(self, name: str) -> dict:
        return self.users.setdefault(name, {"name": name, "created": now_iso(), "voice_adapter": None})


class ManifestStore:
    """Reads and writes one vault's manifest. `update()` is the only way to change it."""

    def __init__(self, vault: Vault, lock_timeout: float = 30.0) -> None:
        self.vault = vault
        self.path = vault.manifest_path
        self.lock_timeout = lock_timeout

    def read(self) -> Manifest:
        """The manifest as on disk (an empty one if there is none yet); `ManifestError` if broken."""
        try:
            raw = self.path.read_bytes()
        except FileNotFoundError:
            return Manifest()
        except OSError as exc:
            raise ManifestError(f"{self.path}: cannot read ({exc.strerror})") from None
        try:
            data = loads(raw)
        except JSONProblem as exc:
            bak = self.path.with_name(self.path.name + ".bak")
            hint = f"; the last good copy is {bak}" if bak.exists() else ""
            why = f"line {exc.line} column {exc.column}: invalid JSON ({exc.msg})" if exc.line is not None else exc
            raise ManifestError(f"{self.path}: {why}{hint}") from None
        return Manifest.from_dict(data, str(self.path))

    @contextmanager
    def update(self) -> Iterator[Manifest]:
        """Lock, read, let the caller change the manifest, validate, keep a .bak, write atomically.

        An exception inside the block writes nothing.
        """
        try:
            lock = FileLock(self.vault.lock_path("manifest"), timeout=self.lock_timeout)
            lock.acquire()
        except LockTimeout as exc:
            raise ManifestError(str(exc)) from None
        try:
            manifest = self.read()
            yield manifest
            data = manifest.to_dict()
            Manifest.from_dict(json.loads(json.dumps(data)), f"{self.path} (about to be written)")
            if self.path.exists():
                atomic_write_bytes(self.path.with_name(self.path.name + ".bak"), self.path.read_bytes())
            atomic_write_json(self.path, data)
        finally:
            lock.release()
