"""Evidence recall of Home's memory on a year of conversations (issue 13): recall@5/@10 per question type.

The set (bench/data/memory_recall.json, written by bench/data/make_memory_recall.py) is three people ×
15 sessions × 30 turns over 2025 and 156 questions, each labelled with the user turns that answer it.
Everything runs as Home runs it: the turns are logged into a fresh vault (vault.logs), indexed into a
real memory store (ChromaDB + FTS5, the default offline MiniLM) by `index_logs`, and every question is
asked through `home.recall.Recall.recall` — the call a chat turn makes — from a new chat of that user.

Metrics: recall@k = share of a question's evidence turns among the first k memory ids; MRR = 1 / rank of
the first evidence turn (0 past 10); updated facts also report `newer_first` (the newer statement ranks
above the stale one); no-answer questions report `empty` (the memory block stayed empty), and overall
`empty_precision` = no-answer questions among all questions whose block was empty. A gestalt in the
memory ids counts its source turns as found, at its own rank.

Gestalts (`--gestalts distil`): each session is distilled as the app distils it when a session ends
(home/distil.py on the default model, the base without adapters), then the store syncs the gestalt files;
a gestalt shown in the block stands for its source turns. With `--keep`, they are distilled once.
`--gestalts written` takes bench/data/recall_gestalts.py's hand-written lines instead: the ceiling, what
a distiller that reads every fact right would add.

Session summaries (`--summaries extract model`): each session's summary item (vault/session_summary.py:
extractive, or written by the default model from the same sentences, home/session_summary_model.py) is
made in the indexing pass; a hit on one counts only the turns it was drawn from. Every option given is
measured beside the default in one run, one column each.

Query rewrite (`--rewrite`): each question is also rewritten by the default model (home/query_rewrite.py,
greedy, real llama.cpp) and the rewrite searched beside it, as `[memory] rewrite = true` does; the table
gives its recall, and the cost lines the model call's ms per question.

    .venv/bin/python bench/memory_recall.py            # the table
    .venv/bin/python bench/memory_recall.py --json     # one JSON object: overall and per type
    .venv/bin/python bench/memory_recall.py --users maya --sessions 6   # a slice (the test's)
    .venv/bin/python bench/memory_recall.py --gestalts distil --json   # with distilled gestalts
    .venv/bin/python bench/memory_recall.py --summaries extract model  # default | extractive | model summaries
    .venv/bin/python bench/memory_recall.py --rewrite  # default | the default model's query rewrite
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import tempfile
import time
from datetime import datetime, timedelta
from pathlib import Path

import _common as c

DATA = Path(__file__).resolve().parent / "data" / "memory_recall.json"
TYPES = ("single", "multi", "temporal", "updated", "inference", "no-answer")
K = 10


def load(path: Path, users: list[str] | None, sessions: int | None) -> tuple[list[dict], list[dict]]:
    """The people and the questions answerable from what is kept (every evidence turn inside the slice)."""
    data = json.loads(path.read_text("utf-8"))
    people = [dict(u, sessions=u["sessions"][:sessions] if sessions else u["sessions"])
              for u in data["users"] if not users or u["user"] in users]
    kept = {s["id"] for u in people for s in u["sessions"]}
    qs = [q for q in data["questions"] if any(u["user"] == q["user"] for u in people)
          and all(e.rsplit(":", 1)[0] in kept for e in q["evidence"] + q["stale"])]
    return people, qs


def write_logs(root: Path, people: list[dict], minutes: int = 2):
    """The set as Home's own logs: one session file per session, each turn stamped as the set dates it."""
    from vault.layout import Vault
    from vault.logs import ConversationLog

    vault = Vault.open(root)
    for u in people:
        for s in u["sessions"]:
            log = ConversationLog.create(vault, s["id"])
            start = datetime.fromisoformat(s["start"].replace("Z", "+00:00"))
            for i, (role, text) in enumerate(s["turns"]):
                when = (start + timedelta(minutes=minutes * i)).isoformat(timespec="milliseconds")
                log.append({"role": role, "text": text, "user": u["user"], "persona": "sage",
                            "time": when.replace("+00:00", "Z")})
    return vault


def distil_all(vault, people: list[dict]) -> dict:  # noqa: ANN001
    """Every session distilled as the app does when it ends (the default model, no adapters)."""
    from home.distil import distil_session
    from llm.engine import Engine
    from llm.models import default_model_path
    from vault.blas import all_blas_threads
    from vault.logs import read_log

    t0 = time.perf_counter()
    engine = Engine(default_model_path(), n_ctx=1024)
    asked = new = 0
    with all_blas_threads():
        for u in people:
            for s in u["sessions"]:
                records = read_log(vault.logs_dir / f"{s['id']}.jsonl").records
                got = distil_session(engine, vault, u["user"], records, max_turns=len(records))
                asked, new = asked + got.asked, new + len(got.new)
    engine.close()
    return {"distil_asked": asked, "gestalts": new, "distil_s": round(time.perf_counter() - t0, 1)}


def write_gestalts(vault, people: list[dict]) -> dict:  # noqa: ANN001
    """The ceiling: bench/data/recall_gestalts.py's lines, one per fact, each pointing to the turn that said it."""
    from vault.gestalts import Draft, add_gestalts
    from vault.logs import read_log

    sys.path.insert(0, str(DATA.parent))
    from recall_gestalts import written

    new = 0
    for u in people:
        said = {r["id"]: r.get("time") for s in u["sessions"]
                for r in read_log(vault.logs_dir / f"{s['id']}.jsonl").records if "id" in r}
        drafts = [Draft(text, "fact", (source,), said.get(source)) for text, source in written(u["user"], u["sessions"])]
        new += len(add_gestalts(vault, u["user"], drafts))
    return {"gestalts": new}


def score(q: dict, found: list[tuple[str, ...]], block: str) -> dict:
    """`found`: per memory item in rank order, the turns it stands for (a turn: itself; a gestalt: its sources)."""
    ev = q["evidence"]
    row = {"id": q["id"], "type": q["type"], "ids": [list(f) for f in found[:K]], "empty": not block}
    if not ev:
        return row

    def rank(turn: str) -> int | None:
        return next((n for n, f in enumerate(found[:K], 1) if turn in f), None)

    ranks = [r for r in map(rank, ev) if r is not None]
    row.update({f"r@{k}": sum(r <= k for r in ranks) / len(ev) for k in (5, 10)})
    row["rr"] = 1.0 / min(ranks) if ranks else 0.0
    if q["stale"]:
        stale = [r for r in map(rank, q["stale"]) if r is not None]
        # a gestalt standing for both statements shows one line: the newer reads first only if it ranks first
        row["newer_first"] = bool(ranks) and (not stale or min(ranks) < min(stale))
    return row


def summarise(rows: list[dict]) -> dict:
    def mean(key: str, rs: list[dict]) -> float | None:
        vals = [r[key] for r in rs if key in r]
        return round(sum(vals) / len(vals), 4) if vals else None

    out: dict = {}
    answerable = [r for r in rows if r["type"] != "no-answer"]
    out["overall"] = {"questions": len(rows), "recall@5": mean("r@5", answerable),
                      "recall@10": mean("r@10", answerable), "mrr": mean("rr", answerable)}
    empties = [r for r in rows if r["empty"]]
    na = [r for r in rows if r["type"] == "no-answer"]
    out["overall"]["no_answer_empty"] = round(sum(r["empty"] for r in na) / len(na), 4) if na else None
    out["overall"]["empty_precision"] = (round(sum(r["type"] == "no-answer" for r in empties) / len(empties), 4)
                                         if empties else None)
    for t in TYPES:
        rs = [r for r in rows if r["type"] == t]
        if not rs:
            continue
        d = {"questions": len(rs)}
        if t == "no-answer":
            d["empty"] = round(sum(r["empty"] for r in rs) / len(rs), 4)
        else:
            d.update({"recall@5": mean("r@5", rs), "recall@10": mean("r@10", rs), "mrr": mean("rr", rs)})
            if t == "updated":
                d["newer_first"] = mean("newer_first", rs)
        out[t] = d
    return out


def item_cost(people: list[dict], embedder) -> dict:  # noqa: ANN001
    """Embedding time of the whole turns alone vs the turns and their sentence items, in one run (what
    sentence items add to ingest; the ChromaDB/FTS5 writes grow with the item count too)."""
    from vault.blas import all_blas_threads
    from vault.memory_items import turn_items
    from vault.memory_store import MemoryItem

    turns = [MemoryItem(f"{s['id']}:{i}", text, s["id"], i, role, u["user"], "", "")
             for u in people for s in u["sessions"] for i, (role, text) in enumerate(s["turns"], 1)]
    items = [it.text for t in turns for it in turn_items(t)]
    out = {}
    with all_blas_threads():
        for name, texts in (("turns", [t.text for t in turns]), ("items", items)):
            t0 = time.perf_counter()
            for i in range(0, len(texts), 256):
                embedder.embed(texts[i:i + 256])
            out[f"embed_{name}_s"] = round(time.perf_counter() - t0, 2)
    out["embed_ratio"] = round(out["embed_items_s"] / out["embed_turns_s"], 2)
    return out


def run(path: Path, users: list[str] | None, sessions: int | None, progress: bool = False,
        keep: Path | None = None, cost: bool = False, gestalts: str = "none", rewrite: bool = False,
        summaries: str = "none", engine=None) -> dict:  # noqa: ANN001
    from home.recall import Recall
    from vault.blas import all_blas_threads
    from vault.config import MemorySettings
    from vault.embedder import load_embedder
    from vault.gestalts import list_gestalts
    from vault.memory import MemoryStore, index_logs, sync_gestalts

    people, qs = load(path, users, sessions)
    embedder = load_embedder()
    make = None
    if summaries == "extract":
        from vault.session_summary import extract as make
    elif summaries == "model":
        from home.session_summary_model import model_summariser

        make = model_summariser(engine)
    from home.query_rewrite import rewrite_query

    rewriter = (lambda text: rewrite_query(engine, text)) if rewrite else None
    with tempfile.TemporaryDirectory() as tmp:
        reuse = keep is not None and (keep / "logs").is_dir()
        if reuse:
            from vault.layout import Vault

            vault = Vault.open(keep)
        else:
            vault = write_logs(keep or Path(tmp) / "v", people)
        turns = sum(len(s["turns"]) for u in people for s in u["sessions"])
        distilled: dict = {}
        if gestalts == "distil" and not list_gestalts(vault).gestalts:
            distilled = distil_all(vault, people)
        elif gestalts == "written" and not list_gestalts(vault).gestalts:
            distilled = write_gestalts(vault, people)
        elif gestalts == "none" and list_gestalts(vault).gestalts:
            raise ValueError(f"{vault.gestalts_dir}: the kept vault holds gestalts; keep another one to measure "
                             "without them")
        with MemoryStore.open(vault, embedder) as store:
            t0, cpu0 = time.perf_counter(), time.process_time()
            with all_blas_threads():  # the foreground bulk pass, as `home memory reindex` runs it
                rep = index_logs(vault, store, batch_size=256, summaries=make)
                sync_gestalts(vault, store)
            ingest_s, ingest_cpu = time.perf_counter() - t0, time.process_time() - cpu0
            st = store.stats()
            items = st["keyword_items"] + st["parts"]  # every embedded item: turns, gestalts, sentences
            recall = Recall(vault, store, MemorySettings(k=K, budget_tokens=100_000, rewrite=rewrite))
            rows, times, rw_times = [], [], []
            for n, q in enumerate(qs, 1):
                now = datetime.fromisoformat(q["asked"].replace("Z", "+00:00"))
                t = time.perf_counter()
                got = recall.recall(q["question"], q["user"], session=None, now=now,
                                    count_tokens=lambda s: len(s) // 4, rewriter=rewriter)
                times.append((time.perf_counter() - t) * 1e3)
                rows.append(score(q, [h.sources or (h.id,) for h in got.hits], got.block))
                if rewrite:
                    rw_times.append(got.rewrite_ms)
                    rows[-1]["rewrite"] = got.rewrite
                if progress and n % 25 == 0:
                    print(f"  {n}/{len(qs)} questions", file=sys.stderr)
    out = summarise(rows)
    out["cost"] = {"turns": turns, "items": items, "items_per_turn": round(items / max(turns, 1), 3),
                   "ingest_s": round(ingest_s, 2), "ingest_ms_per_turn": round(ingest_s * 1e3 / max(turns, 1), 2),
                   "ingest_cpu_s": round(ingest_cpu, 2),
                   "recall_p50_ms": round(c.pct(times, 50), 1) if times else None,
                   "recall_p95_ms": round(c.pct(times, 95), 1) if times else None,
                   "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
                   "gestalts_indexed": st["gestalts"], **distilled}
    if make is not None:
        n_sessions = sum(len(u["sessions"]) for u in people)
        out["cost"].update(summaries=rep.summaries, summary_s=round(rep.summary_s, 2),
                           summary_ms_per_session=round(rep.summary_s * 1e3 / max(n_sessions, 1), 1))
    if rewrite:
        out["cost"].update(rewrite_p50_ms=round(c.pct(rw_times, 50), 1), rewrite_p95_ms=round(c.pct(rw_times, 95), 1),
                           rewritten=sum(1 for r in rows if r.get("rewrite")))
    if cost:
        out["cost"].update(item_cost(people, embedder))
    out["rows"] = rows
    return out


def table(res: dict) -> str:
    lines = [f"{'type':<10} {'n':>4} {'R@5':>6} {'R@10':>6} {'MRR':>6}  other"]
    for t in ("overall", *TYPES):
        d = res.get(t)
        if not d:
            continue
        other = ""
        if t == "overall":
            other = f"no-answer empty {d['no_answer_empty']}, empty precision {d['empty_precision']}"
        elif t == "updated":
            other = f"newer first {d['newer_first']}"
        elif t == "no-answer":
            lines.append(f"{t:<10} {d['questions']:>4} {'':>6} {'':>6} {'':>6}  block empty {d['empty']}")
            continue
        lines.append(f"{t:<10} {d['questions']:>4} {d['recall@5']:>6.3f} {d['recall@10']:>6.3f} "
                     f"{d['mrr']:>6.3f}  {other}")
    co = res["cost"]
    lines.append(f"\ningest: {co['turns']} turns -> {co['items']} items ({co['items_per_turn']}/turn), "
                 f"{co['ingest_s']} s ({co['ingest_ms_per_turn']} ms/turn, CPU {co['ingest_cpu_s']} s); recall p50 {co['recall_p50_ms']} ms, "
                 f"p95 {co['recall_p95_ms']} ms; peak RSS {co['peak_rss_mb']} MB")
    if co.get("gestalts_indexed"):
        lines.append(f"gestalts: {co['gestalts_indexed']} in memory" + (
            f" (distilled from {co['distil_asked']} turns in {co['distil_s']} s)" if "distil_s" in co else ""))
    if "summary_s" in co:
        lines.append(f"session summaries: {co['summaries']} made in {co['summary_s']} s "
                     f"({co['summary_ms_per_session']} ms per session, in the indexing pass)")
    if "rewrite_p50_ms" in co:
        lines.append(f"query rewrite: {co['rewritten']} questions rewritten, model call p50 {co['rewrite_p50_ms']} ms, "
                     f"p95 {co['rewrite_p95_ms']} ms (inside recall's times)")
    if "embed_ratio" in co:
        lines.append(f"embedding alone: whole turns {co['embed_turns_s']} s, turns + sentence items "
                     f"{co['embed_items_s']} s ({co['embed_ratio']}x)")
    return "\n".join(lines)


def side_by_side(results: dict[str, dict]) -> str:
    """R@5 / R@10 / MRR per type, one column group per variant, each with its change from the first."""
    names = list(results)
    head = f"{'type':<10} {'n':>4}  " + "  ".join(f"{n[:22]:>22}" for n in names)
    lines = [head, f"{'':<16}" + "  ".join(f"{'R@5   R@10   MRR':>22}" for _ in names)]
    base = results[names[0]]
    for t in ("overall", *TYPES):
        if t not in base:
            continue
        if t == "no-answer":
            cells = [f"{'empty ' + format(r[t]['empty'], '.3f'):>22}" for r in results.values()]
        else:
            cells = [f"{r[t]['recall@5']:.3f}  {r[t]['recall@10']:.3f}  {r[t]['mrr']:.3f}".rjust(22)
                     for r in results.values()]
        lines.append(f"{t:<10} {base[t]['questions']:>4}  " + "  ".join(cells))
    if "updated" in base:
        lines.append("updated, newer statement first: " + "  ".join(f"{n} {r['updated']['newer_first']}"
                                                              for n, r in results.items()))
    for n in names[1:]:
        d = [f"{t} {results[n][t]['recall@10'] - base[t]['recall@10']:+.3f}" for t in ("overall", *TYPES)
             if t in base and t != "no-answer"]
        lines.append(f"{n}: R@10 vs {names[0]}: " + ", ".join(d))
    for n, r in results.items():
        lines.append(f"\n[{n}]\n" + table(r).split("\n\n", 1)[1])
    return "\n".join(lines)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", type=Path, default=DATA, help="the conversation set (default bench/data/memory_recall.json)")
    p.add_argument("--users", nargs="+", default=None, help="only these people (default all)")
    p.add_argument("--sessions", type=int, default=None, help="only each person's first N sessions")
    p.add_argument("--json", action="store_true", help="one JSON object: overall, per type, cost")
    p.add_argument("--keep", type=Path, default=None,
                   help="build the vault here once and reuse it (query-side experiments; ingest is not re-timed)")
    p.add_argument("--cost", action="store_true", help="also time embedding whole turns vs turns + sentence items")
    p.add_argument("--rows", action="store_true", help="with --json: every question's ranked ids too")
    p.add_argument("--gestalts", choices=("none", "distil", "written"), default="none",
                   help="distil: every session distilled into gestalts first (the default model), as the app does; "
                        "written: bench/data/recall_gestalts.py's lines (the ceiling: every fact distilled right)")
    p.add_argument("--rewrite", action="store_true",
                   help="also measure the local model's query rewrite (the default model), beside the default")
    p.add_argument("--summaries", nargs="+", choices=("none", "extract", "model"), default=["none"],
                   help="session summary items to measure beside the default: extract (no model), model "
                        "(the default model)")
    args = p.parse_args()
    for var in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"):
        os.environ.setdefault(var, "1")
    os.environ.setdefault("ANONYMIZED_TELEMETRY", "False")
    variants = {"default": {}}
    variants.update({f"summaries {s}": {"summaries": s} for s in args.summaries if s != "none"})
    if args.rewrite:
        variants["rewrite"] = {"rewrite": True}
    if len(variants) > 1 and args.keep:
        print("--keep measures one variant (its store is reused); drop --rewrite/--summaries or --keep",
              file=sys.stderr)
        return 2
    engine = None
    if args.rewrite or "model" in args.summaries:  # the default local model (SmolLM2-135M GGUF), as the app loads it
        from llm.engine import Engine
        from llm.models import default_model_path

        engine = Engine(default_model_path(), n_ctx=2048)
    results = {}
    try:
        for name, opts in variants.items():
            if not args.json and len(variants) > 1:
                print(f"-- {name}", file=sys.stderr)
            results[name] = run(args.data, args.users, args.sessions, progress=not args.json, keep=args.keep,
                                cost=args.cost, gestalts=args.gestalts, engine=engine, **opts)
    except (OSError, ValueError, KeyError) as exc:
        print(f"{args.data}: cannot read the set ({type(exc).__name__}: {exc})", file=sys.stderr)
        return 2
    finally:
        if engine is not None:
            engine.close()
    for res in results.values():
        if not args.rows:
            res.pop("rows")
    if len(results) == 1:
        print(json.dumps(results["default"]) if args.json else table(results["default"]))
    else:
        print(json.dumps({"variants": results}) if args.json else side_by_side(results))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
