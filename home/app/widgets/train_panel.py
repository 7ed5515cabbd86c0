"""The retrain panel beside the chat: what the trainer worker is doing, drawn from its JSON events.

`TrainView` folds events into plain state (unit-testable, no widgets); `TrainPanel` renders it. The
app's reader thread hands each event over with `call_from_thread`, so the panel only ever changes on
the UI thread and the chat keeps working while the worker (another process) trains.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.widgets import Button, ProgressBar, Sparkline, Static

from home.progress import fmt_duration
from trainer.evaluation.perplexity import likeness

# trainer `phase` names → the stage the panel shows
PHASE_STAGE = {"load": "dataset", "tokenize": "dataset", "baseline": "dataset", "identity": "training",
               "style": "training", "train": "training", "saved": "converting", "best": "converting",
               "convert": "converting", "verify": "verifying", "heldout": "evaluating",
               "register": "registering", "start": "dataset", "plan": "dataset", "preference": "evaluating", "gate": "evaluating"}
EVENT_STAGE = {"started": "starting", "dataset": "dataset", "step": "training", "checkpoint": "training",
               "converted": "verifying", "verified": "registering", "registered": "registered",
               "done": "done", "stopped": "stopped", "error": "failed"}


@dataclass
class TrainView:
    """Everything the panel shows, updated one trainer event at a time."""

    adapter: str = ""
    stage: str = "starting"
    detail: str = ""
    step: int = 0
    total: int | None = None
    loss: float | None = None
    tok_per_s: float | None = None
    eta_s: float | None = None
    losses: list[float] = field(default_factory=list)
    val_losses: list[tuple[int, float]] = field(default_factory=list)
    base_val_loss: float | None = None
    perplexity: tuple[float, float] | None = None
    registered: list[str] = field(default_factory=list)
    preference: tuple[float, float] | None = None  # DPO: held-out preference accuracy before, after
    promotion: dict | None = None  # the gate's decision about the new voice (trainer/evaluation/gate.py)
    outcome: str | None = None  # the final line: result, stop or error
    finished: bool = False

    def apply(self, e: dict) -> None:
        kind = e.get("event")
        if kind == "phase":
            self.stage = PHASE_STAGE.get(e.get("name", ""), self.stage)
            self.detail = e.get("detail") or ""
        elif kind in EVENT_STAGE and not self.finished:
            self.stage = EVENT_STAGE[kind]
        if kind == "started":
            self.adapter = e.get("adapter") or ""
            self.detail = f"from {e.get('source')} on {e.get('model')}" + (" (resuming)" if e.get("resume") else "")
        elif kind == "dataset":
            self.detail = f"{e.get('examples', '?')} examples"
        elif kind == "step":
            self.step, self.total = int(e.get("step", 0)), e.get("total") or self.total
            self.loss, self.tok_per_s, self.eta_s = e.get("loss"), e.get("tokens_per_s"), e.get("eta_s")
            if self.loss is not None:
                self.losses.append(float(self.loss))
        elif kind == "eval" and e.get("stage") == "preference":
            self.preference = (e.get("accuracy_before"), e.get("accuracy_after"))
        elif kind == "eval" and e.get("stage") == "promotion":
            self.promotion = {k: e.get(k) for k in ("decision", "why", "replaces")}
        elif kind == "eval" and e.get("perplexity_base") is not None:
            self.perplexity = (float(e["perplexity_base"]), float(e["perplexity_adapter"]))
            self.detail = "held-out perplexity measured; registering"
        elif kind == "eval" and e.get("val_loss") is not None:
            if e.get("base"):
                self.base_val_loss = float(e["val_loss"])
            else:
                self.val_losses.append((int(e.get("step", 0)), float(e["val_loss"])))
            self.total = e.get("total_steps") or e.get("total") or self.total
        elif kind == "converted":
            self.detail = f"GGUF: {e.get('tensors')} tensors, rank {e.get('rank')}"
        elif kind == "verified":
            self.detail = f"verification {'passed' if e.get('passed') else 'FAILED'} (corr {e.get('correlation', 0):.4f})"
        elif kind == "registered":
            self.registered.append(str(e.get("id")))
            self.outcome, self.detail = self.result_line(), "the app loads it now"
        elif kind == "stopped":
            self.step, self.detail = int(e.get("step", self.step)), ""
            self.finish(f"stopped at step {self.step} — resume with `home train --resume`")
        elif kind == "error":
            self.detail = ""
            self.finish(f"error: {e.get('message')}")
        elif kind == "done":
            self.detail = ""
            self.finish(self.result_line())

    def result_line(self) -> str:
        line = f"registered {', '.join(self.registered)}"
        if self.perplexity:
            line += f" · held-out perplexity {self.perplexity[0]:.2f} → {self.perplexity[1]:.2f}"
            closer = likeness(*self.perplexity)  # a voice run holds out the user's latest words
            if closer is not None:
                line += f" · sounds {abs(closer):g}% {'more' if closer >= 0 else 'less'} like you than the base"
        if self.preference and None not in self.preference:
            line += f" · picks agreed with {self.preference[0]:.0%} → {self.preference[1]:.0%}"
        if self.promotion and self.promotion.get("decision") == "candidate":
            line += f"\n{self.promotion.get('why')} (switch by hand: `home adapters voice {self.registered[-1]}`)"
        return line

    def finish(self, outcome: str) -> None:
        if not self.finished:
            self.outcome, self.finished = outcome, True

    def stats(self) -> str:
        step = f"step {self.step}/{self.total}" if self.total else f"step {self.step}"
        loss = f"loss {self.loss:.3f}" if self.loss is not None else "loss –"
        speed = f"{self.tok_per_s:.0f} tok/s" if self.tok_per_s else "– tok/s"
        return f"{step} · {loss} · {speed} · eta {fmt_duration(self.eta_s)}"

    def validation(self) -> str:
        parts = [f"base {self.base_val_loss:.3f}"] if self.base_val_loss is not None else []
        parts += [f"{v:.3f}@{s}" for s, v in self.val_losses[-4:]]
        return "validation loss: " + (" → ".join(parts) if parts else "–")


RUN_WIDGETS = ("#train-progress", "#train-stats", "#train-loss-label", "#train-losses", "#train-val")


class TrainPanel(Vertical):
    """Hidden until a run starts; stays up with the outcome until closed (its button or Esc)."""

    BINDINGS = [Binding("escape", "cancel_training", "Cancel training"), Binding("escape", "close", "Close")]

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.view = TrainView()

    def compose(self) -> ComposeResult:
        yield Static("Retrain my voice", id="train-title", markup=False)
        yield Static("", id="train-stage", markup=False)
        yield ProgressBar(total=None, show_eta=False, id="train-progress")
        yield Static("", id="train-stats", markup=False)
        yield Static("train loss", id="train-loss-label", markup=False)
        yield Sparkline([], id="train-losses")
        yield Static("", id="train-val", markup=False)
        yield Static("", id="train-outcome", markup=False)
        yield Button("Learn from your picks", id="train-picks", variant="success")
        yield Button("Cancel", id="train-cancel", variant="error")

    def on_mount(self) -> None:
        self.query_one("#train-picks", Button).display = False

    def start(self, run: bool = True) -> None:
        """A fresh run: reset and show. `run=False`: no run (an offer, a refusal), so no progress bar, step
        line, loss chart or validation line: they stood empty ('step 0 · loss – · eta ?') under a refusal."""
        self.view = TrainView()
        for wid in RUN_WIDGETS:
            self.query_one(wid).display = run
        self.query_one("#train-picks", Button).display = False
        self.query_one("#train-cancel", Button).label = "Cancel"
        self.query_one(ProgressBar).update(total=None, progress=0)
        self.display = True
        self.refresh_view()

    def offer(self, picks: int) -> None:
        """Enough new pick-best choices ([training] learn_from_picks_after): offer preference training."""
        self.start(run=False)
        self.view.stage = "ready"
        self.view.detail = "DPO over your voice: it replaces it only if at least as good"
        self.view.finish(f"{picks} new pick-best choices: learn from your picks?")
        self.query_one("#train-picks", Button).display = True
        self.query_one("#train-cancel", Button).label = "Not now"
        self.refresh_view()

    def refuse(self, why: str) -> None:
        """Shown instead of a run that would not start (the CPU guard, too few examples): the reason, and Close."""
        self.start(run=False)
        self.view.stage = "not started"
        self.view.finish(why)
        self.query_one("#train-cancel", Button).label = "Close"
        self.refresh_view()

    def show_event(self, event: dict) -> None:
        self.view.apply(event)
        self.refresh_view()

    def stopping(self) -> None:
        self.view.detail = "stopping at the next step (a checkpoint is kept)…"
        self.refresh_view()

    def ended(self, code: int, why: str | None) -> None:
        """The worker exited; `why` is its last stderr line when no event explained a failure."""
        if not self.view.finished:
            self.view.finish(self.view.result_line() if code == 0 else
                             f"error: the trainer exited with code {code}" + (f": {why}" if why else ""))
        self.query_one("#train-cancel", Button).label = "Close"
        self.refresh_view()

    def refresh_view(self) -> None:
        v = self.view
        self.query_one("#train-title", Static).update(f"Retrain my voice{f' · {v.adapter}' if v.adapter else ''}")
        self.query_one("#train-stage", Static).update(f"stage: {v.stage}" + (f" — {v.detail}" if v.detail else ""))
        if v.total:
            self.query_one(ProgressBar).update(total=v.total, progress=v.step)
        self.query_one("#train-stats", Static).update(v.stats())
        self.query_one(Sparkline).data = list(v.losses)
        self.query_one("#train-val", Static).update(v.validation())
        self.query_one("#train-outcome", Static).update(v.outcome or "")

    @property
    def text(self) -> str:
        """What the panel says, as plain text (tests read it)."""
        return "\n".join(str(w.render()) for w in self.query(Static)
                         if (w.id or "").startswith("train-") and w.display)

    def on_button_pressed(self, event: Button.Pressed) -> None:
        if event.button.id == "train-cancel":
            event.stop()
            self.action_cancel_or_close()
        elif event.button.id == "train-picks":
            event.stop()
            self.app.action_learn_from_picks()  # type: ignore[attr-defined]

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        """Esc cancels the run while it trains, then closes the panel: the footer shows the one that applies."""
        if action == "close":
            return self.view.finished and not self.app.training_running  # type: ignore[attr-defined]
        if action == "cancel_training":
            return self.app.training_cancellable  # type: ignore[attr-defined]
        return True

    def action_cancel_or_close(self) -> None:
        if self.view.finished and not self.app.training_running:  # type: ignore[attr-defined]
            self.action_close()
            return
        self.action_cancel_training()

    def action_cancel_training(self) -> None:
        self.app.action_cancel_training()  # type: ignore[attr-defined]

    def action_close(self) -> None:
        self.display = False
