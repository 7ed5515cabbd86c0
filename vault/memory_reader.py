"""A read-only view of a memory store that another process owns: `home memory search` beside the chat app.

Why: the app owns the store while it runs (vault/memory_store.py: one owner, ChromaDB's local mode is
single-process), so a search from another terminal was refused. A search needs neither ChromaDB nor a
write: it reads the keyword database (SQLite, opened `mode=ro`, waiting out a commit of the app's) and the
memory-mapped vector file (vault/vector_file.py), and embeds the query. Each search reads the id map and
the files inside one read transaction: the app appends rows dead, commits the map, then makes them live,
and cannot commit while the transaction is open, so the view is one consistent state of the store.

What it does not do: index anything (the app indexes its own turns, a moment after it logs them), open
ChromaDB, rebuild a missing or stale vector file, write sign codes, chmod or create a file. A vector file
the app would rebuild is refused in one line instead. What it cannot check: ChromaDB's count (the store
of record), so a vector file behind ChromaDB after a crash is searched as it is until the app rebuilds it.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager

from .embedder import Embedder, load_embedder
from .hybrid_search import search_many
from .keyword_index import item_count, part_count
from .layout import Vault
from .memory_store import KEYWORD_DB, MemoryStoreError, check_embedder, read_state
from .retrieval import Hit
from .vector_file import VectorFile

BUSY_S = 10.0  # how long a read waits for the app's commit in progress (its batches commit in milliseconds)


class MemoryUnreadableError(MemoryStoreError):
    """The store cannot be read without writing to it (a vector file to rebuild); try again later."""

    exit_code = 1


class MemoryReader:
    """Searches one vault's memory store read-only; `MemoryStore.search`'s hits for the same state."""

    def __init__(self, vault: Vault, embedder: Embedder | None = None) -> None:
        self.dir = vault.memory_dir
        path = self.dir / KEYWORD_DB
        if not path.is_file():
            raise MemoryUnreadableError(f"{path}: no keyword index yet (the app creates it as it indexes)")
        self.state = read_state(self.dir)
        self._embedder = embedder
        try:
            self._db = sqlite3.connect(f"{path.absolute().as_uri()}?mode=ro", uri=True, timeout=BUSY_S, isolation_level=None)
        except sqlite3.Error as exc:
            raise MemoryUnreadableError(f"{path}: cannot open read-only ({exc})") from None

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> MemoryReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextmanager
    def _snapshot(self) -> Iterator[None]:
        """One read transaction: the app's commits wait for its end (keep it to the search itself)."""
        try:
            self._db.execute("BEGIN")
            try:
                yield
            finally:
                self._db.execute("ROLLBACK")
        except sqlite3.Error as exc:
            raise MemoryUnreadableError(f"{self.dir / KEYWORD_DB}: cannot read ({exc})") from None

    def count(self) -> int:
        """Remembered turns and gestalts, as `MemoryStore.count`."""
        with self._snapshot():
            return item_count(self._db) - part_count(self._db)

    @property
    def embedder(self) -> Embedder:
        """The embedder the store was built with (index.json), loaded on first use."""
        if self._embedder is None:
            self._embedder = load_embedder((self.state.get("embedder") or {}).get("ref"))
            check_embedder(self.dir, self.state.get("embedder"), self._embedder, self.count)
        return self._embedder

    def search(self, query: str, k: int = 5, user: str | None = None, pool: int | None = None,
               window: tuple[float, float] | None = None, fill: float = 1.0) -> list[Hit]:
        """`MemoryStore.search` on the store as the app last committed it. The query is embedded before the
        read transaction opens, so the app waits on it for milliseconds, not for the embedder."""
        if not query.strip() or k <= 0 or not self.count():  # an empty store: no embedder to load
            return []
        q = self.embedder.embed([query])[0]
        with self._snapshot():
            vf = self._vectors()
            return search_many(self._db, vf, [query], [q], k, user, window, fill, pool, item_count(self._db))[0]

    def _vectors(self) -> VectorFile:
        """The vector file as the current transaction sees it; refused when the app would rebuild it."""
        stale = MemoryUnreadableError(
            f"{self.dir}: the vector file is missing or out of date and only the running app may rebuild it "
            "(it does at its next search): try again in a moment")
        if self._db.execute("SELECT 1 FROM sqlite_master WHERE name = 'vec_meta'").fetchone() is None:
            raise stale
        dim = (self.state.get("embedder") or {}).get("dim") or self.embedder.dim
        vf = VectorFile(self.dir, self._db, int(dim), readonly=True)
        if not vf.valid(len(vf)):  # missing files, another width, or rows past the files' end
            raise stale
        return vf
