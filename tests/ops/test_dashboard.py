"""`histosweep dashboard` as a real process on a finished tiny study: studies, trials, artifacts.

SQLite and PostgreSQL; a headless Chromium screenshot of the study page (slow).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import urllib.parse
import urllib.request
from pathlib import Path

import numpy as np
import optuna
import pytest

from tests.ops._helpers import (
    clean_env,
    free_port,
    get_json,
    histosweep_cmd,
    require_tool,
    start,
    stop,
    wait_http,
)

STUDY = "ops-tiny"
N_TRIALS = 3
N_STEPS = 4


def make_finished_study(url: str, artifacts: Path) -> None:
    """Three finished trials, each with per-step intermediate values and one artifact."""
    import optuna
    from optuna.artifacts import FileSystemArtifactStore, upload_artifact

    from histosweep.storage import open_storage

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    artifacts.mkdir(parents=True, exist_ok=True)
    store = FileSystemArtifactStore(str(artifacts))
    study = optuna.create_study(study_name=STUDY, storage=open_storage(url), direction="maximize")

    def objective(trial: optuna.Trial) -> float:
        lr = trial.suggest_float("lr", 1e-5, 1e-3, log=True)
        for step in range(N_STEPS):
            trial.report(0.1 * step + lr, step)
        path = artifacts.parent / f"probs_{trial.number}.csv"
        path.write_text("sample_index,p0,p1,p2,p3\nimg_0000.png,0.1,0.2,0.3,0.4\n")
        upload_artifact(
            artifact_store=store, file_path=str(path), study_or_trial=trial, mimetype="text/csv"
        )
        return 0.3 + lr

    study.optimize(objective, n_trials=N_TRIALS)


def _with_password(url: str) -> tuple[str, str]:
    """The URL with a password in it (PostgreSQL's trust auth ignores it), and that password."""
    parts = urllib.parse.urlsplit(url)
    if parts.password:
        return url, parts.password
    password = "not-a-real-pw-4711"
    netloc = f"{parts.username or 'postgres'}:{password}@{parts.hostname}"
    netloc += f":{parts.port}" if parts.port else ""
    return urllib.parse.urlunsplit(parts._replace(netloc=netloc)), password


class _Dashboard:
    def __init__(self, url: str, artifacts: Path, log_dir: Path, *extra: str) -> None:
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        args = ["dashboard", "--storage", url, "--artifacts", str(artifacts), *extra]
        self.proc, self.stderr_path = start(args + ["--port", str(self.port)], log_dir)

    def __enter__(self) -> _Dashboard:
        try:
            wait_http(f"{self.base}/api/meta", self.proc, self.stderr_path)
        except BaseException:
            stop(self.proc)
            raise
        return self

    def __exit__(self, *exc) -> None:
        stop(self.proc)

    def study_id(self) -> int:
        summaries = get_json(f"{self.base}/api/studies")["study_summaries"]
        names = {s["study_name"]: s["study_id"] for s in summaries}
        assert STUDY in names, f"study {STUDY!r} not listed: {sorted(names)}"
        return names[STUDY]


def _check_dashboard(url: str, tmp_path: Path) -> str:
    artifacts = tmp_path / "artifacts"
    make_finished_study(url, artifacts)
    with _Dashboard(url, artifacts, tmp_path) as dash:
        meta = get_json(f"{dash.base}/api/meta")
        assert meta["artifact_is_available"] is True
        study_id = dash.study_id()
        detail = get_json(f"{dash.base}/api/studies/{study_id}")
        trials = detail["trials"]
        assert len(trials) == N_TRIALS
        assert all(t["state"] == "Complete" for t in trials)
        assert detail["has_intermediate_values"] is True
        assert len(trials[0]["intermediate_values"]) == N_STEPS
        listed = trials[0]["artifacts"]
        assert [a["filename"] for a in listed] == [f"probs_{trials[0]['number']}.csv"]
        # The artifact itself is served from the store, not just listed.
        artifact_url = (
            f"{dash.base}/artifacts/{study_id}/{trials[0]['trial_id']}/{listed[0]['artifact_id']}"
        )
        with urllib.request.urlopen(artifact_url, timeout=10) as response:
            assert response.read().startswith(b"sample_index,")
    return dash.stderr_path.read_text()


def test_dashboard_serves_sqlite_study_with_artifacts(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'study.db'}"
    stderr = _check_dashboard(url, tmp_path)
    assert "http://127.0.0.1:" in stderr


@pytest.mark.postgres
def test_dashboard_serves_postgres_study_without_printing_password(
    pg_url: str, tmp_path: Path
) -> None:
    url, password = _with_password(pg_url)
    stderr = _check_dashboard(url, tmp_path)
    assert "http://127.0.0.1:" in stderr
    assert password not in stderr
    assert ":***@" in stderr


def test_dashboard_port_in_use_is_one_clear_line(tmp_path: Path) -> None:
    import socket

    from histosweep.storage import open_storage

    open_storage(f"sqlite:///{tmp_path / 's.db'}")  # an empty study database (a missing one is
    # its own error: tests/storage/test_storage.py::test_reading_commands_never_create_a_database)
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        result = subprocess.run(
            histosweep_cmd()
            + ["dashboard", "--storage", f"sqlite:///{tmp_path / 's.db'}"]
            + ["--artifacts", str(tmp_path / "a"), "--port", str(port)],
            capture_output=True,
            text=True,
            timeout=120,
            env=clean_env(),
        )
    assert result.returncode == 1
    assert (
        result.stderr.strip()
        == f"error: port {port} on 127.0.0.1 is already in use: pass another --port"
    )


def _chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.mark.slow
def test_dashboard_study_page_screenshot(tmp_path: Path) -> None:
    browser = require_tool(_chromium(), "chromium not installed (apt-get install -y chromium)")
    url = f"sqlite:///{tmp_path / 'study.db'}"
    artifacts = tmp_path / "artifacts"
    make_finished_study(url, artifacts)
    shot = tmp_path / "study.png"
    with _Dashboard(url, artifacts, tmp_path) as dash:
        page = f"{dash.base}/dashboard/studies/{dash.study_id()}"
        result = subprocess.run(
            [browser, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars"]
            + [
                "--disable-dev-shm-usage",
                "--no-first-run",
                "--user-data-dir=" + str(tmp_path / "chr"),
            ]
            + ["--virtual-time-budget=15000", "--window-size=1280,800"]
            + [f"--screenshot={shot}", page],
            capture_output=True,
            text=True,
            timeout=180,
        )
    assert result.returncode == 0, result.stderr[-2000:]
    assert shot.is_file(), result.stderr[-2000:]
    _assert_not_blank(shot)


def _assert_not_blank(png: Path) -> None:
    """A rendered page has many colours; a blank or error page has a handful."""
    from PIL import Image

    with Image.open(png) as image:
        assert image.size == (1280, 800)
        colours = image.convert("RGB").getcolors(maxcolors=1_000_000)
    assert colours is not None and len(colours) > 50, (
        f"{png} looks blank ({len(colours or [])} colours)"
    )


@pytest.mark.parametrize(
    ("host", "url"),
    [
        ("127.0.0.1", "http://127.0.0.1:8080/dashboard"),
        ("0.0.0.0", "http://HOST:8080/dashboard"),  # a wildcard bind: this machine's name
        ("::", "http://HOST:8080/dashboard"),
        ("::1", "http://[::1]:8080/dashboard"),
        ("gpu-box", "http://gpu-box:8080/dashboard"),
    ],
)
def test_dashboard_url_is_one_a_person_can_open(host: str, url: str) -> None:
    import socket

    from histosweep.fleet import dashboard_url

    assert dashboard_url(host, 8080) == url.replace("HOST", socket.gethostname())


def test_dashboard_on_all_interfaces_says_so_and_names_this_host(tmp_path: Path) -> None:
    import socket

    url = f"sqlite:///{tmp_path / 'study.db'}"
    make_finished_study(url, tmp_path / "artifacts")
    with _Dashboard(url, tmp_path / "artifacts", tmp_path, "--host", "0.0.0.0") as dash:
        get_json(f"{dash.base}/api/meta")  # loopback answers: the bind is really the wildcard
        stderr = dash.stderr_path.read_text()
    port = dash.port
    assert f"on all interfaces (0.0.0.0:{port}, reachable from the network)" in stderr
    assert f"at http://{socket.gethostname()}:{port}/dashboard" in stderr
    assert f"or http://127.0.0.1:{port}/dashboard on this machine" in stderr
    assert "at http://127.0.0.1:" not in stderr  # loopback is not offered as the URL to share


# --- a trained study: the trial's note and plotly figures, the export note -------------------
@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """Two real trials (2 folds, 1 epoch) and export-best --device cpu; built once."""
    from histosweep._demo import STUDY as DEMO
    from histosweep._demo import DemoPaths, create_demo_study, run_demo_workers
    from histosweep.cli import main
    from histosweep.data import synthesize
    from tests.search._helpers import tiny_space

    root = tmp_path_factory.mktemp("trained")
    paths = DemoPaths(root)
    synthesize(paths.data, n_train=32, n_test=4, seed=0, short_side=48)
    create_demo_study(paths, tiny_space(root, epochs=1), folds=2, pruner="none", holdout=0.2,
                      progress=False)
    assert run_demo_workers(paths, trials=2, workers=1, progress=False) == 0
    out = root / "bundle"
    code = main(["export-best", DEMO, "--out", str(out), "--storage", paths.storage, "--artifacts",
                 str(paths.artifacts), "--device", "cpu", "--no-progress", "--json"])
    assert code == 0
    return paths, DEMO, out


def test_export_and_predict_run_on_the_device_given(trained, capsys):
    from histosweep.cli import main

    paths, _, bundle = trained
    capsys.readouterr()
    csv = bundle.parent / "pred.csv"
    assert main(["predict", str(bundle), "--images", str(paths.test), "--out", str(csv),
                 "--device", "cpu", "--no-progress", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["rows"] == 4 and csv.is_file()


def _oof_samples(storage: str, study: str) -> int:
    from histosweep.search import load_settings
    from tests.search._helpers import load

    return sum(len(val) for _, val in load_settings(load(study, storage)).split_obj().folds)


def _trained_detail(dash: _Dashboard, study: str) -> tuple[int, dict]:
    summaries = get_json(f"{dash.base}/api/studies")["study_summaries"]
    study_id = next(s["study_id"] for s in summaries if s["study_name"] == study)
    return study_id, get_json(f"{dash.base}/api/studies/{study_id}")


def test_trial_note_figures_and_export_note_are_served(trained, tmp_path):
    import re

    from histosweep.trial_files._trial_page import EXPORT_HEADING

    paths, study, bundle = trained
    manifest = json.loads((bundle / "manifest.json").read_text())
    with _Dashboard(paths.storage, paths.artifacts, tmp_path) as dash:
        study_id, detail = _trained_detail(dash, study)
        complete = [t for t in detail["trials"] if t["state"] == "Complete"]
        assert len(complete) == 2
        for trial in complete:  # every trial: its fold table, its PNGs served from the store
            body = trial["note"]["body"]
            rows = [line for line in body.splitlines() if re.match(r"\| \d \| 0\.\d{4} \| 1 \|", line)]
            assert len(rows) == 2, body
            images = re.findall(r"!\[[^]]*\]\((/artifacts/[^)]+)\)", body)
            assert len(images) == 3, body  # 2 folds' learning curves + the OOF confusion matrix
            for path in images:
                with urllib.request.urlopen(dash.base + path, timeout=10) as response:
                    assert response.read(8) == b"\x89PNG\r\n\x1a\n"
        figures = {g["id"]: json.loads(g["graph_object"]) for g in detail["plotly_graph_objects"]}
        first = min(t["number"] for t in complete)  # the first to finish was the best then
        curves = figures[f"trial-{first}-learning-curves"]
        assert len(curves["data"]) == 4  # train loss + val F1 for each of 2 folds
        assert {d["name"] for d in curves["data"]} == {"fold 1", "fold 2"}  # as the logs count
        confusion = figures[f"trial-{first}-oof-confusion"]
        counts = confusion["data"][0]["z"]
        assert sum(map(sum, counts)) == _oof_samples(paths.storage, study)
        assert len(counts) == 4 and all(len(row) == 4 for row in counts)
        assert set(figures) <= {f"trial-{t['number']}-{kind}" for t in complete
                                for kind in ("learning-curves", "oof-confusion")}
        note = detail["note"]["body"]
        kept, export = note.split(EXPORT_HEADING)  # create's note stays above the export's
        assert "**Data**" in kept and str(bundle) in export
        assert f"{manifest['metrics']['lockbox_f1']:.4f}" in export and "95% bootstrap CI" in export
        for member in manifest["members"]:
            assert f"| {member['trial']} | {member['weight']:.3f} |" in export


def test_export_keeps_what_a_person_wrote_in_the_study_note(trained):
    from optuna_dashboard import get_note, save_note

    from histosweep.trial_files._trial_page import EXPORT_HEADING, save_export_note
    from tests.search._helpers import load

    paths, study_name, bundle = trained
    study = load(study_name, paths.storage)
    summary = {"out": "b2", "members": [{"trial": 1, "weight": 1.0, "oof_f1": 0.5}],
               "metrics": {"oof_f1": 0.5, "lockbox_f1": 0.25, "lockbox_f1_ci95": [0.1, 0.4]},
               "submission": None}
    save_note(study, "my own notes\n\n" + get_note(study))
    save_export_note(study, summary)
    note = get_note(study)
    assert note.startswith("my own notes\n\n# ")  # the person's line, then create's note
    assert note.count(EXPORT_HEADING) == 1 and "`b2`" in note and str(bundle) not in note


def test_a_failing_note_or_figure_only_warns(trained, caplog):
    from histosweep.data import CLASSES
    from histosweep.trial_files import publish_trial
    from tests.search._helpers import load

    paths, study_name, _ = trained
    study = load(study_name, paths.storage)
    trial = study.ask()  # a real trial; its fold record lacks val_f1, as a broken record would
    with caplog.at_level("WARNING", logger="histosweep"):
        publish_trial(study, trial, folds={0: {"epochs": 1}}, value=0.9, labels=np.zeros(2, int),
                      preds=np.zeros(2, int), classes=CLASSES, confusion_png=None)
    assert "dashboard note/figures not saved: KeyError" in caplog.text
    study.tell(trial, state=optuna.trial.TrialState.FAIL)


def _chromium_run(browser: str, tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    result = subprocess.run(
        [browser, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
         "--disable-dev-shm-usage", "--no-first-run", f"--user-data-dir={tmp_path / 'chr'}",
         "--virtual-time-budget=15000", "--window-size=1280,800", *args],
        capture_output=True, text=True, timeout=180,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    return result


@pytest.mark.slow
def test_trial_page_and_figures_render_in_a_browser(trained, tmp_path):
    browser = require_tool(_chromium(), "chromium not installed (apt-get install -y chromium)")
    paths, study, _ = trained
    shot = tmp_path / "trial.png"
    with _Dashboard(paths.storage, paths.artifacts, tmp_path) as dash:
        study_id, detail = _trained_detail(dash, study)
        number = min(t["number"] for t in detail["trials"] if t["state"] == "Complete")
        trial_page = f"{dash.base}/dashboard/studies/{study_id}/trials?numbers={number}"
        trial_dom = _chromium_run(browser, tmp_path, "--dump-dom", trial_page).stdout
        study_dom = _chromium_run(browser, tmp_path, "--dump-dom",
                                  f"{dash.base}/dashboard/studies/{study_id}").stdout
        _chromium_run(browser, tmp_path, f"--screenshot={shot}", trial_page)
    # the note rendered as markdown: its heading, its table and its images
    assert f"Trial {number}: out-of-fold macro-F1" in trial_dom
    assert "best epoch</th>" in trial_dom and f"/artifacts/{study_id}/" in trial_dom
    # plotly drew the figures on the study page (an svg inside the figure's div)
    for kind in ("learning-curves", "oof-confusion"):
        start = study_dom.index(f'id="user-defined-plot:trial-{number}-{kind}"')
        assert "main-svg" in study_dom[start:start + 5000], kind
    _assert_not_blank(shot)
