"""`histosweep dashboard` as a real process on a finished tiny study: studies, trials, artifacts.

SQLite and PostgreSQL; a headless Chromium screenshot of the study page (slow).
"""

from __future__ import annotations

import shutil
import subprocess
import urllib.parse
import urllib.request
from pathlib import Path

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
    def __init__(self, url: str, artifacts: Path, log_dir: Path) -> None:
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        args = ["dashboard", "--storage", url, "--artifacts", str(artifacts)]
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
        ("0.0.0.0", "http://127.0.0.1:8080/dashboard"),  # a wildcard bind is shown as loopback
        ("::1", "http://[::1]:8080/dashboard"),
        ("gpu-box", "http://gpu-box:8080/dashboard"),
    ],
)
def test_dashboard_url_is_one_a_person_can_open(host: str, url: str) -> None:
    from histosweep.search._dashboard import dashboard_url

    assert dashboard_url(host, 8080) == url
