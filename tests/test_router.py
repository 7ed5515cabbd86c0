"""Router decisions on a fixture manifest of real adapter files for the default model: labelled messages
→ expected stack; explicit choices win; nothing fits → base; foreign base and missing files turned down."""

from __future__ import annotations

import dataclasses
import json

import pytest

from home.router import Router, explicit_choice
from home.stack import StackSpec, activate
from llm.errors import AdapterError
from llm.gguf_meta import read_model_info
from llm.models import default_model_path
from tests.loras import make_random_lora
from vault.config import parse_config
from vault.layout import Vault
from vault.manifest import AdapterEntry, Manifest, ManifestStore
from vault.personas import get_persona

CODING = "my python script throws an IndexError when the list is empty"
CODING_STRESSED = "the build is broken and the release is in ten minutes, I'm panicking, fix this python import error"
WRITING = "polish this paragraph for my newsletter"
PLANNING = "help me plan my week"
SAD_CHAT = "I feel so sad and alone tonight"
SMALL_TALK = "do you like jazz or classical music more?"

# message → the stack the router must pick for user "me" with no persona
EXPECTED = [
    (CODING, ["code-helper"]),
    (CODING_STRESSED, ["soother", "code-helper"]),
    (WRITING, ["me-voice-1", "me-voice-2"]),  # the current voice brings its first phase beneath it
    (PLANNING, ["planner"]),
    (SAD_CHAT, ["soother"]),
    (SMALL_TALK, []),
]


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """A vault whose manifest holds ten adapters (real GGUF LoRA files) and a router over it."""
    root = tmp_path_factory.mktemp("route") / "v"
    vault = Vault.open(root)
    info = read_model_info(default_model_path())
    base = {"fingerprint": info.fingerprint, "name": info.name}

    def entry(ident, kind, owner="me", **kw):
        path = vault.adapters_dir / ident / "adapter.gguf"
        path.parent.mkdir()
        make_random_lora(default_model_path(), path, rank=2, n_layers=1, seed=len(ident))
        return AdapterEntry(id=ident, name=ident, file=f"adapters/{ident}/adapter.gguf", base=dict(base),
                            owner=owner, kind=kind, rank=2, alpha=2.0, **kw)

    with ManifestStore(vault).update() as m:
        for e in [
            entry("me-voice-1", "voice"),
            entry("ana-voice", "voice", owner="ana"),
            entry("code-helper", "task", tasks=["coding"]),
            entry("planner", "task", tasks=["planning", "advice"], users=["*"]),
            entry("soother", "style", tones=["stressed", "sad"], users=["*"], scale=0.7),
            entry("sage-persona-1", "persona"),
            entry("loose", "other"),
            entry("foreign", "task", tasks=["coding"], priority=5),
            entry("ghost", "task", tasks=["coding"], priority=5),
        ]:
            m.add_adapter(e)
        m.add_adapter(entry("me-voice-2", "voice", parent="me-voice-1", stack=[{"id": "me-voice-1", "scale": 1.0}]))
        m.adapters["foreign"].base = {"fingerprint": "f" * 64, "name": "Llama 3 8B"}
        m.ensure_user("me")["voice_adapter"] = "me-voice-2"
        m.ensure_user("ana")["voice_adapter"] = "ana-voice"
    (vault.adapters_dir / "ghost" / "adapter.gguf").unlink()
    router = Router.load(vault, parse_config(""))
    return vault, ManifestStore(vault).read(), router, info


def decide(setup, text, **kw):
    vault, manifest, router, info = setup
    kw.setdefault("user", "me")
    manifest = kw.pop("manifest", manifest)
    return router.decide(manifest, text=text, model_fingerprint=info.fingerprint, model_name=info.name, **kw)


def by_id(decision):
    return {c.id: c for c in decision.candidates}


@pytest.mark.parametrize(("text", "stack"), EXPECTED)
def test_labelled_messages_get_the_expected_stack(setup, text, stack):
    d = decide(setup, text)
    assert [i for i, _ in d.stack] == stack, d.reason
    assert not d.explicit and (d.reason.endswith("the base model") == (not stack))


def test_scales_scores_and_reasons(setup):
    d = decide(setup, CODING_STRESSED)
    assert d.task[0] == "coding" and d.tone[0] == "stressed"
    assert d.stack == [("soother", 0.7), ("code-helper", 1.0)]  # the entry's own scale
    c = by_id(d)
    assert c["code-helper"].chosen and c["code-helper"].score == pytest.approx(d.task[1], abs=1e-3)
    assert "task coding" in c["code-helper"].why and "tone stressed" in c["soother"].why
    assert "soother (style" in d.reason and "code-helper (task" in d.reason
    # never chosen, whatever their priority, and the reason says why
    assert c["foreign"].score is None and "made for base 'Llama 3 8B'" in c["foreign"].why
    assert info_name(setup) in c["foreign"].why
    assert c["ghost"].score is None and "adapters/ghost/adapter.gguf is missing" in c["ghost"].why
    assert c["loose"].score is None and "chosen by hand" in c["loose"].why
    assert "writing" in c["me-voice-2"].why and not c["me-voice-2"].fits
    assert "not your current voice (me-voice-2 is)" in c["me-voice-1"].why
    assert "serves ana, not me" in c["ana-voice"].why
    assert "no persona is active" in c["sage-persona-1"].why


def info_name(setup):
    return setup[3].name


def test_a_precomputed_embedding_gives_the_same_decision(setup):
    router = setup[2]
    vector = router.embedder.embed([CODING_STRESSED])[0]
    with_vector, without = decide(setup, CODING_STRESSED, vector=vector), decide(setup, CODING_STRESSED)
    assert with_vector.to_dict() | {"ms": 0} == without.to_dict() | {"ms": 0}
    assert decide(setup, "anything at all", vector=vector).stack == without.stack  # the vector is what counts


def test_voice_dependency_is_explained(setup):
    d = decide(setup, WRITING)
    assert d.stack == [("me-voice-1", 1.0), ("me-voice-2", 1.0)]
    assert "beneath them, as they were trained: me-voice-1" in d.reason


def test_persona_adapter_speaks_and_voice_steps_aside(setup):
    vault = setup[0]
    sage = get_persona(vault, "sage")
    d = decide(setup, PLANNING, persona=sage)
    assert [i for i, _ in d.stack] == ["sage-persona-1", "planner"]
    c = by_id(d)
    assert "persona sage is active" in c["sage-persona-1"].why
    writing = by_id(decide(setup, WRITING, persona="sage"))
    assert "persona sage is speaking, not your voice" in writing["me-voice-2"].why
    quill = by_id(decide(setup, PLANNING, persona="quill"))
    assert "speaks for persona sage, not quill" in quill["sage-persona-1"].why


def test_other_user_gets_their_own_voice(setup):
    d = decide(setup, WRITING, user="ana")
    assert d.stack == [("ana-voice", 1.0)]
    c = by_id(d)
    assert "serves me, not ana" in c["me-voice-2"].why and "serves me, not ana" in c["code-helper"].why
    assert [i for i, _ in decide(setup, PLANNING, user="ana").stack] == ["planner"]  # users: ["*"]


def test_explicit_choice_wins(setup):
    vault = setup[0]
    d = decide(setup, CODING, explicit=[StackSpec("loose", 0.5)])
    assert d.stack == [("loose", 0.5)] and d.explicit and d.reason == "explicit choice wins: loose:0.5"
    assert by_id(d)["code-helper"].fits  # what the router would have picked is still recorded
    base = decide(setup, CODING, explicit=explicit_choice(None, [], no_adapters=True))
    assert base.stack == [] and "no adapters (the base model)" in base.reason
    assert decide(setup, CODING, explicit=[StackSpec("me-voice-2")]).stack == [("me-voice-1", 1.0),
                                                                               ("me-voice-2", 1.0)]
    with pytest.raises(AdapterError, match="made for base 'Llama 3 8B'"):
        decide(setup, CODING, explicit=[StackSpec("foreign")])
    # a persona card's adapters are an explicit choice too; a card with none leaves it to the router
    sage = get_persona(vault, "sage")
    assert explicit_choice(sage) is None
    card = dataclasses.replace(sage, data={**sage.data, "extensions": {"home": {"adapters": [{"id": "loose"}]}}})
    assert explicit_choice(card) == [StackSpec("loose")]
    assert explicit_choice(card, ["code-helper:0.3"]) == [StackSpec("code-helper", 0.3)]


def test_settings_limit_priority_and_disable(setup):
    vault, manifest, router, info = setup
    one = Router(dataclasses.replace(router.settings, max_adapters=1), router.embedder,
                 router.task_classifier, router.tone_classifier, vault.root)
    d = one.decide(manifest, user="me", text=CODING_STRESSED, model_fingerprint=info.fingerprint,
                   model_name=info.name)
    assert d.stack == [("code-helper", 1.0)] and "the stack is full" in by_id(d)["soother"].why

    changed = Manifest.from_dict(json.loads(json.dumps(manifest.to_dict())), "copy")
    changed.adapters["planner"].tasks = ["coding"]
    changed.adapters["planner"].priority = 2
    d = decide(setup, CODING, manifest=changed)
    assert [i for i, _ in d.stack] == ["planner"]
    assert "planner scored higher for the task slot" in by_id(d)["code-helper"].why

    off = Router(dataclasses.replace(router.settings, enabled=False), router.embedder,
                 router.task_classifier, router.tone_classifier, vault.root)
    d = off.decide(manifest, user="me", text=CODING, model_fingerprint=info.fingerprint, model_name=info.name)
    assert d.stack == [] and "router disabled" in d.reason


def test_a_pick_whose_dependency_cannot_load_is_dropped(setup):
    vault, manifest, router, info = setup
    changed = Manifest.from_dict(json.loads(json.dumps(manifest.to_dict())), "copy")
    changed.adapters["code-helper"].stack = [{"id": "foreign", "scale": 1.0}]
    d = decide(setup, CODING, manifest=changed)
    assert d.stack == [] and "its stack cannot load" in by_id(d)["code-helper"].why


def test_decision_is_json_and_activates_on_the_real_engine(setup, engine):
    vault, manifest, _, _ = setup
    d = decide(setup, CODING_STRESSED)
    record = json.loads(json.dumps(d.to_dict()))
    assert set(record) >= {"task", "tone", "candidates", "chosen", "reason"}
    assert record["chosen"] == [{"id": "soother", "scale": 0.7}, {"id": "code-helper", "scale": 1.0}]
    assert record["task"]["label"] == "coding" and 0 < record["task"]["confidence"] <= 1
    assert {c["id"] for c in record["candidates"]} == set(manifest.adapters)
    assert all(set(c) >= {"id", "score", "why"} for c in record["candidates"])
    before = engine.logits(engine.tokenize("Hello there"))[-1]
    try:
        activate(engine, vault, manifest, d.stack)
        assert engine.adapters == d.stack
        assert abs(engine.logits(engine.tokenize("Hello there"))[-1] - before).max() > 1e-3
    finally:
        engine.set_adapters([])


def test_the_task_class_picks_the_mode_and_scales_the_persona_adapter(setup):
    """Dual mode (issue 14 item 2): a task → focused (the persona adapter turned down, the prompt line
    recorded), chit-chat → character (full scale); a pin wins; the record says which and why."""
    sage = get_persona(setup[0], "sage")
    task = decide(setup, CODING, persona=sage)
    assert task.mode.name == "focused" and "task coding" in task.mode.reason and not task.mode.pinned
    assert dict(task.stack)["sage-persona-1"] == pytest.approx(0.6)
    assert task.to_dict()["mode"]["scaled"] == ["sage-persona-1"] and "directly" in task.to_dict()["mode"]["system"]
    chat = decide(setup, SMALL_TALK, persona=sage)
    assert chat.mode.name == "character" and dict(chat.stack)["sage-persona-1"] == 1.0 and chat.mode.system == ""
    pinned = decide(setup, CODING, persona=sage, mode="character")
    assert pinned.mode.pinned and pinned.mode.name == "character" and dict(pinned.stack)["sage-persona-1"] == 1.0
    assert json.loads(json.dumps(pinned.to_dict()))["mode"]["reason"] == "pinned by the user (character)"
    fact = decide(setup, "How many legs does a spider have?", persona=sage)  # the chat class, a question with an answer
    assert fact.task[0] == "chat" and fact.mode.name == "focused" and "about the world" in fact.mode.reason
