"""llm.engine on the real model: streaming, the Completion record, determinism, the context policy,
cancellation, stop strings and the GGUF's own chat template."""

from __future__ import annotations

import threading

import pytest

from llm.errors import ContextError
from llm.params import GenParams
from llm.stops import split_stop

CHAT = [{"role": "user", "content": "List some colors of the rainbow."}]
GREEDY = GenParams(temperature=0.0, seed=3, max_tokens=16)


def test_template_is_the_gguf_chatml(engine):
    assert engine.info.chat_template and "<|im_start|>" in engine.info.chat_template
    assert not engine.template.is_fallback
    text = engine.render([{"role": "system", "content": "Be brief."}, *CHAT])
    assert text.startswith("<|im_start|>system\nBe brief.<|im_end|>\n")
    assert "<|im_start|>user\nList some colors of the rainbow.<|im_end|>\n" in text
    assert text.endswith("<|im_start|>assistant\n")
    assert "<|im_end|>" in engine.template.stop_strings
    # SmolLM2's own template (not the ChatML fallback) adds its default system prompt.
    assert "SmolLM" in engine.render(CHAT) and "SmolLM" not in engine.template.render(
        [{"role": "system", "content": "x"}]
    )


def test_stream_pieces_join_to_last_text(engine):
    pieces = list(engine.stream(CHAT, GREEDY))
    last = engine.last
    assert pieces and all(isinstance(p, str) and p for p in pieces)
    assert "".join(pieces) == last.text and last.text.strip()
    assert last.prompt_tokens == engine.count_tokens(CHAT)
    assert 0 < last.completion_tokens <= GREEDY.max_tokens
    assert last.finish_reason in ("stop", "length")
    if last.finish_reason == "length":
        assert last.completion_tokens == GREEDY.max_tokens
    assert last.tok_per_s > 0 and 0 < last.ttft_s <= last.total_s
    assert last.dropped_turns == 0


def test_greedy_and_seeded_replies_repeat(engine):
    first = engine.generate_text(CHAT, GREEDY)
    engine.generate_text([{"role": "user", "content": "Something else entirely."}], GREEDY)
    assert engine.generate_text(CHAT, GREEDY) == first
    sampled = GenParams(temperature=0.9, seed=11, max_tokens=12)
    assert engine.generate_text(CHAT, sampled) == engine.generate_text(CHAT, sampled)


def test_max_tokens_ends_with_length(engine):
    text = engine.generate_text([{"role": "user", "content": "Write a long poem about the sea."}],
                                GenParams(temperature=0.0, max_tokens=3))
    assert engine.last.finish_reason == "length" and engine.last.completion_tokens == 3
    assert text == engine.last.text


def _history(n_pairs: int) -> list[dict]:
    msgs = [{"role": "system", "content": "You are a terse assistant."}]
    for i in range(n_pairs):
        msgs.append({"role": "user", "content": f"Question {i}: " + "tell me about rivers " * 6})
        msgs.append({"role": "assistant", "content": f"Answer {i}: " + "rivers flow downhill " * 6})
    msgs.append({"role": "user", "content": "And the last question?"})
    return msgs


def test_fit_drops_oldest_turns_and_keeps_system(engine):
    msgs, max_tokens = _history(12), 850
    assert engine.count_tokens(msgs) + max_tokens > engine.n_ctx
    kept, dropped = engine.fit(msgs, max_tokens)
    assert dropped > 0 and dropped % 2 == 0  # whole user/assistant pairs
    assert kept[0] == msgs[0]
    assert kept[1:] == msgs[1 + dropped :]  # the newest turns, in order, ending with the last message
    assert kept[1]["role"] == "user"
    assert engine.count_tokens(kept) + max_tokens <= engine.n_ctx
    # the fewest pairs that must go; the cut moves on a grid (llm/fit.py) so it may drop more, never past
    # half of what fits (the cached prefix then holds for several turns)
    need = next(d for d in range(0, len(msgs), 2)
                if engine.count_tokens([msgs[0], *msgs[1 + d:]]) + max_tokens <= engine.n_ctx)
    assert need <= dropped and len(kept) - 1 >= (len(msgs) - 1 - need) / 2
    assert engine.fit(msgs[:3] + msgs[-1:], max_tokens) == (msgs[:3] + msgs[-1:], 0)

    stream = engine.stream(msgs, GenParams(temperature=0.0, max_tokens=max_tokens))
    next(stream)
    stream.close()  # one piece is enough to see what the prompt was
    assert engine.last.dropped_turns == dropped
    assert engine.last.prompt_tokens == engine.count_tokens(kept)
    assert engine.last.finish_reason == "cancelled"


def test_context_error_when_the_last_message_cannot_fit(engine):
    huge = [{"role": "system", "content": "Hi."}, {"role": "user", "content": "word " * 1500}]
    with pytest.raises(ContextError, match=r"last message need \d+ tokens \+ 16 for the reply.*1024"):
        engine.fit(huge, 16)
    with pytest.raises(ContextError):
        engine.stream(huge, GREEDY)  # raised before the first piece, not mid-iteration
    with pytest.raises(ContextError, match="the context holds 1024"):
        engine.fit([{"role": "system", "content": "word " * 1500}], 16)
    assert engine.generate_text(CHAT, GREEDY)  # still works


def test_cancel_event_stops_the_reply(engine):
    cancel = threading.Event()
    pieces = []
    for piece in engine.stream(CHAT, GenParams(temperature=0.0, max_tokens=64), cancel=cancel):
        pieces.append(piece)
        cancel.set()
    last = engine.last
    assert last.finish_reason == "cancelled"
    assert len(pieces) == 1 and last.text == pieces[0]
    assert last.completion_tokens < 64

    early = threading.Event()
    early.set()
    assert list(engine.stream(CHAT, GREEDY, cancel=early)) == []
    assert engine.last.finish_reason == "cancelled" and engine.last.completion_tokens == 0
    assert engine.generate_text(CHAT, GREEDY)  # the engine is free again


def test_cancel_from_another_thread(engine):
    cancel, got_first = threading.Event(), threading.Event()
    pieces: list[str] = []

    def consume():
        for piece in engine.stream(CHAT, GenParams(temperature=0.0, max_tokens=200), cancel=cancel):
            pieces.append(piece)
            got_first.set()

    worker = threading.Thread(target=consume)
    worker.start()
    assert got_first.wait(30)
    cancel.set()
    worker.join(30)
    assert not worker.is_alive()
    assert engine.last.finish_reason in ("cancelled", "stop")  # "stop" only if EOS came first
    assert "".join(pieces) == engine.last.text


def test_stop_strings_never_leak(engine):
    params = GenParams(temperature=0.0, seed=1, max_tokens=24)
    full = engine.generate_text(CHAT, params)
    assert len(full) > 12, full
    stop = full[len(full) // 2 : len(full) // 2 + 5]  # spans token boundaries in the middle
    cut = full.find(stop)
    pieces = list(engine.stream(CHAT, params.merged(stop=(stop,))))
    text = "".join(pieces)
    assert engine.last.finish_reason == "stop"
    assert text == full[:cut] == engine.last.text
    assert stop not in text


@pytest.mark.parametrize(
    ("text", "stops", "expected"),
    [
        ("hello", (), ("hello", "", False)),
        ("hello", ("<|im_end|>",), ("hello", "", False)),
        ("hello <|im", ("<|im_end|>",), ("hello ", "<|im", False)),
        ("hello <", ("<|im_end|>",), ("hello ", "<", False)),
        ("hi<|im_end|>more", ("<|im_end|>",), ("hi", "", True)),
        ("a END b STOP", ("STOP", "END"), ("a ", "", True)),  # the earliest stop wins
        ("<|im_end|>", ("<|im_end|>",), ("", "", True)),
        ("x<|im_e", ("<|im_end|>", "<|e"), ("x", "<|im_e", False)),
        ("tail S", ("STOP",), ("tail ", "S", False)),
        ("tail X", ("STOP",), ("tail X", "", False)),
    ],
)
def test_split_stop(text, stops, expected):
    longest = max((len(s) for s in stops), default=0)
    assert split_stop(text, stops, longest) == expected


STRICT = (  # like Mistral/Gemma templates: one leading system message at most, then strict alternation
    "{% for m in messages %}{% if m['role'] == 'system' and not loop.first %}"
    "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant') }}{% endif %}"
    "[{{ m['role'] }}] {{ m['content'] }}\n{% endfor %}"
)


def test_a_late_system_message_is_kept_or_merged_into_the_next_user_message():
    from llm.template import ChatTemplate, TemplateError, merge_late_system

    msgs = [{"role": "system", "content": "persona"}, {"role": "user", "content": "hi"},
            {"role": "assistant", "content": "hello"}, {"role": "system", "content": "memory"},
            {"role": "user", "content": "question"}]
    chatml = ChatTemplate(None).render(msgs)
    assert "<|im_start|>system\nmemory<|im_end|>\n<|im_start|>user\nquestion" in chatml  # kept in place
    strict = ChatTemplate(STRICT).render(msgs, add_generation_prompt=False)
    assert strict == "[system] persona\n[user] hi\n[assistant] hello\n[user] memory\n\nquestion\n"
    assert merge_late_system(msgs[:4])[-1] == {"role": "assistant", "content": "hello\n\nmemory"}
    with pytest.raises(TemplateError, match="alternate"):  # a refusal merging cannot fix still says why
        ChatTemplate("{{ raise_exception('roles must alternate') }}").render(msgs[:1])


def test_gpu_layers_zero_runs_on_the_cpu_and_says_so(model_path, engine):
    """gpu_layers=0 keeps every layer on the CPU whatever llama.cpp was built with; the default puts
    them all on the GPU exactly when offload is built in (SmolLM2: 30 blocks + the output layer)."""
    from llm.engine import Engine
    from llm.offload import check_gpu_layers, offload_built_in

    with Engine(model_path, n_ctx=512, gpu_layers=0) as cpu:
        assert (cpu.offload.requested, cpu.offload.layers, cpu.offload.total) == (0, 0, 31)
        assert cpu.offload.built_in == offload_built_in()
        assert "0/31 layers on the GPU" in str(cpu.offload)
        assert cpu.generate_text(CHAT, GREEDY).strip()
    default = engine.offload
    assert default.layers == (default.total if offload_built_in() else 0)
    assert default.requested == (-1 if offload_built_in() else 0)
    with pytest.raises(ValueError, match="expected -1"):
        check_gpu_layers(-2)


def test_a_turn_tokenizes_its_prompt_once(engine):
    """The fit check and the run share one tokenization of the same prompt (a spy that calls through)."""
    real, texts = engine._llm.tokenize, []

    def spy(text, *a, **kw):
        texts.append(text)
        return real(text, *a, **kw)

    msgs = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Name a colour."}]
    engine._llm.tokenize = spy
    try:
        want = engine.count_tokens(msgs)
        texts.clear()
        "".join(engine.stream(msgs, GenParams(max_tokens=2, temperature=0.0)))
    finally:
        engine._llm.tokenize = real
    assert texts == []  # the fit's count and the run reuse the tokens counted just before
    assert engine.last.prompt_tokens == want
