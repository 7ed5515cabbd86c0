"""`home train --source jsonl FILE --per-persona`: one adapter per persona, in one run, on one loaded base.

The recipe is the single-adapter one (stages.train_candidate: train → convert → verify → held-out perplexity →
plot; stages.register_candidates), looped over the personas found in the file: the base is loaded once and its
LoRA layers are unloaded after each persona, so the next one starts from the same clean weights. Each
adapter is registered with owner = the persona id and kind persona, and the persona's card then points at
it (`extensions.home.adapters`), so choosing the persona (hotkey, --persona) brings its adapter along.

Every event of a persona's stage carries `persona`, and a `phase` event (name "persona") opens each one,
so a progress bar restarts per persona. A persona whose adapter fails verification is skipped (the rest of
the cast still trains) and the run then fails naming it. The run directory keeps one folder per persona;
`--resume` skips the personas already registered and continues the interrupted one from its checkpoint.
"""

from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path

from trainer.data.examples import MIN_EXAMPLES, DatasetReport, Example
from trainer.protocol.job import Job, JobError
from trainer.protocol.runs import read_state, write_state
from trainer.worker.stages import (
    DatasetTooSmall,
    Emit,
    VerificationFailed,
    register_candidates,
    train_candidate,
)


class PersonasFailed(Exception):
    """Some personas' adapters failed verification; the others were registered (exit 1)."""

    exit_code = 1


def group_by_persona(examples: list[Example]) -> dict[str, list[Example]]:
    """Examples per persona id, in the file's order; untagged examples belong to nobody and are left out."""
    groups: dict[str, list[Example]] = {}
    for ex in examples:
        if ex.persona:
            groups.setdefault(_slug(ex.persona), []).append(ex)
    return groups


def _slug(name: str) -> str:
    from vault.personas import slug

    return slug(name)


def choose(groups: dict[str, list[Example]], wanted: list[str], where: str) -> dict[str, list[Example]]:
    """The personas asked for (all by default); unknown names are refused listing what the file has."""
    found = ", ".join(f"{p} ({len(x)})" for p, x in groups.items()) or "none"
    if not groups:
        raise DatasetTooSmall(f"{where}: no persona records (records need a \"persona\" field); found none")
    if not wanted:
        return groups
    out = {}
    for name in wanted:
        pid = _slug(name)
        if pid not in groups:
            raise JobError(f"{where}: no records for persona {name!r}; personas found: {found}")
        out[pid] = groups[pid]
    return out


def train_each(job: Job, vault, run_dir: Path, model_path: Path, info, emit: Emit) -> dict:
    """Train, register and point every chosen persona; returns a summary shaped like a manifest entry
    (`id`: the adapters' ids joined, `metrics.perplexity`: per persona) for the worker's `done` event."""
    from trainer.data.sources import load_source
    from trainer.protocol.guard import check_cpu
    from trainer.worker.base import load_base, pick_device
    from trainer.worker.dataset import split_examples

    t0 = time.time()
    report = load_source("jsonl", job.path, vault=vault, window=job.context_window, user=job.user)
    emit("dataset", report=report.render(), **report.summary())
    groups = choose(group_by_persona(report.examples), job.personas, job.path or "")
    small = {p: len(x) for p, x in groups.items() if len(x) < MIN_EXAMPLES}
    todo = {p: x for p, x in groups.items() if p not in small}
    if not todo:
        raise DatasetTooSmall(f"{job.path}: every persona has fewer than {MIN_EXAMPLES} usable examples: "
                              + ", ".join(f"{p} ({n})" for p, n in small.items()))
    for pid, n in small.items():
        emit("phase", name="skipped", persona=pid,
             detail=f"skipping {pid}: {n} usable examples, at least {MIN_EXAMPLES} are needed")
    done: dict[str, str] = dict(read_state(run_dir).get("registered") or {}) if job.resume else {}

    device = pick_device(job.device, job.four_bit)
    check_cpu(device.kind, info, report.examples, job.epochs, job.steps, job.batch_size, job.allow_cpu)
    emit("phase", name="load", detail=f"loading {info.name} once for {len(todo)} personas on {device.label}")
    base = load_base(model_path, device, job.base)
    entries: dict[str, dict] = {}
    failed: dict[str, str] = {}
    for i, (pid, examples) in enumerate(todo.items(), 1):
        if pid in done:
            emit("phase", name="persona", persona=pid, detail=f"persona {i}/{len(todo)}: {pid} already "
                 f"registered as '{done[pid]}' in this run")
            continue

        def pemit(kind: str, _pid: str = pid, **fields) -> dict:
            return emit(kind, persona=_pid, **fields)

        train_ex, val_ex = split_examples(examples, job.val_fraction, seed=job.seed)
        emit("phase", name="persona", persona=pid, index=i, count=len(todo),
             detail=f"persona {i}/{len(todo)}: {pid} ({len(train_ex)} train / {len(val_ex)} validation examples)")
        sub = replace(job, target="persona", persona=pid, name=f"{pid}-persona", kind="persona",
                      per_persona=False, personas=[])
        try:
            cand = train_candidate(sub, base, model_path, train_ex, val_ex, run_dir / pid, sub.adapter_name, "persona",
                            pemit)
        except VerificationFailed as exc:  # one persona's bad adapter must not cost the rest of the cast
            failed[pid] = str(exc).splitlines()[0]
            emit("phase", name="failed", persona=pid, detail=f"{pid}: not registered: {failed[pid]}")
            base = load_base(model_path, device, job.base)  # its LoRA layers are still in the weights
            continue
        base.model = cand.result.peft_model.unload()  # clean base weights for the next persona
        own = DatasetReport(examples=list(examples))
        [entry] = register_candidates(sub, vault, info, own, [cand], t0, pemit, owner=pid)
        entries[pid] = entry
        done[pid] = entry["id"]
        write_state(run_dir, "running", registered=done)
        where = point_persona(vault, pid, entry["id"])
        emit("phase", name="pointed", persona=pid, detail=(
            f"persona '{pid}' now uses '{entry['id']}' ({where})" if where else
            f"no persona card '{pid}': '{entry['id']}' is registered; add it to a card's extensions.home.adapters"))
    ids = [done[p] for p in todo if p in done]
    if failed:
        write_state(run_dir, "running", registered=done, failed=failed)
        raise PersonasFailed(f"{len(failed)} of {len(todo)} personas not registered ("
                             + "; ".join(f"{p}: {why}" for p, why in failed.items())
                             + f"); registered: {', '.join(ids) or 'none'}; `--resume` retries the failed ones")
    return {"id": ", ".join(ids), "ids": done,
            "metrics": {"perplexity": {p: e["metrics"].get("perplexity") for p, e in entries.items()}}}


def point_persona(vault, pid: str, adapter_id: str) -> str | None:
    """Put `adapter_id` first in the persona's adapter stack, replacing earlier persona adapters the
    trainer made for it (owner = pid, kind persona); other adapters the user stacked stay. Returns the
    card's path, or None when no card has that id (the adapter is still registered)."""
    from vault.errors import PersonaError
    from vault.manifest import ManifestStore
    from vault.personas import Persona, get_persona, save_persona

    try:
        persona = get_persona(vault, pid)
    except PersonaError:
        return None
    if persona.id != pid:
        return None
    adapters = ManifestStore(vault).read().adapters
    data = dict(persona.data)
    ext = dict(data.get("extensions") or {})
    home = dict(ext.get("home") or {})

    def ours(entry: dict) -> bool:  # an earlier version of this persona's adapter (or one since removed)
        known = adapters.get(entry.get("id"))
        if known is None:
            return str(entry.get("id", "")).startswith(f"{pid}-persona-")
        return known.kind == "persona" and known.owner == pid

    stack = [a for a in home.get("adapters", []) if isinstance(a, dict) and a.get("id") != adapter_id and not ours(a)]
    home["adapters"] = [{"id": adapter_id, "scale": 1.0}, *stack]
    ext["home"] = home
    data["extensions"] = ext
    return str(save_persona(vault, Persona(pid, data)))
