"""Which remembered lines a newer one replaces, so that only the newest reaches the prompt (issue 14 item 3).

When memory holds "I live in Berlin." and, later, "I moved to Lisbon, I live in Lisbon now.", both are
found for "Where do I live?"; the default model then follows the stale line about as often as its
correction, whatever the order or wording of the block (bench/knowledge_conflict.py: 70 % newest first,
≤ 80 % with any tried wording; 100 % with the newer line alone). So the older line is left out: with the
stale line ranked first 70 % → 100 % (90 % at adapter scale 0.5). A stale line the rule does not see as
the same statement ("My tennis club meets on Sundays." beside "I play football on Sundays now") stays in,
and there the replies follow memory 75 % as before.

A newer line replaces an older one only when all of these hold (rules, no model: the turn path):
- both are the user's own statements about themselves (said by the user, or a gestalt: "known about the
  user"), not questions or requests; the assistant's lines never replace or get replaced;
- the newer says it is a change: "now", "moved", "switched", "no longer", "my new …", "these days", …,
  and not an addition ("too", "also", "another", "as well": "I have a cat too" keeps the dog);
- both are said of the user ("I …", "we …", "my drink is …"; not "my colleague Omar moved to Naples");
- they are about the same thing: a third of the shorter one's content words (not function words, days or
  times) are shared ("live", "favourite drink", "play"), and each holds one the other lacks (the values).
Why words and not embedding similarity: with the default MiniLM the cosine between a fact and its update
(0.41–0.83 on the bench's ten pairs) overlaps that between two facts that are both true ("My sister is
called Ana." / "My brother is called Rui." 0.53, "I'm allergic to peanuts." / "… to cats." 0.67).
A session summary (vault/session_summary.py) is several of the user's statements: a newer line that
replaces one of them replaces the summary; a summary replaces nothing.
A question about the past ("where did I live before?", "last year") keeps every line: there the
old statement is the answer (`asks_about_past`).
bench/memory_recall.py, off vs on in one run: updated facts' newer-first 0.8 → 1.0; R@10 0.873 → 0.866
overall, single/temporal/inference/no-answer unchanged; multi 0.861 → 0.806 only where the set counts an
old line as evidence whose replacement names the same thing ("I go rowing on Wednesday mornings" /
"I switched my rowing to Sunday evenings" for "which sport do I do?").
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import replace
from datetime import datetime

from .memory_items import sentences
from .retrieval import STOPWORDS, Hit, is_request, words
from .session_summary import SUMMARY_ROLE

SELF = ("user", "gestalt")  # lines that state something about the user
_CHANGE_WORDS = {"now", "nowadays", "moved", "switched", "changed", "stopped", "quit", "sold", "instead",
                 "replaced", "anymore", "currently"}
_CHANGE_PHRASES = re.compile(r"\b(?:no longer|not any ?more|these days|gave (?:\w+ )?up|given (?:\w+ )?up|"
                             r"gone off|my new|our new|used to)\b")
_ADDITION_WORDS = {"too", "also", "another", "second", "both", "besides"}
_ADDITION_PHRASES = re.compile(r"\b(?:as well|in addition)\b")
_PAST_QUESTION = re.compile(r"\b(?:before|previous(?:ly)?|used to|former(?:ly)?|old|earlier|originally|"
                            r"at first|ago|last (?:year|month|week)|back then|did|was|were|had|have (?:i|we)|"
                            r"has (?:my|our)|ever|so far|this year|in the past|all the)\b")
# words too common to say two statements are about the same thing: function words, when, how much
_WEAK = {"love", "like", "really", "good", "great", "think", "want", "get", "got", "go", "going", "make", "thing",
         "things", "lot", "bit", "one", "still", "new", "big", "news", "anyway", "well", "much", "some", "because",
         "after", "while", "since", "until", "every", "always", "never", "often", "just", "only", "even", "already",
         "finally", "again", "more", "most", "very", "any", "all", "each", "other", "been", "that", "last", "next",
         "ago"}
# when: never what two statements share (a day is no subject), but a value that changed ("to Saturday")
_TIMES = {"today", "tonight", "tomorrow", "yesterday", "day", "week", "weekend", "month", "year", "time", "morning",
          "evening", "night", "monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday"}
SAME_THING = 1 / 3  # shared content words, as a share of the shorter statement's


def _stem(w: str) -> str:
    w = w.removesuffix("'s")
    if len(w) > 5 and w.endswith("ing"):
        return w[:-3]
    if len(w) > 3 and w.endswith("s") and not w.endswith("ss"):
        return w[:-1]
    return w


# a change that names its subject without its word: "I moved to Lisbon" is about where the user lives
_IMPLIES = [(re.compile(r"\bmov(?:ed|ing) (?:to|into|out|house|flat|home|abroad|back)\b"), "live")]


def content(text: str) -> set[str]:
    """The words that say what a statement is about and what it holds (stemmed, no stopwords or cues)."""
    low = " ".join(words(text))
    return {_stem(w) for w in low.split()
            if w not in STOPWORDS and w not in _WEAK and w not in _CHANGE_WORDS and w not in _ADDITION_WORDS
            and len(w) > 1} | {subject for pattern, subject in _IMPLIES if pattern.search(low)}


def same_thing(older: str, newer: str) -> bool:
    """A third of the shorter statement's content words (times left out) shared, and each holding a content
    word (times included) the other lacks: the old and the new value."""
    a, b = content(older), content(newer)
    sa, sb = a - _TIMES, b - _TIMES
    return len(sa & sb) >= SAME_THING * min(len(sa), len(sb)) > 0 and bool(a - b) and bool(b - a)


def states_a_change(text: str) -> bool:
    low = " ".join(words(text))
    ws = set(low.split())
    if ws & _ADDITION_WORDS or _ADDITION_PHRASES.search(low):
        return False
    return bool(ws & _CHANGE_WORDS or _CHANGE_PHRASES.search(low))


def asks_about_past(question: str) -> bool:
    """"Where did I live before?", "Which cities have I lived in this year?": the old statement is (part of)
    the answer; a question wrongly taken for one only keeps every line, as before the rule."""
    return bool(_PAST_QUESTION.search(" ".join(words(question))))


def _when(iso: str) -> float:
    try:
        return datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp()
    except (ValueError, AttributeError):
        return 0.0


_ABOUT_ME = re.compile(r"\b(?:i|i'm|i've|i'd|we|we're|we've)\b|^(?:these days |now |currently )?(?:my|our) "
                       r"(?:\w+ ){1,5}?(?:is|are|was|were)\b")


def about_the_user(text: str) -> bool:
    """Said of the user: "I …", "we …", or "my/our <thing> is …" ("My favourite drink is tea"), not "My
    colleague Omar just moved to Naples" (a fact about someone else, whose changes are not the user's)."""
    low = " ".join(words(text))
    return bool(_ABOUT_ME.search(low))


def replaces(newer: Hit, older: Hit) -> bool:
    """Whether `newer` states a change to what `older` said (both about the user; see the module doc)."""
    # a session summary holds several statements of the user: a newer line that replaces one of them
    # replaces it (the stale statement must not reach the prompt). A summary replaces nothing: its other
    # statements may be what the question asks (measured: multi-hop R@10 0.833 -> 0.694 when it did).
    if older.role == SUMMARY_ROLE:
        return any(replaces(newer, replace(older, role="user", text=s)) for s in sentences(older.text))
    if newer.role not in SELF or older.role not in SELF or _when(newer.time) <= _when(older.time):
        return False
    if is_request(newer.text) or is_request(older.text) or not states_a_change(newer.text):
        return False
    if newer.role == "user" and not about_the_user(newer.text) or older.role == "user" and not about_the_user(older.text):
        return False
    return same_thing(older.text, newer.text)


def superseded(hits: Sequence[Hit]) -> dict[str, str]:
    """{id of a replaced hit: id of the newer hit that replaces it} among `hits`."""
    out: dict[str, str] = {}
    for older in hits:
        for newer in hits:
            if newer.id != older.id and replaces(newer, older):
                out[older.id] = newer.id
                break
    return out


def current(hits: Sequence[Hit], question: str) -> dict[str, str]:
    """What to leave out of the memory block for `question`: the replaced hits, unless it asks about the past."""
    return {} if asks_about_past(question) else superseded(hits)
