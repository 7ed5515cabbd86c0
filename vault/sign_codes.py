"""Sign-bit codes of the vector file's rows: where a large store's search finds its candidates.

Why: an exact scan reads every row (100k items = 150 MB of float32 per query): memory-bound, 42.6 / 48.1 ms
of CPU per whole search at p50 / p95 on the shared 2-core machine, over the 25 ms a search may take. One
bit per dimension — is the row above the rows' mean there? — is 48 bytes a row (4.8 MB at 100k); the
Hamming distance to the query's bits ranks rows cheaply, and the nearest `candidates` are then scored
exactly from the float32 rows (vault/vector_file.py), so a search returns exact cosines, in exact order,
among what it found: 12.3 / 14.4 ms of CPU, the same top-5 texts and recall@3 (bench/memory_search.py).
Centring on the mean matters: MiniLM's dimensions are not centred on zero; on real MiniLM vectors among
100k, plain sign bits kept 94.3 % of the exact top-56 at 2000 candidates, centred ones 96.5 % (98.7 %
at 4000, and 99.9 % of the top 20).

The codes are a cache beside the vector file, derived from it: `vectors-<gen>.sign` (the rows' bits, in
row order) and `vectors-<gen>.mean` (the mean they were taken around and how many rows it was taken
over). Rows appended since are coded at the next search; the mean is taken again (and every row recoded,
once) when the rows have doubled since. A torn or missing file only costs recoding. A read-only reader
beside the owning app (vault/memory_reader.py) codes what the files lack in memory and writes nothing.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from .fsio import FILE_MODE, atomic_write_bytes

CHUNK = 32768  # rows coded per step (a 384-d chunk: 48 MB of float32 read)
RECHECK = 1024  # rows recoded when a process first reads the codes (1.5 MB of float32 at 384-d)
SAMPLE = 256  # rows a read-only reader codes again to check the file's codes are around the mean it read
FAR = np.uint16(0xFFFF)  # a masked-out row's distance: never a candidate
GROUP = 3  # 64-bit words whose bit counts (at most 192) are summed in a byte before widening


class SignCodes:
    """The sign codes of one vector file generation. Not thread-safe: the store's mutex guards it."""

    def __init__(self, folder: Path, gen: int, dim: int, readonly: bool = False) -> None:
        self.dim = dim
        self.readonly = readonly  # code in memory only: another process owns the files
        self.width = -(-dim // 64) * 8  # bytes per row, whole uint64 words
        self.sign = Path(folder) / f"vectors-{gen}.sign"
        self.mean_path = Path(folder) / f"vectors-{gen}.mean"
        self._mean: np.ndarray | None = None
        self._mean_rows = 0
        # one contiguous array per 64-bit word, the scan reads it in order; columns past `_n` are room for
        # appends: a turn's few new rows are written in place, not the whole array copied and transposed
        self._cols = np.zeros((self.width // 8, 0), np.uint64)
        self._n = 0
        # scratch (word, ones, distances per query, mask, far, byte sums per query), reused: a fresh 1 MB array a
        # query costs page faults
        self._buf: tuple[np.ndarray, ...] = (np.empty(0, np.uint64), np.empty(0, np.uint8),
                                             np.empty((1, 0), np.uint16), np.empty(0, np.bool_), np.empty(0, np.uint16),
                                             np.empty((1, 0), np.uint8))

    @property
    def _codes(self) -> np.ndarray:
        """The coded rows, (rows, words)."""
        return self._cols[:, :self._n].T

    def _put(self, start: int, codes: np.ndarray) -> None:
        """Codes (rows, words) for rows `start`…; the room grows by an eighth (4096 rows at least) when full."""
        end = start + len(codes)
        if end > self._cols.shape[1]:
            room = np.zeros((self.width // 8, max(end, self._cols.shape[1] + max(4096, self._cols.shape[1] // 8))),
                            np.uint64)
            room[:, :start] = self._cols[:, :start]
            self._cols = room
        self._cols[:, start:end] = codes.T
        self._n = end

    def _bits(self, rows: np.ndarray) -> np.ndarray:
        """(n, dim) float32 → (n, width/8) uint64: bit set where the row is above the mean."""
        packed = np.packbits(np.asarray(rows, np.float32) > self._mean, axis=1)
        if packed.shape[1] < self.width:
            packed = np.pad(packed, ((0, 0), (0, self.width - packed.shape[1])))
        return np.ascontiguousarray(packed).view(np.uint64)

    def _load_mean(self) -> None:
        try:
            raw = np.frombuffer(self.mean_path.read_bytes(), np.float32)
        except OSError:
            return
        if len(raw) == self.dim + 1:
            self._mean, self._mean_rows = raw[:-1].copy(), int(raw[-1])

    def update(self, matrix: np.ndarray) -> None:
        """Code the rows of `matrix` (the mapped vector file) not coded yet; take the mean again (and
        recode all) when there is none or the rows have doubled since it was taken."""
        rows = len(matrix)
        own = False  # a mean taken here that the files do not hold (read-only): their codes are not ours
        if self._mean is None:
            self._load_mean()
        if self._mean is None or rows > 2 * self._mean_rows:
            self._new_mean(matrix)
            own = self.readonly
        if self._n == 0:
            # the codes are appended without an fsync (a search must not wait for the disk): after a power
            # loss their tail may hold zeros, so a process recodes the last RECHECK rows it finds, once
            codes = self._read()[:0] if own else self._read()
            codes = codes[:max(0, len(codes) - RECHECK)]
            if self.readonly and not self._agree(codes, matrix):  # the owner re-centred between our reads
                self._new_mean(matrix)
                codes = codes[:0]
            self._put(0, codes)
        done = self._n
        if done > rows:  # the vector file lost a torn append: so do the codes
            if not self.readonly:
                os.truncate(self.sign, rows * self.width)
            self._n = done = rows
        if done == rows:
            return
        new = np.concatenate([self._bits(matrix[s:min(s + CHUNK, rows)]) for s in range(done, rows, CHUNK)])
        if not self.readonly:
            fd = os.open(self.sign, os.O_RDWR | os.O_CREAT, FILE_MODE)
            try:
                os.pwrite(fd, new.tobytes(), done * self.width)
            finally:
                os.close(fd)
        self._put(done, new)

    def _new_mean(self, matrix: np.ndarray) -> None:
        """Take the rows' mean; every row is coded again around it (written, unless read-only)."""
        rows = len(matrix)
        total = np.zeros(self.dim, np.float64)
        for start in range(0, rows, CHUNK):
            total += matrix[start:start + CHUNK].sum(axis=0, dtype=np.float64)
        self._mean, self._mean_rows = (total / max(rows, 1)).astype(np.float32), rows
        if not self.readonly:
            atomic_write_bytes(self.mean_path, np.append(self._mean, np.float32(rows)).astype(np.float32).tobytes())
            self.sign.unlink(missing_ok=True)
        self._n = 0

    def _agree(self, codes: np.ndarray, matrix: np.ndarray) -> bool:
        """Whether codes read from the file were taken around the mean read before them: a sample of rows
        coded again (a row's vector never changes, its code only with the mean)."""
        n = min(len(codes), len(matrix))
        if n == 0:
            return True
        rows = np.unique(np.linspace(0, n - 1, min(n, SAMPLE)).astype(np.int64))
        return bool(np.array_equal(codes[rows], self._bits(matrix[rows])))

    def _read(self) -> np.ndarray:
        try:
            raw = self.sign.read_bytes()
        except OSError:
            return np.zeros((0, self.width // 8), np.uint64)
        whole = len(raw) // self.width * self.width  # a torn last row is coded again
        return np.frombuffer(raw[:whole], np.uint64).reshape(-1, self.width // 8).copy()

    def candidates_many(self, qs: np.ndarray, n: int, mask: np.ndarray | None) -> list[np.ndarray]:
        """For each row of `qs` (a search's query, or a question's parts, home/recall.py): row indices,
        ascending, of the `n` rows nearest it by Hamming distance (masked-out rows never; rows tied with the
        n-th nearest too, so a few more than `n` may come back). Each word of the codes is read once for all
        the queries, while it is in cache (three queries on 160k rows of random codes: ~4.3 ms of CPU
        against 5.2-7.2 ms one after another)."""
        rows = self._n
        if self._buf[0].shape[0] < rows or self._buf[2].shape[0] < len(qs):
            room, many = self._cols.shape[1], max(len(qs), self._buf[2].shape[0])
            self._buf = (np.empty(room, np.uint64), np.empty(room, np.uint8), np.empty((many, room), np.uint16),
                         np.empty(room, np.bool_), np.empty(room, np.uint16), np.empty((many, room), np.uint8))
        word, ones, out, far = (b[:rows] for b in (self._buf[0], self._buf[1], self._buf[3], self._buf[4]))
        dist, part = self._buf[2][:len(qs), :rows], self._buf[5][:len(qs), :rows]
        qbits = self._bits(qs)
        words = qbits.shape[1]
        for w in range(words):
            col = self._cols[w, :rows]
            for j in range(len(qs)):
                np.bitwise_xor(col, qbits[j, w], out=word)
                # GROUP words' counts summed in bytes (<= 192 fits), widened into the distances once per group:
                # a uint8 + uint16 add casts through a buffer, ~2x a same-type one (random codes, 160k rows: 1.5 -> 1.3 ms)
                if w % GROUP == 0:
                    np.bitwise_count(word, out=part[j])
                else:
                    np.bitwise_count(word, out=ones)
                    np.add(part[j], ones, out=part[j])
                if w % GROUP == GROUP - 1 or w == words - 1:
                    if w < GROUP:
                        np.copyto(dist[j], part[j])
                    else:
                        np.add(dist[j], part[j], out=dist[j])
        if mask is not None:  # FAR where masked out, by arithmetic (0.15 ms at 160k rows; `dist[~mask] = FAR`: ~1 ms)
            np.logical_not(mask[:rows], out=out)
            np.multiply(out, FAR, out=far, casting="unsafe")
            np.bitwise_or(dist, far, out=dist)
        return [self._nearest(d, n) for d in dist]

    def _nearest(self, dist: np.ndarray, n: int) -> np.ndarray:
        """The rows of the `n` smallest distances (and those tied with the n-th), ascending."""
        # the n-th nearest's distance by bisection on counts: ~10 passes of compare-and-count over the rows in
        # a reused mask, cheaper than a histogram (np.bincount copies the distances into a fresh int64 array,
        # and a masked-out row's FAR makes it 65536 bins): 0.52 -> 0.42 ms at 160k rows
        seen = self._buf[3][:len(dist)]

        def upto(cut: int) -> int:
            np.less_equal(dist, cut, out=seen)
            return int(np.count_nonzero(seen))

        live = upto(self.width * 8)
        if n <= 0 or live == 0:
            return np.zeros(0, np.int64)
        n = min(n, live)
        low, cut, at_cut = 0, self.width * 8, live  # at_cut: rows at distance <= cut
        while low < cut:
            mid = (low + cut) // 2
            count = upto(mid)
            if count >= n:
                cut, at_cut = mid, count
            else:
                low = mid + 1
        if at_cut <= 2 * n:
            return np.flatnonzero(dist <= cut)
        # many rows tied at the cut (repeated texts): all nearer ones, then the first of the tied
        below = np.flatnonzero(dist < cut)
        return np.union1d(below, np.flatnonzero(dist == cut)[:n - len(below)])
