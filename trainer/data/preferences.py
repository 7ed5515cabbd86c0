"""Pick-best pairs (`<vault>/preferences/<user>.jsonl`) → preference-training data with a QA report.

Why its own loader and not a `sources/` module: a pair is (prompt, chosen, rejected), not an Example.
What a user who retrains weekly expects: every pick they made counts unless it cannot be used, and the
report says which were skipped and why. Skipped, never fatal: a pair made on another model (its
fingerprint: the reply came from other weights, so it says nothing about this one), a pair whose
adapters no longer exist (the user removed them: we do not keep learning from what they threw away), a
turn they asked to forget (an `exclude` event in the logs), identical replies (nothing to prefer),
duplicates, and malformed lines (named by line and field). Torch-free: `home` reads the counts too.
"""

from __future__ import annotations

import hashlib
import json
import math
import random
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field

from llm.fingerprint import same_base

SKIP_REASONS = {
    "other-model": "made on another model (fingerprint differs)",
    "missing-adapter": "an adapter it was made with no longer exists",
    "forgotten": "a turn of it was forgotten (home memory forget)",
    "identical": "chosen and rejected replies are the same text",
    "duplicate": "the same pair again",
    "malformed": "unreadable line",
}


@dataclass(frozen=True)
class Pair:
    """One usable preference: the chat the model saw, the reply the user picked and the other one."""

    id: str
    prompt: tuple[dict, ...]  # {"role", "content"} messages, as the model saw them
    chosen: str
    rejected: str
    time: str = ""

    def key(self) -> str:
        blob = json.dumps([list(self.prompt), self.chosen, self.rejected], sort_keys=True, ensure_ascii=False)
        return hashlib.sha256(blob.encode()).hexdigest()

    def to_record(self) -> dict:
        """trl's conversational preference form."""
        return {"prompt": [dict(m) for m in self.prompt],
                "chosen": [{"role": "assistant", "content": self.chosen}],
                "rejected": [{"role": "assistant", "content": self.rejected}]}


@dataclass
class PairReport:
    """What the preferences file gave: the kept pairs and each skipped one with its reason."""

    file: str
    pairs: list[Pair] = field(default_factory=list)
    skipped: list[tuple[str, str, str]] = field(default_factory=list)  # (where, reason key, detail)

    def skip(self, where: str, reason: str, detail: str = "") -> None:
        self.skipped.append((where, reason, detail))

    def counts(self) -> dict[str, int]:
        return dict(Counter(reason for _, reason, _ in self.skipped))

    def dataset_hash(self) -> str:
        h = hashlib.sha256()
        for p in self.pairs:
            h.update(p.key().encode())
        return h.hexdigest()

    def summary(self) -> dict:
        return {"pairs": len(self.pairs), "skipped": len(self.skipped), "skipped_by_reason": self.counts(),
                "rejected": [f"{w}: {SKIP_REASONS[r]}{' (' + d + ')' if d else ''}" for w, r, d in self.skipped]}

    def render(self) -> str:
        lines = [f"preferences: {len(self.pairs)} pairs kept, {len(self.skipped)} skipped ({self.file})"]
        for reason, n in sorted(self.counts().items()):
            lines.append(f"  skipped {n}: {SKIP_REASONS[reason]}")
        lines.extend(f"  {w}: {SKIP_REASONS[r]}{' (' + d + ')' if d else ''}" for w, r, d in self.skipped[:20])
        return "\n".join(lines)


def load_pairs(vault, user: str, model_fingerprint: str | None, adapter_ids: set[str] | None = None,
               forgotten: set[str] | None = None) -> PairReport:
    """Every pair of `user` that can teach the model with `model_fingerprint`; the rest skipped with why.

    `adapter_ids`: the manifest's adapters (None: not checked); `forgotten`: excluded turn ids (None: read
    from the vault's logs)."""
    from trainer.data.sources.logs import forgotten_ids, log_files
    from vault.preferences import preferences_path, read_preferences

    path = preferences_path(vault, user)
    report = PairReport(str(path))
    read = read_preferences(vault, user)
    for problem in read.problems:
        report.skip(f"{path}", "malformed", str(problem))
    if forgotten is None:
        forgotten = forgotten_ids(log_files(vault=vault))
    seen: set[str] = set()
    for n, rec in enumerate(read.records, 1):
        where = f"{path}:{n}"
        pair = _pair(rec, where, report)
        if pair is None:
            continue
        fp = (rec.get("model") or {}).get("fingerprint") if isinstance(rec.get("model"), dict) else None
        if model_fingerprint is not None and not (fp and same_base(fp, model_fingerprint)):
            report.skip(where, "other-model", f"{(rec.get('model') or {}).get('name') or 'unknown model'}")
            continue
        used = {a.get("id") for side in ("chosen", "rejected") for a in (rec[side].get("adapters") or [])
                if isinstance(a, dict)}
        gone = sorted(str(a) for a in used if adapter_ids is not None and a not in adapter_ids)
        if gone:
            report.skip(where, "missing-adapter", ", ".join(gone))
            continue
        turns = rec.get("turn_ids") if isinstance(rec.get("turn_ids"), dict) else {}
        if any(t in forgotten for t in turns.values() if isinstance(t, str)):
            report.skip(where, "forgotten")
            continue
        if pair.chosen.strip() == pair.rejected.strip():
            report.skip(where, "identical")
            continue
        if pair.key() in seen:
            report.skip(where, "duplicate")
            continue
        seen.add(pair.key())
        report.pairs.append(pair)
    return report


def _pair(rec: dict, where: str, report: PairReport) -> Pair | None:
    """A record's pair, or None after naming the field that makes it unusable."""
    prompt = rec.get("prompt")
    if not isinstance(prompt, list) or not prompt:
        report.skip(where, "malformed", "prompt: expected a list of chat messages")
        return None
    for i, m in enumerate(prompt):
        if not (isinstance(m, dict) and m.get("role") in ("system", "user", "assistant")
                and isinstance(m.get("content"), str)):
            report.skip(where, "malformed", f"prompt[{i}]: expected {{role, content}}")
            return None
    texts = []
    for side in ("chosen", "rejected"):
        value = rec.get(side)
        if not isinstance(value, dict) or not isinstance(value.get("text"), str) or not value["text"].strip():
            report.skip(where, "malformed", f"{side}.text: expected a non-empty string")
            return None
        texts.append(value["text"])
    return Pair(str(rec.get("id") or where), tuple({"role": m["role"], "content": m["content"]} for m in prompt),
                texts[0], texts[1], str(rec.get("time") or ""))


def split_pairs(pairs: Sequence[Pair], val_fraction: float = 0.2, seed: int = 0) -> tuple[list[Pair], list[Pair]]:
    """Seeded hold-out: at least 2 pairs (a third at most) are never trained on; preference accuracy is
    measured on them before and after. Fewer than 6 pairs cannot give both sides something."""
    n = len(pairs)
    if n < 6:
        raise ValueError(f"only {n} usable preference pairs: at least 6 are needed (some held out); "
                         "pick best a few more times")
    n_val = min(max(2, math.ceil(n * val_fraction)), n // 3)
    order = list(range(n))
    random.Random(seed).shuffle(order)
    held = set(order[:n_val])
    return [p for i, p in enumerate(pairs) if i not in held], [p for i, p in enumerate(pairs) if i in held]
