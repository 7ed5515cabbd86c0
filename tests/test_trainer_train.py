"""trainer/worker/dataset.py and trainer/worker/train.py on the CPU, at toy sizes, on the tiny random-weight
Llama GGUF (tests/families.py): the default model's tokenizer and chat template, a model of a few MB. The
labels, the training loop, its events, checkpoints and an exact resume are the same for any model; the real
default model is trained end to end in test_trainer_e2e.py (on it this module took ~84 s alone, now ~36 s).

One 8-step run (batch 4, rank 8) is shared by the module; the stop/resume test replays it with a stop
after step 2 and checks that the resumed run reproduces the same losses step for step (same seed →
same losses, and a resume that is exact, in one go).
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from trainer.data.examples import Example
from trainer.worker.dataset import (
    IGNORE,
    DataError,
    LengthGroupedSampler,
    padding_waste,
    split_examples,
    tokenize,
)

PAIRS = [
    ("How was your day?", "Busy, but the good kind"), ("Rain again?", "The garden is thrilled"),
    ("Weekend plans?", "A long walk by the river"), ("Coffee?", "Only the strong kind"),
    ("Favourite book?", "Anything by Le Guin"), ("How do you relax?", "Tea and a slow puzzle"),
    ("What is your job?", "I mend old clocks"), ("Music?", "Scratchy jazz records"),
    ("Where to travel?", "The Faroe Islands"), ("Lunch?", "Soup and warm bread"),
    ("Any pets?", "A grumpy cat called Moss"), ("Best advice?", "Measure twice, cut once"),
]
CATCHPHRASE = " Onward, friend!"


def make_examples(n: int = len(PAIRS)) -> list[Example]:
    """A distinctive voice: short answers that always end with the same catchphrase."""
    return [Example(context=({"role": "user", "content": q},), target=a + "." + CATCHPHRASE, source="jsonl",
                    origin=f"voice.jsonl:{i + 1}", system="Reply briefly.")
            for i, (q, a) in enumerate(PAIRS[:n])]


def settings(**over):
    from trainer.worker.train import TrainSettings

    kw = dict(steps=8, rank=8, alpha=16.0, batch_size=4, lr=1e-3, eval_every=4, save_every=4, max_length=128,
              patience=0, seed=0, cpu_threads=1)
    kw.update(over)
    return TrainSettings(**kw)


class Recorder:
    """An EventWriter stand-in that keeps the events (and can act on one)."""

    def __init__(self, on_event=None):
        self.events: list[dict] = []
        self.on_event = on_event

    def __call__(self, kind: str, **fields) -> dict:
        from trainer.protocol.events import KINDS

        assert kind in KINDS, kind
        event = {"event": kind, **fields}
        self.events.append(event)
        if self.on_event:
            self.on_event(event)
        return event

    def of(self, kind: str) -> list[dict]:
        return [e for e in self.events if e["event"] == kind]


# --- split and sampling (no model) ---


def test_split_is_seeded_and_never_leaves_validation_empty():
    exs = make_examples()
    a, b = split_examples(exs, 0.1, seed=3), split_examples(exs, 0.1, seed=3)
    assert a == b
    train, val = a
    assert len(val) == 2 and len(train) == 10  # 10% of 12 rounds up, then min_val=2
    assert {e.key() for e in train}.isdisjoint({e.key() for e in val})
    assert split_examples(exs, 0.1, seed=4) != a
    train, val = split_examples(make_examples(4), 0.1)
    assert len(val) >= 1 and len(train) >= 3


def test_time_split_holds_out_the_latest_examples():
    exs = make_examples()
    train, val = split_examples(exs, 0.25, seed=3, by_time=True)
    assert val == exs[-3:] and train == exs[:-3]  # the later words, whatever the seed
    assert split_examples(exs, 0.25, seed=4, by_time=True) == (train, val)
    assert split_examples(exs, 0.25, seed=3)[1] != val  # the random split is another one


def test_split_refuses_too_few_examples():
    with pytest.raises(DataError, match="only 3 examples") as err:
        split_examples(make_examples(3))
    assert err.value.exit_code == 2
    with pytest.raises(DataError, match="val_fraction"):
        split_examples(make_examples(), val_fraction=1.5)


def test_length_grouped_sampler_is_deterministic_and_saves_padding():
    import random

    rng = random.Random(0)
    records = [{"input_ids": [0] * rng.randint(5, 300)} for _ in range(400)]
    lengths = [len(r["input_ids"]) for r in records]
    sampler = LengthGroupedSampler(lengths, batch_size=8, seed=1)
    order = list(sampler)
    assert sorted(order) == list(range(400)) and order == list(sampler)
    sampler.set_epoch(1)
    assert list(sampler) != order
    sampler.set_epoch(0)
    batches = sampler.batches()
    assert max(lengths[i] for i in batches[0]) == max(lengths)  # the longest batch runs first
    shuffled = list(range(400))
    rng.shuffle(shuffled)
    random_batches = [shuffled[i:i + 8] for i in range(0, 400, 8)]
    assert padding_waste(records, batches) < 0.1 < padding_waste(records, random_batches)


def test_early_stopping_counts_validation_passes_without_improvement(tmp_path):
    from types import SimpleNamespace

    from trainer.worker.train_progress import Progress

    rec = Recorder()
    progress = Progress(rec, total=100, patience=2, best_dir=tmp_path / "best", base_val=3.5)
    control = SimpleNamespace(should_training_stop=False, should_save=False)
    for step, loss in [(10, 3.0), (20, 2.5), (30, 2.6), (40, 2.7)]:
        assert not control.should_training_stop
        progress.on_evaluate(None, SimpleNamespace(global_step=step), control, metrics={"eval_loss": loss})
    assert control.should_training_stop and progress.early_stopped
    assert progress.best == 2.5 and progress.best_step == 20
    assert [e["early_stop"] for e in rec.of("eval")] == [False, False, False, True]


def test_signals_request_a_stop_then_abort_and_handlers_come_back():
    from trainer.worker.train_progress import StopRequest, stop_on_signals

    before = signal.getsignal(signal.SIGTERM)
    stop = StopRequest()
    with pytest.raises(KeyboardInterrupt), stop_on_signals(stop):
        os.kill(os.getpid(), signal.SIGTERM)
        assert stop.requested and stop.reason == "SIGTERM"
        os.kill(os.getpid(), signal.SIGTERM)  # a second signal does not wait for the step
    assert signal.getsignal(signal.SIGTERM) is before


# --- the real model ---


@pytest.fixture(scope="module")
def base():
    from tests.families import tiny_gguf
    from trainer.worker.base import load_base, pick_device

    return load_base(tiny_gguf("llama"), pick_device("cpu"))


def test_labels_cover_only_the_target_and_end_of_turn(base):
    tok = base.tokenizer
    ex = make_examples(1)[0]
    rec = tokenize([ex], tok, max_length=256)[0]
    ids, labels = rec["input_ids"], rec["labels"]
    first = next(i for i, label in enumerate(labels) if label != IGNORE)
    assert all(label == IGNORE for label in labels[:first])
    assert labels[first:] == ids[first:]
    assert tok.decode(ids[first:]).strip() == ex.target + "<|im_end|>"
    assert tok.decode(ids[:first]).endswith("<|im_start|>assistant\n")
    # Too long: the oldest context goes, the target stays whole.
    long = Example(context=({"role": "user", "content": "word " * 400},), target=ex.target, source="jsonl", origin="x")
    rec = tokenize([long], tok, max_length=64)[0]
    assert len(rec["input_ids"]) == 64
    assert tok.decode([t for t in rec["labels"] if t != IGNORE]).strip() == ex.target + "<|im_end|>"


@pytest.fixture(scope="module")
def full_run(base, tmp_path_factory):
    """The reference run: 8 steps, never interrupted. Unloads its LoRA layers so the base is clean again."""
    from trainer.worker.train import train_adapter

    train, val = split_examples(make_examples(), 0.25, seed=0)
    rec = Recorder()
    before = signal.getsignal(signal.SIGINT)
    result = train_adapter(base, train, val, settings(), tmp_path_factory.mktemp("full"), emit=rec)
    assert signal.getsignal(signal.SIGINT) is before  # handlers restored
    result.peft_model.unload()
    return result, rec, (train, val)


def test_training_beats_the_base_and_reports_progress(full_run):
    result, rec, (train, val) = full_run
    assert not result.stopped and result.steps_done == result.total_steps == 8
    assert result.base_val_loss is not None and result.best_val_loss < result.base_val_loss
    assert [s for s, _ in result.val_losses] == [4, 8]
    steps = rec.of("step")
    assert [e["step"] for e in steps] == list(range(1, 9))
    for e in steps:
        assert {"step", "total", "loss", "lr", "tokens_per_s", "eta_s"} <= e.keys()
        assert e["total"] == 8 and e["loss"] > 0 and e["eta_s"] >= 0
    assert steps[-1]["eta_s"] == 0
    evals = rec.of("eval")
    assert evals[0]["base"] and evals[0]["step"] == 0
    assert [e["step"] for e in evals[1:]] == [4, 8]
    assert [e["step"] for e in rec.of("checkpoint")] == [4, 8]
    assert (result.adapter_dir / "adapter_config.json").is_file()
    assert (result.adapter_dir / "adapter_model.safetensors").is_file()
    assert result.tokens_per_s > 0 and result.peak_memory_bytes > 0 and result.device.startswith("cpu")
    assert result.padding == "length-grouped"


def test_short_runs_validate_every_other_step_and_the_last(base, full_run, tmp_path):
    """A validation pass scores the whole split, so a short run validates at most every other step (a
    9-step run: 5 passes, not 9), and its last step always, so the adapter kept at the end was measured."""
    from trainer.worker.train import train_adapter, validation_interval

    assert [validation_interval(n) for n in (1, 4, 5, 9, 20, 21, 100, 9000)] == [1, 1, 2, 2, 2, 3, 10, 200]
    _, _, (train, val) = full_run
    rec = Recorder()
    result = train_adapter(base, train, val, settings(steps=5, eval_every=None, save_every=None), tmp_path, emit=rec)
    result.peft_model.unload()
    assert [e["step"] for e in rec.of("eval")] == [0, 2, 4, 5]
    assert [s for s, _ in result.val_losses] == [2, 4, 5] and result.steps_done == 5


def test_stop_then_resume_finishes_with_the_same_losses(base, full_run, tmp_path):
    from trainer.worker.train import train_adapter

    reference, _, (train, val) = full_run

    def stop_after_step_2(event):
        if event["event"] == "step" and event["step"] == 2:
            os.kill(os.getpid(), signal.SIGINT)  # what Ctrl-C does: the handler asks for a stop

    rec = Recorder(stop_after_step_2)
    first = train_adapter(base, train, val, settings(), tmp_path, emit=rec)
    assert first.stopped and first.steps_done == 2 and first.adapter_dir is None
    assert rec.of("checkpoint")[-1]["reason"] == "stop"
    assert (Path(rec.of("checkpoint")[-1]["path"]) / "optimizer.pt").is_file()
    first.peft_model.unload()
    from trainer.worker.train import TrainError

    with pytest.raises(TrainError, match="different rank"):
        train_adapter(base, train, val, settings(rank=4), tmp_path, resume=True)

    # Rewriting settings.json on resume fails halfway (a full disk, as the writer sees it: the file-size
    # limit): the old file must stay whole, or the run could never be resumed again.
    ckpts = tmp_path / "checkpoints"
    before = (ckpts / "settings.json").read_bytes()
    child = subprocess.run([sys.executable, "-c", SETTINGS_WRITE_FAILS, str(tmp_path), str(len(before) - 1),
                            str(base.gguf_path)],
                           cwd=Path(__file__).resolve().parents[1], capture_output=True, text=True, timeout=300)
    assert child.returncode == 1 and "File too large" in child.stderr, child.stderr[-2000:]
    assert (ckpts / "settings.json").read_bytes() == before
    # A kill while transformers wrote checkpoint-3: its last file, trainer_state.json, never came.
    shutil.copytree(ckpts / "checkpoint-2", ckpts / "checkpoint-3")
    (ckpts / "checkpoint-3" / "trainer_state.json").unlink()

    second = train_adapter(base, train, val, settings(), tmp_path, emit=Recorder(), resume=True)
    second.peft_model.unload()
    assert not second.stopped and second.steps_done == second.total_steps == 8
    got, want = dict(second.train_losses), dict(reference.train_losses)
    assert sorted(got) == list(range(1, 9))
    for step in range(1, 9):
        assert got[step] == pytest.approx(want[step], rel=1e-4), step
    assert second.best_val_loss == pytest.approx(reference.best_val_loss, rel=1e-4)


SETTINGS_WRITE_FAILS = """
import resource, signal, sys
from pathlib import Path
from tests.test_trainer_train import make_examples, settings, split_examples
from trainer.worker.base import load_base, pick_device
from trainer.worker.train import train_adapter

base = load_base(Path(sys.argv[3]), pick_device("cpu"))
train, val = split_examples(make_examples(), 0.25, seed=0)
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails with EFBIG instead
resource.setrlimit(resource.RLIMIT_FSIZE, (int(sys.argv[2]), resource.RLIM_INFINITY))
try:
    train_adapter(base, train, val, settings(), sys.argv[1], resume=True)
except OSError as exc:
    print(exc, file=sys.stderr)
    sys.exit(1)
"""


def test_best_adapter_is_replaced_whole_or_not_at_all(base, tmp_path, monkeypatch):
    """A save of the best-so-far adapter that dies halfway leaves the previous best as it was (it is
    what a resumed run restores), and no temp folder behind."""
    from types import SimpleNamespace

    import peft.peft_model
    from peft import get_peft_model

    from trainer.worker.train import lora_config
    from trainer.worker.train_progress import Progress

    model = get_peft_model(base.model, lora_config(settings()))
    try:
        best = tmp_path / "best"
        progress = Progress(Recorder(), 8, 0, best, base_val=3.0)
        state, control = SimpleNamespace(global_step=4), SimpleNamespace(should_training_stop=False)
        progress.on_evaluate(None, state, control, metrics={"eval_loss": 2.0}, model=model)
        saved = {p.name: p.read_bytes() for p in best.iterdir()}
        assert "adapter_model.safetensors" in saved

        def torn(tensors, filename, metadata=None):  # the disk fills halfway through the weights
            with open(filename, "wb") as fh:
                fh.write(b"\0" * 64)
            raise OSError(28, "No space left on device")

        monkeypatch.setattr(peft.peft_model, "safe_save_file", torn)
        state.global_step = 8
        with pytest.raises(OSError, match="No space"):
            progress.on_evaluate(None, state, control, metrics={"eval_loss": 1.5}, model=model)
        assert {p.name: p.read_bytes() for p in best.iterdir()} == saved
        assert [p.name for p in tmp_path.iterdir()] == ["best"]
    finally:
        model.unload()


def test_refusals_before_training(base, full_run, tmp_path):
    from trainer.worker.train import TrainError, train_adapter

    _, _, (train, val) = full_run
    with pytest.raises(TrainError, match="no checkpoint to resume"):
        train_adapter(base, train, val, settings(), tmp_path, resume=True)
    from trainer.worker.convert import ConvertError

    with pytest.raises(ConvertError, match="embed"):
        train_adapter(base, train, val, settings(targets=("q_proj", "embed_tokens")), tmp_path)
