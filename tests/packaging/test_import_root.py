"""One import root: ours install as histosweep.*, and a user's own data/ model/ search/ storage/
packages neither break nor get imported by any command.

Exercise: `pytest tests/packaging`.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from tests.search._helpers import tiny_space

REPO = Path(__file__).resolve().parents[2]
FOREIGN = ("data", "model", "search", "storage", "bundle", "fleet", "artifacts", "trial_files")


def _foreign_packages(root: Path) -> None:
    """Importable packages with our old top-level names, each failing loudly on import."""
    for name in FOREIGN:
        (root / name).mkdir()
        (root / name / "__init__.py").write_text(
            f"raise RuntimeError('the user\\'s own {name} package was imported')\n"
        )


def _run(cwd: Path, *args: str, timeout: float = 900) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(cwd)}  # the foreign packages importable everywhere
    proc = subprocess.run([sys.executable, "-m", "histosweep", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=timeout)
    assert "own " not in proc.stderr, proc.stderr[-2000:]
    assert proc.returncode == 0, f"histosweep {args[0]} exited {proc.returncode}:\n{proc.stderr[-3000:]}"
    return proc


@pytest.mark.slow
def test_commands_ignore_a_users_own_data_model_search_storage_packages(tmp_path, synth_root):
    work = tmp_path / "project"
    work.mkdir()
    _foreign_packages(work)
    # NOTE: the user's dataset folder is literally called data/ here, beside their data package
    storage = f"sqlite:///{work / 'study.db'}"
    common = ["--storage", storage, "--artifacts", str(work / "artifacts")]
    space = tiny_space(tmp_path, epochs=1)
    _run(work, "create", "s", "--data", str(synth_root), "--space", str(space), "--folds", "2",
         "--storage", storage)
    _run(work, "worker", "s", "--gpus", "cpu", "--trials-per-gpu", "2", "--n-trials", "2",
         "--no-progress", "--log-dir", str(work / "logs"), *common)
    _run(work, "export-best", "s", "--out", str(work / "export"), "--test", str(synth_root / "TEST"),
         *common)
    _run(work, "predict", str(work / "export"), "--images", str(synth_root / "TEST"),
         "--out", str(work / "again.csv"))
    assert (work / "again.csv").read_bytes() == (work / "export" / "submission.csv").read_bytes()
    status = json.loads(_run(work, "status", "s", "--json", *common).stdout)
    assert status["trials"].get("COMPLETE", 0) + status["trials"].get("PRUNED", 0) >= 2


def _built_wheel(tmp_path: Path) -> Path:
    src = tmp_path / "src"
    files = subprocess.run(["git", "ls-files", "-co", "--exclude-standard"], cwd=REPO,
                           capture_output=True, text=True, check=True).stdout.split()
    for rel in files:
        if (REPO / rel).is_file():
            (src / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / rel, src / rel)
    out = tmp_path / "dist"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation",
                    "-w", str(out), str(src)], check=True, capture_output=True, text=True)
    (wheel,) = out.glob("histosweep-*.whl")
    return wheel


def test_the_wheel_installs_one_top_level_package(tmp_path):
    wheel = _built_wheel(tmp_path)
    with zipfile.ZipFile(wheel) as zf:
        tops = {n.split("/")[0] for n in zf.namelist()}
    assert {t for t in tops if not t.endswith(".dist-info")} == {"histosweep"}

    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    py = venv / "bin" / "python"
    # NOTE: dependencies come from this interpreter's site-packages through a .pth line (no
    # network in tests); a folder named in a .pth is not scanned for .pth files, so the
    # checkout's editable install stays out of the fresh venv.
    deps = [p for p in sys.path if p.endswith("site-packages")]  # this venv's, and any it chains
    subprocess.run([str(py), "-m", "pip", "install", "-q", "--no-deps", "--no-index", str(wheel)],
                   check=True, capture_output=True, text=True)
    site = subprocess.run([str(py), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
                          check=True, capture_output=True, text=True).stdout.strip()
    installed = {p.name for p in Path(site).iterdir()
                 if not p.name.endswith((".dist-info", ".pth")) and p.name not in ("pip", "_distutils_hack", "setuptools", "pkg_resources", "__pycache__")}
    assert installed == {"histosweep"}
    (Path(site) / "deps.pth").write_text("".join(f"{d}\n" for d in deps))
    assert (Path(site) / "histosweep" / "search" / "default_space.toml").is_file()
    # the installed copy runs from an unrelated folder, away from the checkout
    env = {**os.environ, "PYTHONPATH": ""}
    proc = subprocess.run([str(venv / "bin" / "histosweep"), "--version"], cwd=tmp_path,
                          capture_output=True, text=True, env=env)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("histosweep ")
    code = ("import histosweep.search, histosweep.bundle, histosweep.data as d; "
            "print(d.__file__); from histosweep.search import load_space; load_space()")
    proc = subprocess.run([str(py), "-c", code], cwd=tmp_path, capture_output=True, text=True,
                          env=env)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith(site)  # the wheel's copy, not the checkout's
