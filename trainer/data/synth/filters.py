"""What a generated reply must pass to become a training example, and why each one was dropped.

A persona adapter learns whatever it is shown, so one "As an AI language model…" in fifty replies is
enough to teach it to break character. Each filter is a small function of (reply, persona): it returns
None or the reason; `check` runs them in a fixed order and the first reason wins, so the report counts
each dropped reply once. Pure Python: tested on crafted replies.
"""

from __future__ import annotations

import re
import unicodedata
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass

FILTERS = ("empty", "too_short", "too_long", "assistant_cliche", "fourth_wall", "other_persona", "repetition",
           "duplicate")
_WORD = re.compile(r"[a-z0-9]+(?:'[a-z0-9]+)*")

ASSISTANT = re.compile("|".join((
    r"\bas an? (?:ai|a\.i\.|artificial intelligence|(?:large )?language model|llm|chatbot|virtual assistant|"
    r"helpful assistant|assistant)\b",
    r"\bi(?:'m| am) (?:just |only |merely |simply )?(?:an? )?(?:ai|a\.i\.|artificial intelligence|"
    r"(?:large )?language model|chatbot|virtual assistant|computer program|bot|helpful assistant)\b",
    r"\b(?:openai|chatgpt|gpt-[34]|anthropic|smollm|hugging ?face)\b",
    r"\bi (?:don't|do not|can't|cannot) (?:have|experience|feel) (?:personal |real |any )?(?:feelings|emotions|"
    r"opinions|experiences|a body|preferences)\b",
    r"\bhow (?:can|may) i (?:help|assist) you\b",
    r"\bi(?:'m| am| would be|'d be) (?:here|happy|glad) to (?:help|assist)\b",
    r"\b(?:is there )?anything else i can (?:help|assist)",
    r"\bi hope (?:this|that) helps\b",
    r"\bmy (?:training data|programming|knowledge cutoff)\b",
)), re.IGNORECASE)
FOURTH_WALL = re.compile("|".join((
    r"\brole-?play(?:ing)?\b", r"\b(?:my|this|the|a) (?:fictional )?character\b", r"\bcharacter sheet\b",
    r"\bin character\b", r"\bout of character\b", r"[(\[]\s*ooc\b", r"\bthe user\b", r"\bthe prompt\b",
    r"\bthis prompt\b", r"\bi(?:'m| am) (?:playing|portraying|pretending to be)\b", r"\bfictional\b",
    r"\bthe narrator\b", r"\{\{\s*(?:char|user)\s*\}\}", r"^\s*(?:user|assistant|system)\s*:",
    r"\n\s*(?:user|assistant|you|me)\s*:",
)), re.IGNORECASE | re.MULTILINE)


@dataclass(frozen=True)
class Limits:
    min_words: int = 3
    max_words: int = 160


def normalise(text: str) -> str:
    """Dedupe key: case, accents, punctuation and spacing do not make a reply new."""
    text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode().lower()
    return " ".join(_WORD.findall(text.replace("\u2019", "'")))


def clean(reply: str, name: str) -> str:
    """Trim what a model wraps around a reply: the persona's own speaker label, wrapping quotes, spaces."""
    text = reply.strip()
    first = name.split()[0] if name.split() else name
    for label in (name, first):  # "Wren:", "**Wren:**", "**Wren**:"
        text = re.sub(rf"^\**{re.escape(label)}\**\s*:\s*\**\s*", "", text, flags=re.IGNORECASE)
    quoted = (text[:1], text[-1:]) in (('"', '"'), ("'", "'"), ("\u201c", "\u201d"))
    if len(text) > 1 and quoted:
        text = text[1:-1].strip()
    return re.sub(r"[ \t]+\n", "\n", text).strip()


def trim_cut(reply: str) -> str:
    """A reply cut off by max_tokens, back to its last complete sentence ("" if it has none)."""
    m = list(re.finditer(r"[.!?…][\"')\]\u201d]*(?=\s|$)", reply))
    return reply[: m[-1].end()].strip() if m else ""


def too_short(reply: str, limits: Limits) -> str | None:
    n = len(_WORD.findall(reply.lower()))
    return f"{n} words (< {limits.min_words})" if n < limits.min_words else None


def too_long(reply: str, limits: Limits) -> str | None:
    n = len(_WORD.findall(reply.lower()))
    return f"{n} words (> {limits.max_words})" if n > limits.max_words else None


def assistant_cliche(reply: str) -> str | None:
    m = ASSISTANT.search(reply)
    return repr(m.group(0)) if m else None


def fourth_wall(reply: str) -> str | None:
    m = FOURTH_WALL.search(reply)
    return repr(m.group(0).strip()) if m else None


def other_persona(reply: str, name: str, others: Iterable[str]) -> str | None:
    """The reply claims another character's identity ("I'm Barnaby", "Barnaby here", "Barnaby: …")."""
    mine = {name.casefold(), name.split()[0].casefold()} if name.split() else {name.casefold()}
    for other in others:
        forms = {other, other.split()[0]} if other.split() else {other}
        for form in sorted(forms, key=len, reverse=True):
            if form.casefold() in mine or len(form) < 3:
                continue
            f = re.escape(form)
            pattern = (rf"\b(?:i am|i'm|my name is|my name's|call me|name's)\s+{f}\b|^\W*{f}\s+here\b"
                       rf"|^\W*\**{f}\**\s*:|\n\W*\**{f}\**\s*:|[-\u2014\u2013]\s*{f}\s*$")
            if re.search(pattern, reply, re.IGNORECASE | re.MULTILINE):
                return f"speaks as {other}"
    return None


def repetition(reply: str) -> str | None:
    """Loops small models fall into: a 4-word phrase three times, a sentence twice, or few distinct words."""
    words = _WORD.findall(reply.lower())
    grams = Counter(tuple(words[i:i + 4]) for i in range(len(words) - 3))
    if grams and grams.most_common(1)[0][1] >= 3:
        return f"repeats {' '.join(grams.most_common(1)[0][0])!r}"
    sentences = [normalise(s) for s in re.split(r"(?<=[.!?])\s+", reply) if len(s.split()) >= 4]
    if len(sentences) != len(set(sentences)):
        return "repeats a sentence"
    if len(words) >= 24 and len(set(words)) / len(words) < 0.35:
        return f"only {len(set(words))} distinct words in {len(words)}"
    return None


def check(reply: str, name: str, others: Iterable[str], seen: set[str], limits: Limits | None = None
          ) -> tuple[str, str] | None:
    """(filter, detail) for the first filter `reply` fails, or None when it is kept. `seen` holds the
    normalised replies already kept for this persona (duplicates are checked last)."""
    limits = limits or Limits()
    if not reply.strip():
        return "empty", "no text"
    for name_, why in (("too_short", too_short(reply, limits)), ("too_long", too_long(reply, limits)),
                       ("assistant_cliche", assistant_cliche(reply)), ("fourth_wall", fourth_wall(reply)),
                       ("other_persona", other_persona(reply, name, others)), ("repetition", repetition(reply))):
        if why:
            return name_, why
    if normalise(reply) in seen:
        return "duplicate", "same text as a kept reply"
    return None
