"""`histosweep check` and the workers' preflight: a good study passes every check; each broken
part (storage, artifact store, data, pretrained weights, GPUs) is its own line and exit 1; a
worker on a broken study exits 1 with that line before any trial exists. No training here."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from histosweep.cli import main
from histosweep.storage import study_id, study_storage
from tests.search._helpers import TINY_SPACE, cli, load

NAMES = {"storage", "artifacts", "data", "caches", "weights", "gpus"}


@pytest.fixture(scope="module")
def studies(synth_root, tmp_path_factory):
    """Studies 'good' (pretrained = false) and 'pre' (pretrained = true) in one SQLite file."""
    from histosweep.search import CreateOptions, create_study

    root = tmp_path_factory.mktemp("check")
    url = f"sqlite:///{root / 'study.db'}"
    for name, pretrained in (("good", "false"), ("pre", "true")):
        space = root / f"{name}.toml"
        space.write_text(TINY_SPACE.format(epochs=1).replace("pretrained = false", f"pretrained = {pretrained}"))
        create_study(name, url, CreateOptions(data=synth_root, space_file=space, folds=2), progress=False)
    (root / "artifacts").mkdir()
    return root, url


def run_check(capsys, *args: str) -> tuple[int, str, list[str]]:
    code = main(["check", *args])
    out, err = capsys.readouterr()
    assert "Traceback" not in err
    return code, out, [line for line in err.splitlines() if line.strip()]


def base_args(studies, study: str = "good") -> list[str]:
    root, url = studies
    return [study, "--storage", url, "--artifacts", str(root / "artifacts")]


def relabelled_copy(root: Path, dest: Path) -> Path:
    """A copy of the dataset with one label changed: another fingerprint."""
    shutil.copytree(root, dest)
    labels = dest / "train_labels.csv"
    rows = labels.read_text().splitlines()
    sample, label = rows[1].split(",", 1)
    other = "Luminal B" if label != "Luminal B" else "Luminal A"
    labels.write_text("\n".join([rows[0], f"{sample},{other}", *rows[2:]]) + "\n")
    return dest


@pytest.fixture()
def offline_empty_hf(tmp_path, monkeypatch):
    """An empty Hugging Face cache with offline mode on: nothing can be found or fetched."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    return tmp_path / "hf"


def test_check_passes_on_a_good_study(studies, capsys):
    root, url = studies
    code, out, err = run_check(capsys, *base_args(studies), "--json")
    doc = json.loads(out)
    assert code == 0 and err == [] and doc["ok"] is True, doc
    assert {c["name"] for c in doc["checks"]} == NAMES
    assert all(c["ok"] for c in doc["checks"]), doc
    assert list((root / "artifacts").iterdir()) == []  # the probe artifact was removed
    s = load("good", url)
    stamp = study_storage(s).get_study_system_attrs(study_id(s))["histosweep:check"]  # the write happened
    assert stamp["pid"] > 0
    code, out, err = run_check(capsys, *base_args(studies))
    assert code == 0 and err == []
    assert sorted(line.split(":")[1].strip() for line in out.splitlines()) == sorted(NAMES)


def test_artifact_folder_below_a_file_is_one_line(studies, tmp_path, capsys):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    args = base_args(studies)[:-1] + [str(blocker / "artifacts")]
    code, out, err = run_check(capsys, *args)
    assert code == 1 and len(err) == 1, err
    assert err[0].startswith("error: artifacts: ") and str(blocker / "artifacts") in err[0]
    assert "ok: data:" in out and "ok: storage:" in out  # the other parts still checked


def test_changed_data_is_a_fingerprint_line(studies, synth_root, tmp_path, capsys):
    moved = relabelled_copy(synth_root, tmp_path / "data")
    code, _, err = run_check(capsys, *base_args(studies), "--data", str(moved), "--json")
    assert code == 1
    code, _, err = run_check(capsys, *base_args(studies), "--data", str(moved))
    assert code == 1 and len(err) == 1, err
    assert err[0].startswith("error: data: ") and str(moved) in err[0] and "fingerprint" in err[0]


def test_pretrained_backbone_not_in_an_empty_offline_cache(studies, offline_empty_hf, capsys):
    code, out, err = run_check(capsys, *base_args(studies, "pre"))
    assert code == 1 and len(err) == 2, err  # one line per backbone: image and mask
    assert all(line.startswith("error: weights: ") for line in err)
    assert "'convnext_atto'" in err[0] and "'resnet10t'" in err[1]
    assert "HF_HUB_OFFLINE=1" in err[0] and str(offline_empty_hf) in err[0]
    assert not offline_empty_hf.exists() or not any(offline_empty_hf.rglob("*.safetensors"))


def test_gpu_ids_that_are_not_visible(studies, capsys):
    import torch

    if torch.cuda.device_count():
        pytest.skip("this machine has a GPU; the test needs a CPU-only one")
    code, out, err = run_check(capsys, *base_args(studies), "--gpus", "0", "--json")
    doc = json.loads(out)
    assert code == 1 and doc["ok"] is False
    assert [c["name"] for c in doc["checks"] if not c["ok"]] == ["gpus"]
    code, _, err = run_check(capsys, *base_args(studies), "--gpus", "0")
    assert len(err) == 1 and err[0].startswith("error: gpus: --gpus 0: GPU 0 not visible"), err


def test_every_broken_part_at_once_gives_one_line_each(studies, synth_root, tmp_path,
                                                        offline_empty_hf, capsys):
    import torch

    if torch.cuda.device_count():
        pytest.skip("this machine has a GPU; the test needs a CPU-only one")
    moved = relabelled_copy(synth_root, tmp_path / "data")
    (tmp_path / "a-file").write_text("x")
    root, url = studies
    code, _, err = run_check(capsys, "pre", "--storage", url, "--artifacts", str(tmp_path / "a-file" / "a"),
                             "--data", str(moved), "--gpus", "0")
    assert code == 1
    assert [line.split(":")[1].strip() for line in err] == ["artifacts", "data", "weights", "weights", "gpus"], err


def test_unreachable_storage_is_one_line_without_the_password(studies, capsys):
    root, _ = studies
    url = "postgresql+psycopg2://histosweep:s3cret-pw@127.0.0.1:1/histosweep"
    code, out, err = run_check(capsys, "good", "--storage", url, "--artifacts", str(root / "artifacts"))
    assert code == 1 and len(err) == 1 and err[0].startswith("error: storage: "), err
    assert "s3cret-pw" not in out + "".join(err) and "***" in err[0]
    assert "ok: artifacts:" in out and "ok: gpus:" in out


def test_check_on_postgres(studies, synth_root, pg_url, capsys):
    """The storage write (a study system attr) on a real PostgreSQL server."""
    from histosweep.search import CreateOptions, create_study

    root, _ = studies
    create_study("good", pg_url, CreateOptions(data=synth_root, space_file=root / "good.toml", folds=2),
                 progress=False)
    code, out, err = run_check(capsys, "good", "--storage", pg_url, "--artifacts", str(root / "artifacts"))
    assert code == 0 and err == [], err
    assert "ok: storage:" in out


def test_worker_on_a_broken_study_exits_before_any_trial(studies, tmp_path):
    root, url = studies
    proc = cli("worker", "pre", "--storage", url, "--artifacts", str(root / "artifacts"), "--gpus", "cpu",
               "--n-trials", "1", "--no-progress", "--log-dir", str(tmp_path / "logs"), check=False,
               env={"HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf")})
    assert proc.returncode == 1, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert lines[0].startswith("error: weights: image_backbone 'convnext_atto'"), proc.stderr
    assert lines[1].startswith("  weights: mask_backbone 'resnet10t'"), proc.stderr
    assert load("pre", url).get_trials() == []  # no trial was asked, so none failed


def test_worker_with_invisible_gpus_exits_before_any_trial(studies, tmp_path, capsys):
    import torch

    if torch.cuda.device_count():
        pytest.skip("this machine has a GPU; the test needs a CPU-only one")
    root, url = studies
    code = main(["worker", "good", "--storage", url, "--artifacts", str(root / "artifacts"),
                 "--gpus", "0", "--n-trials", "1", "--no-progress", "--log-dir", str(tmp_path / "logs")])
    err = capsys.readouterr().err
    assert code == 1 and err.startswith("error: gpus: --gpus 0: GPU 0 not visible"), err
    assert load("good", url).get_trials() == []
    assert not (tmp_path / "logs").exists()  # no slot started


def test_a_concurrent_workers_check_stamp_counts_as_read_back():
    """Two workers starting together both write the check attribute; the loser reads the
    winner's fresh stamp back, which proves the write path too. A stale or foreign value does not."""
    from histosweep.fleet._check import _newer_stamp

    ours = {"host": "a", "pid": 1, "at": 1000.0}
    assert _newer_stamp({"host": "b", "pid": 2, "at": 1000.5}, ours)
    assert _newer_stamp({"host": "b", "pid": 2, "at": 990.0}, ours)  # small clock skew
    assert not _newer_stamp({"host": "b", "pid": 2, "at": 900.0}, ours)  # an old run's stamp
    assert not _newer_stamp(None, ours)
    assert not _newer_stamp({"at": 1000.5}, ours)


def test_a_missing_artifacts_folder_is_refused_once_the_study_has_finished_trials(
        synth_root, tmp_path, capsys):
    """A mistyped --artifacts would put new trials' files beside nothing of the study's: refused
    (one line) once the study has a finished trial; a new study may start a new folder."""
    import optuna

    from histosweep.search import CreateOptions, create_study

    url = f"sqlite:///{tmp_path / 'study.db'}"
    space = tmp_path / "space.toml"
    space.write_text(TINY_SPACE.format(epochs=1))
    create_study("art", url, CreateOptions(data=synth_root, space_file=space, folds=2), progress=False)
    typo = tmp_path / "artifcats"
    code, _, err = run_check(capsys, "art", "--storage", url, "--artifacts", str(typo))
    assert code == 0 and not typo.exists(), err  # nothing finished yet: a new store is fine
    study = load("art", url)
    from histosweep.trial_files import fold_key

    record = {fold_key(0): {"checkpoint": "elsewhere"}}  # a finished trial with files somewhere
    study.add_trial(optuna.trial.create_trial(value=0.5, params={}, distributions={}, user_attrs=record))
    code, _, err = run_check(capsys, "art", "--storage", url, "--artifacts", str(typo))
    line = next(x for x in err if "artifacts" in x and "does not exist" in x)
    assert code == 1 and "1 finished trial(s)" in line and "pass --artifacts" in line
    assert not typo.exists()
