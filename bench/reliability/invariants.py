"""What must hold in a vault after any kill -9: the checks the campaign runs after every kill, and the
suite's slices too.

A `Ledger` is what the driver knows is durable: every log record seen in an earlier check (a record once
in the log never leaves it), the adapters a finished operation reported and those it reported removed,
the gestalts seen, and what this run must have left (a user message whose reply was streaming, a turn
whose process exited 0). `check(vault, ledger)` compares the vault with it and sorts what is wrong:

- loss: a record, adapter or gestalt the ledger holds is gone or changed; memory lacks a logged turn;
- corruption: a log line that does not parse, a record twice (same id, or a user message logged twice), turn
  numbers that skip or repeat, a manifest that does not parse or names an adapter whose file is missing or
  differs from its sha256, an adapter reported removed that is back, a malformed or duplicated gestalt,
  memory holding what the sources do not (or the two stores disagreeing), a rebuild from the logs giving
  another count, or leftovers still there after the next start's sweep (`vault.orphans.clean_leftovers`).

Leftovers a kill left and the sweep put right are counted (`cleaned`), not faults: that is the design.
Files readable by others are listed (`exposed`) apart from losses and corruptions.
"""

from __future__ import annotations

import json
import os
import re
import stat
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from vault.errors import VaultError
from vault.fsio import file_sha256
from vault.gestalts import list_gestalts, normalise
from vault.layout import Vault
from vault.manifest import ManifestStore
from vault.memory_items import PART
from vault.memory_store import indexable
from vault.memory_sync import exclusions
from vault.orphans import clean_leftovers, find_leftovers

# Names no finished write leaves behind: our temps and `.old-` copies, editors' and tools' temps.
STRAY = re.compile(r"(\.tmp\b|\.tmp-|\.old-|\.partial$|~$|\.swp$)")


@dataclass
class Ledger:
    records: dict[str, tuple[str, str]] = field(default_factory=dict)  # id -> (role, text)
    adapters: dict[str, str] = field(default_factory=dict)  # id -> sha256, reported added
    removed: set[str] = field(default_factory=set)  # ids reported removed
    unsure: set[str] = field(default_factory=set)  # ids a killed operation was changing: either way is fine
    gestalts: dict[str, str | None] = field(default_factory=dict)  # id -> text (None: reported, any text)
    # This run's musts: user texts logged exactly once, and of those, the ones with a complete reply after.
    said: list[str] = field(default_factory=list)
    answered: list[str] = field(default_factory=list)

    def added(self, ident: str, sha256: str | None = None) -> None:
        self.adapters[ident] = sha256 or ""
        self.removed.discard(ident)

    def dropped(self, ident: str) -> None:
        self.adapters.pop(ident, None)
        self.removed.add(ident)


@dataclass
class Findings:
    losses: list[str] = field(default_factory=list)
    corruptions: list[str] = field(default_factory=list)
    cleaned: list[str] = field(default_factory=list)
    exposed: list[str] = field(default_factory=list)
    memory: int | None = None  # items in memory after the catch-up

    @property
    def ok(self) -> bool:
        return not self.losses and not self.corruptions


def log_records(vault: Vault, out: Findings) -> list[dict]:
    """Every record of every session log; damaged lines, repeated ids and turn numbers are corruptions."""
    from vault.logs import read_log

    records: list[dict] = []
    for path in sorted(vault.logs_dir.glob("*.jsonl")):
        read = read_log(path)
        out.corruptions += [f"log: {p}" for p in read.problems]
        turns = [r.get("turn") for r in read.records]
        if turns != list(range(1, len(turns) + 1)):
            out.corruptions.append(f"log: {path.name}: turns {turns[:3]}…{turns[-3:]} are not 1..{len(turns)}")
        users = Counter(r.get("text") for r in read.records if r.get("role") == "user")
        out.corruptions += [f"log: {path.name}: the user's {t!r} logged {n} times" for t, n in users.items()
                            if n > 1]
        records += read.records
    ids = Counter(r.get("id") for r in records)
    out.corruptions += [f"log: record {i} appears {n} times" for i, n in ids.items() if n > 1]
    return records


def check_logs(records: list[dict], ledger: Ledger, out: Findings) -> None:
    by_id = {r.get("id"): r for r in records}
    for ident, (role, text) in ledger.records.items():
        rec = by_id.get(ident)
        if rec is None:
            out.losses.append(f"log: record {ident} ({role} {text[:40]!r}) is gone")
        elif (rec.get("role"), rec.get("text")) != (role, text):
            out.losses.append(f"log: record {ident} changed")
    for text in ledger.said:
        n = sum(1 for r in records if r.get("role") == "user" and r.get("text") == text)
        if n == 0:
            out.losses.append(f"log: the user's {text!r} (reply was streaming) is not in the log")
    for text in ledger.answered:
        for i, r in enumerate(records):
            if r.get("role") == "user" and r.get("text") == text:
                # Its reply comes later in the session: next, unless another process wrote the session too.
                if not any(n.get("role") == "assistant" and not n.get("partial") and n.get("session") == r.get("session")
                           for n in records[i + 1:]):
                    out.losses.append(f"log: the completed reply to {text!r} is not in the log")
                break
        else:
            out.losses.append(f"log: the completed turn {text!r} is not in the log")


def check_manifest(vault: Vault, ledger: Ledger, out: Findings) -> dict[str, str]:
    """The manifest parses and every entry's file is there with its sha256. Returns id -> sha256."""
    try:
        manifest = ManifestStore(vault).read()
    except VaultError as exc:
        out.corruptions.append(f"manifest: {exc}")
        return {}
    have = {}
    for ident, entry in manifest.adapters.items():
        path = vault.root / entry.file
        if not path.is_file():
            out.corruptions.append(f"manifest: {ident} names {entry.file}, which is missing")
        elif file_sha256(path) != entry.sha256:
            out.corruptions.append(f"manifest: {ident}: {entry.file} is not the file registered (sha256)")
        have[ident] = entry.sha256
    for ident, sha in ledger.adapters.items():
        if ident in ledger.unsure:
            continue
        if ident not in have:
            out.losses.append(f"manifest: adapter {ident} (registered) is gone")
        elif sha and have[ident] != sha:
            out.losses.append(f"manifest: adapter {ident} changed")
    out.corruptions += [f"manifest: adapter {i} was removed and is back" for i in ledger.removed
                        if i in have and i not in ledger.unsure]
    return have


def check_gestalts(vault: Vault, ledger: Ledger, out: Findings) -> dict[str, str]:
    found = list_gestalts(vault)
    out.corruptions += [f"gestalts: {p}" for p in found.problems]
    have = {g.id: g.text for g in found.gestalts}
    twice = Counter(normalise(g.text) for g in found.gestalts)
    out.corruptions += [f"gestalts: {t!r} written {n} times" for t, n in twice.items() if n > 1]
    out.losses += [f"gestalts: {i} ({(t or '')[:40]!r}) is gone or changed" for i, t in ledger.gestalts.items()
                   if i not in have or (t is not None and have[i] != t)]
    return have


def sweep(vault: Vault, out: Findings) -> None:
    """What the next start does (`clean_leftovers`); after it nothing may be left, by its own finder or by
    name anywhere in the vault."""
    if find_leftovers(vault):
        out.cleaned += clean_leftovers(vault)
    out.corruptions += [f"leftover after the sweep: {lo.describe(vault.root)}" for lo in find_leftovers(vault)]
    for dirpath, dirnames, filenames in os.walk(vault.root):
        for name in dirnames + filenames:
            p = Path(dirpath) / name
            rel = p.relative_to(vault.root)
            if STRAY.search(name):
                out.corruptions.append(f"stray file after the sweep: {rel}")
            mode = stat.S_IMODE(os.lstat(p).st_mode)
            if mode & 0o077:
                out.exposed.append(f"{rel} {oct(mode)}")


def _stored(store) -> tuple[set[str], set[str]]:
    """The ids in the vector store and in the keyword store, sentence items included."""
    return (set(store._col.get(include=[])["ids"]),
            {i for (i,) in store._db.execute("SELECT id FROM docs")})


def check_memory(vault: Vault, records: list[dict], gestalts: dict[str, str], out: Findings, embedder=None,
                 rebuild: bool = True) -> None:
    """The store catches up to exactly the sources' items (every indexable turn not forgotten, every
    gestalt; a turn may be stored as its sentences too); a rebuild from the logs gives the same count."""
    from vault.memory import MemoryStore, MemoryStoreError, index_logs, reindex, sync_gestalts

    gone = exclusions(records)
    want = {r["id"] for r in records if indexable(r) and r["id"] not in gone}
    want |= {f"gestalt:{g}" for g in gestalts}
    try:
        with MemoryStore.open(vault, embedder) as store:
            index_logs(vault, store)
            sync_gestalts(vault, store)
            vec, words = _stored(store)
            out.memory = len(vec)
            for name, items in (("vector", vec), ("keyword", words)):
                have = {i.split(PART, 1)[0] for i in items}  # a turn's sentence items: `<turn id>#<n>`
                missing, extra = want - have, have - want
                if missing:
                    out.losses.append(f"memory ({name}): {len(missing)} items missing after catch-up, "
                                      f"e.g. {sorted(missing)[:3]}")
                if extra:
                    out.corruptions.append(f"memory ({name}): {len(extra)} items the sources do not hold, "
                                           f"e.g. {sorted(extra)[:3]}")
            if rebuild:
                reindex(vault, store, rebuild=True)
                vec2, words2 = _stored(store)
                if (vec2, words2) != (vec, words):
                    out.corruptions.append(f"memory: rebuilt {len(vec2)}/{len(words2)} items, caught up "
                                           f"{len(vec)}/{len(words)}; differing: {sorted(vec ^ vec2)[:3]}")
    except MemoryStoreError as exc:
        out.corruptions.append(f"memory: {exc}")


def check(vault: Vault, ledger: Ledger, *, embedder=None, rebuild: bool = True, memory: bool = True) -> Findings:
    """Every invariant, then the ledger takes in what the vault now holds (the next run must keep it)."""
    out = Findings()
    sweep(vault, out)  # first, as the next start would; adoption can add a manifest entry
    records = log_records(vault, out)
    check_logs(records, ledger, out)
    adapters = check_manifest(vault, ledger, out)
    gestalts = check_gestalts(vault, ledger, out)
    if memory:
        check_memory(vault, records, gestalts, out, embedder, rebuild)
    ledger.records.update({r["id"]: (r.get("role"), r.get("text")) for r in records if isinstance(r.get("id"), str)})
    for ident in ledger.unsure - set(adapters):
        ledger.dropped(ident)
    for ident, sha in adapters.items():
        ledger.adapters[ident] = sha
        ledger.removed.discard(ident)
    ledger.gestalts.update(gestalts)
    ledger.unsure.clear()
    ledger.said.clear()
    ledger.answered.clear()
    return out


def summary(kind: str, runs: int, losses: int, corruptions: int, **extra) -> str:
    """One JSON line per kind: what the bench prints last and the suite's slices assert on."""
    return json.dumps({"kind": kind, "runs": runs, "losses": losses, "corruptions": corruptions, **extra})
