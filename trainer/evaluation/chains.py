"""Consecutive examples of one conversation scored in one llama.cpp pass (shared-prefix scoring).

Why: a transcript or a log gives every target the `window` turns before it as context, so scoring 64
replies one by one evaluates each context turn about ten times; on two CPU cores that was most of
`home eval`'s 20 minutes. When example k+1's context continues example k's conversation (it holds k's
target as an assistant message, after the same turns), both targets are read from one rendering of the
conversation: each target then sees *at least* its own window of context (the turns before the window
stay in the prefix), the base and the adapter see exactly the same text, and the context is evaluated
once. Anything that does not chain (another section, a persona's system line, a template that rewrites
earlier turns, a target repeated as two merged messages) is scored on its own, exactly as before.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from trainer.data.examples import Example

MAX_GROUP = 16  # targets per pass: enough to share most context, few enough that a pass stays short
MAX_GROUP_TOKENS = 2048  # attention grows with length; past this the shared prefix saves little more


@dataclass(frozen=True)
class Chain:
    """One rendering of a conversation: `tokens`, and the [start, end) token span of each target
    (its reply and end-of-turn marker, as `example_tokens` scores it)."""

    tokens: list[int]
    spans: list[tuple[int, int]]
    size: int  # examples it covers


def continues(messages: Sequence[dict], target: str, nxt: Example) -> int | None:
    """Where `nxt`'s new turns start in its context, if `nxt` continues the conversation that ended with
    `messages` + [assistant: `target`]; None when it does not (the caller then scores it alone).

    The context must hold `target` as its own assistant message, and every turn before it in the window
    must be the conversation's turns before `target` (the window's oldest message may be a cut merge)."""
    ctx = list(nxt.context)
    hits = [i for i, m in enumerate(ctx) if m.get("role") == "assistant" and m.get("content") == target]
    if not hits:
        return None
    m = hits[-1]
    before = [x for x in messages if x.get("role") != "system"]
    if m > len(before):
        return None
    for back in range(1, m + 1):
        mine, theirs = before[-back], ctx[m - back]
        if mine.get("role") != theirs.get("role"):
            return None
        same = mine.get("content") == theirs.get("content")
        if not same and not (back == m and str(mine.get("content", "")).endswith(str(theirs.get("content")))):
            return None
    return m + 1


def build_chains(engine, examples: Sequence[Example], system: str | None, limit: int) -> list[Chain | int]:
    """`examples` in order as chains; an int `i` stands for examples[i] scored alone (it fits no chain
    or the template does not render the conversation as a growing prefix)."""
    out: list[Chain | int] = []
    i, n = 0, len(examples)
    cap = min(limit, MAX_GROUP_TOKENS)
    while i < n:
        chain, used = _grow(engine, examples, i, system, cap)
        if chain is None or chain.size < 2:
            out.append(i)
            i += 1
        else:
            out.append(chain)
            i += used
    return out


def _grow(engine, examples: Sequence[Example], i: int, system: str | None, cap: int) -> tuple[Chain | None, int]:
    first = examples[i]
    messages = first.prompt_messages()
    if system is not None:
        messages = [{"role": "system", "content": system}] + [m for m in messages if m["role"] != "system"]
    best: Chain | None = None
    spans: list[tuple[int, int]] = []
    j = i
    while j < len(examples) and j - i < MAX_GROUP:
        ex = examples[j]
        if j > i:
            if ex.system != first.system:
                break
            start_new = continues(messages, examples[j - 1].target, ex)
            if start_new is None:
                break
            messages = messages + [{"role": "assistant", "content": examples[j - 1].target}] + list(ex.context[start_new:])
        prompt = engine.template.render(messages, add_generation_prompt=True)
        full = engine.template.render(messages + [{"role": "assistant", "content": ex.target}],
                                      add_generation_prompt=False)
        if not full.startswith(prompt):
            break
        prompt_ids, full_ids = engine.tokenize(prompt), engine.tokenize(full)
        if len(full_ids) > cap or full_ids[: len(prompt_ids)] != prompt_ids:
            break
        if best is not None and full_ids[: len(best.tokens)] != best.tokens:
            break  # an earlier rendering is not a prefix of this one: stop before it
        spans = spans + [(len(prompt_ids), len(full_ids))]
        best = Chain(full_ids, spans, len(spans))
        j += 1
    return best, (best.size if best else 0)
