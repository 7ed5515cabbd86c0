"""Session summaries: one memory item per ended session that stands for the turns it was drawn from (issue 13).

`summary:<session>` holds what the user said about themselves in that session, and its `sources` are
exactly the turns whose sentences it holds (extractive) or that a model summary was made from: a hit on
it counts those turns as found, never the session's other turns (a summary pointing to every turn of a
session would make recall look better than the block is). Its session is the log's, so deleting the log
takes it, and the chat in progress never sees its own summary.

Extractive (`extract`, no model): the session's user sentences that carry something about the user: a
statement (not a question, not a request) in the first person ("I get dizzy even on a stepladder", "My
cousin Marta got a rabbit"), in the order said, up to MAX_WORDS (MiniLM reads 256 word pieces). A
model summary (home/session_summary_model.py) is made from the same sentences.

Off by default (`[memory] summaries = false`): bench/memory_recall.py --summaries extract, beside the
default in one run (156 questions, R@5 / R@10 / MRR): overall 0.768/0.866/0.547 -> 0.793/0.884/0.544;
multi-hop 0.722/0.806 -> 0.806/0.833, temporal R@5 0.852 -> 0.963, inference 0.533/0.667 -> 0.600/0.733,
but single facts R@5 0.833 -> 0.792 and updated facts R@5 0.933 -> 0.867, newer-first 1.0 -> 0.867 (a
summary takes a top-5 place from a lone fact, and one holding a stale statement can rank above the newer
one). Without the supersede rule below (and with one-sentence summaries) it reached R@10 0.899, but put the
stale line first in 3 of the 15 updated questions.
Cost: 41 summaries for 45 sessions, 0.51-0.57 s in the indexing pass (~12 ms a session, one MiniLM call
each). A model summary (the default 135M) measured no better and 45x dearer: home/session_summary_model.py.

A summary holding a statement that a newer line replaces is replaced with it (vault/supersede.py).
Derived data, like every item: made from the logs by the background indexer (vault/memory_sync.py
`index_logs(summaries=...)`), never on the turn path, and rebuilt from the log when a turn of it is
forgotten (vault/forget.py), so a forgotten sentence leaves the summary and its source with it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence

from .logs import exclusions, read_log
from .memory_items import MemoryItem, indexable, sentences
from .retrieval import is_question, should_retrieve, words

SUMMARY_PREFIX = "summary:"
SUMMARY_ROLE = "summary"
MAX_WORDS = 100
MIN_SOURCES = 2  # one fact sentence alone is already an item (the turn, or its sentence item)
FIRST_PERSON = frozenset({"i", "i'm", "i've", "i'd", "i'll", "my", "mine", "myself", "im", "ive", "we", "our"})
REQUEST = frozenset({"tell", "give", "help", "plan", "write", "suggest", "make", "show", "explain", "can", "could",
                     "would", "please", "let's", "remind", "find", "list", "draft", "translate", "summarise",
                     "summarize", "recommend", "what", "how", "why", "where", "when", "who", "which", "check",
                     "describe", "name", "create", "any", "quick", "random"})

# (text, source turn ids) from a session's records, or None when it says nothing worth a summary
Summariser = Callable[[Sequence[dict]], "tuple[str, tuple[str, ...]] | None"]


def summary_id(session: str) -> str:
    return SUMMARY_PREFIX + session


def fact_sentences(records: Sequence[dict]) -> list[tuple[str, str]]:
    """(sentence, turn id) for each user sentence that states something about the user, in order; none
    from forgotten or partial turns."""
    gone = exclusions(records)
    out = []
    for r in records:
        if r.get("role") != "user" or not indexable(r) or r["id"] in gone:
            continue
        for s in sentences(r["text"]) or [r["text"]]:
            ws = words(s)
            if ws and ws[0] not in REQUEST and set(ws) & FIRST_PERSON and not is_question(s) and should_retrieve(s):
                out.append((" ".join(s.split()), r["id"]))
    return out


def kept_sentences(records: Sequence[dict], max_words: int = MAX_WORDS,
                   min_sources: int = MIN_SOURCES) -> tuple[list[str], tuple[str, ...]] | None:
    """What any summary of the session is made from: its fact sentences, in order, up to `max_words`, and
    the turns they came from; None when they come from fewer than `min_sources` turns."""
    kept, n = [], 0
    for s, turn in fact_sentences(records):
        size = len(s.split())
        if kept and n + size > max_words:
            break
        kept.append((s, turn))
        n += size
    sources = tuple(dict.fromkeys(t for _, t in kept))
    return ([s for s, _ in kept], sources) if len(sources) >= min_sources else None


def extract(records: Sequence[dict], max_words: int = MAX_WORDS,
            min_sources: int = MIN_SOURCES) -> tuple[str, tuple[str, ...]] | None:
    """The extractive summary: the fact sentences joined, up to `max_words`; its sources are only the
    turns whose sentences made it in."""
    got = kept_sentences(records, max_words, min_sources)
    if got is None:
        return None
    kept, sources = got
    return " ".join(s if s.endswith((".", "!", "?")) else s + "." for s in kept), sources


def summary_item(session: str, records: Sequence[dict], make: Summariser) -> MemoryItem | None:
    """The session's summary item (its user: the sources' speaker; its time: the newest source's)."""
    got = make(records)
    if got is None:
        return None
    text, sources = got
    by_id = {r.get("id"): r for r in records}
    src = [by_id[s] for s in sources if s in by_id]
    if not text.strip() or not src:
        return None
    return MemoryItem(summary_id(session), text, session, 0, SUMMARY_ROLE, str(src[-1].get("user") or ""), "",
                      max(str(r.get("time") or "") for r in src), tuple(sources))


def sync_summaries(vault, store, sessions: Iterable[str], make: Summariser,  # noqa: ANN001
                   read: dict[str, list[dict]] | None = None) -> tuple[int, int]:
    """Make (or remake, or drop) the summary item of each session from its log as it is now; returns
    (written, removed). A session whose log is gone or holds nothing to summarise keeps no summary."""
    items, drop = [], []
    for sid in sorted(set(sessions)):
        records = (read or {}).get(sid)
        if records is None:
            path = vault.logs_dir / f"{sid}.jsonl"
            records = read_log(path).records if path.is_file() else []
        item = summary_item(sid, records, make)
        if item is None:
            drop.append(summary_id(sid))
        else:
            items.append(item)
    store.upsert_items(items)
    removed = store.delete(drop) if drop else 0
    return len(items), removed


def has_summary(store, session: str) -> bool:  # noqa: ANN001
    return store.get(summary_id(session)) is not None


def repair(vault, store, turns: Iterable[str], read: dict[str, list[dict]] | None = None) -> tuple[int, int]:  # noqa: ANN001
    """After `turns` were forgotten (their logs already say so): each summary that draws on one is made
    again from its log as it is now, extractively (a model summary would keep the forgotten words), or
    dropped when nothing is left; (written, removed). As vault/forget.py treats a gestalt, except that
    a summary's other sources are still there to summarise."""
    turns = set(turns)
    hit = set()
    for sid in {t.rpartition(":")[0] for t in turns}:
        found = store.get(summary_id(sid)) if sid else None
        if found is not None and turns & set(found.sources):
            hit.add(sid)
    return sync_summaries(vault, store, hit, extract, read) if hit else (0, 0)
