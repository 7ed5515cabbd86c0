"""Long-term memory: every logged turn and every gestalt, searchable by meaning and by words.

The public names live here; the work is in these rooms:
- vault/memory_store.py — `MemoryStore`: ChromaDB vectors + SQLite FTS5 keywords, their writes and
  counts, one owning process (forgetting is vault/forget.py: the sources first, then the store);
- vault/memory_items.py — what a log record becomes: `MemoryItem`s, the turn and its sentences;
- vault/hybrid_search.py — one search over both indexes, fused per turn;
- vault/memory_sync.py — what goes in: `index_logs` / `reindex` from the conversation logs (the source
  of truth, crash-safe checkpoint), `sync_gestalts` from the gestalt files.
"""

from __future__ import annotations

from .memory_items import MemoryItem, indexable
from .memory_store import GESTALT_PREFIX, MemoryBusyError, MemoryStore, MemoryStoreError
from .memory_sync import BATCH_SIZE, GestaltSync, IndexReport, exclusions, index_logs, reindex, sync_gestalts

__all__ = [
    "BATCH_SIZE", "GESTALT_PREFIX", "GestaltSync", "IndexReport", "MemoryBusyError", "MemoryItem", "MemoryStore",
    "MemoryStoreError", "exclusions", "index_logs", "indexable", "reindex", "sync_gestalts",
]
