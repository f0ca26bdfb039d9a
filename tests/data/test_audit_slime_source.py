"""A smeared (green-slime) copy names its clean original, not another slimed copy that sits
closer in perceptual hash. Exercise: `python -m pytest -q tests/data/test_audit_slime_source.py`."""

from __future__ import annotations

from histosweep.data._audit import _slime


def _hash(bits: str) -> str:
    return f"{int(bits.ljust(64, '0'), 2):016x}"


def test_a_slimed_copy_names_its_clean_original_not_another_slimed_copy() -> None:
    ids = ["original", "slimed_1", "slimed_2", "other"]
    feats = [
        {"green_share": 0.0, "phash": _hash("1" * 32)},
        {"green_share": 0.4, "phash": _hash("1" * 24 + "0" * 8 + "1" * 10)},  # 18 bits off
        {"green_share": 0.4, "phash": _hash("1" * 24 + "0" * 8 + "1" * 12)},  # 2 bits from slimed_1
        {"green_share": 0.0, "phash": _hash("0" * 32 + "1" * 32)},
    ]
    reasons = _slime(ids, feats, already=set())
    assert set(reasons) == {"slimed_1", "slimed_2"}
    assert "a smeared copy of original (perceptual-hash distance 18/64)" in reasons["slimed_1"]
    assert "a smeared copy of original" in reasons["slimed_2"]
