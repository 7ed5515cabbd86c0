"""What the memory panel shows and forgets, as plain functions over a ChatSession (no widgets).

Every function here touches the memory store, the logs or the gestalt files: the panel calls them from
thread workers only. The store is the session's own (`session.recall.store`, owned by this process);
when it is None, `off_note` says why (off in config.toml, another Home process owns it, still opening).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from vault import gestalts as gs
from vault.forget import forget as forget_items
from vault.memory import GESTALT_PREFIX, MemoryStoreError
from vault.retrieval import Hit

SEARCH_K = 10
LORE_PREFIX = "lore-"  # vault/lore.py: a sheet's items are `lore-<persona>:<n>`
WHO = {"user": "you said", "assistant": "reply", "gestalt": "gestalt", "lore": "lore", "missing": "gone"}


@dataclass(frozen=True)
class Entry:
    """One memory item as the panel lists it. `id` is the memory id (`<session>:<turn>`,
    `gestalt:<id>`, `lore-<persona>:<n>`); `kind` is user, assistant, gestalt, lore or missing."""

    id: str
    kind: str
    text: str
    when: str = ""
    label: str = ""  # a gestalt's kind (fact, preference, …); else the WHO word

    @property
    def forgettable(self) -> bool:
        return self.kind != "lore"


@dataclass
class Overview:
    used: list[Entry] = field(default_factory=list)
    """The items the last reply's record lists in `memory_ids`, in that order."""
    gestalts: list[Entry] = field(default_factory=list)
    counts: dict | None = None
    """`store.stats()` (items, gestalts, …); None when memory is off."""
    note: str | None = None
    problems: list[str] = field(default_factory=list)
    """Gestalt files that do not parse (file:line: field: reason); they are left as they are."""


def store_of(session):  # noqa: ANN001, ANN201
    return session.recall.store if session.recall is not None else None


def off_note(session) -> str | None:  # noqa: ANN001
    """Why there is no store to read, or None when there is one."""
    if store_of(session) is not None:
        return None
    return session.memory_note or "memory is still opening (it starts once the model has loaded)"


def entry_from_hit(hit: Hit) -> Entry:
    kind = "lore" if hit.session.startswith(LORE_PREFIX) else hit.role
    return Entry(hit.id, kind, hit.text, hit.time, WHO.get(kind, kind))


def last_reply_record(session) -> dict | None:  # noqa: ANN001
    """The last reply of the chat on screen: this run's, else the newest one of a resumed session's log."""
    convo = session.conversation
    if convo is None:
        return None
    if convo.last is not None:
        return convo.last.record
    return next((r for r in reversed(convo.log.records()) if r.get("role") == "assistant"), None)


def load_overview(session) -> Overview:  # noqa: ANN001
    """Used by the last reply, the user's gestalts and the counts (a worker: store, logs and files)."""
    store, out = store_of(session), Overview(note=off_note(session))
    record = last_reply_record(session)
    for ident in (record or {}).get("memory_ids") or []:
        hit = store.get(ident) if store is not None else None
        out.used.append(entry_from_hit(hit) if hit is not None else
                        Entry(ident, "missing", "(not in memory now: forgotten, or memory is off)", "", WHO["missing"]))
    listing = gs.list_gestalts(session.vault, session.user)
    out.gestalts = [Entry(GESTALT_PREFIX + g.id, "gestalt", g.text, g.said, g.kind) for g in reversed(listing.gestalts)]
    out.problems = [str(e) for e in listing.problems]
    if store is not None:
        out.counts = store.stats()
    return out


def search(session, query: str) -> list[Entry]:  # noqa: ANN001
    """The user's memory items for `query` (hybrid search, as a turn's recall runs it); [] when off."""
    store = store_of(session)
    if store is None or not query.strip():
        return []
    return [entry_from_hit(h) for h in store.search(query, k=SEARCH_K, user=session.user)]


def forget(session, entry: Entry) -> str:  # noqa: ANN001
    """Forget one item; returns what happened in a line. A turn (a session summary: each turn it holds):
    out of memory and an `exclude` event in its log (through the chat's open log when it is this
    session's, under the turn lock so its turn numbers stay in order), so neither the indexer nor the
    trainer uses it again. A gestalt: its file is
    deleted, its hashes remembered (never distilled again), then memory follows the files. Lore comes
    from a character sheet and is refused. VaultError (one line) when it cannot."""
    if entry.kind == "lore":
        raise MemoryStoreError(f"{entry.id} is lore from a character sheet: edit the sheet, then run "
                               "`home personas from-sheets`")
    store, vault = store_of(session), session.vault
    if entry.id.startswith(GESTALT_PREFIX):
        ident = entry.id.removeprefix(GESTALT_PREFIX)
        user = gs.find_user(vault, ident)
        if user is None:
            raise MemoryStoreError(f"no gestalt file for {entry.id} any more (see `home gestalts list`)")
        forget_items(vault, [entry.id], store=store)  # the file first; the store, when there is one, after
        if store is not None:
            _recount(session, store)
        return f"forgot the gestalt {ident}: its file is deleted and it will not be learnt again"
    if store is None:
        raise MemoryStoreError(f"cannot forget {entry.id} now: {off_note(session)}")
    log = session.conversation.log if session.conversation is not None else None
    with session.turn_lock:  # the chat appends to the same log: one writer at a time
        done = forget_items(vault, [entry.id], store=store, open_logs={log.session: log} if log is not None else None)
    _recount(session, store)
    n = len(done.derived)
    learnt = f", with {n} gestalt{'s' * (n != 1)} learnt from it" if n else ""
    if entry.id in done.held:  # a session summary: the turns it held are what is forgotten
        turns = f"the {len(done.held[entry.id])} turns {entry.id} held"
        what = f"{turns} (it is remade from the others)" if entry.id in done.remade else f"{entry.id} and {turns}"
        return f"forgot {what}{learnt}: out of memory, and never used for training"
    return f"forgot {entry.id}{learnt}: out of memory, and never used for training"


def _recount(session, store) -> None:  # noqa: ANN001
    """The status bar's item count, as after an indexing pass."""
    if session.recall is not None and session.recall.on_indexed is not None:
        session.recall.on_indexed(store.count())
