"""The base fingerprint (llm/fingerprint.py) on real GGUFs: a sibling with the same shapes and vocabulary
but other weights is told apart, a copy is not, and adapters registered under the v1 value keep working."""

from __future__ import annotations

import json
import shutil

import gguf
import pytest

from home.hotload import sync_adapters
from home.stack import upgrade_fingerprints
from llm.fingerprint import base_refusal, same_base
from llm.gguf_meta import (
    _read_model_info_uncached,
    _stat_key,
    check_adapter_fits,
    read_adapter_info,
    read_model_info,
)
from tests.cli_helpers import one_error_line, run_home
from tests.loras import make_random_lora
from vault.layout import Vault
from vault.manifest import AdapterEntry, ManifestStore

# v1 fingerprint of the bundled SmolLM2-135M-Instruct Q4_1 GGUF, computed by the code before v2
# (llm/gguf_meta.py at 7e2a855): adapters registered until then carry exactly this value.
LEGACY_DEFAULT = "58f6b3dbcf8dc50b2b13ea1312f22be3f8f98c3d41b70cfdf9257363c95f63f0"
SIBLING = "Home Test Sibling"


def make_sibling(src, dst) -> None:
    """A copy with the same tensors, shapes and vocabulary but other weights (rows 0 and 1 of
    token_embd swapped: both stay valid quantized rows) and another general.name (same byte length,
    so nothing moves)."""
    shutil.copyfile(src, dst)
    reader = gguf.GGUFReader(str(dst), "r+")
    emb = next(t for t in reader.tensors if t.name == "token_embd.weight")
    emb.data[[0, 1]] = emb.data[[1, 0]]
    name = reader.fields["general.name"].parts[-1]
    name[:] = list(SIBLING.ljust(len(name))[: len(name)].encode())
    reader.data.flush()
    del reader


@pytest.fixture(scope="module")
def models(model_path, tmp_path_factory):
    d = tmp_path_factory.mktemp("models")
    shutil.copyfile(model_path, d / "copy.gguf")
    make_sibling(model_path, d / "sibling.gguf")
    return d / "copy.gguf", d / "sibling.gguf"


def test_a_sibling_differs_a_copy_does_not(model_path, models, tmp_path):
    copy, sibling = models
    orig, dup, sib = read_model_info(model_path), read_model_info(copy), read_model_info(sibling)
    assert sib.name.startswith(SIBLING) and sib.tensors == orig.tensors
    assert dup.fingerprint == orig.fingerprint and dup.legacy_fingerprint == orig.legacy_fingerprint
    assert sib.legacy_fingerprint == orig.legacy_fingerprint  # what v1 could not tell apart
    assert sib.fingerprint != orig.fingerprint and orig.fingerprint != orig.legacy_fingerprint
    # the shapes check alone lets the sibling take the adapter: only the fingerprint refuses it
    check_adapter_fits(sib, read_adapter_info(make_random_lora(model_path, tmp_path / "a.gguf", rank=2)))


def test_legacy_fingerprint_is_the_v1_value(model_path, monkeypatch):
    monkeypatch.setenv("HOME_LLM_CACHE", "")
    fresh = _read_model_info_uncached(model_path, _stat_key(model_path))  # computed now, not recalled
    assert fresh.legacy_fingerprint == LEGACY_DEFAULT
    assert fresh.fingerprint == read_model_info(model_path).fingerprint


def test_same_base_and_the_refusal(model_path, models):
    orig, sib = read_model_info(model_path), read_model_info(models[1])
    assert same_base(None, orig.fingerprint) and same_base("", orig.fingerprint)
    assert same_base(orig.fingerprint, orig.fingerprint) and same_base(LEGACY_DEFAULT, orig.fingerprint)
    assert same_base(LEGACY_DEFAULT, sib.fingerprint)  # v1 records fit both siblings, as they did
    assert not same_base(orig.fingerprint, sib.fingerprint) and not same_base("f" * 64, orig.fingerprint)
    why = base_refusal({"fingerprint": orig.fingerprint, "name": orig.name}, sib.fingerprint, sib.name)
    assert f"'{orig.name}' (fingerprint {orig.fingerprint[:12]})" in why
    assert f"'{sib.name}' (fingerprint {sib.fingerprint[:12]})" in why
    same_name = base_refusal({"fingerprint": orig.fingerprint, "name": sib.name}, sib.fingerprint, sib.name)
    assert "same name, other weights" in same_name


def _entry(vault):
    return json.loads((vault / "manifest.json").read_text())["adapters"]["mine"]


def _set_base(vault, base: dict) -> None:
    path = vault / "manifest.json"
    data = json.loads(path.read_text())
    data["adapters"]["mine"]["base"] = base
    path.write_text(json.dumps(data))


def test_cli_refuses_the_sibling_and_upgrades_a_v1_adapter(model_path, models, tmp_path):
    vault = tmp_path / "v"
    orig, sib = read_model_info(model_path), read_model_info(models[1])
    lora = make_random_lora(model_path, tmp_path / "mine.gguf", rank=2, seed=3)
    added = run_home(vault, "adapters", "add", str(lora), "--name", "mine")
    assert added.returncode == 0, added.stderr
    assert _entry(vault)["base"]["fingerprint"] == orig.fingerprint  # registered under v2

    ask = ("ask", "Hi", "--adapter", "mine", "--max-tokens", "2", "--no-memory")
    refused = run_home(vault, "--model", str(models[1]), *ask)
    assert refused.returncode == 3
    line = one_error_line(refused)
    assert "adapter 'mine'" in line and orig.name in line and sib.name in line
    assert orig.fingerprint[:12] in line and sib.fingerprint[:12] in line

    # registered before v2, for this model: used, and the manifest moves to v2 (the old value kept)
    _set_base(vault, {"fingerprint": LEGACY_DEFAULT, "name": orig.name})
    used = run_home(vault, *ask, "--json")
    assert used.returncode == 0, used.stderr
    assert json.loads(used.stdout)["adapters"] == [{"id": "mine", "scale": 1.0}]
    assert _entry(vault)["base"] == {"fingerprint": orig.fingerprint, "name": orig.name,
                                     "legacy_fingerprint": LEGACY_DEFAULT}
    assert (vault / "manifest.json.bak").is_file()

    # v1 record loaded on the sibling: v1 cannot say which of the two it was made for, so it is
    # accepted as before, but not moved to the sibling's v2 (the recorded name is the other model's)
    _set_base(vault, {"fingerprint": LEGACY_DEFAULT, "name": orig.name})
    sib_used = run_home(vault, "--model", str(models[1]), *ask)
    assert sib_used.returncode == 0, sib_used.stderr
    assert _entry(vault)["base"] == {"fingerprint": LEGACY_DEFAULT, "name": orig.name}


def test_upgrade_moves_only_this_models_v1_entries(engine, model_path, tmp_path):
    vault, info = Vault.open(tmp_path / "v"), read_model_info(model_path)
    make_random_lora(model_path, vault.adapters_dir / "a.gguf", rank=2)
    bases = {"unnamed": {"fingerprint": LEGACY_DEFAULT},
             "named": {"fingerprint": LEGACY_DEFAULT, "name": info.name},
             "sibling's": {"fingerprint": LEGACY_DEFAULT, "name": SIBLING},
             "new": {"fingerprint": info.fingerprint},
             "foreign": {"fingerprint": "f" * 64, "name": "Llama 3 8B"}}
    store = ManifestStore(vault)
    with store.update() as m:
        for ident, base in bases.items():
            m.add_adapter(AdapterEntry(id=ident, name=ident, file="adapters/a.gguf", base=base, kind="style"))
    # before the upgrade the app's hot-load takes every v1 entry (the sibling's too: v1 cannot tell)
    report = sync_adapters(engine, vault, store.read(), set())
    assert sorted(report.loaded) == ["named", "new", "sibling's", "unnamed"]
    assert [i for i, _ in report.skipped] == ["foreign"]
    for ident in report.loaded:
        engine.unload_adapter(ident)

    assert sorted(upgrade_fingerprints(vault, info)) == ["named", "unnamed"]
    after = store.read().adapters
    assert after["unnamed"].base == {"fingerprint": info.fingerprint, "legacy_fingerprint": LEGACY_DEFAULT}
    assert after["sibling's"].base == bases["sibling's"] and after["foreign"].base == bases["foreign"]
    written = vault.manifest_path.stat().st_mtime_ns
    assert upgrade_fingerprints(vault, info) == [] and vault.manifest_path.stat().st_mtime_ns == written
