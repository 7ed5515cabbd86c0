"""The recipe knobs the voice sweep turns (issue 16): the learning rate (its default by kind), the
learning-rate schedule after warmup (cosine to zero, or constant) and NEFTune noise on the input
embeddings, from the job document to the trainer that runs, on a tiny random-weight Llama (seconds); a bad
value is one line naming the field."""

from __future__ import annotations

import json

import pytest

from trainer.protocol.job import Job, JobError, default_lr, read_job


def test_bad_schedule_or_noise_is_one_line_naming_the_field(tmp_path):
    for field, value, why in (("schedule", "linear", "schedule: expected one of cosine, constant"),
                              ("neftune", -1.0, "neftune: expected a noise alpha between 0 and 100"),
                              ("neftune", "5", "neftune: expected float")):
        path = tmp_path / "job.json"
        path.write_text(json.dumps({"vault": str(tmp_path), field: value}))
        with pytest.raises(JobError, match=why) as err:
            read_job(path)
        assert str(err.value).startswith(f"{path}: ") and "\n" not in str(err.value)
    job = read_job(_write(tmp_path / "ok.json", {"vault": str(tmp_path), "schedule": "constant", "neftune": 5}))
    assert (job.schedule, job.neftune) == ("constant", 5)
    assert (Job(vault="v").schedule, Job(vault="v").neftune) == ("cosine", 0.0)


def _write(path, data):
    path.write_text(json.dumps(data))
    return path


def _tiny():
    import torch
    from peft import LoraConfig, get_peft_model
    from tokenizers import Tokenizer
    from tokenizers.models import WordLevel
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    torch.manual_seed(0)
    cfg = LlamaConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                      num_key_value_heads=2, vocab_size=64, tie_word_embeddings=True)
    model = get_peft_model(LlamaForCausalLM(cfg), LoraConfig(r=4, lora_alpha=8, lora_dropout=0.0,
                                                             task_type="CAUSAL_LM", target_modules=["q_proj"]))
    tok = PreTrainedTokenizerFast(tokenizer_object=Tokenizer(WordLevel({"<pad>": 0, "<unk>": 1}, unk_token="<unk>")),
                                  pad_token="<pad>", eos_token="<pad>")
    return model, tok


def _trainer(tmp_path, total: int, **over):
    from trainer.worker.batch_plan import BatchPlan
    from trainer.worker.train import TrainSettings, _make_trainer

    model, tok = _tiny()
    recs = [{"input_ids": [2 + i, 3 + i, 4 + i, 5], "labels": [-100, -100, 4 + i, 5]} for i in range(8)]
    settings = TrainSettings(steps=total, rank=4, alpha=8.0, lr=1e-2, batch_size=4, max_length=32, seed=0,
                             cpu_threads=1, **over)
    plan = BatchPlan(micro_batch=4, accumulation=1, checkpointing=False, estimate_bytes=0, budget_bytes=2**30)
    return _make_trainer(model, tok, recs, recs[:4], settings, tmp_path / "ckpt", total, total, total, "cpu",
                         plan, padding_free=False)


def test_the_schedule_sets_where_the_learning_rate_ends(tmp_path):
    """Cosine decays to zero by the last step; constant holds the rate after its warmup."""
    ends = {}
    for schedule in ("cosine", "constant"):
        trainer = _trainer(tmp_path / schedule, 20, schedule=schedule)
        trainer.create_optimizer_and_scheduler(num_training_steps=20)
        rates = []
        for _ in range(20):
            trainer.optimizer.step()
            trainer.lr_scheduler.step()
            rates.append(trainer.lr_scheduler.get_last_lr()[0])
        ends[schedule] = rates
    assert max(ends["cosine"]) == pytest.approx(1e-2, rel=0.05) and ends["cosine"][-1] < 1e-4
    assert ends["constant"][-5:] == [pytest.approx(1e-2)] * 5


def test_neftune_noises_the_embeddings_only_while_training(tmp_path):
    """With NEFTune the input embeddings differ call to call during training (and are plain after it);
    without it they are the same each time."""
    import torch
    from transformers import TrainerCallback

    seen = {}

    class Look(TrainerCallback):
        def on_step_begin(self, args, state, control, model=None, **kw):
            emb = model.get_input_embeddings()
            ids = torch.tensor([[2, 3, 4]])
            seen.setdefault(args.neftune_noise_alpha, []).append(not torch.equal(emb(ids), emb(ids)))

    for alpha in (0.0, 5.0):
        trainer = _trainer(tmp_path / str(alpha), 2, neftune=alpha)
        trainer.add_callback(Look())
        trainer.train()
        emb = trainer.model.get_input_embeddings()
        emb.train()
        ids = torch.tensor([[2, 3, 4]])
        assert torch.equal(emb(ids), emb(ids))  # the hook is gone after training
    assert seen == {None: [False, False], 5.0: [True, True]}


def test_home_train_passes_the_schedule_and_noise_to_the_job(tmp_path, capsys):
    from home.cli import build_parser
    from home.commands.train import build_job
    from home.context import Context

    data = _write(tmp_path / "d.jsonl", {"prompt": [{"role": "user", "content": "hi"}],
                                         "completion": [{"role": "assistant", "content": "hello"}]})
    args = build_parser().parse_args(["--vault", str(tmp_path / "v"), "train", "--source", "jsonl", str(data),
                                      "--schedule", "constant", "--neftune", "5"])
    job = build_job(Context(args), args)
    assert (job.schedule, job.neftune) == ("constant", 5.0)
    with pytest.raises(SystemExit) as stop:
        build_parser().parse_args(["train", "--schedule", "linear"])
    assert stop.value.code == 2 and "unknown --schedule 'linear' (one of: cosine, constant;" in capsys.readouterr().err


def test_a_voice_trains_at_1e_3_and_other_adapters_at_2e_4_unless_the_job_says(tmp_path):
    """The sweep's winner (bench/voice/RESULTS.md, 2026-11-30): a voice adapter's default rate is 1e-3;
    other kinds and DPO, unmeasured there, keep 2e-4; a rate the job names always wins."""
    from trainer.worker.stages import train_settings

    assert (default_lr("voice"), default_lr("persona"), default_lr("voice", "dpo")) == (1e-3, 2e-4, 2e-4)
    cases = [({}, 1e-3), ({"kind": "voice", "source": "jsonl", "path": "d.jsonl"}, 1e-3),
             ({"target": "persona", "persona": "wren"}, 2e-4), ({"kind": "style"}, 2e-4),
             ({"per_persona": True, "source": "jsonl", "path": "p.jsonl"}, 2e-4),
             ({"method": "dpo", "source": "preferences"}, 2e-4), ({"lr": 5e-4}, 5e-4),
             ({"kind": "task", "lr": 1e-3}, 1e-3)]
    for fields, lr in cases:
        job = Job(vault="v", **fields)
        job.validate()
        assert (job.learning_rate, train_settings(job, 24).lr) == (lr, lr), fields
    job = read_job(_write(tmp_path / "none.json", {"vault": str(tmp_path)}))
    assert job.lr is None and job.learning_rate == 1e-3  # a job without a rate keeps none: resumed, the same
    for value in ("1e-3", 0, -1e-3, 2.0, True):
        path = _write(tmp_path / "bad.json", {"vault": str(tmp_path), "lr": value})
        with pytest.raises(JobError, match="lr: expected a learning rate above 0 and at most 1") as err:
            read_job(path)
        assert str(err.value).startswith(f"{path}: ") and "\n" not in str(err.value)


def test_home_train_leaves_the_rate_to_the_kind_unless_given(tmp_path):
    from home.cli import build_parser
    from home.commands.train import build_job
    from home.context import Context

    data = _write(tmp_path / "d.jsonl", {"prompt": [{"role": "user", "content": "hi"}],
                                         "completion": [{"role": "assistant", "content": "hello"}]})
    jobs = {}
    for extra in ([], ["--kind", "task"], ["--lr", "3e-4"]):
        args = build_parser().parse_args(["--vault", str(tmp_path / "v"), "train", "--source", "jsonl", str(data),
                                          *extra])
        jobs[tuple(extra)] = build_job(Context(args), args)
    assert [(j.lr, j.learning_rate) for j in jobs.values()] == [(None, 1e-3), (None, 2e-4), (3e-4, 3e-4)]


def test_modules_choose_the_projections_lora_adapts(tmp_path, capsys):
    """`--modules attention|mlp|all` (the sweep's "which modules") reaches the LoRA the trainer builds:
    on a tiny Llama, attention adapts q/k/v/o only, mlp gate/up/down only; a bad value is one line."""
    from peft import get_peft_model
    from transformers import LlamaConfig, LlamaForCausalLM

    from home.cli import build_parser
    from home.commands.train import build_job
    from home.context import Context
    from trainer.worker.stages import train_settings
    from trainer.worker.train import lora_config

    data = _write(tmp_path / "d.jsonl", {"prompt": [{"role": "user", "content": "hi"}],
                                         "completion": [{"role": "assistant", "content": "hello"}]})
    cfg = LlamaConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=4,
                      num_key_value_heads=2, vocab_size=64)
    adapted = {}
    for modules in ("attention", "mlp", "all"):
        args = build_parser().parse_args(["--vault", str(tmp_path / "v"), "train", "--source", "jsonl", str(data),
                                          "--modules", modules])
        job = build_job(Context(args), args)
        model = get_peft_model(LlamaForCausalLM(cfg), lora_config(train_settings(job, 24)))
        adapted[modules] = sorted({n.split(".lora_A")[0].split(".")[-1] for n, _ in model.named_parameters() if "lora_A" in n})
    assert adapted == {"attention": ["k_proj", "o_proj", "q_proj", "v_proj"],
                       "mlp": ["down_proj", "gate_proj", "up_proj"],
                       "all": ["down_proj", "gate_proj", "k_proj", "o_proj", "q_proj", "up_proj", "v_proj"]}
    assert Job(vault="v").modules == "all"
    path = _write(tmp_path / "bad.json", {"vault": str(tmp_path), "modules": "embeddings"})
    with pytest.raises(JobError, match="modules: expected one of all, attention, mlp") as err:
        read_job(path)
    assert str(err.value).startswith(f"{path}: ") and "\n" not in str(err.value)


def test_a_voice_trains_on_four_turns_of_context_other_kinds_on_ten_and_eval_measures_as_trained():
    """The voice bench's window row (bench/voice/RESULTS.md): 4 earlier turns beat 10 for a voice."""
    from trainer.protocol.job import Job, trained_window

    assert Job(vault="v").context_window == 4  # the user's voice
    assert Job(vault="v", target="persona", persona="sage").context_window == 10
    assert Job(vault="v", method="dpo", source="preferences").context_window == 10
    assert Job(vault="v", kind="style").context_window == 10
    assert Job(vault="v", window=7).context_window == 7
    assert trained_window({"window": 4}) == 4
    assert trained_window({}) == trained_window(None) == 10  # registered before the window was recorded
    assert trained_window({"window": True}) == trained_window({"window": 0}) == 10


def test_the_promotion_gate_reads_the_logs_at_the_window_a_voice_trains_on(tmp_path):
    """The gate leaves out the turns a voice trained on by their keys, which cover the context: read at
    another window than the training's, no key matched and it measured the new voice on its own data."""
    from tests.test_new_user_cli import log_user_turns
    from trainer.data.sources import load_source
    from trainer.evaluation.gate import user_turns
    from trainer.protocol.job import Job

    vault = log_user_turns(tmp_path / "v", 8)
    trained = load_source("logs", vault=vault, target="user", user="me", window=Job(vault="v").context_window)
    assert len(trained.examples) == 8
    assert user_turns(vault, "me", Job(vault="v").context_window, {ex.key() for ex in trained.examples}) == []
