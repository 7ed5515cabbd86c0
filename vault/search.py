"""Full-text search over every session log: a scan, no index.

Why a scan: the logs are the source of truth and are appended by the app, the CLI and other
processes; an index would need its own upkeep and could go stale. Each file is read once and rejected
on its raw (lower-cased) text unless every term occurs in it, so only files that can match are parsed
(`bench/session_search.py`: ~1k sessions of 20 turns in tens of milliseconds). Matching is
case-insensitive, every term must occur in the record's text, "quoted words" stay one term (across
line breaks). Turns the user asked Home to forget (`exclude` events, `excluded` records) never show.
"""

from __future__ import annotations

import json
import re
import time
from dataclasses import dataclass, field

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
    sessions = list_sessions(vault)
    result.sessions = len(sessions)
    if not terms:
        return result
    # The raw line holds the text JSON-escaped ("a \"b\"" / "\n"): look for each word escaped the same way
    # (a phrase's words one by one: in the file they may be split by an escaped newline).
    raw_terms = [json.dumps(w, ensure_ascii=False)[1:-1] for t in terms for w in t.split()]
    texts: list[tuple[str, str]] = []
    excluded: set[str] = set()
    for s in sessions:
        try:
            text = s.path.read_text(encoding="utf-8", errors="replace")
        except OSError:
            continue
        if '"exclude"' in text:
            excluded |= _excluded_ids(text)
        texts.append((s.id, text))
    hits: list[SearchHit] = []
    for session, text in texts:
        low = text.lower()
        if "\\u" not in low and not all(t in low for t in raw_terms):
            continue
        for line in text.splitlines():
            hit = _match(line, terms, session, excluded)
            if hit is not None:
                hits.append(hit)
    hits.sort(key=lambda h: (h.time, h.session, h.record_id), reverse=True)
    result.truncated = len(hits) > limit
    result.hits = hits[:limit]
    result.elapsed_ms = (time.perf_counter() - started) * 1000
    return result


def _excluded_ids(text: str) -> set[str]:
    out = set()
    for line in text.splitlines():
        if '"exclude"' in line:
            try:
                rec = json.loads(line)
            except ValueError:
                continue
            if isinstance(rec, dict) and rec.get("event") == "exclude" and isinstance(rec.get("target"), str):
                out.add(rec["target"])
    return out


def _match(line: str, terms: list[str], session: str, excluded: set[str]) -> SearchHit | None:
    if not line.strip():
        return None
    try:
        rec = json.loads(line)
    except ValueError:
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
