"""One run's lifecycle: its folder and state (`runs/`), leftovers cleaned first, the architecture checked,
then the recipe (`pipeline` for one adapter, `per_persona` for one per persona, `preference_run` for
DPO from pick-best pairs). A run that stops or fails is recorded as such and registers nothing.
"""

from __future__ import annotations

from trainer.protocol.job import Job
from trainer.protocol.runs import find_resumable, new_run, write_state
from trainer.worker.stages import Emit, RunStopped


def run(job: Job, emit: Emit) -> dict:
    """Execute `job`; returns the registered manifest entry. Raises on stop or failure (nothing registered)."""
    from llm.gguf_meta import read_model_info
    from llm.models import resolve_model
    from vault.layout import Vault
    from vault.orphans import clean_leftovers

    vault = Vault.open(job.vault)
    recovered = clean_leftovers(vault)  # what a killed run or registration left: before anything reads it
    if job.resume:
        run_dir, job = find_resumable(vault, job)
        write_state(run_dir, "running")
    else:
        run_dir = new_run(vault, job)
    model_path = resolve_model(job.model)
    info = read_model_info(model_path)
    emit("started", run_dir=str(run_dir), adapter=job.adapter_name, source=job.source, model=info.name,
         resume=job.resume, recovered=recovered)
    try:
        from trainer.worker.convert import check_architecture

        check_architecture(info.arch, model_path)  # before the dataset, the load and the training
        if job.method == "dpo":
            from trainer.worker.preference_run import train_preferences

            entry = train_preferences(job, vault, run_dir, model_path, info, emit)
        elif job.per_persona:
            from trainer.worker.per_persona import train_each

            entry = train_each(job, vault, run_dir, model_path, info, emit)
        else:
            from trainer.worker.pipeline import train_one

            entry = train_one(job, vault, run_dir, model_path, info, emit)
    except RunStopped:
        write_state(run_dir, "stopped")
        raise
    except BaseException as exc:
        write_state(run_dir, "failed", error=str(exc).splitlines()[0] if str(exc) else type(exc).__name__)
        raise
    write_state(run_dir, "done", adapter=entry["id"])
    return entry
