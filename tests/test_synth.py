"""`home data synth` with the real default model on tiny counts: records in the format the trainer reads,
tier counts, the split, resume after an interruption and after a torn last line, and bad input."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from llm.params import GenParams
from tests.cli_helpers import one_error_line, run_home
from trainer.data.sources.jsonl import load_jsonl
from trainer.data.synth.local import LocalGenerator
from trainer.data.synth.run import PARAMS, Plan, read_jsonl, synthesize
from vault.layout import Vault
from vault.personas import Persona, save_persona
from vault.sheets import card_data, read_sheet

SHEETS = Path(__file__).parent / "fixtures" / "sheets"
FAST = PARAMS.merged(max_tokens=40)


def persona(name: str) -> Persona:
    sheet = read_sheet(SHEETS / f"{name}.md")
    return Persona(sheet.id, card_data(sheet))


class Interrupt:
    """The real generator, stopped (as by Ctrl-C) after `n` replies."""

    def __init__(self, generate, n: int) -> None:
        self.generate, self.n, self.label = generate, n, generate.label

    def __call__(self, messages: list[dict], params: GenParams):
        if self.n == 0:
            raise KeyboardInterrupt
        self.n -= 1
        return self.generate(messages, params)


@pytest.mark.slow
def test_resume_continues_where_it_stopped(tmp_path, engine):
    wren = persona("wren-alder")
    plan = Plan(wren, "main", 3, ["Barnaby Fitch", "Juniper Okafor", "Orla"])
    out = tmp_path / "out"
    local = LocalGenerator(engine)
    with pytest.raises(KeyboardInterrupt):
        synthesize([plan], Interrupt(local, 2), out, params=FAST)
    records = out / "personas" / "wren-alder.jsonl"
    attempts = read_jsonl(out / "personas" / "wren-alder.attempts.jsonl")
    assert len(attempts) == 2
    first = records.read_bytes()
    with open(records, "ab") as fh:  # a kill -9 in the middle of a write
        fh.write(b'{"persona": "wren-alder", "outp')

    report = synthesize([plan], local, out, params=FAST)
    [result] = report["personas"]
    assert result["kept"] == 3 and result["new"] == 3 - first.count(b"\n")
    assert records.read_bytes().startswith(first)  # appended to, never rewritten; the torn line is gone
    kept = read_jsonl(records)
    assert len(kept) == 3
    keys = [a["key"] for a in read_jsonl(out / "personas" / "wren-alder.attempts.jsonl")]
    assert keys[:2] == [a["key"] for a in attempts] and len(keys) == len(set(keys))  # nothing asked twice
    assert sum(result["dropped"].values()) == len(keys) - 3

    again = synthesize([plan], local, out, params=FAST)  # at its target: nothing to do
    assert again["personas"][0]["new"] == 0 and len(read_jsonl(records)) == 3
    # the records load as persona examples in the trainer, category → tier
    loaded = load_jsonl(out / "all.jsonl", persona="wren-alder")
    assert len(loaded.examples) == 3 and not loaded.rejected
    ex = loaded.examples[0]
    assert ex.persona == "wren-alder" and ex.tier in ("greeting", "introduction", "personal questions")
    assert ex.context[0]["role"] == "user" and ex.target
    held = read_jsonl(out / "heldout.jsonl")
    assert len(held) == 1 and len(read_jsonl(out / "train.jsonl")) == 2 and held[0] in kept


@pytest.mark.slow
def test_cli_synth_three_personas_by_tier(tmp_path):
    vault = tmp_path / "v"
    v = Vault.open(vault)
    for name in ("wren-alder", "barnaby-fitch", "juniper-okafor"):
        save_persona(v, persona(name))
    tiers = tmp_path / "tiers.toml"
    tiers.write_text('[counts]\nmain = 3\nminor = 1\n[personas]\nwren-alder = "main"\n'
                     '"Barnaby Fitch" = "minor"\njuniper-okafor = "minor"\n')
    proc = run_home(vault, "data", "synth", "--all", "--tiers", str(tiers), "--max-tokens", "40", "--json",
                    timeout=600)
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    got = {r["persona"]: (r["tier"], r["target"], r["kept"]) for r in report["personas"]}
    assert got == {"barnaby-fitch": ("minor", 1, 1), "juniper-okafor": ("minor", 1, 1),
                   "wren-alder": ("main", 3, 3)}
    out = vault / "runs" / "synth"
    rows = read_jsonl(out / "all.jsonl")
    assert sorted(r["persona"] for r in rows) == ["barnaby-fitch", "juniper-okafor"] + ["wren-alder"] * 3
    assert {"persona", "category", "instruction", "input", "output"} <= set(rows[0])
    assert report["generator"].startswith("local:") and report["files"]["counts"]["wren-alder"]["heldout"] == 1
    assert oct(out.stat().st_mode & 0o777) == "0o700" and oct((out / "all.jsonl").stat().st_mode & 0o777) == "0o600"


def test_bad_synth_requests_are_one_line(tmp_path):
    vault = tmp_path / "v"
    save_persona(Vault.open(vault), persona("wren-alder"))
    tiers = tmp_path / "tiers.toml"
    tiers.write_text('[counts]\nmain = 2\n[personas]\nwren-alder = "main"\n')
    other = tmp_path / "other.toml"
    other.write_text('[counts]\nmain = 2\n[personas]\nbarnaby-fitch = "main"\n')
    cases = [
        (["--all", "--tiers", str(other)], "other.toml: personas: 'wren-alder' has no tier"),
        (["--personas", "nobody", "--tiers", str(tiers)], "unknown persona 'nobody'"),
        (["--all", "--tiers", str(tmp_path / "none.toml")], "none.toml: cannot read the tiers file"),
        (["--all", "--tiers", str(tiers), "--model", "x"], "--model NAME names the endpoint's model"),
        (["--all", "--tiers", str(tiers), "--endpoint", "ftp://x"], "--endpoint needs --model"),
        (["--all", "--tiers", str(tiers), "--endpoint", "ftp://x", "--model", "m"], "expected an http:// or https:// URL"),
        (["--all", "--tiers", str(tiers), "--holdout", "0.7"], "--holdout 0.7"),
    ]
    for args, message in cases:
        proc = run_home(vault, "data", "synth", *args)
        assert proc.returncode == 2, (args, proc.stderr)
        assert message in one_error_line(proc), args
    assert not (vault / "runs" / "synth").exists()
