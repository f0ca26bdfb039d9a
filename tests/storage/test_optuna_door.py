"""One test per Optuna internal that histosweep.storage._optuna relies on: an Optuna upgrade that
moves one fails here, loudly, before anything else. Run over SQLite and PostgreSQL."""

from __future__ import annotations

import io
import json

import optuna
import pytest

from histosweep import storage

optuna.logging.set_verbosity(optuna.logging.WARNING)


@pytest.fixture(params=["sqlite", "postgres"])
def storage_url(request, tmp_path):
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'door.db'}"
    return request.getfixturevalue("pg_url")


@pytest.fixture()
def study(storage_url):
    st = storage.open_storage(storage_url, heartbeat=60, grace_period=7)
    return optuna.create_study(study_name="door", storage=st, direction="maximize")


def test_study_storage_is_the_private_storage_attribute(study):
    assert isinstance(study._storage, optuna.storages.BaseStorage)
    assert storage.study_storage(study) is study._storage


def test_study_id_is_the_private_study_id(study):
    expected = study._storage.get_study_id_from_name("door")
    assert study._study_id == expected
    assert storage.study_id(study) == expected
    frozen = study._storage.get_all_studies()[0]
    assert storage.study_id(frozen) == expected  # FrozenStudy keeps it under the same name


def test_trial_id_is_the_private_trial_id_of_trial_and_frozen_trial(study):
    trial = study.ask()
    tid = study._storage.get_trial_id_from_study_id_trial_number(study._study_id, trial.number)
    assert trial._trial_id == tid and storage.trial_id(trial) == tid
    assert storage.trial_id(study.get_trials()[0]) == tid
    assert storage.frozen_trial(trial).number == trial.number


def test_cached_storage_wraps_the_rdb_storage_as_backend(study):
    rdb = study._storage._backend
    assert isinstance(rdb, optuna.storages.RDBStorage)
    assert storage.sql_engine(study._storage) is rdb.engine
    assert storage.grace_period_s(study._storage) == 7.0  # RDBStorage.grace_period, under the cache


def test_heartbeat_private_import(storage_url):
    from optuna.storages._heartbeat import is_heartbeat_enabled

    beating = storage.open_storage(storage_url, heartbeat=60)
    silent = storage.open_storage(storage_url)
    assert is_heartbeat_enabled(beating) and not is_heartbeat_enabled(silent)
    assert storage.heartbeat_enabled(beating) is True
    assert storage.heartbeat_enabled(silent) is False


def test_artifact_attr_prefix_private_import(study, tmp_path):
    from optuna.artifacts import FileSystemArtifactStore, get_all_artifact_meta
    from optuna.artifacts._upload import ARTIFACTS_ATTR_PREFIX

    assert ARTIFACTS_ATTR_PREFIX == "artifacts:"
    store = FileSystemArtifactStore(str(tmp_path))
    trial = study.ask()
    store.write("a1", io.BytesIO(b"x"))
    meta = {"artifact_id": "a1", "filename": "f.txt", "mimetype": "text/plain", "encoding": None}
    storage.link_artifact(study._storage, storage.trial_id(trial), meta)
    listed = get_all_artifact_meta(trial, storage=study._storage)  # optuna's own reader sees it
    assert [m.artifact_id for m in listed] == ["a1"]
    assert storage.linked_artifact_ids(study.get_trials()[0]) == ["a1"]
    assert json.loads(study.get_trials()[0].system_attrs["artifacts:a1"])["filename"] == "f.txt"


def test_file_store_base_path(tmp_path):
    from optuna.artifacts import FileSystemArtifactStore

    store = FileSystemArtifactStore(str(tmp_path))
    assert str(store._base_path) == str(tmp_path)
    assert storage.folder_store_path(store) == str(tmp_path)
    assert storage.folder_store_path(object()) is None


def test_qmc_find_sample_id_hook_indexes_by_trial_number(study):
    from optuna.samplers import QMCSampler

    assert callable(getattr(QMCSampler, "_find_sample_id", None))
    dist = {"x": optuna.distributions.FloatDistribution(0.0, 1.0),
            "y": optuna.distributions.FloatDistribution(0.0, 1.0)}

    from scipy.stats import qmc

    s = optuna.create_study()
    # two workers' samplers on one study: each trial's point is Sobol point number trial.number
    workers = [storage.trial_number_qmc_sampler(
        seed=3, independent_sampler=optuna.samplers.RandomSampler(seed=k)) for k in range(2)]
    got = {}
    for n in range(5):
        s.sampler = workers[n % 2]
        t = s.ask(dist)
        got[t.number] = (t.params["x"], t.params["y"])
        s.tell(t, 0.0)
    for n in range(1, 5):  # trial 0 infers the space with the independent sampler
        engine = qmc.Sobol(2, scramble=True, seed=3)
        engine.fast_forward(n)
        assert got[n] == pytest.approx(tuple(engine.random(1)[0]))
    assert len(set(got.values())) == 5


def test_raw_sql_tables_and_columns(study):
    import sqlalchemy as sa

    trial = study.ask()
    study._storage.record_heartbeat(trial._trial_id)
    engine = storage.sql_engine(study._storage)
    columns = {name: {c["name"] for c in sa.inspect(engine).get_columns(name)}
               for name in ("trials", "trial_heartbeats", "trial_user_attributes",
                            "study_system_attributes")}
    assert {"trial_id", "number", "study_id", "state", "datetime_start"} <= columns["trials"]
    assert {"trial_id", "heartbeat"} <= columns["trial_heartbeats"]
    assert {"trial_id", "key", "value_json"} <= columns["trial_user_attributes"]
    assert {"study_id", "key", "value_json"} <= columns["study_system_attributes"]
    assert storage.trial_counts(study)["RUNNING"] == 1
    assert trial.number in storage.heartbeat_ages(study._storage, study._study_id)
    silent = study.ask()  # no heartbeat row: aged from its start
    lives = storage.running_liveness(study._storage, study._study_id)
    assert [(live.trial_id, live.number, live.beaten) for live in lives] == [
        (trial._trial_id, trial.number, True), (silent._trial_id, silent.number, False)]
    assert all(0 <= live.age_s < 60 for live in lives)
    study.tell(trial, 0.5)
    storage.set_finished_user_attr(study._storage, trial._trial_id, "k", [1])
    assert storage.trials_with_user_attr(study._storage, study._study_id, "k") == {trial._trial_id}
    assert storage.user_attr_values(study._storage, study._study_id, "k") == {trial._trial_id: [1]}
    study._storage.set_study_system_attr(study._study_id, "lease", {"trials": [0]})
    storage.delete_study_system_attr(study._storage, study._study_id, "lease")
    assert "lease" not in study._storage.get_study_system_attrs(study._study_id)
    with storage.study_gate(study._storage, "door"):
        assert storage.trial_counts(study)["COMPLETE"] == 1
