"""`home train --gpus N` with the base sharded over the ranks (FSDP2), run for real on the CPU: two processes
over gloo (`--processes 2 --device cpu --fsdp`) train the tiny Llama GGUF (tests/families.py) with each
rank holding half of the base's weights (transformers shards them as it loads); rank 0 writes the whole
adapter, which converts, verifies and registers once, and each step's loss matches one process on the
same global batch. The default rule (shard when the weights exceed half of one GPU's free memory) and
the refusals (`--fsdp` on one process, `--resume` of FSDP-QLoRA on CPU processes) are checked without
training. FSDP-QLoRA on CPU processes trains in tests/test_trainer_ranks_4bit.py.
"""

from __future__ import annotations

from tests.cli_helpers import assert_private, one_error_line, run_home
from tests.families import tiny_gguf
from tests.test_trainer_e2e import events, manifest, write_logs
from tests.test_trainer_ranks import FIRST_STEP_TOL, STEP_TOL, TRAIN, reference_losses


def test_two_gloo_processes_shard_the_base_and_register_the_whole_adapter(tmp_path):
    from safetensors import safe_open

    model = tiny_gguf("llama")
    vault = tmp_path / "v"
    write_logs(vault)
    proc = run_home(vault, "--model", str(model), *TRAIN, "--processes", "2", "--fsdp", timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    evs = events(proc.stdout)
    started = next(e for e in evs if e["event"] == "phase" and e["name"] == "ranks")
    assert "the base sharded over them (FSDP: --fsdp)" in started["detail"]
    train = next(e for e in evs if e["event"] == "phase" and e["name"] == "train")
    assert "x 2 processes" in train["detail"] and "base sharded: 50% of its weights on each process" in train["detail"]
    assert next(e for e in evs if e["event"] == "verified")["passed"]
    assert [e["event"] for e in evs].count("registered") == 1
    entry = next(iter(manifest(vault)["adapters"].values()))
    assert entry["verification"]["passed"] and entry["training"]["steps"] == 6

    # the whole adapter, not rank 0's half: every LoRA matrix at its full shape (rank 4, hidden 64)
    peft_dir = (vault / entry["file"]).parent / "peft"  # kept beside the GGUF at registration
    with safe_open(str(peft_dir / "adapter_model.safetensors"), "pt") as f:
        shapes = {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}
    q = [s for k, s in shapes.items() if "layers.0.self_attn.q_proj.lora_A" in k]
    assert q == [(4, 64)], shapes
    assert all(4 in s for s in shapes.values()), shapes
    assert_private(vault)

    two = {e["step"]: e["loss"] for e in evs if e["event"] == "step"}
    one = dict(reference_losses(vault, model))
    assert sorted(two) == sorted(one) == list(range(1, 7))
    diffs = {s: abs(two[s] - one[s]) for s in one}
    print("step losses, 1 process vs 2 sharded:", {s: (round(one[s], 5), two[s]) for s in one})
    assert diffs[1] < FIRST_STEP_TOL, diffs
    assert max(diffs.values()) < STEP_TOL, diffs


def test_the_default_shards_only_a_base_too_big_for_one_gpu():
    from trainer.worker.sharding import decide, should_shard, weight_bytes

    gib = 2**30
    # 8B in bf16 (16 GB) on two 24 GB cards: more than half of one, sharded; in nf4 (~4.1 GB) not
    assert should_shard(8_000_000_000, False, [24 * gib, 23 * gib])
    assert not should_shard(8_000_000_000, True, [24 * gib, 23 * gib])
    # 70B in nf4 (~35 GB) on two 80 GB cards: fits one, DDP; on 48 GB cards: sharded
    assert weight_bytes(70_000_000_000, True) > 35 * 10**9
    assert not should_shard(70_000_000_000, True, [80 * gib, 80 * gib])
    assert should_shard(70_000_000_000, True, [80 * gib, 48 * gib])
    # said out loud wins; the CPU (one shared memory) and one process never shard by default
    assert decide(True, "cpu", 2, False, None) == (True, "--fsdp")
    assert decide(False, "cuda", 2, True, None) == (False, "--no-fsdp")
    assert decide(None, "cpu", 2, False, None) == (False, "")
    assert decide(True, "cuda", 1, False, None) == (False, "")


def test_fsdp_on_one_process_or_resuming_qlora_sharded_on_cpu_processes_is_one_line(tmp_path):
    vault = tmp_path / "v"
    write_logs(vault)
    proc = run_home(vault, *TRAIN, "--fsdp")
    assert proc.returncode == 2
    assert "--fsdp shards the base over several processes" in one_error_line(proc)
    proc = run_home(vault, *TRAIN, "--processes", "2", "--fsdp", "--4bit", "--resume")
    assert proc.returncode == 2
    assert "--processes 2 --fsdp --4bit: a run with the base sharded over CPU processes" in one_error_line(proc)
    assert "start it again without --resume" in one_error_line(proc)
    assert not (vault / "manifest.json").exists() or manifest(vault)["adapters"] == {}
