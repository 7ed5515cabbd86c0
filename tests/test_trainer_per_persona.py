"""`home train --source jsonl FILE --per-persona`: one adapter per persona in one run, registered with the
persona as owner and kind persona, the persona cards pointing at them; then `home data eval` on lines
none of them was trained on. Also the request checks and how a card's adapter stack is updated."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.cli_helpers import one_error_line, run_home
from tests.families import tiny_gguf
from trainer.worker.per_persona import point_persona
from vault.layout import Vault
from vault.manifest import AdapterEntry, ManifestStore, now_iso
from vault.personas import Persona, get_persona, save_persona
from vault.sheets import card_data, read_sheet

FIXTURES = Path(__file__).parent / "fixtures"
CAST = FIXTURES / "personas" / "cast.jsonl"
IDS = ("wren-alder", "barnaby-fitch", "juniper-okafor")


def make_personas(vault_root: Path) -> Vault:
    vault = Vault.open(vault_root)
    for pid in IDS:
        sheet = read_sheet(FIXTURES / "sheets" / f"{pid}.md")
        save_persona(vault, Persona(sheet.id, card_data(sheet)))
    return vault


def split_cast(tmp_path: Path) -> tuple[Path, Path]:
    """Held out: each persona's first advice line; trained on: the other nine."""
    rows = [json.loads(line) for line in CAST.read_text().splitlines()]
    held, seen = [], set()
    for r in rows:
        if r["category"] == "advice" and r["persona"] not in seen:
            seen.add(r["persona"])
            held.append(r)
    train = [r for r in rows if r not in held]
    paths = tmp_path / "train.jsonl", tmp_path / "heldout.jsonl"
    for path, part in zip(paths, (train, held), strict=True):
        path.write_text("".join(json.dumps(r) + "\n" for r in part))
    return paths


@pytest.mark.slow
def test_one_adapter_per_persona_then_eval_across_personas(tmp_path):
    # A tiny random Llama with the default model's tokenizer: what is tested (one base load, an adapter per
    # persona, registration, cards, the cross-persona eval) is the same for any model, at a fraction of the time.
    model = ["--model", str(tiny_gguf("llama"))]
    vault_root = tmp_path / "v"
    vault = make_personas(vault_root)
    train, heldout = split_cast(tmp_path)
    proc = run_home(vault_root, *model, "train", "--source", "jsonl", str(train), "--per-persona", "--steps", "3",
                    "--rank", "4", "--batch-size", "4", "--max-length", "96", "--lr", "3e-3", "--device", "cpu", "--json",
                    timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    events = [json.loads(line) for line in proc.stdout.splitlines() if line.strip()]
    opened = [e for e in events if e["event"] == "phase" and e.get("name") == "persona"]
    assert [e["persona"] for e in opened] == list(IDS)  # the file's order
    assert [(e["index"], e["count"]) for e in opened] == [(1, 3), (2, 3), (3, 3)]
    steps = [e for e in events if e["event"] == "step"]
    assert {e["persona"] for e in steps} == set(IDS) and [e["step"] for e in steps] == [1, 2, 3] * 3
    assert sum(e["event"] == "phase" and e.get("name") == "load" for e in events) == 1  # the base, once
    registered = [e for e in events if e["event"] == "registered"]
    assert [e["id"] for e in registered] == [f"{p}-persona-1" for p in IDS]
    done = events[-1]
    assert done["event"] == "done" and done["id"] == ", ".join(f"{p}-persona-1" for p in IDS)

    manifest = ManifestStore(vault).read()
    for pid in IDS:
        entry = manifest.adapters[f"{pid}-persona-1"]
        assert (entry.owner, entry.kind) == (pid, "persona")
        assert entry.verification["passed"] and entry.dataset["counts"]["examples"] == 9
        assert entry.metrics["perplexity"]["adapter"] < entry.metrics["perplexity"]["base"]
        assert get_persona(vault, pid).home["adapters"] == [{"id": f"{pid}-persona-1", "scale": 1.0}]
    # the persona brings its adapter along, as its hotkey does in the app
    asked = run_home(vault_root, *model, "ask", "Who are you?", "--persona", "barnaby-fitch", "--max-tokens", "8",
                     "--json")
    assert asked.returncode == 0, asked.stderr
    assert json.loads(asked.stdout)["adapters"] == [{"id": "barnaby-fitch-persona-1", "scale": 1.0}]

    proc = run_home(vault_root, *model, "data", "eval", "--train", str(train), "--heldout", str(heldout),
                    "--samples", "1", "--max-tokens", "16", "--json", timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(proc.stdout)
    ppl = report["perplexity"]
    assert ppl["rows"] == ["base", *sorted(IDS)] and ppl["cols"] == sorted(IDS)
    for pid in IDS:  # each adapter fits its persona's unseen line better than the base does
        assert ppl["own"][pid]["gain_own"] < 1, ppl["own"]
    att = report["attribution"]
    assert att["generated"]["n"] == 3 and att["generated"]["labels"] == sorted(IDS)
    assert att["reference"]["accuracy"] == 1.0  # the classifier tells the unseen reference lines apart
    for key in ("confusion", "perplexity"):
        assert Path(report["files"][key]).read_bytes()[:4] == b"\x89PNG"
    print("per-persona eval:", json.dumps({"own": ppl["own"], "generated_accuracy": att["generated"]["accuracy"]}))


@pytest.mark.parametrize("args, message", [
    (["--source", "logs", "--per-persona"], "source: --per-persona trains from persona records"),
    (["--source", "jsonl", str(CAST), "--personas", "wren-alder"], "--personas picks personas for --per-persona"),
    (["--source", "jsonl", str(CAST), "--per-persona", "--two-phase"], "--two-phase is not available"),
    (["--source", "jsonl", str(CAST), "--per-persona", "--name", "x"], "names each adapter <persona>-persona"),
    (["--source", "jsonl", str(CAST), "--per-persona", "--target", "persona", "wren-alder"], "trains every persona"),
])
def test_bad_per_persona_requests_are_one_line(tmp_path, args, message):
    proc = run_home(tmp_path / "v", "train", *args)
    assert proc.returncode == 2
    assert message in one_error_line(proc)
    assert not list((tmp_path / "v" / "runs").glob("personas-*"))


def test_a_persona_the_file_lacks_is_refused_before_training(tmp_path):
    proc = run_home(tmp_path / "v", "train", "--source", "jsonl", str(CAST), "--per-persona", "--personas",
                    "wren-alder,nobody", "--device", "cpu", timeout=300)
    assert proc.returncode == 2
    line = [ln for ln in proc.stderr.splitlines() if ln.startswith("home: error:")][-1]
    assert f"{CAST}: no records for persona 'nobody'; personas found: wren-alder (10)" in line


def _register(vault: Vault, adapter_id: str, owner: str, kind: str = "persona") -> None:
    with ManifestStore(vault).update() as m:
        m.add_adapter(AdapterEntry(id=adapter_id, name=adapter_id, file=f"adapters/{adapter_id}/adapter.gguf",
                                   owner=owner, kind=kind, created=now_iso()))


def test_pointing_a_persona_replaces_its_old_adapter_and_keeps_the_rest(tmp_path):
    vault = make_personas(tmp_path / "v")
    for aid, owner, kind in (("wren-alder-persona-1", "wren-alder", "persona"), ("calm-style", "me", "style"),
                             ("wren-alder-persona-2", "wren-alder", "persona")):
        _register(vault, aid, owner, kind)
    card = get_persona(vault, "wren-alder")
    card.data["extensions"]["home"]["adapters"] = [{"id": "wren-alder-persona-1", "scale": 1.0},
                                                   {"id": "calm-style", "scale": 0.5},
                                                   {"id": "wren-alder-persona-0", "scale": 1.0}]  # long gone
    save_persona(vault, card)
    assert point_persona(vault, "wren-alder", "wren-alder-persona-2") == str(vault.personas_dir / "wren-alder.json")
    assert get_persona(vault, "wren-alder").home["adapters"] == [{"id": "wren-alder-persona-2", "scale": 1.0},
                                                                 {"id": "calm-style", "scale": 0.5}]
    assert point_persona(vault, "nobody", "x") is None
