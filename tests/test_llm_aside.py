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
