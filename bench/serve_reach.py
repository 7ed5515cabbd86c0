"""llama-server started with every registered voice version (before) against the adapters in reach
(Home's `home serve` now: the newest version): time to ready and the server's peak RSS.

A weekly voice retrain keeps every version; `home serve` used to pass each one as `--lora`. The vault is
bench/old_vault.py's `register_versions` (random rank-16 LoRAs of the real model's shapes: files as big
as real ones), no logs. Each layout is started `--repeat` times; medians.

    flock /tmp/home-heavy.lock .venv/bin/python bench/serve_reach.py --versions 40

Here (2 cores, the default SmolLM2-135M Q4_1, 40 versions = 783 MB of adapter files, medians of 3):
every version: ready 0.82 s, peak RSS 965 MB; in reach (1 adapter): ready 0.41 s, peak RSS 191 MB.
llama-server reads every LoRA into memory whole, so RSS grows with the versions (156: ~3 GB).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from datetime import UTC, datetime, timedelta
from pathlib import Path

import _common as c  # noqa: F401 - the repo root on sys.path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import old_vault  # noqa: E402


def peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--versions", type=int, default=40, help="voice versions registered (default 40)")
    p.add_argument("--repeat", type=int, default=3, help="starts per layout (default 3)")
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args()

    from llm.models import default_model_path
    from llm.servers.build import find_server
    from llm.servers.process import ServerProcess
    from vault.layout import Vault
    from vault.manifest import ManifestStore

    binary, model = find_server(), default_model_path()
    if binary is None:
        sys.exit("no llama-server: python -m llm.servers.build")
    with tempfile.TemporaryDirectory() as tmp:
        vault = Vault.open(Path(tmp) / "v")
        start = datetime.now(UTC) - timedelta(weeks=args.versions)
        old_vault.register_versions(vault, model, "me-voice", "voice", "me", args.versions, start, timedelta(weeks=1))
        manifest = ManifestStore(vault).read()
        every = [vault.root / e.file for _, e in sorted(manifest.adapters.items())]
        reach = [vault.root / manifest.adapters[i].file for i in sorted(manifest.in_reach())]
        mb = sum(f.stat().st_size for f in every) / 1e6
        print(f"{args.versions} versions, {mb:.0f} MB of adapter files; in reach: {len(reach)}")
        for label, files in (("every version (before)", every), ("in reach (now)", reach)):
            times, rss = [], []
            for _ in range(args.repeat):
                server = ServerProcess(binary, model, files, n_ctx=1024, n_threads=args.threads).start()
                times.append(server.started_s)
                rss.append(peak_rss_mb(server.proc.pid))
                server.close()
            print(f"{label:24s} {len(files):4d} adapters: ready {statistics.median(times):.2f} s, "
                  f"peak RSS {statistics.median(rss):.0f} MB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
