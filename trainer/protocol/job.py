"""What one training run is asked to do: the JSON document `home train` hands to `python -m trainer`.

A plain JSON job (not argv) so the app can start runs too, a run directory can record exactly what was
asked, and `--resume` can re-read it. Torch-free: `home` imports this module to build jobs.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

SOURCES = ("logs", "transcript", "essays", "jsonl", "gestalts", "preferences")
METHODS = ("sft", "dpo")
DEVICES = ("auto", "cpu", "cuda")
KINDS = ("voice", "persona", "task", "style", "other")
SPLITS = ("time", "random")
SCHEDULES = ("cosine", "constant")  # the learning rate after warmup: cosine to zero, or flat
MODULES = ("all", "attention", "mlp")  # the projections LoRA adapts (trainer/worker/train.py MODULE_TARGETS)
VOICE_LR = 1e-3  # a voice adapter (SFT): bench/voice/RESULTS.md, issue 16
OTHER_LR = 2e-4  # any other adapter, and preference (DPO) training
VOICE_WINDOW = 4  # earlier turns of context per example, for a voice (SFT): bench/voice/RESULTS.md, issue 16
OTHER_WINDOW = 10  # any other adapter


def default_lr(kind: str, method: str = "sft") -> float:
    """The learning rate a job gets when it names none. A voice adapter learns its speaker's later words
    best at 1e-3: on the time-split voice bench it beat 2e-4 at both budgets measured (24 and 48 training
    examples, 9 and 18 steps: bench/voice/RESULTS.md); the early stop on the later-in-time split keeps the
    best step where it overfits. Other kinds and DPO, unmeasured there, keep 2e-4."""
    return VOICE_LR if kind == "voice" and method == "sft" else OTHER_LR


def default_window(kind: str, method: str = "sft") -> int:
    """The context turns per example a job gets when it names none. A voice learns its speaker better from
    4 earlier turns than from 10: on the time-split voice bench attribution went 58 -> 71 % (24 examples) and
    69 -> 83 % (all data), the perplexity ratio 0.860 -> 0.843 and 0.734 -> 0.727, at ~0.6x the minutes
    (bench/voice/RESULTS.md). Other kinds, unmeasured there, keep 10."""
    return VOICE_WINDOW if kind == "voice" and method == "sft" else OTHER_WINDOW


def trained_window(training: dict | None) -> int:
    """The context turns per example an adapter was trained on, for measuring it as trained (`home eval`,
    `home drift`): its registered `training.window`, else 10 (an adapter registered before the window was
    recorded trained at 10 unless told otherwise)."""
    window = (training or {}).get("window")
    return window if isinstance(window, int) and not isinstance(window, bool) and window >= 1 else OTHER_WINDOW


class JobError(ValueError):
    """The job document is malformed; the message names the file and field."""

    exit_code = 2


@dataclass
class Job:
    vault: str
    source: str = "logs"
    path: str | None = None
    speaker: str | None = None
    target: str = "user"  # user | persona
    persona: str | None = None  # target persona (logs), or the persona filter (jsonl)
    user: str = "me"
    name: str | None = None  # the adapter's name; default "<user>-voice" / "<persona>-persona"
    kind: str | None = None  # default: voice for target user, persona otherwise
    tasks: list[str] = field(default_factory=list)
    tones: list[str] = field(default_factory=list)
    model: str | None = None  # the GGUF the app runs (path or reference); None = built-in default
    base: str | None = None  # a Hugging Face directory to train on instead of the dequantized GGUF
    steps: int | None = None  # optimizer steps; None: from epochs
    epochs: float | None = None  # None: the voice tier's (trainer/protocol/tiers.py), 3 for other kinds
    rank: int | None = None  # None: the voice tier's (trainer/protocol/tiers.py), 16 for other kinds
    alpha: float | None = None  # default 2 × rank
    window: int | None = None  # None: default_window(kind, method), the measured default for the adapter
    batch_size: int = 8
    lr: float | None = None  # None: default_lr(kind, method), the measured default for the adapter
    schedule: str = "cosine"  # one of SCHEDULES
    neftune: float = 0.0  # NEFTune: noise on the input embeddings while training (its alpha; 0: none)
    modules: str = "all"  # one of MODULES
    max_length: int = 512
    val_fraction: float = 0.1
    split: str | None = None  # time: hold out the latest examples; random: a seeded share; None: time for a voice
    seed: int = 0
    device: str = "auto"
    processes: int = 1  # training processes: GPUs (device cuda, nccl), or CPU processes over gloo (a test)
    fsdp: bool | None = None  # several processes: shard the base (FSDP); None: when it does not fit one GPU
    four_bit: bool = False
    allow_cpu: bool = False  # train a model over ~1B parameters on the CPU anyway (trainer/protocol/guard.py)
    two_phase: bool = False
    per_persona: bool = False  # jsonl persona records → one adapter per persona (trainer/worker/per_persona.py)
    personas: list[str] = field(default_factory=list)  # --per-persona: only these (default: every one)
    method: str = "sft"  # sft: examples; dpo: pick-best pairs (source preferences, trainer/worker/preference_run.py)
    beta: float = 0.1  # dpo: how far from the starting point (the reference) the adapter may move
    start: str | None = None  # dpo: the adapter id to start from; None: the user's voice adapter, else the base
    resume: bool = False
    run_dir: str | None = None  # set by the worker; fixed on resume

    @property
    def adapter_name(self) -> str:
        if self.name:
            return self.name
        if self.per_persona:
            return "personas"  # the run's name; each adapter is "<persona>-persona"
        return f"{self.persona}-persona" if self.target == "persona" else f"{self.user}-voice"

    @property
    def adapter_kind(self) -> str:
        return self.kind or ("persona" if self.target == "persona" else "voice")

    @property
    def learning_rate(self) -> float:
        """The rate the run trains at: the job's own, or the default for its kind (`default_lr`)."""
        if self.lr is not None:
            return self.lr
        return default_lr("persona" if self.per_persona else self.adapter_kind, self.method)

    @property
    def context_window(self) -> int:
        """The context turns per example the run trains on: the job's own, or its kind's (`default_window`)."""
        if self.window is not None:
            return self.window
        return default_window("persona" if self.per_persona else self.adapter_kind, self.method)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Any, where: str = "job") -> Job:
        if not isinstance(data, dict):
            raise JobError(f"{where}: expected a JSON object")
        known = {f.name: f for f in fields(cls)}
        for key in data:
            if key not in known:
                raise JobError(f"{where}: {key}: unknown field")
        if not isinstance(data.get("vault"), str):
            raise JobError(f"{where}: vault: expected a path string")
        defaults = cls(vault="")
        for key, value in data.items():
            want = getattr(defaults, key)
            if value is None or want is None:
                continue
            ok = isinstance(value, type(want)) or (isinstance(want, float) and isinstance(value, int))
            if not ok or (isinstance(value, bool) and not isinstance(want, bool)):
                raise JobError(f"{where}: {key}: expected {type(want).__name__}, got {value!r}")
        job = cls(**data)
        job.validate(where)
        return job

    def validate(self, where: str = "job") -> None:
        def bad(key: str, why: str) -> JobError:
            return JobError(f"{where}: {key}: {why}")

        if self.source not in SOURCES:
            raise bad("source", f"expected one of {', '.join(SOURCES)}, got {self.source!r}")
        if self.source in ("transcript", "essays", "jsonl") and not self.path:
            raise bad("path", f"--source {self.source} needs a path")
        if self.source == "transcript" and not self.speaker:
            raise bad("speaker", "--source transcript needs --speaker NAME")
        if self.method not in METHODS:
            raise bad("method", f"expected one of {', '.join(METHODS)}, got {self.method!r}")
        if (self.method == "dpo") != (self.source == "preferences"):
            raise bad("method", "preference training is --method dpo --source preferences (both, or neither)")
        if self.method == "dpo":
            if self.two_phase or self.per_persona or self.target != "user":
                raise bad("method", "--method dpo trains the user's voice: no --two-phase, --per-persona or --target persona")
            if self.kind not in (None, "voice"):
                raise bad("kind", "--method dpo trains a voice adapter")
            if not 0 < self.beta <= 10:
                raise bad("beta", f"expected a number in (0, 10], got {self.beta}")
        if self.target not in ("user", "persona"):
            raise bad("target", f"expected user or persona, got {self.target!r}")
        if self.target == "persona" and not self.persona:
            raise bad("persona", "--target persona needs a persona name")
        if self.device not in DEVICES:
            raise bad("device", f"expected one of {', '.join(DEVICES)}, got {self.device!r}")
        if self.kind is not None and self.kind not in KINDS:
            raise bad("kind", f"expected one of {', '.join(KINDS)}, got {self.kind!r}")
        if self.steps is not None and self.epochs is not None:
            raise bad("steps", "give --steps or --epochs, not both")
        for key, low in (("steps", 1), ("rank", 1), ("window", 1), ("batch_size", 1), ("max_length", 32)):
            value = getattr(self, key)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int)):
                raise bad(key, f"expected a whole number, got {value!r}")
            if value is not None and value < low:
                raise bad(key, f"expected at least {low}, got {value}")
        if self.lr is not None and (isinstance(self.lr, bool) or not isinstance(self.lr, (int, float))
                                    or not 0 < self.lr <= 1):
            raise bad("lr", f"expected a learning rate above 0 and at most 1, got {self.lr!r}")
        if self.schedule not in SCHEDULES:
            raise bad("schedule", f"expected one of {', '.join(SCHEDULES)}, got {self.schedule!r}")
        if self.modules not in MODULES:
            raise bad("modules", f"expected one of {', '.join(MODULES)}, got {self.modules!r}")
        if not 0 <= self.neftune <= 100:
            raise bad("neftune", f"expected a noise alpha between 0 and 100 (0: none), got {self.neftune}")
        if self.epochs is not None and (isinstance(self.epochs, bool) or not isinstance(self.epochs, (int, float))
                                        or self.epochs <= 0):
            raise bad("epochs", f"expected a positive number, got {self.epochs!r}")
        if self.split not in (None, *SPLITS):
            raise bad("split", f"expected one of {', '.join(SPLITS)}, got {self.split!r}")
        if not 0 < self.val_fraction < 0.5:
            raise bad("val_fraction", f"expected between 0 and 0.5, got {self.val_fraction}")
        if not all(isinstance(p, str) and p.strip() for p in self.personas):
            raise bad("personas", f"expected persona ids (strings), got {self.personas!r}")
        if self.personas and not self.per_persona:
            raise bad("personas", "--personas picks personas for --per-persona; add --per-persona")
        if self.per_persona:
            if self.source != "jsonl":
                raise bad("source", "--per-persona trains from persona records: --source jsonl FILE")
            if self.two_phase:
                raise bad("two_phase", "--two-phase is not available with --per-persona")
            if self.target == "persona" or self.persona:
                raise bad("persona", "--per-persona trains every persona in the file; choose some with --personas A,B")
            if self.name:
                raise bad("name", "--per-persona names each adapter <persona>-persona")
            if self.kind not in (None, "persona"):
                raise bad("kind", "--per-persona adapters are of kind persona")
        self._validate_processes(bad)

    def _validate_processes(self, bad) -> None:
        """`--gpus N`: one adapter by SFT, data-parallel (trainer/worker/distributed.py)."""
        if self.processes < 1:
            raise bad("processes", f"expected at least 1, got {self.processes}")
        if self.fsdp is not None and not isinstance(self.fsdp, bool):
            raise bad("fsdp", f"expected true, false or null, got {self.fsdp!r}")
        if self.processes == 1:
            if self.fsdp:
                raise bad("fsdp", "--fsdp shards the base over several processes: add --gpus N "
                          "(or --processes N --device cpu)")
            return
        flag = f"--gpus {self.processes}" if self.device == "cuda" else f"--processes {self.processes}"
        if self.device not in ("cpu", "cuda"):
            raise bad("processes", "several training processes need a device: --gpus N (CUDA), or "
                      "--processes N --device cpu (gloo, for testing)")
        for on, what in ((self.method == "dpo", "--method dpo"), (self.per_persona, "--per-persona"),
                         (self.two_phase, "--two-phase")):
            if on:
                raise bad("processes", f"{flag}: {what} trains on one process only; drop one of them")
        if self.fsdp and self.four_bit and self.device == "cpu" and self.resume:
            raise bad("resume", f"{flag} --fsdp --4bit: a run with the base sharded over CPU processes "
                      "checkpoints the adapter only, no optimizer state; start it again without --resume")
        if self.batch_size % self.processes:
            raise bad("batch_size", f"{flag}: --batch-size {self.batch_size} is the global batch and must split "
                      f"evenly over {self.processes} processes")


def read_job(path: str | Path) -> Job:
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise JobError(f"{path}: cannot read ({exc.strerror})") from None
    except json.JSONDecodeError as exc:
        raise JobError(f"{path}: line {exc.lineno}: invalid JSON ({exc.msg})") from None
    return Job.from_dict(data, str(path))
