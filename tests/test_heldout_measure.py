"""One held-out measure behind "sounds X% more like you" (the retrain panel shows the worker's number) and
`home eval`'s time-split perplexity (issue 16): a tiny voice run on a chat whose short windows chain,
finished by the worker's own stage (convert, verify, held-out perplexity), then scored as `home eval`
scores the run's validation split. Before, the worker read each reply in its own window and `home eval`
after the conversation before it: two numbers for one adapter (0.797 and 0.858 on the bench's hamlet).
On the tiny random-weight Llama GGUF (tests/families.py): the stage is the same for any model.
"""

from __future__ import annotations

import pytest

from trainer.data.sources import load_source

LINES = [("Wren", "Morning. The glass is falling again."), ("Maya", "Then the beans wait another day."),
         ("Wren", "Mind the tide if you walk the causeway."), ("Maya", "I never walk it after four."),
         ("Wren", "Bread again? You bake more than the harbour eats."), ("Maya", "Slow bread, three days of it."),
         ("Wren", "Bring a loaf on Sunday."), ("Maya", "Deal. The rye, the good one, with caraway."),
         ("Wren", "The storm log has a new page."), ("Maya", "Read it to me over the rye."),
         ("Wren", "The keeper wants the lamp cleaned."), ("Maya", "Then he can clean it himself."),
         ("Wren", "He says the same of your oven."), ("Maya", "My oven has never failed a ship."),
         ("Wren", "Fair. Sunday, then."), ("Maya", "Sunday. Bring the log and the good tea.")]


def test_the_workers_heldout_number_is_home_evals(tmp_path):
    from llm.engine import Engine
    from llm.gguf_meta import read_model_info
    from tests.families import tiny_gguf
    from tests.test_trainer_train import Recorder
    from trainer.data.examples import DatasetReport
    from trainer.evaluation.evaluate import evaluate_adapter, validation_split
    from trainer.evaluation.perplexity import compare, likeness
    from trainer.protocol.job import Job
    from trainer.protocol.register import register_adapter
    from trainer.worker.base import load_base, pick_device
    from trainer.worker.dataset import split_examples
    from trainer.worker.stages import finish_candidate
    from trainer.worker.train import TrainSettings, train_adapter
    from vault.layout import Vault
    from vault.manifest import ManifestStore

    model = tiny_gguf("llama")
    talk = tmp_path / "talk.txt"
    talk.write_text("".join(f"{who}: {text}\n" for who, text in LINES))
    examples = load_source("transcript", str(talk), speaker="Maya", window=2).examples
    train, val = split_examples(examples, 0.34, by_time=True)
    assert len(val) >= 2

    base = load_base(model, pick_device("cpu"))
    settings = TrainSettings(steps=2, rank=4, alpha=8.0, batch_size=4, lr=1e-3, max_length=128, patience=0,
                             cpu_threads=1)
    result = train_adapter(base, train, val, settings, tmp_path / "run")
    job = Job(vault=str(tmp_path / "v"), user="bo", kind="voice", max_length=128, device="cpu")
    cand = finish_candidate(job, base, model, result, train, val, tmp_path / "run", "bo-voice", "voice", Recorder())

    info = read_model_info(model)
    digest = DatasetReport(examples=list(examples)).dataset_hash()
    vault = Vault.open(tmp_path / "v")
    reg = register_adapter(vault, name="bo-voice", gguf=cand.gguf, peft_dir=None, extra_files=[],
                           base={"fingerprint": info.fingerprint, "name": info.name}, owner="bo", kind="voice",
                           tasks=[], tones=[], rank=cand.conv.rank, alpha=cand.conv.alpha,
                           dataset={"hash": digest, "split": "time", "counts": {"validation": len(val)}},
                           metrics={}, training={}, verification={})
    entry = ManifestStore(vault).read().adapter(reg.id)
    held = validation_split(entry, examples, digest)
    assert held == val
    with Engine(model, n_ctx=4096) as engine:  # `home eval`'s context (config.toml's [context] n_ctx default)
        report = evaluate_adapter(engine, vault, entry.id, 1.0, held, persona_system=None, samples=0,
                                  dataset_hash=digest, validation=True)
        window_alone = compare(engine, held, entry.id)
        exact = evaluate_adapter(engine, vault, entry.id, 1.0, held, persona_system=None, samples=0,
                                 dataset_hash=digest, validation=True, shared=False)

    ppl = report["perplexity"]
    assert (ppl["base"], ppl["adapter"]) == pytest.approx((cand.ppl["base"], cand.ppl["adapter"]), rel=1e-4)
    assert report["likeness"] == likeness(cand.ppl["base"], cand.ppl["adapter"])
    # the replies read after the conversation before them: not the number of each window alone
    assert window_alone["base"] != pytest.approx(cand.ppl["base"], rel=1e-3)
    assert exact["perplexity"]["base"] == pytest.approx(window_alone["base"]) and exact["likeness"] is None
