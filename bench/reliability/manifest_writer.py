"""The process the manifest kind kills: registers and removes adapters in a loop through the real paths
(the trainer's `register_adapter`, `home adapters add`, `home adapters remove`, the last two through the
CLI's own `main` in this process), saying on stdout what it is about to change and what it changed.

    python bench/reliability/manifest_writer.py VAULT LORA.gguf RUN

Lines: `ready`, then per operation `removing ID` before a removal, `added ID` / `removed ID` after it
returned (durable from then on).
"""

from __future__ import annotations

import contextlib
import io
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from home.cli import main  # noqa: E402
from llm.gguf_meta import read_model_info  # noqa: E402
from llm.models import default_model_path  # noqa: E402
from trainer.protocol.register import register_adapter  # noqa: E402
from vault.layout import Vault  # noqa: E402
from vault.manifest import ManifestStore  # noqa: E402

KEEP = 4  # adapters in the manifest before the loop removes the oldest


def cli(*args: str) -> str:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        rc = main(["--vault", str(vault.root), *args])
    if rc != 0:
        raise SystemExit(f"home {' '.join(args)}: exit {rc}")
    return out.getvalue()


def say(line: str) -> None:
    print(line, flush=True)


vault = Vault.open(sys.argv[1])
lora, run = Path(sys.argv[2]), sys.argv[3]
info = read_model_info(default_model_path())
say("ready")
for k in range(1, 10_000):
    adapters = ManifestStore(vault).read().adapters
    if len(adapters) >= KEEP:
        oldest = min(adapters.values(), key=lambda e: (e.created, e.id)).id
        say(f"removing {oldest}")
        cli("adapters", "remove", oldest)
        say(f"removed {oldest}")
    elif k % 2:
        reg = register_adapter(vault, name=f"r{run}x{k}", gguf=lora, peft_dir=None, extra_files=[],
                               base={"fingerprint": info.fingerprint, "name": info.name}, owner="me", kind="style",
                               tasks=[], tones=[], rank=2, alpha=2.0, dataset={}, metrics={}, training={},
                               verification={})
        say(f"added {reg.id}")
    else:
        printed = cli("adapters", "add", str(lora), "--name", f"a{run}x{k}", "--kind", "style")
        say("added " + re.search(r"registered adapter '([^']+)'", printed).group(1))
