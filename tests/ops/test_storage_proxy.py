"""`histosweep storage-proxy`: one clear line without grpcio; a real proxy round trip with it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.ops._helpers import clean_env, free_port, start, stop

STUDY = "ops-proxy"


def test_storage_proxy_without_grpc_is_one_clear_line(tmp_path: Path) -> None:
    # NOTE: None in sys.modules makes `import grpc` fail, whether or not grpcio is installed.
    code = (
        "import sys; sys.modules['grpc'] = None; from histosweep.cli import main; "
        "sys.exit(main(sys.argv[1:]))"
    )
    result = subprocess.run(
        [
            sys.executable,
            "-c",
            code,
            "storage-proxy",
            "--storage",
            f"sqlite:///{tmp_path / 's.db'}",
        ],
        capture_output=True,
        text=True,
        timeout=120,
        env=clean_env(),
    )
    assert result.returncode == 1
    assert result.stderr.strip() == (
        "error: the gRPC storage proxy needs grpcio and protobuf: pip install grpcio protobuf"
    )


@pytest.mark.filterwarnings("ignore::optuna.exceptions.ExperimentalWarning")
def test_storage_proxy_round_trip(tmp_path: Path) -> None:
    pytest.importorskip(
        "grpc", reason="grpcio not installed (optional: pip install grpcio protobuf)"
    )
    import optuna
    from optuna.storages import GrpcStorageProxy

    from histosweep.storage import open_storage

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    url = f"sqlite:///{tmp_path / 'proxied.db'}"
    port = free_port()
    proc, stderr_path = start(["storage-proxy", "--storage", url, "--port", str(port)], tmp_path)
    try:
        proxy = GrpcStorageProxy(host="127.0.0.1", port=port)
        proxy.wait_server_ready(timeout=60)  # bounded: raises ConnectionError at the deadline
        study = optuna.create_study(study_name=STUDY, storage=proxy, direction="maximize")
        study.optimize(lambda t: t.suggest_float("x", 0.0, 1.0), n_trials=3)
        proxy.close()
        assert proc.poll() is None, stderr_path.read_text()
    finally:
        stop(proc)
    # What went through the proxy is in the database itself.
    direct = optuna.load_study(study_name=STUDY, storage=open_storage(url))
    assert len(direct.get_trials(states=[optuna.trial.TrialState.COMPLETE])) == 3
    assert f"on 127.0.0.1:{port}" in stderr_path.read_text()
