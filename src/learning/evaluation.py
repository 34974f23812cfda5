"""Test-set metrics and the confusion-matrix PNG."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from sklearn.metrics import accuracy_score, classification_report, confusion_matrix, precision_recall_fscore_support


def evaluate(model, X: np.ndarray, y: np.ndarray, class_names: list[str]) -> dict:
    proba = model.predict_proba(X)
    pred = model.classes_[proba.argmax(1)]
    p, r, f, _ = precision_recall_fscore_support(y, pred, average="macro", zero_division=0)
    labels = list(range(len(class_names)))
    report = classification_report(y, pred, labels=labels, target_names=class_names, output_dict=True, zero_division=0)
    return {"test_accuracy": float(accuracy_score(y, pred)), "f1_score": float(f), "precision": float(p),
            "recall": float(r), "y_pred": pred, "confidences": proba.max(1),
            "per_class": {c: report[c] for c in class_names}}


def save_confusion_png(y_true, y_pred, class_names: list[str], path: Path, title: str = "") -> Path:
    # A Figure with its own Agg canvas: no pyplot, so the process's matplotlib backend is left alone.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    cm = confusion_matrix(y_true, y_pred, labels=list(range(len(class_names))))
    n = len(class_names)
    fig = Figure(figsize=(max(5, 0.45 * n + 2), max(4, 0.45 * n + 1.5)))
    FigureCanvasAgg(fig)
    ax = fig.subplots()
    ax.imshow(cm, cmap="Blues")
    ax.set_xticks(range(n), class_names, rotation=90, fontsize=7)
    ax.set_yticks(range(n), class_names, fontsize=7)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title, fontsize=9)
    for i in range(n):
        for j in range(n):
            if cm[i, j]:
                ax.text(j, i, int(cm[i, j]), ha="center", va="center", fontsize=6,
                        color="white" if cm[i, j] > cm.max() / 2 else "black")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    return path
