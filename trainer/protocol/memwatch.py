"""Peak memory per stage of a training run, and a heartbeat while a stage is long and silent.

Why a sampling thread: the process's own peak (`ru_maxrss`) only ever grows, so it cannot say which
stage reached it; reading /proc/self/statm every 50 ms can, and costs nothing measurable. CUDA keeps
its own exact peak counter, reset at each stage. The heartbeat gives a log file a line at least every
`heartbeat_s` even while one step, a conversion or a verification takes minutes.
"""

from __future__ import annotations

import os
import resource
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

Emit = Callable[..., Any]
_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


def rss_bytes(pid: int | str = "self") -> int:
    """A process's resident set now (Linux); elsewhere this process's peak so far, the best the OS
    offers (0 for another process, or one that has ended)."""
    try:
        with open(f"/proc/{pid}/statm") as fh:
            return int(fh.read().split()[1]) * _PAGE
    except (OSError, ValueError, IndexError):
        if pid != "self":
            return 0
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return int(peak) if sys.platform == "darwin" else int(peak) * 1024


M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # glibc mallopt parameters
MMAP_THRESHOLD = 1 << 20
# The same, for a process not started yet, plus transparent huge pages for those mmapped blocks: the
# page faults of fresh blocks cost a checkpointed CPU step ~30% of its time with 4 KiB pages (16 vs 21
# tok/s measured, same peak). Tunables are read at process start only, so the worker gets them as env.
GLIBC_TUNABLES = (f"glibc.malloc.hugetlb=1:glibc.malloc.mmap_threshold={MMAP_THRESHOLD}:"
                  f"glibc.malloc.trim_threshold={MMAP_THRESHOLD}")


def worker_env(env: dict[str, str]) -> dict[str, str]:
    """`env` for a trainer worker: the allocator tunables added (a user's own GLIBC_TUNABLES kept)."""
    mine = env.get("GLIBC_TUNABLES")
    return {**env, "GLIBC_TUNABLES": f"{mine}:{GLIBC_TUNABLES}" if mine else GLIBC_TUNABLES}


def bound_allocator(threshold: int = MMAP_THRESHOLD) -> bool:
    """Make glibc give large freed blocks back to the OS at once. Why: by default glibc raises its mmap
    threshold each time a big block is freed, so torch's CPU activations soon come from the heap, where
    freed memory stays resident and fragments: a checkpointed 8 × 480-token step of the 135M model
    peaked at 6.1 GB that way and at 1.5 GB with a fixed threshold (bench/train_memory.py). A fixed
    threshold also stops that adjustment. Linux/glibc only; elsewhere a no-op (False)."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        import ctypes

        libc = ctypes.CDLL("libc.so.6")
        return bool(libc.mallopt(M_MMAP_THRESHOLD, threshold)) and bool(libc.mallopt(M_TRIM_THRESHOLD, threshold))
    except (OSError, AttributeError):  # musl or another libc: nothing to tune
        return False


def _cuda_peak(reset: bool) -> int | None:
    """The CUDA allocator's peak since the last reset, without importing torch or waking CUDA."""
    torch = sys.modules.get("torch")
    if torch is None or not torch.cuda.is_available() or not torch.cuda.is_initialized():
        return None
    peak = int(torch.cuda.max_memory_allocated())
    if reset:
        torch.cuda.reset_peak_memory_stats()
    return peak


class MemoryWatch:
    """Wraps a trainer `emit`: each `phase` event closes the stage before it and carries that stage's
    peaks as `memory` ({stage, peak_host_bytes, peak_gpu_bytes, seconds}); `step` events carry the
    running host peak; a `heartbeat` event goes out when nothing was emitted for `heartbeat_s`."""

    def __init__(self, emit: Emit, first_stage: str = "start", interval: float = 0.05,
                 heartbeat_s: float = 30.0):
        self._emit, self.interval, self.heartbeat_s = emit, interval, heartbeat_s
        self._lock = threading.Lock()
        self.stage, self._stage_t0 = first_stage, time.time()
        self.children: list[int] = []  # processes whose memory is the run's too (the ranks of --gpus N)
        self.stage_peak = self.run_peak = rss_bytes()
        self.stages: list[dict] = []
        self._last_emit = time.time()
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._run, name="memwatch", daemon=True)
        self._thread.start()

    def watch_children(self, pids: list[int]) -> None:
        """Count these processes' resident sets with this one's from now on (an empty list: stop)."""
        with self._lock:
            self.children = list(pids)

    def _rss(self) -> int:
        return rss_bytes() + sum(rss_bytes(pid) for pid in self.children)

    def _run(self) -> None:
        while not self._done.wait(self.interval):
            now = self._rss()
            with self._lock:
                self.stage_peak = max(self.stage_peak, now)
                self.run_peak = max(self.run_peak, now)
                quiet = time.time() - self._last_emit >= self.heartbeat_s
            if quiet:
                self(
                    "heartbeat", stage=self.stage, stage_s=round(time.time() - self._stage_t0, 1),
                    rss_bytes=now, peak_host_bytes=self.stage_peak,
                )

    def close_stage(self, next_stage: str | None = None) -> dict:
        """The peaks of the stage that ends now; a new stage named `next_stage` starts."""
        now = self._rss()
        with self._lock:
            peak = max(self.stage_peak, now)
            self.run_peak = max(self.run_peak, peak)
            record = {"stage": self.stage, "peak_host_bytes": peak, "peak_gpu_bytes": _cuda_peak(reset=True),
                      "seconds": round(time.time() - self._stage_t0, 2)}
            self.stages.append(record)
            self.stage, self._stage_t0, self.stage_peak = next_stage or self.stage, time.time(), now
        return record

    def __call__(self, kind: str, /, **fields: Any) -> Any:
        if kind == "phase" and fields.get("name"):
            fields["memory"] = self.close_stage(str(fields["name"]))
        elif kind == "step":
            fields.setdefault("peak_host_bytes", max(self.stage_peak, self._rss()))
        elif kind in ("done", "error"):
            fields["memory"] = self.close_stage()
            fields["peak_host_bytes"] = self.run_peak
            fields["peak_gpu_bytes"] = max((s["peak_gpu_bytes"] or 0 for s in self.stages), default=0) or None
        with self._lock:
            self._last_emit = time.time()
        return self._emit(kind, **fields)

    def stop(self) -> None:
        self._done.set()
        self._thread.join(timeout=1.0)
