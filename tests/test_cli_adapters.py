"""`home adapters` and `home personas` through the real CLI: registration, refusals, nothing overwritten."""

from __future__ import annotations

import json

import numpy as np

from llm.lora_gguf import write_lora_gguf
from llm.models import default_model_path
from tests.cli_helpers import one_error_line, run_home
from tests.loras import make_random_lora


def manifest_bytes(vault):
    path = vault / "manifest.json"
    return path.read_bytes() if path.exists() else None


def test_add_list_use_remove(tmp_path):
    vault = tmp_path / "v"
    lora = make_random_lora(default_model_path(), tmp_path / "style.gguf", rank=4, seed=1)
    added = run_home(vault, "adapters", "add", str(lora), "--name", "My Style", "--kind", "style",
                     "--tones", "upbeat", "--scale", "0.7")
    assert added.returncode == 0, added.stderr
    listed = json.loads(run_home(vault, "adapters", "list", "--json").stdout)
    assert [e["id"] for e in listed] == ["my-style"]
    entry = listed[0]
    assert entry["kind"] == "style" and entry["tones"] == ["upbeat"] and entry["scale"] == 0.7
    assert entry["rank"] == 4 and len(entry["sha256"]) == 64 and entry["base"]["fingerprint"]
    stored = vault / entry["file"]
    assert stored.read_bytes() == lora.read_bytes()
    assert oct(stored.stat().st_mode & 0o777) == "0o600"

    asked = run_home(vault, "ask", "Hi", "--adapter", "my-style:0.5", "--max-tokens", "4", "--json")
    assert asked.returncode == 0, asked.stderr
    assert json.loads(asked.stdout)["adapters"] == [{"id": "my-style", "scale": 0.5}]

    again = run_home(vault, "adapters", "add", str(lora), "--name", "my style")  # the name's next version
    assert again.returncode == 0 and "'my-style-2', version 2 of 'my-style'" in again.stdout, again.stderr

    removed = run_home(vault, "adapters", "remove", "my-style", "--all")
    assert removed.returncode == 0, removed.stderr
    assert json.loads(run_home(vault, "adapters", "list", "--json").stdout) == []
    assert not stored.exists()


def test_foreign_adapter_is_refused_and_nothing_changes(tmp_path):
    vault = tmp_path / "v"
    assert run_home(vault, "adapters", "list").returncode == 0
    before = manifest_bytes(vault)
    bad = tmp_path / "foreign.gguf"
    rng = np.random.default_rng(0)
    write_lora_gguf(bad, "llama", 8.0, {"blk.0.attn_q.weight": (rng.normal(size=(4, 4096)), rng.normal(size=(4096, 4)))})
    proc = run_home(vault, "adapters", "add", str(bad), "--name", "foreign")
    assert proc.returncode == 3
    line = one_error_line(proc)
    assert "foreign.gguf" in line and "blk.0.attn_q.weight" in line
    assert manifest_bytes(vault) == before
    assert not (vault / "adapters" / "foreign").exists()

    not_gguf = tmp_path / "notes.gguf"
    not_gguf.write_text("just text")
    proc = run_home(vault, "adapters", "add", str(not_gguf), "--name", "notes")
    assert proc.returncode == 3 and "notes.gguf" in one_error_line(proc)
    assert manifest_bytes(vault) == before


def test_broken_manifest_is_reported_and_kept(tmp_path):
    vault = tmp_path / "v"
    assert run_home(vault, "adapters", "list").returncode == 0
    broken = b'{"schema": 1, "adapters": {'
    (vault / "manifest.json").write_bytes(broken)
    lora = make_random_lora(default_model_path(), tmp_path / "a.gguf", rank=2, seed=2)
    for args in (["adapters", "list"], ["adapters", "add", str(lora), "--name", "x"]):
        proc = run_home(vault, *args)
        assert proc.returncode == 2, proc.stderr
        assert "manifest.json" in one_error_line(proc)
        assert (vault / "manifest.json").read_bytes() == broken


def test_adapter_for_another_base_is_refused_with_the_base_it_needs(tmp_path):
    vault = tmp_path / "v"
    lora = make_random_lora(default_model_path(), tmp_path / "a.gguf", rank=2, seed=3)
    assert run_home(vault, "adapters", "add", str(lora), "--name", "old").returncode == 0
    data = json.loads((vault / "manifest.json").read_text())
    data["adapters"]["old"]["base"] = {"fingerprint": "f" * 64, "name": "Some Other Model 7B"}
    (vault / "manifest.json").write_text(json.dumps(data))
    proc = run_home(vault, "ask", "hi", "--adapter", "old")
    assert proc.returncode == 3
    line = one_error_line(proc)
    assert "Some Other Model 7B" in line and "old" in line


def test_personas_list_import_and_no_overwrite(tmp_path):
    vault = tmp_path / "v"
    listed = json.loads(run_home(vault, "personas", "list", "--json").stdout)
    assert len([p for p in listed if p["builtin"]]) >= 3
    card = tmp_path / "card.json"
    card.write_text(json.dumps({"spec": "chara_card_v2", "spec_version": "2.0", "data": {
        "name": "Captain Brisk", "description": "A brisk sea captain.", "personality": "terse",
        "scenario": "", "first_mes": "Aye.", "mes_example": "", "extensions": {"other_app": {"x": 1}}}}))
    proc = run_home(vault, "personas", "import", str(card))
    assert proc.returncode == 0, proc.stderr
    assert json.loads((vault / "manifest.json").read_text())["personas"]["captain-brisk"]["file"] == \
        "personas/captain-brisk.json"
    shown = json.loads(run_home(vault, "personas", "show", "captain-brisk", "--json").stdout)
    assert shown["data"]["extensions"]["other_app"] == {"x": 1}
    saved = sorted((vault / "personas").glob("*.json"))
    before = [p.read_bytes() for p in saved]
    again = run_home(vault, "personas", "import", str(card))
    assert again.returncode == 2 and "exists" in one_error_line(again)
    assert [p.read_bytes() for p in saved] == before
    asked = run_home(vault, "ask", "Status?", "--persona", "Captain Brisk", "--max-tokens", "4", "--json")
    assert asked.returncode == 0, asked.stderr
    assert json.loads(asked.stdout)["persona"] == "captain-brisk"


def test_doctor_reports_a_broken_config_and_still_checks_the_rest(tmp_path):
    vault = tmp_path / "v"
    run_home(vault, "doctor")  # makes the vault
    (vault / "config.toml").write_text("[backend\nurl = 3\n")
    proc = run_home(vault, "doctor")
    assert proc.returncode == 1 and "Traceback" not in proc.stderr, proc.stdout + proc.stderr
    assert "[FAIL] config" in proc.stdout and "config.toml" in proc.stdout, proc.stdout
    assert "] vault" in proc.stdout and "] manifest" in proc.stdout, proc.stdout  # the checks after it ran


def test_doctor_passes_on_a_fresh_vault(tmp_path):
    proc = run_home(tmp_path / "v", "doctor")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "[ok  ] model" in proc.stdout and "[ok  ] vault" in proc.stdout
    import llama_cpp

    if llama_cpp.llama_supports_gpu_offload():
        assert "GPU offload: built in" in proc.stdout and "31/31 layers on the GPU" in proc.stdout
    else:  # this machine's CPU build: said plainly, and every layer on the CPU
        assert "GPU offload: not built in (CPU build of llama.cpp)" in proc.stdout
        assert "0/31 layers on the GPU (the model runs on the CPU)" in proc.stdout
    assert "[info] gpu" in proc.stdout
    assert any(s in proc.stdout for s in ("MiB VRAM used", "no GPU visible", "Apple GPU"))
