"""A call aside (distilling a gestalt, a summary, a query rewrite) leaves the chat's cached prefix and
stack as they were (llm/kv_aside.py): the next turn reads only its new tokens, and its reply is the one a
fresh engine gives. Before, the next turn re-read the whole conversation."""

from __future__ import annotations

from llm.params import GenParams

GREEDY = GenParams(temperature=0.0, seed=3, max_tokens=12)
SIDE = [{"role": "system", "content": "Extract one fact."}, {"role": "user", "content": "I live in Porto."}]


def chat(turns: int) -> list[dict]:
    msgs = [{"role": "system", "content": "You are a terse assistant who answers about gardens."}]
    for i in range(turns):
        msgs += [{"role": "user", "content": f"Question {i}: how deep should I plant bulbs of kind {i}?"},
                 {"role": "assistant", "content": f"Answer {i}: about three times their height, in loose soil."}]
    return msgs


def test_an_aside_call_keeps_the_chat_prefix_and_the_reply_a_fresh_engine_gives(model_path, tmp_path):
    from llm.engine import Engine
    from tests.loras import make_random_lora

    first = [*chat(8), {"role": "user", "content": "And tulips?"}]
    second = [*first, {"role": "assistant", "content": "Deep, in autumn."}, {"role": "user", "content": "Why?"}]
    lora = make_random_lora(model_path, tmp_path / "voice.gguf", rank=4, seed=5, scale_std=0.05)
    with Engine(model_path, n_ctx=1024) as eng, Engine(model_path, n_ctx=1024) as fresh:
        for e in (eng, fresh):
            e.load_adapter("voice", lora)
        stack = [("voice", 1.0)]  # the chat runs under an adapter; the aside call on the base model
        "".join(eng.stream(first, GREEDY, adapters=stack))
        prompt_first = eng.last.prompt_tokens
        assert prompt_first >= 256  # a prefix worth keeping (kv_aside.MIN_TOKENS)

        side = "".join(eng.stream(SIDE, GREEDY, adapters=[], aside=True))
        assert eng.last.adapters == () and side
        assert eng.adapters == stack  # the chat's stack is back

        kept = "".join(eng.stream(second, GREEDY, adapters=stack))
        assert eng.last.cached_tokens >= prompt_first - 2  # only the new turn was read
        assert kept == "".join(fresh.stream(second, GREEDY, adapters=stack))  # bit for bit as a fresh engine
        assert fresh.last.cached_tokens == 0

        "".join(eng.stream(SIDE, GREEDY, adapters=[]))  # the same call not aside: the chat's prefix is gone
        "".join(eng.stream(second, GREEDY, adapters=stack))
        assert eng.last.cached_tokens < 10


def side(k: int) -> list[dict]:
    """A distillation-like call: the same instructions, another turn each time."""
    return [SIDE[0], {"role": "user", "content": f"I keep {k + 2} hives of bees behind the mill."}]


def copied(engine, before) -> tuple[int, int, int]:  # noqa: ANN001
    """(saves, restores, drops) since `before`: the engine's own counts (`aside_copies`)."""
    now = engine.aside_copies
    return now.saves - before.saves, now.restores - before.restores, now.drops - before.drops


def reference(engine, messages: list[dict], stack=None) -> str:  # noqa: ANN001
    """The reply from an empty cache (a fresh engine's, as the first test shows reset is)."""
    engine.reset()
    text = "".join(engine.stream(messages, GREEDY, adapters=stack))
    assert engine.last.cached_tokens == 0
    return text


def test_a_run_of_calls_aside_saves_the_chat_once_and_restores_it_at_the_next_chat_call(engine):
    """A backlog of distillations copied the chat's cells out and back around every call (up to 1 GiB each
    way on a large model); now once out before the run and once back at the next chat call."""
    first = [*chat(8), {"role": "user", "content": "And tulips?"}]
    second = [*first, {"role": "assistant", "content": "Deep, in autumn."}, {"role": "user", "content": "Why?"}]
    want = reference(engine, second)
    engine.reset()
    "".join(engine.stream(first, GREEDY))
    prompt_first = engine.last.prompt_tokens
    before = engine.aside_copies
    for k in range(5):
        "".join(engine.stream(side(k), GREEDY, adapters=[], aside=True))
        assert copied(engine, before) == (1, 0, 0)
        if k:  # each call reads past the last one's instructions: nothing was put back in between
            assert engine.last.cached_tokens >= engine.count_tokens(side(k)[:1])
    assert engine.adapters == []
    kept = "".join(engine.stream(second, GREEDY))
    assert copied(engine, before) == (1, 1, 0)
    assert engine.last.cached_tokens >= prompt_first - 2  # only the new turn was read
    assert kept == want  # bit for bit as from an empty cache
    "".join(engine.stream(second[:-2], GREEDY))  # the chat goes on without calls aside: nothing copied
    assert copied(engine, before) == (1, 1, 0)
    engine.reset()


def test_a_chat_call_that_does_not_continue_the_saved_chat_and_a_reset_drop_it_unrestored(engine):
    first = [*chat(8), {"role": "user", "content": "And tulips?"}]
    other = [{"role": "system", "content": "You are a sailor who answers about knots."}, *chat(8)[1:],
             {"role": "user", "content": "And a bowline?"}]
    want = reference(engine, other)
    engine.reset()
    "".join(engine.stream(first, GREEDY))
    before = engine.aside_copies
    for k in range(3):
        "".join(engine.stream(side(k), GREEDY, adapters=[], aside=True))
    assert "".join(engine.stream(other, GREEDY)) == want  # shares too little to be worth the copy back
    assert copied(engine, before) == (1, 0, 1)

    "".join(engine.stream(side(0), GREEDY, adapters=[], aside=True))
    assert copied(engine, before) == (2, 0, 1)
    engine.reset()  # a new chat: the saved one goes, and nothing brings it back
    assert copied(engine, before) == (2, 0, 2)
    "".join(engine.stream(other, GREEDY))
    assert copied(engine, before) == (2, 0, 2) and engine.last.cached_tokens == 0
    engine.reset()


def test_a_stack_change_or_an_unload_during_calls_aside_drops_the_saved_chat(engine, model_path, tmp_path):
    """The saved cells were computed under the chat's stack: under any other they must not come back."""
    from tests.loras import make_random_lora

    first = [*chat(8), {"role": "user", "content": "And tulips?"}]
    second = [*first, {"role": "assistant", "content": "Deep, in autumn."}, {"role": "user", "content": "Why?"}]
    stack, half = [("voice", 1.0)], [("voice", 0.5)]
    engine.load_adapter("voice", make_random_lora(model_path, tmp_path / "voice.gguf", rank=4, seed=5,
                                                  scale_std=0.05))
    try:
        want_half, want_base = reference(engine, second, half), reference(engine, second, [])
        engine.reset()
        before = engine.aside_copies
        "".join(engine.stream(first, GREEDY, adapters=stack))
        "".join(engine.stream(side(0), GREEDY, adapters=[], aside=True))
        assert engine.adapters == stack  # the chat's stack, while its cells are put aside
        assert engine.set_adapters(stack) is False and copied(engine, before) == (1, 0, 0)  # the same: kept
        assert engine.set_adapters(half) is True and copied(engine, before) == (1, 0, 1)
        assert "".join(engine.stream(second, GREEDY)) == want_half and copied(engine, before) == (1, 0, 1)

        "".join(engine.stream(first, GREEDY, adapters=stack))
        "".join(engine.stream(side(1), GREEDY, adapters=[], aside=True))
        assert engine.unload_adapter("voice") is True and engine.adapters == []
        assert copied(engine, before) == (2, 0, 2)
        assert "".join(engine.stream(second, GREEDY)) == want_base and copied(engine, before) == (2, 0, 2)
    finally:
        if "voice" in engine.loaded_adapters:
            engine.unload_adapter("voice")
        engine.set_adapters([])
        engine.reset()
