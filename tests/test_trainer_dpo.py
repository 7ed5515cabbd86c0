"""`home train --method dpo --source preferences` end to end through the real worker, on the default model
at tiny settings: synthetic pick-best pairs whose chosen replies share an obvious trait → DPO → GGUF →
verification → preference accuracy on the held-out pairs rises → the gate promotes it (no voice before)
→ registered as the user's voice; pairs from another model or a removed adapter are counted and skipped.
Then `home eval --source preferences` shows the same held-out numbers. And on a tiny Llama: DPO from the
user's current voice (its reference), stopped by SIGINT and finished by `--resume`, registers the next version."""

from __future__ import annotations

import json

import pytest

from llm.gguf_meta import read_model_info
from tests.cli_helpers import run_home
from vault.layout import Vault
from vault.preferences import append_preference

QUESTIONS = [
    "How was your day?", "What should I cook tonight?", "Any plans for the weekend?", "How is the garden?",
    "Did you sleep well?", "What's the weather like?", "Seen any good films lately?", "How is work going?",
    "Where should we travel next?", "What are you reading?", "Coffee or tea?", "How was the gym?",
    "Should I call my sister?", "What time is lunch?", "Is the shop open?", "Can you help me move?",
    "How was the concert?", "What did the doctor say?", "Is it going to rain?", "Any news from home?",
]
PLAIN = "It was fine, thank you for asking."
TRAIT = "Ahoy matey! Arr, splendid, says the old pirate."  # the chosen replies' shared trait


def write_pairs(vault_root, fingerprint: str) -> None:
    vault = Vault.open(vault_root)
    side = {"candidate": 1, "label": "a", "adapters": [], "params": {}, "finish_reason": "stop"}
    for i, q in enumerate(QUESTIONS):
        append_preference(vault, {
            "user": "bo", "persona": None, "session": "s", "prompt": [{"role": "user", "content": q}],
            "chosen": {**side, "text": TRAIT}, "rejected": {**side, "candidate": 2, "text": PLAIN},
            "turn_ids": {"user": f"s:{2 * i}", "chosen": f"s:{2 * i + 1}", "replaced": None},
            "model": {"name": "SmolLM2", "fingerprint": fingerprint}})
    other = {"user": "bo", "prompt": [{"role": "user", "content": "Hi?"}], "chosen": {**side, "text": "Yo."},
             "rejected": {**side, "text": "Hello."}}
    append_preference(vault, {**other, "model": {"name": "other", "fingerprint": "0" * 64}})
    append_preference(vault, {**other, "chosen": {**side, "text": "Hey.", "adapters": [{"id": "gone-2", "scale": 1}]},
                              "model": {"name": "SmolLM2", "fingerprint": fingerprint}})


@pytest.mark.slow
def test_dpo_from_picks_raises_preference_accuracy_and_becomes_the_voice(tmp_path, model_path):
    vault = tmp_path / "vault"
    write_pairs(vault, read_model_info(model_path).fingerprint)
    proc = run_home(vault, "--user", "bo", "train", "--method", "dpo", "--source", "preferences", "--steps", "4",
                    "--rank", "8", "--batch-size", "4", "--lr", "5e-3", "--max-length", "96", "--device", "cpu",
                    "--json", timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:] + proc.stdout[-3000:]
    ev = [json.loads(line) for line in proc.stdout.splitlines() if line.strip()]
    kinds = [e["event"] for e in ev]
    assert kinds[0] == "started" and {"verified", "checkpoint", "registered", "done"} <= set(kinds), kinds
    dataset = next(e for e in ev if e["event"] == "dataset")
    assert dataset["pairs"] == 20 and dataset["skipped_by_reason"] == {"other-model": 1, "missing-adapter": 1}
    assert [e["step"] for e in ev if e["event"] == "step"] == list(range(1, 5))
    pref = next(e for e in ev if e.get("stage") == "preference")
    assert pref["pairs"] == 4
    assert pref["accuracy_before"] < 0.5 and pref["accuracy_after"] == 1.0, pref  # the trait was learnt
    assert pref["reward_margin_after"] > 0
    peaks = [e["peak_host_bytes"] for e in ev if e.get("peak_host_bytes")]
    assert peaks and max(peaks) < 3 * 2**30, max(peaks)  # the default model on the CPU stays within 3 GB

    m = json.loads((vault / "manifest.json").read_text())
    [entry] = m["adapters"].values()
    assert entry["id"] == "bo-voice-1" and entry["kind"] == "voice" and entry["training"]["method"] == "dpo"
    assert entry["training"]["start"] is None  # no voice yet: DPO started from the base, its reference
    assert entry["dataset"]["counts"]["skipped_by_reason"] == {"other-model": 1, "missing-adapter": 1}
    assert len(entry["dataset"]["heldout_ids"]) == 4
    assert entry["metrics"]["preference"]["after"]["accuracy"] == 1.0
    assert entry["promotion"]["decision"] == "promoted" and entry["promotion"]["why"] == "no voice adapter to replace"
    assert m["users"]["bo"]["voice_adapter"] == "bo-voice-1"

    shown = run_home(vault, "--user", "bo", "eval", "bo-voice-1", "--source", "preferences", "--json", timeout=300)
    assert shown.returncode == 0, shown.stderr
    report = json.loads(shown.stdout)
    assert report["heldout"] and report["pairs"] == 4 and report["reference"] == "(base)"
    assert report["after"]["accuracy"] == 1.0 and report["before"]["accuracy"] == pref["accuracy_before"]


@pytest.mark.slow
def test_dpo_from_the_current_voice_stops_resumes_and_registers_its_next_version(tmp_path):
    """On a tiny Llama (tests/families.py): SFT on logs makes bo's voice; DPO then starts from that voice (the
    reference), is stopped by SIGINT after step 2 (nothing registered), and `--resume` continues from its
    checkpoint to a verified bo-voice-2 whose training names bo-voice-1 as its start."""
    import os
    import signal
    import subprocess
    import sys

    from tests.cli_helpers import REPO, home_env
    from tests.families import tiny_gguf
    from tests.test_families import TRAIN
    from tests.test_trainer_e2e import events, manifest, write_logs

    model = tiny_gguf("llama")
    vault = tmp_path / "vault"
    write_logs(vault)
    sft = run_home(vault, "--model", str(model), *TRAIN, timeout=600)
    assert sft.returncode == 0, sft.stderr[-3000:]
    assert manifest(vault)["users"]["bo"]["voice_adapter"] == "bo-voice-1"
    write_pairs(vault, read_model_info(model).fingerprint)
    dpo = ["--model", str(model), "--user", "bo", "train", "--method", "dpo", "--source", "preferences",
           "--steps", "8", "--rank", "4", "--batch-size", "4", "--lr", "5e-3", "--max-length", "64",
           "--device", "cpu", "--json"]
    worker = subprocess.Popen([sys.executable, "-m", "home.cli", *dpo], cwd=REPO, env=home_env(vault),
                              stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, start_new_session=True)
    seen = []
    for line in worker.stdout:
        seen.append(json.loads(line))
        if seen[-1]["event"] == "step" and seen[-1]["step"] >= 2:
            os.killpg(worker.pid, signal.SIGINT)  # as Ctrl-C in a terminal
            break
    seen += events(worker.stdout.read())
    assert worker.wait(300) == 130, [e["event"] for e in seen]
    assert "stopped" in [e["event"] for e in seen]
    assert "starting from your voice bo-voice-1" in next(e["detail"] for e in seen if e.get("name") == "start")
    assert set(manifest(vault)["adapters"]) == {"bo-voice-1"}  # a stopped run registers nothing

    resumed = run_home(vault, *dpo, "--resume", timeout=600)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    evs = events(resumed.stdout)
    assert next(e for e in evs if e["event"] == "started")["resume"] is True
    assert next(e for e in evs if e["event"] == "step")["step"] > 2  # continued from its checkpoint
    assert next(e for e in evs if e["event"] == "verified")["passed"]
    assert next(e for e in evs if e["event"] == "registered")["id"] == "bo-voice-2"
    entry = manifest(vault)["adapters"]["bo-voice-2"]
    assert entry["kind"] == "voice" and entry["training"]["method"] == "dpo"
    assert entry["training"]["start"] == "bo-voice-1" and entry["training"]["steps"] == 8
    assert entry["verification"]["passed"] and "preference" in entry["metrics"]
    assert entry["promotion"]["decision"] in ("promoted", "candidate")  # the gate decides; either is registered
