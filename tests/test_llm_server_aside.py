"""A call aside (a gestalt distillation between turns) against a real llama-server started as `home serve`
starts it (llm/servers/process.py: the chat's slot and one for calls aside): the next chat turn reads only
its new tokens and says the same as with no call aside.

The server runs with `--cache-ram 0`: no host-RAM prompt cache to swap the chat's KV out to and back, as
when the chat's state is over that cache's limit (a large model at a long context). With one slot, as
before, the call aside then evicted the chat and the next turn re-read all of it."""

from __future__ import annotations

import pytest

from home.distil import distil_messages
from llm.params import GenParams
from llm.servers.llama_server import LlamaServerBackend
from llm.servers.process import ASIDE_CTX, ServerProcess
from tests.servers import server_binary

N_CTX = 2048
GREEDY = GenParams(temperature=0.0, seed=1, max_tokens=8, repeat_penalty=1.0)
SYSTEM = {"role": "system", "content": "You are Sage, a calm and careful assistant who answers briefly."}
WORDS = ("the river bends past the mill where my sister keeps bees and a small garden of beans and "
         "tomatoes that never ripen before the first frost comes down from the hills").split()


def chat(pairs: int) -> list[dict]:
    """`pairs` exchanges then a user message (~90 tokens an exchange), the same every run."""
    def say(i: int, role: str) -> dict:
        n = 12 + (i * 37 + (role == "assistant") * 11) % 49
        return {"role": role, "content": f"{role} {i}: " + " ".join(WORDS[(i + j) % len(WORDS)] for j in range(n))}
    return [SYSTEM, *(say(i, r) for i in range(pairs) for r in ("user", "assistant")), say(pairs, "user")]


@pytest.fixture(scope="module")
def backend(model_path):
    proc = ServerProcess(server_binary(), model_path, n_ctx=N_CTX, n_threads=2, extra=["--cache-ram", "0"])
    proc.start()
    b = LlamaServerBackend(proc.url, model_path)
    yield b
    b.close()
    proc.close()


def turn(backend: LlamaServerBackend, messages: list[dict], aside: bool = False) -> tuple[str, int, int]:
    """The reply, and how many prompt tokens the server read and took from its cache."""
    text = "".join(backend.stream(messages, GREEDY, adapters=[], aside=aside))
    done = backend.last
    return text, done.prompt_tokens - done.cached_tokens, done.cached_tokens


def test_the_server_gives_each_slot_the_whole_context(backend):
    assert backend.slots == 2
    assert backend.n_ctx == N_CTX  # the chat's slot: all of it, the reserve for calls aside is beside it
    slots = backend.http.get("/slots")
    assert [s["n_ctx"] for s in slots] == [N_CTX, N_CTX]


def test_a_call_aside_leaves_the_chat_cached(backend):
    first, second = chat(14), chat(15)  # ~1300 tokens, then one exchange more
    turn(backend, first)
    want, read_plain, _ = turn(backend, second)  # the next turn with nothing between
    turn(backend, first)  # back to the first turn's cells (a prefix of the second's)
    aside, _, _ = turn(backend, distil_messages("I moved to Porto last spring."), aside=True)
    assert aside
    got, read, cached = turn(backend, second)
    assert got == want
    assert cached >= backend.count_tokens(first) - 4  # the first turn's prompt came from the cache
    assert read <= read_plain + 4, (read, read_plain)  # only the new exchange was read


def test_a_call_aside_that_starts_as_the_chat_does_goes_to_its_own_slot(backend):
    """Left to itself the server sends a request to the slot holding most of its prefix: this one (the
    chat's first exchanges, then a question) would land in the chat's slot and cut it back. `id_slot`."""
    first, second = chat(14), chat(15)
    turn(backend, first)
    want, read_plain, _ = turn(backend, second)
    turn(backend, first)
    recap = [*first[:9], {"role": "user", "content": "Say in one line what the user said so far."}]
    assert turn(backend, recap, aside=True)[0]
    got, read, _ = turn(backend, second)
    assert got == want
    assert read <= read_plain + 4, (read, read_plain)


def test_a_long_call_aside_never_fails_the_chat(backend):
    """An aside prompt that, with the chat's cells, overflows the pool: the server purges the idle chat
    slot to make room (the chat is re-read); both calls still answer, the chat says what it said before."""
    first, second = chat(15), chat(16)
    turn(backend, first)
    want, _, _ = turn(backend, second)
    long_aside = [{"role": "user", "content": " ".join(WORDS * 55)}]
    assert backend.count_tokens(second) + backend.count_tokens(long_aside) > N_CTX + ASIDE_CTX
    aside, _, _ = turn(backend, long_aside, aside=True)
    assert aside
    got, read, _ = turn(backend, second)
    assert got == want
    assert read > ASIDE_CTX  # the overflow ran: the chat's slot was purged and it was read again
