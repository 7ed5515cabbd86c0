"""How long, and at what LoRA rank, a voice adapter trains when its job does not say: by the size of its
log (issue 16). Torch-free: `home train --help` reads it, and the worker (trainer/worker/stages.py).

VOICE_TIERS is the one table: each tier's most training examples (after the time split), epochs, rank.
Measured on bench/voice/RESULTS.md's time-split voice bench at lr 1e-3 cosine, rank 16 (its sections):
- tiny, 3 epochs ("the first sweep settings"): 24 examples, 9 steps: held-out loss still falling at the end;
- small, 2 epochs ("a larger budget (48 examples, 18 steps)"): the best validation step was 8 and 12 of 18
  (1.3 and 2.0 epochs), the loss turned up after;
- medium, 1.25 epochs ("all of a voice's data"): 269 / 252 examples, 36 steps (1.1 epochs): both curves
  flat (-0.01 nats over the last 8 steps), no overfitting turn yet;
- large, 1 epoch: NOT measured, extrapolated (one epoch took most of the gain at ~250 examples).
Rank 16 everywhere: rank 64 at the medium tier ("rank 64, NEFTune, modules, window" section) cut one
voice's ratio (falstaff 0.646 -> 0.606, hamlet equal) but blurred who is who (attribution 83 -> 69 %), for
4x the adapter and +20 % minutes. Other kinds and DPO, unmeasured, keep DEFAULT_EPOCHS
and DEFAULT_RANK. The early stop on the later-in-time split still ends any tier's run at its best step.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

DEFAULT_EPOCHS = 3.0  # a job that names neither steps nor epochs, outside the voice tiers
DEFAULT_RANK = 16  # a job that names no rank, outside the voice tiers


@dataclass(frozen=True)
class Tier:
    name: str
    most: int | None  # the most training examples in this tier; None: no limit
    epochs: float
    rank: int


VOICE_TIERS = (
    Tier("tiny", 32, 3.0, 16),
    Tier("small", 128, 2.0, 16),
    Tier("medium", 1000, 1.25, 16),
    Tier("large", None, 1.0, 16),
)


def voice_tier(n_train: int) -> Tier:
    """The tier of a voice log with `n_train` training examples."""
    return next(t for t in VOICE_TIERS if t.most is None or n_train <= t.most)


@dataclass(frozen=True)
class Sized:
    """A run's length and rank as resolved: the job's own values where it gave them, else its tier's (a
    voice SFT adapter) or the defaults. `tier` is set only when the tier chose at least one of them."""

    n_train: int
    steps: int | None
    epochs: float | None  # None when `steps` is set
    rank: int
    tier: Tier | None
    own: tuple[str, ...]  # the job's fields that won over the tier: "steps", "epochs", "rank"

    def describe(self, total_steps: int) -> str:
        """One line for the user: `voice tier medium (269 training examples): 1.25 epochs = 43 steps, rank 16`."""
        def mine(field: str) -> str:
            return " (yours)" if field in self.own else ""

        length = (f"{total_steps} steps{mine('steps')}" if self.steps is not None
                  else f"{self.epochs:g} epochs{mine('epochs')} = {total_steps} steps")
        head = f"voice tier {self.tier.name}" if self.tier is not None else "training"
        return f"{head} ({self.n_train} training examples): {length}, rank {self.rank}{mine('rank')}"


def tiered(job: Any) -> bool:
    """Whether the voice tiers apply: one voice adapter trained by SFT (a per-persona run is personas)."""
    return job.method == "sft" and not job.per_persona and job.adapter_kind == "voice"


def sized(job: Any, n_train: int) -> Sized:
    """The steps or epochs and the rank `job` (trainer.protocol.job.Job) trains with on `n_train`
    training examples. Steps win over epochs; the job's own steps, epochs and rank win over the tier."""
    own = tuple(f for f in ("steps", "epochs", "rank") if getattr(job, f) is not None)
    tier = voice_tier(n_train) if tiered(job) else None
    if tier is not None and {"steps", "epochs"} & set(own) and "rank" in own:
        tier = None  # the job chose everything
    if job.steps is not None:
        steps, epochs = job.steps, None
    else:
        steps = None
        epochs = job.epochs if job.epochs is not None else tier.epochs if tier is not None else DEFAULT_EPOCHS
    rank = job.rank if job.rank is not None else tier.rank if tier is not None else DEFAULT_RANK
    return Sized(n_train, steps, epochs, rank, tier, own)



def tiers_help(field: str) -> str:
    """One field of the table in words, for `home train --help`: `epochs` → `up to 32 training examples
    3, up to 128 2, up to 1000 1.25, more 1`; a field the same in every tier is just its value."""
    values = [getattr(t, field) for t in VOICE_TIERS]
    if len(set(values)) == 1:
        return f"{values[0]:g}"
    return ", ".join(f"{f'up to {t.most}' if t.most else 'more'}{' training examples' if i == 0 else ''}: {v:g}"
                     for i, (t, v) in enumerate(zip(VOICE_TIERS, values, strict=True)))
