"""Storage contract tests, run over SQLite and real PostgreSQL (like optuna's pytest_storages)."""

from __future__ import annotations

import subprocess
import sys

import optuna
import pytest

from histosweep import storage
from histosweep.storage import StorageError

optuna.logging.set_verbosity(optuna.logging.WARNING)


@pytest.fixture(params=["sqlite", "postgres"])
def storage_url(request, tmp_path):
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'study.db'}"
    return request.getfixturevalue("pg_url")


def test_create_and_load(storage_url):
    st = storage.open_storage(storage_url)
    study = optuna.create_study(study_name="s", storage=st, direction="maximize")
    study.set_user_attr("histosweep", {"folds": 3})
    trial = study.ask()
    study.tell(trial, 0.5)
    again = optuna.load_study(study_name="s", storage=storage.open_storage(storage_url))
    assert again.user_attrs["histosweep"] == {"folds": 3}
    assert again.best_value == 0.5
    counts = storage.count_trials_by_state(storage.study_storage(again), storage.study_id(again))
    assert counts["COMPLETE"] == 1 and counts["RUNNING"] == 0


def test_heartbeat_stale_trial_is_failed_and_requeued(storage_url):
    st = storage.open_storage(storage_url, heartbeat=1, grace_period=1)
    study = optuna.create_study(study_name="hb", storage=st)
    trial = study.ask(fixed_distributions={"x": optuna.distributions.FloatDistribution(0, 1)})
    st.record_heartbeat(storage.trial_id(trial))
    ages = storage.heartbeat_ages(storage.study_storage(study), storage.study_id(study))
    assert trial.number in ages and ages[trial.number] < 60
    # Make the heartbeat stale by moving it into the past instead of sleeping.
    import sqlalchemy as sa

    with st.engine.begin() as conn:
        conn.execute(sa.text("UPDATE trial_heartbeats SET heartbeat = heartbeat - INTERVAL '1 hour'")
                     if "postgres" in storage_url else
                     sa.text("UPDATE trial_heartbeats SET heartbeat = datetime(heartbeat, '-1 hour')"))
    with pytest.warns(optuna.exceptions.ExperimentalWarning):
        optuna.storages.fail_stale_trials(study)
    trials = study.get_trials(deepcopy=False)
    states = [t.state.name for t in trials]
    assert states == ["FAIL", "WAITING"]
    assert trials[1].system_attrs["failed_trial"] == trial.number


def test_artifacts_round_trip(storage_url, tmp_path):
    from optuna.artifacts import upload_artifact

    study = optuna.create_study(storage=storage.open_storage(storage_url))
    trial = study.ask()
    store = storage.open_artifact_store(str(tmp_path / "artifacts"))
    src = tmp_path / "blob.bin"
    payload = bytes(range(256)) * 100
    src.write_bytes(payload)
    artifact_id = upload_artifact(artifact_store=store, file_path=str(src), study_or_trial=trial)
    with store.open_reader(artifact_id) as fh:
        assert fh.read() == payload


def test_study_gate_serialises(storage_url):
    """Threads (each its own lock handle / connection) never hold the gate at the same time."""
    import threading

    study = optuna.create_study(study_name="g", storage=storage.open_storage(storage_url))
    state = {"inside": 0, "most": 0}
    counter = threading.Lock()
    numbers: list[int] = []

    def worker() -> None:
        for _ in range(5):
            with storage.study_gate(storage.study_storage(study), "g"):
                with counter:
                    state["inside"] += 1
                    state["most"] = max(state["most"], state["inside"])
                numbers.append(study.ask().number)  # real I/O inside the gate: others would overlap
                with counter:
                    state["inside"] -= 1

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert state["most"] == 1
    assert sorted(numbers) == list(range(20))


def test_password_is_redacted_in_connection_errors():
    url = "postgresql+psycopg2://alice:s3cr3t-pw@127.0.0.1:1/nodb"
    with pytest.raises(StorageError) as info:
        storage.open_storage(url)
    message = str(info.value)
    assert "s3cr3t-pw" not in message
    assert "alice:***@127.0.0.1" in message
    assert storage.redact_text("connect to s3cr3t-pw failed") == "connect to *** failed"
    storage.resolve_storage_url("postgresql://alice:p%40ss-9x@127.0.0.1:1/nodb")  # remembered
    assert storage.redact_text("password for p@ss-9x refused") == "password for *** refused"


def test_wrong_scheme_is_one_clear_line():
    with pytest.raises(StorageError, match="unsupported storage URL 'mysql://u:\\*\\*\\*@h/db'"):
        storage.resolve_storage_url("mysql://u:pw@h/db")


def test_engine_options():
    assert storage.engine_options("postgresql+psycopg2://h/db")["pool_pre_ping"] is True
    assert storage.engine_options("sqlite:///x.db")["connect_args"]["timeout"] >= 30


def test_atomic_write_leaves_no_partial_file(tmp_path):
    target = tmp_path / "out.txt"
    with pytest.raises(RuntimeError):
        with storage.atomic_path(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("crash")
    assert not target.exists()
    assert list(tmp_path.iterdir()) == []
    storage.atomic_write_text(target, "whole")
    assert target.read_text() == "whole"


def test_atomic_dir_replaces_whole(tmp_path):
    target = tmp_path / "bundle"
    with storage.atomic_dir(target) as tmp:
        (tmp / "a").write_text("1")
    with pytest.raises(ValueError):
        with storage.atomic_dir(target, replace=True) as tmp:
            (tmp / "b").write_text("2")
            raise ValueError("midway")
    assert sorted(p.name for p in target.iterdir()) == ["a"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bundle"]


def _rename_after_another_writer(monkeypatch, target, content):
    """os.rename that lets another writer's copy land at `target` just before our first rename
    onto it: the window between moving the old copy aside and renaming ours in (CI hit it)."""
    import os

    real_rename = os.rename
    landed = []

    def rename(src, dst):
        if str(dst) == str(target) and not landed:
            other = target.parent / ".other-writer.tmp"
            other.mkdir()
            (other / "who").write_text(content)
            real_rename(other, target)
            landed.append(True)
        return real_rename(src, dst)

    monkeypatch.setattr(os, "rename", rename)
    return landed


def test_atomic_dir_replace_retries_when_another_writer_lands_first(tmp_path, monkeypatch):
    target = tmp_path / "entry"
    with storage.atomic_dir(target) as tmp:
        (tmp / "who").write_text("first")
    landed = _rename_after_another_writer(monkeypatch, target, "other")
    with storage.atomic_dir(target, replace=True) as tmp:
        (tmp / "who").write_text("ours")
    assert landed  # the race really happened
    assert (target / "who").read_text() == "ours"  # the last rename wins, as two builders expect
    assert sorted(p.name for p in tmp_path.iterdir()) == ["entry"]  # no .old- or .tmp left


def test_atomic_dir_refuses_a_foreign_folder_that_lands_in_the_window(tmp_path, monkeypatch):
    target = tmp_path / "bundle"
    with storage.atomic_dir(target) as tmp:
        (tmp / "who").write_text("ours-earlier")
    _rename_after_another_writer(monkeypatch, target, "foreign")
    ours = lambda path: (path / "who").read_text().startswith("ours")  # noqa: E731
    with pytest.raises(FileExistsError):
        with storage.atomic_dir(target, replace=ours) as tmp:
            (tmp / "who").write_text("ours-new")
    assert (target / "who").read_text() == "foreign"  # left untouched
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bundle"]


def test_s3_spec_builds_a_boto3_store(monkeypatch):
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "x")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "y")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    store = storage.open_artifact_store("s3://bucket/some/prefix")
    assert store._key("abc") == "some/prefix/abc"
    assert store._inner.bucket == "bucket"


def test_unopenable_sqlite_file_gets_file_advice(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    with pytest.raises(StorageError) as info:
        storage.open_storage(f"sqlite:///{blocker}/study.db")
    message = str(info.value)
    assert f"{blocker} is a file, not a folder; create the folder or fix the path" in message
    assert "host, port" not in message


@pytest.mark.parametrize(
    "url, secret",
    [
        ("postgresql+psycopg2:/bob:one-slash-pw@127.0.0.1:1/db", "one-slash-pw"),
        ("postgresql+psycopg2://bob:has space pw@127.0.0.1:1/db", "has space pw"),
        ("postgresql://bob:raw@at-pw@127.0.0.1:1/db", "raw@at-pw"),
        ("postgresql+psycopg2:bob:no-slash-pw@127.0.0.1:1/db", "no-slash-pw"),
        ("mysql://bob:other-scheme-pw@[::1]:3306/db", "other-scheme-pw"),
        ("postgresql://bob:quote'in-pw@127.0.0.1:1/db", "quote'in-pw"),
    ],
)
def test_malformed_urls_never_print_their_password(url, secret, tmp_path):
    """The CLI's one line for a malformed URL hides the password, also with --debug."""
    for extra in ([], ["--debug"]):
        proc = subprocess.run(
            [sys.executable, "-m", "histosweep", "status", "s", "--storage", url, *extra],
            capture_output=True, text=True, cwd=tmp_path, timeout=120,
        )
        assert proc.returncode == 1, proc.stderr
        out = proc.stdout + proc.stderr
        assert "bob:***@" in out, out
        assert secret not in out and secret.split()[0] not in out, out


def _cli(*args: str, cwd) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "histosweep", *args], capture_output=True,
                          text=True, cwd=cwd, timeout=120)


def test_query_parameter_passwords_are_never_printed(pg_url, tmp_path):
    """libpq also takes ?password=: redacted like USER:PASSWORD@, on success and on failure."""
    secret = "Qu3ryPW-9z"
    working = f"{pg_url}?password={secret}"  # trust auth: the password is accepted and unused
    listed = _cli("studies", "--json", "--storage", working, cwd=tmp_path)
    assert listed.returncode == 0, listed.stderr
    assert "password=***" in listed.stdout and secret not in listed.stdout + listed.stderr
    closed = f"postgresql://u@127.0.0.1:9/db?sslmode=disable&password={secret}"
    for extra in ([], ["--debug"]):
        failed = _cli("status", "x", "--storage", closed, *extra, cwd=tmp_path)
        assert failed.returncode == 1 and secret not in failed.stdout + failed.stderr
        assert "password=***" in failed.stderr


@pytest.mark.parametrize("url", ["foo://bar", "sqlite:/x.db", "http://h:5432/db"])
def test_unsupported_url_error_keeps_its_advice(url, tmp_path):
    proc = _cli("studies", "--storage", url, cwd=tmp_path)
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines() == [
        f"error: unsupported storage URL {url!r}: use sqlite:///FILE.db, "
        "postgresql://USER@HOST:5432/DB (the password in the URL, PGPASSWORD or ~/.pgpass) "
        "or grpc://PROXY_HOST:13000"]


def test_raw_at_in_a_password_is_refused_before_the_driver_splits_it(tmp_path):
    proc = _cli("studies", "--storage", "postgresql://u:S3cr@tPW@127.0.0.1:9/hs", cwd=tmp_path)
    assert proc.returncode == 1 and "%40" in proc.stderr
    assert "tPW" not in proc.stderr and "S3cr" not in proc.stderr


def test_reading_commands_never_create_a_database(tmp_path):
    """A typo in a SQLite path is one line naming the file, not a new empty database."""
    for args in (["studies"], ["status", "subtypes"], ["trials", "subtypes"], ["dashboard"],
                 ["studies", "--storage", "sqlite:///typo.db"]):
        proc = _cli(*args, cwd=tmp_path)
        assert proc.returncode == 1, (args, proc.stderr)
        assert "no SQLite database at" in proc.stderr and "histosweep create" in proc.stderr
        assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert list(tmp_path.iterdir()) == []


def test_a_sqlite_url_in_a_missing_folder_is_one_line_naming_the_folder(synth_root, tmp_path):
    """create: the folder is named with what to do, before the data audit; the reading commands
    say there is no database there. Nothing is written either way."""
    work = tmp_path / "work"
    work.mkdir()
    url = "sqlite:///nope/study.db"
    created = _cli("create", "s", "--data", str(synth_root), "--storage", url, cwd=work)
    assert created.returncode == 1
    assert created.stderr.splitlines() == [
        f"error: no folder for the SQLite database {work}/nope/study.db (storage {url}): "
        f"{work}/nope does not exist; create the folder or fix the path in --storage or "
        "$HISTOSWEEP_STORAGE"]
    (work / "afile").write_text("")
    in_a_file = _cli("create", "s", "--data", str(synth_root), "--storage",
                     "sqlite:///afile/study.db", cwd=work)
    assert in_a_file.returncode == 1 and len(in_a_file.stderr.splitlines()) == 1
    assert f"{work}/afile is a file, not a folder; create the folder" in in_a_file.stderr
    said = (f"no SQLite database at {work}/nope/study.db (storage {url}; its folder {work}/nope "
            "does not exist): create a study first (histosweep create STUDY --data DATA), or "
            "point --storage or $HISTOSWEEP_STORAGE at the study's database")
    for args in (["status", "s"], ["trials", "s"], ["studies"], ["worker", "s", "--gpus", "cpu"]):
        proc = _cli(*args, "--storage", url, cwd=work)
        assert proc.returncode == 1, (args, proc.stderr)
        (line,) = proc.stderr.splitlines()
        assert line in (f"error: {said}", f"error: storage: {said}"), args  # worker: its check
    assert sorted(p.name for p in work.iterdir()) == ["afile"]


def test_a_file_that_is_not_a_database_is_one_line(tmp_path):
    other = tmp_path / "space.toml"
    other.write_text("[params]\nlr = 0.001\n" * 200)
    proc = _cli("studies", "--storage", f"sqlite:///{other}", cwd=tmp_path)
    assert proc.returncode == 1 and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert "not a database" in proc.stderr and "--storage" in proc.stderr


@pytest.mark.parametrize("url, expect", [
    ("grpc://u:Gr9cPw@127.0.0.1:13999", "no user, password or path"),
    ("grpc://127.0.0.1:notaport", "grpc://HOST:PORT"),
    ("grpc://127.0.0.1:9", "no storage proxy answers"),  # nothing listens on the discard port
])
def test_bad_or_unreachable_proxy_is_one_line(url, expect, tmp_path):
    proc = _cli("studies", "--storage", url, cwd=tmp_path)
    assert proc.returncode == 1, proc.stderr
    assert proc.stderr.strip().splitlines() == [proc.stderr.strip()] and expect in proc.stderr
    assert "Gr9cPw" not in proc.stderr and "Warning" not in proc.stderr


def test_a_query_password_is_hidden_and_the_text_after_it_kept():
    from histosweep.storage import redact

    text = "cannot open storage postgresql://u@h/db?password=pw9x: connection refused"
    assert redact(text) == "cannot open storage postgresql://u@h/db?password=***: connection refused"
    assert redact("h/db?password=a:b&sslmode=require") == "h/db?password=***&sslmode=require"
