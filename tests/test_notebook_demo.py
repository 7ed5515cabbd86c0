"""notebooks/fine_tune_demo.ipynb runs top to bottom (so it cannot rot) and is committed without outputs.

It runs at tiny settings through its parameters (HOME_DEMO_*): 2 training steps on the CPU, short replies,
one held-out sample, the tiny random-weight Llama GGUF (tests/families.py) in place of the default model;
the real trainer worker. What the notebook does (a live session, the worker's events, the hot-load, the
plot, the evaluation table) is the same for any model; on the default model its training, verification
and evaluation made this test ~130 s on a loaded 2-core box.
"""

from __future__ import annotations

import time
from pathlib import Path

import nbformat
import pytest

NOTEBOOK = Path(__file__).resolve().parent.parent / "notebooks" / "fine_tune_demo.ipynb"


def test_notebook_is_committed_without_outputs():
    nb = nbformat.read(NOTEBOOK, as_version=4)
    nbformat.validate(nb)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert code, "no code cells"
    dirty = [i for i, c in enumerate(nb.cells) if c.cell_type == "code" and (c.outputs or c.execution_count)]
    assert not dirty, f"{NOTEBOOK.name}: cells {dirty} carry outputs; clear them before committing"
    assert "widgets" not in nb.metadata
    params = [c for c in code if "parameters" in c.metadata.get("tags", [])]
    assert len(params) == 1 and "HOME_DEMO_STEPS" in params[0].source  # what the run below sets


def outputs_text(cell) -> str:
    parts = []
    for out in cell.get("outputs", []):
        parts.append(out.get("text", ""))
        data = out.get("data", {})
        parts.append(data.get("text/plain", ""))
        parts.append(data.get("text/html", ""))
    return "\n".join(parts)


@pytest.mark.slow
def test_notebook_runs_top_to_bottom(tmp_path, monkeypatch):
    from nbclient import NotebookClient

    from tests.families import tiny_gguf

    vault = tmp_path / "vault"
    for name, value in {"HOME_DEMO_STEPS": "2", "HOME_DEMO_MAX_TOKENS": "8", "HOME_DEMO_SAMPLES": "1",
                        "HOME_DEMO_DEVICE": "cpu", "HOME_DEMO_VAULT": str(vault),
                        "HOME_DEMO_MODEL": str(tiny_gguf("llama")),
                        "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}.items():
        monkeypatch.setenv(name, value)
    nb = nbformat.read(NOTEBOOK, as_version=4)
    t0 = time.monotonic()
    NotebookClient(nb, timeout=600, kernel_name="python3",
                   resources={"metadata": {"path": str(NOTEBOOK.parent)}}).execute()
    print(f"notebook ran in {time.monotonic() - t0:.1f} s")
    code = [c for c in nb.cells if c.cell_type == "code"]
    text = "\n".join(outputs_text(c) for c in code)
    assert "registered 'wren-voice-1'" in text and "step 2/2" in text
    assert "adapters: loaded wren-voice-1" in text  # hot-loaded into the session opened before training
    assert "its replies are unchanged" in text  # back on the base: the same greedy replies as before
    assert any("image/png" in out.get("data", {}) for c in code for out in c.outputs), "no loss plot"
    assert "held-out examples" in text and "catchphrases per sample" in text  # the eval table
    manifest = (vault / "manifest.json").read_text()
    assert '"wren-voice-1"' in manifest and '"passed": true' in manifest
