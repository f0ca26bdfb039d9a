"""The dashboard reads on a 1,400 px screen: a trial note's pictures stacked (not one strip that
scrolls), plotly figures with whole class names and titles clear of the toolbar, the study
note's space table in plain values. Exercise: `python -m pytest -q tests/ops/test_dashboard_layout.py`."""

from __future__ import annotations

import re
from types import SimpleNamespace

import numpy as np
import pytest

from histosweep.search._study import _space_text
from histosweep.trial_files._trial_page import confusion_figure, fold_note
from tests.ops._helpers import require_tool
from tests.ops.test_dashboard import _chromium, _chromium_run, _Dashboard, _trained_detail
from tests.ops.test_dashboard import trained as trained  # noqa: F401 - the fixture, shared

CLASSES = ["Luminal A", "Luminal B", "HER2(+)", "Triple negative"]


def test_a_trial_notes_pictures_are_stacked_one_per_paragraph() -> None:
    folds = {f: {"val_f1": 0.5, "curves_png": f"c{f}"} for f in range(3)}
    note = fold_note(7, SimpleNamespace(number=2, _trial_id=9), folds, 0.5, "cm")
    paragraphs = [p for p in note.split("\n\n") if "![" in p]
    assert [len(re.findall(r"!\[", p)) for p in paragraphs] == [1, 1, 1, 1]
    assert paragraphs[-1].startswith("![out-of-fold confusion matrix](/artifacts/7/9/cm)")


def test_the_study_notes_space_table_shows_values_not_dicts() -> None:
    assert _space_text({"value": 1}) == "`1`"
    assert _space_text({"choices": [224, 384]}) == "`224` · `384`"
    assert _space_text({"low": 1e-5, "high": 1e-3, "log": True}) == "`1e-05` – `0.001` (log)"
    assert _space_text({"low": 10, "high": 30, "log": False, "step": 5}) == "`10` – `30` (step 5)"


def test_figures_grow_margins_for_class_names_and_keep_titles_below_the_toolbar() -> None:
    fig = confusion_figure(np.arange(4), np.arange(4), CLASSES, title="trial 0: confusion")
    assert fig.layout.xaxis.automargin and fig.layout.yaxis.automargin
    assert fig.layout.title.yanchor == "top" and fig.layout.title.y * fig.layout.height <= 400 - 30


def _attr(svg: str, pattern: str, name: str) -> float:
    """A numeric attribute of the first SVG <text> whose opening tag matches `pattern`."""
    tag = next((tag for tag in re.findall(r"<text [^>]*>", svg) if re.search(pattern, tag)), "")
    match = re.search(rf' {name}="([\d.]+)"', tag)
    assert match, pattern
    return float(match.group(1))


@pytest.mark.slow
def test_figures_and_the_trial_note_read_on_a_1400_px_screen(trained, tmp_path):
    browser = require_tool(_chromium(), "chromium not installed (apt-get install -y chromium)")
    paths, study, _ = trained
    window = "--window-size=1400,900"
    with _Dashboard(paths.storage, paths.artifacts, tmp_path) as dash:
        study_id, detail = _trained_detail(dash, study)
        number = min(t["number"] for t in detail["trials"] if t["state"] == "Complete")
        page = f"{dash.base}/dashboard/studies/{study_id}"
        dom = _chromium_run(browser, tmp_path, window, "--dump-dom", page).stdout
        trial_dom = _chromium_run(browser, tmp_path, window, "--dump-dom",
                                  f"{page}/trials?numbers={number}").stdout
    start = dom.index(f'id="user-defined-plot:trial-{number}-oof-confusion"')
    figure = dom[start:start + 200_000]
    # the longest class name (a y tick, right-aligned) ends at its x: 15 characters of 12 px type need ~90 px
    assert _attr(figure, r'(?=.*text-anchor="end")(?=.*"Triple negative")', "x") >= 90
    # the title's top edge is below the toolbar (modebar, the top ~30 px, right)
    assert _attr(figure, 'class="gtitle"', "y") >= 30
    # each picture of the trial note is its own paragraph: stacked, not a strip that scrolls
    note = trial_dom[trial_dom.index(f"Trial {number}: out-of-fold macro-F1"):]
    pictures = re.findall(r"<p>(.*?)</p>", note[:note.index("/artifacts/") + 20_000], re.S)
    with_images = [p for p in pictures if "<img" in p]
    assert len(with_images) == 3 and all(p.count("<img") == 1 for p in with_images)


def test_a_tiles_trials_note_says_which_searched_keys_it_does_not_use() -> None:
    params = {"input_mode": "tiles", "resolution": 384, "resize_mode": "pad", "tile_scale": 0.5,
              "lr": 1e-3}
    note = fold_note(7, SimpleNamespace(number=2, _trial_id=9, params=params), {}, 0.5, None)
    assert "Not used by this trial (input_mode tiles): `resize_mode`, `resolution`." in note
    whole = fold_note(7, SimpleNamespace(number=3, _trial_id=9, params={**params, "input_mode": "whole"}),
                      {}, 0.5, None)
    assert "Not used by this trial (input_mode whole): `tile_scale`." in whole
    assert "Not used" not in fold_note(7, SimpleNamespace(number=4, _trial_id=9), {}, 0.5, None)
