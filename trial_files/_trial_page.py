"""What optuna-dashboard shows of a trial and of an export: the trial's note (fold table, its
PNG artifacts inline), plotly figures (learning curves, out-of-fold confusion matrix) and the
study note that export-best writes. Exercise: `histosweep dashboard` after a worker run.

NOTE: optuna-dashboard 0.21 keeps plotly figures per study only (save_plotly_graph_object has
no trial argument) and sends every one with each poll of the study page. Saving two figures for
every trial would make that page and its polling grow with the study, so figures are saved only
for a trial that is the study's best when it finishes (named `trial-N-...`): a handful per
study. Every trial's own page gets its note, which embeds its PNG curves and confusion matrix.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np

from histosweep.storage import study_id, trial_id
from histosweep.trial_files._estimate import gain_sentence

log = logging.getLogger("histosweep")

EXPORT_HEADING = "## Exported by histosweep export-best"
# NOTE: no template: plotly's default one adds ~8 KB of JSON to every figure in the storage
# NOTE: the title sits below the dashboard's toolbar (modebar, top right, ~30 px); axes grow
# their margins to whole class names ("Triple negative") instead of clipping them.
FIGURE_LAYOUT = {"template": None, "plot_bgcolor": "white", "height": 400,
                 "margin": {"l": 60, "r": 20, "t": 90, "b": 60},
                 "title_x": 0.02, "title_xanchor": "left", "title_y": 0.91, "title_yanchor": "top",
                 "xaxis_automargin": True, "yaxis_automargin": True}


def curves_figure_id(number: int) -> str:
    return f"trial-{number}-learning-curves"


def confusion_figure_id(number: int) -> str:
    return f"trial-{number}-oof-confusion"


# --- the trial ------------------------------------------------------------------------------
def publish_trial(study, trial, *, folds: dict[int, dict], value: float, labels: np.ndarray,
                  preds: np.ndarray, classes, confusion_png: str | None) -> None:
    """The trial's note, and figures when it is the best so far; a failure only logs a warning."""
    try:
        from optuna_dashboard import save_note

        save_note(trial, fold_note(study_id(study), trial, folds, value, confusion_png))
        if _is_new_best(study, value):
            save_trial_figures(study, trial.number, folds=folds, labels=labels, preds=preds,
                               classes=classes, value=value)
    except Exception as exc:  # noqa: BLE001 - pictures must never fail a trained trial
        log.warning("trial %d: dashboard note/figures not saved: %s: %s", trial.number,
                    type(exc).__name__, exc)


def _is_new_best(study, value: float) -> bool:
    try:
        return value > study.best_value  # direction is maximize (macro-F1)
    except ValueError:  # no complete trial yet
        return True


def save_trial_figures(study, number: int, *, folds, labels, preds, classes, value: float) -> None:
    from optuna_dashboard import save_plotly_graph_object

    title = f"trial {number} (out-of-fold macro-F1 {value:.4f})"
    save_plotly_graph_object(study, curves_figure(folds, title=f"{title}: learning curves"),
                             graph_object_id=curves_figure_id(number))
    save_plotly_graph_object(study, confusion_figure(labels, preds, classes,
                                                     title=f"{title}: confusion matrix"),
                             graph_object_id=confusion_figure_id(number))


def curves_figure(folds: dict[int, dict], *, title: str):
    """Train loss (left) and validation macro-F1 (right) per epoch, one line per fold."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    fig = make_subplots(rows=1, cols=2, subplot_titles=("train loss", "validation macro-F1"))
    for f, record in sorted(folds.items()):
        for col, key in ((1, "loss_curve"), (2, "curve")):
            ys = [round(float(y), 5) for y in record.get(key) or []]
            fig.add_trace(go.Scatter(x=list(range(1, len(ys) + 1)), y=ys, mode="lines+markers",
                                     name=f"fold {f + 1}", legendgroup=f"fold {f + 1}",
                                     showlegend=col == 2), row=1, col=col)
    fig.update_xaxes(title_text="epoch", dtick=1, gridcolor="#eee")
    fig.update_yaxes(gridcolor="#eee")
    fig.update_layout(title=title, **FIGURE_LAYOUT)
    return fig


def confusion_figure(labels: np.ndarray, preds: np.ndarray, classes, *, title: str):
    import plotly.graph_objects as go
    from sklearn.metrics import confusion_matrix

    cm = confusion_matrix(labels, preds, labels=list(range(len(classes))))
    fig = go.Figure(go.Heatmap(z=cm.tolist(), x=list(classes), y=list(classes), colorscale="Blues",
                               text=cm.tolist(), texttemplate="%{text}", showscale=False))
    fig.update_xaxes(title_text="predicted")
    fig.update_yaxes(title_text="true", autorange="reversed")
    fig.update_layout(title=title, **FIGURE_LAYOUT)
    return fig


def fold_note(study_id: int, trial, folds: dict[int, dict], value: float,
              confusion_png: str | None) -> str:
    """Markdown: the fold table, then the PNG artifacts (the dashboard serves them)."""
    lines = [f"## Trial {trial.number}: out-of-fold macro-F1 {value:.4f}", "",
             "| fold | val F1 | epochs | seconds | best epoch |", "|---:|---:|---:|---:|---:|"]
    for f, r in sorted(folds.items()):
        best = r.get("best_epoch")
        lines.append(f"| {f + 1} | {r['val_f1']:.4f} | {r.get('epochs', '')} | {r.get('seconds', 0):.1f} "
                     f"| {'' if best is None else best + 1} |")
    lines += ["", "Folds and epochs count from 1. Figures: learning curves per fold, then the "
              "out-of-fold confusion matrix.", ""]
    unused = _unused_params(getattr(trial, "params", {}))
    if unused:  # a space searched over several input modes suggests every mode's keys
        lines += [f"Not used by this trial (input_mode {trial.params['input_mode']}): "
                  f"{', '.join(f'`{k}`' for k in unused)}.", ""]
    url = f"/artifacts/{study_id}/{trial_id(trial)}"
    for f, r in sorted(folds.items()):
        if r.get("curves_png"):
            lines += [f"![fold {f + 1} learning curves]({url}/{r['curves_png']})", ""]
    if confusion_png:  # NOTE: one paragraph per picture: stacked, not one strip that scrolls
        lines.append(f"![out-of-fold confusion matrix]({url}/{confusion_png})")
    return "\n".join(lines) + "\n"


def _unused_params(params: dict[str, Any]) -> list[str]:
    """The searched pixel keys of the other input modes (a tiles trial: resolution, resize_mode)."""
    from histosweep.data import input_modes, input_spec_class

    mode = str(params.get("input_mode"))
    if mode not in input_modes():
        return []
    others = {k for m in input_modes() for k in input_spec_class(m).fields}
    others -= set(input_spec_class(mode).fields)
    return sorted(k for k in params if k in others)


# --- the study, after export-best -----------------------------------------------------------
def save_export_note(study, summary: dict[str, Any]) -> None:
    """Replace the export section of the study note (text above it is kept); never raises."""
    try:
        from optuna_dashboard import get_note, save_note

        kept = get_note(study).split(EXPORT_HEADING)[0].rstrip()
        save_note(study, (kept + "\n\n" if kept else "") + export_note(summary))
    except Exception as exc:  # noqa: BLE001 - the bundle is written; the note is a courtesy
        log.warning("study note not updated: %s: %s", type(exc).__name__, exc)


def export_note(summary: dict[str, Any]) -> str:
    m = summary["metrics"]
    lines = [EXPORT_HEADING, "", f"Bundle: `{summary['out']}`", "",
             "| trial | weight | out-of-fold macro-F1 |", "|---:|---:|---:|"]
    pooled = len(summary.get("studies") or ()) > 1  # export-best S1 S2: members name their study
    lines += [f"| {x['study'] + '#' if pooled else ''}{x['trial']} | {x['weight']:.3f} | "
              f"{x['oof_f1']:.4f} |" for x in summary["members"]]
    lines += ["", f"- ensemble out-of-fold macro-F1 (selection data): **{m['oof_f1']:.4f}**"]
    if m.get("bbc"):  # BBC-CV and the search gain over the reference recipe (bundle._bootstrap)
        e = m["bbc"]["ensemble"]
        lines += [f"- BBC-CV estimate (selection re-run in bootstrap resamples, scored out of bag): "
                  f"**{e['mean']:.4f}** (95% interval {e['ci95'][0]:.4f}-{e['ci95'][1]:.4f})",
                  f"- {gain_sentence(m['bbc'].get('search_gain'))}"]
    if m.get("lockbox_f1") is not None:
        low, high = m["lockbox_f1_ci95"]
        lines.append(f"- lockbox macro-F1 (holdout, read once): **{m['lockbox_f1']:.4f}** "
                     f"(95% bootstrap CI {low:.4f}-{high:.4f})")
    if summary.get("submission"):
        lines.append(f"- submission: `{summary['submission']}` ({summary['submission_rows']} rows)")
    return "\n".join(lines) + "\n"
