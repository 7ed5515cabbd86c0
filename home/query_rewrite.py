"""Query rewrite by the local model (issue 13): a short standalone search query searched beside the question.

Why: "Would she like it there?" names nobody a search can find; the recent turns say who and where. A
model large enough (3-8B) resolves that and turns an inference question into the facts it needs
("Would I enjoy a hiking trip?" → "I love hiking mountains outdoors"). The rewrite is added as one more
sub-query next to the question (vault/query_plan.py's parts), never instead of it.

Why off by default (`[memory] rewrite = false`; `home ask --rewrite` turns it on for one turn): it is a
model call on the turn path, against a 30 ms budget for Home's own work, and with the default
SmolLM2-135M it hurts some types. bench/memory_recall.py --rewrite, beside the default in one run (156
questions, R@5 / R@10 / MRR): overall 0.768/0.866/0.547 -> 0.772/0.895/0.561; single 0.833/0.896 ->
0.854/0.958, inference R@10 0.667 -> 0.767, updated MRR 0.714 -> 0.750, but temporal 0.852/1.000 ->
0.815/0.926, inference R@5 0.533 -> 0.500 and no-answer questions' empty block 0.778 -> 0.667: the 135M
model invents ("When did I start the new job?" -> "I started the new job bakery in 2022.", an example's
word and a year), and what it invents finds something. Cost: the model call p50 136
ms, p95 195 ms; recall p50 5.0 -> 150 ms, p95 16.6 -> 213 ms (the rewrite is embedded too) on this 2-core
machine. One greedy call of at most MAX_TOKENS, on the base model (no adapter colours the query).
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from llm.params import GenParams
from vault.gestalts import normalise

SYSTEM = ("Rewrite the user's question as a short search query: the few words a note that answers it "
          "would contain. Replace he, she, it, there and that with what they mean in the conversation. "
          "Write only the query.")
EXAMPLES = (
    ("Where did my sister move?", "my sister moved to"),
    ("Would I enjoy a hiking trip?", "I love hiking outdoors mountains"),
    ("Conversation: My friend Ana started a new job at a bakery.\nQuestion: Does she like it?",
     "Ana new job bakery likes"),
)
MAX_TOKENS = 16
MAX_WORDS = 12
PARAMS = GenParams(temperature=0.0, top_k=1, repeat_penalty=1.0, seed=0, max_tokens=MAX_TOKENS, stop=("\n",))
RECENT = 4  # recent turns shown, each clipped to RECENT_CHARS
RECENT_CHARS = 200
_LEAD = re.compile(r"^(search query|query|search|rewritten query)\s*:\s*", re.I)


def messages(text: str, recent: Sequence[str] = ()) -> list[dict]:
    """The prompt: the instruction, three examples, then the question with the recent turns before it."""
    msgs = [{"role": "system", "content": SYSTEM}]
    for q, a in EXAMPLES:
        msgs += [{"role": "user", "content": q}, {"role": "assistant", "content": a}]
    said = [" ".join(t.split())[:RECENT_CHARS] for t in list(recent)[-RECENT:] if t.strip()]
    question = " ".join(text.split())
    return msgs + [{"role": "user", "content": (f"Conversation: {' '.join(said)}\nQuestion: {question}"
                                                if said else question)}]


def clean(raw: str, text: str) -> str | None:
    """The model's line as a query: its first line, no label or quotes, at most MAX_WORDS words; None
    when it is empty, "none", or the question again (nothing new to search)."""
    line = raw.strip().splitlines()[0] if raw.strip() else ""
    line = _LEAD.sub("", line.strip()).strip("-*• \"'`").strip()
    line = " ".join(line.split()[:MAX_WORDS])
    if not normalise(line) or normalise(line) in ("none", normalise(text)):
        return None
    return line


def rewrite_query(engine, text: str, recent: Sequence[str] = (), params: GenParams = PARAMS) -> str | None:  # noqa: ANN001
    """One greedy call on the base model: the search query for `text`, or None."""
    raw = "".join(engine.stream(messages(text, recent), params, adapters=[], aside=True))
    return clean(raw, text)
