"""Samplers, warm starts and study management through the real CLI: `create --sampler`,
`enqueue`, `create --enqueue-reference`, `studies`, `trials`, `delete-study`."""

from __future__ import annotations

import csv
import dataclasses
import datetime
import io
import json

import optuna
import pytest
from optuna.distributions import CategoricalDistribution, FloatDistribution
from optuna.trial import TrialState

from histosweep.fleet._supervisor import build_sampler
from histosweep.search import SAMPLERS, StudySettings, UserError, load_settings, make_sampler
from tests.search._helpers import TINY_SPACE, cli, load, tiny_space

SAMPLER_CLASSES = {
    "tpe": optuna.samplers.TPESampler,
    "gp": optuna.samplers.GPSampler,
    "random": optuna.samplers.RandomSampler,
    "cmaes": optuna.samplers.CmaEsSampler,
    "qmc": optuna.samplers.QMCSampler,
}


def head_hidden_space(tmp_path, *, epochs: int = 2):
    """The tiny space, but searching head_hidden in [16, 32]: a categorical integer param."""
    fixed = "head_hidden = 32\n"
    assert fixed in TINY_SPACE
    path = tmp_path / "head_hidden_space.toml"
    path.write_text(TINY_SPACE.replace(fixed, "head_hidden = [16, 32]\n").format(epochs=epochs))
    return path


def _create(name, url, data, space, *extra):
    # create queues the reference recipe by default; these tests count the trials they add
    reference = () if "--enqueue-reference" in extra else ("--no-reference",)
    return cli("create", name, "--data", str(data), "--space", str(space), "--folds", "2",
               "--storage", url, *reference, *extra)


@pytest.fixture(scope="module")
def made(synth_root, tmp_path_factory):
    """One histosweep study (tiny space searching head_hidden, tpe) in a module-wide SQLite file."""
    root = tmp_path_factory.mktemp("optuna_cli")
    url = f"sqlite:///{root / 'study.db'}"
    _create("base", url, synth_root, head_hidden_space(root))
    return url, root


# --- samplers ----------------------------------------------------------------------------------
def test_sampler_is_stored_and_a_different_one_is_refused(synth_root, tmp_path, sqlite_url):
    space = tiny_space(tmp_path)
    summary = json.loads(_create("q", sqlite_url, synth_root, space, "--sampler", "qmc", "--json").stdout)
    assert summary["sampler"] == "qmc"
    assert load_settings(load("q", sqlite_url)).sampler == "qmc"
    # no --sampler: the default tpe differs from the stored qmc
    other = cli("create", "q", "--data", str(synth_root), "--space", str(space), "--folds", "2",
                "--storage", sqlite_url, "--skip-if-exists", check=False)
    assert other.returncode == 1 and "Traceback" not in other.stderr
    assert "sampler 'qmc', not 'tpe'" in other.stderr and "--sampler qmc" in other.stderr
    same = _create("q", sqlite_url, synth_root, space, "--sampler", "qmc", "--skip-if-exists", "--json")
    assert json.loads(same.stdout)["action"] == "exists"
    bad = cli("create", "r", "--data", str(synth_root), "--space", str(space), "--storage", sqlite_url,
              "--sampler", "bayes", check=False)
    assert bad.returncode == 1 and "--sampler 'bayes': choose one of tpe, gp, random, cmaes, qmc" in bad.stderr


def test_settings_stored_before_samplers_load_as_tpe(made):
    url, _ = made
    raw = load_settings(load("base", url)).to_json()
    del raw["sampler"]
    assert StudySettings.from_json(raw).sampler == "tpe"


@pytest.mark.parametrize("name", SAMPLERS)
def test_worker_builds_the_stored_sampler(made, name):
    url, _ = made
    study = load("base", url)
    settings = dataclasses.replace(load_settings(study), sampler=name)
    sampler = build_sampler(study, settings, "cpu")
    # qmc: a QMCSampler subclass that indexes its Sobol sequence by trial number (issue 25 item 0)
    assert isinstance(sampler, SAMPLER_CLASSES[name])
    assert type(sampler).__mro__[1 if name == "qmc" else 0] is SAMPLER_CLASSES[name]


def test_sampler_seeds_workers_apart_and_qmc_shares_the_study_seed():
    def first_draw(**kwargs):
        study = optuna.create_study(sampler=make_sampler("random", **kwargs))
        return study.ask().suggest_float("x", 0.0, 1.0)

    assert first_draw(seed=3, worker="host/cpu/0") == first_draw(seed=3, worker="host/cpu/0")
    assert first_draw(seed=3, worker="host/cpu/0") != first_draw(seed=3, worker="host/gpu1/0")
    assert first_draw(seed=3) == first_draw(seed=3)
    qmc = [make_sampler("qmc", seed=7, worker=w) for w in ("a", "b")]
    assert [q._seed for q in qmc] == [7, 7]  # one scrambled sequence for every worker
    with pytest.raises(UserError, match="choose one of"):
        make_sampler("bayes")


@pytest.mark.slow
def test_random_sampler_worker_runs_the_enqueued_reference(synth_root, tmp_path, sqlite_url):
    space = tiny_space(tmp_path, epochs=1)
    out = _create("rnd", sqlite_url, synth_root, space, "--sampler", "random", "--enqueue-reference")
    # the tiny space searches lr in [5e-4, 2e-3]: the reference's 1e-4 is skipped with a warning
    assert "warning: reference lr = 0.0001 is outside the study's range" in out.stderr
    assert "reference recipe enqueued: cutmix_prob=0.5" in out.stdout
    cli("worker", "rnd", "--storage", sqlite_url, "--artifacts", str(tmp_path / "a"), "--gpus", "cpu",
        "--n-trials", "1", "--no-progress", "--log-dir", str(tmp_path / "logs"))
    [trial] = load("rnd", sqlite_url).get_trials(deepcopy=False)
    assert trial.state == TrialState.COMPLETE
    assert trial.params["cutmix_prob"] == 0.5 and trial.user_attrs["enqueued_from"] == "reference recipe"
    assert 5e-4 <= trial.params["lr"] <= 2e-3


# --- enqueue ---------------------------------------------------------------------------------------
def test_enqueue_params_file_queues_a_checked_trial(made):
    url, root = made
    params = root / "warm.json"
    params.write_text(json.dumps({"lr": 1e-3, "cutmix_prob": 0, "head_hidden": 32}))
    out = json.loads(cli("enqueue", "base", "--params", str(params), "--storage", url, "--json").stdout)
    assert out["enqueued"] is True
    waiting = load("base", url).get_trials(deepcopy=False, states=(TrialState.WAITING,))
    fixed = [t.system_attrs["fixed_params"] for t in waiting]
    assert {"lr": 1e-3, "cutmix_prob": 0.0, "head_hidden": 32} in fixed
    again = cli("enqueue", "base", "--params", str(params), "--storage", url)
    assert "not enqueued" in again.stdout
    assert len(load("base", url).get_trials(deepcopy=False, states=(TrialState.WAITING,))) == len(waiting)


@pytest.mark.parametrize(
    ("name", "text", "needle"),
    [
        ("typo.toml", "learning_rate = 1e-3\n", "key 'learning_rate' is not a searched param of the study (did you mean 'lr'?"),
        ("range.toml", "lr = 0.5\n", "key 'lr' = 0.5 is outside the study's range [0.0005, 0.002]"),
        ("choice.json", '{"cutmix_prob": 0.25}', "key 'cutmix_prob' = 0.25 is not one of the study's choices [0.0, 0.5]"),
        ("fixed.toml", "[params]\nepochs = 5\n", "key 'epochs' is fixed at 2 in the study's space"),
        ("int.json", '{"head_hidden": "16"}', "key 'head_hidden' = '16' is not one of the study's choices [16, 32]"),
        ("broken.json", '{"lr": ', "is not valid JSON"),
        ("empty.toml", "", "expected a non-empty table"),
        ("params.yaml", "lr: 1e-3\n", "use a .toml or .json file"),
    ],
)
def test_enqueue_refuses_bad_params_with_one_line(made, name, text, needle):
    url, root = made
    path = root / name
    path.write_text(text)
    proc = cli("enqueue", "base", "--params", str(path), "--storage", url, check=False)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert str(path) in proc.stderr and needle in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1


def test_enqueue_missing_file_and_unknown_study(made):
    url, root = made
    missing = cli("enqueue", "base", "--params", str(root / "nope.toml"), "--storage", url, check=False)
    assert missing.returncode == 1 and "nope.toml not found" in missing.stderr
    unknown = cli("enqueue", "ghost", "--params", str(root / "nope.toml"), "--storage", url, check=False)
    assert unknown.returncode == 1 and "no study named 'ghost'" in unknown.stderr


def test_enqueue_reference_in_default_space_is_the_recipe(synth_root, tmp_path, sqlite_url):
    out = cli("create", "ref", "--data", str(synth_root), "--folds", "2", "--storage", sqlite_url,
              "--enqueue-reference", "--json")
    reference = json.loads(out.stdout)["reference"]
    assert reference["enqueued"] is True and reference["skipped"] == [] and out.stderr.count("warning") == 0
    assert reference["params"] | {
        "resolution": 384, "resize_mode": "stretch", "image_backbone": "convnext_tiny",
        "mask_backbone": "resnet18", "label_smoothing": 0.1, "color_jitter_prob": 0.8,
    } == reference["params"]
    assert not {"ensemble_top_k", "ensemble_temperature"} & set(reference["params"])
    [queued] = load("ref", sqlite_url).get_trials(deepcopy=False)
    assert queued.state == TrialState.WAITING and queued.system_attrs["fixed_params"] == reference["params"]
    again = cli("create", "ref", "--data", str(synth_root), "--folds", "2", "--storage", sqlite_url,
                "--enqueue-reference", "--skip-if-exists")
    assert "already queued or run" in again.stdout
    assert len(load("ref", sqlite_url).get_trials(deepcopy=False)) == 1


# --- studies, trials, delete-study ---------------------------------------------------------------
def _add_finished(study, number_of_epochs: int, value: float | None, state=TrialState.COMPLETE):
    start = datetime.datetime(2025, 1, 1, 12, 0, 0)
    trial = optuna.trial.create_trial(
        state=state, value=value,
        params={"lr": 1e-3, "cutmix_prob": 0.5, "head_hidden": 16},
        distributions={"lr": FloatDistribution(5e-4, 2e-3, log=True),
                       "cutmix_prob": CategoricalDistribution([0.0, 0.5]),
                       "head_hidden": CategoricalDistribution([16, 32])},
        user_attrs={"epochs_run": number_of_epochs},
    )
    trial.datetime_start, trial.datetime_complete = start, start + datetime.timedelta(seconds=90)
    study.add_trial(trial)


def _studies_contract(url, synth_root, space):
    _create("listed", url, synth_root, space, "--sampler", "gp")
    study = load("listed", url)
    _add_finished(study, 4, 0.61)
    _add_finished(study, 2, 0.72)
    _add_finished(study, 1, None, state=TrialState.PRUNED)
    optuna.create_study(study_name="foreign", storage=url, direction="minimize")
    doc = json.loads(cli("studies", "--storage", url, "--json").stdout)
    rows = {s["study"]: s for s in doc["studies"]}
    assert set(rows) == {"listed", "foreign"}
    assert rows["listed"]["trials"] == {"COMPLETE": 2, "PRUNED": 1, "FAIL": 0, "RUNNING": 0, "WAITING": 0}
    assert rows["listed"]["best"] == {"number": 1, "value": 0.72}
    assert rows["listed"]["direction"] == "maximize" and rows["listed"]["sampler"] == "gp"
    assert rows["foreign"] == {"study": "foreign", "direction": "minimize", "sampler": None,
                               "trials": dict.fromkeys(rows["listed"]["trials"], 0), "best": None,
                               "imported": 0, "own_complete": 0, "split": None}
    key = rows["listed"]["split"]["key"]
    assert rows["listed"]["split"]["folds"] == 2 and rows["listed"]["own_complete"] == 2
    assert [g["studies"] for g in doc["splits"]] == [[{"study": "listed", "complete": 2}]]
    table = cli("studies", "--storage", url).stdout.splitlines()
    assert table[0].split() == ["study", "direction", "sampler", "complete", "pruned", "fail",
                                "running", "waiting", "imported", "best", "split"]
    assert table[1].split() == ["listed", "maximize", "gp", "2", "1", "0", "0", "0", "0", "0.7200",
                                "(trial", "1)", key]
    return doc


def test_studies_on_sqlite(synth_root, tmp_path, sqlite_url):
    _studies_contract(sqlite_url, synth_root, head_hidden_space(tmp_path))


@pytest.mark.postgres
def test_studies_on_postgres(pg_url, synth_root, tmp_path):
    doc = _studies_contract(pg_url, synth_root, head_hidden_space(tmp_path))
    assert doc["storage"].startswith("postgresql")


def test_studies_suggests_no_export_of_a_split_without_a_complete_trial(synth_root, tmp_path, sqlite_url):
    _create("fresh", sqlite_url, synth_root, head_hidden_space(tmp_path))
    _add_finished(load("fresh", sqlite_url), 1, None, state=TrialState.PRUNED)  # pruned: nothing to export
    text = cli("studies", "--storage", sqlite_url).stdout
    assert "export-best" not in text.split("\n\n", 1)[1].replace("(export-best pools", "")
    assert text.rstrip().endswith("fresh (0): 0 complete trial(s) to pool\n"
                                  "    no complete trial yet, nothing to export: run workers first")
    (group,) = json.loads(cli("studies", "--storage", sqlite_url, "--json").stdout)["splits"]
    assert group["candidates"] == 0 and group["export"] is None
    _add_finished(load("fresh", sqlite_url), 2, 0.5)  # one complete trial: the line is back
    assert "    histosweep export-best fresh --out bundle" in cli("studies", "--storage", sqlite_url).stdout


def test_studies_of_an_empty_storage(sqlite_url):
    from histosweep.storage import open_storage

    open_storage(sqlite_url)  # an empty database (a missing file is an error: test_storage.py)
    assert "no studies in this storage" in cli("studies", "--storage", sqlite_url).stdout


def test_trials_in_table_json_and_csv(synth_root, tmp_path, sqlite_url):
    _create("t", sqlite_url, synth_root, head_hidden_space(tmp_path))
    study = load("t", sqlite_url)
    _add_finished(study, 4, 0.61)
    _add_finished(study, 1, None, state=TrialState.PRUNED)
    reported = study.ask()
    reported.report(0.2, 0)
    reported.report(0.31, 4)
    study.tell(reported, state=TrialState.PRUNED)  # Optuna keeps step 4's 0.31 as the value
    study.enqueue_trial({"lr": 6e-4})
    doc = json.loads(cli("trials", "t", "--storage", sqlite_url, "--json").stdout)
    assert doc["params"] == ["cutmix_prob", "head_hidden", "lr"]
    first, pruned, pruned_at_4, waiting = doc["trials"]
    assert first == {"number": 0, "state": "COMPLETE", "value": 0.61, "pruned_at_step": None,
                     "params": {"cutmix_prob": 0.5, "head_hidden": 16, "lr": 1e-3},
                     "duration_s": 90.0, "epochs_run": 4, "imported_from": None}
    assert pruned["state"] == "PRUNED" and pruned["value"] is None and pruned["epochs_run"] == 1
    assert pruned["pruned_at_step"] is None
    assert pruned_at_4["value"] == 0.31 and pruned_at_4["pruned_at_step"] == 4
    assert waiting["state"] == "WAITING" and waiting["params"]["lr"] == 6e-4 and waiting["duration_s"] is None

    rows = list(csv.DictReader(io.StringIO(
        cli("trials", "t", "--storage", sqlite_url, "--format", "csv", "--state", "complete").stdout)))
    assert rows == [{"number": "0", "state": "COMPLETE", "value": "0.61", "cutmix_prob": "0.5",
                     "head_hidden": "16", "lr": "0.001", "duration_s": "90.0", "epochs_run": "4"}]

    table = cli("trials", "t", "--storage", sqlite_url, "--state", "PRUNED").stdout.splitlines()
    assert table[0].split() == ["number", "state", "value", "cutmix_prob", "head_hidden", "lr",
                                "duration_s", "epochs_run"]
    assert table[1].split() == ["1", "pruned", "-", "0.5", "16", "0.001", "90.0", "1"]
    assert table[2].split()[:6] == ["2", "pruned", "0.3100", "@", "step", "4"]
    assert " 0.3100 @ step 4 (pruned) " in table[2] and len(table) == 4
    assert table[3] == ("pruned: the value is the last intermediate value reported (a fold's "
                        "validation F1 at that step), not a final out-of-fold score")
    complete = cli("trials", "t", "--storage", sqlite_url, "--state", "complete").stdout
    assert "(pruned)" not in complete and "intermediate" not in complete
    assert "no trials in state fail" in cli("trials", "t", "--storage", sqlite_url, "--state", "fail").stdout


@pytest.mark.parametrize(
    ("args", "needle"),
    [(("--state", "done"), "--state 'done': choose one of complete, pruned, fail, running, waiting"),
     (("--format", "xml"), "--format 'xml': choose one of table, json, csv")],
)
def test_trials_option_errors(made, args, needle):
    url, _ = made
    proc = cli("trials", "base", "--storage", url, *args, check=False)
    assert proc.returncode == 1 and needle in proc.stderr and "Traceback" not in proc.stderr


def test_delete_study_needs_yes_when_it_has_trials(synth_root, tmp_path, sqlite_url):
    _create("doomed", sqlite_url, synth_root, head_hidden_space(tmp_path))
    optuna.create_study(study_name="empty", storage=sqlite_url)
    _add_finished(load("doomed", sqlite_url), 4, 0.5)
    refused = cli("delete-study", "doomed", "--storage", sqlite_url, check=False)
    assert refused.returncode == 1 and "Traceback" not in refused.stderr
    assert refused.stderr.strip() == (
        "error: study 'doomed' has 1 trial (1 complete); pass --yes to delete it and its trials")
    assert load("doomed", sqlite_url).trials  # still there
    typo = cli("delete-study", "doomd", "--yes", "--storage", sqlite_url, check=False)
    assert typo.returncode == 1 and typo.stderr.strip() == (
        "error: no study named 'doomd' in this storage; did you mean 'doomed'? (studies: doomed, empty)")
    deleted = json.loads(cli("delete-study", "doomed", "--yes", "--storage", sqlite_url, "--json").stdout)
    assert deleted["deleted"] is True and deleted["trials"] == 1
    cli("delete-study", "empty", "--storage", sqlite_url)  # no trials: no --yes needed
    assert json.loads(cli("studies", "--storage", sqlite_url, "--json").stdout)["studies"] == []
    gone = cli("delete-study", "doomed", "--yes", "--storage", sqlite_url, check=False)
    assert gone.returncode == 1 and gone.stderr.strip() == (  # not 'create it': deleting was asked
        "error: no study named 'doomed' in this storage (studies: none); "
        "check the name, and --storage for the storage that holds it")
