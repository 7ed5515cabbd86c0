"""`home cache list/clean`: training's dequantized base copies, built by the trainer's own code from two tiny
GGUFs (real folders, seconds), listed with what they take; `clean` removes the copy whose model file is
gone and a crashed build's temp folder, with --older-than the unused one too, and never the copy a live
process holds (the same shared lock `dequantized_base` takes for a training)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time

from tests.cli_helpers import REPO, run_home
from tests.families import tiny_gguf

BUILD = ("import sys\nfrom trainer.worker.base_cache import dequantized_base\n"
         "for src in sys.argv[1:]: print(dequantized_base(src, 'float32'))")
HOLD = ("import sys\nfrom pathlib import Path\nfrom trainer.protocol.base_copies import hold\n"
        "hold(Path(sys.argv[1])); print('held', flush=True); sys.stdin.read()")


def _listed(vault) -> dict:  # noqa: ANN001
    out = run_home(vault, "cache", "list", "--json")
    assert out.returncode == 0, out.stderr
    return {c["folder"]: c for c in json.loads(out.stdout)}


def test_cache_clean_removes_copies_of_gone_models_and_unused_ones_never_one_in_use(tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    monkeypatch.setenv("HOME_CACHE", str(cache))
    env = {**os.environ, "HOME_CACHE": str(cache), "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    (tmp_path / "models").mkdir()
    gone, kept = tmp_path / "models" / "gone.gguf", tmp_path / "models" / "kept.gguf"
    shutil.copyfile(tiny_gguf("llama"), gone)
    shutil.copyfile(tiny_gguf("qwen2"), kept)
    built = subprocess.run([sys.executable, "-c", BUILD, str(gone), str(kept)], cwd=REPO, env=env,
                           capture_output=True, text=True, timeout=600)
    assert built.returncode == 0, built.stderr
    a, b = (p.strip().rsplit("/", 1)[-1] for p in built.stdout.split())
    month_ago = time.time() - 30 * 86400
    os.utime(cache / "bases" / b / "home-cache.json", (month_ago, month_ago))  # last used a month ago
    gone.unlink()
    dead = subprocess.Popen(["true"])  # a pid no process has any more
    dead.wait()
    crashed = cache / "bases" / f".{b}.{dead.pid}.tmp"
    crashed.mkdir()
    (crashed / "model.safetensors").write_bytes(b"x" * 1000)
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(cache / "bases" / a)], cwd=REPO, env=env,
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    vault = tmp_path / "v"
    try:
        assert holder.stdout.readline() == "held\n"
        listed = _listed(vault)
        assert set(listed) == {a, b, crashed.name}
        assert listed[a]["in_use"] and not listed[a]["source_exists"] and "is gone" in listed[a]["removable"]
        assert listed[b]["source"] == str(kept) and listed[b]["removable"] is None
        assert listed[b]["bytes"] > 100_000 and listed[b]["dtype"] == "float32"
        assert time.time() - listed[b]["last_used"] > 29 * 86400

        out = run_home(vault, "cache", "clean")
        assert out.returncode == 0, out.stderr
        assert f"{a}: kept, in use by a running training" in out.stdout
        assert "1 copies removed" in out.stdout and not crashed.exists()
        assert (cache / "bases" / a / "model.safetensors").is_file() and (cache / "bases" / b).is_dir()

        dry = run_home(vault, "cache", "clean", "--older-than", "7", "--dry-run")
        assert f"{b} (unused for 30 days): would free" in dry.stdout, dry.stdout
        assert (cache / "bases" / b).is_dir()
        out = run_home(vault, "cache", "clean", "--older-than", "7")
        assert f"{b} (unused for 30 days): freed" in out.stdout, out.stdout
        assert not (cache / "bases" / b).exists() and (cache / "bases" / a).is_dir()
    finally:
        holder.kill()
        holder.wait()
    out = run_home(vault, "cache", "clean")  # its holder is gone
    assert f"{a} (its model {gone} is gone): freed" in out.stdout, out.stdout
    assert not (cache / "bases" / a).exists()
    assert _listed(vault) == {}


def test_a_negative_age_is_one_line(tmp_path):
    from tests.cli_helpers import one_error_line

    out = run_home(tmp_path / "v", "cache", "clean", "--older-than", "-1")
    assert one_error_line(out) == "home: error: --older-than -1: expected 0 or more days"
