"""Dual mode: a persona answers a task usefully in its own voice ("focused") and chats in full character
("character"). The router's task class picks the mode each turn; the user can pin one (the app's palette
and hotkey, `home ask/route --mode`).

A mode is a line added to the turn's prompt and a factor on the persona's adapter scales, from the card's
`extensions.home.modes` (validated by vault/personas.py) or the defaults below. Why a factor: a persona
adapter trained on in-character chat pulls every reply toward its style and away from the base model's
competence; turned down while a task is answered, the voice stays and the answer gets through. Without a
persona the mode is still chosen and logged, but there is nothing to adjust.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from home.prompt import fill
from home.router.score import persona_of
from home.stack import Stack
from vault.manifest import Manifest
from vault.personas import MODES

AUTO = "auto"
CHOICES = (AUTO, *MODES)  # what a user can pin (auto: the router decides)
# The task classes that are conversation; every other one, the built-ins and a user's own labels, asks for
# something done, so it is answered focused.
CHARACTER_TASKS = frozenset({"chat"})
DEFAULT_SYSTEM = {"focused": "Answer the task directly and correctly, in your own voice.", "character": ""}
DEFAULT_SCALE = {"focused": 0.6, "character": 1.0}
# The router's "chat" class is everything conversational, questions about the world among them ("how many legs
# does a spider have?" sits nearest "what's the weirdest fact you know?"): bench/dual_mode.py's first run sent
# 5 of 20 checkable questions in character, and auto answered fewer of them than pinned focused (0.55 vs 0.65).
# So a chat-class message that asks about the world, not about the persona or an opinion, is answered focused.
_QUESTION_START = {"what", "what's", "whats", "which", "who", "who's", "whose", "where", "where's", "when", "how",
                   "how's", "why", "is", "are", "does", "do", "did", "can", "could", "was", "were", "will", "should"}
_ABOUT_YOU = re.compile(r"\b(your|yours|yourself|you're|youre|you've|you'd|you'll)\b|\b(are|were|have|did|would|will)"
                        r" you\b|\byou (like|love|think|feel|prefer|enjoy|want|miss|remember|hate|ever|wish|believe|"
                        r"mean|do|know|usually|personally)\b|\byou\W*$|\bhow'?s (it going|life|things)\b|"
                        r"\bhow are things\b|\bwhat'?s (up|new)\b")
_OPINION = {"best", "worst", "favourite", "favorite", "fun", "funny", "weird", "weirdest", "nicest", "coolest",
            "rather", "opinion", "think", "feel"}
_WORD = re.compile(r"[a-z']+")


@dataclass(frozen=True)
class Mode:
    name: str  # "focused" or "character"
    reason: str
    pinned: bool = False
    system: str = ""  # the line added to this turn's prompt ("" nothing)
    scale: float = 1.0  # the factor on the persona's adapter scales
    scaled: tuple[str, ...] = ()  # the adapters of this turn's stack it was applied to

    def to_dict(self) -> dict:
        """The router record's "mode" field (JSON-able)."""
        return {"name": self.name, "reason": self.reason, "pinned": self.pinned, "system": self.system,
                "scale": self.scale, "scaled": list(self.scaled)}


def check_choice(choice: str | None) -> str:
    """`choice` as a pin (auto/focused/character, any case); ValueError naming the choices otherwise."""
    value = (choice or AUTO).strip().casefold()
    if value not in CHOICES:
        raise ValueError(f"mode {choice!r}: expected one of {', '.join(CHOICES)}")
    return value


def asks_about_the_world(text: str) -> bool:
    """A question with an answer out there ("how long do I boil an egg?", "which planet is largest?"), not one
    about the persona ("how was your day?", "do you like rain?") or asking an opinion ("what's the best…")."""
    low = text.strip().casefold().replace("\u2019", "'")
    words = _WORD.findall(low)
    if not words or not (low.endswith("?") or words[0] in _QUESTION_START):
        return False
    return not _ABOUT_YOU.search(low) and not any(w in _OPINION for w in words)


def mode_for_task(task: str, text: str = "") -> tuple[str, str]:
    """(mode, why) for a task class and the message: conversation → character, anything asked for → focused;
    a conversational message that asks about the world → focused."""
    if task in CHARACTER_TASKS:
        if text and asks_about_the_world(text):
            return "focused", f"task {task}, but a question about the world, not about the persona: focused"
        return "character", f"task {task} is conversation: in character"
    return "focused", f"task {task} asks for something done: focused"


def choose_mode(persona, task: str, confidence: float, pinned: str | None = None, user: str = "",
                text: str = "") -> Mode:
    """This turn's mode: the pinned one, else the task's (and the message's); with the persona card's
    settings (or defaults)."""
    pin = check_choice(pinned)
    if pin != AUTO:
        name, reason = pin, f"pinned by the user ({pin})"
    else:
        name, reason = mode_for_task(task, text)
        reason = f"{reason} (confidence {confidence:.2f})"
    if persona is None:
        return Mode(name, f"{reason}; no persona, nothing to adjust", pin != AUTO)
    system, scale = mode_settings(persona, name)
    return Mode(name, reason, pin != AUTO, fill(system, persona.data.get("name") or persona.id, user), scale)


def mode_settings(persona, name: str) -> tuple[str, float]:
    """(system line, scale factor) the persona's card gives mode `name`; the defaults for what it leaves out."""
    modes = persona.home.get("modes") or {}
    own = modes.get(name) or {}
    system = own.get("system")
    scale = own.get("scale")
    return (DEFAULT_SYSTEM[name] if system is None else system,
            DEFAULT_SCALE[name] if scale is None else float(scale))


def persona_adapters(manifest: Manifest, persona) -> set[str]:
    """The adapter ids that speak for `persona`: its card's `extensions.home.adapters` (a name: every
    version of it) and the persona adapters registered for it (the trainer's `<persona>-persona` naming)."""
    if persona is None:
        return set()
    named = {a["id"] for a in persona.home.get("adapters", [])}
    out = set()
    for entry in manifest.adapters.values():
        if entry.id in named or entry.name in named or (
                entry.kind == "persona" and persona_of(entry) == persona.id.casefold()):
            out.add(entry.id)
    return out


def apply_mode(mode: Mode, stack: Stack, persona_ids: set[str]) -> tuple[Stack, Mode]:
    """The stack with the persona's adapters' scales multiplied by the mode's factor, and the mode saying which."""
    if mode.scale == 1.0:
        return list(stack), mode
    out, scaled = [], []
    for adapter_id, scale in stack:
        if adapter_id in persona_ids:
            scale = round(scale * mode.scale, 4)
            scaled.append(adapter_id)
        out.append((adapter_id, scale))
    return out, Mode(mode.name, mode.reason, mode.pinned, mode.system, mode.scale, tuple(scaled))


def mode_message(mode: Mode | dict | None) -> dict | None:
    """The turn's mode line as a late system message (next to the question, after the history: like the
    memory block, so the persona's system prompt stays the cached prefix whichever mode a turn takes)."""
    system = mode.get("system") if isinstance(mode, dict) else getattr(mode, "system", "")
    return {"role": "system", "content": system} if system else None
