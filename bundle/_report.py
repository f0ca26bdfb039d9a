"""The export bundle's report.html: per-class scores, confusion matrix, holdout macro-F1 with a
seeded bootstrap interval, out-of-fold F1, params and learning curves, all in one file.

Exercise: `histosweep export-best STUDY --out bundle` then open bundle/report.html.
"""

from __future__ import annotations

import base64
import html
from dataclasses import dataclass
from typing import Any

import numpy as np

from histosweep.model import macro_f1_from_confusion

BOOTSTRAP_RESAMPLES = 1000
BOOTSTRAP_SEED = 0  # NOTE: fixed so that two exports of one trial give identical files


def bootstrap_ci(labels: np.ndarray, preds: np.ndarray, num_classes: int, *,
                 resamples: int = BOOTSTRAP_RESAMPLES, seed: int = BOOTSTRAP_SEED,
                 level: float = 0.95) -> tuple[float, float]:
    """Percentile bootstrap interval of macro-F1 over resampled holdout samples."""
    labels, preds = np.asarray(labels, dtype=np.int64), np.asarray(preds, dtype=np.int64)
    n = len(labels)
    if n == 0:
        return (float("nan"), float("nan"))
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, n, size=(resamples, n))  # (B, n)
    cells = labels[idx] * num_classes + preds[idx]  # (B, n)
    offsets = np.arange(resamples)[:, None] * num_classes**2
    cms = np.bincount((cells + offsets).ravel(), minlength=resamples * num_classes**2)
    scores = macro_f1_from_confusion(cms.reshape(resamples, num_classes, num_classes))
    alpha = (1 - level) / 2
    low, high = np.quantile(scores, [alpha, 1 - alpha])
    return (round(float(low), 6), round(float(high), 6))


def per_class_scores(labels: np.ndarray, preds: np.ndarray, classes) -> list[dict[str, Any]]:
    from sklearn.metrics import precision_recall_fscore_support

    p, r, f, s = precision_recall_fscore_support(
        labels, preds, labels=list(range(len(classes))), zero_division=0
    )
    return [
        {"class": name, "precision": float(p[i]), "recall": float(r[i]), "f1": float(f[i]),
         "support": int(s[i])}
        for i, name in enumerate(classes)
    ]


@dataclass(frozen=True)
class ReportInputs:
    study: str
    trial: int
    metrics: dict[str, Any]  # holdout_f1, holdout_f1_ci95, oof_f1, holdout_f1_bundle, ...
    per_class: list[dict[str, Any]]
    folds: list[dict[str, Any]]  # manifest fold entries
    params: dict[str, Any]
    config: dict[str, Any]
    confusion_png: bytes
    curves_png: bytes | None


def render_report(r: ReportInputs) -> str:
    """One self-contained HTML page (pictures inlined as base64)."""
    m = r.metrics
    low, high = m["holdout_f1_ci95"]
    parts = [
        _HEAD.format(title=_e(f"{r.study} trial {r.trial}")),
        f"<h1>{_e(r.study)} &mdash; trial {r.trial}</h1>",
        "<h2>Scores</h2><table>",
        _row("holdout macro-F1 (trial value)", f"{m['holdout_f1']:.4f}"),
        _row(f"95% bootstrap interval ({m['bootstrap_resamples']} resamples, seed "
             f"{m['bootstrap_seed']})", f"{low:.4f} &ndash; {high:.4f}"),
        _row("holdout macro-F1 recomputed from this bundle", _fmt(m.get("holdout_f1_bundle"))),
        _row("out-of-fold macro-F1", _fmt(m.get("oof_f1"))),
        _row("holdout samples", str(m["holdout_size"])),
        "</table>",
        "<h2>Per class (holdout, weighted fold ensemble)</h2>", _class_table(r.per_class),
        "<h2>Confusion matrix (holdout)</h2>", _img(r.confusion_png, "confusion matrix"),
        "<h2>Folds</h2>", _fold_table(r.folds),
    ]
    if r.curves_png is not None:
        parts += ["<h2>Learning curves</h2>", _img(r.curves_png, "learning curves")]
    parts += [
        "<h2>Searched parameters</h2>", _kv_table(r.params),
        "<details><summary>Full training config</summary>", _kv_table(r.config), "</details>",
        "</body></html>\n",
    ]
    return "\n".join(parts)


_HEAD = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{title}</title>
<style>
body {{ font-family: sans-serif; max-width: 60em; margin: 2em auto; color: #222; }}
table {{ border-collapse: collapse; margin: 0.5em 0 1.5em; }}
th, td {{ border: 1px solid #ccc; padding: 0.25em 0.6em; text-align: left; }}
th {{ background: #f3f3f3; }}
td.num {{ text-align: right; font-variant-numeric: tabular-nums; }}
</style></head><body>"""


def _e(value: Any) -> str:
    return html.escape(str(value))


def _fmt(value: Any) -> str:
    return "n/a" if value is None else f"{float(value):.4f}"


def _row(label: str, value: str) -> str:
    return f"<tr><th>{_e(label)}</th><td class=\"num\">{value}</td></tr>"


def _img(png: bytes, alt: str) -> str:
    data = base64.b64encode(png).decode("ascii")
    return f'<p><img alt="{_e(alt)}" src="data:image/png;base64,{data}"></p>'


def _class_table(rows: list[dict[str, Any]]) -> str:
    head = "<table><tr><th>class</th><th>precision</th><th>recall</th><th>F1</th><th>support</th></tr>"
    body = "".join(
        f"<tr><td>{_e(r['class'])}</td><td class=\"num\">{r['precision']:.4f}</td>"
        f"<td class=\"num\">{r['recall']:.4f}</td><td class=\"num\">{r['f1']:.4f}</td>"
        f"<td class=\"num\">{r['support']}</td></tr>"
        for r in rows
    )
    return head + body + "</table>"


def _fold_table(folds: list[dict[str, Any]]) -> str:
    head = ("<table><tr><th>fold</th><th>validation F1</th><th>holdout F1</th>"
            "<th>ensemble weight</th><th>file</th></tr>")
    body = "".join(
        f"<tr><td>{f['fold']}</td><td class=\"num\">{f['val_f1']:.4f}</td>"
        f"<td class=\"num\">{f['holdout_f1']:.4f}</td><td class=\"num\">{f['weight']:.4f}</td>"
        f"<td>{_e(f['file'] or 'not shipped (weight 0)')}</td></tr>"
        for f in folds
    )
    return head + body + "</table>"


def _value(v: Any) -> str:
    return f"{v:.6g}" if isinstance(v, float) else str(v)


def _kv_table(values: dict[str, Any]) -> str:
    body = "".join(f"<tr><th>{_e(k)}</th><td>{_e(_value(v))}</td></tr>" for k, v in sorted(values.items()))
    return f"<table>{body}</table>"
