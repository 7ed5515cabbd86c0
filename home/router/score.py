"""Which registered adapters fit this turn, how well, and which of them make the stack.

The rules, each with the reason a candidate is turned down (every one is shown by `home route`):
- made for another base model (fingerprint) or its file is gone → never chosen;
- `users` lists who it serves (`[]`: its owner; `"*"`: everyone);
- a persona adapter speaks for one persona (`<persona>-persona[-N]`, as the trainer names them, or an
  entry's `persona` key): it fits only while that persona is active, whatever the task;
- a voice adapter is its owner's own writing voice: not while a persona speaks, only the user's current
  voice (`users.<name>.voice_adapter`) when one is set, and when it declares no tasks it serves
  `router.voice_tasks` (writing, by default: drafting in your voice, not every chat reply);
- any other adapter must declare tasks or tones (an undeclared one is used only when chosen by hand), and
  fits when the classifier gives one of its tasks (and one of its tones) at least `router.min_confidence`.
Score = priority + P(best declared task) + P(best declared tone) (+1 for the active persona's adapter).
The stack holds at most one speaker (persona or voice) and one adapter of each other kind, best first,
up to `router.max_adapters`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from pathlib import Path

from home.router.classify import Prediction
from llm.fingerprint import base_refusal
from vault.config import RouterSettings
from vault.manifest import AdapterEntry, Manifest, name_key

SPEAKERS = ("persona", "voice")  # both say who is talking: one of them at most
KIND_ORDER = ("persona", "voice", "style", "task", "other")  # stack order, beneath to on top


@dataclass(frozen=True)
class Candidate:
    id: str
    kind: str
    score: float | None  # None: turned down (see why)
    why: str
    scale: float = 1.0
    chosen: bool = False

    @property
    def fits(self) -> bool:
        return self.score is not None

    def to_dict(self) -> dict:
        return {"id": self.id, "kind": self.kind, "score": None if self.score is None else round(self.score, 4),
                "fits": self.fits, "chosen": self.chosen, "why": self.why}


def persona_of(entry: AdapterEntry) -> str | None:
    """The persona a kind=persona adapter speaks for: its `persona` key, else the trainer's naming."""
    named = entry.extra.get("persona")
    if isinstance(named, str) and named:
        return named.casefold()
    for text in (entry.id, entry.name):
        m = re.match(r"^(.+?)-persona(?:-\d+)?$", text.casefold())
        if m:
            return m.group(1)
    return None


def score_candidates(manifest: Manifest, *, user: str, persona: str | None, task: Prediction, tone: Prediction,
                     model_fingerprint: str, model_name: str, settings: RouterSettings,
                     vault_root: Path | None = None) -> list[Candidate]:
    """Every registered adapter, scored or turned down with the reason, best first. Older versions of a
    name (out of `Manifest.in_reach`) are turned down, one candidate per name standing for them all: a
    name means its newest version (the router kept picking `coder-1` over a retrained `coder-2`, the
    lower id winning the tie), and a vault retrained weekly for years logged every version with each turn."""
    voice_now = (manifest.users.get(user) or {}).get("voice_adapter")
    reach, older = manifest.in_reach(), {}
    out = []
    for entry in manifest.adapters.values():
        if entry.id not in reach:
            older.setdefault(name_key(entry.name), []).append(entry)
            continue
        why = _refusal(entry, user, persona, voice_now, model_fingerprint, model_name, vault_root)
        if why is None:
            score, why = _score(entry, persona, task, tone, settings)
        else:
            score = None
        out.append(Candidate(entry.id, entry.kind, score, why, entry.scale))
    newest = manifest.newest()
    for key, entries in older.items():
        entries.sort(key=lambda e: (e.version or 0, e.created, e.id))
        first, last = entries[0], entries[-1]
        which = f"{len(entries)} older versions ({first.id} … {last.id})" if len(entries) > 1 else "an older version"
        out.append(Candidate(last.id, last.kind, None, f"{which} of {last.name} ({newest[key].id} is the newest): "
                             "used only when named", last.scale))
    return sorted(out, key=lambda c: (c.score is None, -(c.score or 0.0), c.id))


def _refusal(entry: AdapterEntry, user: str, persona: str | None, voice_now: str | None,
             model_fingerprint: str, model_name: str, vault_root: Path | None) -> str | None:
    """Why the entry can never serve this turn (whatever the message says), or None."""
    why = base_refusal(entry.base, model_fingerprint, model_name)
    if why:
        return why
    if vault_root is not None and not (vault_root / entry.file).is_file():
        return f"its file {entry.file} is missing from the vault"
    served = entry.users or ([entry.owner] if entry.owner else ["*"])
    if "*" not in served and user.casefold() not in {u.casefold() for u in served}:
        return f"serves {', '.join(served)}, not {user}"
    if entry.kind == "persona":
        own = persona_of(entry)
        if own is None:
            return "a persona adapter whose persona is unknown (name it <persona>-persona): chosen by hand only"
        if own != (persona or "").casefold():
            return f"speaks for persona {own}, " + (f"not {persona}" if persona else "and no persona is active")
    if entry.kind == "voice":
        if persona:
            return f"persona {persona} is speaking, not your voice"
        if voice_now and voice_now != entry.id and (entry.owner or "").casefold() == user.casefold():
            return f"not your current voice ({voice_now} is)"
    return None


def _score(entry: AdapterEntry, persona: str | None, task: Prediction, tone: Prediction,
           settings: RouterSettings) -> tuple[float | None, str]:
    """(score, why) for an entry that may serve this turn; (None, why) when the message does not fit it."""
    tasks = list(entry.tasks)
    parts = []
    if entry.kind == "voice" and not tasks:
        tasks = list(settings.voice_tasks)
        parts.append("voice serves router.voice_tasks")
    if entry.kind not in SPEAKERS and not tasks and not entry.tones:
        return None, "declares no tasks or tones: used only when chosen by hand (--adapter, a persona's adapters)"
    score = float(entry.priority)
    if entry.kind == "persona":
        score += 1.0
        parts.append(f"persona {persona} is active +1")
    for dim, declared, pred, known in (("task", tasks, task, settings.tasks), ("tone", entry.tones, tone,
                                                                                 settings.tones)):
        if not declared:
            continue
        usable = [d for d in declared if d in known]
        if not usable:
            why = f"its {dim}s ({', '.join(declared)}) are not router labels ({', '.join(known)})"
            if entry.kind == "persona":
                parts.append(why)
                continue
            return None, why
        best = max(usable, key=pred.p)
        p = pred.p(best)
        if p < settings.min_confidence and entry.kind != "persona":
            return None, (f"serves {dim}s {', '.join(declared)}; the message is {dim} {pred.label} "
                          f"{pred.confidence:.2f} ({best} {p:.2f} < min_confidence {settings.min_confidence:g})")
        score += p
        parts.append(f"{dim} {best} {p:.2f}")
    if entry.priority:
        parts.append(f"priority {entry.priority:g}")
    return score, " + ".join(parts) if parts else "fits (declares nothing to match)"


def choose(candidates: list[Candidate], settings: RouterSettings) -> list[Candidate]:
    """The chosen candidates in stack order; everyone else keeps the reason they were left out."""
    taken: dict[str, Candidate] = {}
    out = []
    for c in candidates:  # best first
        if not c.fits:
            out.append(c)
            continue
        slot = "speaker" if c.kind in SPEAKERS else c.kind
        if slot in taken:
            out.append(replace(c, why=f"{c.why}; {taken[slot].id} scored higher for the {slot} slot"))
        elif len(taken) >= settings.max_adapters:
            out.append(replace(c, why=f"{c.why}; the stack is full (router.max_adapters = {settings.max_adapters})"))
        else:
            taken[slot] = replace(c, chosen=True)
            out.append(taken[slot])
    return out


def stack_order(candidates: list[Candidate]) -> list[Candidate]:
    chosen = [c for c in candidates if c.chosen]
    return sorted(chosen, key=lambda c: KIND_ORDER.index(c.kind) if c.kind in KIND_ORDER else len(KIND_ORDER))
