"""Bounded memory in the trainer: verification streams its logits, the worker reports each stage's peak,
and a run without a terminal still prints a line at least every 30 s."""

from __future__ import annotations

import io
import mmap
import time

import numpy as np

from home.progress import ProgressPrinter
from trainer.protocol.memwatch import MemoryWatch, rss_bytes
from trainer.worker.verify import TIE_NOISE, Agreement, compare


def _whole_array_metrics(hf_base, hf, ll_base, ll):
    """The metrics as the first verifier computed them: every array whole, in float64."""

    def centred(x):
        x = x.astype(np.float64)
        return x - x.mean(-1, keepdims=True)

    def corr(x, y):
        xc, yc = centred(x), centred(y)
        return ((xc * yc).sum(-1) / np.sqrt((xc * xc).sum(-1) * (yc * yc).sum(-1))).mean()

    def rms(x):
        return np.sqrt((x * x).mean())

    noise_base = rms(centred(ll_base - hf_base))
    picks = ll.argmax(-1)
    gap = hf.max(-1) - hf[np.arange(len(picks)), picks]
    d_ll, d_hf = centred(ll - ll_base), centred(hf - hf_base)
    return {
        "correlation": corr(ll, hf), "base_correlation": corr(ll_base, hf_base),
        "moved_llama": 1 - corr(ll_base, ll), "moved_hf": 1 - corr(hf_base, hf),
        "top1_exact": (picks == hf.argmax(-1)).mean(), "top1_agreement": (gap <= TIE_NOISE * noise_base).mean(),
        "excess_noise": rms(centred(ll - hf)) / noise_base,
        "delta_correlation": (d_ll * d_hf).mean() / (rms(d_ll) * rms(d_hf)),
    }


def _sides(rng, n, vocab, adapter=0.3, noise=0.05):
    hf_base = rng.normal(size=(n, vocab)).astype(np.float32) * 3
    delta = rng.normal(size=(n, vocab)).astype(np.float32) * adapter
    hf = hf_base + delta
    ll_base = hf_base + rng.normal(size=(n, vocab)).astype(np.float32) * noise
    ll = hf + rng.normal(size=(n, vocab)).astype(np.float32) * noise
    return hf_base, hf, ll_base, ll


def test_streamed_agreement_equals_the_whole_array_metrics():
    rng = np.random.default_rng(0)
    probes = [_sides(rng, n, 1000) for n in (7, 130, 64)]  # chunks of 64 rows: 130 spans three
    acc = Agreement()
    for p in probes:
        acc.add(*p)
    streamed = acc.result()
    whole = _whole_array_metrics(*(np.concatenate(side) for side in zip(*probes, strict=True)))
    for key, want in whole.items():
        assert abs(getattr(streamed, key) - want) < 1e-9, key
    assert streamed.n_positions == 201 and streamed.passed is (streamed.reason == "")
    assert compare(*probes[1]).n_positions == 130


def test_next_token_log_probs_are_scored_where_a_next_token_exists():
    rng = np.random.default_rng(1)
    sides = _sides(rng, 5, 50, noise=0.0)
    acc = Agreement()
    acc.add(*sides, next_ids=np.array([3, 1, 4, 1]))  # 5 positions, 4 known next tokens
    nt = acc.result().next_token
    assert nt["positions"] == 4 and nt["logprob_gap"] < 1e-9  # identical sides: no gap
    hf = sides[1].astype(np.float64)[:4]
    lp = hf[np.arange(4), [3, 1, 4, 1]] - np.log(np.exp(hf).sum(-1))
    assert abs(nt["nll_hf"] - (-lp.mean())) < 1e-9


def test_a_lost_adapter_fails_and_the_message_says_why():
    rng = np.random.default_rng(2)
    hf_base, hf, ll_base, _ = _sides(rng, 40, 300)
    result = compare(hf_base, hf, ll_base, ll_base.copy())  # llama.cpp ignored the adapter
    assert not result.passed and "moved" in result.reason and "llama.cpp" in result.reason


def test_memory_watch_reports_each_stage_peak_and_a_heartbeat():
    events = []
    watch = MemoryWatch(lambda kind, **f: events.append((kind, f)) or f, first_stage="dataset",
                        interval=0.01, heartbeat_s=0.2)
    try:
        watch("phase", name="load", detail="x")
        # 64 MiB of fresh pages, touched so they are resident: mmap, not bytearray, whose malloc may
        # reuse heap pages freed (and still resident) by whatever this process ran before
        block = mmap.mmap(-1, 64 * 2**20)
        for i in range(0, len(block), 4096):
            block[i] = 1
        time.sleep(0.1)
        block.close()
        time.sleep(0.35)  # silent for longer than the heartbeat interval
        watch("phase", name="train", detail="y")
        watch("done", id="a")
    finally:
        watch.stop()
    phases = [f for k, f in events if k == "phase"]
    assert phases[0]["memory"]["stage"] == "dataset" and phases[1]["memory"]["stage"] == "load"
    load_peak = phases[1]["memory"]["peak_host_bytes"]
    assert load_peak >= phases[0]["memory"]["peak_host_bytes"] + 50 * 2**20  # the 64 MiB was seen
    assert load_peak > rss_bytes() + 32 * 2**20  # and it is a peak, not the level after it was freed
    beats = [f for k, f in events if k == "heartbeat"]
    assert beats and beats[0]["stage"] == "load" and beats[0]["rss_bytes"] > 0
    done = events[-1][1]
    assert done["peak_host_bytes"] >= load_peak and done["memory"]["stage"] == "train"


def test_without_a_terminal_a_line_comes_at_least_every_interval():
    out = io.StringIO()
    show = ProgressPrinter(out, tty=False, every_s=0.5)  # not shorter: a busy box's stall must not pass for it
    step = {"event": "step", "step": 1, "total": 80, "loss": 2.0, "tokens_per_s": 100, "eta_s": 600,
            "peak_host_bytes": 1.5 * 2**30}
    show(step)
    assert out.getvalue() == ""  # step 1 of 80, just after the last line: nothing yet
    time.sleep(0.55)
    show({**step, "step": 2})
    assert "2/80" in out.getvalue() and "peak 1.50 GiB" in out.getvalue()
    time.sleep(0.55)
    show({"event": "heartbeat", "stage": "verify", "stage_s": 95, "rss_bytes": 2**30, "peak_host_bytes": 2**30})
    assert "still verify: 1m35s" in out.getvalue()
    tty = io.StringIO()
    ProgressPrinter(tty, tty=True)({"event": "heartbeat", "stage": "train", "stage_s": 1})
    assert tty.getvalue() == ""  # the bar is on screen already


def _tiny_lm(softcap=None):
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    cfg = LlamaConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                      num_key_value_heads=2, vocab_size=301, tie_word_embeddings=True)
    model = LlamaForCausalLM(cfg)
    if softcap:
        model.config.final_logit_softcapping = softcap
    return get_peft_model(model, LoraConfig(r=4, lora_alpha=8, lora_dropout=0.0, task_type="CAUSAL_LM",
                                            target_modules=["q_proj", "v_proj", "down_proj"], init_lora_weights=False))


def _reference_loss(model, ids, labels, mask, softcap=None):
    import torch
    import torch.nn.functional as F

    logits = model(input_ids=ids, attention_mask=mask).logits.float()
    if softcap:
        logits = torch.tanh(logits / softcap) * softcap
    return F.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]), labels[:, 1:].reshape(-1),
                           ignore_index=-100)


def test_target_loss_equals_full_logit_cross_entropy_in_value_and_gradient(monkeypatch):
    """The chunked loss over target rows only is the plain loss: same value, same LoRA gradients
    (chunks forced to 16 rows so several are crossed), with padding, and through a softcap."""
    import torch

    import trainer.worker.loss as tl

    monkeypatch.setattr(tl, "CHUNK_BYTES", 16 * 4 * 301)
    for softcap in (None, 5.0):
        model = _tiny_lm(softcap)
        ids = torch.randint(0, 301, (3, 23), generator=torch.Generator().manual_seed(1))
        labels = ids.clone()
        labels[:, :9] = -100
        mask = torch.ones_like(ids)
        mask[2, 18:] = 0
        labels[2, 18:] = -100
        ref = _reference_loss(model, ids, labels, mask, softcap)
        ref.backward()
        want = {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}
        model.zero_grad()
        loss, n, correct = tl.target_loss(model, ids, labels, mask)
        loss.backward()
        assert n == int((labels[:, 1:] != -100).sum()) and 0 <= correct <= n
        assert torch.allclose(loss, ref, atol=1e-5), (float(loss), float(ref))
        for name, p in model.named_parameters():
            if p.requires_grad:
                assert torch.allclose(p.grad, want[name], atol=1e-5, rtol=1e-4), name
        with torch.no_grad():  # evaluation: no gradient work, same value
            assert torch.allclose(tl.target_loss(model, ids, labels, mask)[0], ref, atol=1e-5)


def test_batch_plan_checkpoints_or_splits_only_when_the_budget_asks():
    from transformers import LlamaConfig

    from trainer.worker.batch_plan import activation_bytes, plan_batches

    cfg = LlamaConfig(hidden_size=576, intermediate_size=1536, num_hidden_layers=30, num_attention_heads=9)
    short = plan_batches(cfg, 8, [40] * 16, 4, "cpu", budget_bytes=2**31)
    assert (short.micro_batch, short.checkpointing) == (8, False)  # chat-length data fits as is
    split = plan_batches(cfg, 8, [40] * 16, 4, "cpu", budget_bytes=2**30)
    assert (split.micro_batch, split.accumulation, split.checkpointing) == (4, 2, False)  # CPU: split first
    gpu = plan_batches(cfg, 8, [40] * 16, 2, "cuda", budget_bytes=2**28)
    assert (gpu.micro_batch, gpu.checkpointing) == (8, True)  # GPU: checkpoint first
    long = plan_batches(cfg, 8, [480] * 16, 4, "cpu", budget_bytes=2**30)
    assert long.checkpointing and long.estimate_bytes <= 2**30 and 8 % long.micro_batch == 0
    assert long.micro_batch * long.accumulation == 8
    assert activation_bytes(cfg, 8, 480, 4, False) > 10 * 2**30  # what the OOM-killed run kept
    tiny = plan_batches(cfg, 8, [480] * 16, 4, "cpu", budget_bytes=1)
    assert (tiny.micro_batch, tiny.accumulation, tiny.checkpointing) == (1, 8, True)
    forced = plan_batches(cfg, 8, [40] * 16, 4, "cpu", checkpointing=True, budget_bytes=2**30)
    assert forced.checkpointing and forced.micro_batch == 8


def test_batch_plan_on_a_gpu_keeps_an_8b_unchecked_where_it_fits():
    """Measured on an H200: Llama-8B LoRA at 4 x 1024, bf16, no checkpointing, peaked at 59 GiB with its
    15 GiB of weights; the plan must not checkpoint it with ~76 GiB to spare (it did: 0.63x HF+peft)."""
    from transformers import LlamaConfig

    from trainer.worker.batch_plan import plan_batches

    cfg = LlamaConfig(hidden_size=4096, intermediate_size=14336, num_hidden_layers=32, num_attention_heads=32)
    roomy = plan_batches(cfg, 4, [1024] * 8, 2, "cuda", budget_bytes=int(75.9 * 2**30))
    assert (roomy.micro_batch, roomy.checkpointing) == (4, False)
    assert 40 * 2**30 < roomy.estimate_bytes < 60 * 2**30  # ~44 GiB measured
    card = plan_batches(cfg, 4, [1024] * 8, 2, "cuda", budget_bytes=8 * 2**30)  # a 24 GiB card after the weights
    assert card.checkpointing


def test_cpu_budget_follows_available_memory_within_its_floor_and_cap(tmp_path):
    """A roomy machine trains a 512-token voice window unchecked (1 x 512: ~1.5x the tokens/s of the
    checkpointed 4 x 2, bench/trainer_throughput.py --budgets); a short one plans as before (1 GiB)."""
    from transformers import LlamaConfig

    from trainer.worker import batch_plan as bp

    meminfo = tmp_path / "meminfo"
    meminfo.write_text("MemTotal:       16384000 kB\nMemFree:          512000 kB\nMemAvailable:   9000000 kB\n")
    assert bp.available_bytes(str(meminfo)) == 9000000 * 1024
    assert bp.available_bytes(str(tmp_path / "missing")) is None
    assert bp.cpu_budget(None) == bp.cpu_budget(2 * 2**30) == 2**30  # unknown or short: the floor
    assert bp.cpu_budget(6 * 2**30) == 2 * 2**30  # a third of what is available
    assert bp.cpu_budget(9000000 * 1024) == bp.cpu_budget(64 * 2**30) == int(2.5 * 2**30)  # never past the cap

    cfg = LlamaConfig(hidden_size=576, intermediate_size=1536, num_hidden_layers=30, num_attention_heads=9)
    roomy = bp.plan_batches(cfg, 8, [512] * 24, 4, "cpu", budget_bytes=bp.cpu_budget(9000000 * 1024))
    assert (roomy.micro_batch, roomy.accumulation, roomy.checkpointing) == (1, 8, False)
    short = bp.plan_batches(cfg, 8, [512] * 24, 4, "cpu", budget_bytes=bp.cpu_budget(2 * 2**30))
    assert short.checkpointing and short.estimate_bytes <= 2**30
