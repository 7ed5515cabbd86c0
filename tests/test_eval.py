"""`home eval` through the real CLI (real model, a random LoRA) and the text statistics on fixed strings."""

from __future__ import annotations

import json
import math
import subprocess
import sys

import pytest

from llm.models import default_model_path
from tests.cli_helpers import REPO, assert_private, one_error_line, run_home
from tests.loras import make_random_lora
from trainer.data import textstats
from trainer.evaluation.evaluate import (
    adapter_persona,
    heldout_status,
    pick_examples,
    plot_report,
    training_losses,
)
from vault.layout import Vault
from vault.manifest import AdapterEntry

GARDEN = [  # short on purpose: every target token is scored three times (base, adapter, base + persona)
    ("Water tomatoes how?", "Deep at the roots, rain or shine my friend."),
    ("Spring planting?", "Peas first. Patience pays in the garden."),
    ("Basil wilting?", "Shade at noon, rain or shine my friend."),
    ("Harvest garlic when?", "When leaves brown. Patience pays in the garden."),
]


@pytest.fixture(scope="module")
def evaluated(tmp_path_factory):
    """One vault with a registered random adapter, a small jsonl, and one `home eval --json` run."""
    tmp = tmp_path_factory.mktemp("eval")
    vault = tmp / "v"
    lora = make_random_lora(default_model_path(), tmp / "rnd.gguf", rank=4, seed=3, scale_std=0.05)
    added = run_home(vault, "adapters", "add", str(lora), "--name", "rnd")
    assert added.returncode == 0, added.stderr
    data = tmp / "garden.jsonl"
    data.write_text("".join(json.dumps({"instruction": q, "output": a}) + "\n" for q, a in GARDEN))
    proc = run_home(vault, "eval", "rnd", "--source", "jsonl", str(data), "--json", "--samples", "2",
                    "--max-examples", "8", "--max-tokens", "8", "--persona", "sage", timeout=300)
    assert proc.returncode == 0, proc.stderr
    return vault, data, json.loads(proc.stdout)


def test_eval_reports_perplexities_stats_and_samples(evaluated):
    _, _, report = evaluated
    ppl = report["perplexity"]
    for key in ("base", "adapter", "base_with_persona"):
        assert isinstance(ppl[key], float) and math.isfinite(ppl[key]) and ppl[key] > 1, ppl
    assert ppl["adapter"] != ppl["base"] and ppl["base_with_persona"] != ppl["base"]
    assert report["examples"] == len(GARDEN) and report["persona"] == "sage"
    assert report["heldout"] is False and "no training data" in report["heldout_note"]
    assert report["catchphrases"]["phrases"][:2] == ["rain or shine my", "patience pays in the"]
    assert report["catchphrases"]["targets"] == pytest.approx(1.0)
    for key in ("vocab_overlap", "distinct_2", "cliches"):
        assert all(0 <= report[key][who] for who in ("base", "adapter")), report[key]
    assert [s["prompt"] for s in report["samples"]] == [q for q, _ in GARDEN[:2]]
    assert all(s["base"] and s["adapter"] for s in report["samples"])
    assert report["generation"]["temperature"] == 0 and report["generation"]["max_tokens"] == 8


def test_eval_writes_private_report_and_png(evaluated):
    vault, _, report = evaluated
    [json_path] = (vault / "runs").glob("eval-rnd-*/report.json")
    png_path = json_path.with_name("report.png")
    assert str(json_path) == report["files"]["json"] and str(png_path) == report["files"]["png"]
    assert json.loads(json_path.read_text())["perplexity"] == report["perplexity"]
    assert png_path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert_private(vault)  # the report, the plot and whatever matplotlib and llama.cpp left in the vault


def test_unknown_adapter_and_missing_data_are_one_line(evaluated):
    vault, data, _ = evaluated
    ghost = run_home(vault, "eval", "ghost", "--source", "jsonl", str(data))
    assert ghost.returncode == 2 and "unknown adapter 'ghost'" in one_error_line(ghost)
    missing = run_home(vault, "eval", "rnd", "--source", "jsonl", str(data.with_name("nope.jsonl")))
    assert missing.returncode == 2 and "nope.jsonl" in one_error_line(missing)
    empty = data.with_name("empty.jsonl")
    empty.write_text('{"instruction": "hi"}\n')
    none = run_home(vault, "eval", "rnd", "--source", "jsonl", str(empty))
    assert none.returncode == 2 and "no examples" in one_error_line(none)


def test_a_voice_run_is_evaluated_on_its_time_split_by_default(evaluated):
    """What a voice run records (trainer/worker/stages.py) makes `home eval` on the same data score only
    the held-out latest examples (--all-data: everything, as before)."""
    from dataclasses import replace

    from trainer.data.sources import load_source
    from vault.manifest import ManifestStore

    vault, data, _ = evaluated
    report = load_source("jsonl", str(data))
    store = ManifestStore(Vault.open(vault))
    with store.update() as m:
        m.adapters["rnd"] = replace(m.adapters["rnd"], kind="voice", dataset={
            "hash": report.dataset_hash(), "source": "jsonl", "split": "time",
            "counts": {"examples": 4, "train": 3, "validation": 1}})
    try:
        held = run_home(vault, "eval", "rnd", "--source", "jsonl", str(data), "--samples", "0")
        assert held.returncode == 0, held.stderr
        assert "held-out: the adapter's time split" in held.stdout and "more like you than the base" in held.stdout
        assert "on 1 of 4 examples" in held.stdout and "eval [" in held.stderr  # progress on stderr
    finally:
        with store.update() as m:
            m.adapters["rnd"] = replace(m.adapters["rnd"], kind="other", dataset={})


def test_evaluate_module_is_torch_free():
    code = "import sys, trainer.evaluation.evaluate, home.commands.eval; assert 'torch' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], cwd=REPO, check=True)


# --- text statistics on fixed strings ---


def test_distinct_2():
    assert textstats.distinct_n(["a b a b a b"]) == pytest.approx(2 / 5)
    assert textstats.distinct_n(["one two", "one two"]) == pytest.approx(1 / 2)
    assert textstats.distinct_n(["x", ""]) == 0.0  # no bigrams at all
    assert textstats.distinct_n(["end start"]) == 1.0


def test_cliches():
    text = "Certainly! As an AI language model, I\u2019d be happy to help. Great question. I hope this helps"
    assert textstats.cliches(text) == ["certainly!", "as an ai language model", "i'd be happy to help",
                                       "great question", "i hope this helps"]
    assert textstats.cliches("Certainly not, said the gardener.") == []
    assert textstats.cliche_rate(["Great question!", "no", "As an AI, as an AI"]) == pytest.approx(1.0)


def test_catchphrases_recur_across_targets():
    targets = ["Well, rain or shine my friend, we go.", "I said rain or shine my friend and left",
               "Rain or shine, my friend! The garden waits.", "the garden waits for no one", "of the"]
    assert textstats.catchphrases(targets) == ["rain or shine my", "the garden waits"]
    assert textstats.catchphrases(["once upon a time", "no repeats here"]) == []
    assert textstats.count_phrase("Rain or shine my friend; RAIN OR SHINE MY dear", "rain or shine my") == 2
    assert textstats.catchphrase_rate(["rain or shine my", "x"], ["rain or shine my"]) == 0.5
    assert textstats.vocab_overlap(["the garden grows", "zebra"], targets) == pytest.approx(2 / 4)


def test_pick_heldout_and_losses(tmp_path):
    assert pick_examples(list(range(10)), 4) == [0, 2, 5, 7] == pick_examples(list(range(10)), 4)
    entry = AdapterEntry(id="a", name="a", file="adapters/a/adapter.gguf", dataset={"hash": "h1"},
                         training={"source": "logs", "run_dir": str(tmp_path), "base_val_loss": 2.5})
    assert heldout_status(entry, "h1", "jsonl")[0] is False
    assert heldout_status(entry, "h2", "logs")[0] is False  # the logs grew: still contain the old ones
    assert heldout_status(entry, "h2", "jsonl")[0] is True
    vault = Vault.open(tmp_path / "v")
    assert adapter_persona(vault, entry) is None  # not a persona adapter
    persona_entry = AdapterEntry(id="quill-persona-2", name="quill-persona", file="x.gguf", kind="persona")
    assert adapter_persona(vault, persona_entry).id == "quill"
    state = tmp_path / "checkpoints" / "checkpoint-20" / "trainer_state.json"
    state.parent.mkdir(parents=True)
    state.write_text(json.dumps({"log_history": [{"step": 10, "loss": 3.0}, {"step": 20, "loss": 2.0},
                                                 {"step": 20, "eval_loss": 2.2}]}))
    losses = training_losses(entry)
    assert losses == {"train": [[10, 3.0], [20, 2.0]], "val": [[20, 2.2]], "base_val": 2.5}
    stats = {"base": 0.5, "adapter": 0.6, "targets": 0.7}
    report = {"adapter": {"id": "a", "scale": 1.0}, "examples": 3, "heldout": False, "sample_count": 2,
              "perplexity": {"base": 9.0, "adapter": 7.0, "base_with_persona": None}, "training": losses,
              "vocab_overlap": stats, "distinct_2": stats, "catchphrases": stats, "cliches": stats}
    assert plot_report(report)[:8] == b"\x89PNG\r\n\x1a\n"


def test_a_recorded_time_split_is_evaluated_held_out():
    from trainer.data.examples import Example
    from trainer.evaluation.evaluate import likeness, validation_split

    exs = [Example(context=({"role": "user", "content": f"q{i}"},), target=f"a{i}", source="jsonl", origin=str(i))
           for i in range(10)]
    entry = AdapterEntry(id="me-voice-1", name="me-voice", file="x.gguf", kind="voice",
                         dataset={"hash": "h1", "split": "time", "counts": {"train": 7, "validation": 3}})
    assert validation_split(entry, exs, "h1") == exs[-3:]  # the run's latest examples
    assert validation_split(entry, exs, "h2") is None  # other data: judged by its hash as before
    grown = AdapterEntry(id="me-voice-2", name="me-voice", file="x.gguf", kind="voice",
                         dataset={**entry.dataset, "last_trained": exs[6].key()})
    assert validation_split(grown, exs, "h3") == exs[7:]  # logs that grew: everything after it
    assert validation_split(grown, exs[:7], "h4") is None  # nothing written since
    random_split = AdapterEntry(id="b", name="b", file="x.gguf", dataset={**entry.dataset, "split": "random"})
    assert validation_split(random_split, exs, "h1") is None  # a random split is not recorded by example
    assert heldout_status(entry, "h1", "jsonl", validation=True)[0] is True
    assert heldout_status(entry, "h1", "jsonl")[0] is False
    assert likeness(10.0, 6.0) == 40.0 and likeness(10.0, 12.5) == -25.0 and likeness(None, 6.0) is None
