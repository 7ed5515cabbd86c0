"""The knowledge-conflict rule measured (issue 14 item 3): when memory holds a newer fact than an adapter
learnt ("I moved to Lisbon" remembered; a voice adapter trained on logs saying "I live in Berlin"), does the
reply follow memory, the adapter, or neither?

One run: a voice adapter is trained through the real worker (`home train` on logs, the same job) on old logs
where the user states ten stale facts (bench/conflict/facts.py); then each fact is asked twice (20 questions,
greedy, after a short history) per condition: with and without the adapter and memory; the memory block
(vault.retrieval's real block) holding the newer fact, in its current place (home.prompt.build_messages: a
late system message just before the question), at the top (first system message) or inside the user message;
the adapter at lower scales while memory is used; then the hard case, memory holding the stale turn too (the
old logs are indexed as well; older date), ranked below or above the newer one: with both lines kept (the
rule before), written in rank order or newest first, in each place, at scale 0.5, and in candidate wordings
(bench/conflict/placement.py); and with the stale line left out as replaced by the newer one (the rule now:
vault/supersede.py), also for another of the old lines (which the rule may not recognise as replaced). Each reply is judged memory / adapter / both / neither by whole words.

    .venv/bin/python bench/knowledge_conflict.py [--vault DIR] [--steps 30] [--out r.json]

`--vault DIR` keeps the trained adapter; a second run with the same DIR skips the training. The training
must run under the shared lock: flock /tmp/home-heavy.lock .venv/bin/python bench/knowledge_conflict.py …
"""

from __future__ import annotations

import json
import resource
import sys
import tempfile
import time
from pathlib import Path

import _common

from bench.conflict.facts import FACTS, classify, old_log_turns, table, tally
from bench.conflict.placement import HEADERS, messages, with_header

USER = "kai"
NEW_DATE, OLD_DATE = "2026-11-20T09:00:00Z", "2025-03-02T09:00:00Z"


def train(vault, steps: int) -> str:
    """Old logs full of the stale facts → `home train` on logs (the real worker) → the user's voice adapter."""
    from home.worker import start_worker
    from trainer.protocol.job import Job
    from vault.logs import ConversationLog
    from vault.manifest import ManifestStore

    entry = ManifestStore(vault).read().adapters.get(f"{USER}-voice-1")
    if entry is not None:
        print(f"reusing {entry.id} from {vault.root}")
        return entry.id
    turns = old_log_turns()
    for i in range(0, len(turns), 6):
        log = ConversationLog.create(vault)
        for home_line, said in turns[i:i + 6]:
            log.append({"user": USER, "persona": None, "role": "assistant", "text": home_line})
            log.append({"user": USER, "persona": None, "role": "user", "text": said})
    job = Job(vault=str(vault.root), source="logs", user=USER, steps=steps, rank=8, batch_size=4, lr=2e-3,
              max_length=64, device="cpu", val_fraction=0.1)
    t0 = time.perf_counter()
    with open(vault.runs_dir / "bench-worker.log", "w") as err:
        proc = start_worker(job, stderr=err)
        events = []
        for line in proc.stdout:
            events.append(json.loads(line))
            e = events[-1]
            if e["event"] in ("phase", "step", "verified", "registered", "error"):
                print(f"  {time.perf_counter() - t0:6.0f} s {e['event']}: "
                      f"{e.get('detail') or e.get('loss') or e.get('id') or e.get('message') or e.get('passed')}",
                      flush=True)
    if proc.wait() != 0:
        sys.exit(f"knowledge_conflict: the trainer failed ({proc.returncode}); see {vault.runs_dir}/bench-worker.log")
    return next(e["id"] for e in events if e["event"] == "registered")


def memory_block(engine, fact, spec: dict, question: str) -> str:
    """vault.retrieval's block for this fact: the newer statement; with `stale`, the stale one too (older),
    ranked below the newer one, or above it with `stale_first` (the search may rank either way); `rank_order`
    writes the lines in rank order (the rule before 994373b: not newest first); the stale line is left out
    as replaced by the newer one (vault/supersede.py, what home/recall.py does) unless `keep_replaced`."""
    from vault.retrieval import Hit, fit_memory
    from vault.supersede import current

    hits = [Hit(f"new:{fact.key}", fact.new_line(), 0.8, NEW_DATE, "user", "s-new")]
    if spec.get("stale"):
        score = 0.9 if spec.get("stale_first") else 0.7
        line = fact.stale_lines()[1 + fact.questions.index(question) if spec.get("other_line") else 0]
        old = Hit(f"old:{fact.key}", line, score, OLD_DATE, "user", "s-old")
        hits = sorted([*hits, old], key=lambda h: -h.score)
    block, _ = fit_memory(hits, 400, lambda t: len(engine.tokenize(t)), newest_first=not spec.get("rank_order"),
                          replaced={} if spec.get("keep_replaced") else current(hits, question))
    return with_header(block, HEADERS.get(spec.get("header")))


def conditions(adapter: str) -> list[tuple[str, dict]]:
    a, m = [(adapter, 1.0)], {"memory": True}
    s = {"memory": True, "stale": True}  # the stale line left out when replaced (the rule now)
    k = {**s, "keep_replaced": True}  # both lines in the block (the rule before)
    return [
        ("base, no memory", {"stack": [], "memory": False}),
        ("adapter, no memory", {"stack": a, "memory": False}),
        ("base, memory (new fact), late (current)", {"stack": [], **m}),
        ("adapter, memory late (current)", {"stack": a, **m}),
        ("adapter, memory top (first system msg)", {"stack": a, **m, "place": "top"}),
        ("adapter, memory in the user message", {"stack": a, **m, "place": "user"}),
        ("adapter x0.5, memory late", {"stack": [(adapter, 0.5)], **m}),
        ("adapter x0.25, memory late", {"stack": [(adapter, 0.25)], **m}),
        # memory holds the stale turn too (the old logs are indexed as well): the hard case
        ("base, +stale turn, both kept", {"stack": [], **k}),
        ("adapter, +stale, new ranked first, both kept", {"stack": a, **k}),
        ("adapter, +stale first, both kept, rank order", {"stack": a, **k, "stale_first": True, "rank_order": True}),
        ("adapter, +stale first, both kept, newest first", {"stack": a, **k, "stale_first": True}),
        ("adapter, +stale, both kept, top", {"stack": a, **k, "place": "top"}),
        ("adapter, +stale, both kept, in the user message", {"stack": a, **k, "place": "user"}),
        ("adapter x0.5, +stale, both kept", {"stack": [(adapter, 0.5)], **k}),
        *[(f"adapter, +stale, both kept, '{h}' wording", {"stack": a, **k, "header": h}) for h in HEADERS],
        ("adapter, +stale, both kept, user msg, 'direct'", {"stack": a, **k, "place": "user", "header": "direct"}),
        # the rule now: the stale line left out as replaced by the newer one (vault/supersede.py)
        ("base, +stale turn, replaced left out (now)", {"stack": [], **s}),
        ("adapter, +stale first, replaced left out (now)", {"stack": a, **s, "stale_first": True}),
        ("adapter, +stale, new first, replaced left out", {"stack": a, **s}),
        ("adapter x0.5, +stale, replaced left out", {"stack": [(adapter, 0.5)], **s}),
        # another of the old lines ("Home is Berlin, has been for years."): the rule may not see the change
        ("adapter, +other stale line first, both kept", {"stack": a, **k, "stale_first": True, "other_line": True}),
        ("adapter, +other stale line first, rule now", {"stack": a, **s, "stale_first": True, "other_line": True}),
    ]


def run_condition(engine, params, spec: dict) -> tuple[dict, list[dict]]:
    labels, rows = [], []
    for fact in FACTS:
        for q in fact.questions:
            block = memory_block(engine, fact, spec, q) if spec["memory"] else None
            msgs = messages(q, block, spec.get("place", "late"))
            reply = "".join(engine.stream(msgs, params, adapters=spec["stack"])).strip()
            label = classify(reply, fact)
            labels.append(label)
            rows.append({"fact": fact.key, "question": q, "reply": reply, "label": label})
    return tally(labels), rows


def main() -> None:
    p = _common.parser(__doc__.split("\n")[0], iters=1)
    p.add_argument("--vault", type=Path, default=None, help="keep (and reuse) the trained adapter here")
    p.add_argument("--steps", type=int, default=30, help="training steps for the stale-fact adapter (default 30)")
    p.add_argument("--max-tokens", type=int, default=24)
    p.add_argument("--only", default=None, help="run only conditions whose name contains this")
    p.add_argument("--out", type=Path, default=None, help="write the table and every reply as JSON")
    args = p.parse_args()

    from llm.engine import Engine
    from llm.params import GenParams
    from vault.layout import Vault

    vault = Vault.open(args.vault or Path(tempfile.mkdtemp(prefix="conflict-")))
    adapter = train(vault, args.steps)
    from vault.manifest import ManifestStore

    entry = ManifestStore(vault).read().adapter(adapter)
    engine = Engine(_common.model_path(args.model), n_ctx=1024, n_threads=args.threads)
    engine.load_adapter(adapter, vault.root / entry.file)
    params = GenParams(temperature=0.0, max_tokens=args.max_tokens, seed=0)
    results, replies = {}, {}
    t0 = time.perf_counter()
    for name, spec in conditions(adapter):
        if args.only and args.only not in name:
            continue
        results[name], replies[name] = run_condition(engine, params, spec)
        print(f"  {time.perf_counter() - t0:6.0f} s {name}: follows memory {results[name]['memory_rate']:.0%}",
              flush=True)
    engine.close()
    print(f"\n{len(FACTS)} facts x 2 questions, greedy, {args.max_tokens} tokens; adapter {adapter} "
          f"({entry.training.get('steps')} steps, held-out perplexity {entry.metrics['perplexity']['base']:.2f} "
          f"-> {entry.metrics['perplexity']['adapter']:.2f})\n")
    print(table(results))
    print(f"\npeak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MB (this process; the "
          f"trainer ran in its own)")
    if args.out:
        args.out.write_text(json.dumps({"results": results, "replies": replies}, indent=1))


if __name__ == "__main__":
    main()
