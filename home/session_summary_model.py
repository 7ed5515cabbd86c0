"""A session summary written by the local model (issue 13), measured against the extractive one.

The model reads the same sentences the extractive summary keeps (vault/session_summary.py
`kept_sentences`) and writes one or two sentences about the user; the item's sources are the turns it
was given, and nothing else of the session. One greedy call per ended session, on the base model (no
adapter colours it), in the background indexer, never on the turn path.

Measured beside the extractive one by bench/memory_recall.py `--summaries extract model` in one run
(156 questions, default SmolLM2-135M; R@5 / R@10 / MRR): overall default 0.768/0.866/0.547, extractive
0.793/0.884/0.544, model 0.779/0.880/0.551; the model's loses updated facts' R@10 (1.000 -> 0.933) and
newer-first (1.0 -> 0.867), and costs 518 ms a session to make against the extractive one's 11 ms. So
only the extractive one is wired into Home (`[memory] summaries`); this stays for a larger model.
"""

from __future__ import annotations

from collections.abc import Sequence

from llm.params import GenParams
from vault.session_summary import MAX_WORDS, Summariser, kept_sentences

SYSTEM = ("Summarise what the user says about themselves in one or two short sentences starting with "
          "\"The user\". Keep names, places and dates.")
PARAMS = GenParams(temperature=0.0, top_k=1, repeat_penalty=1.0, seed=0, max_tokens=80, stop=("\n\n",))


def model_summariser(engine, params: GenParams = PARAMS, max_words: int = MAX_WORDS) -> Summariser:  # noqa: ANN001
    """A `Summariser` that asks `engine` (greedy) to summarise the session's fact sentences."""

    def make(records: Sequence[dict]) -> tuple[str, tuple[str, ...]] | None:
        got = kept_sentences(records, max_words)
        if got is None:
            return None  # as the extractive one: a lone sentence is already an item
        kept, sources = got
        msgs = [{"role": "system", "content": SYSTEM}, {"role": "user", "content": "\n".join(kept)}]
        text = " ".join("".join(engine.stream(msgs, params, adapters=[], aside=True)).split())
        return (text, sources) if text else None

    return make
