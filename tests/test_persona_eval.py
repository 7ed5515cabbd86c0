"""trainer/evaluation/attribution.py and trainer/evaluation/persona_eval.py: the classifier and its confusion matrix on the
cast's lines, the perplexity matrix and report files with real (random) adapters on the real model, and
`home data eval`'s refusals. Trained persona adapters are evaluated in tests/test_trainer_per_persona.py."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.cli_helpers import one_error_line, run_home
from tests.loras import make_random_lora
from trainer.data.examples import Example
from trainer.evaluation import attribution
from trainer.evaluation.persona_eval import evaluate_personas, write_report
from vault.layout import Vault
from vault.manifest import AdapterEntry, ManifestStore, now_iso

CAST = Path(__file__).parent / "fixtures" / "personas" / "cast.jsonl"
# lines none of the cast's records contain, in each persona's manner
UNSEEN = {
    "wren-alder": ["Aye. Fog's in. Stay by the stove till it lifts. Mind the tide.",
                   "Galley's cold. Light the stove, then we talk."],
    "barnaby-fitch": ["My dear fellow, what a splendid question, and what a long answer it deserves!",
                      "Dear heart, mirabile dictu, the catalogue arrived at last, splendid news."],
    "juniper-okafor": ["Okay so wait, the motor literally just spun backwards, that's low-key hilarious!",
                       "Wait wait wait, I figured it out! It was the ground wire the whole time!"],
}


def cast_lines() -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for line in CAST.read_text().splitlines():
        rec = json.loads(line)
        out.setdefault(rec["persona"], []).append(rec["output"])
    return out


def test_classifier_tells_the_personas_apart_on_unseen_lines():
    lines = cast_lines()
    labels = sorted(lines)
    model = attribution.train_classifier([t for p in labels for t in lines[p]], [p for p in labels for _ in lines[p]])
    true = [p for p in labels for _ in UNSEEN[p]]
    conf = attribution.confusion(true, attribution.attribute(model, [t for p in labels for t in UNSEEN[p]]), labels)
    assert conf["accuracy"] == 1.0 and conf["matrix"] == [[2, 0, 0], [0, 2, 0], [0, 0, 2]], conf
    with pytest.raises(ValueError, match="at least two personas"):
        attribution.train_classifier(["a", "b"], ["x", "x"])


def test_confusion_counts_and_plot():
    conf = attribution.confusion(["a", "a", "b", "b"], ["a", "b", "b", "b"], ["a", "b"])
    assert conf == {"labels": ["a", "b"], "matrix": [[1, 1], [0, 2]], "accuracy": 0.75,
                    "recall": {"a": 0.5, "b": 1.0}, "n": 4}
    png = attribution.plot_confusions([("replies", conf), ("reference", conf)], "who wrote it?")
    assert png[:4] == b"\x89PNG" and len(png) > 5000


def _examples(persona: str, lines: list[tuple[str, str]]) -> list[Example]:
    return [Example(({"role": "user", "content": q},), a, "jsonl", f"t:{i}", persona=persona)
            for i, (q, a) in enumerate(lines)]


@pytest.mark.slow
def test_matrix_and_report_with_real_adapters_on_the_real_model(tmp_path, engine, model_path):
    vault = Vault.open(tmp_path / "v")
    adapters = {}
    for seed, pid in enumerate(("barnaby-fitch", "wren-alder")):
        aid = f"{pid}-persona-1"
        path = vault.adapters_dir / aid / "adapter.gguf"
        path.parent.mkdir(parents=True)
        make_random_lora(model_path, path, rank=4, seed=seed, scale_std=0.01)
        with ManifestStore(vault).update() as m:
            m.add_adapter(AdapterEntry(id=aid, name=aid, file=f"adapters/{aid}/adapter.gguf", owner=pid,
                                       kind="persona", base={"fingerprint": engine.info.fingerprint},
                                       created=now_iso()))
        adapters[pid] = aid
    heldout = {"barnaby-fitch": _examples("barnaby-fitch", [("Any news?", UNSEEN["barnaby-fitch"][0])]),
               "wren-alder": _examples("wren-alder", [("Any news?", UNSEEN["wren-alder"][0])])}
    lines = {p: v for p, v in cast_lines().items() if p in adapters}
    before = engine.adapters
    report = evaluate_personas(engine, vault, adapters, heldout, lines, samples=1,
                               params=attribution_params())
    assert engine.adapters == before  # the caller's stack is put back
    ppl = report["perplexity"]
    assert ppl["rows"] == ["base", "barnaby-fitch", "wren-alder"] and ppl["cols"] == ["barnaby-fitch", "wren-alder"]
    assert all(isinstance(ppl["matrix"][r][c], float) and ppl["matrix"][r][c] > 1 for r in ppl["rows"]
               for c in ppl["cols"])
    assert ppl["matrix"]["barnaby-fitch"]["wren-alder"] != ppl["matrix"]["base"]["wren-alder"]  # adapters apply
    own = ppl["own"]["wren-alder"]
    assert own["gain_own"] == pytest.approx(own["own"] / own["base"])
    att = report["attribution"]
    assert att["reference"]["accuracy"] == 1.0 and att["generated"]["n"] == 2 and att["chance"] == 0.5
    assert [s["persona"] for s in report["samples"]] == ["barnaby-fitch", "wren-alder"]
    assert all(s["attributed_to"] in adapters for s in report["samples"])

    files = write_report(vault, report)
    saved = json.loads(Path(files["json"]).read_text())
    assert saved["perplexity"]["matrix"] == ppl["matrix"] and saved["files"] == files
    for key in ("confusion", "perplexity"):
        path = Path(files[key])
        assert path.read_bytes()[:4] == b"\x89PNG" and oct(path.stat().st_mode & 0o777) == "0o600"
    assert oct(Path(files["json"]).parent.stat().st_mode & 0o777) == "0o700"


def attribution_params():
    from trainer.evaluation.persona_eval import SAMPLE_PARAMS

    return SAMPLE_PARAMS.merged(max_tokens=8)


def test_data_eval_refusals_are_one_line(tmp_path):
    vault = tmp_path / "v"
    Vault.open(vault)
    lines = [json.loads(x) for x in CAST.read_text().splitlines()]
    train, held = tmp_path / "train.jsonl", tmp_path / "heldout.jsonl"
    train.write_text("".join(json.dumps(r) + "\n" for r in lines[1:]))
    held.write_text("".join(json.dumps(r) + "\n" for r in lines[:1] + lines[10:11]))
    cases = [
        ([str(tmp_path / "nowhere")], "nowhere/heldout.jsonl: no such file"),
        (["--train", str(train), "--heldout", str(held)], "persona 'barnaby-fitch' has no persona adapter"),
        (["--train", str(train), "--heldout", str(held), "--personas", "nobody"],
         "no held-out records for persona 'nobody' (found: barnaby-fitch, wren-alder)"),
        (["--train", str(train), "--heldout", str(held), "--adapter", "wren-alder"], "expected PERSONA=ADAPTER_ID"),
        (["--train", str(train), "--heldout", str(held), "--adapter", "wren-alder=ghost"], "unknown adapter 'ghost'"),
    ]
    with ManifestStore(Vault.open(vault)).update() as m:
        m.add_adapter(AdapterEntry(id="wren-alder-persona-1", name="w", file="adapters/w/adapter.gguf",
                                   owner="wren-alder", kind="persona", created=now_iso()))
    cases.append((["--train", str(train), "--heldout", str(held), "--personas", "wren-alder", "--adapter",
                   "wren-alder=wren-alder-persona-1"], "comparing personas needs at least two; got wren-alder"))
    for args, message in cases:
        proc = run_home(vault, "data", "eval", *args)
        assert proc.returncode == 2, (args, proc.stderr)
        assert message in one_error_line(proc), args
