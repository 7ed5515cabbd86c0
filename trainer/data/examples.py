"""The one normalised training example every data source produces, and the QA report they share.

Roles are from the trained speaker's point of view: "assistant" is the voice being learned (the user
for a voice adapter, the persona for a persona adapter), "user" is everyone else. So a voice adapter
trained on the user's own messages is used exactly like any other adapter at chat time.
"""

from __future__ import annotations

import hashlib
import json
import statistics
from collections import Counter
from dataclasses import dataclass, field

OPENING_PROMPT = "(You start the conversation.)"
MIN_EXAMPLES = 4  # fewer leaves nothing worth holding out for validation (trainer/worker/dataset.py)


@dataclass(frozen=True)
class Example:
    context: tuple[dict, ...]  # prior turns, oldest first: {"role": "user"|"assistant", "content": str}
    target: str  # the text the adapter should learn to produce next
    source: str  # logs | transcript | essays | jsonl | gestalts
    origin: str  # where it came from, for reports: "file:line" or a log turn id
    persona: str | None = None
    system: str | None = None  # optional system prompt shown before the context
    tier: str | None = None  # essays: opening | body | revision | note; jsonl: the category

    def prompt_messages(self) -> list[dict]:
        """The conversation up to the target, as chat messages (what the model sees).

        A target that opens a conversation (no context) gets a stand-in request: chat templates refuse
        an empty conversation, and "start us off" is what the voice does there.
        """
        msgs = [{"role": "system", "content": self.system}] if self.system else []
        context = [dict(m) for m in self.context] or [{"role": "user", "content": OPENING_PROMPT}]
        return msgs + context

    def to_record(self) -> dict:
        """trl's conversational prompt/completion form, so the loss falls on the target only."""
        return {
            "prompt": self.prompt_messages(),
            "completion": [{"role": "assistant", "content": self.target}],
        }

    def key(self) -> str:
        """Content hash used for de-duplication across sources."""
        blob = json.dumps([self.prompt_messages(), self.target], sort_keys=True, ensure_ascii=False)
        return hashlib.sha256(blob.encode()).hexdigest()


@dataclass
class Rejection:
    file: str
    line: int | None
    reason: str

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}" if self.line is not None else self.file
        return f"{where}: {self.reason}"


@dataclass
class DatasetReport:
    """What a source produced, printed before any training so bad data is seen early."""

    examples: list[Example] = field(default_factory=list)
    rejected: list[Rejection] = field(default_factory=list)
    duplicates_removed: int = 0

    def reject(self, file: str, line: int | None, reason: str) -> None:
        self.rejected.append(Rejection(str(file), line, reason))

    def dedupe(self) -> None:
        seen: set[str] = set()
        kept: list[Example] = []
        for ex in self.examples:
            k = ex.key()
            if k in seen:
                self.duplicates_removed += 1
                continue
            seen.add(k)
            kept.append(ex)
        self.examples = kept

    def dataset_hash(self) -> str:
        h = hashlib.sha256()
        for ex in self.examples:
            h.update(ex.key().encode())
        return h.hexdigest()

    def too_small(self, where: object) -> str | None:
        """Why these examples cannot make a training run (fewer than MIN_EXAMPLES), else None. Asked by
        `home train --check` and the app's retrain before any worker starts, and by the worker itself,
        so a check that passes is a run that starts."""
        n = len(self.examples)
        if n >= MIN_EXAMPLES:
            return None
        first = f"; first: {self.rejected[0]}" if self.rejected else ""
        return (f"{where}: {n} usable example{'s' if n != 1 else ''}, at least {MIN_EXAMPLES} are needed "
                f"({len(self.rejected)} lines rejected{first})")

    def summary(self) -> dict:
        lengths = [len(ex.target.split()) for ex in self.examples]
        return {
            "examples": len(self.examples),
            "by_source": dict(Counter(ex.source for ex in self.examples)),
            "by_persona": dict(Counter(ex.persona or "-" for ex in self.examples)),
            "by_tier": dict(Counter(ex.tier for ex in self.examples if ex.tier)),
            "target_words": _spread(lengths),
            "duplicates_removed": self.duplicates_removed,
            "rejected": [str(r) for r in self.rejected],
        }

    def render(self) -> str:
        s = self.summary()
        lines = [f"dataset: {s['examples']} examples, {s['duplicates_removed']} duplicates removed, "
                 f"{len(s['rejected'])} lines rejected"]
        for key in ("by_source", "by_persona", "by_tier"):
            if s[key]:
                lines.append(f"  {key.replace('_', ' ')}: " + ", ".join(f"{k}={v}" for k, v in s[key].items()))
        if s["target_words"]:
            t = s["target_words"]
            lines.append(f"  target words: min {t['min']}, median {t['median']}, p90 {t['p90']}, max {t['max']}")
        lines.extend(f"  rejected {r}" for r in s["rejected"])
        return "\n".join(lines)


def _spread(values: list[int]) -> dict | None:
    if not values:
        return None
    ordered = sorted(values)
    return {
        "min": ordered[0],
        "median": statistics.median(ordered),
        "p90": ordered[min(len(ordered) - 1, int(0.9 * len(ordered)))],
        "max": ordered[-1],
    }
