"""Preference accuracy and reward margin on held-out pick-best pairs, measured in llama.cpp.

Why llama.cpp and not the trainer's numbers: like held-out perplexity, the figure people compare should
describe the model they chat with (quantized base + converted adapter, same chat template). For each pair
the summed log-prob of the chosen and the rejected reply (target tokens and the end-of-turn marker, the
prompt as context) under an adapter stack:
- preference accuracy: the share of pairs with log p(chosen) − log p(rejected) > 0;
- margin: the mean of that difference (nats);
- reward margin (against a reference stack, DPO's implicit reward): mean of β·[(c − c_ref) − (r − r_ref)],
  and reward accuracy, the share where it is > 0. Against itself it is 0 by definition.
Torch-free: the worker, the promotion gate and `home eval` use it.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from trainer.data.examples import Example
from trainer.evaluation.perplexity import score


def _example(prompt: Sequence[dict], reply: str, origin: str) -> Example:
    system = next((m["content"] for m in prompt if m["role"] == "system"), None)
    context = tuple({"role": m["role"], "content": m["content"]} for m in prompt if m["role"] != "system")
    return Example(context=context, target=reply, source="preferences", origin=origin, system=system)


def reply_logp(engine, prompt: Sequence[dict], reply: str, origin: str = "") -> float:
    """Summed log p(reply | prompt) under the engine's current adapter stack (the newest context kept)."""
    return -score(engine, [_example(prompt, reply, origin)]).nll


def pair_logps(engine, pairs: Sequence, stack: Sequence[tuple[str, float]]) -> list[tuple[float, float]]:
    """(log p(chosen), log p(rejected)) per pair under `stack`; the caller's stack is restored."""
    before = engine.adapters
    try:
        engine.set_adapters(list(stack))
        return [(reply_logp(engine, p.prompt, p.chosen, p.id), reply_logp(engine, p.prompt, p.rejected, p.id))
                for p in pairs]
    finally:
        engine.set_adapters(before)


def summarize(logps: Sequence[tuple[float, float]], ref: Sequence[tuple[float, float]] | None = None,
              beta: float = 0.1) -> dict:
    """accuracy, margin and (with `ref`) reward margin / reward accuracy from per-pair log-probs."""
    if not logps:
        return {"pairs": 0, "accuracy": None, "margin": None}
    diffs = [c - r for c, r in logps]
    out = {"pairs": len(logps), "accuracy": round(sum(d > 0 for d in diffs) / len(diffs), 4),
           "margin": round(float(np.mean(diffs)), 4)}
    if ref is not None:
        rewards = [beta * ((c - c0) - (r - r0)) for (c, r), (c0, r0) in zip(logps, ref, strict=True)]
        out["reward_margin"] = round(float(np.mean(rewards)), 4)
        out["reward_accuracy"] = round(sum(x > 0 for x in rewards) / len(rewards), 4)
    return out


def before_after(engine, pairs: Sequence, before: Sequence[tuple[str, float]], after: Sequence[tuple[str, float]],
                 beta: float = 0.1) -> dict:
    """The starting point's and the new stack's numbers on the same pairs (reward margin against the start)."""
    start = pair_logps(engine, pairs, before)
    new = pair_logps(engine, pairs, after)
    return {"before": summarize(start, start, beta), "after": summarize(new, start, beta), "beta": beta}
