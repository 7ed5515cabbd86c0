"""llm.models: the default model, local paths, Hugging Face references (offline)."""

from __future__ import annotations

import pytest

from llm.errors import ModelError
from llm.models import default_model_path, resolve_model


def test_default_model_is_a_gguf_file():
    path = default_model_path()
    assert path.is_file() and path.suffix == ".gguf"
    assert path.read_bytes()[:4] == b"GGUF"
    assert path.stat().st_size > 50_000_000  # the real 135M model, not a stub


def test_resolve_none_and_path(model_path):
    assert resolve_model(None) == model_path
    assert resolve_model(str(model_path)) == model_path
    assert resolve_model(model_path) == model_path


def test_missing_path_is_a_model_error(tmp_path):
    missing = tmp_path / "nope.gguf"
    with pytest.raises(ModelError, match=r"model not found: .*nope\.gguf \(give a \.gguf path or owner/repo/file\.gguf\)"):
        resolve_model(str(missing))


def test_unknown_ref_is_a_model_error():
    with pytest.raises(ModelError, match="model not found: tinyllama"):
        resolve_model("tinyllama")


def test_non_gguf_file_is_refused_by_name(tmp_path):
    bogus = tmp_path / "notes.gguf"
    bogus.write_text("hello, I am not a model")
    with pytest.raises(ModelError, match=r"notes\.gguf: not a GGUF model"):
        resolve_model(str(bogus))
    with pytest.raises(ModelError, match="not a file"):
        resolve_model(str(tmp_path))


@pytest.mark.parametrize(
    "ref",
    ["nobody-x/no-such-repo/model.Q4_K_M.gguf", "hf://nobody-x/no-such-repo/model.gguf", "nobody-x/no-such-repo:model.gguf"],
)
def test_hf_ref_offline_is_one_clear_line(ref, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))  # an empty cache: nothing to fall back on
    with pytest.raises(ModelError) as err:
        resolve_model(ref)
    msg = str(err.value)
    assert msg.startswith(f"cannot fetch model {ref}: ") and "offline" in msg
    assert "\n" not in msg and "Traceback" not in msg
