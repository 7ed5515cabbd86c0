"""The llama-server backend against a real llama-server (built once from the pinned llama.cpp, cached):
the default model with two random adapters, one server for the module, on 127.0.0.1 with an API key."""

from __future__ import annotations

import os
import signal
import threading

import pytest

from llm.errors import AdapterError
from llm.params import GenParams
from llm.servers.http import Http, ServerError, StreamCut
from llm.servers.llama_server import LlamaServerBackend
from llm.servers.process import ServerProcess, free_port
from tests.servers import SERVER_KEY as KEY
from tests.servers import server_binary

CHAT = [{"role": "user", "content": "Name three fruits and say why you like them."}]
GREEDY = GenParams(temperature=0.0, seed=7, max_tokens=16, repeat_penalty=1.0)


@pytest.fixture(scope="module")
def backend(llama_server, model_path, server_adapters):
    b = LlamaServerBackend(llama_server.url, model_path, api_key=KEY)
    b.load_adapter("a", server_adapters["a"])
    b.load_adapter("b", server_adapters["b"])
    yield b
    b.close()


@pytest.fixture
def local(engine, server_adapters):
    """The in-process session engine with the same two adapters; base stack again afterwards."""
    engine.load_adapter("a", server_adapters["a"])
    engine.load_adapter("b", server_adapters["b"])
    yield engine
    engine.set_adapters([])
    engine.unload_adapter("a")
    engine.unload_adapter("b")


def test_same_tokens_as_the_engine_with_a_b_and_none(backend, local):
    texts = {}
    for name, stack in (("a", [("a", 1.0)]), ("b", [("b", 1.0)]), ("none", []), ("half", [("a", 0.5), ("b", 0.5)])):
        want = "".join(local.stream(CHAT, GREEDY, adapters=stack))
        got = "".join(backend.stream(CHAT, GREEDY, adapters=stack))
        assert got == want, name
        assert backend.last.completion_tokens == local.last.completion_tokens, name
        assert backend.last.prompt_tokens == local.last.prompt_tokens, name
        assert backend.last.adapters == tuple(stack)
        texts[name] = got
    assert len(set(texts.values())) == 4, texts  # each stack is its own voice: the adapters were applied


def test_every_held_adapter_is_sent_with_an_explicit_scale(backend):
    held = {os.path.basename(os.path.dirname(a["path"])): a["id"] for a in backend.http.get("/lora-adapters")}
    assert backend.lora_field([("b", 0.5)]) == sorted(
        [{"id": held["a"], "scale": 0.0}, {"id": held["b"], "scale": 0.5}], key=lambda d: d["id"])
    assert backend.lora_field([]) == sorted(({"id": i, "scale": 0.0} for i in held.values()), key=lambda d: d["id"])


def test_an_adapter_the_server_does_not_hold_is_refused_by_name(backend, server_adapters):
    with pytest.raises(AdapterError, match=str(server_adapters["c"])):
        backend.load_adapter("c", server_adapters["c"])
    with pytest.raises(AdapterError, match="not loaded"):
        backend.stream(CHAT, GREEDY, adapters=[("c", 1.0)])
    assert "c" not in backend.loaded_adapters


def test_a_server_on_another_base_is_refused(llama_server):
    from tests.families import tiny_gguf

    with pytest.raises(ServerError, match="runs another model"):
        LlamaServerBackend(llama_server.url, tiny_gguf("llama"), api_key=KEY)


def test_cancel_closes_the_stream_and_the_server_serves_on(backend):
    cancel = threading.Event()
    pieces = []
    for piece in backend.stream(CHAT, GREEDY.merged(max_tokens=200), cancel=cancel):
        pieces.append(piece)
        cancel.set()
    assert backend.last.finish_reason == "cancelled"
    assert backend.last.text == "".join(pieces) and len(pieces) == 1
    assert backend.generate_text(CHAT, GREEDY.merged(max_tokens=4))


def test_stop_strings_end_the_reply(backend, local):
    free = backend.generate_text(CHAT, GREEDY)
    word = free.split()[2]
    stopped = backend.generate_text(CHAT, GREEDY.merged(stop=(word,)))
    assert stopped == free[: free.index(word)]
    assert backend.last.finish_reason == "stop"


def test_refused_401_404_in_one_line(llama_server):
    port = free_port()
    with pytest.raises(ServerError, match=f"127.0.0.1:{port}: connection refused") as refused:
        Http(f"http://127.0.0.1:{port}").get("/health")
    with pytest.raises(ServerError, match="401 unauthorized: Home sent a wrong API key") as wrong:
        Http(llama_server.url, "nope").get("/v1/models")
    with pytest.raises(ServerError, match="401 unauthorized: Home sent no API key"):
        Http(llama_server.url).get("/v1/models")
    with pytest.raises(ServerError, match="404 not found") as missing:
        Http(llama_server.url, KEY).get("/no/such/route")
    for exc in (refused, wrong, missing):
        assert "\n" not in str(exc.value)


def test_a_silent_server_times_out_and_a_killed_one_cuts_the_stream(model_path, tmp_path):
    """A second server of our own to freeze (SIGSTOP: the socket accepts, nothing answers) and kill."""
    from home.turn import Conversation
    from vault.layout import Vault
    from vault.logs import ConversationLog, read_log

    proc = ServerProcess(server_binary(), model_path, n_ctx=512, n_threads=1).start()
    try:
        quick = LlamaServerBackend(proc.url, model_path, timeout=1.0)
        os.kill(proc.proc.pid, signal.SIGSTOP)
        try:
            with pytest.raises(ServerError, match="no answer within 1 s"):
                quick.generate_text(CHAT, GREEDY)
        finally:
            os.kill(proc.proc.pid, signal.SIGCONT)
        vault = Vault.open(tmp_path / "vault")
        convo = Conversation(LlamaServerBackend(proc.url, model_path), ConversationLog.create(vault), "me")
        got = []
        with pytest.raises(StreamCut, match="mid-reply"):
            for piece in convo.send("Tell me a long story.", GREEDY.merged(max_tokens=400), []):
                got.append(piece)
                if len(got) == 3:
                    proc.proc.kill()
        record = read_log(convo.log.path).records[-1]
        assert record["partial"] is True and record["finish_reason"] == "error"
        assert record["text"] == "".join(got)
        assert record["backend"] == f"llama-server {proc.url}"
    finally:
        proc.close()
