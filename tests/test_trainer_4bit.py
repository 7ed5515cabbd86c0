"""`home train --4bit` from the GGUF alone, on bitsandbytes' CPU backend: the GGUF is dequantized once
into a private cache, quantized to nf4 on load, trained, converted, verified against a full-precision
reference (the GGUF dequantized + the saved LoRA), registered, and `home ask` runs the adapter.
Also the cache's own contract: built once and reused, private, never used half-written."""

from __future__ import annotations

import json
import os
import subprocess

import pytest

from tests.cli_helpers import run_home
from tests.families import tiny_gguf
from tests.test_families import TRAIN as TINY_TRAIN
from tests.test_trainer_e2e import events, manifest, write_logs
from trainer.worker import base_cache
from trainer.worker.base_cache import base_dir, dequantized_base, is_complete

bnb = pytest.importorskip("bitsandbytes", reason="--4bit needs bitsandbytes (the test extra installs it)")


def _modes(folder) -> set[str]:
    """Every mode under `folder` (itself included), as 'd0o700' / 'f0o600'."""
    out = {f"d{oct(folder.stat().st_mode & 0o777)}"}
    for dirpath, dirnames, filenames in os.walk(folder):
        out |= {f"d{oct(os.stat(os.path.join(dirpath, d)).st_mode & 0o777)}" for d in dirnames}
        out |= {f"f{oct(os.stat(os.path.join(dirpath, f)).st_mode & 0o777)}" for f in filenames}
    return out


@pytest.mark.slow
def test_4bit_cpu_run_from_the_gguf_is_verified_registered_and_used(tmp_path, monkeypatch):
    """On a tiny Llama GGUF from llama.cpp's converter (tests/families.py): the nf4 path is the same for
    any model, and on the default model bitsandbytes' CPU kernels made this the suite's slowest test
    (~190 s). The default model's own dequantization is tested in test_trainer_base.py."""
    model_path = tiny_gguf("llama")
    monkeypatch.setenv("HOME_CACHE", str(tmp_path / "cache"))  # run_home passes the environment on
    vault = tmp_path / "v"
    write_logs(vault)
    proc = run_home(vault, "--model", str(model_path), *TINY_TRAIN, "--4bit", timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    evs = events(proc.stdout)
    load = next(e for e in evs if e["event"] == "phase" and e["name"] == "load")
    assert "nf4+float32" in load["detail"], load
    verified = next(e for e in evs if e["event"] == "verified")
    assert verified["passed"], verified["reason"]  # the reference: full precision from the GGUF + LoRA
    reg = next(e for e in evs if e["event"] == "registered")
    entry = manifest(vault)["adapters"][reg["id"]]
    assert entry["verification"]["passed"] and "nf4" in entry["training"]["device"]
    done = next(e for e in evs if e["event"] == "done")
    print(f"\n4-bit CPU run: peak host {done.get('peak_host_bytes', 0) / 2**30:.2f} GiB; moved "
          f"{verified['moved_hf']:.4f}; stages: " + ", ".join(f"{e['memory']['stage']} {e['memory']['seconds']}s"
                                                         for e in evs if e.get("memory") and "stage" in e["memory"]))

    asked = run_home(vault, "--model", str(model_path), "--user", "bo", "ask", "Any news?", "--adapter", reg["id"],
                     "--max-tokens", "8", "--no-memory", "--json")
    assert asked.returncode == 0, asked.stderr
    assert json.loads(asked.stdout)["adapters"] == [{"id": reg["id"], "scale": 1.0}]

    # The run built the cache, privately, and a second load finds it without building again.
    folder = base_dir(model_path)
    assert folder.parent == tmp_path / "cache" / "bases" and is_complete(folder)
    assert _modes(folder) == {"d0o700", "f0o600"} and _modes(folder.parent) >= {"d0o700"}
    weights = (folder / "model.safetensors").stat()

    def no_rebuild(*_a):
        raise AssertionError("the cached base was built again")

    monkeypatch.setattr(base_cache, "_build", no_rebuild)
    assert dequantized_base(model_path) == folder
    again = (folder / "model.safetensors").stat()
    assert (again.st_ino, again.st_mtime_ns) == (weights.st_ino, weights.st_mtime_ns)
    # the nf4 training's bf16 copy and verification's fp32 reference copy; no temp folder left behind
    built = sorted(p.name for p in folder.parent.iterdir())
    assert built == sorted([folder.name, base_dir(model_path, "float32").name]), built


def _fake_build(calls: list):
    """Stands in for the dequantization (seconds of model loading) where only the folder logic is tested."""
    def build(gguf_path, out, dtype):
        calls.append(out)
        (out / "config.json").write_text("{}")
        (out / "model.safetensors").write_bytes(b"weights")
        (out / "home-cache.json").write_text(json.dumps({"format": base_cache.FORMAT, "dtype": dtype}))
    return build


def test_cache_is_atomic_private_and_never_used_half_written(tmp_path, model_path, monkeypatch):
    monkeypatch.setenv("HOME_CACHE", str(tmp_path / "cache"))
    calls: list = []
    monkeypatch.setattr(base_cache, "_build", _fake_build(calls))
    final = base_dir(model_path)
    # A half-written copy at the final name (no stamp) and a crashed build's temp folder.
    final.mkdir(parents=True)
    (final / "config.json").write_text("{}")
    dead = subprocess.Popen(["true"])  # a pid that has exited
    dead.wait()
    leftover = final.parent / f".{final.name}.{dead.pid}.tmp"
    leftover.mkdir()
    assert not is_complete(final)

    assert dequantized_base(model_path) == final and len(calls) == 1
    assert is_complete(final) and not leftover.exists()
    assert _modes(final) == {"d0o700", "f0o600"}
    assert dequantized_base(model_path) == final and len(calls) == 1  # reused, not rebuilt

    # A build that fails publishes nothing and leaves no temp folder.
    def broken(gguf_path, out, dtype):
        (out / "config.json").write_text("{}")
        raise RuntimeError("disk full")

    monkeypatch.setattr(base_cache, "_build", broken)
    monkeypatch.setenv("HOME_CACHE", str(tmp_path / "other"))
    with pytest.raises(RuntimeError, match="disk full"):
        dequantized_base(model_path)
    assert [p.name for p in base_dir(model_path).parent.iterdir()] == []


def test_an_nf4_layer_stays_differentiable_after_a_validation_pass(tmp_path, monkeypatch):
    """A no-grad eval forward (a validation pass) must not turn the nf4 base into bitsandbytes' packed
    AVX512-BF16 inference layout: after it, a training forward still back-propagates through the base
    linear exactly (d sum(x Wᵀ) / dx = the dequantized W summed over its rows). Before
    trainer/worker/base.py's keep_nf4_differentiable, on a Zen 4 CPU x.grad was None here."""
    import torch
    from bitsandbytes.functional import dequantize_4bit

    from trainer.worker.base import Device, load_base

    monkeypatch.setenv("HOME_CACHE", str(tmp_path / "cache"))
    model = load_base(tiny_gguf("llama"), Device("cpu", torch.float32, four_bit=True)).model
    ids = torch.tensor([[1, 2, 3, 4]])
    model.eval()
    with torch.no_grad():
        model(input_ids=ids)
    layers = [m for m in model.modules() if isinstance(m, bnb.nn.Linear4bit)]
    assert layers and not any(getattr(m.weight.quant_state, "packing_format_for_cpu", False) for m in layers)
    model.train()
    layer = layers[0]
    x = torch.randn(3, layer.in_features, requires_grad=True)
    layer(x).sum().backward()
    assert x.grad is not None
    w = dequantize_4bit(layer.weight.data, layer.weight.quant_state).float()
    assert torch.allclose(x.grad, w.sum(0).expand_as(x), atol=1e-4)
