"""Per-trial database latency of the worker's real trial loop (fleet._trial_loop.TrialLoop) under
many worker processes: ask (stale check + gate + ask), each report + should_prune, tell.

Run: `python bench/storage.py --storage postgresql+psycopg2://postgres@127.0.0.1/DB --workers 8
--trials 1000` (SQLite when --storage is left out: a temp file). The last line is JSON.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import multiprocessing as mp
import os
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

FOLDS, EPOCHS = 2, 5  # 10 intermediate values per trial, at step fold * EPOCHS + epoch
TRIAL_S = 60.0  # the storage share is reported against a trial of this length
SAMPLERS = ("worker", "tpe", "tpe-liar", "tpe-multivariate", "tpe-liar-multivariate", "random")


def _args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--storage", default=None, help="storage URL (default: SQLite in a temp dir)")
    parser.add_argument("--workers", type=int, default=8, help="worker processes")
    parser.add_argument("--trials", type=int, default=1000, help="finished trials (--n-trials)")
    parser.add_argument("--sampler", choices=SAMPLERS, default="worker",
                        help="worker (default): search._study.make_sampler(), as run_slot; tpe: "
                             "plain TPESampler(), what load_study gives without it")
    parser.add_argument("--report-sleep", type=float, default=0.0,
                        help="seconds of 'training' before each report (default 0: worst case)")
    parser.add_argument("--pruner", default="percentile", choices=("percentile", "median"),
                        help="make_pruner's pruner (default percentile, as `histosweep create`)")
    parser.add_argument("--pruner-cache", type=float, default=None,
                        help="max age in s of the pruner's trial snapshot (default: make_pruner's, "
                             "search._pruner.SNAPSHOT_MAX_AGE_S; 0: re-read at every report)")
    parser.add_argument("--profile", default=None, help="cProfile worker 0 into this .prof file")
    parser.add_argument("--keep", action="store_true", help="keep the study (default: delete it)")
    parser.add_argument("--json", action="store_true", help="print only the JSON line")
    return parser.parse_args(argv)


# --- the worker side ---------------------------------------------------------------------------
def make_sampler(name: str, seed: int | None):
    import optuna

    if name == "worker":
        from histosweep.search._study import make_sampler as make

        return make(seed=seed)
    if name == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    liar, multi = "liar" in name, "multivariate" in name
    kwargs = {"constant_liar": liar, "multivariate": multi, "group": multi, "seed": seed}
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return optuna.samplers.TPESampler(**kwargs)


def _snapshot_s(pruner_cache: float | None) -> float:
    from histosweep.search._pruner import SNAPSHOT_MAX_AGE_S

    return SNAPSHOT_MAX_AGE_S if pruner_cache is None else pruner_cache


def synthetic_curve(params: dict, noise: float, epoch: int) -> float:
    """A learning curve whose plateau depends on lr and dropout, so TPE and the pruner act."""
    lr = params.get("lr", 1e-4)
    plateau = 0.25 + 0.35 * math.exp(-((math.log10(lr) + 4.0) ** 2)) - 0.1 * abs(params.get("dropout", 0.3) - 0.3)
    return plateau * (1.0 - 0.5 ** (epoch + 1)) + noise


class SqlCounter:
    """SQL statements and commits issued by this process's main thread (machine-independent)."""

    def __init__(self, storage) -> None:
        import threading

        from sqlalchemy import event

        self.statements = 0
        self.commits = 0
        self._main = threading.main_thread()
        from histosweep.storage import sql_engine

        engine = sql_engine(storage)
        if engine is not None:
            event.listen(engine, "before_cursor_execute", self._on_statement)
            event.listen(engine, "commit", self._on_commit)

    def _on_statement(self, *_args) -> None:
        import threading

        if threading.current_thread() is self._main:
            self.statements += 1

    def _on_commit(self, *_args) -> None:
        import threading

        if threading.current_thread() is self._main:
            self.commits += 1

    def snapshot(self) -> tuple[int, int]:
        return self.statements, self.commits


def _sql_delta(counter: SqlCounter, before: tuple[int, int]) -> list[int]:
    return [counter.statements - before[0], counter.commits - before[1]]


class Recorder:
    """Per-trial record of each database-facing step: wall ms, SQL statements, commits."""

    def __init__(self, counter: SqlCounter) -> None:
        self.counter = counter
        self.record: dict = {}

    def start(self, number: int, ask: list) -> None:
        self.record = {"number": number, "ask": ask, "suggest": [0.0, 0, 0], "attrs": [0.0, 0, 0],
                       "reports": [], "start": time.perf_counter()}

    @contextlib.contextmanager
    def measure(self, kind: str):
        t, before = time.perf_counter(), self.counter.snapshot()
        yield
        wall, (q, c) = _ms(t), _sql_delta(self.counter, before)
        if kind == "reports":
            self.record["reports"].append([wall, q, c])
        elif kind in self.record:  # accumulate (attrs are set in several places)
            old = self.record[kind]
            self.record[kind] = [old[0] + wall, old[1] + q, old[2] + c]
        else:
            self.record[kind] = [wall, q, c]


class TimedObjective:
    """What the real Objective does to the database, without training: suggest the default
    space, set the same user attrs, report FOLDS x EPOCHS values with should_prune after each."""

    def __init__(self, space, recorder: Recorder, slot: str, report_sleep: float, seed: int) -> None:
        import numpy as np

        self.space = space
        self.rec = recorder
        self.slot = slot
        self.report_sleep = report_sleep
        self.rng = np.random.default_rng(seed)

    def __call__(self, trial) -> float:
        import socket

        import optuna

        with self.rec.measure("suggest"):
            cfg = self.space.suggest(trial, seed=0)
        self._attrs(trial, config=cfg.to_dict(), host=socket.gethostname(), device="cpu",
                    slot=self.slot, epochs_planned=FOLDS * EPOCHS)
        params, noise = trial.params, float(self.rng.normal(0, 0.02))
        curve: list[float] = []
        for f in range(FOLDS):
            for e in range(EPOCHS):
                if self.report_sleep:
                    time.sleep(self.report_sleep)
                value = synthetic_curve(params, noise, e)
                curve.append(value)
                with self.rec.measure("reports"):
                    trial.report(value, f * EPOCHS + e)
                    prune = trial.should_prune()
                if prune:
                    self._attrs(trial, epochs_run=len(curve), pruned_reason="bench",
                                epochs_saved=FOLDS * EPOCHS - len(curve))
                    raise optuna.TrialPruned("bench")
            self._attrs(trial, epochs_run=len(curve), **{f"fold_{f}": {"val_f1": value, "curve": curve[-EPOCHS:]}})
        pair = [curve[EPOCHS - 1], curve[-1]]
        self._attrs(trial, fold_val_f1=pair, fold_seconds=[1.0, 1.0], oof_f1=curve[-1])
        return curve[-1]

    def _attrs(self, trial, **attrs) -> None:
        with self.rec.measure("attrs"):
            for key, value in attrs.items():
                trial.set_user_attr(key, value)


def _ms(t0: float) -> float:
    return (time.perf_counter() - t0) * 1000.0


def _timed_loop_class():
    from histosweep.fleet import TrialLoop

    class TimedLoop(TrialLoop):
        """The worker's TrialLoop, timing its ask and tell (the same methods, same order)."""

        def __init__(self, *args, recorder: Recorder, **kwargs) -> None:
            super().__init__(*args, **kwargs)
            self.rec = recorder
            self.records: list[dict] = []

        def _ask(self):
            t, before = time.perf_counter(), self.rec.counter.snapshot()
            trial = super()._ask()
            if trial is not None and trial is not False:
                self.rec.start(trial.number, [_ms(t), *_sql_delta(self.rec.counter, before)])
            return trial

        def _tell(self, trial, state, value, reason) -> None:
            with self.rec.measure("tell"):
                super()._tell(trial, state, value, reason)
            rec = self.rec.record
            rec["trial"] = _ms(rec.pop("start"))
            rec["state"] = state.name
            self.records.append(rec)

    return TimedLoop


def worker_main(url: str, study_name: str, n_trials: int, index: int, sampler: str,
                report_sleep: float, pruner: tuple[str, float | None], out: str, profile: str | None) -> None:
    """One worker process: the real open_study + TrialLoop with a timed trivial objective."""
    import logging

    import optuna

    from histosweep.fleet import WorkerOptions
    from histosweep.search._space import load_space
    from histosweep.search._study import make_pruner, open_study

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    logging.getLogger("histosweep").setLevel(logging.WARNING)
    study = open_study(study_name, url, heartbeat=60)
    # NOTE: as run_slot: make_pruner's pruner (its snapshot age changed with --pruner-cache), and
    # the sampler under test (default: the worker's make_sampler).
    pruner_name, pruner_cache = pruner
    study.pruner = make_pruner(SimpleNamespace(pruner=pruner_name, folds=FOLDS), EPOCHS,
                               snapshot_s=pruner_cache)
    study.sampler = make_sampler(sampler, seed=None)
    opts = WorkerOptions(study=study_name, storage=url, artifacts=None, n_trials=n_trials,
                         heartbeat=60, progress=False)
    from histosweep.storage import study_storage

    recorder = Recorder(SqlCounter(study_storage(study)))
    objective = TimedObjective(load_space(), recorder, f"w{index}", report_sleep, seed=index)
    loop = _timed_loop_class()(study, objective, opts, f"w{index}", recorder=recorder)
    if profile:
        import cProfile

        cProfile.runctx("loop.run()", globals(), {"loop": loop}, profile)
    else:
        loop.run()
    Path(out).write_text(json.dumps(loop.records))


# --- the driver side ---------------------------------------------------------------------------
def create_bench_study(url: str) -> str:
    import optuna

    from histosweep.storage import open_storage

    name = f"bench-storage-{os.getpid()}-{int(time.time())}"
    optuna.create_study(study_name=name, storage=open_storage(url), direction="maximize")
    return name


def delete_study(url: str, name: str) -> None:
    import optuna

    from histosweep.storage import open_storage

    optuna.delete_study(study_name=name, storage=open_storage(url))


def run_workers(args, url: str, name: str, tmp: Path) -> tuple[list[dict], float]:
    ctx = mp.get_context("spawn")
    procs, outs = [], []
    for i in range(args.workers):
        out = tmp / f"worker{i}.json"
        profile = args.profile if (args.profile and i == 0) else None
        p = ctx.Process(target=worker_main, args=(url, name, args.trials, i, args.sampler, args.report_sleep,
                                                  (args.pruner, args.pruner_cache), str(out), profile))
        procs.append(p)
        outs.append(out)
    started = time.perf_counter()
    for p in procs:
        p.start()
    for p in procs:
        p.join()
    wall = time.perf_counter() - started
    bad = [i for i, p in enumerate(procs) if p.exitcode != 0]
    if bad:
        raise SystemExit(f"workers {bad} exited non-zero; see their output above")
    records = [r for out in outs for r in json.loads(out.read_text())]
    return records, wall


def _pct(values: list[float], q: float) -> float | None:
    import numpy as np

    return round(float(np.percentile(values, q)), 2) if values else None


def _mean(values: list[float]) -> float | None:
    return round(sum(values) / len(values), 2) if values else None


def _band(records: list[dict], n: int) -> dict[str, list[dict]]:
    bands = {"first_100": (0, 100), "around_500": (n // 2 - 50, n // 2 + 50), "last_100": (n - 100, n)}
    return {k: [r for r in records if lo <= r["number"] < hi] for k, (lo, hi) in bands.items()}


def _trial_total(r: dict, keys=("ask", "tell"), col: int = 0) -> float:
    return sum(r[k][col] for k in keys) + sum(x[col] for x in r["reports"])


def summarise_band(recs: list[dict]) -> dict:
    """p50/p95 ms of each step and of ask+reports+tell; statements per step; 60 s share."""
    out: dict = {"trials": len(recs)}
    steps = {"ask": [r["ask"] for r in recs], "report": [x for r in recs for x in r["reports"]],
             "tell": [r["tell"] for r in recs], "suggest": [r["suggest"] for r in recs],
             "attrs": [r["attrs"] for r in recs]}
    for name, rows in steps.items():
        out[f"{name}_p50"], out[f"{name}_p95"] = _pct([x[0] for x in rows], 50), _pct([x[0] for x in rows], 95)
        out[f"{name}_sql"] = _mean([x[1] for x in rows])  # SQL statements per call
        out[f"{name}_commits"] = _mean([x[2] for x in rows])
    total = [_trial_total(r) for r in recs]
    full = [_trial_total(r) for r in recs if r["state"] == "COMPLETE"]  # all 10 reports
    out.update(
        ask_reports_tell_p50=_pct(total, 50), ask_reports_tell_p95=_pct(total, 95),
        complete_ask_reports_tell_p50=_pct(full, 50), complete_ask_reports_tell_p95=_pct(full, 95),
        reports_per_trial=round(sum(len(r["reports"]) for r in recs) / max(1, len(recs)), 2),
        pruned_share=round(sum(r["state"] == "PRUNED" for r in recs) / max(1, len(recs)), 3),
    )
    # every database-facing step of a trial (incl. the 13 param writes of suggest, which also
    # holds TPE's own sampling time), as a share of a 60 s trial
    db = [_trial_total(r, ("ask", "tell", "attrs", "suggest")) for r in recs]
    out["storage_share_60s_p50"], out["storage_share_60s_p95"] = _share(_pct(db, 50)), _share(_pct(db, 95))
    return out


def summarise(records: list[dict], n: int) -> dict:
    return {band: summarise_band(recs) for band, recs in _band(records, n).items()}


def _share(ms: float | None) -> float | None:
    return None if ms is None else round(ms / 1000.0 / TRIAL_S, 5)


def _cell(band: dict, name: str) -> str:
    lo, hi = band[f"{name}_p50"], band[f"{name}_p95"]
    return "-" if lo is None else f"{lo:.0f}/{hi:.0f}"


def _print_table(result: dict) -> None:
    print(f"storage {result['storage']}  workers {result['workers']}  trials {result['trials']}  "
          f"sampler {result['sampler']}  report sleep {result['report_sleep_s']} s  "
          f"pruner cache {result['pruner_cache_s']} s  wall {result['wall_s']} s  ({result['trials_per_s']} trials/s)  "
          f"load {result['load_before']} -> {result['load_after']}")
    cols = ("ask", "report", "tell", "ask_reports_tell", "complete_ask_reports_tell", "suggest")
    print(f"{'ms p50/p95':<12}" + "".join(f"{c:>18}" for c in cols) + f"{'DB/60s p95':>12}")
    for band, b in result["bands"].items():
        cells = "".join(f"{_cell(b, c):>18}" for c in cols)
        print(f"{band:<12}{cells}{b['storage_share_60s_p95'] * 100:>11.2f}%")
    b = result["bands"]["last_100"]
    print("SQL statements (commits) per call, last 100: " + ", ".join(
        f"{k} {b[k + '_sql']} ({b[k + '_commits']})" for k in ("ask", "report", "tell", "suggest", "attrs")))


def main(argv: list[str] | None = None) -> dict:
    args = _args(argv)
    from histosweep.storage import redact, resolve_storage_url

    if args.trials < 300:
        raise SystemExit("--trials must be >= 300 for three distinct bands")
    load_before = round(os.getloadavg()[0], 2)  # other work on the machine skews latencies
    with tempfile.TemporaryDirectory(prefix="histosweep-bench-storage-") as tmp:
        url = resolve_storage_url(args.storage or f"sqlite:///{Path(tmp) / 'bench.db'}")
        name = create_bench_study(url)
        try:
            records, wall = run_workers(args, url, name, Path(tmp))
        finally:
            if not args.keep:
                delete_study(url, name)
    result = {
        "storage": redact(url).split("://", 1)[0], "workers": args.workers, "trials": args.trials,
        "finished": len(records), "sampler": args.sampler, "report_sleep_s": args.report_sleep,
        "pruner": args.pruner, "pruner_cache_s": _snapshot_s(args.pruner_cache),
        "wall_s": round(wall, 1), "trials_per_s": round(len(records) / wall, 2),
        "cpus": os.cpu_count(), "load_before": load_before, "load_after": round(os.getloadavg()[0], 2),
        "bands": summarise(records, args.trials),
    }
    if not args.json:
        _print_table(result)
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
