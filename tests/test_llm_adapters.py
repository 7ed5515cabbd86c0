"""llm adapters on the real model: hot-swap is exact, stacks add up, bad files are refused by name.

Every check compares real llama.cpp outputs: logits bit-for-bit where the computation is the same,
a tight tolerance where only the order of float additions differs (stack vs one merged adapter).
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from llm.engine import Engine
from llm.errors import AdapterError
from llm.lora_gguf import write_lora_gguf
from llm.params import GenParams
from tests.loras import make_random_lora, read_lora

PROMPT = "The capital of France is"
CHAT = [{"role": "user", "content": "Name three fruits."}]
GREEDY = GenParams(temperature=0.0, seed=7, max_tokens=8)


@pytest.fixture(scope="module")
def loras(tmp_path_factory, model_path):
    """Two random adapters over the real model (alpha = rank: effective scale 1 each)."""
    d = tmp_path_factory.mktemp("loras")
    return {
        "one": make_random_lora(model_path, d / "one.gguf", rank=8, seed=1),
        "two": make_random_lora(model_path, d / "two.gguf", rank=4, seed=2),
    }


@pytest.fixture
def clean_engine(engine):
    """The session engine; afterwards the base stack is back and what the test loaded is unloaded."""
    before = set(engine.loaded_adapters)
    engine.set_adapters([])
    yield engine
    engine.set_adapters([])
    for adapter_id in set(engine.loaded_adapters) - before:
        engine.unload_adapter(adapter_id)


@pytest.fixture(scope="module")
def tokens(engine):
    return engine.tokenize(PROMPT)


def test_activate_clear_reactivate_is_exact(clean_engine, loras, tokens):
    eng = clean_engine
    base = eng.logits(tokens)
    eng.load_adapter("one", loras["one"])
    assert np.array_equal(eng.logits(tokens), base), "loading alone must not apply the adapter"
    assert eng.set_adapters([("one", 1.0)]) is True
    assert eng.adapters == [("one", 1.0)]
    with_one = eng.logits(tokens)
    assert np.abs(with_one - base).max() > 0.1, "the random adapter should move the logits clearly"
    assert eng.set_adapters([("one", 1.0)]) is False  # same stack: no change, no reset
    assert eng.set_adapters([]) is True
    assert np.array_equal(eng.logits(tokens), base)
    eng.set_adapters([("one", 1.0)])
    assert np.array_equal(eng.logits(tokens), with_one)


def test_after_a_switch_equals_a_fresh_engine(clean_engine, loras, model_path, tokens):
    """Generate under base, switch, generate the same chat again: no prefix computed under the old stack
    may leak in, so the reply (and the logits) equal those of a brand-new engine with the adapter."""
    eng = clean_engine
    eng.load_adapter("one", loras["one"])
    base_text = eng.generate_text(CHAT, GREEDY)
    base_logits = eng.logits(tokens)
    eng.set_adapters([("one", 1.0)])
    switched_text = eng.generate_text(CHAT, GREEDY)
    switched_logits = eng.logits(tokens)
    with Engine(model_path, n_ctx=eng.n_ctx) as fresh:
        fresh.load_adapter("one", loras["one"])
        fresh.set_adapters([("one", 1.0)])
        fresh_logits = fresh.logits(tokens)
        fresh_text = fresh.generate_text(CHAT, GREEDY)
    assert np.array_equal(switched_logits, fresh_logits)
    assert switched_text == fresh_text
    # the adapter does act (else the equalities above would be trivially true); its first 8 greedy
    # tokens may or may not change with the llama.cpp build, its logits always do
    assert np.abs(switched_logits - base_logits).max() > 0.1, "the adapter should move the logits"
    eng.set_adapters([])  # and back: the base reply again, not the adapter's cached prefix
    assert eng.generate_text(CHAT, GREEDY) == base_text


def test_stack_equals_one_merged_adapter(clean_engine, loras, model_path, tokens, tmp_path):
    """[(one, 1.0), (two, 0.5)] == one adapter A = [A1; A2], B = [B1, 0.5·B2], alpha = r1 + r2.

    Effective scale is user_scale·alpha/rank: the inputs have alpha = rank (scale 1 each); the merged
    adapter has rank r1 + r2 and alpha r1 + r2 (scale 1), with the stack's 0.5 folded into B2."""
    arch, alpha1, t1 = read_lora(loras["one"])
    _, alpha2, t2 = read_lora(loras["two"])
    assert set(t1) == set(t2)
    r1, r2 = next(iter(t1.values()))[0].shape[0], next(iter(t2.values()))[0].shape[0]
    assert (alpha1, alpha2) == (r1, r2)
    merged = {
        name: (np.concatenate([a1, t2[name][0]], axis=0), np.concatenate([b1, 0.5 * t2[name][1]], axis=1))
        for name, (a1, b1) in t1.items()
    }
    merged_path = write_lora_gguf(tmp_path / "merged.gguf", arch, float(r1 + r2), merged)

    eng = clean_engine
    base = eng.logits(tokens)
    eng.load_adapter("one", loras["one"])
    eng.load_adapter("two", loras["two"])
    eng.load_adapter("merged", merged_path)
    eng.set_adapters([("one", 1.0), ("two", 0.5)])
    stacked = eng.logits(tokens)
    eng.set_adapters([("merged", 1.0)])
    single = eng.logits(tokens)
    eng.set_adapters([("one", 1.0)])
    one_only = eng.logits(tokens)

    atol = 2e-3
    assert np.allclose(stacked, single, rtol=0, atol=atol), np.abs(stacked - single).max()
    # Not trivially true: each part moves the logits far more than the tolerance.
    assert np.abs(stacked - base).max() > 100 * atol
    assert np.abs(stacked - one_only).max() > 20 * atol


# --- refusals: each names the file or id, and leaves the engine as it was -----------------------


def _corrupt(tmp_path, model_path, good):
    p = tmp_path / "corrupt.gguf"
    p.write_bytes(b"GGUF" + np.random.default_rng(0).bytes(4096))
    return p


def _truncated(tmp_path, model_path, good):
    p = tmp_path / "truncated.gguf"
    data = good.read_bytes()
    p.write_bytes(data[: len(data) // 2])
    return p


def _model_as_adapter(tmp_path, model_path, good):
    return model_path


def _other_arch(tmp_path, model_path, good):
    arch, alpha, tensors = read_lora(good)
    assert arch != "qwen2"
    return write_lora_gguf(tmp_path / "other-arch.gguf", "qwen2", alpha, tensors)


def _other_shapes(tmp_path, model_path, good):
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(4, 4096)), rng.normal(size=(4096, 4))  # a 7B's q_proj, not 576-wide
    return write_lora_gguf(tmp_path / "other-shapes.gguf", "llama", 4.0, {"blk.0.attn_q.weight": (a, b)})


def _unknown_tensor(tmp_path, model_path, good):
    _, alpha, tensors = read_lora(good)
    a, b = tensors["blk.0.attn_q.weight"]
    return write_lora_gguf(tmp_path / "deep.gguf", "llama", alpha, {"blk.99.attn_q.weight": (a, b)})


BAD_FILES = {
    "corrupt": (_corrupt, "corrupt or truncated"),
    "truncated": (_truncated, "truncated"),
    "model-as-adapter": (_model_as_adapter, "general.type"),
    "other-arch": (_other_arch, "arch qwen2"),
    "other-shapes": (_other_shapes, "blk.0.attn_q.weight"),
    "unknown-tensor": (_unknown_tensor, "blk.99.attn_q.weight: not in the base model"),
}


@pytest.mark.parametrize("kind", sorted(BAD_FILES))
def test_bad_adapter_file_is_refused_by_name(clean_engine, loras, model_path, tokens, tmp_path, kind):
    make, why = BAD_FILES[kind]
    bad = make(tmp_path, model_path, loras["one"])
    eng = clean_engine
    eng.load_adapter("one", loras["one"])
    eng.set_adapters([("one", 1.0)])
    expected = eng.logits(tokens)
    loaded = eng.loaded_adapters
    with pytest.raises(AdapterError) as err:
        eng.load_adapter("bad", bad)
    msg = str(err.value)
    assert str(bad.resolve()) in msg or str(bad) in msg, msg
    assert why in msg, msg
    assert "\n" not in msg
    assert eng.loaded_adapters == loaded
    assert eng.adapters == [("one", 1.0)]
    assert np.array_equal(eng.logits(tokens), expected)


@pytest.mark.parametrize(
    ("stack", "why"),
    [
        ([("nope", 1.0)], "'nope' is not loaded"),
        ([("one", 1.0), ("nope", 0.5)], "'nope' is not loaded"),
        ([("one", 1.0), ("one", 0.5)], "'one' appears twice"),
        ([("one", math.nan)], "'one': scale must be a finite number"),
        ([("one", math.inf)], "'one': scale must be a finite number"),
        ([("one", "high")], "expected (id, scale)"),
    ],
)
def test_bad_stack_is_refused_and_the_stack_is_unchanged(clean_engine, loras, tokens, stack, why):
    eng = clean_engine
    eng.load_adapter("one", loras["one"])
    eng.load_adapter("two", loras["two"])
    eng.set_adapters([("two", 0.5)])
    expected = eng.logits(tokens)
    with pytest.raises(AdapterError) as err:
        eng.set_adapters(stack)
    assert why in str(err.value)
    assert eng.adapters == [("two", 0.5)]
    assert np.array_equal(eng.logits(tokens), expected)


def test_unload_takes_it_off_the_stack_first(clean_engine, loras, tokens):
    eng = clean_engine
    base = eng.logits(tokens)
    eng.load_adapter("one", loras["one"])
    eng.load_adapter("two", loras["two"])
    eng.set_adapters([("two", 1.0)])
    only_two = eng.logits(tokens)
    eng.set_adapters([("one", 1.0), ("two", 1.0)])
    assert eng.unload_adapter("one") is True  # the stack changed
    assert eng.adapters == [("two", 1.0)]
    assert "one" not in eng.loaded_adapters
    assert np.array_equal(eng.logits(tokens), only_two)
    assert eng.unload_adapter("two") is True
    assert eng.adapters == [] and "two" not in eng.loaded_adapters
    assert np.array_equal(eng.logits(tokens), base)
    with pytest.raises(AdapterError, match="'two' is not loaded"):
        eng.unload_adapter("two")
    with pytest.raises(AdapterError, match="'two' is not loaded"):
        eng.set_adapters([("two", 1.0)])


def test_unloading_an_inactive_adapter_keeps_the_stack(clean_engine, loras, tokens):
    eng = clean_engine
    eng.load_adapter("one", loras["one"])
    eng.load_adapter("two", loras["two"])
    eng.set_adapters([("one", 1.0)])
    expected = eng.logits(tokens)
    assert eng.unload_adapter("two") is False
    assert eng.adapters == [("one", 1.0)]
    assert np.array_equal(eng.logits(tokens), expected)


def test_same_id_other_file_is_refused(clean_engine, loras):
    eng = clean_engine
    info = eng.load_adapter("one", loras["one"])
    assert info.rank == 8
    assert eng.load_adapter("one", loras["one"]) == info  # the same file again: a no-op
    with pytest.raises(AdapterError) as err:
        eng.load_adapter("one", loras["two"])
    msg = str(err.value)
    assert "'one' is already loaded" in msg and "two.gguf" in msg
    assert eng.loaded_adapters == {"one": loras["one"].resolve()}
