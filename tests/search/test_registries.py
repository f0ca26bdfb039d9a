"""Samplers, pruners and artifact stores come from registries: the CLI help, validation, the
worker's categorical warning and the README tables are derived from them."""

from __future__ import annotations

import subprocess
import sys

import optuna
import pytest

from histosweep import search, storage
from histosweep.exceptions import UserError


def test_create_help_lists_every_registered_sampler_and_pruner():
    out = subprocess.run([sys.executable, "-m", "histosweep", "create", "--help"],
                         capture_output=True, text=True, check=True).stdout
    flat = " ".join(out.split())
    for name in (*search.SAMPLERS, *search.PRUNERS):
        assert name in flat
    assert "asha" in flat  # once missing from a hand-written --pruner help


@pytest.mark.parametrize("name", search.SAMPLERS)
def test_every_registered_sampler_builds(name):
    sampler = search.make_sampler(name, seed=1, worker="w")
    assert isinstance(sampler, optuna.samplers.BaseSampler)


@pytest.mark.parametrize("name", search.PRUNERS)
def test_every_registered_pruner_builds(name):
    settings = type("S", (), {"pruner": name, "folds": 3})()
    assert isinstance(search.make_pruner(settings, 4), optuna.pruners.BasePruner)


def test_unknown_names_are_one_line_with_the_choices():
    with pytest.raises(UserError, match=r"^--sampler 'sobol': choose one of tpe, gp, random"):
        search.sampler_kind("sobol", flag="--sampler")
    with pytest.raises(UserError, match=r"^--pruner 'x': choose one of percentile, median"):
        search.pruner_kind("x", flag="--pruner")


def test_capabilities_replace_the_special_cases():
    random_categoricals = {k.name for k in search.SAMPLER_KINDS.values() if k.categorical_at_random}
    assert random_categoricals == {"cmaes", "qmc"}
    assert {k.name for k in search.PRUNER_KINDS.values() if k.reads_finished} == {"percentile", "median"}


def test_tables_render_one_row_per_registered_entry():
    samplers, pruners = search.sampler_table(), search.pruner_table()
    assert len(samplers.splitlines()) == 2 + len(search.SAMPLERS)
    assert len(pruners.splitlines()) == 2 + len(search.PRUNERS)
    assert "| `tpe` (default) |" in samplers and "| `percentile` (default) |" in pruners


def test_artifact_stores_are_chosen_by_scheme(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert storage.store_kind(str(tmp_path)).local_folder
    assert storage.store_folder(str(tmp_path)) == tmp_path
    assert storage.store_kind("s3://bucket/prefix").scheme == "s3"
    assert storage.store_folder("s3://bucket/prefix") is None
    for spec in ("gs://bucket/prefix", "s3:/bucket"):
        with pytest.raises(storage.StorageError, match="unsupported artifact store") as err:
            storage.open_artifact_store(spec)
        assert "\n" not in str(err.value)
    assert list(tmp_path.iterdir()) == []  # no folder named after the URL


def test_the_docs_show_the_tables_the_registries_render():
    from pathlib import Path

    page = (Path(__file__).resolve().parents[2] / "docs" / "real-data.md").read_text()
    assert search.sampler_table() in page and search.pruner_table() in page
