"""The vLLM backend's parts that need no vLLM: the one-adapter stack rule, the request body, how a base
model is recognised, choosing the backend kind, and the one-line refusals against real endpoints (a
closed port, a real llama-server). Real vLLM turns are in tests/test_llm_vllm.py."""

from __future__ import annotations

import pytest

from llm.params import GenParams
from llm.servers.http import ServerError
from llm.servers.llama_server import LlamaServerBackend
from llm.servers.process import free_port
from llm.servers.select import detect_kind, open_backend
from llm.servers.vllm import VllmBackend, chat_body, fingerprint_in, peft_dir_of, served_stack
from tests.servers import SERVER_KEY as KEY

FP = "da8e7eb0be5169f463877d47d825fc36d47676689a6a13ff6d22187b76cab89d"


def test_one_adapter_is_served_as_asked_and_none_is_the_base():
    assert served_stack([("a", 1.0)]) == ([("a", 1.0)], None)
    assert served_stack([]) == ([], None)
    assert served_stack([("a", 0.0)]) == ([], None)  # at scale 0 it is off


def test_a_stack_of_two_is_served_with_its_top_adapter_and_says_so():
    served, why = served_stack([("voice", 0.6), ("style", 1.0)])
    assert served == [("style", 1.0)]
    assert "one adapter per request" in why and "style (1)" in why and "without voice (0.6)" in why
    served, why = served_stack([("x", 1.0), ("y", 1.0)])
    assert served == [("x", 1.0)]  # of equals, the first
    served, why = served_stack([("a", 0.0), ("b", 0.5)])
    assert served == [("b", 1.0)] and "one adapter" not in why and "b at 1, not 0.5" in why


def test_the_request_body_uses_vllms_names():
    body = chat_body("a", [{"role": "user", "content": "hi"}],
                     GenParams(temperature=0.0, seed=7, max_tokens=9, repeat_penalty=1.2, stop=["\n\n"]))
    assert body["model"] == "a" and body["stream"] is True and body["stream_options"] == {"include_usage": True}
    assert (body["repetition_penalty"], body["seed"], body["max_tokens"], body["stop"]) == (1.2, 7, 9, ["\n\n"])
    assert "lora" not in body and "repeat_penalty" not in body
    assert 0 <= chat_body("m", [], GenParams(seed=-1))["seed"] < 2**31  # a fresh seed vLLM accepts


def test_a_base_cache_folder_names_its_gguf_and_a_hub_id_does_not(tmp_path):
    assert fingerprint_in(f"/cache/bases/{FP}-acc666494b20-float32") == FP
    assert fingerprint_in(f"/cache/bases/{FP}") == FP
    assert fingerprint_in("HuggingFaceTB/SmolLM2-135M-Instruct") is None
    assert fingerprint_in(None) is None
    (tmp_path / "x" / "peft").mkdir(parents=True)
    assert peft_dir_of(tmp_path / "x" / "adapter.gguf") == tmp_path / "x" / "peft"
    assert peft_dir_of(tmp_path / "x" / "peft") == tmp_path / "x" / "peft"


def test_a_closed_port_is_one_line(model_path):
    url = f"http://127.0.0.1:{free_port()}"
    with pytest.raises(ServerError, match="connection refused") as err:
        VllmBackend(url, model_path)
    assert "\n" not in str(err.value)


def test_a_llama_server_is_not_taken_for_vllm(llama_server, model_path):
    with pytest.raises(ServerError, match="not a vLLM server .*llamacpp.*kind = \"llama-server\""):
        VllmBackend(llama_server.url, model_path, api_key=KEY)
    b = open_backend(llama_server.url, model_path, api_key=KEY, kind="auto")
    assert isinstance(b, LlamaServerBackend) and b.backend.startswith("llama-server http://127.0.0.1:")
    assert detect_kind(b.http) == "llama-server"
    with pytest.raises(ServerError, match="not a vLLM server"):
        open_backend(llama_server.url, model_path, api_key=KEY, kind="vllm")

