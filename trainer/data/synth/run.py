"""The synthesis loop: per persona, scenarios → generator → filters → JSONL persona records, resumable.

Files in the output folder (0700/0600):
- `personas/<id>.jsonl`: the kept records, append-only, fsynced one by one (the persona-record format
  `trainer/data/sources/jsonl.py` reads: persona, category, instruction, input, output; plus key, tier,
  generator);
- `personas/<id>.attempts.jsonl`: every attempt, kept or dropped with the filter that dropped it, so a
  re-run neither retries a dropped scenario nor forgets what the filters did;
- `all.jsonl` (every persona), `train.jsonl` / `heldout.jsonl` (a per-persona split by record key, the
  held-out part never trained on) and `report.json`: rewritten atomically at the end of each run.

Resuming is re-running: scenarios already attempted are skipped, a torn last line (kill -9 mid-write)
is cut off, and the counts (from the tiers file) are targets for the total, not for this run.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from llm.params import GenParams
from trainer.data.synth import SynthError
from trainer.data.synth.filters import FILTERS, Limits, check, clean, normalise, trim_cut
from trainer.data.synth.prompts import character_context, messages_for, scenarios
from vault.fsio import (
    FileLock,
    LockTimeout,
    append_line_fsync,
    atomic_write_json,
    atomic_write_text,
    ensure_private_dir,
)
from vault.personas import Persona

PARAMS = GenParams(temperature=0.8, top_p=0.95, top_k=40, repeat_penalty=1.15, max_tokens=160)
ATTEMPTS_PER_EXAMPLE = 4  # give up on a persona after target × this many attempts (the filters drop a lot)
LIMITS = Limits()
COMBINED = ("all.jsonl", "train.jsonl", "heldout.jsonl")


@dataclass
class Plan:
    persona: Persona
    tier: str
    target: int
    others: list[str]  # names that are not this persona (for the other_persona filter)


@dataclass
class PersonaResult:
    persona: str
    tier: str
    target: int
    kept: int = 0  # in total, all runs
    new: int = 0  # this run
    attempts: int = 0  # in total
    dropped: Counter = field(default_factory=Counter)  # filter → count, in total
    stopped_early: str | None = None  # why fewer than `target` were kept

    def to_dict(self) -> dict:
        return {"persona": self.persona, "tier": self.tier, "target": self.target, "kept": self.kept,
                "new": self.new, "attempts": self.attempts,
                "dropped": {k: self.dropped[k] for k in FILTERS if self.dropped.get(k)},
                "stopped_early": self.stopped_early}


Progress = Callable[[PersonaResult], None]


def synthesize(plans: list[Plan], generate, out_dir: str | Path, *, params: GenParams = PARAMS,
               limits: Limits = LIMITS, holdout: float = 0.1, on_progress: Progress | None = None) -> dict:
    """Run every plan to its target (or until its scenarios or attempts run out); returns the report.

    `generate(messages, params) -> Reply` is a LocalGenerator or an OpenAIGenerator. One run per output
    folder at a time (a lock file); a KeyboardInterrupt leaves every file consistent for the next run."""
    out = ensure_private_dir(out_dir)
    ensure_private_dir(out / "personas")
    lock = FileLock(out / ".synth.lock", timeout=0)
    try:
        lock.acquire()
    except LockTimeout:
        raise SynthError(f"{out}: another `home data synth` is writing this folder") from None
    results: list[PersonaResult] = []
    try:
        for plan in plans:
            results.append(_persona(plan, generate, out, params, limits, on_progress))
        report = {"created": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
                  "generator": getattr(generate, "label", type(generate).__name__), "params": params.to_dict(),
                  "limits": {"min_words": limits.min_words, "max_words": limits.max_words},
                  "personas": [r.to_dict() for r in results],
                  "dropped": dict(sum((r.dropped for r in results), Counter())),
                  "files": combine(out, holdout)}
        atomic_write_json(out / "report.json", report)
        return report
    finally:
        lock.release()


def _persona(plan: Plan, generate, out: Path, params: GenParams, limits: Limits,
             on_progress: Progress | None) -> PersonaResult:
    p = plan.persona
    records_path = out / "personas" / f"{p.id}.jsonl"
    attempts_path = out / "personas" / f"{p.id}.attempts.jsonl"
    records = read_jsonl(records_path)
    attempts = read_jsonl(attempts_path)
    result = PersonaResult(p.id, plan.tier, plan.target, kept=len(records))
    seen = {normalise(r.get("output", "")) for r in records}
    tried = {a.get("key") for a in attempts} | {r.get("key") for r in records}
    result.attempts = len(tried - {None})
    result.dropped.update(a["filter"] for a in attempts if a.get("status") == "dropped" and a.get("filter"))
    budget = plan.target * ATTEMPTS_PER_EXAMPLE + 4
    context = character_context(p)
    label = getattr(generate, "label", "")
    if on_progress:
        on_progress(result)
    todo = [s for s in scenarios(p) if s.key not in tried]
    for scenario in todo:
        if result.kept >= plan.target:
            break
        if result.attempts >= budget:
            result.stopped_early = f"{result.attempts} attempts used (the filters dropped {sum(result.dropped.values())})"
            break
        seed = int(hashlib.sha256(f"{p.id}/{scenario.key}".encode()).hexdigest()[:8], 16) % (2 ** 31)
        reply = generate(messages_for(p, scenario, context), params.merged(seed=seed))
        text = clean(reply.text, p.name)
        verdict = None
        if reply.finish_reason == "length":
            text = trim_cut(text)
            if not text:
                verdict = ("too_long", f"cut off at {params.max_tokens} tokens before a sentence ended")
        verdict = verdict or check(text, p.name, plan.others, seen, limits)
        if verdict is None:
            record = {"persona": p.id, "category": scenario.category, "instruction": scenario.instruction,
                      "input": "", "output": text, "key": scenario.key, "tier": plan.tier, "generator": label}
            append_line_fsync(records_path, json.dumps(record, ensure_ascii=False))
            seen.add(normalise(text))
            result.kept += 1
            result.new += 1
        else:
            result.dropped[verdict[0]] += 1
        append_line_fsync(attempts_path, json.dumps(
            {"key": scenario.key, "category": scenario.category, "status": "dropped" if verdict else "kept",
             "filter": verdict[0] if verdict else None, "detail": verdict[1] if verdict else None,
             "finish": reply.finish_reason, "text": text if verdict else None}, ensure_ascii=False))
        result.attempts += 1
        if on_progress:
            on_progress(result)
    else:
        if result.kept < plan.target:
            result.stopped_early = f"all {len(scenarios(p))} scenarios tried"
    return result


def read_jsonl(path: Path) -> list[dict]:
    """The records of an append-only file; a torn last line (a kill mid-write) is cut off the file so the
    next append starts on a fresh line. Any other bad line is a SynthError naming file and line."""
    if not path.exists():
        return []
    raw = path.read_bytes()
    if raw and not raw.endswith(b"\n"):
        keep = raw.rfind(b"\n") + 1
        with open(path, "r+b") as fh:
            fh.truncate(keep)
            fh.flush()
            os.fsync(fh.fileno())
        raw = raw[:keep]
    out = []
    for n, line in enumerate(raw.decode("utf-8", "replace").splitlines(), 1):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except json.JSONDecodeError as exc:
            raise SynthError(f"{path}:{n}: not valid JSON ({exc.msg}); move the file away to start over") from None
        if not isinstance(rec, dict):
            raise SynthError(f"{path}:{n}: expected a JSON object")
        out.append(rec)
    return out


def is_heldout(record: dict, fraction: float) -> bool:
    """Stable per record: the same record is on the same side of the split in every run."""
    h = int(hashlib.sha256(f"{record.get('persona')}/{record.get('key')}".encode()).hexdigest()[:8], 16)
    return h / 2 ** 32 < fraction


def combine(out: Path, holdout: float) -> dict:
    """all.jsonl, train.jsonl and heldout.jsonl from every persona file in the folder; a persona with 3+
    records always gets at least one held-out record (the one whose key hashes lowest)."""
    every, train, held = [], [], []
    counts: dict[str, dict] = {}
    for path in sorted((out / "personas").glob("*.jsonl")):
        if path.name.endswith(".attempts.jsonl"):
            continue
        records = read_jsonl(path)
        chosen = [r for r in records if is_heldout(r, holdout)] if holdout > 0 else []
        if not chosen and holdout > 0 and len(records) >= 3:
            chosen = [min(records, key=lambda r: hashlib.sha256(
                f"{r.get('persona')}/{r.get('key')}".encode()).hexdigest())]
        keys = {id(r) for r in chosen}
        every += records
        held += chosen
        train += [r for r in records if id(r) not in keys]
        counts[path.stem] = {"records": len(records), "heldout": len(chosen)}
    files = {}
    for name, rows in zip(COMBINED, (every, train, held), strict=True):
        atomic_write_text(out / name, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
        files[name.removesuffix(".jsonl")] = str(out / name)
    return {**files, "counts": counts}
