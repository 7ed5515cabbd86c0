"""Forgetting, as the vault does it: the sources change first, then the memory index is told.

The conversation logs and the gestalt files are the source of truth; the memory index (vault/memory_*.py)
is derived from them and writes neither. So forgetting writes the sources: a turn gets an `exclude` event
in its session's log (the log stays append-only and fsynced; the indexer, search, distillation and the
trainer all honour the event), a gestalt's file is deleted and its hashes remembered so it is never
distilled again. A turn takes along the gestalts learnt from it alone (their files deleted the same
way): "forget that" means what Home learnt from it too. Only then is the index told
(`MemoryStore.forgotten`). When it cannot be told (another process owns it, or it is damaged), nothing is
lost: the sources already say what was forgotten, and the index follows them at its next catch-up
(`index_logs` applies new exclude events and remakes the session summaries that held them, `sync_gestalts`
drops items whose file is gone) or rebuild.

A session summary (`summary:<session>`, vault/session_summary.py) is derived from turns, so forgetting it
means forgetting what it holds: its source turns are forgotten as above (the store's item names them; with
no store, or none holding it, the log does, as `extract` would make it), and the summary is then remade
from the session's other statements, or dropped.

Every id is checked before anything is written, so an unknown id changes nothing. Writers hold
`locks/forget.lock`, so two forgets of one turn log one event.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from . import gestalts as gs
from .fsio import FileLock
from .layout import Vault
from .logs import ConversationLog, read_log
from .memory_store import GESTALT_PREFIX, MemoryStore, MemoryStoreError
from .memory_sync import exclusions
from .session_summary import SUMMARY_PREFIX, extract
from .session_summary import repair as repair_summaries

_SESSION = re.compile(r"[a-z0-9][a-z0-9.-]*")


@dataclass(frozen=True)
class Forgotten:
    """What `forget` did. `ids` in the order asked; `derived` the gestalts (`gestalt:<id>`) that went with
    the turns, learnt from them alone; `texts` what each said (from the sources); `indexed` False when no
    index was given: it drops them at its next catch-up. `held`: each summary id asked → the turns it held
    (forgotten with it); `remade`: those summaries the index still holds, remade from the turns left."""

    ids: list[str]
    texts: dict[str, str] = field(default_factory=dict)
    indexed: bool = False
    derived: list[str] = field(default_factory=list)
    held: dict[str, list[str]] = field(default_factory=dict)
    remade: list[str] = field(default_factory=list)


def forget(vault: Vault, ids: Sequence[str], store: MemoryStore | None = None,
           open_logs: Mapping[str, ConversationLog] | None = None) -> Forgotten:
    """Forget turns (`<session>:<turn>`), gestalts (`gestalt:<id>`) and session summaries
    (`summary:<session>`: the turns it holds): sources first, then `store`.

    A turn takes with it every gestalt learnt from it that no other standing turn backs
    (`gestalts.derived_from`): what was learnt from "forget that" must not reach a prompt either. A
    gestalt with another source still standing stays (the user said it again, elsewhere), and goes when
    that one is forgotten too. The derived files are deleted and the exclusions logged in one hold of
    the gestalts lock, under which distillation writes: a gestalt drawn from these turns meanwhile is
    either found here or refused there. Running it again on a forgotten turn removes what a crash left.

    `open_logs` (session id → the ConversationLog the caller is writing, e.g. the app's current session):
    the event goes through it, so its turn counter stays right. `MemoryStoreError` naming an unknown id,
    before anything changes."""
    ids = list(ids)
    with FileLock(vault.lock_path("forget")):
        owners = {i: _gestalt_owner(vault, i) for i in ids if i.startswith(GESTALT_PREFIX)}
        sessions: dict[str, list[dict]] = {}
        held, texts = {}, {}
        for i in ids:
            if i.startswith(SUMMARY_PREFIX):
                held[i], texts[i] = _summary(vault, i, store, sessions)
        asked = [t for i in ids if i not in owners for t in held.get(i, [i])]
        turns = {i: _turn(vault, i, sessions) for i in asked}
        texts |= {i: r.get("text", "") for i, r in turns.items()}
        with FileLock(vault.lock_path("gestalts")):
            learnt = [g for g in gs.derived_from(vault, turns, sessions) if GESTALT_PREFIX + g.id not in owners]
            for ident, user in owners.items():
                g = gs.forget_gestalt(vault, user, ident.removeprefix(GESTALT_PREFIX), locked=True)
                texts[ident] = g.text if g is not None else ""
            for g in learnt:
                gs.forget_gestalt(vault, g.user, g.id, locked=True)
                texts[GESTALT_PREFIX + g.id] = g.text
            for ident in turns:
                sid = ident.rpartition(":")[0]
                if ident in exclusions(sessions[sid]):
                    continue  # forgotten before: one event is enough
                log = (open_logs or {}).get(sid) or ConversationLog.open(vault, sid)
                sessions[sid].append(log.append({"role": "event", "event": "exclude", "target": ident, "text": ""}))
    derived = [GESTALT_PREFIX + g.id for g in learnt]
    remade = []
    if store is not None:
        store.forgotten(list(turns) + list(owners) + derived)
        repair_summaries(vault, store, turns, sessions)  # a session summary holding their words is remade
        remade = [i for i in held if store.get(i) is not None]
    return Forgotten(ids, texts, indexed=store is not None, derived=derived, held=held, remade=remade)


def _gestalt_owner(vault: Vault, ident: str) -> str:
    user = gs.find_user(vault, ident.removeprefix(GESTALT_PREFIX))
    if user is None:
        raise MemoryStoreError(f"unknown memory id {ident!r}: no such gestalt file (see `home gestalts list`)")
    return user


def _summary(vault: Vault, ident: str, store: MemoryStore | None,
             sessions: dict[str, list[dict]]) -> tuple[list[str], str]:
    """The turns summary `ident` holds and its text: the store's item when it has one (what was
    searched), else the summary the session's log makes now."""
    session = ident.removeprefix(SUMMARY_PREFIX)
    path = vault.logs_dir / f"{session}.jsonl"
    if not _SESSION.fullmatch(session) or not path.is_file():
        raise MemoryStoreError(f"unknown memory id {ident!r}: no session log {session}.jsonl (expected "
                               "summary:<session>, as `home memory search` prints)")
    item = store.get(ident) if store is not None else None
    if item is not None and item.sources:
        return list(item.sources), item.text
    if session not in sessions:
        sessions[session] = read_log(path).records
    got = extract(sessions[session])
    if got is None:
        raise MemoryStoreError(f"unknown memory id {ident!r}: session {session!r} has no summary (fewer than "
                               "two of its turns say something about you)")
    return list(got[1]), got[0]


def _turn(vault: Vault, ident: str, sessions: dict[str, list[dict]]) -> dict:
    """The logged user or assistant record `ident` names; each session's log is read once."""
    session, _, turn = ident.rpartition(":")
    path = vault.logs_dir / f"{session}.jsonl"
    if not _SESSION.fullmatch(session) or not turn.isdigit() or not path.is_file():
        raise MemoryStoreError(f"unknown memory id {ident!r} (expected <session>:<turn>, as `home "
                               "memory search` prints)")
    if session not in sessions:
        sessions[session] = read_log(path).records
    for rec in sessions[session]:
        if rec.get("id") == ident and rec.get("role") in ("user", "assistant"):
            return rec
    raise MemoryStoreError(f"unknown memory id {ident!r}: {path.name} has no such turn")
