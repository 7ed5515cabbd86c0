"""Forgetting, as the vault does it: the sources change first, then the memory index is told.

The conversation logs and the gestalt files are the source of truth; the memory index (vault/memory_*.py)
is derived from them and writes neither. So forgetting writes the sources: a turn gets an `exclude` event
in its session's log (the log stays append-only and fsynced; the indexer, search, distillation and the
trainer all honour the event), a gestalt's file is deleted and its hashes remembered so it is never
distilled again. Only then is the index told (`MemoryStore.forgotten`). When it cannot be told (another
process owns it, or it is damaged), nothing is lost: the sources already say what was forgotten, and the
index follows them at its next catch-up (`index_logs` applies new exclude events, `sync_gestalts` drops
items whose file is gone) or rebuild.

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

_SESSION = re.compile(r"[a-z0-9][a-z0-9.-]*")


@dataclass(frozen=True)
class Forgotten:
    """What `forget` did. `ids` in the order asked; `texts` what each said (from the sources); `indexed`
    False when no index was given: it drops them at its next catch-up."""

    ids: list[str]
    texts: dict[str, str] = field(default_factory=dict)
    indexed: bool = False


def forget(vault: Vault, ids: Sequence[str], store: MemoryStore | None = None,
           open_logs: Mapping[str, ConversationLog] | None = None) -> Forgotten:
    """Forget turns (`<session>:<turn>`) and gestalts (`gestalt:<id>`): sources first, then `store`.

    `open_logs` (session id → the ConversationLog the caller is writing, e.g. the app's current session):
    the event goes through it, so its turn counter stays right. `MemoryStoreError` naming an unknown id,
    before anything changes."""
    ids = list(ids)
    with FileLock(vault.lock_path("forget")):
        owners = {i: _gestalt_owner(vault, i) for i in ids if i.startswith(GESTALT_PREFIX)}
        sessions: dict[str, list[dict]] = {}
        turns = {i: _turn(vault, i, sessions) for i in ids if i not in owners}
        texts = {i: r.get("text", "") for i, r in turns.items()}
        for ident, user in owners.items():
            g = gs.forget_gestalt(vault, user, ident.removeprefix(GESTALT_PREFIX))
            texts[ident] = g.text if g is not None else ""
        for ident in turns:
            sid = ident.rpartition(":")[0]
            if ident in exclusions(sessions[sid]):
                continue  # forgotten before: one event is enough
            log = (open_logs or {}).get(sid) or ConversationLog.open(vault, sid)
            sessions[sid].append(log.append({"role": "event", "event": "exclude", "target": ident, "text": ""}))
    if store is not None:
        store.forgotten(ids)
    return Forgotten(ids, texts, indexed=store is not None)


def _gestalt_owner(vault: Vault, ident: str) -> str:
    user = gs.find_user(vault, ident.removeprefix(GESTALT_PREFIX))
    if user is None:
        raise MemoryStoreError(f"unknown memory id {ident!r}: no such gestalt file (see `home gestalts list`)")
    return user


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
