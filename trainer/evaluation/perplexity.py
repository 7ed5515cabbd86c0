"""Held-out perplexity measured by llama.cpp on the GGUF the user runs, not on the training copy.

Why here and not in transformers: the number people compare (base vs adapter) should describe the
model they chat with: the quantized base plus the converted adapter, under the same chat template.
Only the target tokens (and the end-of-turn marker that closes them) are scored; the prompt is context.
Torch-free: `home eval` and the worker both use it.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from trainer.data.examples import Example
from trainer.evaluation.chains import MAX_GROUP_TOKENS as HELDOUT_TOKENS  # what one held-out pass reads


@dataclass(frozen=True)
class Score:
    nll: float  # summed negative log-likelihood over scored tokens (nats)
    tokens: int

    @property
    def loss(self) -> float:
        return self.nll / self.tokens if self.tokens else float("nan")

    @property
    def perplexity(self) -> float:
        return math.exp(self.loss) if self.tokens else float("nan")


def likeness(base_ppl: float | None, adapter_ppl: float | None) -> float | None:
    """How much more like the speaker the adapter sounds than the base, in percent: the drop in held-out
    perplexity on their words (38 means the adapter finds their later words 38 % less surprising)."""
    if base_ppl is None or adapter_ppl is None or not base_ppl > 0 or not math.isfinite(adapter_ppl):
        return None
    return round(100.0 * (1.0 - adapter_ppl / base_ppl), 1)


def example_tokens(engine, example: Example, system: str | None = None) -> tuple[list[int], int]:
    """(prompt + target tokens, index of the first target token) under the engine's chat template.

    `system` replaces the example's own system prompt (e.g. a persona's card for "base with persona").
    """
    messages = example.prompt_messages()
    if system is not None:
        messages = [{"role": "system", "content": system}] + [m for m in messages if m["role"] != "system"]
    prompt_text = engine.template.render(messages, add_generation_prompt=True)
    full_text = engine.template.render(
        messages + [{"role": "assistant", "content": example.target}], add_generation_prompt=False
    )
    if not full_text.startswith(prompt_text):  # templates that rewrite earlier turns: score the tail
        prompt_text = full_text[: len(full_text) - len(example.target) - 16]
    prompt = engine.tokenize(prompt_text)
    full = engine.tokenize(full_text)
    start = len(prompt)
    while start > 0 and full[:start] != prompt[:start]:
        start -= 1  # a token merged across the boundary: score from where they agree
    return full, start


def target_nll(rows: np.ndarray, targets: np.ndarray, chunk: int = 64) -> float:
    """Summed -log p(target) over rows of logits, in float64 a few rows at a time: an 8B's 128k
    vocabulary × 4,000 positions would be 4 GB as one float64 array."""
    total = 0.0
    for a in range(0, len(targets), chunk):
        block = rows[a:a + chunk].astype(np.float64)
        top = block.max(axis=1, keepdims=True)
        logz = np.log(np.exp(block - top).sum(axis=1)) + top[:, 0]
        total += float((logz - block[np.arange(len(block)), targets[a:a + chunk]]).sum())
    return total


def score(engine, examples: Sequence[Example], system: str | None = None, max_tokens: int | None = None,
          progress: Callable[[int, int], None] | None = None, shared: bool = False) -> Score:
    """Summed target-token NLL of `examples` under the engine's active adapter stack.

    llama.cpp computes output rows only from the first target position on (`Engine.logits(first=…)`).
    `shared`: consecutive examples of one conversation are read from one pass (`chains`: each target
    then sees at least its own window of context, the context is evaluated once); otherwise each example
    in its own window, exactly as trained. `progress(done, total)` after each pass."""
    from trainer.evaluation.chains import build_chains

    limit = max_tokens or engine.n_ctx
    units = build_chains(engine, examples, system, limit) if shared else list(range(len(examples)))
    nll, n, done = 0.0, 0, 0
    for unit in units:
        if isinstance(unit, int):
            tokens, start = example_tokens(engine, examples[unit], system)
            if len(tokens) > limit:  # keep the target end, drop the oldest context
                cut = len(tokens) - limit
                tokens, start = tokens[cut:], max(1, start - cut)
            spans, size = ([(start, len(tokens))] if start < len(tokens) else []), 1
        else:
            tokens, spans, size = unit.tokens, unit.spans, unit.size
        if spans:
            first = spans[0][0] - 1
            rows = engine.logits(tokens[: spans[-1][1] - 1], all_positions=True, first=first)  # (…, vocab)
            pick = np.concatenate([np.arange(a - 1 - first, b - 1 - first) for a, b in spans])
            targets = np.concatenate([np.asarray(tokens[a:b]) for a, b in spans])
            nll += target_nll(rows[pick], targets)
            n += len(targets)
        done += size
        if progress is not None:
            progress(done, len(examples))
    return Score(nll, n)


def compare(engine, examples: Sequence[Example], adapter_id: str, scale: float = 1.0,
            system: str | None = None, under: Sequence[tuple[str, float]] = (), shared: bool = False,
            progress: Callable[[str, int, int], None] | None = None, max_tokens: int | None = None) -> dict:
    """Perplexity of the base and of base + adapter on the same examples; restores the caller's stack.

    `under`: adapters the candidate was trained on top of (two-phase), applied beneath it. `shared` and
    `max_tokens`, see `score`. `progress(who, done, total)`, who = "base" | "adapter"."""
    def tick(who: str):
        return None if progress is None else (lambda done, total: progress(who, done, total))

    before = engine.adapters
    try:
        engine.set_adapters([])
        base = score(engine, examples, system, max_tokens, tick("base"), shared)
        engine.set_adapters([*under, (adapter_id, scale)])
        tuned = score(engine, examples, system, max_tokens, tick("adapter"), shared)
    finally:
        engine.set_adapters(before)
    return {"base": base.perplexity, "adapter": tuned.perplexity, "base_loss": base.loss,
            "adapter_loss": tuned.loss, "tokens": base.tokens}


def heldout_perplexity(engine, examples: Sequence[Example], adapter_id: str, scale: float = 1.0,
                       system: str | None = None, under: Sequence[tuple[str, float]] = (),
                       progress: Callable[[str, int, int], None] | None = None) -> dict:
    """Home's one held-out measure, behind both "sounds X% more like you" (the retrain panel, from the
    worker's run) and `home eval`'s perplexity: llama.cpp on the GGUF the user runs, target tokens only,
    each target read after the conversation before it, as the app gives a reply its chat history (shared
    chains: at least the example's own window, up to HELDOUT_TOKENS of the conversation in one pass).

    Why not each example in its own window (`compare(shared=False)`): in the app the model sees the whole
    chat, and the base learns a voice from context too; on the 2026-11-30 hamlet adapter the window alone
    gave 0.797 against 0.858 with the conversation before it (bench/voice/RESULTS.md). The trainer's
    validation loss (transformers, fp32 base, cut to the 512 training tokens) is the early-stop signal,
    not this. The number is the same on any engine of at least HELDOUT_TOKENS context."""
    limit = min(engine.n_ctx, HELDOUT_TOKENS)
    return compare(engine, examples, adapter_id, scale, system, under, shared=True, progress=progress,
                   max_tokens=limit)
