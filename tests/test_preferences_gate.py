"""Pick-best pairs for preference training (kept / skipped and why), preference accuracy and reward margin
in llama.cpp, and the promotion gate's decision, on the real default model with random-weight adapters."""

from __future__ import annotations

import json

import pytest

from tests.loras import make_random_lora
from trainer.data.examples import Example
from trainer.data.preferences import Pair, load_pairs, split_pairs
from trainer.evaluation.gate import judge, recent
from trainer.evaluation.preference import pair_logps, summarize
from vault.layout import Vault
from vault.preferences import append_preference, preferences_path

FP = "f" * 64


def pair_record(i: int, chosen: str = "Sure, here it is.", rejected: str = "No.", fp: str = FP,
                adapters: list | None = None, turns: dict | None = None) -> dict:
    side = {"candidate": 1, "label": "a", "adapters": adapters or [], "params": {}, "finish_reason": "stop"}
    return {"user": "bo", "persona": None, "session": "s", "prompt": [{"role": "user", "content": f"question {i}?"}],
            "chosen": {**side, "text": chosen}, "rejected": {**side, "candidate": 2, "text": rejected},
            "turn_ids": turns or {"user": f"s:{2 * i}", "chosen": f"s:{2 * i + 1}", "replaced": None},
            "model": {"name": "SmolLM2", "fingerprint": fp}}


def test_pairs_kept_and_skipped_with_reasons(tmp_path):
    vault = Vault.open(tmp_path / "v")
    for i in range(6):
        append_preference(vault, pair_record(i))
    append_preference(vault, pair_record(10, fp="0" * 64))  # another model
    append_preference(vault, pair_record(11, adapters=[{"id": "gone-1", "scale": 1.0}]))
    append_preference(vault, pair_record(12, adapters=[{"id": "bo-voice-1", "scale": 1.0}]))  # exists: kept
    append_preference(vault, pair_record(13, chosen="Same.", rejected="Same. "))
    append_preference(vault, pair_record(0))  # the same pair again
    append_preference(vault, pair_record(14, turns={"user": "s:99", "chosen": "s:100"}))
    with open(preferences_path(vault, "bo"), "a") as fh:
        fh.write(json.dumps({**pair_record(15), "prompt": "not a list"}) + "\n")
        fh.write('{"torn": ')
    report = load_pairs(vault, "bo", FP, adapter_ids={"bo-voice-1"}, forgotten={"s:100"})
    assert len(report.pairs) == 7
    assert report.counts() == {"other-model": 1, "missing-adapter": 1, "identical": 1, "duplicate": 1,
                               "forgotten": 1, "malformed": 2}
    text = report.render()
    assert "7 pairs kept, 7 skipped" in text and "gone-1" in text and "prompt: expected a list" in text
    train, held = split_pairs(report.pairs, 0.2, seed=0)
    assert len(held) == 2 and len(train) == 5 and not {p.id for p in held} & {p.id for p in train}
    assert split_pairs(report.pairs, 0.2, seed=0) == (train, held)  # seeded
    with pytest.raises(ValueError, match="at least 6"):
        split_pairs(report.pairs[:5])


PROMPT = ({"role": "user", "content": "What is the capital of France?"},)
PAIRS = [Pair(f"p{i}", PROMPT, chosen, "Banana stapler orbit fjord quietly seven.") for i, chosen in enumerate(
    ["The capital of France is Paris.", "Paris is the capital of France.", "It is Paris."])]


def clean(engine):
    engine.set_adapters([])


def test_preference_accuracy_and_reward_margin_in_llama_cpp(engine):
    logps = pair_logps(engine, PAIRS, [])
    assert all(c > r for c, r in logps)  # a fluent answer beats word salad under the base
    got = summarize(logps, logps)
    assert got["accuracy"] == 1.0 and got["margin"] > 5 and got["reward_margin"] == 0.0
    assert summarize([(r, c) for c, r in logps])["accuracy"] == 0.0
    assert engine.adapters == []


@pytest.fixture(scope="module")
def loras(model_path, tmp_path_factory):
    d = tmp_path_factory.mktemp("loras")
    return {"mild": make_random_lora(model_path, d / "mild.gguf", seed=1, scale_std=0.001),
            # 0.3, not 0.08: at 0.08 this draw was 1 % better than the mild one on a Zen 4 (AVX-512) build of
            # llama.cpp (27.9 vs 28.1), worse on the AVX2 box the test was written on; at 0.3 it is 10x worse (281)
            "noisy": make_random_lora(model_path, d / "noisy.gguf", seed=2, scale_std=0.3)}


def test_gate_keeps_a_worse_voice_as_a_candidate(engine, loras):
    for ident, path in loras.items():
        engine.load_adapter(ident, path)
    turns = [Example(context=({"role": "user", "content": "How are you?"},), target=t, source="logs", origin=o)
             for t, o in (("I'm fine, thanks. Busy day at work.", "20261124-100000:3"),
                          ("Pretty good, off to the gym later.", "20261124-100000:1"))]
    assert [t.origin for t in recent(turns)] == ["20261124-100000:1", "20261124-100000:3"]
    try:
        worse = judge(engine, [("noisy", 1.0)], [("mild", 1.0)], "bo-voice-1", turns, PAIRS[:1])
        assert worse["decision"] == "candidate" and worse["replaces"] == "bo-voice-1"
        assert worse["perplexity"]["new"] > worse["perplexity"]["old"]
        assert "kept as a candidate" in worse["why"] and "perplexity" in worse["why"]
        assert set(worse["preference_accuracy"]) == {"new", "old"}
        better = judge(engine, [("mild", 1.0)], [("noisy", 1.0)], "bo-voice-1", turns)
        assert better["decision"] == "promoted" and "at least as good" in better["why"]
        first = judge(engine, [("mild", 1.0)], None, None, turns, why_none="no voice adapter to replace")
        assert first["decision"] == "promoted" and first["why"] == "no voice adapter to replace"
    finally:
        for ident in loras:
            engine.unload_adapter(ident)
        clean(engine)


def test_adapters_voice_switches_to_a_candidate_by_hand(tmp_path, model_path):
    from tests.cli_helpers import one_error_line, run_home
    from tests.loras import register_voice
    from vault.manifest import ManifestStore

    vault = Vault.open(tmp_path / "v")
    register_voice(vault, model_path, user="bo", ident="bo-voice-1")
    register_voice(vault, model_path, user="bo", ident="bo-voice-2")
    with ManifestStore(vault).update() as m:  # as the gate leaves a candidate: registered, not the voice
        m.users["bo"]["voice_adapter"] = "bo-voice-1"
    switched = run_home(vault.root, "--user", "bo", "adapters", "voice", "bo-voice-2")
    assert switched.returncode == 0, switched.stderr
    assert "bo's voice is now bo-voice-2 (was bo-voice-1)" in switched.stdout
    assert ManifestStore(vault).read().users["bo"]["voice_adapter"] == "bo-voice-2"
    unknown = run_home(vault.root, "--user", "bo", "adapters", "voice", "nope")
    assert unknown.returncode != 0 and "unknown adapter 'nope'" in one_error_line(unknown)
    assert ManifestStore(vault).read().users["bo"]["voice_adapter"] == "bo-voice-2"  # nothing changed


def test_a_dpo_job_is_the_users_voice_from_preferences():
    from trainer.protocol.job import Job, JobError

    Job(vault="v", method="dpo", source="preferences").validate()
    for bad, why in ((dict(method="dpo"), "preference training is --method dpo --source preferences"),
                     (dict(source="preferences"), "both, or neither"),
                     (dict(method="dpo", source="preferences", two_phase=True), "no --two-phase"),
                     (dict(method="dpo", source="preferences", kind="persona"), "trains a voice adapter"),
                     (dict(method="dpo", source="preferences", beta=0.0), "beta"),
                     (dict(method="ppo"), "expected one of sft, dpo")):
        with pytest.raises(JobError, match=why):
            Job(vault="v", **bad).validate()


def test_train_check_reports_the_pairs_without_training(tmp_path, model_path):
    from llm.gguf_meta import read_model_info
    from tests.cli_helpers import one_error_line, run_home

    vault = Vault.open(tmp_path / "v")
    fp = read_model_info(model_path).fingerprint
    for i in range(3):
        append_preference(vault, pair_record(i, fp=fp))
    append_preference(vault, pair_record(9))  # made on another model
    proc = run_home(vault.root, "--user", "bo", "train", "--method", "dpo", "--check")
    assert proc.returncode == 2
    assert "3 pairs kept, 1 skipped" in proc.stdout and "made on another model" in proc.stdout
    assert "bo.jsonl: only 3 usable preference pairs: at least 6 are needed" in one_error_line(proc)
    assert not list(vault.runs_dir.iterdir())  # nothing started
