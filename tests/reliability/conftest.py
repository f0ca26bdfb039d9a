"""One finished tiny study on PostgreSQL, made by the real CLI with a password URL, shared by the
reliability tests (bad inputs, planted pickles, corrupt artifacts, password hygiene)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.reliability._helpers import ok, pg_role_database, run_cli
from tests.search._helpers import tiny_space

STUDY = "rel"


@dataclass
class Trained:
    url: str  # carries PASSWORD
    data: Path
    space: Path
    artifacts: Path
    bundle: Path
    logs: Path
    outputs: dict[str, str] = field(default_factory=dict)  # command -> stdout + stderr

    def record(self, name: str, proc) -> None:
        self.outputs[name] = proc.stdout + proc.stderr


@pytest.fixture(scope="package")
def trained(pg_server, synth_root, tmp_path_factory) -> Trained:
    """prepare, create, worker (1 trial), export-best and status, all with the password URL."""
    root = tmp_path_factory.mktemp("trained")
    with pg_role_database() as url:
        t = Trained(url=url, data=synth_root, space=tiny_space(root, epochs=1),
                    artifacts=root / "artifacts", bundle=root / "bundle", logs=root / "logs")
        steps = {
            "prepare ok": ["prepare", str(synth_root), "--resolutions", "32"],
            "create ok": ["create", STUDY, "--data", str(synth_root), "--space", str(t.space),
                          "--folds", "2", "--pruner", "none", "--storage", url],
            "worker ok": ["worker", STUDY, "--n-trials", "1", "--no-progress", "--heartbeat", "5",
                          "--artifacts", str(t.artifacts), "--log-dir", str(t.logs)],
            "export-best ok": ["export-best", STUDY, "--out", str(t.bundle), "--storage", url,
                               "--artifacts", str(t.artifacts)],
            "status ok": ["status", STUDY, "--storage", url],
        }
        for name, args in steps.items():
            # the worker gets the URL from the environment, the others from --storage
            t.record(name, ok(run_cli(*args, env={"HISTOSWEEP_STORAGE": url})))
        yield t
