"""One hybrid search over the memory store's two indexes: exact vectors and FTS5 keywords, fused per turn.

Why a room of its own: the store (vault/memory_store.py) owns files, locks and writes; this is only the
read: the vector file's top rows, the keyword index's rare-term matches and the date window's turns form
the candidate pool, each candidate gets its exact cosine and its rank in each list, and
vault/retrieval.py's `rank` fuses them (floor, recency among near-equals, dedupe). A turn's sentence
items compete as one turn, and a gestalt found stands for its source turns (vault/memory_items.py's
`by_turn`, `fold_sources`). The caller holds the store's mutex.
"""

from __future__ import annotations

import sqlite3

import numpy as np

from .keyword_index import keyword_ids
from .memory_items import by_turn, split_sources
from .retrieval import Candidate, Hit, rank
from .vector_file import VectorFile

WINDOW_LIMIT = 400  # a date window holding more items than this is too wide to say anything


def hybrid_search(db: sqlite3.Connection, vectors: VectorFile, query: str, q: np.ndarray, k: int, pool: int,
                  user: str | None, window: tuple[float, float] | None, fill: float, total: int,
                  counts: dict[str, tuple[int, int]] | None = None, vec_hits: dict[str, int] | None = None) -> list[Hit]:
    """The best `k` turns for `query` (its embedding `q`); `total`: the store's item count, which caps
    the keyword search's terms, `counts` the terms' item counts kept between searches (vault/keyword_index.py).
    `vec_hits`: the vector file's top `pool` ids for `q` with their rows, when the caller already has them
    (`VectorFile.top_many_rows`)."""
    if vec_hits is None:
        vec_hits = vectors.top_many_rows(np.asarray(q, np.float32)[None, :], pool, user)[0]
    vec_ids = list(vec_hits)
    kw_ids = keyword_ids(db, query, pool, user, total, counts)
    ids = list(dict.fromkeys(vec_ids + kw_ids + in_window(db, window, user)))
    marks = ",".join("?" * len(ids))
    rows = db.execute(f"SELECT id, text, time, epoch, role, session, sources FROM docs WHERE id IN ({marks})",
                      ids).fetchall() if ids else []
    cands: dict[str, Candidate] = {}
    vecs = vectors.vectors(ids, vec_hits)
    for ident, text, when, epoch, role, session, sources in rows:
        v = vecs.get(ident)
        if v is not None:  # both indexes have it (a batch cut short is re-upserted by the indexer)
            cands[ident] = Candidate(ident, text, when or "", epoch or 0.0, role or "", session or "", v, float(v @ q),
                                     sources=split_sources(sources))
    for ranked, attr in ((vec_ids, "vec_rank"), (kw_ids, "kw_rank")):
        for r, ident in enumerate(ranked, 1):
            if ident in cands:
                setattr(cands[ident], attr, r)
    return by_turn(rank(cands.values(), query, 3 * k, window=window, fill=fill), k)


def search_many(db: sqlite3.Connection, vectors: VectorFile, queries: list[str], qs, k: int,  # noqa: ANN001
                user: str | None, window: tuple[float, float] | None, fill: float, pool: int | None, total: int,
                counts: dict[str, tuple[int, int]] | None = None) -> list[list[Hit]]:
    """`hybrid_search` for each query (a question's parts), by their embeddings `qs`: the vector file's scan
    is shared (`VectorFile.top_many_rows`). The store (its mutex held) and the read-only reader beside the
    owning app (vault/memory_reader.py, in one read transaction) both search through here."""
    pool = pool or max(4 * k, 20)
    tops = vectors.top_many_rows(np.asarray(qs, np.float32), pool, user) if len(queries) else []
    return [hybrid_search(db, vectors, q, v, k, pool, user, window, fill, total, counts, vec_hits=hits)
            if q.strip() and k > 0 else [] for q, v, hits in zip(queries, qs, tops, strict=True)]


def in_window(db: sqlite3.Connection, window: tuple[float, float] | None, user: str | None,
              limit: int = WINDOW_LIMIT) -> list[str]:
    """Items said inside the question's date window (candidates beside the two lists); none when the
    window holds more than `limit`."""
    if window is None:
        return []
    sql = "SELECT id FROM docs WHERE epoch >= ? AND epoch < ?" + (" AND user = ?" if user else "") + " LIMIT ?"
    rows = db.execute(sql, (*window, user, limit + 1) if user else (*window, limit + 1)).fetchall()
    return [r[0] for r in rows] if len(rows) <= limit else []
