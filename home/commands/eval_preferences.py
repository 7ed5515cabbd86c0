"""`home eval ADAPTER --source preferences`: preference accuracy and reward margin on the user's pick-best
pairs, the adapter against where it started (a DPO adapter's starting voice, else the base).

Which pairs: for an adapter trained on preferences, only the pairs it held out (their ids are in its
manifest entry), so the number is a held-out one; for any other adapter, every usable pair (it never
trained on them). Measured in llama.cpp like the rest of `home eval` (trainer/evaluation/preference.py).
"""

from __future__ import annotations

import argparse
import json

from home.context import Context
from home.errors import UsageError
from home.stack import StackSpec, activate, resolve_stack


def run(args: argparse.Namespace) -> int:
    from trainer.data.preferences import load_pairs
    from trainer.evaluation.preference import before_after

    ctx = Context(args)
    manifest = ctx.manifest()
    info = ctx.model_info
    [(adapter_id, scale)] = resolve_stack(manifest, [StackSpec(args.adapter)], info.fingerprint, info.name)
    entry = manifest.adapters[adapter_id]
    report = load_pairs(ctx.vault, ctx.user, info.fingerprint, set(manifest.adapters))
    held = (entry.dataset or {}).get("heldout_ids") if (entry.dataset or {}).get("source") == "preferences" else None
    pairs = [p for p in report.pairs if held is None or p.id in set(held)]
    if not pairs:
        raise UsageError(f"{report.file}: no usable preference pairs to evaluate on "
                         f"({len(report.skipped)} skipped{'; none of the adapter held out' if held else ''})")
    start = (entry.training or {}).get("start")
    start = start if start in manifest.adapters else None
    engine = ctx.engine()
    after = resolve_stack(manifest, [StackSpec(adapter_id, scale)], info.fingerprint, info.name)
    before = resolve_stack(manifest, [StackSpec(start)], info.fingerprint, info.name) if start else []
    activate(engine, ctx.vault, manifest, after + [s for s in before if s not in after])
    beta = float((entry.training or {}).get("beta") or 0.1)
    result = before_after(engine, pairs, before, after, beta=beta)
    out = {"adapter": adapter_id, "reference": start or "(base)", "pairs": len(pairs),
           "heldout": held is not None, "skipped": report.counts(), **result,
           "promotion": entry.extra.get("promotion")}
    if args.json:
        print(json.dumps(out, ensure_ascii=False))
        return 0
    b, a = result["before"], result["after"]
    which = "held-out pairs" if held is not None else "pairs (none trained on)"
    print(f"preference accuracy of {adapter_id} on {len(pairs)} {which} of {ctx.user}, against {out['reference']}")
    print(f"  {'':<12} {'accuracy':>9} {'margin':>9} {'reward margin':>14}")
    print(f"  {'before':<12} {b['accuracy']:>9.2f} {b['margin']:>9.2f} {b['reward_margin']:>14.3f}")
    print(f"  {'after':<12} {a['accuracy']:>9.2f} {a['margin']:>9.2f} {a['reward_margin']:>14.3f}")
    if report.skipped:
        print("  skipped: " + ", ".join(f"{n} {k}" for k, n in sorted(report.counts().items())))
    if out["promotion"]:
        print(f"  promotion: {out['promotion'].get('decision')}: {out['promotion'].get('why')}")
    return 0
