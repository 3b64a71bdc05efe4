"""Classification metrics (accuracy, macro-F1, confusion matrix) from logits and labels; numpy only, no UI.

Computed here with numpy rather than scikit-learn: two metrics and a count matrix are a few lines, and
scikit-learn is a large dependency the engine does not otherwise need.
"""
from __future__ import annotations

MAX_CONFUSION_CLASSES = 50
"""Past this many classes the matrix is left out of the events (it would be unreadable and bloat each line)."""


def confusion_matrix(predicted, actual, num_classes: int) -> list[list[int]]:
    """Counts, row = true class, column = predicted class (the usual orientation: rows sum to each class's support)."""
    import numpy as np

    predicted = np.asarray(predicted, dtype=np.int64).ravel()
    actual = np.asarray(actual, dtype=np.int64).ravel()
    keep = (actual >= 0) & (actual < num_classes) & (predicted >= 0) & (predicted < num_classes)
    flat = actual[keep] * num_classes + predicted[keep]
    counts = np.bincount(flat, minlength=num_classes * num_classes).reshape(num_classes, num_classes)
    return counts.tolist()


def macro_f1(matrix: list[list[int]]) -> float:
    """The unweighted mean of per-class F1 over the classes that occur (as truth or as prediction).

    Classes absent from both the labels and the predictions are left out, as scikit-learn does when it infers the
    labels: a small validation split often lacks some class, and counting it as F1 0 would punish the model for it.
    """
    import numpy as np

    m = np.asarray(matrix, dtype=np.float64)
    if m.size == 0:
        return 0.0
    tp = np.diag(m)
    support, predicted = m.sum(axis=1), m.sum(axis=0)
    present = (support + predicted) > 0
    if not present.any():
        return 0.0
    f1 = 2 * tp[present] / (support[present] + predicted[present])
    return float(f1.mean())


def classification_metrics(logits, label_ids) -> dict:
    """{accuracy, macro_f1, confusion_matrix} for an evaluation; the matrix only up to MAX_CONFUSION_CLASSES."""
    import numpy as np

    logits = np.asarray(logits)
    label_ids = np.asarray(label_ids).ravel()
    num_classes = int(logits.shape[-1])
    predicted = np.argmax(logits, axis=-1).ravel()
    valid = label_ids >= 0  # -100 marks padding / ignored rows
    predicted, label_ids = predicted[valid], label_ids[valid]
    matrix = confusion_matrix(predicted, label_ids, num_classes)
    out = {"accuracy": float((predicted == label_ids).mean()) if len(label_ids) else 0.0,
           "macro_f1": macro_f1(matrix)}
    if num_classes <= MAX_CONFUSION_CLASSES:
        out["confusion_matrix"] = matrix
    return out


# ---------------------------------------------------------------- in words (shared by the app and the CLI)

METRIC_NAMES = {"accuracy": "accuracy", "macro_f1": "macro-F1"}


def metrics_text(metrics: dict | None) -> str:
    """`accuracy 0.875  macro-F1 0.871` for the metrics a run reports (empty when it reports none of them)."""
    parts = []
    for key, name in METRIC_NAMES.items():
        value = (metrics or {}).get(key)
        if isinstance(value, (int, float)):
            parts.append(f"{name} {value:.3f}")
    return "  ".join(parts)


def confusion_lines(matrix: list[list[int]], labels: list[str] | None = None, *, label_width: int = 12) -> list[str]:
    """The matrix as aligned text rows, true classes down and predicted across; long names are cut to fit."""
    n = len(matrix)
    names = [str(x) for x in (labels if labels and len(labels) == n else range(n))]
    names = [name if len(name) <= label_width else name[:label_width - 1] + "…" for name in names]
    corner = "true \\ predicted"
    first = max([len(corner)] + [len(name) for name in names])
    widths = [max(len(name), *(len(str(row[j])) for row in matrix)) for j, name in enumerate(names)]
    lines = [f"{corner:<{first}}  " + "  ".join(f"{name:>{w}}" for name, w in zip(names, widths))]
    for name, row in zip(names, matrix):
        lines.append(f"{name:<{first}}  " + "  ".join(f"{count:>{w}}" for count, w in zip(row, widths)))
    return lines


__all__ = ["classification_metrics", "confusion_matrix", "macro_f1", "MAX_CONFUSION_CLASSES", "metrics_text",
           "confusion_lines", "METRIC_NAMES"]
