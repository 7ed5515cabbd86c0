"""What one logged turn becomes in the memory store: `MemoryItem`s, the whole turn and each of its sentences.

Why sentences too: a fact said in passing inside a longer message ("Hi! I'm Maya and I live in Lisbon.
What should I cook tonight?") embeds far from a question about it (cosine 0.29 to "Where do I live?"),
while the sentence alone is close (0.46). Each sentence is an item of its own under `<turn id>#<n>`,
with the turn's metadata, so every hit maps back to its turn (`turn_id`) and deleting the turn deletes
its parts. A one-sentence turn adds nothing: the whole turn already is that sentence.
"""

from __future__ import annotations

import re
from dataclasses import replace
from datetime import datetime
from typing import NamedTuple

from .retrieval import Hit


def epoch(iso: str) -> float:
    """An item's time as epoch seconds (0.0 when it has none), for date windows and recency."""
    try:
        return datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp()
    except (ValueError, AttributeError):
        return 0.0


class MemoryItem(NamedTuple):
    """One searchable text. Log turns: role user/assistant, their session and turn. Gestalts: role
    "gestalt", session "" (no log session can be empty, so deleting a session never takes them), and
    `sources`: the log turns they were distilled from (a hit on the gestalt stands for those turns)."""

    id: str
    text: str
    session: str
    turn: int
    role: str
    user: str
    persona: str
    time: str
    sources: tuple[str, ...] = ()


def item_from_record(rec: dict) -> MemoryItem:
    return MemoryItem(rec["id"], rec["text"], rec.get("session") or rec["id"].rsplit(":", 1)[0], rec["turn"],
                      rec["role"], str(rec.get("user") or ""), str(rec.get("persona") or ""),
                      str(rec.get("time") or ""))


def join_sources(sources: tuple[str, ...]) -> str | None:
    """A gestalt's source turn ids as the keyword database keeps them (ids hold no spaces)."""
    return " ".join(sources) or None


def split_sources(value: str | None) -> tuple[str, ...]:
    return tuple(value.split()) if value else ()


def indexable(rec: dict) -> bool:
    """User turns and complete assistant replies with text; never events, partial or excluded turns, nor a
    persona's card greeting (the same words each new chat: nothing the user said or learnt)."""
    return (rec.get("role") in ("user", "assistant") and not rec.get("partial") and not rec.get("excluded")
            and not rec.get("greeting")
            and isinstance(rec.get("text"), str) and bool(rec["text"].strip())
            and isinstance(rec.get("turn"), int) and isinstance(rec.get("id"), str))


PART = "#"
# Whose turns get sentence items: the user's (what they said about themselves). Replies too cost 1.78x the
# embedding time of whole turns alone instead of 1.22x on bench/memory_recall.py for the same R@10 (0.873;
# R@5 0.783 vs 0.768), and real replies run to many more sentences than the user's messages.
SENTENCE_ROLES = ("user",)
MIN_WORDS = 3  # "Anyway," or "Thanks!" alone says nothing worth finding
_SENTENCE = re.compile(r"(?<=[.!?])[\"')\]]*\s+(?=[\"'(\[]?[A-Z0-9¿¡])|\n+|;\s+")

_ABBREV = re.compile(r"(?:^|\s)(?:dr|mr|mrs|ms|st|prof|vs|e\.g|i\.e|etc|approx|no)\.$", re.IGNORECASE)


def sentences(text: str) -> list[str]:
    """The sentences (and `;`-clauses, and lines) of a message, each with at least MIN_WORDS words."""
    parts: list[str] = []
    for p in (p.strip() for p in _SENTENCE.split(text)):
        if not p:
            continue
        if parts and _ABBREV.search(parts[-1]):
            parts[-1] += " " + p  # "Dr. Mendes": not a sentence end
        else:
            parts.append(p)
    return [p for p in parts if len(p.split()) >= MIN_WORDS]


def turn_id(item_id: str) -> str:
    """The turn (or gestalt) an item stands for: a sentence item's id without its `#<n>`."""
    return item_id.split(PART, 1)[0]


def is_part(item_id: str) -> bool:
    return PART in item_id


def turn_items(item: MemoryItem, roles: tuple[str, ...] = SENTENCE_ROLES) -> list[MemoryItem]:
    """The turn itself, then one item per sentence when it has two or more (only for `roles`: the user's)."""
    if item.role not in roles:
        return [item]
    parts = sentences(item.text)
    if len(parts) < 2:
        return [item]
    return [item] + [item._replace(id=f"{item.id}{PART}{n}", text=p) for n, p in enumerate(parts, 1)]


def fold_sources(hits: list[Hit]) -> list[Hit]:
    """A gestalt stands for its source turns: those turns (or their sentences) are dropped where it is
    found too, and it takes the best place any of them had. The memory block then says the fact once,
    as the distilled line, not again as the turn it came from."""
    covered = {s: h.id for h in hits for s in h.sources}
    if not covered:
        return hits
    out: list[Hit] = []
    placed: set[str] = set()
    by_id = {h.id: h for h in hits}
    for h in hits:
        owner = covered.get(turn_id(h.id)) if not h.sources else h.id
        if owner is None:
            out.append(h)
        elif owner not in placed:
            out.append(by_id[owner])
            placed.add(owner)
    return out


def by_turn(hits: list[Hit], k: int) -> list[Hit]:
    """Ranked item hits → the first `k` turns: a sentence hit stands for its turn (its id becomes the
    turn's, its text stays the sentence that matched); later hits on the same turn are dropped."""
    out: dict[str, Hit] = {}
    for h in fold_sources(hits):
        tid = turn_id(h.id)
        if tid not in out:
            out[tid] = replace(h, id=tid)
            if len(out) == k:
                break
    return list(out.values())
