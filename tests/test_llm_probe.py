"""llm/probe.py: a model file that makes llama.cpp abort is refused in one line, and a good one is probed once.

The crashing file is the bundled model with one metadata string changed: `tokenizer.ggml.model` "gpt2" →
"llama". llama.cpp then treats its byte-level BPE vocabulary as SentencePiece, which has no `<0x20>`-style
byte tokens, and `llama_tokenize` throws `std::out_of_range` (`unordered_map::at`) through the C API on
the first text with a space: `terminate called …`, SIGABRT. The weight fingerprint does not see the
tokenizer type, so the two files share it (the probe is keyed on the header digest instead).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from llm.errors import ModelError
from llm.gguf_meta import read_model_info
from llm.params import GenParams
from llm.probe import probe_model, record_path
from tests.cli_helpers import one_error_line, run_home
from tests.families import cache_dir


def set_string(src, dst, key: str, value: str) -> None:
    """Copy a GGUF with one string field replaced (any length): the bytes before the field's value, the
    new value, the rest of the header, re-padded, then the tensor data unchanged (its offsets are relative)."""
    import gguf

    r = gguf.GGUFReader(str(src))
    field = r.fields[key]
    base = r.data.ctypes.data
    start = field.parts[-2].ctypes.data - base  # the string's uint64 length
    end = field.parts[-1].ctypes.data - base + field.parts[-1].nbytes
    header_end = max(t.field.offset + sum(int(p.nbytes) for p in t.field.parts) for t in r.tensors)
    raw = value.encode()
    head = bytes(r.data[:start]) + np.uint64(len(raw)).tobytes() + raw + bytes(r.data[end:header_end])
    align = int(r.fields["general.alignment"].contents()) if "general.alignment" in r.fields else 32
    with open(dst, "wb") as out:
        out.write(head + b"\0" * (-len(head) % align))
        out.write(memoryview(r.data[r.data_offset:]))


@pytest.fixture(scope="module")
def bad_model(model_path):
    """The crashing copy, built once (parsing the source's header takes seconds) into the test cache."""
    dest = cache_dir() / "models" / f"spm-without-byte-tokens-{read_model_info(model_path).header_sha256[:12]}.gguf"
    if not dest.exists():
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = dest.with_name(f".{dest.name}.{os.getpid()}.tmp")
        set_string(model_path, tmp, "tokenizer.ggml.model", "llama")
        os.replace(tmp, dest)
    return dest


def test_the_crafted_file_really_aborts_llama_cpp(bad_model, model_path):
    code = ("import sys, llama_cpp; llm = llama_cpp.Llama(sys.argv[1], n_ctx=64, verbose=False); "
            "print('loaded', flush=True); llm.tokenize(b'hello world')")
    env = dict(os.environ, GGML_NO_BACKTRACE="1")
    proc = subprocess.run([sys.executable, "-c", code, str(bad_model)], env=env, capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == -signal.SIGABRT, proc.stderr[-2000:]
    assert proc.stdout.strip() == "loaded" and "unordered_map::at" in proc.stderr  # loads, then dies tokenizing
    good, bad = read_model_info(model_path), read_model_info(bad_model)
    assert good.fingerprint == bad.fingerprint and good.header_sha256 != bad.header_sha256


def test_home_ask_refuses_it_in_one_line_naming_the_file(bad_model, tmp_path):
    proc = run_home(tmp_path / "v", "--model", str(bad_model), "ask", "hello there")
    assert proc.returncode == 3, proc.stderr[-2000:]
    line = one_error_line(proc)
    assert line == (f"home: error: {bad_model}: llama.cpp crashed (SIGABRT) while tokenizing text: "
                    "unordered_map::at; Home did not load it")
    assert proc.stdout == "" and not list((tmp_path / "v" / "logs").glob("*.jsonl"))  # nothing half-done


def test_a_good_model_is_probed_once_a_crash_every_time(model_path, bad_model, tmp_path, monkeypatch):
    monkeypatch.setenv("HOME_CACHE", str(tmp_path / "cache"))
    good, bad = read_model_info(model_path), read_model_info(bad_model)
    first = probe_model(model_path, good)
    assert first.ran and record_path(good).is_file()
    assert json.loads(record_path(good).read_text())["ok"] is True
    t0 = time.perf_counter()
    again = probe_model(model_path, good)
    recall_s = time.perf_counter() - t0
    assert not again.ran and recall_s < first.seconds  # read from the record, not a child: no wall-clock bar a busy box can miss
    print(f"\nprobe of the default model: {first.seconds:.2f} s in a child; remembered: {recall_s * 1000:.1f} ms")
    for _ in range(2):  # same fingerprint as the good file, but its own header: probed, refused, not remembered
        with pytest.raises(ModelError, match="crashed"):
            probe_model(bad_model, bad)
    assert not record_path(bad).exists()

    from llm import probe
    from llm.engine import Engine

    def no_child(*args, **kwargs):
        raise AssertionError("a remembered model must not start a probe child")

    monkeypatch.setattr(probe.subprocess, "run", no_child)
    with Engine(model_path, n_ctx=256) as eng:  # the engine's own load goes through the remembered probe
        assert eng.count_tokens([{"role": "user", "content": "hi"}]) > 0
    with pytest.raises(AssertionError, match="must not start"):
        Engine(bad_model, n_ctx=256)  # while a crashing file is probed again each time


# --- adapters ---------------------------------------------------------------------------------------


def write_adapter(model_path, dest, alpha_type: str = "float32", rank: int = 4):
    """A one-tensor LoRA for the model; `alpha_type` other than float32 passes our checks (alpha is a
    number) but trips `GGML_ASSERT(type_to_gguf_type<T>::value == type)` in llama_adapter_lora_init."""
    import gguf

    info = read_model_info(model_path)
    out, inp = info.tensors["blk.0.attn_q.weight"]
    rng = np.random.default_rng(0)
    w = gguf.GGUFWriter(str(dest), info.arch)
    w.add_string("general.type", "adapter")
    w.add_string("adapter.type", "lora")
    getattr(w, f"add_{alpha_type}")("adapter.lora.alpha", 8)
    w.add_tensor("blk.0.attn_q.weight.lora_a", (rng.standard_normal((rank, inp)) * 0.01).astype(np.float32))
    w.add_tensor("blk.0.attn_q.weight.lora_b", (rng.standard_normal((out, rank)) * 0.01).astype(np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return dest


def test_home_ask_refuses_an_adapter_that_aborts_llama_cpp_in_one_line(model_path, tmp_path):
    """Before the adapter probe: `home ask` died of SIGABRT with no word of Home's."""
    vault = tmp_path / "v"
    bad = write_adapter(model_path, tmp_path / "int-alpha.gguf", "uint32")
    add = run_home(vault, "adapters", "add", str(bad), "--name", "crash", "--kind", "style")
    assert add.returncode == 0, add.stderr  # our checks pass it: alpha is a number
    proc = run_home(vault, "ask", "--adapter", "crash", "hello there")
    assert proc.returncode == 3, proc.stderr[-2000:]
    line = one_error_line(proc)
    assert line == (f"home: error: {vault / 'adapters' / 'crash' / 'adapter.gguf'}: llama.cpp crashed (SIGABRT) while "
                    "loading the adapter: GGML_ASSERT(type_to_gguf_type<T>::value == type) failed; Home did not load it")
    assert proc.stdout == ""


def test_an_adapter_is_probed_once_per_header_and_base_a_crash_every_time(model_path, tmp_path, monkeypatch):
    from llm import probe
    from llm.engine import Engine
    from llm.errors import AdapterError
    from llm.gguf_meta import read_adapter_info
    from llm.probe import adapter_record_path, probe_adapter

    monkeypatch.setenv("HOME_CACHE", str(tmp_path / "cache"))
    model = read_model_info(model_path)
    good = write_adapter(model_path, tmp_path / "good.gguf")
    twin = write_adapter(model_path, tmp_path / "twin.gguf")  # same header: other values could not crash
    bad = write_adapter(model_path, tmp_path / "f64-alpha.gguf", "float64")
    first = probe_adapter(good, read_adapter_info(good), model)
    assert first.ran and adapter_record_path(model, read_adapter_info(good)).is_file()
    print(f"\nadapter probe: {first.seconds:.2f} s in a child")
    assert not probe_adapter(twin, read_adapter_info(twin), model).ran
    with pytest.raises(AdapterError, match=r"f64-alpha.gguf: llama.cpp crashed \(SIGABRT\) while loading the adapter"):
        probe_adapter(bad, read_adapter_info(bad), model)
    assert not adapter_record_path(model, read_adapter_info(bad)).exists()

    def no_child(*args, **kwargs):
        raise AssertionError("a remembered adapter must not start a probe child")

    with Engine(model_path, n_ctx=256) as eng:
        monkeypatch.setattr(probe.subprocess, "run", no_child)
        eng.load_adapter("good", good)  # through the remembered probe
        eng.set_adapters([("good", 1.0)])
        assert eng.generate_text([{"role": "user", "content": "hi"}], GenParams(max_tokens=4))
        with pytest.raises(AssertionError, match="must not start"):
            eng.load_adapter("bad", bad)  # a crashing file is probed again each time
