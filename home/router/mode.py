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


def mode_for_task(task: str) -> tuple[str, str]:
    """(mode, why) for a task class: conversation → character, anything asked for → focused."""
    if task in CHARACTER_TASKS:
        return "character", f"task {task} is conversation: in character"
    return "focused", f"task {task} asks for something done: focused"


def choose_mode(persona, task: str, confidence: float, pinned: str | None = None, user: str = "") -> Mode:
    """This turn's mode: the pinned one, else the task's; with the persona card's settings (or defaults)."""
    pin = check_choice(pinned)
    if pin != AUTO:
        name, reason = pin, f"pinned by the user ({pin})"
    else:
        name, reason = mode_for_task(task)
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
