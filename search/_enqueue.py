"""Warm starts: enqueue a trial with given params (a TOML or JSON file, or the reference recipe),
checked against the study's space first so a typo never becomes a wasted trial.

Exercise: `histosweep enqueue STUDY --params best.toml`; `histosweep create ... --enqueue-reference`.
"""

from __future__ import annotations

import difflib
import json
import math
from pathlib import Path
from typing import Any

import tomllib

from histosweep.model import field_types
from histosweep.search._errors import UserError
from histosweep.search._space import ALIASES, Param, Space

# The published challenge recipe (reference/challenge-report.md, best leaderboard macro-F1
# 0.3978), as values of the space's keys. Only the keys the study searches are enqueued; the
# sampler fills the rest. Lion, class weights, h/v flips and rot90 are fixed in the trainer.
REFERENCE_PARAMS: dict[str, Any] = {
    "resolution": 384,  # "best trade-off between resolution and efficiency"
    "resize_mode": "stretch",  # plain resize to 384x384 (pad/reflect did worse at 224)
    "image_backbone": "convnext_tiny",  # Small overfit
    "mask_backbone": "resnet18",
    "pretrained": True,  # ImageNet encoders
    "label_smoothing": 0.1,
    "optimizer": "lion",  # Lion optimiser
    "color_jitter_prob": 0.8,  # ColorJitter with p=0.8
    "cutmix_prob": 0.5,  # CutMix on; NOTE: the report gives no rate, 0.5 is TrainConfig's
    "cutmix_alpha": 1.0,  # the CutMix paper's Beta(1, 1); the report gives none
    # Not stated in the report: TrainConfig's defaults, chosen for Lion (~3-10x below AdamW).
    "lr": 1e-4,
    "weight_decay": 1e-2,
    "dropout": 0.3,
    "drop_path_rate": 0.0,  # no stochastic depth or weight EMA in the report
    "ema_decay": 0.0,
    # Whole images, fine-tuned end to end (only enqueued where a space searches these modes).
    "input_mode": "whole",
    "train_mode": "finetune",
}


REFERENCE_SOURCE = "reference recipe"  # user attr enqueued_from of the baseline trial


def is_reference(trial) -> bool:
    """The reference recipe's trial, enqueued by create: the baseline, never pruned."""
    return trial.user_attrs.get("enqueued_from") == REFERENCE_SOURCE


def read_params_file(path: str | Path) -> dict[str, Any]:
    """{param: value} from a .toml or .json file (a TOML [params] table is accepted too)."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"params file {path} not found (pass --params with a .toml or .json file)")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise UserError(f"params file {path} is not UTF-8 text (byte {exc.start}); save it as "
                        "UTF-8 .toml or .json") from None
    try:
        if path.suffix.lower() == ".json":
            doc = json.loads(text)
        elif path.suffix.lower() == ".toml":
            doc = tomllib.loads(text)
        else:
            raise UserError(f"params file {path}: use a .toml or .json file of {{param: value}}")
    except (json.JSONDecodeError, tomllib.TOMLDecodeError) as exc:
        raise UserError(f"params file {path} is not valid {path.suffix[1:].upper()}: {exc}") from None
    if isinstance(doc, dict) and set(doc) == {"params"} and isinstance(doc["params"], dict):
        doc = doc["params"]
    if not isinstance(doc, dict) or not doc:
        raise UserError(f"params file {path}: expected a non-empty table of param = value")
    return doc


def check_params(space: Space, params: dict[str, Any], *, source: str) -> dict[str, Any]:
    """Every key a searched param of `space`, every value inside its choices or range.

    Returns the values as the study's distributions hold them (e.g. 1 -> 1.0 for a float).
    """
    searched = space.searched()
    checked = {}
    for key, value in params.items():
        p = space.params.get(key)
        if p is None or p.kind == "fixed":
            raise UserError(f"{source}: key {key!r} {_not_searched(p, key, searched)}")
        try:
            checked[key] = in_space(p, value)
        except ValueError as exc:
            raise UserError(f"{source}: key {key!r} = {value!r} {exc}") from None
    return checked


def _not_searched(p: Param | None, key: str, searched: list[str]) -> str:
    if p is not None:
        return f"is fixed at {p.value!r} in the study's space, not searched (remove it)"
    close = [ALIASES[key]] if ALIASES.get(key) in searched else difflib.get_close_matches(key, searched, n=1)
    hint = f"did you mean {close[0]!r}? " if close else ""
    return f"is not a searched param of the study ({hint}searched: {', '.join(searched)})"


def in_space(p: Param, value: Any) -> Any:
    """`value` as the study's distribution for `p` holds it; ValueError saying why it is not."""
    if p.kind == "choice":
        for choice in p.choices:
            if _same_kind(choice, value) and choice == value:
                return choice
        raise ValueError(f"is not one of the study's choices {list(p.choices)}")
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ValueError("is not a finite number (the study searches a range)")
    if not p.low <= value <= p.high:
        raise ValueError(f"is outside the study's range [{p.low}, {p.high}]")
    if _is_int_range(p):
        if value != int(value):
            raise ValueError("is not an integer (the study searches integers)")
        value = int(value)
        if (value - p.low) % int(p.step or 1):
            raise ValueError(f"is not on the study's grid low {p.low} + k * step {p.step}")
        return value
    if p.step is not None:
        k = (value - p.low) / p.step
        if not math.isclose(k, round(k), abs_tol=1e-8):
            raise ValueError(f"is not on the study's grid low {p.low} + k * step {p.step}")
    return float(value)


def _same_kind(a: Any, b: Any) -> bool:
    """True and 1 compare equal in Python; a bool choice takes only bools, a number only numbers."""
    return isinstance(a, bool) == isinstance(b, bool) and isinstance(a, str) == isinstance(b, str)


def _is_int_range(p: Param) -> bool:
    # the same rule as search._space._suggest (suggest_int versus suggest_float)
    return isinstance(p.low, int) and isinstance(p.high, int) and field_types()[p.name] is int


def reference_params(space: Space) -> tuple[dict[str, Any], list[str]]:
    """The reference recipe's values of the params `space` searches, and a warning per value
    the space does not contain (that param is then left to the sampler)."""
    params, skipped = {}, []
    for key, value in REFERENCE_PARAMS.items():
        p = space.params.get(key)
        if p is None or p.kind == "fixed":
            continue
        try:
            params[key] = in_space(p, value)
        except ValueError as exc:
            skipped.append(f"reference {key} = {value!r} {exc}; left to the sampler")
    return params, skipped


def enqueue(study, params: dict[str, Any], *, source: str) -> bool:
    """Queue one trial with `params` (already checked); False when the same params are
    already queued or were run (optuna's skip_if_exists)."""
    import optuna

    before = len(study.get_trials(deepcopy=False))
    verbosity = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.WARNING)  # we say "skipped" ourselves
    try:
        study.enqueue_trial(params, user_attrs={"enqueued_from": source}, skip_if_exists=True)
    finally:
        optuna.logging.set_verbosity(verbosity)
    return len(study.get_trials(deepcopy=False)) > before
