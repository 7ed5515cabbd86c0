"""Query analysis before memory search (issue 13): two-part questions become sub-queries, time words a
date window. Rules, no model: this runs on every turn that searches, before the first token.

Why sub-queries: "What did my brother study, and where?" is two questions whose answers sit in two turns
of different sessions; one embedding of the whole lands between them and finds one (or neither). Each
part is searched on its own and the lists are interleaved after the whole question's own list.

Why a date window: "Which book did we read in March?" matches every book-club turn equally well; only
the date tells them apart. A window is the span the words name, relative to when the question is asked
(a month without a year is the latest one not after now; "last spring" the latest complete spring).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

MONTHS = ["january", "february", "march", "april", "may", "june", "july", "august", "september", "october",
          "november", "december"]
SEASONS = {"spring": (3, 5), "summer": (6, 8), "autumn": (9, 11), "fall": (9, 11), "winter": (12, 2)}
_WH = r"(?:what|where|when|which|who|whom|whose|why|how|does|did|do|is|are|was|were|can|could|would|should)"
_SPLIT = re.compile(rf"\s*(?:,\s*(?:and|or|but)\s+|;\s*|\s+and\s+(?={_WH}\b)|\?\s+(?=\S))", re.IGNORECASE)
_LEAD_WH = re.compile(rf"^\s*{_WH}\b\s*", re.IGNORECASE)
_UNITS = {"day": 1, "week": 7, "month": 30, "year": 365}
_NUMBERS = {"a": 1, "an": 1, "one": 1, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6, "few": 3, "couple": 2}


@dataclass
class QueryPlan:
    """What to search: `queries` (the whole text first), each one's `statements` form (or None), and an
    optional `window` (epoch seconds)."""

    text: str
    queries: list[str] = field(default_factory=list)
    statements: list[str | None] = field(default_factory=list)
    window: tuple[float, float] | None = None


def plan(text: str, now: datetime | None = None) -> QueryPlan:
    now = now or datetime.now(UTC)
    queries = [text, *sub_queries(text)]
    return QueryPlan(text, queries, [statement_form(q) for q in queries], time_window(text, now))


_SUBJ = r"(i|we)"
_STATEMENT = [  # question → the statement that would answer it, minus the answer
    (re.compile(rf"^(?:where|what|when|which|who|how|why)\s+(?:(\w+(?:\s+\w+)?)\s+)?(?:do|does|did)\s+{_SUBJ}\s+(.+)$"),
     lambda m: f"{m[2]} {m[3]} {m[1] or ''}"),
    (re.compile(r"^(?:what|where|who|which|when)(?:'s|\s+is|\s+are|\s+was|\s+were)\s+((?:my|our)\s+.+)$"),
     lambda m: f"{m[1]} is"),
    (re.compile(r"^(?:what|where|who|which|how)\s+(?:(\w+)\s+)?(?:am|was)\s+i\s+(.+)$"),
     lambda m: f"i am {m[2]} {m[1] or ''}"),
    (re.compile(rf"^(?:would|do|did|can|could|should|will|have)\s+{_SUBJ}\s+(.+)$"), lambda m: f"{m[1]} {m[2]}"),
    (re.compile(r"^(?:am|was)\s+i\s+(.+)$"), lambda m: f"i am {m[1]}"),
    (re.compile(r"^(?:is|are)\s+((?:my|our)\s+.+)$"), lambda m: m[1]),
]


def statement_form(question: str) -> str | None:
    """"Where do I live?" → "i live"; "Who is my partner?" → "my partner is"; "What am I allergic to?" →
    "i am allergic to". A fact is said as a statement, and MiniLM puts a statement nearer to another
    statement than a question is (searched blended with the question; None when no rule fits)."""
    q = " ".join(question.lower().strip(" ?.!").split())
    for pattern, build in _STATEMENT:
        m = pattern.match(q)
        if m:
            return " ".join(build(m).split())
    return None


def sub_queries(text: str) -> list[str]:
    """The parts of a two-part question (none for a one-part one). A bare "…, and where?" borrows the
    first part's words: "What did my brother study, and where?" → "where did my brother study"."""
    parts = [p.strip(" ?.!,") for p in _SPLIT.split(text.strip()) if p and p.strip(" ?.!,")]
    if len(parts) < 2:
        return []
    out = [parts[0]]
    for p in parts[1:]:
        if len(p.split()) <= 2 and _LEAD_WH.match(p) and _LEAD_WH.match(parts[0]):
            p = f"{p} {_LEAD_WH.sub('', parts[0], count=1)}"
        out.append(p)
    return out


def _month_span(year: int, month: int) -> tuple[datetime, datetime]:
    start = datetime(year, month, 1, tzinfo=UTC)
    end = datetime(year + (month == 12), month % 12 + 1, 1, tzinfo=UTC)
    return start, end


def time_window(text: str, now: datetime) -> tuple[float, float] | None:
    """The span (epoch seconds, start inclusive, end exclusive) the question's time words name, or None."""
    low = text.lower()
    if now.tzinfo is None:
        now = now.replace(tzinfo=UTC)
    m = re.search(r"\b(" + "|".join(MONTHS) + r")\b(?:\s+(\d{4}))?", low)
    if m and not (m.group(1) == "may" and not re.search(r"\bin may\b|\bmay \d{4}\b|\bof may\b|\blast may\b", low)):
        month = MONTHS.index(m.group(1)) + 1
        year = int(m.group(2)) if m.group(2) else now.year - (month > now.month)
        a, b = _month_span(year, month)
        return a.timestamp(), b.timestamp()
    m = re.search(r"\b(last|this)\s+(spring|summer|autumn|fall|winter)\b", low)
    if m:
        first, last = SEASONS[m.group(2)]
        year = now.year
        a, _ = _month_span(year, first)
        if a > now:
            if m.group(1) == "this":
                return None  # "this summer" in January: a plan, not a memory
            year -= 1  # "last spring" in January is the previous year's
        elif m.group(1) == "last":
            year -= 1
        a, _ = _month_span(year, first)
        _, b = _month_span(year + (last < first), last)
        return a.timestamp(), b.timestamp()
    m = re.search(r"\b(\d+|an?|one|two|three|four|five|six|few|couple)\s+(?:of\s+)?(day|week|month|year)s?\s+ago\b",
                  low)
    if m:
        n = int(m.group(1)) if m.group(1).isdigit() else _NUMBERS[m.group(1)]
        days = n * _UNITS[m.group(2)]
        centre, slack = now - timedelta(days=days), timedelta(days=max(2.0, days * 0.35))
        return (centre - slack).timestamp(), (centre + slack).timestamp()
    m = re.search(r"\b(yesterday|last week|last month|last year)\b", low)
    if m:
        span = {"yesterday": 1, "last week": 7, "last month": 31, "last year": 366}[m.group(1)]
        back = {"yesterday": 2, "last week": 14, "last month": 62, "last year": 731}[m.group(1)]
        return (now - timedelta(days=back)).timestamp(), (now - timedelta(days=back - span - 1)).timestamp()
    return None


_NAME = re.compile(r"(?<![.!?]\s)(?<!^)\b([A-Z][a-z]{2,})\b")
_NOT_NAMES = {"I", "I'm", "I've", "Dr", "Mr", "Mrs", "Ms", "Also", "Anyway", "Today", "The", "And", "But"}


def bridge(query: str, hit_text: str, most: int = 2) -> str | None:
    """A second hop: the names in the best hit that the query does not hold, added to it. "Where is my
    friend moving?" finds "My best friend Sophie got a job…"; "where is my friend moving Sophie" then
    finds "Sophie is moving to Hamburg" (keyword search weighs the rare name). None without a new name."""
    have = {w.lower() for w in re.findall(r"[\w']+", query)}
    names = [n for n in dict.fromkeys(_NAME.findall(hit_text)) if n not in _NOT_NAMES and n.lower() not in have]
    return f"{query} {' '.join(names[:most])}" if names else None
