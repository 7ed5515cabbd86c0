"""A session summary written by the local model (issue 13), measured against the extractive one.

The model reads the same sentences the extractive summary keeps (vault/session_summary.py
`fact_sentences`) and writes one or two sentences about the user; the item's sources are the turns it
was given, and nothing else of the session. One greedy call per ended session, on the base model (no
adapter colours it), in the background indexer, never on the turn path.

Measured beside the extractive one by bench/memory_recall.py `--summaries extract model` (the default
SmolLM2-135M); only the extractive one is wired into Home (`[memory] summaries`).
"""

from __future__ import annotations

from collections.abc import Sequence

from llm.params import GenParams
from vault.session_summary import MAX_WORDS, Summariser, fact_sentences

SYSTEM = ("Summarise what the user says about themselves in one or two short sentences starting with "
          "\"The user\". Keep names, places and dates.")
PARAMS = GenParams(temperature=0.0, top_k=1, repeat_penalty=1.0, seed=0, max_tokens=80, stop=("\n\n",))


def model_summariser(engine, params: GenParams = PARAMS, max_words: int = MAX_WORDS) -> Summariser:  # noqa: ANN001
    """A `Summariser` that asks `engine` (greedy) to summarise the session's fact sentences."""

    def make(records: Sequence[dict]) -> tuple[str, tuple[str, ...]] | None:
        kept, n = [], 0
        for s, turn in fact_sentences(records):
            if kept and n + len(s.split()) > max_words:
                break
            kept.append((s, turn))
            n += len(s.split())
        if not kept:
            return None
        msgs = [{"role": "system", "content": SYSTEM},
                {"role": "user", "content": "\n".join(s for s, _ in kept)}]
        text = " ".join("".join(engine.stream(msgs, params, adapters=[])).split())
        return (text, tuple(dict.fromkeys(t for _, t in kept))) if text else None

    return make
