"""Distillation: the base model (no adapters) turns what the user said into gestalts, durable facts
about them, kept as editable files (vault/gestalts.py).

Why one short call per user turn, with a few examples: a 135M model asked for "all facts in this
conversation" invents and mixes people up, but it rewrites one first-person sentence ("I live in
Berlin") into a third-person fact ("The user lives in Berlin.") quite reliably, and the turn it came
from is then known exactly. Only turns that can hold such a fact are asked about: the user's own,
in the first person, not requests or questions, not chit-chat, not about today.

Why a grounding filter after it: the small model still writes things the user never said (it copies an
example answer, flips a "hate" into "love"). A candidate survives only when nearly all its content
words appear in its source turn, and its negation matches; everything else is dropped, not repaired.
Every call runs on the base model (the user's voice or a persona must not colour the facts): it asks
`Engine.stream(adapters=[])`, which sets the stack and decodes under one lock hold, so a turn or a
hot-reload on another thread can never slip an adapter in between. The engine is left on the base
model; every turn sets its own stack the same way.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

from llm.params import GenParams
from vault.gestalts import Draft, Gestalt, add_gestalts, normalise
from vault.layout import Vault
from vault.memory_sync import exclusions
from vault.retrieval import STOPWORDS, is_question, should_retrieve, words

SYSTEM = ("Extract one lasting fact about the user from their message, as a short sentence starting with "
          "\"The user\". Write \"None\" when there is no such fact.")
EXAMPLES = (
    ("I grew up in a small town near Leeds.", "The user grew up near Leeds."),
    ("Can you help me write an email to my landlord?", "None"),
    ("I love hiking in the mountains.", "The user loves hiking in the mountains."),
    ("We relocated to Leeds last spring for my partner's job.", "The user lives in Leeds."),  # the lasting part
)
PARAMS = GenParams(temperature=0.0, top_k=1, repeat_penalty=1.0, seed=0, max_tokens=40, stop=("\n",))
MAX_TURNS = 40  # newest candidate turns per call; the rest were offered at earlier distillations
MIN_SUPPORT = 0.75  # share of a candidate's content words that must appear in its source turn

FIRST_PERSON = {"i", "i'm", "i've", "i'd", "i'll", "my", "mine", "myself", "im", "ive"}  # not "me": "give me …"
REQUEST = {"tell", "give", "help", "plan", "write", "suggest", "make", "show", "explain", "can", "could", "would",
           "please", "let's", "remind", "find", "list", "draft", "translate", "summarise", "summarize",
           "recommend", "what", "how", "why", "where", "when", "who", "which"}
TRANSIENT = re.compile(r"\b(today|tonight|yesterday|tomorrow|this (morning|afternoon|evening)|right now|"
                       r"just now)\b", re.I)
NEGATION = re.compile(r"\b(not|no|never|nothing|neither|nor|cannot)\b|\w+n't\b", re.I)
META = re.compile(r"^the user('s)? (said|says|mentions|mentioned|asks|asked|wants to know|is asking|"
                  r"message|response|statement)\b", re.I)
PREFERENCE = {"like", "likes", "love", "loves", "prefer", "prefers", "enjoy", "enjoys", "hate", "hates",
              "dislike", "dislikes", "favourite", "favorite", "fan", "adore", "adores", "can't stand"}
IGNORED = STOPWORDS | {"user", "user's", "users"}
IDENTITY = re.compile(r"\b(i am|i'm|im|my name)\b", re.I)
SYNONYMS = {"named": "called", "called": "named"}


@dataclass
class Candidate:
    source: str  # the log record id
    turn: str  # what the user said
    raw: str  # what the model wrote
    text: str | None = None  # the fact, when it parsed
    reason: str | None = None  # why it was dropped; None: kept


@dataclass
class Distillation:
    """What one distillation did: how many turns were asked about, what came back, what survived."""

    turns: int = 0  # the user's turns in the records
    asked: int = 0  # turns that could hold a fact, each one model call
    candidates: list[Candidate] = field(default_factory=list)
    new: list[Gestalt] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def grounded(self) -> list[Candidate]:
        return [c for c in self.candidates if c.reason is None]

    def summary(self) -> dict:
        dropped: dict[str, int] = {}
        for c in self.candidates:
            if c.reason:
                key = c.reason.split(":")[0]
                dropped[key] = dropped.get(key, 0) + 1
        return {"turns": self.turns, "asked": self.asked, "grounded": len(self.grounded), "new": len(self.new),
                "dropped": dropped, "seconds": round(self.seconds, 2)}


def fact_turns(records: Sequence[dict], user: str | None = None) -> list[dict]:
    """The user's complete, not forgotten turns that may state something lasting about them."""
    gone = exclusions(records)
    out = []
    for r in records:
        text = r.get("text")
        if (r.get("role") != "user" or r.get("partial") or not isinstance(text, str) or r.get("id") in gone
                or (user is not None and r.get("user") not in (None, user))):
            continue
        ws = words(text)
        if (set(ws) & FIRST_PERSON and ws[0] not in REQUEST and should_retrieve(text) and not is_question(text)
                and not TRANSIENT.search(text)):
            out.append(r)
    return out


def _stem(w: str) -> str:
    w = w.removesuffix("'s")
    for suffix in ("ing", "ies", "es", "ed", "s"):
        if w.endswith(suffix) and len(w) - len(suffix) >= 3:
            return w[: -len(suffix)]
    return w


def _same(a: str, b: str) -> bool:
    if _stem(a) == _stem(b) or SYNONYMS.get(a) == b:
        return True
    n = 0
    while n < min(len(a), len(b)) and a[n] == b[n]:
        n += 1
    return n >= 4 and n >= min(len(a), len(b)) - 2  # moved / move, lives / live, prefers / preferred


def clean(raw: str) -> str | None:
    """The model's line as a fact, or None when it wrote none."""
    line = raw.strip().splitlines()[0].strip() if raw.strip() else ""
    line = line.strip("-*• \"'").strip()
    if not line or normalise(line) in ("none", "no", "n a", "none found"):
        return None
    return line if line.endswith((".", "!")) else line + "."


def check(text: str, turn: str) -> str | None:
    """Why `text` is not a fact grounded in `turn`, or None."""
    if not re.match(r"the user\b", text, re.I):
        return "form: not a sentence about the user"
    if META.match(text):
        return "form: describes the message, not the user"
    n = len(words(text))
    if n < 4 or n > 30:
        return f"form: {n} words"
    if normalise(text) in {normalise(a) for _, a in EXAMPLES}:
        return "copied: an example answer"
    mine = [w for w in words(text) if w not in IGNORED and not NEGATION.fullmatch(w)]  # negation: below
    theirs = [w for w in words(turn) if w not in STOPWORDS]
    if not mine:
        return "ungrounded: no content words"
    supported = sum(any(_same(w, t) for t in theirs) for w in mine)
    if supported / len(mine) < MIN_SUPPORT:
        missing = [w for w in mine if not any(_same(w, t) for t in theirs)]
        return f"ungrounded: {', '.join(missing)} not in the turn"
    if bool(NEGATION.search(text)) != bool(NEGATION.search(turn)):
        return "ungrounded: negation differs from the turn"
    if re.match(r"the user is\b", text, re.I) and not IDENTITY.search(turn):
        return "ungrounded: the turn does not say what the user is"
    for owned in re.findall(r"\bmy (\w+)", turn, re.I):  # "my sister lives in Porto" is not about the user
        if owned.lower() not in STOPWORDS | {"name"} and not any(_same(owned.lower(), w) for w in words(text)):
            return f"ungrounded: the turn is about the user's {owned.lower()}"
    return None


def kind_of(text: str) -> str:
    return "preference" if set(words(text)) & PREFERENCE else "fact"


def distil_messages(turn: str) -> list[dict]:
    msgs = [{"role": "system", "content": SYSTEM}]
    for said, fact in EXAMPLES:
        msgs += [{"role": "user", "content": said}, {"role": "assistant", "content": fact}]
    return msgs + [{"role": "user", "content": " ".join(turn.split())}]


def distil_session(engine, vault: Vault, user: str, records: Sequence[dict], *, params: GenParams = PARAMS,
                   cancel: threading.Event | None = None, max_turns: int = MAX_TURNS) -> Distillation:
    """Distil `records` (log records, e.g. one session) into new gestalts for `user`, written to the vault.

    Each call runs on the base model, its empty stack set in the same engine lock hold as the decode, so
    another thread's set_adapters or reload never changes it mid-way (the app still runs it under its
    turn lock, so that it gives way to a reply). The calls are made aside: the chat's stack (and cached prefix)
    come back for its next turn (llm/kv_aside.py). `cancel` stops after the current turn;
    what was distilled so far is still written."""
    t0 = time.perf_counter()
    out = Distillation(turns=sum(1 for r in records if r.get("role") == "user"))
    turns = fact_turns(records, user)[-max_turns:]
    for rec in turns:
        if cancel is not None and cancel.is_set():
            break
        raw = "".join(engine.stream(distil_messages(rec["text"]), params, cancel=cancel, adapters=[], aside=True))
        out.asked += 1
        cand = Candidate(rec["id"], rec["text"], raw, clean(raw))
        cand.reason = "none: the model found no fact" if cand.text is None else check(cand.text, rec["text"])
        out.candidates.append(cand)
    said = {r["id"]: r.get("time") for r in turns}
    drafts = [Draft(c.text, kind_of(c.text), (c.source,), said.get(c.source)) for c in out.grounded]
    out.new = add_gestalts(vault, user, drafts)
    out.seconds = time.perf_counter() - t0
    return out


def distil(engine, vault: Vault, user: str, records: Sequence[dict], **kwargs) -> list[Gestalt]:
    """The new gestalts distilled from `records` (already written); see `distil_session`."""
    return distil_session(engine, vault, user, records, **kwargs).new
