"""Cheap text statistics that say whether generations sound like the target voice, not like a chatbot.

Perplexity says how well an adapter predicts the target text; these say what its *own* writing looks
like: does it reuse the target's words (vocabulary overlap), does it repeat itself (distinct-2), does it
pick up the target's recurring phrases (catchphrases), and has it shed the assistant boilerplate that
instruct models fall back on (clichés). Pure Python, no model: unit-testable on fixed strings.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Sequence

_WORD = re.compile(r"[a-z0-9]+(?:'[a-z0-9]+)*")
_QUOTES = str.maketrans({"\u2019": "'", "\u2018": "'", "\u201c": '"', "\u201d": '"'})

# Assistant boilerplate, lowercase; one regex so overlapping phrasings ("as an ai language model")
# count once, longest first.
CLICHES: tuple[str, ...] = (
    "as an ai language model", "as a language model", "as an ai", "i'm just an ai",
    "i'd be happy to help", "i would be happy to help", "i'd be glad to help", "happy to assist",
    "i hope this helps", "i hope that helps", "great question", "that's a great question", "certainly!",
    "absolutely!", "of course!", "it's important to note", "it is important to note",
    "feel free to ask", "let me know if you have any", "i'm here to help", "i don't have personal",
    "i do not have personal", "i'm sorry, but", "i apologize for any confusion",
)
_CLICHE_RE = re.compile(
    "|".join(re.escape(c) for c in sorted(CLICHES, key=len, reverse=True)), re.IGNORECASE
)

# Function words: an n-gram made only of these ("of the", "it is a") is grammar, not a catchphrase.
STOPWORDS = frozenset(
    "a an the and or but if of to in on at by for with from as is are was were be been being am it its "
    "it's this that these those i you he she we they me him her us them my your his our their what which "
    "who whom do does did not no so than then there here just very can will would should could have has "
    "had i'm you're it's don't".split()
)


def normalize(text: str) -> str:
    return text.translate(_QUOTES).lower()


def words(text: str) -> list[str]:
    """Lowercase word tokens (apostrophes kept inside words: "don't" is one word)."""
    return _WORD.findall(normalize(text))


def ngrams(tokens: Sequence[str], n: int) -> list[tuple[str, ...]]:
    return [tuple(tokens[i : i + n]) for i in range(len(tokens) - n + 1)]


def distinct_n(texts: Sequence[str], n: int = 2) -> float:
    """Unique n-grams / all n-grams, pooled over `texts` (n-grams never span two texts); 0.0 if none."""
    grams = [g for t in texts for g in ngrams(words(t), n)]
    return len(set(grams)) / len(grams) if grams else 0.0


def vocab_overlap(generated: Sequence[str], targets: Sequence[str]) -> float:
    """Fraction of the generated word types that occur in the targets' vocabulary; 0.0 if nothing generated.

    Asymmetric on purpose: a short sample cannot cover a large target vocabulary, but every word it
    uses can come from it.
    """
    gen = {w for t in generated for w in words(t)}
    vocab = {w for t in targets for w in words(t)}
    return len(gen & vocab) / len(gen) if gen else 0.0


def cliches(text: str) -> list[str]:
    """The assistant clichés in `text`, lowercase, in order (non-overlapping)."""
    return [m.group(0).lower() for m in _CLICHE_RE.finditer(normalize(text))]


def cliche_rate(texts: Sequence[str]) -> float:
    """Clichés per text."""
    return sum(len(cliches(t)) for t in texts) / len(texts) if texts else 0.0


def catchphrases(targets: Sequence[str], limit: int = 5, min_docs: int = 2) -> list[str]:
    """The targets' most frequent 2–4-word phrases that recur in at least `min_docs` targets.

    Ranked by how many targets use them, then by total uses, then longer first; a phrase inside an
    already chosen one with no more targets of its own is dropped ("rain or" under "rain or shine"),
    as is a window shifted by one word along a longer chosen phrase (a 5-word catchphrase is one entry,
    not two overlapping 4-grams), and phrases of function words alone are skipped.
    """
    docs: Counter[tuple[str, ...]] = Counter()
    total: Counter[tuple[str, ...]] = Counter()
    first: dict[tuple[str, ...], tuple[int, int]] = {}  # (target, word) where it first appears
    for d, text in enumerate(targets):
        toks, here = words(text), set()
        for n in (2, 3, 4):
            for i, g in enumerate(ngrams(toks, n)):
                if not all(w in STOPWORDS for w in g):
                    total[g] += 1
                    here.add(g)
                    first.setdefault(g, (d, i))
        docs.update(here)
    ranked = sorted((g for g, d in docs.items() if d >= min_docs),
                    key=lambda g: (-docs[g], -total[g], -len(g), first[g]))
    chosen: list[tuple[str, ...]] = []
    covered: list[tuple[str, ...]] = []  # chosen phrases and the shifted windows that extend them
    for gram in ranked:
        if any(_contains(big, gram) and docs[big] >= docs[gram] for big in covered):
            continue
        covered.append(gram)
        shifted = len(gram) > 2 and any(
            (_contains(big, gram[:-1]) or _contains(big, gram[1:])) and docs[big] >= docs[gram] for big in chosen
        )
        if shifted:
            continue
        chosen = [c for c in chosen if not (_contains(gram, c) and docs[gram] >= docs[c])] + [gram]
        if len(chosen) >= limit:
            break
    return [" ".join(g) for g in chosen]


def count_phrase(text: str, phrase: str) -> int:
    """Occurrences of a word sequence in `text`, on word boundaries."""
    gram = tuple(phrase.split())
    return sum(1 for g in ngrams(words(text), len(gram)) if g == gram)


def catchphrase_rate(texts: Sequence[str], phrases: Sequence[str]) -> float:
    """Catchphrase uses per text (all phrases together)."""
    if not texts:
        return 0.0
    return sum(count_phrase(t, p) for t in texts for p in phrases) / len(texts)


def _contains(big: tuple[str, ...], small: tuple[str, ...]) -> bool:
    n = len(small)
    return n <= len(big) and any(big[i : i + n] == small for i in range(len(big) - n + 1))
