"""Threads against a turn, on the real engine: an adapter reloaded between a turn's set and its decode
must never give a reply the log says was made with an adapter it was not made with."""

from __future__ import annotations

import random
import threading
import time

from home.turn import Conversation
from llm.errors import AdapterError
from llm.params import GenParams
from tests.loras import make_random_lora
from vault.layout import Vault
from vault.logs import ConversationLog

TEXT = "Tell me about the sea."
PARAMS = GenParams(max_tokens=6, temperature=0.0, seed=1)


def test_a_reload_between_set_and_stream_never_mislabels_a_reply(tmp_path, engine, model_path):
    """A hot-reload (unload + load, as `sync_adapters` does when the file changed) hammers the engine
    while turns run; every reply's text must be the one its logged stack makes (greedy, so a reply
    depends only on messages, params and stack: compared with references made without the hammer)."""
    path = make_random_lora(model_path, tmp_path / "a.gguf", rank=8, seed=3, scale_std=0.5)
    stack = [("x", 1.0)]
    convo = Conversation(engine, ConversationLog.create(Vault.open(tmp_path / "v")), "me")

    def reply() -> dict:
        convo.history.clear()
        "".join(convo.send(TEXT, PARAMS, stack))
        return convo.last.record

    engine.load_adapter("x", path)
    try:
        with_x, base = reply()["text"], None
        engine.set_adapters([])
        base = "".join(engine.stream([{"role": "user", "content": TEXT}], PARAMS))
        assert with_x != base, "the random adapter must change the greedy reply, or the check below sees nothing"
        stop = threading.Event()

        def reload() -> None:
            # a random rest after each load leaves turns a window with the adapter in (a tight loop on a busy
            # box once left none in 30 turns); the rest is shorter than a turn, so reloads still land mid-turn
            pauses = random.Random(7)
            while not stop.is_set():
                engine.unload_adapter("x")
                engine.load_adapter("x", path)
                stop.wait(pauses.uniform(0.0, 0.02))

        hammer = threading.Thread(target=reload)
        hammer.start()
        seen: list[dict] = []
        try:
            deadline = time.monotonic() + 120
            tries = 0
            while tries < 30 or (sum(r["adapters"] != [] for r in seen) < 3 and time.monotonic() < deadline):
                tries += 1
                try:
                    seen.append(reply())
                except AdapterError:  # unloaded at that instant: refused, never a mislabelled reply
                    pass
        finally:
            stop.set()
            hammer.join()
        made = [r for r in seen if not r["partial"]]
        labelled_x = [r for r in made if r["adapters"] == [{"id": "x", "scale": 1.0}]]
        wrong = [r for r in made if r["text"] != (with_x if r in labelled_x else base)]
        assert labelled_x, "no turn ran with the adapter: the hammer left no window"
        assert not wrong, f"{len(wrong)} of {len(made)} replies were logged with a stack they were not made with"
    finally:
        if "x" in engine.loaded_adapters:
            engine.unload_adapter("x")
        engine.set_adapters([])
