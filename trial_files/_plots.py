"""Pictures people would rather look at: confusion matrices and learning curves (PNG).

Uploaded as trial artifacts (optuna-dashboard shows them) and embedded in the export report.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np


def _figure(*, figsize: tuple[float, float]):
    """A matplotlib Figure outside pyplot: no global figure manager, so the worker's upload
    thread can draw while the main thread trains (pyplot's state is not thread-safe)."""
    from matplotlib.figure import Figure

    return Figure(figsize=figsize, dpi=100)


def confusion_png(path: Path, labels: np.ndarray, preds: np.ndarray, classes, *, title: str) -> Path:
    from sklearn.metrics import confusion_matrix

    cm = confusion_matrix(labels, preds, labels=list(range(len(classes))))
    fig = _figure(figsize=(4.8, 4.2))
    ax = fig.subplots()
    ax.imshow(cm, cmap="Blues")
    for (i, j), n in np.ndenumerate(cm):
        ax.text(j, i, str(n), ha="center", va="center",
                color="white" if n > cm.max() / 2 else "black")
    ax.set_xticks(range(len(classes)), classes, rotation=30, ha="right")
    ax.set_yticks(range(len(classes)), classes)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title)
    fig.tight_layout()
    fig.savefig(path, metadata={"Software": None})
    return path


def learning_curves_png(path: Path, fold_epochs: dict[int, list[dict]], *, title: str) -> Path:
    """Train loss and validation F1 per epoch, one line per fold."""
    fig = _figure(figsize=(8, 3.2))
    ax_loss, ax_f1 = fig.subplots(1, 2)
    for fold, epochs in sorted(fold_epochs.items()):
        x = [e["epoch"] + 1 for e in epochs]  # epochs count from 1, as on the trial page
        ax_loss.plot(x, [e["train_loss"] for e in epochs], marker="o", label=f"fold {fold + 1}")
        ax_f1.plot(x, [e["val_f1"] for e in epochs], marker="o", label=f"fold {fold + 1}")
    from matplotlib.ticker import MaxNLocator

    ax_loss.set_title("train loss")
    ax_f1.set_title("validation macro-F1")
    for ax in (ax_loss, ax_f1):
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
    ax_f1.legend(fontsize=7)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, metadata={"Software": None})
    return path
