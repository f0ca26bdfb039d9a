"""What a worker command asks for: study, storage, GPUs and slots, limits, logging (`histosweep
worker` options). Read by the supervisor and by each slot's trial loop."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class WorkerOptions:
    study: str
    storage: str | None
    artifacts: str | None
    gpus: str = "cpu"
    trials_per_gpu: int | str = 1  # or "auto": from free memory and the space's largest config
    n_trials: int | None = None
    timeout: float | None = None
    heartbeat: int = 60
    data: str | None = None
    log_dir: str = "histosweep-logs"
    progress: bool = True
    log_format: str = "text"  # text | json (JSON lines for log shippers)
