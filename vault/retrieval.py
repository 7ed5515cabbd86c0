"""Retrieval policy, free of storage: when to search, how to rank candidates, how to show them to the model.

Kept apart from vault/memory.py so the rules can be read (and tested) without ChromaDB or an embedder.

Ranking, in order:
1. candidates = the vector list (cosine) and the keyword list (FTS5 bm25), each `pool` deep;
2. reciprocal rank fusion (k=60): a turn found by both lists beats one found by one;
3. a similarity floor on the cosine (every candidate has one, keyword-only ones too), so a shared word
   alone never brings in an unrelated turn; on the turn path nothing is shown unless one turn clears
   MIN_SIMILARITY, and then others may join down to FILL_FLOOR of it (a fact that answers "would I
   enjoy…?" rarely shares its words: measured on bench/memory_recall.py, R@10 0.75 → 0.87 with the
   no-answer blocks unchanged; a search the user types in the memory panel keeps the plain floor);
   questions and requests count for less (they are not facts), and so do the assistant's replies (the
   user's own words are the ground truth; a reply may be invented);
4. recency: among near-equal turns (fused score within 8 %, cosine within 20 %) the newer goes first —
   a fact restated later ("I moved to Lisbon") supersedes the old one ("I live in Berlin");
5. near-identical texts (cosine ≥ 0.95, or the same words) are shown once: the first one kept.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Collection, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field

import numpy as np

from .blas import one_blas_thread

RRF_K = 60
MIN_SIMILARITY = 0.30
QUESTION_WEIGHT = 0.8
ASSISTANT_WEIGHT = 0.9
NEAR_FUSED = 0.08
NEAR_COSINE = 0.20
DUPLICATE_COSINE = 0.95
WINDOW_BOOST = 2.0
FILL_FLOOR = 0.67  # once one turn clears the floor, others may join down to this share of it (cosine 0.20)
WINDOW_FLOOR = 0.5  # share of the similarity floor a turn said inside the question's date window must reach
MAX_LINE_CHARS = 400
WHO = {"user": "the user said", "gestalt": "known about the user"}  # anything else: "you said"

_WORD = re.compile(r"[\w']+", re.UNICODE)
_CHITCHAT = {
    "hi", "hello", "hey", "hiya", "yo", "howdy", "morning", "evening", "afternoon", "night", "good",
    "thanks", "thank", "thx", "ty", "cheers", "you", "ok", "okay", "k", "kk", "cool", "nice", "great",
    "awesome", "sure", "yes", "yeah", "yep", "no", "nope", "nah", "lol", "haha", "hehe", "bye",
    "goodbye", "later", "see", "ya", "cya", "gn", "hmm", "hm", "oh", "ah", "wow", "alright", "fine",
    "how", "are", "r", "u", "doing", "what's", "whats", "up", "sup", "going", "it", "is", "so", "much",
    "a", "lot", "very", "too", "and", "again", "there", "all", "well", "i'm", "im", "am", "perfect",
}
_GREETING = {"hi", "hello", "hey", "hiya", "yo", "howdy", "morning", "evening", "good", "thanks", "thank",
             "cheers", "ok", "okay", "bye", "goodbye", "night", "gn"}
_SOCIAL = {"friend", "buddy", "mate", "pal", "dear", "today", "tonight", "day", "everyone", "guys", "earlier",
           "help", "helping", "great", "you're", "youre", "amazing", "doing", "chat", "talk", "again"}
_MEMORY_CUES = {
    "my", "mine", "me", "i", "i'm", "i've", "i'd", "we", "our", "us", "remember", "remind", "told",
    "said", "mentioned", "last", "before", "earlier", "again", "favorite", "favourite", "usual",
}
STOPWORDS = frozenset(
    "a an the and or but if of to in on at by for with from as is are was were be been being am do does "
    "did doing have has had i me my mine we us our you your he him his she her it its they them their "
    "this that these those what which who whom whose where when why how can could would should will "
    "shall may might must not no yes so than then there here just about into over also very too up out "
    "i'm i've i'd it's what's don't didn't tell know please".split()
)


def words(text: str) -> list[str]:
    return _WORD.findall(text.lower())


def should_retrieve(text: str) -> bool:
    """Cheap rules, no model: greetings, thanks and very short chit-chat never search memory."""
    ws = words(text)
    if not ws:
        return False
    if all(w in _CHITCHAT for w in ws):
        return False  # "hi!", "thanks a lot", "how are you?", "ok cool"
    if ws[0] in _GREETING and all(w in _CHITCHAT or w in _SOCIAL or w in STOPWORDS for w in ws):
        return False  # "good morning, how are you today, my friend?", "hey, thanks again for earlier!"
    if any(w in _MEMORY_CUES for w in ws):
        return True  # "what's my sister's name?", "remember the plan?"
    return len(ws) >= 3 or text.rstrip().endswith("?")


def is_question(text: str) -> bool:
    return text.rstrip().endswith("?")


_ASK = {"tell", "give", "help", "plan", "write", "suggest", "make", "show", "explain", "can", "could", "would",
        "please", "remind", "find", "list", "draft", "translate", "summarise", "summarize", "recommend", "check",
        "describe", "name", "create", "how", "what", "why", "which", "who", "where", "when"}


def is_request(text: str) -> bool:
    """A question, or a message that starts with a request ("Give me…", "Recommend…"): what the user
    asked, not what they told (a fact about them is a statement)."""
    if is_question(text):
        return True
    ws = words(text)
    return bool(ws) and ws[0] in _ASK


def normalise(text: str) -> str:
    return " ".join(words(text))


@dataclass(frozen=True)
class Hit:
    """One remembered turn. `id` is the log record id (`<session>:<turn>`); `time` is ISO-8601 UTC.
    A gestalt (`gestalt:<id>`) carries `sources`: the log turns it was distilled from."""

    id: str
    text: str
    score: float
    time: str
    role: str
    session: str
    sources: tuple[str, ...] = ()

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class Candidate:
    """A turn found by either list, before ranking."""

    id: str
    text: str
    time: str
    epoch: float
    role: str
    session: str
    embedding: np.ndarray
    cosine: float = 0.0
    vec_rank: int | None = None
    kw_rank: int | None = None
    fused: float = field(default=0.0)
    win_rank: int | None = None  # rank by cosine among the candidates said inside the question's date window
    sources: tuple[str, ...] = ()  # a gestalt's source turns


class VectorMatrix:
    """Exact cosine search over every indexed turn's embedding, held in memory (float32, ~1.5 kB a turn).

    Why not ChromaDB's HNSW query: among 100k templated turns it missed 5 of the 8 planted facts even at
    M=64, ef=400 (a one-off fact amid near-duplicate chit-chat is poorly linked into the graph). A
    matrix-vector product costs ~1 ms at 10k turns and ~7–13 ms at 100k on 2 cores, and never misses.
    ChromaDB stays the durable store the matrix is loaded from.
    """

    def __init__(self, dim: int) -> None:
        one_blas_thread()
        self.dim = dim
        self._m = np.zeros((0, dim), dtype=np.float32)
        self._alive = np.zeros(0, dtype=bool)
        self._user = np.zeros(0, dtype=np.int32)
        self._ids: list[str] = []
        self._row: dict[str, int] = {}
        self._codes: dict[str, int] = {}

    def __len__(self) -> int:
        return len(self._row)

    def upsert(self, ids: Sequence[str], users: Sequence[str], vectors: np.ndarray) -> None:
        new = [i for i in dict.fromkeys(ids) if i not in self._row]
        need = len(self._ids) + len(new)
        if need > len(self._m):  # grow by doubling: one background turn must not copy the whole matrix
            cap = max(need, 2 * len(self._m), 1024)
            self._m = np.resize(self._m, (cap, self.dim))
            self._alive = np.concatenate([self._alive[:len(self._ids)], np.zeros(cap - len(self._ids), bool)])
            self._user = np.resize(self._user, cap)
        for i in new:
            self._row[i] = len(self._ids)
            self._ids.append(i)
        rows = [self._row[i] for i in ids]
        self._m[rows] = vectors
        self._alive[rows] = True
        self._user[rows] = [self._codes.setdefault(u, len(self._codes)) for u in users]

    def delete(self, ids: Iterable[str]) -> None:
        for i in ids:
            row = self._row.pop(i, None)
            if row is not None:
                self._alive[row] = False

    def vector(self, ident: str) -> np.ndarray | None:
        row = self._row.get(ident)
        return None if row is None else self._m[row]

    def top(self, q: np.ndarray, n: int, user: str | None = None) -> list[str]:
        """Ids of the `n` rows most similar to `q` (unit length), best first; only `user`'s when given."""
        size = len(self._ids)
        mask = self._alive[:size]
        if user is not None:
            mask = mask & (self._user[:size] == self._codes.get(user, -1))
        valid = int(mask.sum())
        if not valid:
            return []
        n = min(n, valid)
        rows = _top_rows(self._m[:size], q, n, None if valid == size else mask)
        return [self._ids[b] for b in rows]


PARALLEL_ROWS = 32768  # below this a product takes ~3 ms: not worth a second thread
_pool: ThreadPoolExecutor | None = None


def _top_rows(m: np.ndarray, q: np.ndarray, n: int, mask: np.ndarray | None) -> np.ndarray:
    """Row indices of the `n` best `m @ q` (masked-out rows never), best first. A large matrix is split in
    two halves, each scored and cut to its own best `n` on another thread, then merged. Why threads and
    not BLAS's own: the product is memory-bound (100k rows = 150 MB read per query) and one BLAS thread
    stays the rule (vault/blas.py); numpy releases the GIL, so the halves run on both cores."""
    global _pool
    if len(m) < PARALLEL_ROWS or (os.cpu_count() or 1) < 2:
        return _best(m @ q, n, mask, 0)
    if _pool is None:
        _pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="home-matvec")
    half = len(m) // 2
    second = _pool.submit(lambda: _best(m[half:] @ q, n, None if mask is None else mask[half:], half))
    first = _best(m[:half] @ q, n, None if mask is None else mask[:half], 0)
    rows = np.concatenate([first, second.result()])
    scores = m[rows] @ q
    return rows[np.argsort(-scores, kind="stable")][:n]


def _best(sims: np.ndarray, n: int, mask: np.ndarray | None, offset: int) -> np.ndarray:
    if mask is not None:
        sims[~mask] = -np.inf
        n = min(n, int(mask.sum()))
    if n <= 0:
        return np.zeros(0, dtype=np.int64)
    n = min(n, len(sims))
    best = np.argpartition(sims, len(sims) - n)[len(sims) - n:]
    return best[np.argsort(-sims[best], kind="stable")] + offset


def rank(candidates: Iterable[Candidate], query: str, k: int, min_similarity: float = MIN_SIMILARITY,
         window: tuple[float, float] | None = None, fill: float = 1.0) -> list[Hit]:
    """Candidates (with `cosine` and the list ranks filled in) → the best `k` hits, as described above.
    `window` (epoch seconds, from the question's time words: vault/query_plan.py): turns said inside it
    form a third fused list (by cosine) and weigh WINDOW_BOOST times more. `fill` < 1 (the turn path passes
    FILL_FLOOR): once one turn clears the floor, others may join down to `fill` of it."""
    qnorm = normalise(query)
    cands = list(candidates)
    for c in cands:
        if is_request(c.text):
            c.cosine *= QUESTION_WEIGHT
        if c.role == "assistant":
            c.cosine *= ASSISTANT_WEIGHT
    vector = sorted((c for c in cands if c.vec_rank is not None), key=lambda c: -c.cosine)
    for i, c in enumerate(vector, 1):
        c.vec_rank = i  # re-ranked after the question weight
    if window is not None:  # a third list: what was said in the window, by cosine
        inside = sorted((c for c in cands if window[0] <= c.epoch < window[1]), key=lambda c: -c.cosine)
        for i, c in enumerate(inside, 1):
            c.win_rank = i
    pool: list[Candidate] = []
    norms: dict[str, str] = {}  # each text normalised once: the dedupe below compares every pair
    anchored = False
    for c in cands:
        floor = min_similarity * (WINDOW_FLOOR if c.win_rank is not None else 1.0)  # the date says much
        if c.cosine < floor * fill:
            continue  # below the floor
        norms[c.id] = normalise(c.text)
        if norms[c.id] == qnorm:
            continue  # the user's own question asked again
        anchored = anchored or c.cosine >= floor
        c.fused = sum(1.0 / (RRF_K + r) for r in (c.vec_rank, c.kw_rank, c.win_rank) if r is not None)
        if c.win_rank is not None:
            c.fused *= WINDOW_BOOST
        pool.append(c)
    if not anchored:
        return []  # nothing clears the floor itself: weaker turns alone are noise
    pool.sort(key=lambda c: (-c.fused, -c.cosine, -c.epoch))
    ordered = _newer_first_among_equals(pool)
    kept: list[Candidate] = []
    kept_norms: set[str] = set()
    kept_vecs = np.empty((k, len(ordered[0].embedding) if ordered else 0), np.float32)
    for c in ordered:
        if len(kept) >= k:
            break
        # a duplicate of a kept one: the same text normalised, or a near-equal embedding (one product per
        # candidate against every kept row: a dot per pair cost ~1.5 ms of a search)
        if norms[c.id] in kept_norms or (kept and float((kept_vecs[:len(kept)] @ c.embedding).max()) >= DUPLICATE_COSINE):
            continue
        kept_vecs[len(kept)] = c.embedding
        kept_norms.add(norms[c.id])
        kept.append(c)
    top = 2.0 / (RRF_K + 1)  # the best possible fused score: first in both lists
    return [Hit(c.id, c.text, round(c.fused / top, 4), c.time, c.role, c.session, c.sources) for c in kept]


def _near_equal(a: Candidate, b: Candidate) -> bool:
    hi_f, lo_f = max(a.fused, b.fused), min(a.fused, b.fused)
    hi_c, lo_c = max(a.cosine, b.cosine), min(a.cosine, b.cosine)
    return lo_f >= hi_f * (1 - NEAR_FUSED) and lo_c >= hi_c * (1 - NEAR_COSINE)


def _newer_first_among_equals(pool: list[Candidate]) -> list[Candidate]:
    """Insertion pass: a turn moves up past older turns it is near-equal to (never past a clearly better one)."""
    out: list[Candidate] = []
    for c in pool:
        i = len(out)
        while i > 0 and out[i - 1].epoch < c.epoch and _near_equal(out[i - 1], c):
            i -= 1
        out.insert(i, c)
    return out


def memory_block(hits: Sequence[Hit], token_budget: int, count_tokens: Callable[[str], int]) -> str:
    """The facts for the system prompt, dated, within `token_budget` (as measured by `count_tokens`).

    Returns "" when there is nothing to say or not even one fact fits: an empty block costs nothing.
    """
    return fit_memory(hits, token_budget, count_tokens)[0]


def fit_memory(hits: Sequence[Hit], token_budget: int, count_tokens: Callable[[str], int],
               newest_first: bool = True, replaced: Collection[str] = ()) -> tuple[str, list[Hit]]:
    """`memory_block` and the hits that made it in, in rank order (the turn's log lists exactly those).
    `replaced`: ids left out, as a newer hit states a change to them (vault/supersede.py `current`).

    Chosen in rank order within the budget, written newest first (`newest_first=False`: in rank order, as
    before): the default model follows the first of two contradicting lines more often than the last, so an
    old statement that outranks its correction must not come first (bench/knowledge_conflict.py: a voice
    adapter that learnt the stale facts, memory holding both: 50 % of replies followed the newer fact with the
    stale line first, 70 % with the newer first; 100 % when memory held only the newer one)."""
    if not hits or token_budget <= 0:
        return "", []
    header = ("Memory — things said in earlier conversations with this user, with their dates. Prefer "
              "them over older or general knowledge; when two disagree, the newer one is right.")
    lines: dict[str, str] = {}
    for h in hits:
        if h.id in replaced:
            continue
        text = " ".join(h.text.split())
        if len(text) > MAX_LINE_CHARS:
            text = text[: MAX_LINE_CHARS - 1].rstrip() + "…"
        lines[h.id] = f"\n- [{h.time[:10]}] {WHO.get(h.role, 'you said')}: {text}"
    fits = [h for h in hits if h.id in lines]
    # Usually every line fits: one count of the whole block says so (a count of the growing block per hit
    # cost ~2 ms of the turn: llama.cpp's tokenizer is linear in the text, plus ~0.1 ms a call).
    if count_tokens(header + "".join(lines[h.id] for h in fits)) <= token_budget:
        used = fits
    else:  # in rank order, each line kept while the block still fits
        block, used = header, []
        for h in fits:
            if count_tokens(block + lines[h.id]) <= token_budget:
                block += lines[h.id]
                used.append(h)
    # newest first: the same lines (the same budget), stably reordered by date
    order = sorted(used, key=lambda h: h.time, reverse=True) if newest_first else used
    block = header + "".join(lines[h.id] for h in order)
    return (block, used) if used else ("", [])
