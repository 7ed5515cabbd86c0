"""A base (pre-RLHF) model's GGUF has no chat template. llama.cpp then renders Home's ChatML fallback
(llm/template.py); the trainer must train in that same format, not fail in `apply_chat_template` (it did:
transformers' tokenizer has no template to apply). The tiny llama GGUF here is the families' one with its
`tokenizer.chat_template` removed by gguf's own metadata tool. It loads a base but trains nothing, so it
stays out of the trainer's xdist group (tests/xdist_groups.py), off the suite's critical path."""

from __future__ import annotations

import subprocess
import sys

from tests.families import tiny_gguf


def test_a_gguf_without_chat_template_trains_in_the_fallback_llama_cpp_runs(tmp_path, monkeypatch):
    from llm.gguf_meta import read_model_info
    from llm.template import CHATML_TEMPLATE, ChatTemplate
    from trainer.worker.base import load_base, pick_device

    bare = tmp_path / "base-model.gguf"
    proc = subprocess.run([sys.executable, "-m", "gguf.scripts.gguf_new_metadata", "--remove-metadata",
                           "tokenizer.chat_template", str(tiny_gguf("llama")), str(bare)],
                          input="YES\n", capture_output=True, text=True, timeout=120)  # it asks first
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert read_model_info(bare).chat_template is None
    from trainer.worker.base_cache import base_dir

    monkeypatch.setenv("HOME_CACHE", str(tmp_path / "cache"))
    # Same weights, another header: its own dequantized copy, or the first one's tokenizer (and template) wins.
    assert base_dir(bare) != base_dir(tiny_gguf("llama")) and base_dir(bare).parent == base_dir(tiny_gguf("llama")).parent
    base = load_base(bare, pick_device("cpu"))
    assert base.tokenizer.chat_template == CHATML_TEMPLATE
    messages = [{"role": "user", "content": "Morning! Did you sleep?"}]
    trained = base.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    assert trained == ChatTemplate(None).render(messages)  # what llama.cpp is given at inference
