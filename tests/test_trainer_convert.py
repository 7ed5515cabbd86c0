"""peft → GGUF LoRA conversion and its verification, end to end on real components.

One peft LoRA (r=8, alpha=16, all seven projections) over the dequantized default model, with
random non-zero A and B so it really moves the logits; it is converted by our writer, loaded by
llama.cpp over the Q4_1 base, and compared with transformers + peft. Negative cases use the same
machinery: a converter without the q/k permutation and an all-zero adapter must fail verification
for the right, named reason.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import load_file, save_file

from llm.gguf_meta import read_adapter_info
from tests.loras import read_lora
from trainer.worker import convert
from trainer.worker.convert import ConvertError, check_lora_config, convert_peft_to_gguf
from trainer.worker.verify import DEFAULT_PROBES, MIN_CORRELATION, MIN_TOP1, verify_adapter

TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
B_STD = 0.05  # large enough that a wrong q/k layout shows above llama.cpp's quantization noise
Q0 = "base_model.model.model.layers.0.self_attn.q_proj"
Q0_MODULE = Q0.removeprefix("base_model.model.")


@pytest.fixture(scope="module")
def peft_model():
    """The dequantized default model wrapped in a random (non-zero) peft LoRA, loaded once."""
    import torch
    from peft import LoraConfig, get_peft_model

    from llm.models import default_model_path
    from trainer.worker.base import load_base, pick_device

    base = load_base(default_model_path(), pick_device("cpu"))
    config = LoraConfig(r=8, lora_alpha=16, lora_dropout=0.0, target_modules=TARGETS)
    check_lora_config(config, base.model)  # the trainer's pre-flight check accepts it
    model = get_peft_model(base.model, config)
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:  # peft starts B at zero: a no-op adapter
                p.copy_(torch.randn(p.shape, generator=gen) * B_STD)
    model.eval()
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # on 2 shared cores, torch's 2-thread barriers run ~10x slower under load
    yield model
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def engine(model_path):
    """A small engine of our own: 1 thread, like torch above (2 threads each fight on 2 shared cores)."""
    from llm.engine import Engine

    with Engine(model_path, n_ctx=512, n_threads=1) as eng:
        yield eng


@pytest.fixture(scope="module")
def peft_dir(tmp_path_factory, peft_model) -> Path:
    d = tmp_path_factory.mktemp("peft") / "adapter"
    peft_model.save_pretrained(d, save_embedding_layers=False)
    return d


@pytest.fixture(scope="module")
def converted(tmp_path_factory, peft_dir, model_path):
    return convert_peft_to_gguf(peft_dir, model_path, tmp_path_factory.mktemp("gguf") / "a.gguf", name="t")


def _report(label: str, result) -> None:
    print(f"\n{label}: " + json.dumps(result.to_dict()))


def test_conversion_names_shapes_alpha_and_qk_permutation(converted, peft_dir, model_path):
    assert (converted.arch, converted.rank, converted.alpha) == ("llama", 8, 16.0)
    assert converted.n_tensors == 30 * len(TARGETS)
    assert converted.permuted == ["attn_k", "attn_q"] and converted.folded == 0
    info = read_adapter_info(converted.path)
    assert info.alpha == 16.0 and info.name == "t"
    assert info.tensors["blk.0.attn_q.weight"] == ((8, 576), (576, 8))
    assert info.tensors["blk.29.ffn_down.weight"] == ((8, 1536), (576, 8))

    _, _, tensors = read_lora(converted.path)
    saved = load_file(str(peft_dir / "adapter_model.safetensors"))
    a, b = tensors["blk.0.attn_q.weight"]
    np.testing.assert_array_equal(a, saved[f"{Q0}.lora_A.weight"])  # A untouched
    want = convert.permute(saved[f"{Q0}.lora_B.weight"], 9, 9)
    np.testing.assert_array_equal(b, want)
    assert not np.array_equal(b, saved[f"{Q0}.lora_B.weight"])
    k_b = tensors["blk.0.attn_k.weight"][1]  # k: 3 kv heads of 64 rows
    src = saved["base_model.model.model.layers.0.self_attn.k_proj.lora_B.weight"]
    np.testing.assert_array_equal(k_b[:64:2], src[:32])  # head 0: first rotary half lands on even rows
    np.testing.assert_array_equal(k_b[1:64:2], src[32:64])
    v_b = tensors["blk.0.attn_v.weight"][1]
    np.testing.assert_array_equal(
        v_b, saved["base_model.model.model.layers.0.self_attn.v_proj.lora_B.weight"]
    )


def test_verify_passes_and_the_adapter_moves_the_logits(converted, peft_model, model_path, engine):
    before = list(engine.adapters)
    peft_model.train()  # verify runs it in eval mode (no dropout) and puts the mode back
    try:
        result = verify_adapter(model_path, peft_model, converted.path, None, None, engine=engine)
        assert peft_model.training
    finally:
        peft_model.eval()
    _report("with q/k permutation", result)
    assert result.passed, result.reason
    assert result.correlation >= MIN_CORRELATION and result.top1_agreement >= MIN_TOP1
    assert result.moved_hf > 5 * (1 - result.base_correlation)  # clearly above quantization noise
    assert result.reason == "" and result.n_positions > 100
    assert engine.adapters == before and not any(i.startswith("verify-") for i in engine.loaded_adapters)
    json.dumps(result.to_dict())


def test_without_the_qk_permutation_verification_fails(
    monkeypatch, peft_dir, peft_model, model_path, engine, tmp_path
):
    monkeypatch.setattr(convert, "permute", lambda w, *a, **k: w)
    bad = convert_peft_to_gguf(peft_dir, model_path, tmp_path / "noperm.gguf")
    result = verify_adapter(model_path, peft_model, bad.path, None, None, engine=engine)
    _report("without q/k permutation", result)
    assert not result.passed
    assert "excess noise" in result.reason and "q/k permutation" in result.reason


def test_verify_accepts_a_peft_directory(peft_dir, converted, model_path, engine, peft_model):
    """What the trainer passes when its model cannot run in fp32 (4-bit): the base is reloaded."""
    result = verify_adapter(model_path, peft_dir, converted.path, None, None, engine=engine)
    _report("from the peft directory", result)
    assert result.passed, result.reason


def test_zero_adapter_fails_the_moved_check(peft_model, model_path, engine, tmp_path):
    import torch

    saved = {n: p.detach().clone() for n, p in peft_model.named_parameters() if "lora_B" in n}
    try:
        with torch.no_grad():
            for n, p in peft_model.named_parameters():
                if n in saved:
                    p.zero_()
        peft_model.save_pretrained(tmp_path / "zero", save_embedding_layers=False)
        zero = convert_peft_to_gguf(tmp_path / "zero", model_path, tmp_path / "zero.gguf")
        result = verify_adapter(model_path, peft_model, zero.path, None, [DEFAULT_PROBES[0]], engine=engine)
    finally:
        with torch.no_grad():
            for n, p in peft_model.named_parameters():
                if n in saved:
                    p.copy_(saved[n])
    _report("zero adapter", result)
    assert not result.passed
    assert result.moved_hf == 0.0 and result.moved_llama == 0.0
    assert "moved 0.00e+00 < 2e-04 in transformers" in result.reason
    assert "train more steps or at a higher --lr" in result.reason  # what a user can do about it


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"use_dora": True}, "use_dora"),
        ({"modules_to_save": ["lm_head"]}, "modules_to_save"),
        ({"bias": "all"}, "bias='all'"),
        ({"target_modules": ["q_proj", "embed_tokens"]}, "embed_tokens"),
        ({"target_modules": ["lm_head"]}, "lm_head"),
        ({"target_modules": r".*embed_tokens"}, "embed_tokens"),
    ],
)
def test_check_lora_config_refuses_what_gguf_cannot_hold(peft_model, changes, field):
    from peft import LoraConfig

    config = LoraConfig(**{"r": 8, "lora_alpha": 16, "target_modules": TARGETS, **changes})
    for model in (peft_model, peft_model.get_base_model(), None):
        if model is None and isinstance(changes.get("target_modules"), str):
            continue  # a regex can only be resolved against a model
        with pytest.raises(ConvertError) as err:
            check_lora_config(config, model)
        msg = str(err.value)
        assert field in msg and "\n" not in msg and err.value.exit_code == 3
    assert "tied" in _msg(LoraConfig(target_modules=["lm_head"]), peft_model)  # SmolLM2 ties them


def _msg(config, model) -> str:
    with pytest.raises(ConvertError) as err:
        check_lora_config(config, model)
    return str(err.value)


def test_check_lora_config_accepts_plain_lora(peft_model):
    from peft import LoraConfig

    check_lora_config(peft_model.peft_config["default"], peft_model)
    check_lora_config(LoraConfig(target_modules="all-linear"), peft_model.get_base_model())
    check_lora_config(json.loads(json.dumps(peft_model.peft_config["default"].to_dict(), default=str)))


def _edited(peft_dir: Path, dest: Path, edit) -> Path:
    shutil.copytree(peft_dir, dest)
    weights = load_file(str(dest / "adapter_model.safetensors"))
    edit(weights)
    save_file(weights, str(dest / "adapter_model.safetensors"))
    return dest


@pytest.mark.parametrize(
    ("edit", "named"),
    [
        (
            lambda w: w.update({f"{Q0}.lora_B.weight": np.zeros((100, 8), np.float32)}),
            f"{Q0_MODULE}: A (8, 576)",
        ),
        (
            lambda w: w.update({f"{Q0}.lora_A.weight": np.zeros((8, 100), np.float32)}),
            "do not fit blk.0.attn_q",
        ),
        (
            lambda w: w.update(
                {k.replace("layers.0.", "layers.99."): v for k, v in w.items() if "layers.0." in k}
            ),
            "model.layers.99.",
        ),
        (
            lambda w: w.update(
                {k.replace("q_proj", "qkv_proj"): v for k, v in w.items() if "layers.1.self_attn.q" in k}
            ),
            "model.layers.1.self_attn.qkv_proj: no llama GGUF tensor",
        ),
        (lambda w: w.pop(f"{Q0}.lora_B.weight"), f"{Q0_MODULE}: has lora_A but not its pair"),
        (
            lambda w: w.update({f"{Q0}.lora_magnitude_vector": np.ones(576, np.float32)}),
            "lora_magnitude_vector",
        ),
    ],
    ids=["B-rows", "A-cols", "layer-beyond-base", "unknown-module", "missing-half", "dora-tensor"],
)
def test_convert_refuses_tensors_that_do_not_fit(peft_dir, model_path, tmp_path, edit, named):
    src = _edited(peft_dir, tmp_path / "peft", edit)
    out = tmp_path / "out.gguf"
    with pytest.raises(ConvertError) as err:
        convert_peft_to_gguf(src, model_path, out)
    assert named in str(err.value) and "\n" not in str(err.value)
    assert not out.exists()


def test_convert_refuses_unsupported_config_before_reading_weights(peft_dir, model_path, tmp_path):
    src = tmp_path / "dora"
    shutil.copytree(peft_dir, src)
    cfg = json.loads((src / "adapter_config.json").read_text())
    (src / "adapter_config.json").write_text(json.dumps({**cfg, "use_dora": True}))
    with pytest.raises(ConvertError, match="use_dora"):
        convert_peft_to_gguf(src, model_path, tmp_path / "x.gguf")


def test_per_module_rank_and_alpha_are_folded_into_b(peft_dir, model_path, tmp_path):
    """llama.cpp has one alpha per file and divides by each tensor's rank: a module whose peft scale
    differs (alpha_pattern here, rsLoRA below) gets the ratio folded into its B."""
    src = tmp_path / "pattern"
    shutil.copytree(peft_dir, src)
    cfg = json.loads((src / "adapter_config.json").read_text())
    (src / "adapter_config.json").write_text(json.dumps({**cfg, "alpha_pattern": {"v_proj": 32}}))
    plain = read_lora(convert_peft_to_gguf(peft_dir, model_path, tmp_path / "plain.gguf").path)[2]
    res = convert_peft_to_gguf(src, model_path, tmp_path / "pattern.gguf")
    folded = read_lora(res.path)[2]
    assert res.alpha == 16.0 and res.folded == 30
    np.testing.assert_allclose(
        folded["blk.3.attn_v.weight"][1], 2 * plain["blk.3.attn_v.weight"][1], rtol=1e-6
    )
    np.testing.assert_array_equal(folded["blk.3.attn_q.weight"][1], plain["blk.3.attn_q.weight"][1])

    (src / "adapter_config.json").write_text(json.dumps({**cfg, "use_rslora": True}))
    rs = convert_peft_to_gguf(src, model_path, tmp_path / "rs.gguf")  # scale 16/sqrt(8) vs llama.cpp's 16/8
    b = read_lora(rs.path)[2]["blk.3.attn_output.weight"][1]
    np.testing.assert_allclose(b, np.sqrt(8) * plain["blk.3.attn_output.weight"][1], rtol=1e-5)
