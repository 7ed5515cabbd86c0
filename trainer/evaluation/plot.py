"""Pictures of a run: loss curves (train, validation, the base's validation loss) and base-vs-adapter
perplexity side by side, so "did it learn my voice" is one glance, not a table of numbers."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from vault.fsio import atomic_write_bytes


def plot_training(
    path: Path,
    train_losses: Sequence[tuple[int, float]],
    val_losses: Sequence[tuple[int, float]],
    base_val_loss: float | None,
    perplexity: dict | None,
    title: str,
) -> Path:
    """Write a PNG: left, losses by step; right, held-out perplexity base vs adapter (llama.cpp)."""
    from trainer.evaluation.figures import png_bytes, pyplot

    plt = pyplot()

    fig, (ax, bx) = plt.subplots(1, 2, figsize=(10, 4), gridspec_kw={"width_ratios": [2, 1]})
    if train_losses:
        ax.plot(*zip(*train_losses, strict=True), label="train loss", color="#4c72b0", alpha=0.8)
    if val_losses:
        ax.plot(*zip(*val_losses, strict=True), "o-", label="validation loss", color="#dd8452")
    if base_val_loss is not None:
        ax.axhline(base_val_loss, ls="--", color="#55a868", label=f"base model ({base_val_loss:.3f})")
    ax.set_xlabel("step")
    ax.set_ylabel("loss (target tokens)")
    ax.legend()
    ax.grid(alpha=0.3)
    if perplexity:
        names = [k for k in ("base", "base_with_persona", "adapter") if perplexity.get(k) is not None]
        values = [perplexity[k] for k in names]
        colours = {"base": "#55a868", "base_with_persona": "#8172b3", "adapter": "#dd8452"}
        bars = bx.bar([n.replace("_", "\n") for n in names], values, color=[colours[n] for n in names])
        bx.bar_label(bars, fmt="%.2f")
        bx.set_title("held-out perplexity (llama.cpp)")
    else:
        bx.axis("off")
    fig.suptitle(title)
    fig.tight_layout()
    atomic_write_bytes(path, png_bytes(fig))
    return path
