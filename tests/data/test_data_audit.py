"""audit_dataset: recall on the planted contaminants, duplicate groups, caching, group ids."""

from __future__ import annotations

import json

import numpy as np
import pytest

from histosweep import data
from histosweep.data import AuditReport, audit_dataset, build_cache, load_dataset


def test_flags_every_planted_contaminant_and_nothing_else(synth_audit, truth):
    report, _ = synth_audit
    excluded = {e["sample_index"]: e for e in report.excluded}
    planted = set(truth["cartoons"]) | set(truth["slime"])
    assert set(excluded) == planted
    for name in truth["cartoons"]:
        assert excluded[name]["kind"] == "cartoon" and "flat colour" in excluded[name]["reason"]
    for name, source in truth["slime"].items():
        assert excluded[name]["kind"] == "slime"
        assert "green slime" in excluded[name]["reason"] and source in excluded[name]["reason"]


def test_stock_mask_group_is_explained(synth_audit, truth):
    report, _ = synth_audit
    reasons = {e["sample_index"]: e["reason"] for e in report.excluded}
    group = truth["stock_mask_group"]
    assert len(group) >= 3
    for name in group:
        assert "identical mask" in reasons[name]
        assert all(other in reasons[name] for other in group if other != name)


def test_exact_and_near_duplicates_are_grouped(synth_audit, truth):
    report, _ = synth_audit
    groups = [set(g) for g in report.duplicate_groups]
    for pair in truth["exact_duplicates"] + truth["near_duplicates"]:
        assert any(set(pair) <= g for g in groups), pair
    assert len(groups) == len(truth["exact_duplicates"]) + len(truth["near_duplicates"])


def test_groups_for_keeps_duplicates_together(synth_audit, synth_dataset, truth):
    report, _ = synth_audit
    kept = report.kept_ids(synth_dataset.sample_ids())
    groups = report.groups_for(kept)
    assert groups.dtype == np.int64 and len(groups) == len(kept)
    a, b = truth["exact_duplicates"][0]
    assert groups[kept.index(a)] == groups[kept.index(b)]
    assert len(np.unique(groups)) == len(kept) - sum(len(g) - 1 for g in report.duplicate_groups)


def test_report_round_trips_through_dict(synth_audit):
    report, _ = synth_audit
    document = report.to_dict()
    assert {"samples", "excluded", "warnings", "duplicate_groups"} <= set(document)
    assert document["samples"] == 64
    assert AuditReport.from_dict(json.loads(json.dumps(document))).to_dict() == document


def test_audit_is_cached_and_reuses_cache_features(synth_audit, synth_root, monkeypatch):
    report, cache = synth_audit

    def no_decoding(job):
        raise AssertionError("decoded again")

    monkeypatch.setattr(data._pool, "decode_sample", no_decoding)
    again = audit_dataset(load_dataset(synth_root), cache_dir=cache, progress=False)
    assert again.to_dict() == report.to_dict()


def test_features_come_from_the_cache_build(labeled_copy, tmp_path, monkeypatch):
    ds = load_dataset(labeled_copy)
    ds.samples = ds.samples[:12]
    build_cache(ds, resolutions=[32], cache_dir=tmp_path, workers=1, progress=False)

    def no_decoding(job):
        raise AssertionError("the audit decoded an image the cache build had decoded")

    monkeypatch.setattr(data._pool, "decode_sample", no_decoding)
    report = audit_dataset(ds, cache_dir=tmp_path, progress=False)
    assert report.samples == 12


def test_audit_without_cache_computes_features(labeled_copy, tmp_path, truth):
    ds = load_dataset(labeled_copy)
    report = audit_dataset(ds, cache_dir=tmp_path, workers=1, progress=False)
    assert {e["sample_index"] for e in report.excluded} == set(truth["cartoons"]) | set(
        truth["slime"]
    )


def test_conflicting_duplicate_labels_warn(labeled_copy, truth, tmp_path):
    a, b = truth["exact_duplicates"][0]
    path = labeled_copy / "train_labels.csv"
    rows = path.read_text().splitlines()
    label_a = next(r.split(",", 1)[1] for r in rows if r.startswith(a))
    other = "Luminal A" if label_a != "Luminal A" else "Luminal B"
    path.write_text("\n".join(r if not r.startswith(b) else f"{b},{other}" for r in rows) + "\n")
    report = audit_dataset(
        load_dataset(labeled_copy), cache_dir=tmp_path, workers=1, progress=False
    )
    assert any(a in w and b in w and "different labels" in w for w in report.warnings)


@pytest.mark.parametrize("kind", ["cartoon", "slime"])
def test_rules_on_hand_made_features(kind):
    from histosweep.data._audit import judge

    clean = {
        "pixel_sha": "x",
        "mask_sha": "m",
        "mask_fraction": 0.2,
        "mask_empty": False,
        "phash": "0f0f0f0f0f0f0f0f",
        "dhash": "00ff00ff00ff00ff",
        "coloured_share": 0.8,
        "vivid_share": 0.3,
        "green_share": 0.0,
        "flat_coloured_share": 0.01,
        "hue_families": 2,
    }
    odd = dict(
        clean, pixel_sha="y", mask_sha="n", phash="f0f0f0f0f0f0f0f0", dhash="ff00ff00ff00ff00"
    )
    odd.update({"flat_coloured_share": 0.9} if kind == "cartoon" else {"green_share": 0.2})
    samples = [data.Sample(f"img_{i}.png", None, None, "Luminal A") for i in range(2)]
    report = judge(data.Dataset(None, samples, True), {"img_0.png": clean, "img_1.png": odd})
    assert [(e["sample_index"], e["kind"]) for e in report.excluded] == [("img_1.png", kind)]
