"""The memory store's vectors as a memory-mapped file beside it: exact search that opens in O(1).

Why: loading every embedding from ChromaDB before the first search cost ~0.3 s per 10k items (3 s at 100k,
30 s at 1M) in every process that searches — each `home ask`. Here the rows live in `vectors-<gen>.f32`
(float32, one row per item version, appended) with `vectors-<gen>.user` (int32 per row: the user's code,
-1 for a row replaced or deleted); the keyword database maps ids to rows (`vec_rows`). A search maps the
files (the page cache holds them), scores every live row exactly (vault/retrieval.py's split product) —
past SIGN_ROWS rows only the sign codes' nearest candidates (vault/sign_codes.py), still exactly — and
looks up only the winning rows' ids. ChromaDB stays the store of record: this file is derived, and
rebuilt from ChromaDB when it is missing, of another width, or holds another number of items.

Crash order per write: new rows are appended dead and fsynced (a dead row is never found), the id map is
committed, then the rows are made live (fsynced). A replaced row is marked dead before the map moves,
so no row is ever live without an id. A rebuild fills a new generation's files, fsyncs them and commits
the map and the generation in one transaction; files of other generations are removed after.

So a reader in another process that reads the map in one transaction, and the files within it, sees one
consistent state (vault/memory_reader.py): `readonly` opens them without a write of any kind (no schema,
no cut of a torn tail, the sign codes kept in memory).
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np

from .blas import one_blas_thread
from .fsio import FILE_MODE, fsync_dir
from .sign_codes import SignCodes

SCHEMA = """
CREATE TABLE IF NOT EXISTS vec_rows(row INTEGER PRIMARY KEY, id TEXT NOT NULL UNIQUE);
CREATE TABLE IF NOT EXISTS vec_users(code INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE);
CREATE TABLE IF NOT EXISTS vec_meta(key TEXT PRIMARY KEY, value);
"""
DEAD = -1
SIGN_ROWS = 32768  # past this many rows (50 MB at 384-d) a search scores the sign codes' candidates, not every row
# rows scored exactly: at 100k, 2 % of the scan's bytes. Was 4000/64: on the 160k-item bench vault the exact
# top-36 kept by score went 99.3 -> 98.8 % and the hits of 72 queries stayed the same, for 2.3 ms less a search
CANDIDATES, CANDIDATES_PER = 2000, 32
_CHUNK = 500  # ids per SQL IN (...) (SQLite's default variable limit is far above)
GROW_ROWS = 4096  # the .f32 file's room grows by an eighth, at least this many rows (a sparse tail: no disk used)


class VectorFile:
    """Exact cosine search over memory-mapped float32 rows. Not thread-safe: the store's mutex guards it.
    `db` is the keyword database's connection (the id map lives beside the items' text). `readonly`: another
    process owns the files; its tables must exist, and only the reading methods may be called."""

    def __init__(self, folder: Path, db: sqlite3.Connection, dim: int, readonly: bool = False) -> None:
        one_blas_thread()
        self.folder, self.db, self.dim, self.readonly = Path(folder), db, dim, readonly
        self.rebuilds = 0  # how many times the files were rebuilt from the store of record (tests, bench)
        if not readonly:
            db.executescript(SCHEMA)
        meta = dict(db.execute("SELECT key, value FROM vec_meta"))
        self.gen = int(meta.get("gen", 0))
        self._items = int(meta.get("items", 0))
        self._dim_ok = int(meta.get("dim", dim)) == dim
        self._codes = {name: code for code, name in db.execute("SELECT code, name FROM vec_users")}
        self._rows = self._open_rows()
        self._m: np.ndarray | None = None
        self._u: np.ndarray | None = None
        self._whole: np.ndarray | None = None  # the .f32 file's mapping, room included
        self._signs: SignCodes | None = None

    # --- files ---

    def _path(self, ext: str, gen: int | None = None) -> Path:
        return self.folder / f"vectors-{self.gen if gen is None else gen}.{ext}"

    def _open_rows(self) -> int:
        """Rows present in both files; a torn append (a kill mid-write) is cut off. The `.user` file says
        how many rows there are: the `.f32` file may hold room past them (zeros, not yet written)."""
        try:
            f32, user = self._path("f32").stat().st_size, self._path("user").stat().st_size
        except OSError:
            return -1  # missing: rebuild
        row = 4 * self.dim
        n = min(f32 // row, user // 4)
        if self.readonly:  # a torn tail is the owner's to cut (or an append in flight: its rows are dead)
            return n
        if f32 % row:  # a partial row at the end
            os.truncate(self._path("f32"), f32 // row * row)
        if user != n * 4:
            os.truncate(self._path("user"), n * 4)
        return n

    def valid(self, expected: int) -> bool:
        """The files exist, have this width, and the map holds `expected` items (ChromaDB's count)."""
        if self._rows < 0 or not self._dim_ok or self._items != expected:
            return False
        top = self.db.execute("SELECT max(row) FROM vec_rows").fetchone()[0]
        return top is None or top < self._rows

    def _map(self) -> tuple[np.ndarray, np.ndarray]:
        """The rows and their users, mapped. The `.f32` file keeps its mapping across appends while they
        fit in its room (remapping after each turn's rows made the next search fault every page it read
        in again: 8.6 -> 25.7 ms per search at 160k rows); the small `.user` file is mapped again."""
        if self._m is None or len(self._m) != self._rows:
            if self._rows == 0:
                self._m, self._u = np.zeros((0, self.dim), np.float32), np.zeros(0, np.int32)
            else:
                if self._whole is None or len(self._whole) < self._rows:
                    room = self._path("f32").stat().st_size // (4 * self.dim)
                    self._whole = np.memmap(self._path("f32"), np.float32, "r", shape=(room, self.dim))
                self._m = self._whole[:self._rows]
                self._u = np.memmap(self._path("user"), np.int32, "r", shape=(self._rows,))
        return self._m, self._u

    @property
    def matrix(self) -> np.ndarray:
        """The rows as a read-only memory map (dead rows included)."""
        return self._map()[0]

    def _append(self, vectors: np.ndarray, dead_rows: Iterable[int]) -> int:
        """Append rows (dead), mark `dead_rows` dead, fsync both files. Returns the first new row."""
        start = self._rows
        row_bytes = 4 * self.dim
        with _fd(self._path("f32")) as fv, _fd(self._path("user")) as fu:
            room = os.fstat(fv).st_size // row_bytes
            if start + len(vectors) > room:  # room for the next appends: an eighth more (4096 rows at least)
                os.ftruncate(fv, max(start + len(vectors), room + max(GROW_ROWS, room // 8)) * row_bytes)
            os.pwrite(fv, np.ascontiguousarray(vectors, np.float32).tobytes(), start * row_bytes)
            os.pwrite(fu, np.full(len(vectors), DEAD, np.int32).tobytes(), start * 4)
            for row in dead_rows:
                os.pwrite(fu, np.int32(DEAD).tobytes(), row * 4)
            os.fsync(fv)
            os.fsync(fu)
        self._rows += len(vectors)
        return start

    def _set_codes(self, start: int, codes: np.ndarray) -> None:
        with _fd(self._path("user")) as fu:
            os.pwrite(fu, codes.astype(np.int32).tobytes(), start * 4)
            os.fsync(fu)

    # --- writing ---

    def _rows_of(self, ids: Sequence[str]) -> dict[str, int]:
        out: dict[str, int] = {}
        for i in range(0, len(ids), _CHUNK):
            chunk = list(ids[i:i + _CHUNK])
            marks = ",".join("?" * len(chunk))
            out.update(self.db.execute(f"SELECT id, row FROM vec_rows WHERE id IN ({marks})", chunk))
        return out

    def upsert(self, ids: Sequence[str], users: Sequence[str], vectors: np.ndarray) -> None:
        last = {ident: k for k, ident in enumerate(ids)}  # an id twice in one batch: its last version
        keep = sorted(last.values())
        ids = [ids[k] for k in keep]
        users = [users[k] for k in keep]
        vectors = np.asarray(vectors, np.float32)[keep]
        if not ids:
            return
        self._owner()
        old = self._rows_of(ids)
        start = self._append(vectors, old.values())
        for u in users:
            if u not in self._codes:
                self._codes[u] = len(self._codes)
        with self.db:
            self.db.executemany("INSERT OR IGNORE INTO vec_users(code, name) VALUES (?, ?)",
                                [(self._codes[u], u) for u in set(users)])
            self.db.executemany("DELETE FROM vec_rows WHERE id = ?", [(i,) for i in old])
            self.db.executemany("INSERT INTO vec_rows(row, id) VALUES (?, ?)",
                                [(start + k, ident) for k, ident in enumerate(ids)])
            self._items += len(ids) - len(old)
            self._meta(items=self._items)
        self._set_codes(start, np.array([self._codes[u] for u in users], np.int32))

    def delete(self, ids: Iterable[str]) -> None:
        self._owner()
        rows = self._rows_of(list(dict.fromkeys(ids)))
        if not rows:
            return
        with _fd(self._path("user")) as fu:
            for row in rows.values():
                os.pwrite(fu, np.int32(DEAD).tobytes(), row * 4)
            os.fsync(fu)
        with self.db:
            self.db.executemany("DELETE FROM vec_rows WHERE id = ?", [(i,) for i in rows])
            self._items -= len(rows)
            self._meta(items=self._items)

    def _owner(self) -> None:
        if self.readonly:
            raise RuntimeError(f"{self.folder}: the vector file is open read-only, its owner writes it")

    def _meta(self, **values: object) -> None:
        self.db.executemany("INSERT INTO vec_meta(key, value) VALUES (?, ?) "
                            "ON CONFLICT(key) DO UPDATE SET value = excluded.value", list(values.items()))

    def rebuild(self, pages: Iterable[tuple[Sequence[str], Sequence[str], np.ndarray]]) -> None:
        """New files from (ids, users, vectors) pages (the store of record's items), swapped in whole."""
        self._owner()
        gen = self.gen + 1
        paths = [self._path(ext, gen) for ext in ("f32", "user")]
        ids: list[str] = []
        codes: dict[str, int] = {}
        with _fd(paths[0], truncate=True) as fv, _fd(paths[1], truncate=True) as fu:
            for page_ids, page_users, vecs in pages:
                os.write(fv, np.ascontiguousarray(vecs, np.float32).tobytes())
                os.write(fu, np.array([codes.setdefault(u, len(codes)) for u in page_users], np.int32).tobytes())
                ids += page_ids
            os.fsync(fv)
            os.fsync(fu)
        fsync_dir(self.folder)
        with self.db:
            self.db.execute("DELETE FROM vec_rows")
            self.db.execute("DELETE FROM vec_users")
            self.db.executemany("INSERT INTO vec_rows(row, id) VALUES (?, ?)", enumerate(ids))
            self.db.executemany("INSERT INTO vec_users(code, name) VALUES (?, ?)", [(c, u) for u, c in codes.items()])
            self._meta(gen=gen, items=len(ids), dim=self.dim)
        self.gen, self._items, self._codes, self._rows, self._dim_ok = gen, len(ids), codes, len(ids), True
        self._m = self._u = self._whole = None
        self.rebuilds += 1
        self.remove_stale()

    def remove_stale(self) -> None:
        """Files of other generations (a rebuild's leftovers, or one a kill left half-written)."""
        self._owner()
        for p in self.folder.glob("vectors-*.*"):
            if not p.name.startswith(f"vectors-{self.gen}."):  # this generation's rows, users, sign codes
                p.unlink(missing_ok=True)

    # --- reading ---

    def __len__(self) -> int:
        return self._items

    def vector(self, ident: str) -> np.ndarray | None:
        row = self.db.execute("SELECT row FROM vec_rows WHERE id = ?", (ident,)).fetchone()
        return None if row is None else np.array(self._map()[0][row[0]])

    def vectors(self, ids: Sequence[str], known: dict[str, int] | None = None) -> dict[str, np.ndarray]:
        """The vectors of those of `ids` that have one (one query for them all: a search's candidates).
        `known`: rows of some of them (`top_many_rows`' hits, under the same hold of the store's mutex): only
        the others are looked up."""
        known = known or {}
        rows = {i: known[i] for i in ids if i in known}
        rows.update(self._rows_of([i for i in ids if i not in known]))
        if not rows:
            return {}
        got = self._map()[0].view(np.ndarray)[list(rows.values())]
        return dict(zip(rows, got, strict=True))

    def top(self, q: np.ndarray, n: int, user: str | None = None) -> list[str]:
        """Ids of the `n` live rows most similar to `q` (unit length), best first; only `user`'s when given.
        Past SIGN_ROWS rows, the rows scored are the sign codes' nearest candidates (vault/sign_codes.py)."""
        return self.top_many(np.asarray(q, np.float32)[None, :], n, user)[0]

    def top_many(self, qs: np.ndarray, n: int, user: str | None = None) -> list[list[str]]:
        """`top` for each row of `qs` (a question's parts): the mask, the sign codes' scan and the id lookup
        done once for them all; each query's candidates are scored as `top` scores them (the same ids)."""
        return [list(hits) for hits in self.top_many_rows(qs, n, user)]

    def top_many_rows(self, qs: np.ndarray, n: int, user: str | None = None) -> list[dict[str, int]]:
        """`top_many` with each id's row (best first): a search then reads their vectors without looking
        their rows up again (`vectors(ids, known)`: 0.4 ms of SQL a search at 100k items)."""
        from .retrieval import _top_rows

        m, u = self._map()
        if user is not None and user not in self._codes:
            return [{} for _ in qs]
        mask = u >= 0 if user is None else u == self._codes[user]
        valid = int(np.count_nonzero(mask))
        if not valid:
            return [{} for _ in qs]
        qs = np.asarray(qs, np.float32)
        if len(m) > SIGN_ROWS:
            n = min(n, valid)
            cands = self._sign_codes(m).candidates_many(qs, max(CANDIDATES, CANDIDATES_PER * n), mask)
            found_rows = [self._best_of(m, q, cand, n) for q, cand in zip(qs, cands, strict=True)]
        else:
            found_rows = [_top_rows(m.view(np.ndarray), q, min(n, valid), None if valid == len(m) else mask)
                          for q in qs]
        every = sorted({int(r) for rows in found_rows for r in rows})
        found = dict(self.db.execute(f"SELECT row, id FROM vec_rows WHERE row IN ({','.join('?' * len(every))})",
                                     every)) if every else {}
        return [{found[r]: r for r in map(int, rows) if r in found} for rows in found_rows]

    def warm(self) -> None:
        """Map the files and, past SIGN_ROWS, bring the sign codes up to date (a search would do it first)."""
        m = self._map()[0]
        if len(m) > SIGN_ROWS:
            self._sign_codes(m)

    def _sign_codes(self, m: np.ndarray) -> SignCodes:
        if self._signs is None or self._signs.sign.name != self._path("sign").name:
            self._signs = SignCodes(self.folder, self.gen, self.dim, self.readonly)
        self._signs.update(m)
        return self._signs

    @staticmethod
    def _best_of(m: np.ndarray, q: np.ndarray, cand: np.ndarray, n: int) -> np.ndarray:
        """The `n` best of the sign codes' candidate rows, scored exactly."""
        scores = m.view(np.ndarray)[cand] @ q  # (np.take into a reused array measured slower than this)
        best = np.argsort(-scores, kind="stable")[:n]
        return cand[best]


class _fd:
    """An O_RDWR descriptor (created 0600) as a context manager."""

    def __init__(self, path: Path, truncate: bool = False) -> None:
        flags = os.O_RDWR | os.O_CREAT | (os.O_TRUNC if truncate else 0)
        self.fd = os.open(path, flags, FILE_MODE)

    def __enter__(self) -> int:
        return self.fd

    def __exit__(self, *exc: object) -> None:
        os.close(self.fd)
