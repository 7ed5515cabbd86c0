"""`home train --gpus N --4bit` (QLoRA on several processes), run for real on the CPU: two processes over gloo
(`--processes 2 --device cpu --4bit`, bitsandbytes' CPU backend) train the tiny Llama GGUF
(tests/families.py), each rank holding the whole nf4 base (DDP), or half of it (`--fsdp`: FSDP-QLoRA, the
base and its LoRA sharded, trainer/worker/sharding.py). Either way the adapter, whole, converts, verifies
against the full-precision reference and registers once, and each step's loss matches one 4-bit process on
the same global batch, within the tolerances of the plain DDP test (tests/test_trainer_ranks.py says why).
"""

from __future__ import annotations

import shutil

import pytest

from tests.cli_helpers import assert_private, run_home
from tests.families import tiny_gguf
from tests.test_trainer_e2e import events, manifest, write_logs
from tests.test_trainer_ranks import FIRST_STEP_TOL, STEP_TOL, STEPS, TRAIN, reference_losses

bnb = pytest.importorskip("bitsandbytes", reason="--4bit needs bitsandbytes (the test extra installs it)")


@pytest.fixture(scope="module")
def logs_and_one_process(tmp_path_factory):
    """A vault with the logs, and the step losses of one 4-bit process on them (computed once: ~15 s)."""
    root = tmp_path_factory.mktemp("nf4")
    write_logs(root / "v")
    return root / "v", dict(reference_losses(root / "v", tiny_gguf("llama"), four_bit=True))


def train_two(tmp_path, logs_and_one_process, *flags: str) -> tuple[list[dict], dict, dict]:
    """`home train --processes 2 --4bit FLAGS` on a copy of the vault: (events, manifest entry, loss diffs)."""
    template, one = logs_and_one_process
    vault = tmp_path / "v"
    shutil.copytree(template, vault)
    proc = run_home(vault, "--model", str(tiny_gguf("llama")), *TRAIN, "--processes", "2", "--4bit", *flags,
                    timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    evs = events(proc.stdout)
    train = next(e for e in evs if e["event"] == "phase" and e["name"] == "train")
    assert "x 2 processes" in train["detail"] and "micro-batch 2 x 1" in train["detail"], train
    assert next(e for e in evs if e["event"] == "verified")["passed"]
    assert [e["event"] for e in evs].count("registered") == 1
    entry = next(iter(manifest(vault)["adapters"].values()))
    assert entry["verification"]["passed"] and entry["training"]["steps"] == STEPS
    assert "nf4" in entry["training"]["device"], entry["training"]  # the ranks trained on the nf4 base
    assert_private(vault)

    two = {e["step"]: e["loss"] for e in evs if e["event"] == "step"}
    assert sorted(two) == sorted(one) == list(range(1, STEPS + 1))
    diffs = {s: abs(two[s] - one[s]) for s in one}
    ranks_done = next(e for e in evs if e["event"] == "phase" and e["name"] == "ranks-done")
    print(f"\n{' '.join(flags) or 'DDP'}: {ranks_done['detail']}; step losses, one 4-bit process vs two:",
          {s: (round(one[s], 5), two[s]) for s in one}, "max diff", f"{max(diffs.values()):.1e}")
    return evs, entry, diffs


@pytest.mark.slow
def test_two_gloo_processes_train_qlora_verify_register_and_match_one_4bit_process(tmp_path, logs_and_one_process):
    evs, _, diffs = train_two(tmp_path, logs_and_one_process)
    started = next(e for e in evs if e["event"] == "phase" and e["name"] == "ranks")
    assert "each with the whole base (DDP)" in started["detail"], started
    assert diffs[1] < FIRST_STEP_TOL, diffs
    assert max(diffs.values()) < STEP_TOL, diffs


@pytest.mark.slow
def test_two_gloo_processes_shard_the_nf4_base_and_register_the_whole_adapter(tmp_path, logs_and_one_process):
    from safetensors import safe_open

    evs, entry, diffs = train_two(tmp_path, logs_and_one_process, "--fsdp")
    started = next(e for e in evs if e["event"] == "phase" and e["name"] == "ranks")
    assert "the base sharded over them (FSDP-QLoRA: --fsdp)" in started["detail"], started
    train = next(e for e in evs if e["event"] == "phase" and e["name"] == "train")
    assert "base sharded: 50% of its weights on each process" in train["detail"], train
    # the whole adapter, not rank 0's half: every LoRA matrix at its full shape (rank 4, hidden 64)
    peft_dir = (tmp_path / "v" / entry["file"]).parent / "peft"
    with safe_open(str(peft_dir / "adapter_model.safetensors"), "pt") as f:
        shapes = {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}
    assert [s for k, s in shapes.items() if "layers.0.self_attn.q_proj.lora_A" in k] == [(4, 64)], shapes
    assert all(4 in s for s in shapes.values()), shapes
    assert diffs[1] < FIRST_STEP_TOL, diffs
    assert max(diffs.values()) < STEP_TOL, diffs
