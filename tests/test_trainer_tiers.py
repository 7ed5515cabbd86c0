"""A voice adapter's length and rank by the size of its log (trainer/protocol/tiers.py, issue 16): the
tiers' boundaries, the job's own --steps / --epochs / --rank winning, other kinds and DPO unchanged, old
job documents still read, and the worker's plan (its steps, its one line, the CPU guard's estimate) on the
tier's epochs. No training: the real settings, step count and guard (a torch import, ~3 s)."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest

from trainer.protocol.job import Job, JobError, read_job
from trainer.protocol.tiers import DEFAULT_EPOCHS, DEFAULT_RANK, VOICE_TIERS, sized, voice_tier
from trainer.worker.stages import announce_size, train_settings
from trainer.worker.train import total_steps_for

MEDIUM = next(t for t in VOICE_TIERS if t.name == "medium")


def collect() -> tuple[list[dict], object]:
    """The worker's events as a list, and the emit that appends to it."""
    events: list[dict] = []

    def emit(kind: str, **fields) -> dict:
        events.append({"event": kind, **fields})
        return events[-1]
    return events, emit


def test_each_boundary_gives_its_tiers_epochs_and_rank():
    for n, name, epochs in ((1, "tiny", 3.0), (32, "tiny", 3.0), (33, "small", 2.0), (128, "small", 2.0),
                            (129, "medium", 1.25), (1000, "medium", 1.25), (1001, "large", 1.0),
                            (10**6, "large", 1.0)):
        tier = voice_tier(n)
        settings = train_settings(Job(vault="v"), n)
        assert (tier.name, tier.epochs, settings.epochs, settings.steps) == (name, epochs, epochs, None), n
        assert (settings.rank, settings.alpha) == (tier.rank, 2.0 * tier.rank), n
        assert sized(Job(vault="v"), n).tier == tier
    assert [t.most for t in VOICE_TIERS] == [32, 128, 1000, None]  # ordered, the last one open-ended


def test_the_jobs_own_steps_epochs_and_rank_win():
    n = 269
    s = train_settings(Job(vault="v", steps=36), n)
    assert (s.steps, s.epochs, s.rank) == (36, None, MEDIUM.rank) and total_steps_for(n, s) == 36
    s = train_settings(Job(vault="v", epochs=4.0), n)
    assert (s.steps, s.epochs, s.rank) == (None, 4.0, MEDIUM.rank)
    s = train_settings(Job(vault="v", rank=8), n)
    assert (s.epochs, s.rank, s.alpha) == (MEDIUM.epochs, 8, 16.0)
    assert train_settings(Job(vault="v", rank=8, alpha=4.0), n).alpha == 4.0
    assert sized(Job(vault="v", steps=36), n).tier == MEDIUM  # the tier still chose the rank
    assert sized(Job(vault="v", epochs=2.0, rank=8), n).tier is None  # it chose nothing


def test_other_kinds_and_dpo_keep_three_epochs_and_rank_16():
    for fields in ({"target": "persona", "persona": "wren"}, {"kind": "style"}, {"kind": "task"},
                   {"per_persona": True, "source": "jsonl", "path": "p.jsonl"},
                   {"method": "dpo", "source": "preferences"}):
        job = Job(vault="v", **fields)
        job.validate()
        s = train_settings(job, 269)
        assert (s.steps, s.epochs, s.rank, s.alpha) == (None, DEFAULT_EPOCHS, DEFAULT_RANK, 32.0), fields
        assert sized(job, 269).tier is None, fields
    assert (DEFAULT_EPOCHS, DEFAULT_RANK) == (3.0, 16)


def test_a_job_written_with_rank_16_reads_back_as_its_own_and_bad_values_name_the_field(tmp_path):
    old = tmp_path / "old.json"  # what `home train` wrote before the tiers: rank 16, epochs unset
    old.write_text(json.dumps({**Job(vault=str(tmp_path)).to_dict(), "rank": 16}))
    job = read_job(old)
    assert (job.rank, job.epochs, sized(job, 269).own) == (16, None, ("rank",))
    assert Job.from_dict(job.to_dict()) == job
    new = Job(vault=str(tmp_path))
    assert new.rank is None and Job.from_dict(json.loads(json.dumps(new.to_dict()))) == new
    for field, value, why in (("rank", "16", "expected a whole number"), ("rank", 16.0, "expected a whole number"),
                              ("rank", True, "expected a whole number"), ("rank", 0, "expected at least 1"),
                              ("steps", "9", "expected a whole number"), ("epochs", "2", "expected a positive"),
                              ("epochs", 0, "expected a positive")):
        path = tmp_path / "bad.json"
        path.write_text(json.dumps({"vault": str(tmp_path), field: value}))
        with pytest.raises(JobError, match=f"{field}: {why}") as err:
            read_job(path)
        assert str(err.value).startswith(f"{path}: ") and "\n" not in str(err.value)


def test_the_plan_takes_the_tiers_steps_and_says_so_in_one_line():
    from home.progress import _describe

    for n, steps in ((24, 9), (48, 12), (269, 43), (1500, 188)):  # 3, 2, 1.25, 1 epochs of ceil(n / 8) batches
        events, emit = collect()
        settings = announce_size(Job(vault="v"), n, emit)
        assert total_steps_for(n, settings) == steps, n
        [event] = events
        tier = voice_tier(n)
        assert (event["name"], event["tier"], event["steps"], event["rank"]) == ("plan", tier.name, steps, tier.rank)
        line = _describe(event)
        assert line == (f"voice tier {tier.name} ({n} training examples): {tier.epochs:g} epochs = {steps} steps, "
                        f"rank {tier.rank}"), line
    events, emit = collect()
    announce_size(Job(vault="v", epochs=2.0), 269, emit)
    assert events[0]["detail"] == f"voice tier medium (269 training examples): 2 epochs (yours) = 68 steps, rank {MEDIUM.rank}"
    events, emit = collect()
    announce_size(Job(vault="v", kind="style"), 269, emit)
    assert events == []  # no tier, no line: the train phase's line says the steps as before


def test_the_worker_checks_the_cpu_time_of_the_tiers_epochs_on_the_trained_examples(tmp_path):
    """The CPU guard refuses a too-large model with the hours for what will run: the tier's 1.25 epochs of
    the 135 examples trained (150 minus the 15 latest held out), not 3 epochs of all 150."""
    from llm.gguf_meta import read_model_info
    from llm.models import default_model_path
    from trainer.data.sources import load_source
    from trainer.protocol.guard import CpuGuardError, check_cpu
    from trainer.worker.pipeline import train_one
    from vault.layout import Vault

    data = tmp_path / "voice.jsonl"
    data.write_text("".join(json.dumps({"prompt": [{"role": "user", "content": f"question {i}, what now?"}],
                                        "completion": [{"role": "assistant", "content": f"answer {i}: " + "so " * i}]})
                            + "\n" for i in range(150)))
    big = replace(read_model_info(default_model_path()), tensors={"w": (7_000_000_000,)})  # a 7B model's size
    job = Job(vault=str(tmp_path / "vault"), source="jsonl", path=str(data), device="cpu")
    events, emit = collect()
    with pytest.raises(CpuGuardError) as refused:
        train_one(job, Vault.open(tmp_path / "vault"), tmp_path / "run", default_model_path(), big, emit)
    plan = next(e for e in events if e.get("name") == "plan")
    assert (plan["tier"], plan["examples"], plan["epochs"], plan["steps"]) == ("medium", 135, 1.25, 22)
    examples = load_source("jsonl", str(data)).examples
    expected = {}
    for epochs, share in ((1.25, examples[:135]), (3.0, examples)):
        with pytest.raises(CpuGuardError) as err:
            check_cpu("cpu", big, share, epochs, None, 8, False)
        expected[epochs] = str(err.value)
    assert str(refused.value) == expected[1.25] != expected[3.0]


def test_home_train_leaves_length_and_rank_to_the_tier_unless_given(tmp_path, capsys):
    from home.cli import build_parser
    from home.commands.train import build_job
    from home.context import Context

    data = tmp_path / "d.jsonl"
    data.write_text(json.dumps({"prompt": [{"role": "user", "content": "hi"}],
                                "completion": [{"role": "assistant", "content": "hello"}]}) + "\n")
    got = []
    for extra in ([], ["--rank", "8", "--epochs", "2"], ["--steps", "5"]):
        args = build_parser().parse_args(["--vault", str(tmp_path / "v"), "train", "--source", "jsonl", str(data),
                                          *extra])
        job = build_job(Context(args), args)
        got.append((job.steps, job.epochs, job.rank))
    assert got == [(None, None, None), (None, 2.0, 8), (5, None, None)]
    with pytest.raises(SystemExit):
        build_parser().parse_args(["train", "--help"])
    assert "up to 32 training examples: 3, up to 128: 2, up to 1000: 1.25, more: 1" in " ".join(
        capsys.readouterr().out.split())
