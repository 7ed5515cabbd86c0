"""Router cost per turn: `Router.decide` vs the bare embedding of the message it cannot avoid.

Why: routing runs before every turn's first token, so its p95 adds straight to time-to-first-token. The
decision is one embedding of the message plus numpy over the centroids and the manifest; this prints both
and their ratio on the labelled messages of tests/test_router_classify.py against a manifest of N fake
adapter entries (scoring reads the manifest only; --adapters 200 shows it scales). Also: Router.load cold
(examples embedded) and warm (centroids from the cache).

Goal (printed as PASS/FAIL): the router's own cost, decide with the vector given, p95 <= 2 ms (the
embedding is the embedder's cost, shared with memory search when the caller passes `vector=`).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import _common as c


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--iters", type=int, default=3, help="passes over the 44 messages (default 3)")
    p.add_argument("--adapters", type=int, default=20, help="manifest entries to score (default 20)")
    args = p.parse_args()

    from home.router import Router
    from tests.test_router_classify import LABELLED
    from vault.config import parse_config
    from vault.embedder import load_embedder
    from vault.layout import Vault
    from vault.manifest import AdapterEntry, Manifest

    embedder = load_embedder(None)
    vault = Vault.open(Path(tempfile.mkdtemp()) / "v")
    t = time.perf_counter()
    router = Router.load(vault, parse_config(""), embedder)
    cold = time.perf_counter() - t
    t = time.perf_counter()
    router = Router.load(vault, parse_config(""), embedder)
    warm = time.perf_counter() - t

    manifest = Manifest()
    tasks, tones = ("chat", "writing", "coding", "planning", "advice"), ("neutral", "upbeat", "stressed", "sad", "angry")
    for i in range(args.adapters):
        manifest.adapters[f"a{i}"] = AdapterEntry(
            id=f"a{i}", name=f"a{i}", file=f"adapters/a{i}/adapter.gguf", base={"fingerprint": "fp"},
            owner="me", kind=("task", "style", "other")[i % 3], tasks=[tasks[i % 5]], tones=[tones[i % 5]])
    router.vault_root = None  # the fake entries have no files; the file check is one stat() each

    texts = [m for m, _, _ in LABELLED] * args.iters
    bare, decide, given = [], [], []
    for text in texts:
        t = time.perf_counter()
        vector = embedder.embed([text])[0]
        bare.append((time.perf_counter() - t) * 1000)
        t = time.perf_counter()
        router.decide(manifest, user="me", text=text, model_fingerprint="fp", model_name="m")
        decide.append((time.perf_counter() - t) * 1000)
        t = time.perf_counter()
        router.decide(manifest, user="me", text=text, model_fingerprint="fp", model_name="m", vector=vector)
        given.append((time.perf_counter() - t) * 1000)
    print(f"Router.load: cold {cold:.2f} s (examples embedded), warm {warm * 1000:.1f} ms (cache)")
    print(f"{'ms per turn':<22}{'p50':>8}{'p95':>8}   ({len(texts)} messages, {args.adapters} manifest entries)")
    for name, xs in (("bare embedding", bare), ("decide", decide), ("decide, vector given", given)):
        print(f"{name:<22}{c.pct(xs, 50):>8.2f}{c.pct(xs, 95):>8.2f}")
    print(f"decide / bare embedding, p50: {c.pct(decide, 50) / c.pct(bare, 50):.2f}x")
    print(f"{c.verdict(c.pct(given, 95) <= 2)}: decide with the vector given, p95 <= 2 ms")


if __name__ == "__main__":
    main()
