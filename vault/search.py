"""Full-text search over every session log: a scan, no index.

Why a scan: the logs are the source of truth and are appended by the app, the CLI and other
processes; an index would need its own upkeep and could go stale. Each file is read once and rejected
on its raw (lower-cased) text unless every term occurs in it, then line by line, so only lines that can
match are parsed; once `limit` hits are in hand, a session last written before all of them is skipped
(its records are older). `bench/session_search.py` measures it on 1k and 10k sessions. Matching is
case-insensitive, every term must occur in the record's text, "quoted words" stay one term (across
line breaks). Turns the user asked Home to forget (`exclude` events, `excluded` records) never show.
"""

from __future__ import annotations

import heapq
import json
import re
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime

from .layout import Vault
from .logs import list_sessions

SNIPPET_CHARS = 90
_TERMS = re.compile(r'"([^"]+)"|(\S+)')


@dataclass(frozen=True)
class SearchHit:
    session: str
    record_id: str
    time: str
    role: str
    who: str  # the user's name for their turns, else the persona (or "home")
    snippet: str  # the text around the first match, on one line
    spans: tuple[tuple[int, int], ...]  # where the terms are in the snippet (highlighting)


@dataclass
class SearchResult:
    query: str
    hits: list[SearchHit] = field(default_factory=list)
    sessions: int = 0  # how many session files were scanned
    truncated: bool = False  # more hits than `limit`
    elapsed_ms: float = 0.0


def terms_of(query: str) -> list[str]:
    return [" ".join((a or b).split()).lower() for a, b in _TERMS.findall(query) if (a or b).strip()]


def search_logs(vault: Vault, query: str, limit: int = 100) -> SearchResult:
    """Records whose text holds every term, newest first; at most `limit`."""
    started = time.perf_counter()
    result = SearchResult(query)
    terms = terms_of(query)
    sessions = list_sessions(vault)  # newest first (last write)
    result.sessions = len(sessions)
    if not terms:
        return result
    # The raw line holds the text JSON-escaped ("a \"b\"" / "\n"): look for each word escaped the same way
    # (a phrase's words one by one: in the file they may be split by an escaped newline).
    raw_words = [_escaped(w) for t in terms for w in t.split()]
    raw_terms = [_escaped(t) for t in terms]
    texts: list[tuple[str, str, str]] = []
    excluded: set[str] = set()
    for s in sessions:
        try:
            text = s.path.read_text(encoding="utf-8", errors="replace")
        except OSError:
            continue
        if '"exclude"' in text:
            excluded |= _excluded_ids(text)
        texts.append((s.id, _iso(s.modified), text))
    hits: list[SearchHit] = []
    newest: list[str] = []  # min-heap of the `limit` newest hit times so far
    for session, last_write, text in texts:
        low = text.lower()
        escaped = "\\u" in low  # \uXXXX escapes (another writer): no raw prefilter for this file
        if not escaped and not all(w in low for w in raw_words):
            continue
        if len(newest) >= limit and last_write < newest[0]:
            result.truncated = True  # every record here is older than the hits we keep
            continue
        for line, low_line in zip(text.splitlines(), low.splitlines(), strict=False):
            if not escaped and not _could_match(low_line, raw_terms, raw_words):
                continue
            hit = _match(line, terms, session, excluded)
            if hit is None:
                continue
            hits.append(hit)
            if len(newest) < limit:
                heapq.heappush(newest, hit.time)
            elif hit.time > newest[0]:
                heapq.heapreplace(newest, hit.time)
    hits.sort(key=lambda h: (h.time, h.session, h.record_id), reverse=True)
    result.truncated = result.truncated or len(hits) > limit
    result.hits = hits[:limit]
    result.elapsed_ms = (time.perf_counter() - started) * 1000
    return result


def _escaped(term: str) -> str:
    return json.dumps(term, ensure_ascii=False)[1:-1]


def _could_match(low_line: str, raw_terms: list[str], raw_words: list[str]) -> bool:
    """Cheap test on the raw line before parsing it. A phrase is looked for whole unless the line has
    whitespace that folding would change (an escaped newline or tab, a double space)."""
    if "\\n" in low_line or "\\t" in low_line or "\\r" in low_line or "  " in low_line:
        return all(w in low_line for w in raw_words)
    return all(t in low_line for t in raw_terms)


def _iso(mtime: float) -> str:
    """A file's last write in the records' own time format, so the two compare as strings."""
    return datetime.fromtimestamp(mtime, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _excluded_ids(text: str) -> set[str]:
    out = set()
    for line in text.splitlines():
        if '"exclude"' in line:
            try:
                rec = json.loads(line)
            except (ValueError, RecursionError):
                continue
            if isinstance(rec, dict) and rec.get("event") == "exclude" and isinstance(rec.get("target"), str):
                out.add(rec["target"])
    return out


def _match(line: str, terms: list[str], session: str, excluded: set[str]) -> SearchHit | None:
    if not line.strip():
        return None
    try:
        rec = json.loads(line)
    except (ValueError, RecursionError):
        return None  # a torn line: read_log reports those; search just skips them
    if not isinstance(rec, dict) or rec.get("role") not in ("user", "assistant") or rec.get("excluded"):
        return None
    text = rec.get("text")
    if not isinstance(text, str) or rec.get("id") in excluded:
        return None
    low = " ".join(text.split()).lower()  # a phrase matches across line breaks
    if not all(t in low for t in terms):
        return None
    who = rec.get("user") if rec["role"] == "user" else rec.get("persona") or "home"
    snippet, spans = snippet_of(text, terms)
    return SearchHit(session, str(rec.get("id", "")), str(rec.get("time", "")), rec["role"], str(who or "?"),
                     snippet, spans)


def snippet_of(text: str, terms: list[str], width: int = SNIPPET_CHARS) -> tuple[str, tuple[tuple[int, int], ...]]:
    """About `width` characters around the first match, whitespace folded to single spaces."""
    flat = " ".join(text.split())
    low = flat.lower()
    first = min((i for i in (low.find(t) for t in terms) if i >= 0), default=0)
    start = max(0, first - width // 3)
    end = min(len(flat), start + width)
    start = max(0, min(start, end - width))
    snippet = ("…" if start else "") + flat[start:end] + ("…" if end < len(flat) else "")
    low_snip = snippet.lower()
    spans = []
    for t in terms:
        i = low_snip.find(t)
        while i >= 0:
            spans.append((i, i + len(t)))
            i = low_snip.find(t, i + len(t))
    return snippet, tuple(sorted(spans))
