"""trainer.worker.base: the training copy of the app's GGUF, a `--base` Hugging Face directory, device choice."""

from __future__ import annotations

import sys

import pytest
import torch

from trainer.worker.base import BaseModelError, load_base, pick_device


def test_gguf_and_hf_directory_give_the_same_model(tmp_path, model_path, monkeypatch):
    cpu = pick_device("cpu")
    from_gguf = load_base(model_path, cpu)  # through its fp32 copy (trainer/worker/base_cache.py)
    monkeypatch.setenv("HOME_BASE_CACHE", "0")
    direct = load_base(model_path, cpu)  # transformers reading the GGUF itself
    monkeypatch.delenv("HOME_BASE_CACHE")
    for (name, a), (_, b) in zip(from_gguf.model.state_dict().items(), direct.model.state_dict().items(),
                                 strict=True):
        assert torch.equal(a, b), name  # the copy holds exactly the dequantized weights
    assert from_gguf.tokenizer("The garden is green") == direct.tokenizer("The garden is green")
    del direct
    hf_dir = tmp_path / "hf"
    from_gguf.model.save_pretrained(hf_dir)
    from_gguf.tokenizer.save_pretrained(hf_dir)
    from_dir = load_base(model_path, cpu, hf_dir=hf_dir)  # --base: weights from the directory
    assert from_dir.gguf_path == model_path  # still converted for, and verified against, the GGUF
    ids = torch.tensor([from_gguf.tokenizer("The garden is green")["input_ids"]])
    with torch.inference_mode():
        a = from_gguf.model(input_ids=ids).logits
        b = from_dir.model(input_ids=ids).logits
    assert torch.equal(a, b)


def test_a_large_fp32_run_loads_the_bf16_copy_upcast(tmp_path, monkeypatch):
    """fp32 copies stop at FP32_COPY_MAX_BYTES (an 8B would be 32 GB of disk): beyond, the bf16 copy
    (the one --4bit uses too) is loaded in fp32, so the arithmetic stays fp32."""
    from tests.families import tiny_gguf
    from trainer.worker import base_cache

    model = tiny_gguf("llama")
    monkeypatch.setenv("HOME_CACHE", str(tmp_path / "cache"))
    assert base_cache.copy_dtype(model, "float32") == "float32"
    monkeypatch.setattr(base_cache, "FP32_COPY_MAX_BYTES", base_cache.param_count(model) * 4 - 1)
    assert base_cache.copy_dtype(model, "float32") == "bfloat16"
    loaded = load_base(model, pick_device("cpu"))
    assert {p.dtype for p in loaded.model.parameters()} == {torch.float32}
    built = [p.name for p in (tmp_path / "cache" / "bases").iterdir()]
    assert built == [base_cache.base_dir(model, "bfloat16").name], built


def test_bad_bases_and_devices_are_one_line_errors(tmp_path, model_path):
    with pytest.raises(BaseModelError, match="config.json"):
        load_base(model_path, pick_device("cpu"), hf_dir=tmp_path)
    broken = tmp_path / "broken.gguf"
    broken.write_bytes(b"GGUF" + b"\0" * 64)
    with pytest.raises(BaseModelError, match="broken.gguf"):
        load_base(broken, pick_device("cpu"))
    with pytest.raises(BaseModelError, match="--device"):
        pick_device("tpu")
    if not torch.cuda.is_available():
        with pytest.raises(BaseModelError, match="no CUDA GPU"):
            pick_device("cuda")
        with pytest.raises(BaseModelError, match="add --device cpu"):
            pick_device("auto", four_bit=True)  # the slow CPU backend only when asked for by name
    assert pick_device("cpu").dtype == torch.float32


def test_4bit_device_needs_bitsandbytes_and_works_on_the_cpu(monkeypatch):
    pytest.importorskip("bitsandbytes")
    cpu4 = pick_device("cpu", four_bit=True)  # bitsandbytes' CPU backend quantizes here
    assert cpu4.four_bit and cpu4.dtype == torch.float32 and "nf4+float32" in cpu4.label
    monkeypatch.setitem(sys.modules, "bitsandbytes", None)  # as if not installed
    monkeypatch.setitem(sys.modules, "bitsandbytes.functional", None)
    with pytest.raises(BaseModelError, match="pip install bitsandbytes"):
        pick_device("cpu", four_bit=True)
