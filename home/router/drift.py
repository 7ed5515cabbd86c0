"""Is an adapter still right for its user? Usage over time, and its loss on recent turns vs at training.

Usage counts the user's turns per day or ISO week by the stack they ran under (the log records'
`adapters`; "(base)" for none). Drift compares like with like: the trainer records the held-out
perplexity llama.cpp measured right after training (`metrics.perplexity`), and this module measures
the same quantity, target-token loss under llama.cpp (trainer/evaluation/perplexity.py), on recent log turns of
the same kind the adapter learned from: the user's own messages for a voice (or a logs-trained)
adapter, a persona's replies for a persona adapter. A rise past `router.drift_threshold` nats is
flagged. The base model's loss on the same turns is reported beside it: when the base rose as much,
the conversations changed, not the adapter's fit. Torch-free: llama.cpp only.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta

from home.router.score import persona_of
from home.stack import StackSpec, resolve_stack
from llm.errors import AdapterError
from vault.layout import Vault
from vault.logs import read_log
from vault.manifest import AdapterEntry, Manifest

BASE = "(base)"


def _when(value) -> datetime | None:
    try:
        t = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except ValueError:
        return None
    return t if t.tzinfo else t.replace(tzinfo=UTC)


def read_turns(vault: Vault) -> list[dict]:
    """Every user turn in the logs: {"id", "time", "user", "persona", "adapters": [ids]}, oldest first."""
    turns = []
    for path in sorted(vault.logs_dir.glob("*.jsonl")):
        for rec in read_log(path).records:
            when = _when(rec.get("time"))
            if rec.get("role") != "user" or when is None:
                continue
            ids = [a.get("id") for a in rec.get("adapters") or [] if isinstance(a, dict)]
            turns.append({"id": rec.get("id"), "time": when, "user": rec.get("user"),
                          "persona": rec.get("persona"), "adapters": [i for i in ids if isinstance(i, str)]})
    return sorted(turns, key=lambda t: t["time"])


def period_of(t: datetime, by: str) -> str:
    if by == "day":
        return t.strftime("%Y-%m-%d")
    year, week, _ = t.isocalendar()
    return f"{year}-W{week:02d}"


def usage(turns: list[dict], by: str = "week", periods: int = 8, now: datetime | None = None) -> dict:
    """Turns per period per adapter over the last `periods` days or weeks (empty ones included), plus
    all-time totals and when each was last used."""
    now = now or datetime.now(UTC)
    step = timedelta(days=1 if by == "day" else 7)
    keys = []
    for i in range(periods - 1, -1, -1):
        key = period_of(now - i * step, by)
        if key not in keys:
            keys.append(key)
    adapters: dict[str, dict] = {}
    for t in turns:
        for ident in t["adapters"] or [BASE]:
            row = adapters.setdefault(ident, {"counts": dict.fromkeys(keys, 0), "total": 0, "last_used": None})
            row["total"] += 1
            row["last_used"] = t["time"].isoformat().replace("+00:00", "Z")
            key = period_of(t["time"], by)
            if key in row["counts"]:
                row["counts"][key] += 1
    return {"by": by, "periods": keys, "adapters": adapters}


def training_loss(entry: AdapterEntry) -> dict | None:
    """The loss recorded at training time: llama.cpp held-out perplexity (as measured here), else the
    trainer's validation loss (transformers, on the dequantized base: close, not identical)."""
    ppl = (entry.metrics or {}).get("perplexity") or {}
    adapter, base = ppl.get("adapter"), ppl.get("base")
    if _positive(adapter):
        return {"loss": math.log(adapter), "base_loss": math.log(base) if _positive(base) else None,
                "source": "held-out perplexity at training (llama.cpp)"}
    training = entry.training or {}
    if _positive(training.get("val_loss")):
        base = training.get("base_val_loss")
        return {"loss": float(training["val_loss"]), "base_loss": float(base) if _positive(base) else None,
                "source": "validation loss at training (transformers)"}
    return None


def _positive(x) -> bool:
    return isinstance(x, int | float) and not isinstance(x, bool) and math.isfinite(x) and x > 0


def log_target(entry: AdapterEntry, user: str) -> tuple[dict | None, str]:
    """Which log turns the adapter learned to write: (load_source arguments, description) or (None, why)."""
    if entry.kind == "persona":
        persona = persona_of(entry)
        if persona is None:
            return None, "a persona adapter whose persona is unknown: no log turns to measure on"
        return {"target": "persona", "persona": persona, "user": None}, f"persona {persona}'s replies"
    owner = entry.owner or user
    if entry.kind == "voice" or (entry.training or {}).get("source") == "logs":
        return {"target": "user", "persona": None, "user": owner}, f"{owner}'s messages"
    source = (entry.training or {}).get("source")
    learned = f"trained on {source}" if source else "added by hand"
    return None, f"a {entry.kind} adapter {learned}: the logs hold no text of the kind it writes"


def drift_one(engine, vault: Vault, manifest: Manifest, entry: AdapterEntry, turns: list[dict], *, user: str,
              days: int, max_examples: int, min_turns: int, threshold: float, window: int | None = None,
              now: datetime | None = None, base_cache: dict | None = None) -> dict:
    """One adapter's drift report: status ok | drift | no-training-loss | too-few-turns | no-log-target |
    other-base, with the numbers behind it and a one-line note. `base_cache`: the base model's score per
    set of turns, shared across adapters of one run (two voice adapters are measured on the same turns)."""
    from trainer.data.sources import load_source
    from trainer.evaluation.perplexity import score
    from trainer.protocol.job import trained_window

    out = {"id": entry.id, "kind": entry.kind, "status": None, "note": "", "recent": None,
           "training": training_loss(entry), "delta": None, "threshold": threshold, "days": days}
    info = engine.info
    try:
        stack = resolve_stack(manifest, [StackSpec(entry.id)], info.fingerprint, info.name)
    except AdapterError as exc:
        return {**out, "status": "other-base", "note": str(exc)}
    args, what = log_target(entry, user)
    if args is None:
        return {**out, "status": "no-log-target", "note": what}
    since = (now or datetime.now(UTC)) - timedelta(days=days)
    times = {t["id"]: t["time"] for t in turns}
    report = load_source("logs", vault=vault, target=args["target"], persona=args["persona"], user=args["user"],
                         window=window or trained_window(entry.training))  # as it was trained
    # Persona replies are assistant records: their time is that of the user turn just before them.
    recent = sorted((ex for ex in report.examples if _time(ex.origin, times) >= since),
                    key=lambda ex: _time(ex.origin, times))
    if len(recent) < min_turns:
        return {**out, "status": "too-few-turns",
                "note": f"too few recent turns: {len(recent)} of {what} in the last {days} days (need {min_turns})"}
    recent = recent[-max_examples:]  # the newest
    for ident, _ in stack:
        engine.load_adapter(ident, vault.root / manifest.adapters[ident].file)
    cache = base_cache if base_cache is not None else {}
    key = (what, tuple(ex.origin for ex in recent))
    before = engine.adapters
    try:
        if key not in cache:
            engine.set_adapters([])
            cache[key] = score(engine, recent)
        base = cache[key]
        engine.set_adapters(stack)
        tuned = score(engine, recent)
    finally:
        engine.set_adapters(before)
    ppl = {"adapter_loss": tuned.loss, "base_loss": base.loss}
    out["recent"] = {"turns": len(recent), "tokens": tuned.tokens, "loss": tuned.loss, "base_loss": base.loss,
                     "of": what}
    trained = out["training"]
    if trained is None:
        return {**out, "status": "no-training-loss",
                "note": "no training-time loss recorded (added by hand, or trained before Home kept metrics): "
                        "nothing to compare the recent loss with"}
    out["delta"] = ppl["adapter_loss"] - trained["loss"]
    base_note = ""
    if trained.get("base_loss") is not None:
        base_delta = ppl["base_loss"] - trained["base_loss"]
        out["base_delta"] = base_delta
        base_note = f"; the base model moved {base_delta:+.2f} on the same turns"
    drifted = out["delta"] > threshold
    out["status"] = "drift" if drifted else "ok"
    out["note"] = (f"loss {ppl['adapter_loss']:.2f} on {len(recent)} recent turns vs {trained['loss']:.2f} at "
                   f"training ({out['delta']:+.2f}, threshold {threshold:g}){base_note}"
                   + ("; consider retraining on recent logs (`home train --source logs`)" if drifted else ""))
    return out


def _time(origin: str, times: dict) -> datetime:
    """A log example's time: its own record's, else (a reply) the nearest earlier user turn's."""
    if origin in times:
        return times[origin]
    session, _, n = origin.rpartition(":")
    if n.isdigit():
        for k in range(int(n) - 1, 0, -1):
            if f"{session}:{k}" in times:
                return times[f"{session}:{k}"]
    return datetime.min.replace(tzinfo=UTC)
