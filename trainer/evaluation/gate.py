"""The promotion gate: a newly trained voice adapter replaces the user's active voice only when it is at
least as good on the user's most recent held-out turns; otherwise it is registered as a candidate.

Why: a user who retrains every week must never wake up to a worse voice because one run went badly
(too little data, a bad pick streak). "As good": held-out perplexity in llama.cpp (the model they chat
with) no more than `PPL_TOLERANCE` above the current voice's, and, for a preference-trained adapter,
preference accuracy on its held-out pairs no lower than the current voice's. The turns are the newest
of the user's own log messages the new adapter never trained on (its validation split when it trained
on logs); the current voice may have seen some of them, which only makes the bar harder to clear.
The decision and both measurements go into the new manifest entry (`promotion`); the user can still
switch to a candidate by hand (`home adapters voice ID`, the app's palette). Torch-free.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

from llm.fingerprint import same_base
from trainer.data.examples import Example
from trainer.evaluation.perplexity import score
from trainer.evaluation.preference import pair_logps, summarize

PPL_TOLERANCE = 0.01  # 1 %: two adapters this close are a tie; measured in one deterministic engine
RECENT_TURNS = 32


def current_voice(vault, manifest, user: str, model_fp: str):
    """(the user's active voice entry or None, why none): one that fits this model and whose file exists."""
    vid = (manifest.users.get(user) or {}).get("voice_adapter")
    if not vid:
        return None, "no voice adapter to replace"
    entry = manifest.adapters.get(vid)
    if entry is None:
        return None, f"the voice adapter {vid} is not in the manifest"
    if not same_base((entry.base or {}).get("fingerprint"), model_fp):
        return None, f"the voice adapter {vid} was made for another model"
    if not (Path(vault.root) / entry.file).is_file():
        return None, f"the voice adapter {vid}'s file is missing"
    return entry, ""


def _order(origin: str) -> tuple:
    """Log record ids `<session>:<n>` (sessions named by their start time) in time order; others by name."""
    m = re.fullmatch(r"(.+):(\d+)", origin)
    return (m.group(1), int(m.group(2))) if m else (origin, 0)


def recent(examples: Sequence[Example], limit: int = RECENT_TURNS) -> list[Example]:
    """The newest `limit` examples by their log position."""
    return sorted(examples, key=lambda ex: _order(ex.origin))[-limit:]


def user_turns(vault, user: str, window: int, exclude: set[str] = frozenset(),
               limit: int = RECENT_TURNS) -> list[Example]:
    """The user's newest own messages from the logs, minus those with keys in `exclude` (trained on: the
    same `window` as the training, since a key covers the context)."""
    from trainer.data.sources import SourceError, load_source

    try:
        report = load_source("logs", vault=vault, target="user", user=user, window=window)
    except SourceError:
        return []
    return recent([ex for ex in report.examples if ex.key() not in exclude], limit)


def stack_of(vault, manifest, entry, prefix: str = "") -> list[tuple[str, Path]]:
    """(engine id, GGUF path) for `entry` with what its manifest `stack` puts beneath it, bottom first."""
    out: list[tuple[str, Path]] = []
    for item in entry.stack:
        below = manifest.adapters.get(item["id"])
        if below is not None:
            out += stack_of(vault, manifest, below, prefix)
    return out + [(prefix + entry.id, Path(vault.root) / entry.file)]


def judge(engine, new_stack: Sequence[tuple[str, float]], old_stack: Sequence[tuple[str, float]] | None,
          old_id: str | None, turns: Sequence[Example], pairs: Sequence | None = None, why_none: str = "",
          beta: float = 0.1, tolerance: float = PPL_TOLERANCE) -> dict:
    """Measure and decide. Stacks are of adapters already loaded in `engine`; `old_stack` None: nothing
    to replace (promoted). Returns the manifest's `promotion` record."""
    rec = {"decision": "promoted", "replaces": old_id, "turns": len(turns), "pairs": len(pairs or []),
           "tolerance": tolerance, "time": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")}
    if old_stack is None:
        rec["why"] = why_none or "no voice adapter to replace"
        return rec
    before = engine.adapters
    reasons: list[str] = []
    try:
        if turns:
            ppl = {}
            for side, stack in (("new", new_stack), ("old", old_stack)):
                engine.set_adapters(list(stack))
                ppl[side] = round(score(engine, turns).perplexity, 4)
            rec["perplexity"] = ppl
            if ppl["new"] > ppl["old"] * (1 + tolerance):
                reasons.append(f"perplexity on your {len(turns)} most recent held-out turns {ppl['new']:.2f} "
                               f"vs {ppl['old']:.2f} for {old_id}")
        if pairs:
            acc = {side: summarize(pair_logps(engine, pairs, stack), beta=beta)["accuracy"]
                   for side, stack in (("new", new_stack), ("old", old_stack))}
            rec["preference_accuracy"] = acc
            if acc["new"] < acc["old"]:
                reasons.append(f"preference accuracy on {len(pairs)} held-out picks {acc['new']:.0%} "
                               f"vs {acc['old']:.0%} for {old_id}")
    finally:
        engine.set_adapters(before)
    if reasons:
        rec["decision"] = "candidate"
        rec["why"] = "kept as a candidate, not made your voice: " + "; ".join(reasons)
    elif not turns and not pairs:
        rec["why"] = "nothing held out to compare on: promoted"
    else:
        rec["why"] = f"at least as good as {old_id}: " + ", ".join(
            f"{k.replace('_', ' ')} {v['new']} vs {v['old']}" for k, v in rec.items()
            if k in ("perplexity", "preference_accuracy"))
    return rec
