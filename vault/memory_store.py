"""The memory store: one vault's vector index (ChromaDB) and keyword index (SQLite FTS5), searched together.

Why two stores: vectors find "where does my sister live?" → "Ana lives in Porto"; keywords find names,
numbers and rare words that a small embedder blurs. Both live in `<vault>/memory/` and both are derived
data, rebuilt from the vault's files by vault/memory_sync.py. Items are upserted under stable ids (a log
record's `<session>:<turn>`, a gestalt's `gestalt:<id>`), so writing one twice changes nothing. The store
never writes a log or a gestalt file: forgetting writes those first (vault/forget.py), then tells it.

One process owns the store at a time (ChromaDB's local mode is single-process): `MemoryStore.open` takes
`locks/memory.lock` without waiting and refuses with `MemoryBusyError` while another process holds it.
Other processes read the logs, or the store read-only without ChromaDB (vault/memory_reader.py).
"""

from __future__ import annotations

import os
import sqlite3
import threading
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from . import index_marks
from .embedder import DEFAULT_NAME, Embedder, load_embedder
from .errors import VaultError
from .fsio import DIR_MODE, FILE_MODE, FileLock, LockTimeout, atomic_write_json, ensure_private_dir
from .hybrid_search import search_many
from .keyword_index import SCHEMA, add_sources_column, item_count, open_counts, part_count
from .layout import Vault
from .memory_items import (
    PART,
    MemoryItem,
    epoch,
    indexable,
    item_from_record,
    join_sources,
    split_sources,
    turn_items,
)
from .retrieval import Hit
from .vector_file import VectorFile

STATE_FILE = "index.json"
KEYWORD_DB = "keyword.sqlite3"
CHROMA_DIR = "chroma"
COLLECTION = "turns"
GESTALT_PREFIX = "gestalt:"
_COLUMNS = ("id", "text", "session", "turn", "role", "user", "persona", "time", "sources", "epoch")


class MemoryStoreError(VaultError):
    """Bad input to the memory store (unknown id, wrong embedder); one line, exit 2."""


class MemoryBusyError(MemoryStoreError):
    """Another process owns the memory store (the running app); try again when it has closed."""

    exit_code = 1


class MemoryStore:
    """The vector + keyword index of one vault. Thread-safe: the app indexes in the background while
    the turn code searches."""

    def __init__(self, vault: Vault, embedder: Embedder | None, lock: FileLock) -> None:
        import chromadb
        from chromadb.config import Settings

        self.vault = vault
        self.dir = ensure_private_dir(vault.memory_dir)
        self._lock = lock
        self._mutex = threading.RLock()
        self._embedder = embedder
        self._checked = False
        self._matrix: VectorFile | None = None
        self._term_counts: dict[str, tuple[int, int]] = {}  # the keyword search's term counts (vault/keyword_index.py)
        self.state = read_state(self.dir)
        try:
            self._db = sqlite3.connect(self.dir / KEYWORD_DB, check_same_thread=False)
            self._db.executescript(SCHEMA)
            add_sources_column(self._db)
            open_counts(self._db)
            self.state["sessions"] = index_marks.load(self._db, self.state.get("sessions"))
            self._items = item_count(self._db)  # for the keyword search's rare-term cap
            self._client = chromadb.PersistentClient(path=str(self.dir / CHROMA_DIR),
                                                     settings=Settings(anonymized_telemetry=False))
            self._col = self._collection()
        except Exception as exc:  # a damaged index: it is derived data, say how to rebuild it
            err = MemoryStoreError(f"{self.dir}: cannot open the memory index ({type(exc).__name__}: {exc}); "
                                   f"it is rebuilt from the logs: move {self.dir} away, then `home memory reindex`")
            err.exit_code = 1
            raise err from None
        self.private()

    @classmethod
    def open(cls, vault: Vault, embedder: Embedder | None = None) -> MemoryStore:
        """Own the vault's memory store. `embedder` None → the one the store was built with (lazily)."""
        lock = FileLock(vault.lock_path("memory"), timeout=0)
        try:
            lock.acquire()
        except LockTimeout:
            raise MemoryBusyError(f"{vault.memory_dir}: the memory store is in use by another Home process "
                                  "(the chat app owns it while it runs)") from None
        try:
            return cls(vault, embedder, lock)
        except BaseException:
            lock.release()
            raise

    def _collection(self):
        # ChromaDB's HNSW graph keeps its default quality although searches read the vector file (every row,
        # or past 32k rows the sign codes' candidates: vault/vector_file.py): past some hundreds of thousands
        # of items even the codes outgrow the turn's budget (bench/memory_search.py's 1M point), and the graph
        # is then the way to candidates. A cheaper graph
        # (16 candidates, 8 links per insert) saved only ~3 % of ingest CPU.
        return self._client.get_or_create_collection(COLLECTION, embedding_function=None,
                                                      configuration={"hnsw": {"space": "cosine"}})

    def close(self) -> None:
        with self._mutex:
            if self._lock is None:
                return
            self.private()
            self._db.close()
            self._client.close()
            self._lock.release()
            self._lock = None

    def __enter__(self) -> MemoryStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- state, modes, embedder ---

    def save_state(self) -> None:
        data = dict(self.state, excluded=sorted(self.state["excluded"]))
        data.pop("sessions", None)  # one row per session in the keyword database (vault/index_marks.py)
        atomic_write_json(self.dir / STATE_FILE, data)

    def private(self) -> None:
        """ChromaDB and SQLite create their files with the umask; the vault keeps everything 0700/0600."""
        for root, dirs, files in os.walk(self.dir):
            for d in dirs:
                _chmod(Path(root, d), DIR_MODE)
            for f in files:
                _chmod(Path(root, f), FILE_MODE)

    @property
    def embedder(self) -> Embedder:
        """Loaded on first use (seconds: touch it early to warm up); checked once against the store's."""
        with self._mutex:
            if self._embedder is None:
                self._embedder = load_embedder((self.state.get("embedder") or {}).get("ref"))
            emb = self._embedder
            if not self._checked:
                check_embedder(self.dir, self.state.get("embedder"), emb, self.count)
                ref = None if emb.name == DEFAULT_NAME else str(getattr(emb, "path", emb.name))
                self.state["embedder"] = {"name": emb.name, "dim": emb.dim, "ref": ref}
                self._checked = True
            return emb

    # --- writing ---

    def upsert(self, records: Sequence[dict]) -> None:
        """Index log records (ids are their log ids; a turn's sentences under `<id>#<n>`, vault/memory_items.py);
        anything `indexable` refuses is left out. A text that changed (an edited record) loses the sentence
        items it no longer has."""
        self.write(*self.embed_records(records))

    def embed_records(self, records: Sequence[dict]) -> tuple[list[MemoryItem], np.ndarray]:
        """`upsert`'s first half, which takes no lock: the records' items and their vectors (the indexer
        embeds the next batch while `write` lands this one)."""
        items = [it for r in records if indexable(r) for it in turn_items(item_from_record(r))]
        # once checked, the embedder is read without the mutex, which a landing batch holds meanwhile
        emb = self._embedder if self._checked and self._embedder is not None else self.embedder
        return items, emb.embed([it.text for it in items])

    def write(self, items: Sequence[MemoryItem], vectors: np.ndarray) -> None:
        """`upsert`'s second half: drop the sentence items a turn no longer has, then land the items."""
        with self._mutex:
            stale = set(self._parts([it.id for it in items])) - {it.id for it in items}
            if stale:
                self.delete(sorted(stale))
            self._write_items(items, vectors)

    def upsert_items(self, items: Sequence[MemoryItem]) -> None:
        """Embed and land items as they are (gestalts; log records go through `upsert`)."""
        if items:
            vectors = self.embedder.embed([it.text for it in items])  # outside the mutex: searches go on
            self._write_items(items, vectors)

    def _write_items(self, items: Sequence[MemoryItem], vectors: np.ndarray) -> None:
        """Text and metadata into SQLite (FTS5), then the embeddings into ChromaDB and the vector file, all
        under the item's id (a second write replaces). In that order, so every vector has its row: a batch
        cut short leaves rows without vectors, which search skips and the next pass re-upserts, and the
        rows alone say what a session holds. ChromaDB gets ids and vectors only (its own metadata copy cost
        half its write time and nothing reads it)."""
        if not items:
            return
        rows = [(*it[:-1], join_sources(it.sources), epoch(it.time)) for it in items]
        with self._mutex:
            matrix = self._vectors()  # opened (or rebuilt) before ChromaDB changes, so this batch is appended
            with self._db:
                self._db.executemany(
                    f"INSERT INTO docs({', '.join(_COLUMNS)}) VALUES ({', '.join('?' * len(_COLUMNS))}) "
                    "ON CONFLICT(id) DO UPDATE SET " + ", ".join(f"{c}=excluded.{c}" for c in _COLUMNS[1:]),
                    rows)
            ids = [row[0] for row in rows]
            self._col.upsert(ids=ids, embeddings=vectors)
            matrix.upsert(ids, [row[5] for row in rows], vectors)
            self._items = item_count(self._db)

    def delete(self, ids: Sequence[str]) -> int:
        """Remove turns (and their sentence items) from both stores; unknown ids are ignored. Returns how
        many were indexed."""
        ids = list(ids)
        if not ids:
            return 0
        with self._mutex:
            ids += self._parts(ids)
            matrix = self._vectors()
            present = []
            for i in range(0, len(ids), 5000):  # under ChromaDB's batch limit (5461)
                chunk = self._col.get(ids=ids[i:i + 5000], include=[])["ids"]
                if chunk:
                    self._col.delete(ids=chunk)
                present += chunk
            matrix.delete(ids)
            with self._db:
                self._db.executemany("DELETE FROM docs WHERE id = ?", [(i,) for i in ids])
            self._items = item_count(self._db)
            return len(present)

    def delete_session(self, session: str) -> None:
        """Drop every turn of a session whose log file is gone (the logs are the source of truth)."""
        with self._mutex:
            # the rows name every item; ChromaDB's own metadata only items written before it held none
            ids = self._col.get(where={"session": session}, include=[])["ids"]
            ids += [i for (i,) in self._db.execute("SELECT id FROM docs WHERE session = ?", (session,))]
            self.delete(sorted(set(ids)))

    def reset(self) -> None:
        """Empty both stores and the checkpoint (before a rebuild from the logs). The embedder record
        stays, unless the store was opened with another embedder: an empty store adopts it."""
        with self._mutex:
            self._client.delete_collection(COLLECTION)
            self._col = self._collection()
            self._vectors().rebuild([])
            self._matrix = None  # reopened at the width of the embedder the store adopts next
            with self._db:
                self._db.execute("DELETE FROM docs")
            self._items = 0
            self._term_counts.clear()
            self.state = {"sessions": {}, "excluded": set(), "embedder": self.state.get("embedder")}
            index_marks.clear(self._db)
            self._checked = False
            self.save_state()

    def forgotten(self, ids: Sequence[str]) -> None:
        """The sources now exclude `ids` (vault/forget.py wrote them first): drop them from both stores and
        remember turn ids as excluded. Writes nothing outside the memory folder: the index follows the
        vault, it never edits a log or a gestalt file."""
        with self._mutex:
            ids = list(ids)
            known = self.state.setdefault("gestalts", {})
            for ident in ids:
                if ident.startswith(GESTALT_PREFIX):
                    known.pop(ident.removeprefix(GESTALT_PREFIX), None)
            self.delete(ids)
            self.state["excluded"].update(i for i in ids if not i.startswith(GESTALT_PREFIX))
            self.save_state()

    # --- reading ---

    def count(self) -> int:
        """Remembered turns and gestalts (a turn's sentence items are part of it, not counted). O(1): the
        keyword database's running counts (every item has its row there before its vector)."""
        with self._mutex:
            return item_count(self._db) - part_count(self._db)

    def vector_count(self) -> int:
        """Turns and gestalts with vectors in ChromaDB, the store of record (`home memory stats`)."""
        with self._mutex:
            return int(self._col.count()) - part_count(self._db)

    def keyword_count(self) -> int:
        """Turns and gestalts in the keyword index, counted row by row (`home memory stats`)."""
        with self._mutex:
            return int(self._db.execute("SELECT count(*) FROM docs WHERE instr(id, ?) = 0", (PART,)).fetchone()[0])

    def _parts(self, ids: Sequence[str]) -> list[str]:
        """The sentence items of these turns (ids `<turn>#<n>`: a range of the unique id index)."""
        out: list[str] = []
        for ident in ids:
            if PART not in ident:
                out += [r[0] for r in self._db.execute("SELECT id FROM docs WHERE id > ? AND id < ?",
                                                       (ident + PART, ident + PART + "\uffff"))]
        return out

    def get(self, ident: str) -> Hit | None:
        with self._mutex:
            row = self._db.execute("SELECT id, text, time, role, session, sources FROM docs WHERE id = ?",
                                   (ident,)).fetchone()
        return Hit(row[0], row[1], 1.0, row[2], row[3], row[4], split_sources(row[5])) if row else None

    def search(self, query: str, k: int = 5, user: str | None = None, pool: int | None = None,
               vector=None, window: tuple[float, float] | None = None,
               fill: float = 1.0) -> list[Hit]:  # noqa: ANN001
        """Hybrid search (exact vector + FTS5 keyword, fused, recency-ranked, deduplicated); `user` keeps
        only that user's turns. Empty list when nothing passes the similarity floor. `vector`: the
        query's embedding by this store's embedder, when the caller has it (the router made it). `window`:
        the span (epoch seconds) the question's time words name (vault/query_plan.py), ranked up; `fill`:
        see retrieval.rank (the turn path lets weaker turns join one that clears the floor)."""
        if not query.strip() or k <= 0:
            return []
        q = self.embedder.embed([query])[0] if vector is None else vector
        return self.search_many([query], [q], k, user, window, fill, pool)[0]

    def search_many(self, queries: list[str], vectors, k: int = 5, user: str | None = None,  # noqa: ANN001
                    window: tuple[float, float] | None = None, fill: float = 1.0,
                    pool: int | None = None) -> list[list[Hit]]:
        """`search` for each of a question's parts, by their embeddings: the vector file's scan is shared
        (`VectorFile.top_many_rows`: each word of the sign codes read once for them all); the same hits."""
        with self._mutex:
            return search_many(self._db, self._vectors(), queries, vectors, k, user, window, fill, pool, self._items,
                               self._term_counts)

    def warm(self) -> None:
        """Load the embedder and map the vectors now, e.g. in a background thread at app start, so the
        first turn that needs memory does not pay for it (a missing or stale vector file is rebuilt here, and
        a large one's sign codes brought up to date)."""
        self.embedder  # noqa: B018
        with self._mutex:
            self._vectors().warm()

    def _vectors(self) -> VectorFile:
        """The memory-mapped vectors (vault/vector_file.py), opened on first use; rebuilt from ChromaDB,
        the store of record, when missing or stale (~0.3 s per 10k items, once)."""
        if self._matrix is None:
            dim = (self.state.get("embedder") or {}).get("dim") or self.embedder.dim
            vf = VectorFile(self.dir, self._db, int(dim))
            if not vf.valid(self._col.count()):
                vf.rebuild(self._pages())
            self._matrix = vf
        return self._matrix

    def _pages(self):  # noqa: ANN202 - an iterator of (ids, users, vectors) for VectorFile.rebuild
        users = dict(self._db.execute("SELECT id, user FROM docs"))
        offset = 0
        while True:
            page = self._col.get(include=["embeddings"], limit=5000, offset=offset)
            if not page["ids"]:
                return
            yield page["ids"], [users.get(i, "") for i in page["ids"]], np.asarray(page["embeddings"], np.float32)
            offset += len(page["ids"])

    def stats(self) -> dict:
        with self._mutex:
            size = sum(p.stat().st_size for p in self.dir.rglob("*") if p.is_file())
            emb = self.state.get("embedder") or {"name": DEFAULT_NAME, "dim": None, "ref": None}
            return {"items": self.vector_count(), "keyword_items": self.keyword_count(),
                    "parts": part_count(self._db),
                    "sessions": len(self.state["sessions"]), "excluded": len(self.state["excluded"]),
                    "gestalts": len(self.state.get("gestalts", {})),
                    "embedder": emb.get("name"), "dim": emb.get("dim"), "bytes": size,
                    "updated": self.state.get("updated"), "path": str(self.dir)}


def read_state(folder: Path) -> dict:
    """`index.json`: the embedder the store was built with, the excluded ids, the gestalts known."""
    import json

    path = folder / STATE_FILE
    try:
        data = json.loads(path.read_text("utf-8")) if path.exists() else {}
    except (OSError, ValueError, RecursionError):
        data = {}  # a damaged checkpoint only costs a re-upsert of what is already there
    data.setdefault("sessions", {})
    data["excluded"] = set(data.get("excluded", []))
    data.setdefault("embedder", None)
    return data


def check_embedder(folder: Path, record: dict | None, emb: Embedder, count: Callable[[], int]) -> None:
    """Refuse an embedder other than the one a non-empty store was built with (`record`, index.json's)."""
    if record and (record.get("name"), record.get("dim")) != (emb.name, emb.dim) and count():
        raise MemoryStoreError(
            f"{folder}: indexed with embedder '{record.get('name')}' ({record.get('dim')}-d), not "
            f"'{emb.name}' ({emb.dim}-d): run `home memory reindex --rebuild` to re-embed")


def _chmod(path: Path, mode: int) -> None:
    try:
        if not path.is_symlink() and path.stat().st_mode & 0o777 != mode:
            os.chmod(path, mode)
    except OSError:
        pass  # a file chroma removed meanwhile
