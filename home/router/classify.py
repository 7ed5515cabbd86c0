"""Task and tone classifiers: nearest centroid over embedded example sentences.

Why nearest centroid: ~15-20 sentences per label are enough, a user's own label needs only a few lines in
config.toml, and the answer explains itself (whose examples the message is closest to). Vectors are
centred on the mean of all of a classifier's examples before comparing: that removes what every example
shares (being a request to an assistant) and lifted held-out accuracy on tests/test_router_classify.py
from 86 to 91% (tasks) and 64 to 73% (tones) with MiniLM. Per turn the cost is one embedding and a
(labels x dim) product; the examples are embedded once and the centroids cached in `<vault>/router/`,
keyed by the embedder and a hash of the examples, so editing a label or switching embedder rebuilds them.
"""

from __future__ import annotations

import hashlib
import io
import json
import tomllib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from vault.config import RouterSettings
from vault.errors import ConfigError
from vault.fsio import atomic_write_bytes, ensure_private_dir

EXAMPLES = Path(__file__).with_name("examples.toml")
METHOD = "centred-centroid-v1"  # part of the cache key: a new method never reads an old cache
TEMPERATURE = 0.05  # softmax over cosine similarities; 0.05 spreads confidences over 0.3-1.0

Examples = dict[str, tuple[str, ...]]  # label → example sentences


@dataclass(frozen=True)
class Prediction:
    label: str
    confidence: float
    probs: dict[str, float]  # every label's probability, summing to 1

    def p(self, label: str) -> float:
        return self.probs.get(label, 0.0)


@dataclass(frozen=True)
class Classifier:
    labels: tuple[str, ...]
    centroids: np.ndarray  # (labels, dim), centred, unit rows
    mean: np.ndarray  # (dim,) the mean of all examples, subtracted before comparing

    @classmethod
    def fit(cls, labels: tuple[str, ...], vectors: list[np.ndarray]) -> Classifier:
        """`vectors[i]`: the unit embeddings of label i's examples."""
        mean = np.concatenate(vectors).mean(axis=0)
        rows = [_unit(_unit(v - mean).mean(axis=0)) for v in vectors]
        return cls(labels, np.stack(rows).astype(np.float32), mean.astype(np.float32))

    def classify(self, vector: np.ndarray) -> Prediction:
        sims = self.centroids @ _unit(vector - self.mean)
        z = np.exp((sims - sims.max()) / TEMPERATURE)
        probs = z / z.sum()
        best = int(probs.argmax())
        return Prediction(self.labels[best], round(float(probs[best]), 4),
                          {label: round(float(p), 4) for label, p in zip(self.labels, probs, strict=True)})


def _unit(x: np.ndarray) -> np.ndarray:
    norm = np.linalg.norm(x, axis=-1, keepdims=True)
    return x / np.where(norm == 0, 1, norm)


def builtin_examples() -> dict[str, Examples]:
    """{"tasks": {label: sentences}, "tones": {…}} from the package's examples.toml."""
    data = tomllib.loads(EXAMPLES.read_text(encoding="utf-8"))
    return {dim: {label: tuple(s) for label, s in data[dim].items()} for dim in ("tasks", "tones")}


def label_examples(settings: RouterSettings, config_path: str) -> tuple[Examples, Examples]:
    """The example sentences of every configured task and tone label: the built-in ones plus config's.

    A label with none at all cannot be classified: `ConfigError` naming the file and the field."""
    builtin = builtin_examples()
    out = []
    for dim, extra_key in (("tasks", "task_examples"), ("tones", "tone_examples")):
        extra = getattr(settings, extra_key)
        labels = getattr(settings, dim)
        for label in extra:
            if label not in labels:
                raise ConfigError(f"{config_path}: router.{extra_key}.{label}: not one of router.{dim} "
                                  f"({', '.join(labels)}); add it there too")
        examples: Examples = {}
        for i, label in enumerate(labels):
            sentences = builtin[dim].get(label, ()) + tuple(extra.get(label, ()))
            if not sentences:
                raise ConfigError(f"{config_path}: router.{dim}[{i}]: label {label!r} has no example sentences "
                                  f"(add [router.{extra_key}] {label} = [\"…\", …])")
            examples[label] = sentences
        out.append(examples)
    return out[0], out[1]


def cache_key(embedder_name: str, dim: int, tasks: Examples, tones: Examples) -> str:
    blob = json.dumps([METHOD, embedder_name, dim, tasks, tones], ensure_ascii=False)
    return hashlib.sha256(blob.encode()).hexdigest()[:20]


def load_classifiers(cache_dir: Path, embedder, tasks: Examples, tones: Examples) -> tuple[Classifier, Classifier]:
    """The task and tone classifiers, from the cache when it matches, else embedded now and cached."""
    key = cache_key(embedder.name, embedder.dim, tasks, tones)
    path = cache_dir / f"centroids-{key}.npz"
    cached = _read_cache(path, tasks, tones, embedder.dim)
    if cached is not None:
        return cached
    built = []
    for examples in (tasks, tones):
        labels = tuple(examples)
        flat = [s for label in labels for s in examples[label]]
        vecs = np.asarray(embedder.embed(flat), dtype=np.float32)
        parts, start = [], 0
        for label in labels:
            parts.append(vecs[start:start + len(examples[label])])
            start += len(examples[label])
        built.append(Classifier.fit(labels, parts))
    _write_cache(path, built[0], built[1])
    return built[0], built[1]


def _read_cache(path: Path, tasks: Examples, tones: Examples, dim: int) -> tuple[Classifier, Classifier] | None:
    """None when missing or unreadable (a torn file from another Home version): rebuilding is cheap."""
    try:
        with np.load(path) as data:
            out = tuple(Classifier(tuple(ex), data[f"{name}_centroids"], data[f"{name}_mean"])
                        for name, ex in (("task", tasks), ("tone", tones)))
    except (OSError, KeyError, ValueError):
        return None
    for clf in out:
        if clf.centroids.shape != (len(clf.labels), dim) or clf.mean.shape != (dim,):
            return None
    return out  # type: ignore[return-value]


def _write_cache(path: Path, task: Classifier, tone: Classifier) -> None:
    """Atomic (the app and a CLI command may race: both write the same bytes); older caches removed."""
    try:
        ensure_private_dir(path.parent)
        buf = io.BytesIO()
        np.savez(buf, task_centroids=task.centroids, task_mean=task.mean,
                 tone_centroids=tone.centroids, tone_mean=tone.mean)
        atomic_write_bytes(path, buf.getvalue())
        for old in path.parent.glob("centroids-*.npz"):
            if old != path:
                old.unlink(missing_ok=True)
    except OSError:
        pass  # a read-only vault still routes; it just embeds the examples each start
