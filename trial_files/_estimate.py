"""How a study's honest estimate reads: the study attribute export-best and estimate write, and
the one sentence on the search gain over the reference recipe (report, study note, status).

Exercise: `histosweep estimate STUDY`.
"""

from __future__ import annotations

ESTIMATE_ATTR = "histosweep_estimate"  # study user attr: export-best's / estimate's BBC-CV figures


def gain_sentence(gain: dict | None) -> str:
    """One line on the search gain over the reference recipe (report, study note, status)."""
    if gain is None:
        return ("search gain over the reference: n/a (no complete reference-recipe trial; "
                "create enqueues it unless --no-reference)")
    low, high = gain["ci95"]
    line = f"search gain over the reference: {gain['mean']:+.3f} [{low:+.3f}, {high:+.3f}]"
    if high < 0:
        line += "; the search has not beaten the recipe it started from"
    return line


def selection_label(method: str | None) -> str:
    """What a BBC-CV figure re-ran in bag: 'bagged selection', 'the single best trial', ..."""
    return {"single": "the single best trial", "trials": "the named trials, equal weights"}.get(
        method or "", f"{method} selection")
