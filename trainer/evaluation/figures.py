"""The two steps every plot of Home shares: pyplot on the Agg backend (each plot is a file, and a headless
box or a trainer subprocess has no display) and the finished figure as PNG bytes, closed (pyplot keeps an
open figure alive), so its caller writes the file atomically."""

from __future__ import annotations

import io
from typing import Any


def pyplot() -> Any:
    """`matplotlib.pyplot`, imported lazily (~0.3 s) on the Agg backend."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def png_bytes(fig: Any, dpi: int = 100) -> bytes:
    """`fig` as PNG bytes; the figure is closed."""
    buf = io.BytesIO()
    try:
        fig.savefig(buf, format="png", dpi=dpi)
    finally:
        pyplot().close(fig)
    return buf.getvalue()
