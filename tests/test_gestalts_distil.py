"""home.distil: the real default model (SmolLM2-135M, no adapters) distils gestalts from a conversation,
and the grounding filter keeps only what the user's own turns support.

One distillation of the fixture conversation (module fixture) is shared by the tests; it is greedy, so
the same build gives the same candidates every run.
"""

from __future__ import annotations

import threading
import time

import pytest

from home.distil import PARAMS, check, clean, distil, distil_messages, distil_session, fact_turns, kind_of
from tests.loras import make_random_lora
from vault import gestalts as gs
from vault.layout import Vault
from vault.logs import ConversationLog

# (role, text): clear facts (name, city, job, a preference, a dislike), noise, and a later move that
# supersedes the city.
CONVERSATION = [
    ("user", "Hi! My name is Maya Okafor."),
    ("assistant", "Nice to meet you, Maya! I live in the cloud."),
    ("user", "I live in Berlin, in a flat in Kreuzberg."),
    ("assistant", "Berlin is a great city."),
    ("user", "Can you suggest a quick pasta recipe?"),
    ("assistant", "Try aglio e olio: garlic, oil, chili."),
    ("user", "I work as a nurse at the children's hospital, mostly night shifts."),
    ("assistant", "That sounds demanding."),
    ("user", "I prefer tea over coffee, especially green tea."),
    ("user", "thanks!"),
    ("user", "Today I had a sandwich for lunch."),
    ("user", "Honestly I hate loud restaurants."),
    ("user", "I think the movie was ok but too long."),
    ("user", "Big news: I've moved to Lisbon, so I live there now."),
    ("assistant", "Congratulations on the move!"),
    ("user", "I don't drink alcohol anymore."),
]
PARAMS_TEST = PARAMS.merged(max_tokens=24)  # every fact here is under 16 tokens; a runaway is cut short


def write_log(vault: Vault, session: str = "s1") -> list[dict]:
    log = ConversationLog.create(vault, session)
    return [log.append({"role": role, "text": text, "user": "maya", "time": f"2026-01-{5 + n:02d}T09:00:00.000Z"})
            for n, (role, text) in enumerate(CONVERSATION)]


@pytest.fixture(scope="module")
def distilled(tmp_path_factory, engine, model_path):
    """The conversation distilled once, with a strong random adapter active on the engine beforehand."""
    vault = Vault.open(tmp_path_factory.mktemp("distil") / "v")
    records = write_log(vault)
    lora = make_random_lora(model_path, tmp_path_factory.mktemp("lora") / "strong.gguf", scale_std=0.08, seed=3)
    engine.load_adapter("strong", lora)
    try:
        msgs = [{"role": "user", "content": "I live in Berlin."}]
        base = engine.generate_text(msgs, PARAMS_TEST)
        engine.set_adapters([("strong", 1.0)])
        adapted = engine.generate_text(msgs, PARAMS_TEST)
        result = distil_session(engine, vault, "maya", records, params=PARAMS_TEST)
        stack_after = engine.adapters
    finally:
        engine.unload_adapter("strong")
    return vault, records, result, (base, adapted, stack_after)


def by_source(result) -> dict[str, str]:
    return {g.sources[0]: g.text for g in result.new}


@pytest.mark.slow  # one real distillation (~9 model calls) shared by these tests
def test_only_the_users_first_person_statements_are_read(distilled):
    _, records, result, _ = distilled
    asked = [c.source for c in result.candidates]
    ids = {text: r["id"] for r, (_, text) in zip(records, CONVERSATION, strict=True)}
    assert ids["Can you suggest a quick pasta recipe?"] not in asked  # a question
    assert ids["thanks!"] not in asked and ids["Today I had a sandwich for lunch."] not in asked  # chit-chat, today
    assert all(r["role"] == "user" for r in records if r["id"] in asked)
    assert result.turns == 11 and result.asked == len(asked) == 8


@pytest.mark.slow  # one real distillation (~9 model calls) shared by these tests
def test_grounded_facts_survive_with_their_source_turn_and_time(distilled):
    vault, records, result, _ = distilled
    found = by_source(result)
    print("distilled:", result.summary())
    for c in result.candidates:
        print(f"  {c.source:6} {c.raw!r:60} {c.reason or 'kept'}")
    ids = {text: r for r, (_, text) in zip(records, CONVERSATION, strict=True)}
    expect = {"My name is Maya": "maya", "I live in Berlin": "berlin", "I work as a nurse": "nurse",
              "I prefer tea": "tea", "moved to Lisbon": "lisbon"}
    hits = 0
    for said, word in expect.items():
        rec = next(r for text, r in ids.items() if said in text)
        hits += word in found.get(rec["id"], "").casefold()
    assert hits >= 4, found  # the five clear facts, at most one lost to the small model
    assert len(result.new) <= 6 and len(result.grounded) == len(result.new)  # little else came through
    for g in result.new:
        source = next(r for r in records if r["id"] == g.sources[0])
        assert g.said == source["time"] and check(g.text, source["text"]) is None
        assert g.path.is_file() and gs.read(g.path) == g
    movie = next(r for text, r in ids.items() if "movie" in text)
    assert movie["id"] not in found  # whatever the model made of it, it was not what the user said


@pytest.mark.slow  # one real distillation (~9 model calls) shared by these tests
def test_the_base_model_was_used_and_the_engine_left_on_it(distilled):
    _, _, result, (base, adapted, stack_after) = distilled
    assert base != adapted  # the adapter really changes what the model writes
    # each call set [] with its decode (base != adapted, and the Berlin reply below is the base model's); the
    # calls were aside, so the engine reports the chat's stack, the one set last, for the chat's next turn
    assert stack_after == [("strong", 1.0)]
    berlin = next(c for c in result.candidates if "Berlin" in c.turn)
    assert berlin.raw == "The user lives in Berlin." or "berlin" in berlin.raw.casefold()


@pytest.mark.slow  # 6 short greedy calls
def test_another_threads_stack_never_colours_a_distillation(tmp_path, engine, model_path):
    """A thread sets an adapter stack over and over while distil runs; every call still decodes on the
    base model. (Before: the stack was cleared once, then each call took the engine lock on its own, so
    calls ran under the other thread's adapter.)"""
    vault = Vault.open(tmp_path / "v")
    turns = fact_turns(write_log(vault), "maya")[:2]
    engine.load_adapter("hammer", make_random_lora(model_path, tmp_path / "hammer.gguf", scale_std=0.08, seed=3))
    stop = threading.Event()

    def hammer() -> None:
        while not stop.is_set():
            engine.set_adapters([("hammer", 1.0)])
            time.sleep(0.001)

    def replies(stack) -> dict[str, str]:
        return {r["id"]: "".join(engine.stream(distil_messages(r["text"]), PARAMS_TEST, adapters=stack)) for r in turns}

    try:
        base, adapted = replies([]), replies([("hammer", 1.0)])
        thread = threading.Thread(target=hammer)
        thread.start()
        try:
            result = distil_session(engine, vault, "maya", turns, params=PARAMS_TEST)
        finally:
            stop.set()
            thread.join()
    finally:
        engine.unload_adapter("hammer")
    assert base != adapted  # the adapter changes what the model writes, so a coloured call would show
    assert {c.source: c.raw for c in result.candidates} == base


@pytest.mark.slow  # one real distillation (~9 model calls) shared by these tests
def test_add_only_duplicates_and_forgotten_facts_are_not_written_again(distilled, engine):
    vault, records, result, _ = distilled
    before = {p.name: p.read_bytes() for p in (vault.gestalts_dir / "maya").glob("*.md")}
    berlin = next(g for g in result.new if "berlin" in g.text.casefold())
    gs.forget_gestalt(vault, "maya", berlin.id)
    again = [r for r in records if "Berlin" in r["text"] or "tea" in r["text"]]
    assert distil(engine, vault, "maya", again, params=PARAMS_TEST) == []
    after = {p.name: p.read_bytes() for p in (vault.gestalts_dir / "maya").glob("*.md")}
    assert after == {k: v for k, v in before.items() if k != berlin.path.name}


@pytest.mark.slow  # one real distillation (~9 model calls) shared by these tests
def test_the_newer_city_ranks_first_in_memory(distilled, tmp_path):
    from vault.memory import MemoryStore, sync_gestalts

    vault, _, result, _ = distilled
    new = Vault.open(tmp_path / "v")  # a copy: the shared vault lost Berlin in another test
    gs.add_gestalts(new, "maya", [gs.Draft(g.text, g.kind, g.sources, g.said) for g in result.new])
    with MemoryStore.open(new) as store:
        assert sync_gestalts(new, store).added == len(result.new)
        hits = [h.text for h in store.search("where does the user live?", k=3, user="maya")]
    cities = [t for t in hits if "Lisbon" in t or "Berlin" in t]
    assert cities and "Lisbon" in cities[0], hits


@pytest.mark.parametrize("fact, turn, reason", [
    ("The user lives in Berlin.", "I live in Berlin, in a flat in Kreuzberg.", None),
    ("The user's dog is a beagle.", "My dog is called Biscuit, he's a beagle.", None),
    ("The user doesn't drink alcohol.", "I don't drink alcohol anymore.", None),
    ("The user loves dogs.", "My dog is called Biscuit, he's a beagle.", "ungrounded: loves not in the turn"),
    ("The user has a weakness for loud restaurants.", "Honestly I hate loud restaurants.",
     "ungrounded: weakness not in the turn"),
    ("The user drinks alcohol.", "I don't drink alcohol anymore.", "ungrounded: negation differs from the turn"),
    ("The user loves hiking in the mountains.", "I love hiking in the mountains.", "copied: an example answer"),
    ('The user said: "I live in Berlin."', "I live in Berlin.", "form: describes the message, not the user"),
    ("Berlin is a city.", "I live in Berlin.", "form: not a sentence about the user"),
    ("The user has lived in Porto for years.", "My sister Ana has lived in Porto for years.",
     "ungrounded: the turn is about the user's sister"),
    ("The user is a movie.", "I think the movie was ok but too long.",
     "ungrounded: the turn does not say what the user is"),
    ("The user is Maya Okafor.", "Hi! My name is Maya Okafor.", None),
])
def test_the_grounding_filter(fact, turn, reason):
    assert check(fact, turn) == reason


def test_parsing_kinds_and_which_turns_are_read():
    assert clean("None") is None and clean("  - The user likes figs") == "The user likes figs."
    assert kind_of("The user prefers green tea.") == "preference" and kind_of("The user is a nurse.") == "fact"
    recs = [{"id": "s:1", "role": "user", "text": "I live in Porto."},
            {"id": "s:2", "role": "user", "text": "I live in Faro.", "partial": True},
            {"id": "s:3", "role": "user", "text": "My PIN is 4921."},
            {"id": "s:4", "role": "event", "event": "exclude", "target": "s:3", "text": ""},
            {"id": "s:5", "role": "user", "text": "I like figs.", "user": "theo"},
            {"id": "s:6", "role": "assistant", "text": "I live in the cloud."},
            {"id": "s:7", "role": "user", "text": "Give me a stretching plan for my bad knee."},
            {"id": "s:8", "role": "user", "text": "Plan a weekend trip for me."}]
    assert [r["id"] for r in fact_turns(recs, "maya")] == ["s:1"]  # partial, forgotten, others', requests: no
