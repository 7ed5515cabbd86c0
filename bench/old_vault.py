"""A vault after ~3 years of daily use, for bench/old_vault_times.py: what scales with the vault's age.

Why: every other bench builds one thing big (logs for search, vectors for memory); a user of three years
has all of it at once — thousands of sessions with old mtimes, a retrained voice every week (each
version registered, none removed), a persona retrained a dozen times, hundreds of gestalts, a memory
index over every turn, and a run folder per training. The logs come from bench/memory_vaults.py
(templated turns, written whole), each file's mtime set to its last turn's time, as years of appends
leave them. Adapters are random LoRAs of the real model's shapes (tests/loras.py) at rank 16, the
voice's default: their files are as big as real ones. Run folders have a real run's files (checkpoints,
best/, peft/, the adapter's GGUF) with one byte each: their count is real, their size is reported from a
real run instead (117 MB for a default-model voice run here, two thirds of it the two checkpoints).

    flock /tmp/home-heavy.lock .venv/bin/python bench/old_vault.py /tmp/oldvault --sessions 7000
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import _common as c  # noqa: F401 - the repo root on sys.path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import memory_vaults as mv  # noqa: E402

RUN_FILES = ("job.json", "training.png", "adapter.gguf", "best/adapter_model.safetensors",
             "best/adapter_config.json", "peft/adapter_model.safetensors", "peft/adapter_config.json",
             "checkpoints/settings.json") + tuple(
    f"checkpoints/checkpoint-{s}/{f}" for s in (32, 36)
    for f in ("adapter_model.safetensors", "training_args.bin", "tokenizer.json", "tokenizer_config.json",
              "adapter_config.json", "rng_state.pth", "scheduler.pt", "optimizer.pt", "chat_template.jinja",
              "trainer_state.json"))


def _iso(t: datetime) -> str:
    return t.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def set_log_mtimes(vault) -> int:  # noqa: ANN001
    """Each log's mtime at its last record's time (years of appends leave them so)."""
    n = 0
    for p in vault.logs_dir.glob("*.jsonl"):
        last = json.loads(p.read_bytes().rstrip(b"\n").rsplit(b"\n", 1)[-1])
        t = datetime.fromisoformat(last["time"].replace("Z", "+00:00")).timestamp()
        os.utime(p, (t, t))
        n += 1
    return n


def register_versions(vault, model: Path, name: str, kind: str, owner: str, count: int,  # noqa: ANN001
                      start: datetime, every: timedelta, seed: int = 0) -> list[str]:
    """`count` versions of `name` (`<name>-1` … `<name>-<count>`), one per `every`, each a distinct random
    LoRA file with its run folder; returns the ids, oldest first."""
    from llm.gguf_meta import read_model_info
    from tests.loras import make_random_lora
    from vault.fsio import file_sha256
    from vault.manifest import AdapterEntry, ManifestStore

    info = read_model_info(model)
    entries, ids = [], []
    for v in range(1, count + 1):
        ident, when = f"{name}-{v}", start + every * (v - 1)
        target = vault.adapters_dir / ident / "adapter.gguf"
        target.parent.mkdir(parents=True, exist_ok=True)
        make_random_lora(model, target, rank=16, seed=seed + v, scale_std=0.002)
        (target.parent / "metrics.json").write_text(json.dumps({"adapter": ident}))
        entries.append(AdapterEntry(
            id=ident, name=name, file=f"adapters/{ident}/adapter.gguf", sha256=file_sha256(target),
            base={"fingerprint": info.fingerprint, "name": model.name}, owner=owner, kind=kind, rank=16,
            alpha=16.0, training={"context_window": 4, "steps": 36}, created=_iso(when)))
        run = vault.runs_dir / f"{name}-{when:%Y%m%d-%H%M%S}-{1000 + v}"
        for rel in RUN_FILES:
            (run / rel).parent.mkdir(parents=True, exist_ok=True)
            (run / rel).write_bytes(b"{}" if rel.endswith(".json") else b"x")
        (run / "state.json").write_text(json.dumps({"status": "done", "pid": 1000 + v, "adapter": ident,
                                                    "updated": f"{when:%Y-%m-%dT%H:%M:%SZ}"}))
        ids.append(ident)
    with ManifestStore(vault).update() as m:
        for e in entries:
            m.add_adapter(e)
        if kind == "voice":
            m.ensure_user(owner)["voice_adapter"] = ids[-1]
    if kind == "persona":  # as `home train --per-persona` leaves it: the card names the newest version
        from trainer.worker.per_persona import point_persona

        point_persona(vault, owner, ids[-1])
    return ids


def add_facts(vault, count: int, start: datetime, days: int) -> int:  # noqa: ANN001
    """`count` gestalts of user "me", one every few days, each citing a turn of the log of its time."""
    from vault.gestalts import Draft, add_gestalts

    per = max(1, len(list(vault.logs_dir.glob("*.jsonl"))) // count)
    drafts = []
    for i in range(count):
        s, o = mv.SUBJECTS[i % len(mv.SUBJECTS)], mv.OBJECTS[(i * 7) % len(mv.OBJECTS)]
        when = start + timedelta(days=days * i / count)
        drafts.append(Draft(text=f"{s.capitalize()} cares about {o} (note {i}).", kind="fact",
                            sources=(f"bench-{i * per:05d}:1",), said=_iso(when)))
    return len(add_gestalts(vault, "me", drafts))


def index_memory(vault) -> float:  # noqa: ANN001
    """The memory index over every turn and gestalt, as `home memory reindex` leaves it (each distinct
    text embedded once: a 100k vault in minutes instead of an hour; the rows are as many)."""
    from vault.blas import all_blas_threads
    from vault.embedder import load_embedder
    from vault.memory import MemoryStore, index_logs, sync_gestalts

    t0 = time.perf_counter()
    with MemoryStore.open(vault, mv.DistinctTexts(load_embedder())) as store, all_blas_threads():
        index_logs(vault, store, batch_size=256,
                   on_batch=lambda k: print(f"  indexed {k}", end="\r", flush=True))
        sync_gestalts(vault, store)
    print()
    return time.perf_counter() - t0


def build(root: Path, sessions: int, turns: int, voices: int, personas: int, facts: int, days: int,
          memory: bool = True) -> dict:
    from llm.models import default_model_path

    start = datetime.now(UTC).replace(microsecond=0) - timedelta(days=days)
    t0 = time.perf_counter()
    vault, _ = mv.build_vault(root, sessions * turns, per_session=turns, distinct=3000, days=days, start=start)
    n_logs = set_log_mtimes(vault)
    model = default_model_path()
    every = timedelta(days=days / max(1, voices))
    voice_ids = register_versions(vault, model, "me-voice", "voice", "me", voices, start, every)
    persona_ids = register_versions(vault, model, "sage-persona", "persona", "sage", personas, start,
                                    timedelta(days=days / max(1, personas)), seed=10_000)
    n_facts = add_facts(vault, facts, start, days)
    built = {"root": str(root), "sessions": n_logs, "turns": sessions * turns, "voice_versions": len(voice_ids),
             "persona_versions": len(persona_ids), "gestalts": n_facts, "build_s": round(time.perf_counter() - t0, 1)}
    if memory:
        built["index_s"] = round(index_memory(vault), 1)
    return built


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("root", type=Path, help="where to build it (must not exist)")
    p.add_argument("--sessions", type=int, default=7000, help="sessions (default 7000: ~6 a day)")
    p.add_argument("--turns", type=int, default=16, help="turns per session (default 16)")
    p.add_argument("--voices", type=int, default=156, help="voice versions (default 156: weekly for 3 years)")
    p.add_argument("--personas", type=int, default=12, help="persona adapter versions (default 12)")
    p.add_argument("--facts", type=int, default=400, help="gestalts (default 400)")
    p.add_argument("--days", type=int, default=1095, help="the span, ending now (default 1095: 3 years)")
    p.add_argument("--no-memory", action="store_true", help="skip the memory index")
    a = p.parse_args()
    os.umask(0o077)  # a vault is private; doctor fails a file others can read
    if a.root.exists():
        print(f"old_vault: {a.root} exists; give a new folder", file=sys.stderr)
        return 2
    print(json.dumps(build(a.root, a.sessions, a.turns, a.voices, a.personas, a.facts, a.days,
                           memory=not a.no_memory), indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
