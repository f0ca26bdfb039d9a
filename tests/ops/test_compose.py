"""docker-compose.yml and .env.example, read by real parsers (no Docker engine runs here).

The compose-spec JSON schema shipped with check-jsonschema validates the file; a real compose
implementation (`docker compose` or Debian's `docker-compose`) interpolates it from an env file
made from .env.example. Structure checks: services, healthcheck, GPUs, ports, secrets.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.ops._helpers import require_tool

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "docker-compose.yml"
ENV_EXAMPLE = ROOT / ".env.example"
SERVICES = {"postgres", "minio", "minio-init", "create-study", "dashboard", "worker"}
SECRET_KEY = re.compile(r"PASSWORD|SECRET|TOKEN|ACCESS_KEY")
ONLY_VAR = re.compile(r"^\$\{[A-Z_][A-Z0-9_]*(:?[-?][^}]*)?\}$")
URL_PASSWORD = re.compile(r"://[^:/@\s]*:([^@\s]+)@")


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load(COMPOSE.read_text())  # PyYAML resolves the `<<:` merge keys


def _env(service: dict) -> dict[str, str]:
    env = service.get("environment", {})
    if isinstance(env, list):
        env = dict(item.split("=", 1) for item in env)
    return {k: str(v) for k, v in env.items()}


def _port_hosts(ports: list) -> list[tuple[str, str]]:
    """(host_ip, published) per port, for short ("IP:HOST:CONTAINER") and long syntax."""
    out = []
    for port in ports:
        if isinstance(port, dict):
            out.append((str(port.get("host_ip", "")), str(port.get("published", ""))))
        else:
            port = re.sub(r"\$\{[A-Z0-9_]+:-([^}]*)\}", r"\1", str(port))  # ${VAR:-8080} -> 8080
            parts = port.split("/")[0].split(":")
            out.append((parts[0] if len(parts) == 3 else "", parts[-2] if len(parts) > 1 else ""))
    return out


def test_compose_file_matches_the_compose_spec_schema() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "check_jsonschema", "--builtin-schema", "vendor.compose-spec"]
        + [str(COMPOSE)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_compose_has_every_service(compose: dict) -> None:
    assert SERVICES <= set(compose["services"])


def test_postgres_has_volume_healthcheck_and_password_from_env(compose: dict) -> None:
    pg = compose["services"]["postgres"]
    assert pg["image"].startswith("postgres:")
    volume = next(v for v in pg["volumes"] if v.endswith(":/var/lib/postgresql/data"))
    assert volume.split(":")[0] in compose["volumes"], "data must live in a named volume"
    assert "pg_isready" in " ".join(pg["healthcheck"]["test"])
    assert _env(pg)["POSTGRES_PASSWORD"].startswith("${POSTGRES_PASSWORD:?")


def test_minio_bucket_is_created_at_start(compose: dict) -> None:
    init = compose["services"]["minio-init"]
    script = " ".join(init["command"]) if isinstance(init["command"], list) else init["command"]
    assert "mc mb --ignore-existing" in script
    assert "minio" in init["depends_on"]


def test_worker_reserves_nvidia_gpus_and_waits_for_db_and_study(compose: dict) -> None:
    worker = compose["services"]["worker"]
    assert "build" in worker
    devices = worker["deploy"]["resources"]["reservations"]["devices"]
    assert any(d["driver"] == "nvidia" and "gpu" in d["capabilities"] for d in devices)
    assert worker["depends_on"]["postgres"]["condition"] == "service_healthy"
    assert worker["depends_on"]["create-study"]["condition"] == "service_completed_successfully"
    assert any(v.endswith(":/data:ro") for v in worker["volumes"]), "data mounted read-only"
    cache = next(v for v in worker["volumes"] if v.endswith(":/cache"))
    assert cache.split(":")[0] in compose["volumes"]
    env = _env(worker)
    assert env["HISTOSWEEP_CACHE"] == "/cache"
    assert env["HISTOSWEEP_STORAGE"].startswith("postgresql+psycopg2://")
    assert "@postgres:5432/" in env["HISTOSWEEP_STORAGE"]
    assert env["HISTOSWEEP_ARTIFACTS"].startswith("s3://")
    assert env["AWS_ENDPOINT_URL"] == "http://minio:9000"
    assert worker["command"].startswith("worker ")


def test_create_study_is_a_skip_if_exists_one_shot(compose: dict) -> None:
    create = compose["services"]["create-study"]
    assert create["command"].startswith("create ")
    assert "--data /data" in create["command"] and "--skip-if-exists" in create["command"]
    assert "restart" not in create, "a one-shot must not restart"


def test_dashboard_is_published_on_loopback_only(compose: dict) -> None:
    dash = compose["services"]["dashboard"]
    assert dash["command"].startswith("dashboard --host 0.0.0.0")
    hosts = _port_hosts(dash["ports"])
    assert hosts and all(ip == "127.0.0.1" for ip, _ in hosts), hosts
    assert _env(dash)["HISTOSWEEP_ARTIFACTS"].startswith("s3://")


def test_no_secret_is_hard_coded(compose: dict) -> None:
    for name, service in compose["services"].items():
        for key, value in _env(service).items():
            if SECRET_KEY.search(key):
                assert ONLY_VAR.match(value), (
                    f"{name}: {key} must come from ${{VAR}}, not {value!r}"
                )
            for password in URL_PASSWORD.findall(value):
                assert ONLY_VAR.match(password), f"{name}: {key} has a literal password"
    # Also anywhere in the text (commands, healthchecks): no KEY=literal for a secret.
    for match in re.finditer(r"([A-Z_]*(?:PASSWORD|SECRET)[A-Z_]*)=(\S+)", COMPOSE.read_text()):
        assert match.group(2).startswith("$"), match.group(0)


def _compose_vars() -> set[str]:
    lines = [line for line in COMPOSE.read_text().splitlines() if not line.lstrip().startswith("#")]
    return set(re.findall(r"\$\{([A-Z_][A-Z0-9_]*)", "\n".join(lines)))


def _env_example() -> dict[str, str]:
    pairs = re.findall(r"^([A-Z_][A-Z0-9_]*)=(.*)$", ENV_EXAMPLE.read_text(), flags=re.M)
    return dict(pairs)


def test_env_example_documents_every_variable_with_placeholders() -> None:
    example = _env_example()
    assert _compose_vars() <= set(example), _compose_vars() - set(example)
    lines = ENV_EXAMPLE.read_text().splitlines()
    for i, line in enumerate(lines):
        if re.match(r"^[A-Z_][A-Z0-9_]*=", line):
            j = i - 1
            while j >= 0 and re.match(r"^[A-Z_][A-Z0-9_]*=", lines[j]):
                j -= 1
            assert j >= 0 and lines[j].startswith("#"), f".env.example: {line} has no comment"
    for key, value in example.items():
        if SECRET_KEY.search(key):
            assert "change-me" in value, f".env.example: {key} must be an obvious placeholder"


def _compose_cli() -> list[str] | None:
    docker = shutil.which("docker")
    if docker:
        probe = subprocess.run([docker, "compose", "version"], capture_output=True, timeout=60)
        if probe.returncode == 0:
            return [docker, "compose"]
    legacy = shutil.which("docker-compose")
    return [legacy] if legacy else None


def _run_config(env_file: Path) -> subprocess.CompletedProcess:
    cli = require_tool(
        _compose_cli(),
        "no compose implementation (apt-get install -y docker-compose, or the compose plugin)",
    )
    # NOTE: an environment without the compose variables, so only the env file decides.
    env = {k: v for k, v in __import__("os").environ.items() if k not in _compose_vars()}
    return subprocess.run(
        cli + ["--env-file", str(env_file), "-f", str(COMPOSE), "config"],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
        cwd=ROOT,
    )


def _env_file(tmp_path: Path, drop: str | None = None) -> Path:
    example = _env_example()
    example["DATA_DIR"] = str(tmp_path / "dataset")
    example["POSTGRES_PASSWORD"] = "pw4711test"
    text = "".join(f"{k}={v}\n" for k, v in example.items() if k != drop)
    path = tmp_path / "test.env"
    path.write_text(text)
    return path


def test_real_compose_resolves_the_stack_from_env_example(tmp_path: Path) -> None:
    result = _run_config(_env_file(tmp_path))
    assert result.returncode == 0, result.stderr
    resolved = yaml.safe_load(result.stdout)
    services = resolved["services"]
    assert SERVICES <= set(services)
    devices = services["worker"]["deploy"]["resources"]["reservations"]["devices"]
    assert devices[0]["driver"] == "nvidia" and devices[0]["capabilities"] == ["gpu"]
    assert _port_hosts(services["dashboard"]["ports"]) == [("127.0.0.1", "8080")]
    env = _env(services["worker"])
    assert env["HISTOSWEEP_STORAGE"] == (
        "postgresql+psycopg2://histosweep:pw4711test@postgres:5432/histosweep"
    )
    assert env["HISTOSWEEP_ARTIFACTS"] == "s3://histosweep/artifacts"
    data = [v for v in services["worker"]["volumes"] if "/data" in str(v)]
    assert str(tmp_path / "dataset") in str(data)


def test_real_compose_refuses_to_start_without_a_password(tmp_path: Path) -> None:
    result = _run_config(_env_file(tmp_path, drop="POSTGRES_PASSWORD"))
    assert result.returncode != 0
    assert "set POSTGRES_PASSWORD in .env" in result.stderr


def _check_env(resolved: dict) -> subprocess.CompletedProcess:
    """Run the resolved check-env service's script with its resolved environment, as its
    container would (entrypoint /bin/sh -c)."""
    service = resolved["services"]["check-env"]
    assert service["entrypoint"] == ["/bin/sh", "-c"]
    script = service["command"][0] if isinstance(service["command"], list) else service["command"]
    # NOTE: `config` prints a re-usable file, so `$$` stays escaped; the container gets `$`.
    script = script.replace("$$", "$")
    return subprocess.run(["/bin/sh", "-c", script], env=_env(service), capture_output=True,
                          text=True, timeout=60)


def test_real_compose_refuses_a_copied_env_example(tmp_path: Path) -> None:
    """`cp .env.example .env` unchanged: the real parser resolves it, and check-env, which
    postgres and minio wait for (so every other service too), exits 1 naming the variable;
    with real values it exits 0."""
    copied = tmp_path / ".env"
    copied.write_text(ENV_EXAMPLE.read_text())
    result = _run_config(copied)
    assert result.returncode == 0, result.stderr
    resolved = yaml.safe_load(result.stdout)
    for name in ("postgres", "minio"):
        assert resolved["services"][name]["depends_on"]["check-env"] == {
            "condition": "service_completed_successfully"}
    refused = _check_env(resolved)
    assert refused.returncode == 1
    assert refused.stderr.strip().splitlines() == [
        "error: POSTGRES_PASSWORD in .env is still the .env.example placeholder: "
        "set a password (openssl rand -hex 24)"]
    real = _env_example() | {"POSTGRES_PASSWORD": "pw4711test", "MINIO_ROOT_USER": "histo",
                             "MINIO_ROOT_PASSWORD": "minio4711test",
                             "DATA_DIR": str(tmp_path / "dataset")}
    for key in ("POSTGRES_PASSWORD", "MINIO_ROOT_USER", "MINIO_ROOT_PASSWORD", "DATA_DIR"):
        one_left = real | {key: _env_example()[key]}  # only this placeholder left
        copied.write_text("".join(f"{k}={v}\n" for k, v in one_left.items()))
        check = _check_env(yaml.safe_load(_run_config(copied).stdout))
        assert check.returncode == 1 and f"error: {key} in .env" in check.stderr, key
    copied.write_text("".join(f"{k}={v}\n" for k, v in real.items()))
    assert _check_env(yaml.safe_load(_run_config(copied).stdout)).returncode == 0
