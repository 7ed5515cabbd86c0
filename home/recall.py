"""Memory on the turn path: whether to search, what to put in the prompt, and indexing what was said.

One object per process that owns the vault's memory store (the app, or one `home ask`). Searching is
skipped for chit-chat (`should_retrieve`) and for turns of the conversation in progress (the model
already sees them); indexing runs off the turn path, in one background thread that coalesces requests,
so a reply never waits for an embedding batch.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime

import numpy as np

from vault.config import MemorySettings
from vault.layout import Vault
from vault.lore import lore_session
from vault.memory import MemoryBusyError, MemoryStore, index_logs
from vault.memory_items import fold_sources
from vault.query_plan import bridge, plan, statement_form, sub_queries
from vault.retrieval import FILL_FLOOR, Hit, fit_memory, should_retrieve
from vault.session_summary import extract as extract_summary
from vault.supersede import current

LORE_PREFIX = lore_session("")


def interleave(lists: list[list[Hit]]) -> list[Hit]:
    """The first hit of each list, then the second of each, …; a turn found twice is kept once."""
    seen: dict[str, Hit] = {}
    for rank in range(max((len(x) for x in lists), default=0)):
        for hits in lists:
            if rank < len(hits) and hits[rank].id not in seen:
                seen[hits[rank].id] = hits[rank]
    return list(seen.values())


@dataclass
class Recalled:
    """What memory contributed to one turn (all empty when it was skipped)."""

    block: str = ""
    ids: list[str] = field(default_factory=list)
    hits: list[Hit] = field(default_factory=list)
    searched: bool = False
    ms: float = 0.0
    queries: list[str] = field(default_factory=list)  # what was searched: the text, its parts, the rewrite
    rewrite: str | None = None  # the local model's search query (`[memory] rewrite`), when it wrote one
    rewrite_ms: float = 0.0


class Recall:
    """Search before a turn, index after it. `store` None: memory is off or owned by another process
    (`unavailable` says which), and every turn goes on without it."""

    def __init__(self, vault: Vault, store: MemoryStore | None, settings: MemorySettings,
                 unavailable: str | None = None) -> None:
        self.vault = vault
        self.store = store
        self.settings = settings
        self.unavailable = unavailable
        self.busy = False  # `store` is None only because another process owned the store
        self._wake = threading.Event()
        self._idle = threading.Event()
        self._idle.set()
        self._stop = False
        self._thread: threading.Thread | None = None
        self._start_lock = threading.Lock()  # index_soon runs on the turn thread and the loader: one indexer
        self._full = False  # a pass over every log was asked for (start-up)
        self._sessions: set[str] = set()  # else only these logs (the turn path's own session)
        self._ended: set[str] = set()  # chats just left: their session summaries are made (`[memory] summaries`)
        self.on_indexed: Callable[[int], None] | None = None  # called with the store's new count
        self.on_error: Callable[[str], None] | None = None  # a pass failed (one line); the next pass retries

    @classmethod
    def open(cls, vault: Vault, settings: MemorySettings, embedder=None) -> Recall:
        """Own the vault's memory store, or explain in `unavailable` why this process cannot.
        `embedder`: one already loaded (the router's) for `settings.embedder`; None loads it."""
        if not settings.enabled:
            return cls(vault, None, settings, "memory is off in config.toml ([memory] enabled = false)")
        if embedder is None and settings.embedder.strip():
            from vault.embedder import load_embedder

            embedder = load_embedder(settings.embedder)
        try:
            store = MemoryStore.open(vault, embedder)
        except MemoryBusyError as exc:
            busy = cls(vault, None, settings, str(exc))
            busy.busy = True  # another process has it now: worth trying again later (the app does)
            return busy
        return cls(vault, store, settings)

    @property
    def active(self) -> bool:
        return self.store is not None

    def count(self) -> int | None:
        return self.store.count() if self.store is not None else None

    # --- before a turn -----------------------------------------------------------------------

    def recall(self, text: str, user: str, session: str | None, count_tokens: Callable[[str], int],
               persona: str | None = None, now: datetime | None = None,
               vectors: Mapping[str, np.ndarray] | None = None,
               rewriter: Callable[[str], str | None] | None = None) -> Recalled:
        """The memory block for `text`, within the token budget; turns of `session` are left out, and so
        is persona lore (vault/lore.py) of any persona but `persona`: a character's sheet is what that
        character knows, not what every chat should be told.
        `vectors`: embeddings already made by text with the same embedder (`turn_vectors`, the turn path's
        one batch for the router and memory); `now`: when the question is asked (None: now), for time words ("in May", "last spring").
        `rewriter`: the local model's query rewrite (home/query_rewrite.py), called only when `[memory]
        rewrite` is on; its query is searched as one more part, beside the question, never instead."""
        if not self.searches(text):
            return Recalled()
        t0 = time.perf_counter()
        qp = plan(text, now)  # two-part questions searched part by part; time words → a date window
        rewrite, rewrite_ms = None, 0.0
        if self.settings.rewrite and rewriter is not None:
            t1 = time.perf_counter()
            rewrite = rewriter(text)
            rewrite_ms = (time.perf_counter() - t1) * 1000
            if rewrite and rewrite not in qp.queries:
                qp.queries.append(rewrite)
                qp.statements.append(statement_form(rewrite))
        vectors = self._query_vectors(qp, dict(vectors or {}))
        # the whole question and its parts in one pass over the vector file's sign codes (the same hits as one by one)
        lists = self.store.search_many(qp.queries, vectors, k=self.settings.k + 4, user=user, window=qp.window,
                                       fill=FILL_FLOOR)
        hops = [h for h in (bridge(q, found[0].text) for q, found in zip(qp.queries[1:], lists[1:], strict=True)
                            if found) if h]
        if hops:  # a two-part question's second hop, through the names its parts' first hits hold
            lists += self.store.search_many(hops, self.store.embedder.embed(hops), k=self.settings.k + 4, user=user,
                                            window=qp.window, fill=FILL_FLOOR)
        hits = fold_sources(interleave(lists))  # a gestalt found by one query, its turn by another: once
        own_lore = lore_session(persona) if persona else None
        hits = [h for h in hits if h.session != session
                and (not h.session.startswith(LORE_PREFIX) or h.session == own_lore)]
        hits = hits[: self.settings.k]
        block, used = fit_memory(hits, self.settings.budget_tokens, count_tokens, replaced=current(hits, text))
        return Recalled(block, [h.id for h in used], used, True, (time.perf_counter() - t0) * 1000, list(qp.queries),
                        rewrite, rewrite_ms)

    def searches(self, text: str) -> bool:
        """Whether a turn saying `text` searches memory (not for chit-chat, nor with memory off)."""
        return self.store is not None and self.settings.k > 0 and should_retrieve(text)

    def query_texts(self, text: str) -> list[str]:
        """What a search for `text` embeds: the text, its parts, their statement forms ([] when it does not
        search). The turn path embeds them with the message in one batch, which the router shares: one
        MiniLM call costs about the same for one short text as for three (reading the weights dominates),
        so a second call was ~8 ms more on every question with a statement form."""
        if not self.searches(text):
            return []
        queries = [text, *sub_queries(text)]
        return list(dict.fromkeys([*queries, *(s for s in map(statement_form, queries) if s)]))

    def _query_vectors(self, qp, known: dict) -> list:  # noqa: ANN001
        """One embedding per query, blended with its statement form's ("where do I live" + "i live"); what
        `known` lacks is embedded in one batch (and added to it)."""
        need = [t for t in dict.fromkeys([*qp.queries, *(s for s in qp.statements if s)]) if t not in known]
        if need:
            known.update(zip(need, self.store.embedder.embed(need), strict=True))
        out = []
        for q, st in zip(qp.queries, qp.statements, strict=True):
            v = known[q]
            if st:
                v = np.asarray(v, dtype=np.float32) + known[st]
                v = v / float(np.linalg.norm(v))
            out.append(v)
        return out

    # --- after a turn ------------------------------------------------------------------------

    def catch_up(self) -> int:
        """Index whatever the logs hold that the store has not seen (foreground; `home ask`)."""
        if self.store is None:
            return 0
        return index_logs(self.vault, self.store, summaries=self._summaries()).indexed

    def _summaries(self):  # noqa: ANN202
        """The session summariser when `[memory] summaries` is on (vault/session_summary.py), else None."""
        return extract_summary if self.settings.summaries else None

    def index_soon(self, session: str | None = None) -> None:
        """Ask the background indexer for a pass (returns at once; several asks make one pass): over
        `session`'s log only (what a turn just wrote: the cost stays flat however many logs there are),
        or over every log (None)."""
        with self._start_lock:
            if self.store is None or self._stop:
                return
            if session is None:
                self._full = True
            else:
                self._sessions.add(session)
            if self._thread is None:
                self._thread = threading.Thread(target=self._loop, name="home-memory-indexer", daemon=True)
                self._thread.start()
            self._idle.clear()
            self._wake.set()

    def session_ended(self, session: str) -> None:
        """A chat was left (a new or resumed one replaced it): with `[memory] summaries` on, the background
        indexer makes its summary now rather than at the next start-up."""
        if self.settings.summaries:
            with self._start_lock:
                self._ended.add(session)
            self.index_soon(session)

    def wait_idle(self, timeout: float | None = None) -> bool:
        """Block until no indexing pass is pending (tests, shutdown)."""
        return self._idle.wait(timeout)

    def _loop(self) -> None:
        while True:
            self._wake.wait()
            if self._stop:
                return
            with self._start_lock:
                self._wake.clear()
                full, sessions, ended = self._full, sorted(self._sessions), sorted(self._ended)
                self._full, self._sessions, self._ended = False, set(), set()
            try:
                index_logs(self.vault, self.store, sessions=None if full else sessions, summaries=self._summaries(),
                           ended=ended)
            except Exception as exc:  # noqa: BLE001 - a bad log must not kill the indexer; the app shows it
                self._tell(self.on_error, f"memory indexing failed: {type(exc).__name__}: {exc}")
            else:
                self._tell(self.on_indexed, self.store.count())
            if not self._wake.is_set():
                self._idle.set()

    @staticmethod
    def _tell(callback: Callable | None, arg: object) -> None:
        """A callback into the app; one that fails (the app closing under us) must not end the indexer."""
        if callback is None:
            return
        try:
            callback(arg)
        except Exception:  # noqa: BLE001, S110 - nobody left to tell; the next pass tells again
            pass

    def close(self) -> None:
        """Finish the pass in flight (its checkpoint keeps it resumable anyway) and release the store."""
        with self._start_lock:
            self._stop = True
            self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
        if self.store is not None:
            self.store.close()
            self.store = None


def turn_vectors(embedder, text: str, recall: Recall | None) -> dict[str, np.ndarray]:  # noqa: ANN001
    """A turn's embeddings by text, in one MiniLM call: the message (the router's) and what memory
    searches for it (`Recall.query_texts`). One call costs about the same for one short text as for
    three (reading the weights dominates), so a second one was ~8 ms more on every question with a
    statement form. The app's turn and `home ask` both make it."""
    texts = list(dict.fromkeys([text, *(recall.query_texts(text) if recall is not None else [])]))
    return dict(zip(texts, embedder.embed(texts), strict=True))
