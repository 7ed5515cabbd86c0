"""bench/voice_fidelity.py's pieces on tiny public-domain excerpts, in seconds and without a training:
the texts become Home's examples in the order they were spoken or written, the held-out split is the
latest of them, attribution picks the lowest-loss adapter, and the report is one JSON line and a PNG.
(The whole bench trains one adapter per voice: minutes each, so it is a bench, not a test.)"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from trainer.data.examples import DatasetReport
from trainer.data.sources import load_source
from trainer.evaluation.evaluate import validation_split
from vault.manifest import AdapterEntry

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = ROOT / "tests/fixtures/voice"


@pytest.fixture(scope="module")
def bench():
    import sys

    sys.path.insert(0, str(ROOT / "bench"))
    try:
        import voice_fidelity
        import voice_texts
    finally:
        sys.path.remove(str(ROOT / "bench"))
    return voice_fidelity, voice_texts


def test_a_play_becomes_the_speakers_examples_in_the_order_spoken(bench, tmp_path):
    _, texts = bench
    transcript = texts.play_transcript((FIXTURES / "hamlet_excerpt.md").read_text())
    assert "Enter" not in transcript and "Aside" not in transcript and "_" not in transcript
    path = tmp_path / "hamlet.txt"
    path.write_text(transcript)
    examples = load_source("transcript", path, speaker="HAMLET").examples
    assert [ex.target.split("\n")[0] for ex in examples] == [
        "A little more than kin, and less than kind.", "Not so, my lord; I am too much i' the sun.",
        "Ay, madam, it is common.", "Seems, madam! nay it is; I know not 'seems.'"]
    assert "KING CLAUDIUS: Take thy fair hour" in examples[0].context[0]["content"]
    assert examples[-1].context[-1]["content"].startswith("QUEEN GERTRUDE: If it be,")


def test_a_letter_becomes_an_essay_one_chapter_a_paragraph(bench):
    _, texts = bench
    essay = texts.letter_essay("2Thessalonians", (FIXTURES / "kjv_excerpt.txt").read_text())
    title, first, second = essay.strip().split("\n\n")
    assert title == "# 2 Thessalonians"
    assert first.startswith("Paul, a prisoner of Jesus Christ") and "Philemon 1" not in first
    assert second.startswith("Now the Lord of peace himself give you peace")
    assert not any(word.isdigit() for word in essay.split()[3:])  # verse numbers gone


def test_the_held_out_split_is_the_latest_examples(bench, tmp_path):
    """The bench trains on a voice's earliest examples written as jsonl; the run's recorded time split
    (what `home eval` reads) is then exactly the latest of them, in order."""
    fidelity, texts = bench
    spoken = texts.voice_examples(texts.VOICES["maya"], tmp_path)
    assert len(spoken) > 40
    data = fidelity.write_dataset(fidelity.earliest(spoken, 40), tmp_path / "maya.jsonl")
    assert [ex.target for ex in data] == [ex.target for ex in spoken[:40]]
    digest = DatasetReport(examples=data).dataset_hash()
    entry = AdapterEntry(id="maya-voice-1", name="maya-voice", file="adapters/x.gguf",
                         dataset={"split": "time", "hash": digest, "counts": {"train": 30, "validation": 10}})
    held = validation_split(entry, data, digest)
    assert [ex.target for ex in held] == [ex.target for ex in spoken[30:40]]
    job = fidelity.job_for(tmp_path / "vault", "maya", tmp_path / "maya.jsonl", _args(val_fraction=0.25))
    assert (job.adapter_kind, job.split, job.val_fraction) == ("voice", None, 0.25)  # None: time for a voice


def test_attribution_goes_to_the_adapter_with_the_lowest_loss(bench):
    fidelity, _ = bench
    nll = {"ann": {"ann": [1.0, 1.0, 5.0], "bo": [2.0, 2.0, 1.0], "base": [0.5, 0.5, 0.5]},
           "bo": {"ann": [3.0, 3.0], "bo": [1.0, 1.0], "base": [0.1, 0.1]}}
    att = fidelity.attribution_matrix(nll, ["ann", "bo"])
    assert att["matrix"] == [[2, 1], [0, 2]]  # the base never "wrote" anything, however low its loss
    assert att["accuracy"] == pytest.approx(0.8) and att["recall"] == {"ann": pytest.approx(2 / 3), "bo": 1.0}


def test_the_report_is_one_json_line_and_a_png(bench):
    fidelity, _ = bench
    att = fidelity.attribution_matrix({"hamlet": {"hamlet": [1.0], "paul": [2.0]},
                                       "paul": {"hamlet": [1.0], "paul": [2.0]}}, ["hamlet", "paul"])
    rows = [fidelity.voice_row(v, _report(ratio), _entry(v), {"target_tokens_trained": 900}, 12.5, att)
            for v, ratio in (("hamlet", 0.4), ("paul", 0.7))]
    summary = fidelity.summarize(rows, att, {"examples": 96})
    line = json.dumps(summary, allow_nan=False)
    assert "\n" not in line and json.loads(line)["median_ppl_ratio"] == pytest.approx(0.55)
    hamlet = summary["voices"][0]
    assert hamlet["ppl_ratio"] == pytest.approx(0.4) and hamlet["attribution"] == 1.0
    assert hamlet["as_an_ai"] == {"base": 1, "adapter": 0}
    assert hamlet["replies_with_cliches"] == {"base": 2, "adapter": 0}
    assert summary["voices"][1]["attribution"] == 0.0
    assert summary["goal"] == {"median_ppl_ratio<=0.50": False, "attribution>=0.90": False}
    assert fidelity.plot(summary)[:8] == b"\x89PNG\r\n\x1a\n"


def test_unknown_voices_are_one_usage_line(bench, capsys, tmp_path):
    fidelity, _ = bench
    with pytest.raises(SystemExit) as stop:
        fidelity.main(["--voices", "hamlet,nobody", "--out", str(tmp_path)])
    assert stop.value.code == 2
    assert "--voices: need two or more of hamlet" in capsys.readouterr().err and not (tmp_path / "vault").exists()


def _args(**kw):
    from argparse import Namespace

    return Namespace(steps=None, **kw)


def _entry(voice: str) -> AdapterEntry:
    return AdapterEntry(id=f"{voice}-voice-1", name=f"{voice}-voice", file="x.gguf", rank=16,
                        training={"duration_s": 300.0, "peak_memory_bytes": 2**31, "steps": 27, "lr": 2e-4,
                                  "batch_size": 8, "base_val_loss": 3.0, "val_loss": 2.5})


def _report(ratio: float) -> dict:
    """The parts of `evaluate_adapter`'s report the bench reads."""
    samples = [{"base": "As an AI, I cannot feel grief.", "adapter": "Seems, madam!"},
               {"base": "I hope this helps!", "adapter": "Not so, my lord."}]
    return {"perplexity": {"base": 20.0, "adapter": 20.0 * ratio}, "examples": 24, "scored_tokens": 700,
            "vocab_overlap": {"base": 0.2, "adapter": 0.4}, "distinct_2": {"base": 0.9, "adapter": 0.8,
                                                                           "targets": 0.95},
            "catchphrases": {"phrases": ["my lord"], "base": 0.0, "adapter": 0.5, "targets": 0.6},
            "cliches": {"base": 1.0, "adapter": 0.0, "targets": 0.0, "found": {}},
            "samples": samples, "sample_count": len(samples)}


def test_the_sweeps_system_line_names_the_speaker_and_reaches_the_trainer(bench, tmp_path):
    import sys

    sys.path.insert(0, str(ROOT / "bench"))
    try:
        import voice_sweep
    finally:
        sys.path.remove(str(ROOT / "bench"))
    _, texts = bench
    spoken = texts.voice_examples(texts.VOICES["maya"], tmp_path)[:5]
    data = bench[0].write_dataset(voice_sweep.with_system(spoken, "maya"), tmp_path / "maya.jsonl")
    assert [ex.prompt_messages()[0] for ex in data] == [{"role": "system", "content": "You are Maya."}] * 5
    assert [ex.target for ex in data] == [ex.target for ex in spoken]
    assert set(voice_sweep.SETTINGS) >= {"default", "lr 1e-3", "rank 64", "window 4", "system line", "constant",
                                         "neftune 5"}
    from trainer.protocol.job import Job

    for recipe, _ in voice_sweep.SETTINGS.values():  # every setting is a job `home train` accepts
        Job(vault=str(tmp_path), **recipe).validate()
    assert Job(vault="v", **voice_sweep.SETTINGS["lr 2e-4"][0]).learning_rate == 2e-4  # the default before
    assert voice_sweep.best_step([[2, 4.05], [4, 3.88], [6, 3.91]]) == 4 and voice_sweep.best_step([]) is None


def test_a_run_that_stopped_early_is_reused_for_the_steps_it_was_asked(bench, tmp_path):
    """Re-running the bench reuses an adapter trained on the same data and recipe, also when its run
    stopped early (it records the steps it took; its job.json, the steps asked)."""
    from vault.layout import Vault
    from vault.manifest import ManifestStore

    fidelity, _ = bench
    job = fidelity.job_for(tmp_path / "vault", "maya", tmp_path / "maya.jsonl", _args(val_fraction=0.25))
    job.steps = 18
    run = tmp_path / "vault" / "runs" / "maya-1"
    run.mkdir(parents=True)
    (run / "job.json").write_text(json.dumps({"steps": 18}))
    with ManifestStore(Vault.open(tmp_path / "vault")).update() as m:
        m.add_adapter(AdapterEntry(id="maya-voice-1", name="maya-voice", file="adapters/x.gguf", rank=16, alpha=32.0,
                                   dataset={"hash": "h"}, training={"steps": 14, "lr": 1e-3, "run_dir": str(run)}))
    assert fidelity.trained(tmp_path / "vault", "maya-voice", "h", job).id == "maya-voice-1"
    job.steps = 14
    assert fidelity.trained(tmp_path / "vault", "maya-voice", "h", job) is None
    job.steps, job.lr = 18, 2e-4
    assert fidelity.trained(tmp_path / "vault", "maya-voice", "h", job) is None


def test_a_run_on_the_default_length_is_reused_only_for_its_tiers_epochs(bench, tmp_path):
    """With no --steps the bench's job trains for its size tier's epochs (trainer/protocol/tiers.py): an
    adapter is reused when it trained that many (recorded since the tiers; before them, its job.json's or
    3), not when it trained the 3 epochs every size got before."""
    from trainer.protocol.tiers import voice_tier
    from vault.layout import Vault
    from vault.manifest import ManifestStore

    fidelity, _ = bench
    job = fidelity.job_for(tmp_path / "vault", "maya", tmp_path / "maya.jsonl", _args(val_fraction=0.25))
    old_run = tmp_path / "vault" / "runs" / "maya-1"
    old_run.mkdir(parents=True)
    (old_run / "job.json").write_text(json.dumps({"steps": None, "epochs": None}))
    counts, rank = {"hash": "h", "counts": {"train": 269}}, voice_tier(269).rank  # the medium tier's
    with ManifestStore(Vault.open(tmp_path / "vault")).update() as m:
        m.add_adapter(AdapterEntry(id="maya-voice-1", name="maya-voice", file="adapters/x.gguf", rank=rank, alpha=2.0 * rank,
                                   dataset=counts, training={"steps": 102, "lr": 1e-3, "run_dir": str(old_run)}))
    assert fidelity.trained(tmp_path / "vault", "maya-voice", "h", job) is None  # 3 epochs, before the tiers
    job.epochs = 3.0
    assert fidelity.trained(tmp_path / "vault", "maya-voice", "h", job).id == "maya-voice-1"
    job.epochs = None
    with ManifestStore(Vault.open(tmp_path / "vault")).update() as m:
        m.add_adapter(AdapterEntry(id="maya-voice-2", name="maya-voice", file="adapters/y.gguf", rank=rank, alpha=2.0 * rank,
                                   dataset=counts, training={"steps": 43, "epochs": voice_tier(269).epochs, "tier": "medium",
                                                             "lr": 1e-3, "run_dir": str(old_run)}))
    assert fidelity.trained(tmp_path / "vault", "maya-voice", "h", job).id == "maya-voice-2"
    job.rank = rank + 1
    assert fidelity.trained(tmp_path / "vault", "maya-voice", "h", job) is None


def test_the_learning_curve_fit_says_where_it_meets_the_goal(bench, capsys, tmp_path):
    """bench/voice_curve.py: ln(ratio) on ln(N); a ratio that halves per 10x data meets 0.50 where it
    should, a flat or rising one never; sizes too small to hold out the same latest examples are refused."""
    import math
    import sys

    sys.path.insert(0, str(ROOT / "bench"))
    try:
        import voice_curve
    finally:
        sys.path.remove(str(ROOT / "bench"))
    f = voice_curve.fit([(10, 1.0), (100, 0.8), (1000, 0.64)])
    assert f["slope_per_efold"] == pytest.approx(math.log(0.8) / math.log(10))
    assert f["examples_for_goal"] == pytest.approx(10 * 10 ** (math.log(0.5) / math.log(0.8)))
    assert voice_curve.fit([(10, 0.8), (100, 0.8)])["examples_for_goal"] is None
    assert voice_curve.fit([(10, 0.7), (100, 0.9)])["examples_for_goal"] is None
    curves = {"v": {"points": [{"trained": 10, "ratio": 1.0}, {"trained": 100, "ratio": 0.8}], "fit": f}}
    assert voice_curve.plot(curves)[:8] == b"\x89PNG\r\n\x1a\n"
    with pytest.raises(SystemExit) as stop:
        voice_curve.main(["--voices", "maya", "--sizes", "8", "--out", str(tmp_path)])
    assert stop.value.code == 2 and "--sizes: 8 examples for maya is too few" in capsys.readouterr().err
    assert not (tmp_path / "vault").exists()
