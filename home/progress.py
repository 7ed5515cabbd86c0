"""Trainer events as terminal output: a redrawn progress bar on a TTY; elsewhere (a log file, CI,
`nohup`) plain lines, at least one every LOG_EVERY_S while anything runs, so a log never goes quiet."""

from __future__ import annotations

import time
from typing import IO

BAR = 28
LOG_EVERY_S = 30.0


def fmt_bytes(n: float | None) -> str:
    if not n:
        return "?"
    return f"{n / 2**30:.2f} GiB" if n >= 2**30 else f"{n / 2**20:.0f} MiB"


def fmt_duration(seconds: float | None) -> str:
    if seconds is None or seconds != seconds or seconds < 0:
        return "?"
    s = int(round(seconds))
    return f"{s // 3600}h{s % 3600 // 60:02d}m" if s >= 3600 else f"{s // 60}m{s % 60:02d}s"


def progress_line(event: dict) -> str:
    """`[#####·····] 12/40 loss 2.310 lr 1.9e-04 220 tok/s eta 1m05s` for a step event."""
    step, total = int(event.get("step", 0)), max(1, int(event.get("total", 0) or 1))
    filled = min(BAR, round(BAR * step / total))
    parts = [f"[{'#' * filled}{'·' * (BAR - filled)}] {step}/{total}"]
    if event.get("loss") is not None:
        parts.append(f"loss {event['loss']:.3f}")
    if event.get("lr") is not None:
        parts.append(f"lr {event['lr']:.1e}")
    if event.get("tokens_per_s"):
        parts.append(f"{event['tokens_per_s']:.0f} tok/s")
    parts.append(f"eta {fmt_duration(event.get('eta_s'))}")
    if event.get("peak_host_bytes"):
        parts.append(f"peak {fmt_bytes(event['peak_host_bytes'])}")
    return " ".join(parts)


class ProgressPrinter:
    """Renders each trainer event; without a terminal, a step line every 10 steps or LOG_EVERY_S."""

    def __init__(self, out: IO[str], tty: bool, every_s: float = LOG_EVERY_S):
        self.out, self.tty, self.every_s = out, tty, every_s
        self._last_line = time.monotonic()

    def _line(self, text: str) -> None:
        self.out.write(text + "\n")
        self.out.flush()
        self._last_line = time.monotonic()

    def __call__(self, event: dict) -> None:
        kind = event.get("event")
        due = time.monotonic() - self._last_line >= self.every_s
        if kind == "step":
            line = progress_line(event)
            if self.tty:
                self.out.write("\r" + line + "\033[K")
                self.out.flush()
            elif due or int(event.get("step", 0)) % 10 == 0 or event.get("step") == event.get("total"):
                self._line(line)
            return
        if kind == "heartbeat":  # the worker is busy inside one long stage
            if not self.tty and due:
                self._line(f"  still {event.get('stage')}: {fmt_duration(event.get('stage_s'))} in this stage, "
                           f"memory {fmt_bytes(event.get('rss_bytes'))} (peak {fmt_bytes(event.get('peak_host_bytes'))})")
            return
        if self.tty:
            self.out.write("\r\033[K")
        text = _describe(event)
        if text:
            self._line(text)


def render_event(event: dict, out: IO[str], tty: bool) -> None:
    """One event, without state (the time-based lines need a ProgressPrinter)."""
    ProgressPrinter(out, tty)(event)


def _describe(e: dict) -> str | None:
    kind = e.get("event")
    if kind == "started":
        return f"training '{e.get('adapter')}' from {e.get('source')} on {e.get('model')}" + (
            " (resuming)" if e.get("resume") else "") + "".join(
            f"\n  put right from an interrupted run: {r}" for r in e.get("recovered") or [])
    if kind == "dataset":
        return e.get("report")
    if kind == "phase":
        return e.get("detail") or f"phase: {e.get('name')}"
    if kind == "eval":
        if e.get("perplexity_base") is not None:
            return (f"held-out perplexity (llama.cpp): base {e['perplexity_base']:.2f} → adapter "
                    f"{e['perplexity_adapter']:.2f} over {e.get('tokens')} tokens")
        if e.get("val_loss") is not None:
            return f"  validation loss {e['val_loss']:.4f} at step {e.get('step')}"
        if e.get("stage") == "preference":
            return (f"preference accuracy on {e.get('pairs')} held-out pairs: {e.get('accuracy_before')} → "
                    f"{e.get('accuracy_after')}, reward margin {e.get('reward_margin_after')}")
        if e.get("stage") == "promotion":
            return ("made your voice: " if e.get("decision") == "promoted" else "") + str(e.get("why"))
        return None
    if kind == "checkpoint":
        return f"  checkpoint saved at step {e.get('step')}"
    if kind == "stopped":
        return f"stopped at step {e.get('step')}/{e.get('total')}: continue with `home train --resume`"
    if kind == "converted":
        return f"converted to GGUF: {e.get('tensors')} tensors, rank {e.get('rank')}"
    if kind == "verified":
        ok = "passed" if e.get("passed") else "FAILED"
        return (f"verification {ok}: logits correlation {e.get('correlation', 0):.4f}, "
                f"top-1 agreement {e.get('top1_agreement', 0):.3f}" + (f" ({e['reason']})" if e.get("reason") else ""))
    if kind == "registered":
        line = f"registered adapter '{e.get('id')}' ({e.get('path')}); plot: {e.get('plot')}"
        if (e.get("promotion") or {}).get("decision") == "candidate":
            line += f"\n  a candidate, not your voice: switch by hand with `home adapters voice {e.get('id')}`"
        return line
    if kind == "done":
        mem = f" (peak memory {fmt_bytes(e['peak_host_bytes'])}" if e.get("peak_host_bytes") else ""
        if mem and e.get("peak_gpu_bytes"):
            mem += f", GPU {fmt_bytes(e['peak_gpu_bytes'])}"
        return "done" + (mem + ")" if mem else "")
    if kind == "error":
        return f"home: error: {e.get('message')}"
    if kind == "log":
        return None  # library chatter is on the worker's stderr already
    return None
