"""Every model family Home claims, through the whole loop, on GGUFs made by llama.cpp's own converter.

Home was proven on one Llama-shaped model; users run Qwen, Gemma, Mistral and Phi. What differs between
families is exactly what a hand-made test model would get wrong: the converter's q/k permutation (Llama,
Mistral), fused projections (Phi3), norm offsets and head sizes (Gemma, Qwen3). So each family here is a
tiny random-weight transformers model turned into a GGUF by `convert_hf_to_gguf.py` (tests/families.py,
cached outside the repo), and goes through the real CLI: `home train` (logs → LoRA → our GGUF writer →
verification against transformers → registered), then `home ask --adapter`. A family Home does not
train for is refused before training, naming it.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from tests.cli_helpers import one_error_line, run_home
from tests.families import FAMILIES, UNSUPPORTED, tiny_gguf
from tests.test_trainer_e2e import events, manifest, write_logs
from trainer.worker.convert import SUPPORTED_ARCHS

# Tiny models learn fast: 8 steps at 5e-3 move the logits well past verification's "must move" guard
# (2 steps did not), and 64 tokens hold every example of the e2e voice logs.
TRAIN = ["--user", "bo", "train", "--steps", "8", "--rank", "4", "--batch-size", "4", "--lr", "5e-3",
         "--max-length", "64", "--device", "cpu", "--json"]
# A random LoRA that moves the logits clearly (moved ~0.03-0.1, 100x the guard).
B_STD = 0.02


def test_every_family_tested_is_one_home_trains_for():
    """The converter's table and this file's families name the same architectures."""
    assert {f.arch for f in FAMILIES.values()} == set(SUPPORTED_ARCHS)
    assert not {f.arch for f in UNSUPPORTED.values()} & set(SUPPORTED_ARCHS)


@pytest.mark.slow
@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_train_convert_verify_ask(family, tmp_path):
    from llm.gguf_meta import read_adapter_info, read_model_info

    model = tiny_gguf(family)
    info = read_model_info(model)
    assert info.arch == FAMILIES[family].arch
    vault = tmp_path / "v"
    write_logs(vault)
    proc = run_home(vault, "--model", str(model), *TRAIN, timeout=600)
    assert proc.returncode == 0, f"{family}: {proc.stderr[-3000:]}"
    evs = events(proc.stdout)
    verified = next(e for e in evs if e["event"] == "verified")
    print(family, {k: verified.get(k) for k in ("correlation", "moved_hf", "excess_noise", "delta_correlation")})
    assert verified["passed"], (family, verified)
    assert verified["correlation"] >= 0.998 and verified["top1_agreement"] >= 0.97, verified
    reg = next(e for e in evs if e["event"] == "registered")
    entry = manifest(vault)["adapters"][reg["id"]]
    assert entry["verification"]["passed"] and entry["base"]["fingerprint"] == info.fingerprint
    adapter = read_adapter_info(vault / entry["file"])
    assert adapter.arch == info.arch
    from tests.loras import read_lora

    kinds = {name.split(".")[-2] for name in read_lora(vault / entry["file"])[2]}  # blk.0.attn_q -> attn_q
    fused = {"attn_qkv", "ffn_up", "attn_output", "ffn_down"}
    want = fused if info.arch == "phi3" else {"attn_q", "attn_k", "attn_v", "attn_output", "ffn_gate", "ffn_up",
                                              "ffn_down"}
    assert kinds == want, (family, sorted(kinds))  # every projection, fused ones too

    if family != "phi3":
        return  # verification ran the adapter in llama.cpp already; `home ask` is the same path for all
    asked = run_home(vault, "--model", str(model), "--user", "bo", "ask", "hi", "--adapter", reg["id"],
                     "--max-tokens", "4", "--no-memory", "--json", timeout=300)
    assert asked.returncode == 0, f"{family}: {asked.stderr[-2000:]}"
    assert json.loads(asked.stdout)["adapters"] == [{"id": reg["id"], "scale": 1.0}]


def test_unsupported_family_is_refused_before_training(tmp_path):
    model = tiny_gguf("olmo2")
    vault = tmp_path / "v"
    write_logs(vault)
    proc = run_home(vault, "--model", str(model), *TRAIN, timeout=300)
    assert proc.returncode == 3, proc.stderr[-2000:]
    line = one_error_line(proc)
    assert "'olmo2'" in line and "olmo2 model family" in line and "supported: gemma2" in line, line
    kinds = [e["event"] for e in events(proc.stdout)]
    assert kinds == ["started", "error"], kinds  # no dataset read, no model loaded, nothing trained
    assert manifest(vault)["adapters"] == {} if (vault / "manifest.json").exists() else True


@pytest.mark.slow
def test_fused_phi3_projections_convert_and_verify(tmp_path):
    """Phi3 keeps q/k/v and gate/up fused in both transformers and the GGUF: a LoRA on `qkv_proj` and
    `gate_up_proj` goes to `attn_qkv` / `ffn_up` as stored, and llama.cpp agrees with transformers.
    (Home's trainer targets both the unfused and the fused names: each model has one set.)
    The same adapter with its q and k rows swapped must fail: the check sees a fused layout error."""
    import torch
    from peft import LoraConfig, get_peft_model

    from llm.engine import Engine
    from llm.lora_gguf import write_lora_gguf
    from tests.loras import read_lora
    from trainer.worker.base import load_base, pick_device
    from trainer.worker.convert import check_lora_config, convert_peft_to_gguf
    from trainer.worker.verify import verify_adapter

    model = tiny_gguf("phi3")
    base = load_base(model, pick_device("cpu"))
    config = LoraConfig(r=4, lora_alpha=8, lora_dropout=0.0, target_modules=["qkv_proj", "gate_up_proj"])
    check_lora_config(config, base.model)
    peft_model = get_peft_model(base.model, config)
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, p in peft_model.named_parameters():
            if "lora_B" in name:  # peft starts B at zero: a no-op adapter
                p.copy_(torch.randn(p.shape, generator=gen) * B_STD)
    peft_model.eval()
    peft_model.save_pretrained(tmp_path / "peft", save_embedding_layers=False)
    conv = convert_peft_to_gguf(tmp_path / "peft", model, tmp_path / "a.gguf", name="fused")
    assert conv.n_tensors == 4 and conv.permuted == []
    arch, alpha, tensors = read_lora(tmp_path / "a.gguf")
    assert arch == "phi3" and set(tensors) == {f"blk.{i}.{t}.weight" for i in (0, 1) for t in ("attn_qkv", "ffn_up")}
    assert tensors["blk.0.attn_qkv.weight"][1].shape == (3 * 64, 4)  # q, k, v rows together, as the base
    assert tensors["blk.0.ffn_up.weight"][1].shape == (2 * 128, 4)  # gate and up rows together
    swapped = {}
    for name, (a, b) in tensors.items():
        if "attn_qkv" in name:
            b = np.concatenate([b[64:128], b[:64], b[128:]])  # k rows where q's belong, and back
        swapped[name] = (a, b)
    write_lora_gguf(tmp_path / "swapped.gguf", arch, alpha, swapped)

    probes = ["The weather today is mild and calm.", "Keep it simple, yeah? Cheers, Bo."]
    with Engine(model, n_ctx=256, n_threads=1) as engine:
        ver = verify_adapter(model, peft_model, tmp_path / "a.gguf", base.tokenizer, probes, engine=engine)
        wrong = verify_adapter(model, peft_model, tmp_path / "swapped.gguf", base.tokenizer, probes, engine=engine)
    assert ver.passed and ver.delta_correlation > 0.9999, ver.to_dict()
    assert not wrong.passed and wrong.delta_correlation < ver.delta_correlation, wrong.to_dict()


def _random_lora(base, std: float, out):
    """peft's default targets on `base`, B drawn at `std` (peft starts B at zero: a no-op), saved."""
    import torch
    from peft import LoraConfig, get_peft_model

    targets = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
    peft_model = get_peft_model(base.model, LoraConfig(r=8, lora_alpha=16, lora_dropout=0.0, target_modules=targets))
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, p in peft_model.named_parameters():
            if "lora_B" in name:
                p.copy_(torch.randn(p.shape, generator=gen) * std)
    peft_model.eval()
    peft_model.save_pretrained(out, save_embedding_layers=False)
    return peft_model


@pytest.mark.slow
def test_unquantized_base_large_right_adapter_passes_small_wrong_one_fails(tmp_path, monkeypatch):
    """On an f32 base the excess-noise ratio's floor is float rounding, so a right adapter's own rounding
    lifted it past the limit as the adapter grew (B std 0.1: 1.27; 0.2: 2.1) and verification refused
    well-trained adapters for f16/f32 GGUFs. Now it takes a change error above rounding too: a big right
    adapter passes, and a small one without the q/k permutation (error 0.017) still fails."""
    from llm.engine import Engine
    from trainer.worker import convert
    from trainer.worker.base import load_base, pick_device
    from trainer.worker.convert import convert_peft_to_gguf
    from trainer.worker.verify import verify_adapter

    model = tiny_gguf("llama")
    with Engine(model, n_ctx=256, n_threads=1) as engine:
        big = _random_lora(load_base(model, pick_device("cpu")), 0.2, tmp_path / "big")
        right = convert_peft_to_gguf(tmp_path / "big", model, tmp_path / "big.gguf")
        ver = verify_adapter(model, big, right.path, engine=engine)
        assert ver.passed and ver.excess_noise > 1.25 and ver.delta_error < 0.005, ver.to_dict()
        small = _random_lora(load_base(model, pick_device("cpu")), 0.01, tmp_path / "small")
        monkeypatch.setattr(convert, "permute", lambda w, *a, **k: w)
        wrong = convert_peft_to_gguf(tmp_path / "small", model, tmp_path / "wrong.gguf")
        bad = verify_adapter(model, small, wrong.path, engine=engine)
    assert not bad.passed and "q/k permutation" in bad.reason and bad.delta_error > 0.005, bad.to_dict()


@pytest.mark.slow
def test_a_bf16_reference_passes_a_right_adapter_and_fails_a_wrong_one(tmp_path, monkeypatch):
    """A GPU without room for an fp32 reference verifies against bf16, which rounds the adapter's change
    itself (error 0.006 for a big right adapter, ratio 1.27): its own bound tells that from a wrong q/k
    layout (error 0.032, ratio 1.27, at B std 0.01)."""
    import torch

    from llm.engine import Engine
    from trainer.worker import convert
    from trainer.worker.base import Device, load_base
    from trainer.worker.convert import convert_peft_to_gguf
    from trainer.worker.verify import verify_adapter

    model = tiny_gguf("llama")
    with Engine(model, n_ctx=256, n_threads=1) as engine:
        big = _random_lora(load_base(model, Device("cpu", torch.bfloat16)), 0.2, tmp_path / "big")
        right = convert_peft_to_gguf(tmp_path / "big", model, tmp_path / "big.gguf")
        ver = verify_adapter(model, big, right.path, engine=engine)
        assert ver.passed and ver.excess_noise > 1.25 and 0.005 < ver.delta_error < 0.01, ver.to_dict()
        small = _random_lora(load_base(model, Device("cpu", torch.bfloat16)), 0.01, tmp_path / "small")
        monkeypatch.setattr(convert, "permute", lambda w, *a, **k: w)
        wrong = convert_peft_to_gguf(tmp_path / "small", model, tmp_path / "wrong.gguf")
        bad = verify_adapter(model, small, wrong.path, engine=engine)
    assert not bad.passed and "q/k permutation" in bad.reason, bad.to_dict()
