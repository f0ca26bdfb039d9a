"""The export bundle's report.html: the BBC-CV estimate and the lockbox (holdout) macro-F1, each
with a seeded bootstrap interval, the search gain over the reference recipe, out-of-fold F1, params and learning curves, all in one file.

Exercise: `histosweep export-best STUDY --out bundle` then open bundle/report.html.
"""

from __future__ import annotations

import base64
import html
from dataclasses import dataclass
from typing import Any

import numpy as np

from histosweep.model import macro_f1_from_confusion
from histosweep.trial_files import selection_label

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
    metrics: dict[str, Any]  # manifest metrics: oof_f1, lockbox_f1 (+ ci95), single_best, ...
    members: list[dict[str, Any]]  # manifest member entries (trial, weight, oof_f1, folds, ...)
    selection: dict[str, Any]
    decision: dict[str, Any]
    per_class: list[dict[str, Any]]  # the final ensemble on the lockbox
    confusion_png: bytes
    curves_png: bytes | None
    curves_trial: int | str | None = None
    pooled: bool = False  # members from several studies: named STUDY#trial


def _name(m: dict[str, Any], pooled: bool) -> str:
    return f"{m.get('study')}#{m['trial']}" if pooled else str(m["trial"])


def render_report(r: ReportInputs) -> str:
    """One self-contained HTML page (pictures inlined as base64)."""
    m = r.metrics
    trials = ", ".join(_name(x, r.pooled) for x in r.members)
    where = "lockbox" if m.get("lockbox_f1") is not None else "out-of-fold, selection data"
    parts = [
        _HEAD.format(title=_e(f"{r.study}: exported ensemble")),
        f"<h1>{_e(r.study)} &mdash; ensemble of trial(s) {_e(trials)}</h1>",
        f"<p><strong>{_e(m['note'])}</strong></p>",
        *_estimate_parts(m, r.decision, r.pooled),
        "<h2>Selection data (out-of-fold, what the search and the ensemble selected on)</h2><table>",
        _row("ensemble out-of-fold macro-F1", _fmt(m["oof_f1"])),
        _row("with decision offsets (fitted on these same predictions)", _fmt(m["oof_f1_calibrated"])),
        _row("out-of-fold samples", str(m["oof_size"])),
        "</table>",
        "<h2>Members</h2>", _member_table(r.members, r.pooled),
        f"<p>{_e(r.selection.get('method', ''))}. Candidates: "
        f"{_e(', '.join(map(str, r.selection.get('candidates', []))))}.</p>",
        f"<p>Decision offsets per class: {_e(_offsets(r.decision))}{_e(_offsets_check(r.decision))}.</p>",
        f"<h2>Per class ({where}, exported ensemble)</h2>", _class_table(r.per_class),
        f"<h2>Confusion matrix ({where})</h2>", _img(r.confusion_png, "confusion matrix"),
    ]
    if r.curves_png is not None:
        parts += [f"<h2>Learning curves (trial {r.curves_trial})</h2>", _img(r.curves_png, "learning curves")]
    for member in r.members:
        parts += [f"<details><summary>Trial {_e(_name(member, r.pooled))}: searched parameters and config</summary>",
                  _kv_table(member["params"]), _kv_table(member["config"]), "</details>"]
    parts.append("</body></html>\n")
    return "\n".join(parts)


def _estimate_parts(m: dict[str, Any], decision: dict[str, Any], pooled: bool = False) -> list[str]:
    """The honest numbers: BBC-CV (always) and the lockbox (when there is one), side by side."""
    note = m.get("estimates_note")
    parts = [f"<p>{_e(note)}</p>"] if note and note != m.get("note") else []  # said once
    bbc = m.get("bbc")
    if bbc:
        ref = bbc.get("reference_trial")
        if pooled and ref is not None:  # the first study's reference (or the next one's)
            ref = f"{bbc.get('reference_study')}#{ref}"
        parts += [
            f"<h2>BBC-CV estimate ({bbc['resamples']} bootstrap resamples of the out-of-fold "
            "rows, selection re-run in bag, scored out of bag)</h2><table>",
            "<tr><th></th><th>mean out-of-bag macro-F1</th><th>95% percentile interval</th></tr>",
            _score_row(f"exported model ({selection_label(bbc['method'])}"
                       f"{', decision offsets' if bbc['calibrated'] else ''})",
                       bbc["ensemble"]["mean"], bbc["ensemble"]["ci95"]),
            _score_row("single best trial (ranked in bag)", bbc["single_best"]["mean"],
                       bbc["single_best"]["ci95"]),
        ]
        if bbc.get("reference"):
            parts.append(_score_row(f"reference recipe (trial {ref})", bbc["reference"]["mean"],
                                    bbc["reference"]["ci95"]))
        parts += ["</table>", f"<p><strong>{_e(m.get('search_gain_text', ''))}</strong> "
                  f"{_e(bbc['note'])}</p>"]
    if m.get("lockbox_f1") is None:
        return parts
    return parts + [
        "<h2>Lockbox (holdout, read once)</h2><table>",
        "<tr><th></th><th>lockbox macro-F1</th><th>95% bootstrap interval</th></tr>",
        _score_row("exported ensemble, with decision offsets" if decision.get("calibrated")
                   else "exported ensemble", m["lockbox_f1"], m["lockbox_f1_ci95"]),
        _score_row("exported ensemble, plain argmax", m["lockbox_f1_uncalibrated"],
                   m["lockbox_f1_uncalibrated_ci95"]),
        _score_row(f"single best trial ({_name(m['single_best'], pooled)}) alone",
                   m["single_best"]["lockbox_f1"], m["single_best"]["lockbox_f1_ci95"]),
        "</table>",
        f"<p>{m['holdout_size']} lockbox samples; {m['bootstrap_resamples']} bootstrap resamples, "
        f"seed {m['bootstrap_seed']}. Recomputed from this bundle's own checkpoints: "
        f"{_fmt(m.get('lockbox_f1_bundle'))}.</p>",
    ]


def _score_row(label: str, value: float, ci) -> str:
    return (f"<tr><th>{_e(label)}</th><td class=\"num\">{value:.4f}</td>"
            f"<td class=\"num\">{ci[0]:.4f} &ndash; {ci[1]:.4f}</td></tr>")


def _offsets(decision: dict[str, Any]) -> str:
    from histosweep.constants import CLASSES

    return ", ".join(f"{c} {o:+.2f}" for c, o in zip(CLASSES, decision.get("offsets", []), strict=False))


def _offsets_check(decision: dict[str, Any]) -> str:
    check = decision.get("offsets_check") or {}
    if not check.get("reason"):
        return ""
    fitted = ", ".join(f"{o:+.2f}" for o in check.get("fitted_offsets", []))
    if check.get("kept"):
        return f" (checked: {check['reason']})"
    return f" (fitted {fitted} not applied: {check['reason']})" if fitted else f" ({check['reason']})"


def _fold_f1s(folds: list[dict[str, Any]]) -> str:
    return ", ".join(f"{f['val_f1']:.3f}" for f in folds)


def _input_text(member: dict[str, Any]) -> str:
    """"384 stretch" for whole pictures; the cache key (tiles: and pooling) otherwise."""
    from histosweep.data import input_target
    from histosweep.model import TrainConfig

    config = TrainConfig.from_dict(member["config"])
    return input_target(config).describe(config)


def _backbones(config: dict[str, Any]) -> str:
    """A frozen member has no mask branch: only its image backbone made the embeddings."""
    if config.get("train_mode") == "frozen":
        return f"{config['image_backbone']} (frozen)"
    return f"{config['image_backbone']} + {config['mask_backbone']}"


def _member_table(members: list[dict[str, Any]], pooled: bool = False) -> str:
    head = ("<table><tr><th>trial</th><th>weight</th><th>out-of-fold F1</th>"
            "<th>input</th><th>backbones</th><th>fold validation F1</th></tr>")
    body = "".join(
        f"<tr><td>{_e(_name(m, pooled))}</td><td class=\"num\">{m['weight']:.4f}</td>"
        f"<td class=\"num\">{m['oof_f1']:.4f}</td>"
        f"<td>{_e(_input_text(m))}</td>"
        f"<td>{_e(_backbones(m['config']))}</td>"
        f"<td>{_e(_fold_f1s(m['folds']))}</td></tr>"
        for m in members
    )
    return head + body + "</table>"


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


def _value(v: Any) -> str:
    return f"{v:.6g}" if isinstance(v, float) else str(v)


def _kv_table(values: dict[str, Any]) -> str:
    body = "".join(f"<tr><th>{_e(k)}</th><td>{_e(_value(v))}</td></tr>" for k, v in sorted(values.items()))
    return f"<table>{body}</table>"
