"""`home train --gpus N --4bit` (QLoRA on several processes), run for real on the CPU: two processes over gloo
(`--processes 2 --device cpu --4bit`, bitsandbytes' CPU backend) train the tiny Llama GGUF
(tests/families.py), each rank holding the whole nf4 base (DDP); the adapter converts, verifies against the
full-precision reference and registers once, and each step's loss matches one 4-bit process on the same
global batch, within the tolerances of the plain DDP test (tests/test_trainer_ranks.py says why those).
"""

from __future__ import annotations

import pytest

from tests.cli_helpers import assert_private, run_home
from tests.families import tiny_gguf
from tests.test_trainer_e2e import events, manifest, write_logs
from tests.test_trainer_ranks import FIRST_STEP_TOL, STEP_TOL, STEPS, TRAIN, reference_losses

bnb = pytest.importorskip("bitsandbytes", reason="--4bit needs bitsandbytes (the test extra installs it)")


@pytest.mark.slow
def test_two_gloo_processes_train_qlora_verify_register_and_match_one_4bit_process(tmp_path):
    model = tiny_gguf("llama")
    vault = tmp_path / "v"
    write_logs(vault)
    proc = run_home(vault, "--model", str(model), *TRAIN, "--processes", "2", "--4bit", timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    evs = events(proc.stdout)
    started = next(e for e in evs if e["event"] == "phase" and e["name"] == "ranks")
    assert "each with the whole base (DDP)" in started["detail"], started
    train = next(e for e in evs if e["event"] == "phase" and e["name"] == "train")
    assert "x 2 processes" in train["detail"] and "micro-batch 2 x 1" in train["detail"], train
    assert next(e for e in evs if e["event"] == "verified")["passed"]
    assert [e["event"] for e in evs].count("registered") == 1
    entry = next(iter(manifest(vault)["adapters"].values()))
    assert entry["verification"]["passed"] and entry["training"]["steps"] == STEPS
    assert "nf4" in entry["training"]["device"], entry["training"]  # the ranks trained on the nf4 base
    assert_private(vault)

    two = {e["step"]: e["loss"] for e in evs if e["event"] == "step"}
    one = dict(reference_losses(vault, model, four_bit=True))
    assert sorted(two) == sorted(one) == list(range(1, STEPS + 1))
    diffs = {s: abs(two[s] - one[s]) for s in one}
    ranks_done = next(e for e in evs if e["event"] == "phase" and e["name"] == "ranks-done")
    print(f"\n{ranks_done['detail']}; step losses, one 4-bit process vs two:",
          {s: (round(one[s], 5), two[s]) for s in one}, "max diff", f"{max(diffs.values()):.1e}")
    assert diffs[1] < FIRST_STEP_TOL, diffs
    assert max(diffs.values()) < STEP_TOL, diffs
