"""Who wrote this line? A small text classifier that tells personas apart, to judge persona adapters.

Perplexity says an adapter predicts its persona's lines; attribution says its *own replies* read like that
persona. The classifier (TF-IDF over character and word n-grams + logistic regression, scikit-learn) is
trained on the personas' dataset lines; then it labels replies generated under each persona's adapter.
Accuracy and a confusion matrix (rows: the adapter's persona, columns: who the classifier says wrote it)
are the result; the same classifier on the held-out reference lines is the ceiling it can reach.
Torch-free; scikit-learn and matplotlib are imported only when used.
"""

from __future__ import annotations

from collections.abc import Sequence

SEED = 0


def train_classifier(texts: Sequence[str], labels: Sequence[str]):
    """A fitted scikit-learn pipeline; needs at least two labels (one persona is nothing to tell apart)."""
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import FeatureUnion, make_pipeline

    if len(set(labels)) < 2:
        raise ValueError(f"attribution needs lines from at least two personas, got {sorted(set(labels))}")
    features = FeatureUnion([
        ("chars", TfidfVectorizer(analyzer="char_wb", ngram_range=(2, 5), sublinear_tf=True, min_df=1)),
        ("words", TfidfVectorizer(analyzer="word", ngram_range=(1, 2), sublinear_tf=True, lowercase=True,
                                  token_pattern=r"(?u)\b\w[\w']*\b|[!?]")),
    ])
    model = make_pipeline(features, LogisticRegression(max_iter=2000, C=10.0, random_state=SEED))
    model.fit(list(texts), list(labels))
    return model


def confusion(true: Sequence[str], predicted: Sequence[str], labels: Sequence[str]) -> dict:
    """{"labels", "matrix" (rows true, columns predicted), "accuracy", "recall" per label, "n"}."""
    index = {label: i for i, label in enumerate(labels)}
    matrix = [[0] * len(labels) for _ in labels]
    for t, p in zip(true, predicted, strict=True):
        matrix[index[t]][index[p]] += 1
    n = len(true)
    correct = sum(matrix[i][i] for i in range(len(labels)))
    recall = {label: (matrix[i][i] / sum(matrix[i]) if sum(matrix[i]) else None) for label, i in index.items()}
    return {"labels": list(labels), "matrix": matrix, "accuracy": correct / n if n else None, "recall": recall,
            "n": n}


def attribute(model, texts: Sequence[str]) -> list[str]:
    return [str(x) for x in model.predict(list(texts))] if texts else []


def plot_confusions(panels: list[tuple[str, dict]], title: str) -> bytes:
    """PNG bytes: one confusion matrix per panel (counts in the cells, accuracy in the title)."""
    from trainer.evaluation.figures import png_bytes, pyplot

    plt = pyplot()

    fig, axes = plt.subplots(1, len(panels), figsize=(4.6 * len(panels), 4.4), squeeze=False)
    for ax, (name, conf) in zip(axes[0], panels, strict=True):
        labels, matrix = conf["labels"], conf["matrix"]
        ax.imshow(matrix, cmap="Blues", vmin=0, vmax=max(1, max(max(r) for r in matrix)))
        ticks = range(len(labels))
        ax.set_xticks(list(ticks), labels, rotation=30, ha="right", fontsize=8)
        ax.set_yticks(list(ticks), labels, fontsize=8)
        peak = max(1, max(max(r) for r in matrix))
        for i, row in enumerate(matrix):
            for j, v in enumerate(row):
                ax.text(j, i, str(v), ha="center", va="center", color="white" if v > peak / 2 else "black")
        acc = conf["accuracy"]
        ax.set_title(f"{name}\naccuracy {acc:.0%} of {conf['n']}" if acc is not None else name, fontsize=10)
        ax.set_xlabel("classifier says")
        ax.set_ylabel("written as")
    fig.suptitle(title)
    fig.tight_layout()
    return png_bytes(fig)
