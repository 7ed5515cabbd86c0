"""A training run's live report and its brakes, as one transformers `TrainerCallback` (`Progress`).

Why a callback: trl's SFTTrainer owns the loop; this is the one place that sees every optimizer step,
validation pass and checkpoint, so it reports them as JSON events (`step`, `eval`, `checkpoint`), stops
early when validation stops improving (keeping the best adapter on disk), and honours a stop request
from SIGINT/SIGTERM (`stop_on_signals`) by saving a checkpoint and ending the loop at the next step.
"""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from transformers import TrainerCallback

from trainer.worker import ranks
from vault.fsio import private_tree, replacing_dir

Emit = Callable[..., Any]


class StopRequest:
    """Set by the signal handler, read by `Progress` at the next step."""

    def __init__(self) -> None:
        self.requested = False
        self.reason: str | None = None

    def request(self, reason: str = "stop") -> None:
        self.requested, self.reason = True, reason


class Progress(TrainerCallback):
    """The run's live report and its two brakes: `step`/`eval`/`checkpoint` events, early stopping on
    validation loss (the best adapter kept in `best_dir`), and the stop request (checkpoint, then end)."""

    def __init__(self, emit: Emit, total: int, patience: int, best_dir: Path, base_val: float):
        self.emit, self.total, self.patience, self.best_dir = emit, total, patience, best_dir
        self.stop = StopRequest()
        self.world = ranks.world()  # several processes: rank 0 writes best/, all agree on stopping
        self.train_losses: list[tuple[int, float]] = []
        self.val_losses: list[tuple[int, float]] = []
        self.best: float | None = None
        self.best_step: int | None = None
        self.bad_evals = 0
        self.early_stopped = False
        self.base_val = base_val
        self._tokens_seen = 0  # trl's running count of non-padding tokens, as of the last step event
        self._tokens = 0
        self._train_s = 0.0

    def tokens_per_s(self) -> float:
        return round(self._tokens / self._train_s, 1) if self._train_s > 0 else 0.0

    def _track_eval(self, step: int, loss: float) -> bool:
        self.val_losses.append((step, loss))
        if self.best is None or loss < self.best:
            self.best, self.best_step, self.bad_evals = loss, step, 0
            return True
        self.bad_evals += 1
        return False

    def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        # A resumed run replays its history, so losses, best and patience continue where they were.
        for rec in state.log_history:
            if "loss" in rec and "step" in rec:
                self.train_losses.append((rec["step"], float(rec["loss"])))
            elif "eval_loss" in rec and rec.get("step", 0) > 0:
                self._track_eval(rec["step"], float(rec["eval_loss"]))
        self._start_step, self._t_begin = state.global_step, time.time()
        self._t_mark = self._t_begin

    def _brake(self, control: Any) -> None:
        if self.stop.requested and not control.should_training_stop:
            control.should_save = True
            control.should_training_stop = True

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        # Several processes: a stop (a signal reaches each rank at its own moment) ends the same step on
        # every rank, or the ones that go on wait forever in the next all-reduce for the one that stopped.
        if self.world.size > 1 and ranks.any_rank(self.stop.requested) and not self.stop.requested:
            self.stop.request("another rank stopped")
        self._brake(control)

    def on_log(self, args: Any, state: Any, control: Any, logs: dict | None = None, **kwargs: Any) -> None:
        if not logs or "loss" not in logs:
            return
        now, step = time.time(), state.global_step
        seen = int(logs.get("num_tokens", self._tokens_seen))
        dt, new_tokens = now - self._t_mark, max(0, seen - self._tokens_seen)
        self._tokens_seen, self._t_mark = seen, now
        self._train_s += dt
        self._tokens += new_tokens
        done = max(1, step - self._start_step)
        loss = float(logs["loss"])
        self.train_losses.append((step, loss))
        self.emit("step", step=step, total=self.total, loss=round(loss, 5),
                  lr=float(logs.get("learning_rate", 0.0)), grad_norm=_round(logs.get("grad_norm")),
                  epoch=_round(logs.get("epoch"), 3), tokens_per_s=round(new_tokens / dt, 1) if dt > 0 else None,
                  eta_s=round((now - self._t_begin) / done * (self.total - step), 1))
        if self.world.size == 1:  # several: only the step end's agreed decision may brake
            self._brake(control)

    def on_evaluate(self, args: Any, state: Any, control: Any, metrics: dict | None = None,
                    model: Any = None, **kwargs: Any) -> None:
        loss = float((metrics or {})["eval_loss"])
        improved = self._track_eval(state.global_step, loss)
        if improved and model is not None:  # swapped in whole: a resumed run reads it back
            self._save_best(model)
        stop_early = self.patience > 0 and self.bad_evals >= self.patience and state.global_step < self.total
        self.emit("eval", step=state.global_step, total=self.total, val_loss=round(loss, 5),
                  best_val_loss=round(self.best, 5), base_val_loss=round(self.base_val, 5),
                  early_stop=stop_early)
        if stop_early:
            self.early_stopped = True
            control.should_training_stop = True
        self._t_mark = time.time()  # validation time is not training throughput

    def on_save(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        path = Path(args.output_dir) / f"checkpoint-{state.global_step}"
        if path.is_dir() and self.world.main:
            private_tree(path)  # transformers wrote it in place: durable before it counts as saved
        reason = "stop" if self.stop.requested else "end" if state.global_step >= self.total else "periodic"
        self.emit("checkpoint", step=state.global_step, total=self.total, path=str(path), reason=reason)
        self._t_mark = time.time()

    def _save_best(self, model: Any) -> None:
        """best/ written by rank 0; a base sharded over the ranks (FSDP) has its adapter gathered first,
        by every rank (trainer/worker/sharding.py)."""
        from trainer.worker.sharding import full_adapter_state, is_sharded

        state = full_adapter_state(model) if self.world.size > 1 and is_sharded(model) else None
        if self.world.main:
            with replacing_dir(self.best_dir) as tmp:
                model.save_pretrained(str(tmp), state_dict=state, save_embedding_layers=False)

    def went_past_best(self) -> bool:
        return bool(self.val_losses) and self.best is not None and self.val_losses[-1][1] > self.best

    def restore_best(self, peft_model: Any) -> None:
        """Put the best validation adapter back if training went past it."""
        if not self.went_past_best():
            return
        from peft import set_peft_model_state_dict
        from safetensors.torch import load_file

        weights = self.best_dir / "adapter_model.safetensors"
        if weights.is_file():
            set_peft_model_state_dict(peft_model, load_file(str(weights)))
            self.emit("phase", name="best", detail=f"kept the adapter from step {self.best_step} "
                      f"(validation loss {self.best:.4f})")


def _round(value: Any, digits: int = 4) -> float | None:
    return round(float(value), digits) if value is not None else None


@contextmanager
def stop_on_signals(stop: StopRequest) -> Iterator[None]:
    """SIGINT/SIGTERM ask for a stop at the next step (checkpoint, then return); a second one aborts.
    The previous handlers come back afterwards. Off the main thread Python allows no handlers: skip."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    sigs = (signal.SIGINT, signal.SIGTERM)
    previous = {s: signal.getsignal(s) for s in sigs}

    def handler(signum: int, frame: Any) -> None:
        if stop.requested:
            for s, h in previous.items():
                signal.signal(s, h)
            raise KeyboardInterrupt
        stop.request(signal.Signals(signum).name)

    for s in sigs:
        signal.signal(s, handler)
    try:
        yield
    finally:
        for s, h in previous.items():
            signal.signal(s, h)
