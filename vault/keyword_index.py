"""The keyword half of memory search: SQLite FTS5 over the items' text, beside their metadata.

Why only rare terms are searched: keywords are there for what the embedder blurs (names, numbers, rare
words); a term found in a large share of the items says little (BM25 gives it almost no weight) but
costs the most, since FTS5 must score every item that holds it. At 100k turns an OR over six common
words took ~35 ms; counting a term's items first costs ~0.3 ms, and searching only the terms held by at
most max(50, 0.5 %) of the items brings the query to ~1–3 ms. A query of common words alone is left to
the vector search.
"""

from __future__ import annotations

import sqlite3

from .memory_items import PART
from .retrieval import STOPWORDS, words

SCHEMA = f"""
CREATE TABLE IF NOT EXISTS docs (rowid INTEGER PRIMARY KEY, id TEXT UNIQUE NOT NULL, text TEXT NOT NULL,
  session TEXT, turn INTEGER, role TEXT, user TEXT, persona TEXT, time TEXT, epoch REAL, sources TEXT);
CREATE VIRTUAL TABLE IF NOT EXISTS docs_fts USING fts5(text, content='docs', content_rowid='rowid',
  tokenize='porter unicode61');
CREATE TRIGGER IF NOT EXISTS docs_ai AFTER INSERT ON docs BEGIN
  INSERT INTO docs_fts(rowid, text) VALUES (new.rowid, new.text); END;
CREATE TRIGGER IF NOT EXISTS docs_ad AFTER DELETE ON docs BEGIN
  INSERT INTO docs_fts(docs_fts, rowid, text) VALUES ('delete', old.rowid, old.text); END;
CREATE TRIGGER IF NOT EXISTS docs_au AFTER UPDATE ON docs BEGIN
  INSERT INTO docs_fts(docs_fts, rowid, text) VALUES ('delete', old.rowid, old.text);
  INSERT INTO docs_fts(rowid, text) VALUES (new.rowid, new.text); END;
CREATE TABLE IF NOT EXISTS doc_counts (k INTEGER PRIMARY KEY CHECK (k = 0), items INTEGER NOT NULL,
  parts INTEGER NOT NULL);
CREATE TRIGGER IF NOT EXISTS docs_count_ai AFTER INSERT ON docs BEGIN
  UPDATE doc_counts SET items = items + 1, parts = parts + (instr(new.id, '{PART}') > 0); END;
CREATE TRIGGER IF NOT EXISTS docs_count_ad AFTER DELETE ON docs BEGIN
  UPDATE doc_counts SET items = items - 1, parts = parts - (instr(old.id, '{PART}') > 0); END;
"""
RARE_MIN = 50  # a term in at most this many items is always searched
RARE_SHARE = 0.005  # … and in larger stores, one in at most this share of them
COUNT_DRIFT = 0.1  # a term's kept count is taken again once the store's total moved this much since
COUNTS_KEPT = 20000  # terms whose counts are kept (a few MB at most); past it they are counted afresh


def query_terms(query: str) -> list[str]:
    terms = [w.replace("'", "") for w in words(query) if w not in STOPWORDS]
    return list(dict.fromkeys(t for t in terms if t))


def add_sources_column(db: sqlite3.Connection) -> None:
    """A database made before gestalts kept their source turns gains the column (NULL: none known; the
    gestalts are re-upserted with them at the next sync, their signature having changed)."""
    if "sources" not in {row[1] for row in db.execute("PRAGMA table_info(docs)")}:
        with db:
            db.execute("ALTER TABLE docs ADD COLUMN sources TEXT")


def open_counts(db: sqlite3.Connection) -> None:
    """Start the running counts (kept by the docs_count triggers) for a database made before they were:
    one scan, once. Why counts at all: `count(*)` reads every row (~10 ms at 100k items), and the store
    counts after every turn's indexing."""
    with db:
        if db.execute("SELECT 1 FROM doc_counts").fetchone() is None:
            db.execute(f"INSERT INTO doc_counts SELECT 0, count(*), count(*) FILTER (WHERE instr(id, '{PART}') > 0) "
                       "FROM docs")


def item_count(db: sqlite3.Connection) -> int:
    """Items in the keyword index, sentence items included (O(1): the running count)."""
    row = db.execute("SELECT items FROM doc_counts").fetchone()
    return int(row[0]) if row else int(db.execute("SELECT count(*) FROM docs").fetchone()[0])


def part_count(db: sqlite3.Connection) -> int:
    """Sentence items (`<turn>#<n>`) among them (O(1))."""
    row = db.execute("SELECT parts FROM doc_counts").fetchone()
    if row:
        return int(row[0])
    return int(db.execute("SELECT count(*) FROM docs WHERE instr(id, ?) > 0", (PART,)).fetchone()[0])


def rare_terms(db: sqlite3.Connection, terms: list[str], total: int,
               counts: dict[str, tuple[int, int]] | None = None) -> list[str]:
    """The terms held by at most the cap's items. `counts` (term → (items holding it, the store's total
    then)): counts kept from earlier searches, used while the total is within COUNT_DRIFT of the one they
    were taken at. The common words a user repeats are the costly ones to count (~0.5 ms each at 100k,
    2 of a search's 14 ms of CPU); a count that drifted only decides whether a term is searched."""
    cap = max(RARE_MIN, int(total * RARE_SHARE))
    if total <= cap:
        return terms  # a small store: every term is worth searching, and counting would cost more
    sql = "SELECT count(*) FROM docs_fts WHERE docs_fts MATCH ?"
    out = []
    for t in terms:
        known = counts.get(t) if counts is not None else None
        if known is None or abs(total - known[1]) > COUNT_DRIFT * known[1]:
            known = (db.execute(sql, (f'"{t}"',)).fetchone()[0], total)
            if counts is not None:
                if len(counts) >= COUNTS_KEPT:
                    counts.clear()
                counts[t] = known
        if known[0] <= cap:
            out.append(t)
    return out


def keyword_ids(db: sqlite3.Connection, query: str, limit: int, user: str | None, total: int,
                counts: dict[str, tuple[int, int]] | None = None) -> list[str]:
    """Ids of the items best matching the query's rare terms (BM25), best first; only `user`'s if given.
    `counts`: see rare_terms."""
    terms = rare_terms(db, query_terms(query), total, counts)
    if not terms:
        return []
    match = " OR ".join(f'"{t}"' for t in terms)
    sql = ("SELECT docs.id FROM docs_fts JOIN docs ON docs.rowid = docs_fts.rowid WHERE docs_fts MATCH ?"
           + (" AND docs.user = ?" if user else "") + " ORDER BY bm25(docs_fts) LIMIT ?")
    args = (match, user, limit) if user else (match, limit)
    return [row[0] for row in db.execute(sql, args)]
