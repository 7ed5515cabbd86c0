"""`home eval --compare MODEL2`: two bases × (base, adapter) on the same held-out examples, through the real
CLI: an adapter trained by the real worker on one base and one registered for the other taken (tiny
random-weight llama and qwen2 GGUFs from llama.cpp's converter, tests/families.py; one training, not two,
to keep the trainer group short), llama.cpp's perplexity, greedy samples for the same prompts, one report
and one PNG. A second run takes both. A bad MODEL2 is one line before anything trains."""

from __future__ import annotations

import json
import math
import os

import pytest

from tests.cli_helpers import one_error_line, run_home
from tests.families import tiny_gguf
from tests.test_trainer_e2e import manifest, write_logs

# As tests/test_families.py: 8 steps at 5e-3 move a tiny model well past verification's guard.
TRAIN = ["--steps", "8", "--rank", "4", "--batch-size", "4", "--lr", "5e-3", "--max-length", "64", "--device", "cpu"]
COLUMNS = ["base1", "base1+adapter", "base2", "base2+adapter"]


def compare(vault, model1, model2, *extra: str):
    return run_home(vault, "--model", str(model1), "--user", "bo", "eval", "--compare", str(model2),
                    "--source", "logs", *TRAIN, *extra, timeout=900)


def register_for(vault, model, data_hash: str, n_val: int) -> str:
    """An adapter for `model` registered as if trained on this data with a time split (a random LoRA: what
    `home eval --compare` takes must be whatever is registered, not something it trained itself)."""
    from llm.gguf_meta import read_model_info
    from tests.loras import make_random_lora
    from vault.layout import Vault
    from vault.manifest import AdapterEntry, ManifestStore

    info, ident = read_model_info(model), "earlier-1"
    path = vault / "adapters" / ident / "adapter.gguf"
    path.parent.mkdir(parents=True)
    make_random_lora(model, path, rank=4, seed=1)
    with ManifestStore(Vault.open(vault)).update() as m:
        m.add_adapter(AdapterEntry(id=ident, name="earlier", file=f"adapters/{ident}/adapter.gguf", kind="style",
                                   base={"fingerprint": info.fingerprint, "name": info.name}, owner="bo", rank=4,
                                   alpha=4.0, dataset={"hash": data_hash, "source": "logs", "split": "time",
                                                       "counts": {"validation": n_val}}))
    return ident


@pytest.mark.trains
def test_four_way_trains_on_one_base_takes_the_registered_on_the_other(tmp_path):
    from llm.gguf_meta import read_model_info
    from trainer.data.sources import load_source
    from vault.layout import Vault

    a, b = tiny_gguf("llama"), tiny_gguf("qwen2")
    vault = tmp_path / "v"
    write_logs(vault)
    data = load_source("logs", None, vault=Vault.open(vault), target="user", user="bo", window=10)
    taken = register_for(vault, b, data.dataset_hash(), 3)
    proc = compare(vault, a, b, "--samples", "2", "--max-tokens", "6", "--json")
    assert proc.returncode == 0, proc.stderr[-3000:]
    rep = json.loads(proc.stdout)
    assert [c["key"] for c in rep["columns"]] == COLUMNS
    fps = [read_model_info(a).fingerprint, read_model_info(b).fingerprint]
    assert [c["fingerprint"] for c in rep["columns"]] == [fps[0], fps[0], fps[1], fps[1]]

    # the model Home runs: trained now with a time split, neither the user's voice nor a router pick;
    # MODEL2: the adapter registered from this data, taken as it is
    entries = manifest(vault)["adapters"]
    trained = rep["columns"][1]["adapter"]
    assert sorted(entries) == sorted([trained, taken]) and rep["columns"][3]["adapter"] == taken
    assert [c["adapter_source"] for c in rep["columns"][1::2]] == ["trained", "registered"]
    e = entries[trained]
    assert e["kind"] == "style" and e["base"]["fingerprint"] == fps[0] and e["verification"]["passed"]
    assert e["dataset"]["split"] == "time" and e["dataset"]["hash"] == data.dataset_hash()
    assert manifest(vault)["users"].get("bo", {}).get("voice_adapter") is None

    # held out: the latest examples, those both adapters left out, the same for all four columns
    n_val = e["dataset"]["counts"]["validation"]
    assert rep["heldout"] and rep["examples"] == min(n_val, 3)
    for col in COLUMNS:
        assert rep["perplexity"][col] > 1 and math.isfinite(rep["perplexity"][col])
    assert rep["perplexity"]["base1+adapter"] < rep["perplexity"]["base1"], rep["perplexity"]  # it learnt the voice
    for side, key in ((0, "base1"), (1, "base2")):
        s = rep["sides"][side]
        for who, col in (("base", key), ("adapter", f"{key}+adapter")):
            bpb = s["loss"][who] * s["scored_tokens"] / (rep["target_bytes"] * math.log(2))
            assert rep["bits_per_byte"][col] == pytest.approx(bpb)
    assert rep["sides"][0]["samples"][1]["prompt"] == rep["sides"][1]["samples"][1]["prompt"]
    assert len(rep["samples"]) == 2 and all(set(s["outputs"]) == set(COLUMNS) for s in rep["samples"])
    assert rep["catchphrase_list"] and rep["catchphrases"]["targets"] > 0  # "Cheers, Bo." recurs
    png = rep["files"]["png"]
    with open(png, "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"
    assert os.stat(png).st_mode & 0o777 == 0o600

    # again: both registered adapters are taken, nothing is trained, the same held-out numbers come back
    runs = sorted(p.name for p in (vault / "runs").iterdir())
    again = compare(vault, a, b, "--samples", "1", "--max-tokens", "4")
    assert again.returncode == 0, again.stderr[-3000:]
    assert again.stdout.count("(registered)") == 2 and "four-way comparison" in again.stdout
    assert sorted(manifest(vault)["adapters"]) == sorted([trained, taken])
    new = sorted(set(p.name for p in (vault / "runs").iterdir()) - set(runs))
    assert len(new) == 1 and new[0].startswith("compare-"), new  # one report, no training run
    second = json.loads((vault / "runs" / new[0] / "report.json").read_text())
    assert second["perplexity"] == pytest.approx(rep["perplexity"])


@pytest.mark.parametrize("case", ["missing", "corrupt", "unsupported"])
def test_a_bad_second_model_is_one_line_and_trains_nothing(tmp_path, case):
    vault = tmp_path / "v"
    write_logs(vault)
    if case == "missing":
        model2, says = tmp_path / "nope.gguf", "nope.gguf"
    elif case == "corrupt":
        model2, says = tmp_path / "broken.gguf", "broken.gguf"
        model2.write_bytes(tiny_gguf("qwen2").read_bytes()[:4096])  # a header cut short
    else:
        model2, says = tiny_gguf("olmo2"), "'olmo2'"
    proc = compare(vault, tiny_gguf("llama"), model2)
    assert proc.returncode == 3, proc.stderr[-2000:]
    line = one_error_line(proc)
    assert "--compare" in line and says in line, line
    assert not (vault / "manifest.json").exists() or manifest(vault)["adapters"] == {}
    assert not any((vault / "runs").iterdir())  # nothing started


def test_compare_asks_for_a_different_model_and_no_adapter(tmp_path):
    vault = tmp_path / "v"
    write_logs(vault)
    a = tiny_gguf("llama")
    same = compare(vault, a, a)
    assert same.returncode == 2 and "the same model" in one_error_line(same)
    named = run_home(vault, "--model", str(a), "eval", "x-1", "--compare", str(tiny_gguf("qwen2")),
                     "--source", "logs")
    assert named.returncode == 2 and "--compare takes no ADAPTER" in one_error_line(named)
