"""Heartbeats judged by their owner: a trial is stale after twice its own worker's --heartbeat,
never the reaper's; a trial run through the gRPC proxy (no heartbeat) is never reaped; a trial
another worker took over is one info line for its old owner, never a failure. SQLite and
PostgreSQL, real storages; staleness made by moving times into the past, never by sleeping."""

from __future__ import annotations

import logging
import re
import threading

import optuna
import pytest
import sqlalchemy as sa
from optuna.trial import TrialState

from histosweep.fleet import HEARTBEAT_ATTR, PROXY_ATTR, TrialLoop, WorkerOptions
from histosweep.storage import open_storage, sql_engine, study_storage, trial_id

optuna.logging.set_verbosity(optuna.logging.WARNING)
pytestmark = pytest.mark.filterwarnings("ignore:Heartbeat of storage is supposed")


@pytest.fixture(params=["sqlite", "postgres"])
def url(request):
    return request.getfixturevalue("sqlite_url" if request.param == "sqlite" else "pg_url")


def _age(study, trial_ids: list[int], column: str, seconds: int) -> None:
    """Move the heartbeat rows (or the start) of these trials `seconds` into the past."""
    table, key = ("trial_heartbeats", "heartbeat") if column == "heartbeat" else ("trials", "datetime_start")
    engine = sql_engine(study_storage(study))
    ids = ", ".join(str(i) for i in trial_ids)
    shift = (f"{key} - INTERVAL '{seconds} seconds'" if engine.dialect.name == "postgresql"
             else f"datetime({key}, '-{seconds} seconds')")
    with engine.begin() as conn:
        conn.execute(sa.text(f"UPDATE {table} SET {key} = {shift} WHERE trial_id IN ({ids})"))


def test_each_trial_is_judged_by_its_owners_interval(url, caplog):
    from histosweep.fleet._db import fail_stale, mark_owner

    reaper = optuna.create_study(study_name="hb", storage=open_storage(url, heartbeat=2))
    storage = study_storage(reaper)
    trials = {name: reaper.ask() for name in ("long", "short", "proxy", "unmarked", "mine")}
    attrs = {"long": {HEARTBEAT_ATTR: 60, PROXY_ATTR: False},  # grace 120 s
             "short": {HEARTBEAT_ATTR: 5, PROXY_ATTR: False},  # grace 10 s
             "proxy": {PROXY_ATTR: True, HEARTBEAT_ATTR: None}}  # no heartbeat: never reaped
    for name, values in attrs.items():
        for key, value in values.items():
            storage.set_trial_system_attr(trial_id(trials[name]), key, value)
    mark_owner(reaper, trials["mine"])  # what a worker records at the ask: its own interval
    assert storage.get_trial(trial_id(trials["mine"])).system_attrs[HEARTBEAT_ATTR] == 2
    beating = [trial_id(trials[n]) for n in ("long", "short", "unmarked", "mine")]
    for tid in beating:
        storage.record_heartbeat(tid)
    _age(reaper, beating, "heartbeat", 30)  # 30 s silent: past 4 s (the reaper's) and 10 s
    _age(reaper, [trial_id(trials["proxy"])], "datetime_start", 3600)  # an hour-long proxy trial

    with caplog.at_level(logging.INFO, logger="histosweep"):
        fail_stale(reaper)
    state = {t.number: t.state for t in reaper.get_trials(deepcopy=False)}
    assert {n: state[t.number] for n, t in trials.items()} == {
        "long": TrialState.RUNNING, "short": TrialState.FAIL, "proxy": TrialState.RUNNING,
        "unmarked": TrialState.FAIL, "mine": TrialState.FAIL}
    retried = sorted(t.system_attrs["failed_trial"] for t in reaper.get_trials(deepcopy=False)
                     if t.state == TrialState.WAITING)
    assert retried == sorted(trials[n].number for n in ("short", "unmarked", "mine"))
    assert re.search(rf"trial {trials['short'].number} sent no heartbeat for 3\d s "
                     r"\(its worker beats every 5 s\): failed and re-queued", caplog.text)


class _TakenOverFiveTimes:
    """An objective whose trial another worker fails and re-queues (as its reaper does) five
    times in a row, each time before the objective reports; the sixth run completes."""

    def __init__(self, url: str) -> None:
        self.reaper = optuna.load_study(study_name="to", storage=open_storage(url, heartbeat=60))
        self.calls = 0

    def __call__(self, trial) -> float:
        from histosweep.storage import retry_callback

        self.calls += 1
        if self.calls <= 5:
            reaper_storage = study_storage(self.reaper)
            reaper_storage.set_trial_state_values(trial_id(trial), state=TrialState.FAIL)
            retry_callback(max_retry=None)(self.reaper, reaper_storage.get_trial(trial_id(trial)))
            trial.report(0.1, 0)  # raises UpdateFinishedTrialError: the trial is not ours now
        return 0.5


def test_a_trial_taken_over_is_one_info_line_not_a_failure(sqlite_url, caplog):
    optuna.create_study(study_name="to", storage=open_storage(sqlite_url), direction="maximize")
    study = optuna.load_study(study_name="to", storage=open_storage(sqlite_url, heartbeat=60))
    objective = _TakenOverFiveTimes(sqlite_url)
    opts = WorkerOptions(study="to", storage=sqlite_url, artifacts=None, n_trials=1, progress=False)
    with caplog.at_level(logging.INFO, logger="histosweep"):
        assert TrialLoop(study, objective, opts, "t").run() == 0  # 5 in a row did not give up
    lines = [r.getMessage() for r in caplog.records]
    taken = [m for m in lines if "was taken over by another worker" in m]
    assert taken == [f"trial {n} was taken over by another worker (its heartbeat looked stale); "
                     "moving on" for n in range(5)]
    assert all(r.levelno == logging.INFO for r in caplog.records if "taken over" in r.getMessage())
    assert not [m for m in lines if "failed" in m or "UpdateFinishedTrialError" in m], lines
    states = [t.state for t in study.get_trials(deepcopy=False)]
    assert states == [TrialState.FAIL] * 5 + [TrialState.COMPLETE]
    assert "fail_reason" not in study.trials[0].user_attrs  # its old owner told nothing


def test_heartbeat_thread_notices_a_take_over(url):
    from histosweep.fleet._db import heartbeat

    study = optuna.create_study(study_name="beat", storage=open_storage(url, heartbeat=1))
    trial = study.ask()
    storage = study_storage(study)
    taken_over = threading.Event()
    with heartbeat(trial_id(trial), storage, taken_over=taken_over):
        assert not taken_over.wait(1.5)  # beating a live trial: nothing to notice
        other = study_storage(optuna.load_study(study_name="beat", storage=open_storage(url)))
        other.set_trial_state_values(trial_id(trial), state=TrialState.FAIL)
        assert taken_over.wait(30), "the heartbeat thread did not notice the trial was failed"
