"""The vLLM backend against a real vLLM server (PyPI's CPU build in its own cached environment,
tests/vllm_env.py) serving the trainer's dequantized copy of the tiny random Qwen3, LoRA on, an API key
(Qwen3's: vLLM's CPU attention refuses the tiny Llama's head size, 16: "Unsupported CPU attention configuration").

Adapters are real PEFT folders (random, seeded) beside their GGUF conversions, as registration keeps
them; replies at temperature 0 are compared with transformers + peft greedy on the same folder."""

from __future__ import annotations

import json
import shutil
import threading

import pytest

from llm.errors import AdapterError
from llm.params import GenParams
from llm.servers.http import Http, ServerError
from llm.servers.select import open_backend
from llm.servers.vllm import VllmBackend, chat_body
from llm.servers.vllm_process import VllmProcess
from tests.families import tiny_gguf
from tests.vllm_env import vllm_python

KEY = "test-key"
CHAT = [{"role": "user", "content": "Name three fruits."}]
GREEDY = GenParams(temperature=0.0, seed=7, max_tokens=8, repeat_penalty=1.0)


@pytest.fixture(scope="module")
def tiny():
    """The tiny Qwen3's GGUF and its dequantized float32 transformers copy (what vLLM serves)."""
    from trainer.worker.base_cache import dequantized_base

    gguf = tiny_gguf("qwen3")
    return gguf, dequantized_base(gguf, "float32")


@pytest.fixture(scope="module")
def vllm_launched(tiny):
    """One vLLM for the module, started first: it takes a minute or more to come up (imports, mostly),
    in which the adapters are made."""
    proc = VllmProcess(vllm_python(), tiny[1], api_key=KEY, max_model_len=512, max_lora_rank=8, max_loras=3,
                       extra=["--enforce-eager", "--dtype", "float32", "--distributed-executor-backend", "uni"],
                       env={"VLLM_CPU_KVCACHE_SPACE": "1"})
    proc.launch()
    yield proc
    proc.close()


@pytest.fixture(scope="module")
def peft_adapters(tiny, vllm_launched, tmp_path_factory):
    """Adapters a, b, c as a vault keeps them: `<id>/adapter.gguf` beside `<id>/peft/`."""
    from tests.loras import make_random_peft

    root = tmp_path_factory.mktemp("vllm-adapters")
    return {ident: make_random_peft(tiny[1], tiny[0], root / ident, seed=seed) for seed, ident in enumerate("abc", 1)}


def reference(base, peft_dir, messages, max_tokens: int) -> str:
    """transformers (+ peft) greedy on the folder vLLM serves: what vLLM must reply at temperature 0."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(base)
    model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32)
    if peft_dir is not None:
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, str(peft_dir))
    ids = tok.apply_chat_template(messages, add_generation_prompt=True, return_tensors="pt", return_dict=True)
    with torch.no_grad():
        out = model.generate(**ids, max_new_tokens=max_tokens, do_sample=False)
    return tok.decode(out[0, ids["input_ids"].shape[1]:], skip_special_tokens=True)


@pytest.fixture(scope="module")
def vllm_server(vllm_launched, peft_adapters):
    return vllm_launched.wait_ready()


@pytest.fixture(scope="module")
def backend(vllm_server, tiny, peft_adapters):
    b = open_backend(vllm_server.url, tiny[0], api_key=KEY, kind="auto")  # asks the server: vLLM
    assert isinstance(b, VllmBackend) and b.backend == f"vllm {vllm_server.url}"
    b.load_adapter("a", peft_adapters["a"])
    b.load_adapter("b", peft_adapters["b"])
    yield b
    b.close()


def test_a_b_and_none_reply_as_transformers_and_peft_greedy(backend, tiny, peft_adapters):
    texts = {}
    for name, stack in (("a", [("a", 1.0)]), ("b", [("b", 1.0)]), ("none", [])):
        got = "".join(backend.stream(CHAT, GREEDY, adapters=stack))
        peft_dir = peft_adapters[name].parent / "peft" if stack else None
        assert got == reference(tiny[1], peft_dir, CHAT, GREEDY.max_tokens), name
        assert backend.last.adapters == tuple(stack) and backend.last.finish_reason in ("stop", "length")
        assert backend.last.completion_tokens >= 1 and backend.last.prompt_tokens >= 5
        texts[name] = got
    assert len(set(texts.values())) == 3, texts  # each adapter was applied
    held = backend.held()
    assert held["a"].endswith("a/peft") and held["b"].endswith("b/peft")  # loaded by Home at run time


def test_a_newly_registered_adapter_is_loaded_at_run_time(backend, vllm_server, peft_adapters):
    assert "c" not in backend.held()
    backend.load_adapter("c", peft_adapters["c"])
    assert backend.held()["c"].endswith("c/peft")
    before = "".join(backend.stream(CHAT, GREEDY, adapters=[]))
    with_c = "".join(backend.stream(CHAT, GREEDY, adapters=[("c", 1.0)]))
    assert with_c != before and backend.last.adapters == (("c", 1.0),)
    # Another Home on the same server finds c held (same folder) and does not load it twice.
    other = VllmBackend(vllm_server.url, backend.path, api_key=KEY)
    other.load_adapter("c", peft_adapters["c"])
    assert "".join(other.stream(CHAT, GREEDY, adapters=[("c", 1.0)])) == with_c


def test_a_stack_of_two_is_served_with_its_top_adapter_said_once(backend, caplog):
    only_b = "".join(backend.stream(CHAT, GREEDY, adapters=[("b", 1.0)]))
    with caplog.at_level("WARNING", logger="home.backend"):
        both = "".join(backend.stream(CHAT, GREEDY, adapters=[("a", 0.5), ("b", 1.0)]))
        again = "".join(backend.stream(CHAT, GREEDY, adapters=[("a", 0.5), ("b", 1.0)]))
    assert both == again == only_b
    assert backend.last.adapters == (("b", 1.0),)  # what the turn's log record claims: what was served
    assert "using the top one, b (1), without a (0.5)" in backend.notices[-1]
    assert len([r for r in caplog.records if "one adapter per request" in r.getMessage()]) == 1


def test_stop_strings_and_usage_token_counts(backend):
    params = GenParams(temperature=0.0, seed=7, max_tokens=12, repeat_penalty=1.0)
    full = "".join(backend.stream(CHAT, params, adapters=[("a", 1.0)]))
    assert (backend.last.finish_reason, backend.last.completion_tokens) == ("length", 12)  # from `usage`
    assert backend.last.prompt_tokens == backend.count_tokens(CHAT)
    stop = next(full[i:i + 2] for i in range(2, len(full) - 1) if full[i:i + 2].strip())
    cut = "".join(backend.stream(CHAT, GenParams(**{**params.to_dict(), "stop": [stop]}), adapters=[("a", 1.0)]))
    assert cut == full[:full.index(stop)] and backend.last.finish_reason == "stop"


def test_cancel_closes_the_stream_and_the_server_serves_on(backend):
    cancel = threading.Event()
    pieces = []
    for piece in backend.stream(CHAT, GenParams(temperature=0.0, max_tokens=400, repeat_penalty=1.0), cancel=cancel):
        pieces.append(piece)
        cancel.set()
    assert backend.last.finish_reason == "cancelled" and len(pieces) == 1
    assert "".join(backend.stream(CHAT, GREEDY)) != ""


def test_bad_states_are_one_line(vllm_server, backend, tiny, peft_adapters, model_path, tmp_path):
    with pytest.raises(ServerError, match=r"401 unauthorized: Home sent a wrong API key"):
        VllmBackend(vllm_server.url, tiny[0], api_key="wrong")
    # A server on another base: Home's model is the default SmolLM2, the server runs the tiny Qwen3.
    with pytest.raises(ServerError, match=r"the server runs another model .*fingerprint .* than .*SmolLM2"):
        VllmBackend(vllm_server.url, model_path, api_key=KEY)
    # An adapter whose PEFT folder was made for another base, and a GGUF with no PEFT folder beside it.
    other = tmp_path / "x"
    shutil.copytree(peft_adapters["b"].parent, other)
    cfg = json.loads((other / "peft" / "adapter_config.json").read_text())
    cfg["base_model_name_or_path"] = "/cache/bases/" + "0" * 64 + "-float32"
    (other / "peft" / "adapter_config.json").write_text(json.dumps(cfg))
    with pytest.raises(AdapterError, match=r"adapter_config.json: base_model_name_or_path: made for fingerprint 0000"):
        backend.load_adapter("x", other / "adapter.gguf")
    shutil.rmtree(other / "peft")
    with pytest.raises(AdapterError, match=r"adapter.gguf: no PEFT folder beside it"):
        backend.load_adapter("x", other / "adapter.gguf")
    # A model the server does not have: one line with vLLM's own words.
    with pytest.raises(ServerError, match=r"404 not found: The model `nope` does not exist") as err:
        list(backend.http.events("/v1/chat/completions", chat_body("nope", CHAT, GREEDY)))
    assert "\n" not in str(err.value)


def test_an_adapter_the_server_lost_is_loaded_again_for_the_next_turn(backend, vllm_server):
    before = "".join(backend.stream(CHAT, GREEDY, adapters=[("b", 1.0)]))
    Http(vllm_server.url, KEY).post_text("/v1/unload_lora_adapter", {"lora_name": "b"})  # as a restart would
    assert "b" not in backend.held()
    assert "".join(backend.stream(CHAT, GREEDY, adapters=[("b", 1.0)])) == before
    assert backend.held()["b"].endswith("b/peft")

def vllm_vault(root, tiny, peft_adapters):
    """A vault for the tiny Qwen3 served by vLLM, adapters a and c registered (GGUF + PEFT folder)."""
    from llm.gguf_meta import read_model_info
    from vault.layout import Vault
    from vault.manifest import AdapterEntry, ManifestStore

    vault = Vault.open(root)
    for ident in "ac":
        shutil.copytree(peft_adapters[ident].parent, vault.adapters_dir / ident)
        with ManifestStore(vault).update() as m:
            m.add_adapter(AdapterEntry(id=ident, name=ident, file=f"adapters/{ident}/adapter.gguf", kind="style",
                                       base={"fingerprint": read_model_info(tiny[0]).fingerprint}))
    vault.config_path.write_text(f'model = "{tiny[0]}"\n[backend]\napi_key = "{KEY}"\nkind = "vllm"\n')
    return vault


def test_home_ask_through_vllm_logs_the_server_and_the_adapter(vllm_server, tiny, peft_adapters, tmp_path):
    """The CLI end to end: a vault's registered adapter (GGUF + PEFT folder) served by vLLM, logged so."""
    from tests.cli_helpers import run_home
    from tests.test_app import records

    vault = vllm_vault(tmp_path / "v", tiny, peft_adapters)
    proc = run_home(vault.root, "--backend", vllm_server.url, "ask", "hi", "--adapter", "c", "--max-tokens", "4")
    assert proc.returncode == 0, proc.stderr
    (reply,) = [r for r in records(vault.root) if r["role"] == "assistant"]
    assert reply["backend"] == f"vllm {vllm_server.url}" and reply["adapters"] == [{"id": "c", "scale": 1.0}]
    assert reply["tokens"]["completion"] == 4 and not reply["partial"]
    # Two adapters asked: the top one served, said on stderr, logged as served.
    proc = run_home(vault.root, "--backend", vllm_server.url, "ask", "hi", "--adapter", "a:0.5", "--adapter", "c",
                    "--max-tokens", "4", "--no-memory")
    assert proc.returncode == 0, proc.stderr
    assert "home: vLLM serves one adapter per request: using the top one, c (1), without a (0.5)" in proc.stderr
    reply = [r for r in records(vault.root) if r["role"] == "assistant"][-1]
    assert reply["adapters"] == [{"id": "c", "scale": 1.0}]


def test_the_app_shows_the_two_adapter_rule_once(vllm_server, tiny, peft_adapters, tmp_path):
    """In the app, a persona's stack of two through vLLM: the top adapter is served, logged as served,
    and the screen says why once (not on every turn)."""
    from tests.test_app import drive, make_app, records, say, wait_ready

    vault = vllm_vault(tmp_path / "v", tiny, peft_adapters)
    card = {"spec": "chara_card_v2", "spec_version": "2.0", "data": {"name": "Duo", "extensions": {"home": {
        "hotkey": "f6", "adapters": [{"id": "a", "scale": 0.5}, {"id": "c", "scale": 1.0}]}}}}
    (vault.personas_dir / "duo.json").write_text(json.dumps(card))
    app = make_app(vault.root, backend=vllm_server.url, model=str(tiny[0]), max_tokens=4)

    async def scenario(pilot):
        await wait_ready(pilot, app)
        await pilot.press("f6")
        await say(pilot, app, "hi")
        await say(pilot, app, "and again")

    drive(app, scenario)
    shown = [str(n.message) for n in app._notifications if n.title == "Server"]
    said = [m for m in shown if "one adapter per request" in m]  # the second turn's mode scales differ
    assert len(said) == 1 and "using the top one, c (" in said[0] and "without a (" in said[0], shown
    replies = [r for r in records(vault.root) if r["role"] == "assistant"]
    assert [[a["id"] for a in r["adapters"]] for r in replies] == [["c"], ["c"]]  # what was served
