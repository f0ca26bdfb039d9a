"""A campaign of studies on one split, through the real CLI: `create B --like A` copies A's split
row for row; `--warm-start A` imports A's finished trials as history (never trained, counted by
--n-trials, exported or kept by gc) and refuses another split; `export-best A B` pools both
studies' trials (predict gives the bundle's own CSV) and refuses another fingerprint or split
with one line; `studies` groups the studies by split."""

from __future__ import annotations

import contextlib
import io
import json

import pytest
from optuna.trial import TrialState

from histosweep.search import (
    IMPORTED_ATTR,
    fit_params,
    is_imported,
    load_settings,
    parse_space,
    rebase_steps,
)
from tests.search._helpers import cli, load, tiny_space


def hs(*args: str, code: int = 0) -> tuple[str, str]:
    """The real command in this process (no interpreter and torch start per call): stdout, stderr."""
    from histosweep.cli import main

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        got = main(list(args))
    assert got == code, f"histosweep {' '.join(args)} exited {got}, not {code}:\n{err.getvalue()[-3000:]}"
    return out.getvalue(), err.getvalue()

# B searches more than A (epochs and a third cutmix_prob): every A trial is a point of B's space
SPACE_B = """
[params]
resolution = 32
resize_mode = "stretch"
image_backbone = "convnext_atto"
mask_backbone = "resnet10t"
pretrained = false
head_hidden = 32
epochs = [1, 2]
batch_size = 8
t0 = 2
lr = { low = 5e-4, high = 2e-3, log = true }
cutmix_prob = [0.0, 0.5, 1.0]
"""


pytestmark = pytest.mark.slow  # the module fixture trains two tiny trials in worker processes


@pytest.fixture(scope="module")
def campaign(synth_root, tmp_path_factory):
    """A (1 trial run) and B (--like A --warm-start A, 1 trial run), 2 folds, holdout 0.2;
    D: the same data in 3 folds (no trials)."""
    root = tmp_path_factory.mktemp("campaign")
    url = f"sqlite:///{root / 'study.db'}"
    art = root / "artifacts"
    work = ("--storage", url, "--artifacts", str(art), "--gpus", "cpu", "--no-progress",
            "--log-dir", str(root / "logs"))
    hs("create", "A", "--data", str(synth_root), "--space", str(tiny_space(root, epochs=1)),
       "--folds", "2", "--holdout", "0.2", "--pruner", "none", "--no-reference", "--storage", url)
    cli("worker", "A", *work, "--n-trials", "1")
    (root / "b.toml").write_text(SPACE_B)
    created = json.loads(hs("create", "B", "--like", "A", "--warm-start", "A", "--space",
                            str(root / "b.toml"), "--pruner", "none", "--no-reference",
                            "--storage", url, "--json")[0])
    cli("worker", "B", *work, "--n-trials", "1")
    hs("create", "D", "--data", str(synth_root), "--space", str(root / "space.toml"),  # 3 folds
       "--folds", "3", "--pruner", "none", "--no-reference", "--storage", url)
    return root, url, created


def _one_line(err: str) -> str:
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
    return err


def test_like_copies_the_split_exactly(campaign):
    _, url, created = campaign
    a, b = load_settings(load("A", url)), load_settings(load("B", url))
    assert b.split == a.split and a.split["holdout"]  # holdout indices and folds, row for row
    for key in ("fingerprint", "sample_ids", "labels", "folds", "holdout", "seed", "data_root"):
        assert getattr(b, key) == getattr(a, key), key
    assert b.space != a.space and b.space["epochs"] == {"choices": [1, 2]}
    assert created["like"] == "A" and created["imported"]["complete"] == 1


def test_like_refuses_split_flags(campaign):
    _, url, _ = campaign
    err = _one_line(hs("create", "C", "--like", "A", "--folds", "3", "--storage", url, code=1)[1])
    assert "--like A copies its split" in err and "drop --folds" in err


def test_imported_trials_are_history_not_work(campaign):
    """--n-trials 1 ran one trial although B held a finished imported one; that one carries A's
    value and params, is marked, and has no fold records or epochs of its own."""
    _, url, _ = campaign
    a, b = load("A", url), load("B", url)
    trials = b.get_trials()
    imported = [t for t in trials if is_imported(t)]
    own = [t for t in trials if not is_imported(t)]
    assert len(imported) == 1 and len(own) == 1 and own[0].state == TrialState.COMPLETE
    (origin,) = a.get_trials()
    (t,) = imported
    assert t.user_attrs[IMPORTED_ATTR] == f"A#{origin.number}" and t.value == origin.value
    assert t.params["lr"] == origin.params["lr"] and t.params["epochs"] == 1
    # steps are fold * (the space's most epochs) + epoch: 1 in A's space, 2 in B's
    assert origin.intermediate_values.keys() == {0, 1}
    assert t.intermediate_values == {0: origin.intermediate_values[0], 2: origin.intermediate_values[1]}
    assert not any(k[5:].isdigit() for k in t.user_attrs if k.startswith("fold_"))
    assert "epochs_run" not in t.user_attrs and t.user_attrs["fold_val_f1"]
    listing = hs("trials", "B", "--storage", url)[0]
    assert "imported_from" in listing and f"A#{origin.number}" in listing


def test_warm_start_refuses_another_split_in_one_line(campaign):
    _, url, _ = campaign
    err = _one_line(hs("create", "E", "--like", "D", "--warm-start", "A", "--storage", url, code=1)[1])
    assert "--warm-start A" in err and "--folds 2 is not 3" in err
    studies = json.loads(hs("studies", "--storage", url, "--json")[0])["studies"]
    assert "E" not in {s["study"] for s in studies}  # refused before anything was created


def test_recreate_does_not_import_twice(campaign):
    root, url, _ = campaign
    out = json.loads(hs("create", "B", "--like", "A", "--warm-start", "A", "--space",
                        str(root / "b.toml"), "--pruner", "none", "--no-reference",
                        "--skip-if-exists", "--storage", url, "--json")[0])
    assert out["action"] == "exists" and out["imported"]["complete"] == 1
    assert sum(is_imported(t) for t in load("B", url).get_trials()) == 1


def test_an_imported_trial_is_never_a_candidate(campaign):
    root, url, _ = campaign
    art = ("--storage", url, "--artifacts", str(root / "artifacts"))
    b = load("B", url)
    own = [t.number for t in b.get_trials() if not is_imported(t)]
    imported = next(t.number for t in b.get_trials() if is_imported(t))
    est = json.loads(hs("estimate", "B", *art, "--bootstrap", "100", "--json")[0])
    assert est["pool"] == 1  # 2 COMPLETE trials, 1 of them imported
    err = _one_line(hs("export-best", "B", "--trial", str(imported), "--out", str(root / "x"),
                       *art, code=1)[1])
    assert "imported from A#" in err and not (root / "x").exists()
    gc = json.loads(hs("gc", "B", "--keep-top", "1", "--dry-run", *art, "--json")[0])
    assert [k["trial"] for k in gc["kept"] if k["reason"] == "top 1"] == own


def test_export_pools_studies_and_predict_gives_the_same_csv(campaign, synth_root, tmp_path):
    root, url, _ = campaign
    out = tmp_path / "bundle"
    hs("export-best", "A", "B", "--out", str(out), "--storage", url, "--artifacts",
       str(root / "artifacts"), "--test", str(synth_root / "TEST"), "--bootstrap", "100",
       "--no-progress")
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["studies"] == ["A", "B"] and manifest["metrics"]["bbc"]["pool"] == 2
    (own_b,) = [t.number for t in load("B", url).get_trials() if not is_imported(t)]
    (own_a,) = [t.number for t in load("A", url).get_trials()]
    assert sorted(manifest["selection"]["candidates"]) == [f"A#{own_a}", f"B#{own_b}"]
    for m in manifest["members"]:
        assert m["study"] in ("A", "B")
        assert all(f["file"].startswith(f"folds/{m['study']}-trial{m['trial']}_") for f in m["folds"])
    csv = tmp_path / "p.csv"
    hs("predict", str(out), "--images", str(synth_root / "TEST"), "--out", str(csv), "--no-progress")
    assert csv.read_text() == (out / "submission.csv").read_text()


def test_export_refuses_another_fingerprint_or_split_in_one_line(campaign, tmp_path):
    from histosweep.data import synthesize

    root, url, _ = campaign
    other = synthesize(tmp_path / "other", n_train=24, n_test=2, seed=7, short_side=64)
    hs("create", "F", "--data", str(other), "--space", str(root / "space.toml"), "--folds", "2",
       "--no-reference", "--storage", url)
    for names, needle in ((("A", "F"), "data fingerprint"), (("A", "D"), "--folds 3 is not 2")):
        err = _one_line(hs("export-best", *names, "--out", str(tmp_path / "b"), "--storage", url,
                           "--artifacts", str(root / "artifacts"), code=1)[1])
        assert needle in err and f"study {names[1]!r}" in err


def test_studies_groups_by_split(campaign):
    _, url, _ = campaign
    doc = json.loads(hs("studies", "--storage", url, "--json")[0])
    rows = {s["study"]: s for s in doc["studies"]}
    assert rows["A"]["split"]["key"] == rows["B"]["split"]["key"] != rows["D"]["split"]["key"]
    assert rows["B"]["imported"] == 1 and rows["B"]["own_complete"] == 1
    group = next(g for g in doc["splits"] if {"A", "B"} <= {x["study"] for x in g["studies"]})
    assert group["candidates"] == 2 and group["export"].startswith("histosweep export-best A B")
    text = hs("studies", "--storage", url)[0]
    assert "histosweep export-best A B --out bundle" in text and "2 complete trial(s) to pool" in text


def test_warm_start_names_the_trials_its_source_imported_itself(campaign):
    """B holds one trial imported from A and one it ran: from B only its own is taken, and the
    line does not call A's trial 'outside this space' (it fits; it is A's to give)."""
    root, url = campaign[:2]
    out = hs("create", "W", "--like", "A", "--warm-start", "B", "--space", str(root / "b.toml"),
             "--pruner", "none", "--no-reference", "--storage", url)[0]
    try:
        assert ("imported 1 complete + 0 pruned from 'B' (0 outside this space, 1 that 'B' imported "
                "itself: name the study that ran them)") in out
        assert sum(is_imported(t) for t in load("W", url).get_trials()) == 1
    finally:
        hs("delete-study", "W", "--yes", "--storage", url)


# --- pure helpers (no study) -------------------------------------------------------------------
def test_rebase_steps_keeps_fold_and_epoch():
    # 2 folds of at most 3 epochs -> at most 5: fold 1 epoch 2 is step 5 then 7
    assert rebase_steps({0: 0.1, 2: 0.3, 3: 0.4, 5: 0.6}, 3, 5) == {0: 0.1, 2: 0.3, 5: 0.4, 7: 0.6}
    assert rebase_steps({2: 0.3, 3: 0.4}, 3, 2) == {2: 0.4}  # epoch 2 does not exist under 2


def test_fit_params_takes_only_points_of_the_space():
    from histosweep.model import TrainConfig

    space = parse_space({"params": {"lr": {"low": 1e-4, "high": 1e-3, "log": True},
                                    "cutmix_prob": [0.0, 0.5], "epochs": 3}})
    cfg = TrainConfig(lr=3e-4, cutmix_prob=0.5, epochs=3).to_dict()
    assert fit_params(space, cfg) == {"lr": 3e-4, "cutmix_prob": 0.5}
    assert fit_params(space, {**cfg, "cutmix_prob": 1.0}) is None  # not a choice
    assert fit_params(space, {**cfg, "epochs": 4}) is None  # fixed at 3 here
    assert fit_params(space, {**cfg, "head_hidden": 32}) is None  # the default elsewhere
    assert fit_params(space, {**cfg, "seed": 5}) is not None  # the study's seed, not compared
    assert fit_params(space, None) is None
