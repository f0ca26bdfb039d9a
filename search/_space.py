"""The search space: a TOML file of TrainConfig field names -> fixed value, choices or range.

Validated up front with errors for people; suggests a full TrainConfig for a trial.
Exercise: `histosweep create STUDY --data DATA --space space.toml`.
"""

from __future__ import annotations

import difflib
import math
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import tomllib

from histosweep.exceptions import HistosweepError
from histosweep.model import ConfigError, TrainConfig, field_names, field_types

RANGE_KEYS = {"low", "high", "log", "step"}
# Names people reach for from other frameworks -> our field names (for "did you mean").
ALIASES = {
    "learning_rate": "lr", "wd": "weight_decay", "img_size": "resolution", "image_size": "resolution",
    "size": "resolution", "backbone": "image_backbone", "model": "image_backbone", "bs": "batch_size",
    "smoothing": "label_smoothing", "drop_rate": "dropout", "max_epochs": "epochs",
    # timm train.py's --opt, --drop-path, --model-ema-decay
    "opt": "optimizer", "drop_path": "drop_path_rate", "model_ema_decay": "ema_decay",
}
# Keys of earlier versions that are no longer searched -> where the thing went.
MOVED_KEYS = {
    key: "ensemble weights are no longer searched per trial; export-best searches them across "
    "trials after training (histosweep export-best STUDY --candidates N); remove this key"
    for key in ("ensemble_top_k", "ensemble_temperature", "top_k", "temperature")
}
# Fields that must be chosen by a space file even when the file omits them (DESIGN.md list).
REQUIRED_KEYS = (
    "resolution", "resize_mode", "image_backbone", "mask_backbone", "pretrained", "epochs",
    "batch_size", "lr", "weight_decay", "label_smoothing", "dropout", "cutmix_prob",
    "cutmix_alpha", "color_jitter_prob",
)


class SpaceError(HistosweepError, ValueError):
    """A problem in a space file: one line, naming the file, the key and the fix."""


@dataclass(frozen=True)
class Param:
    name: str
    kind: str  # "fixed" | "choice" | "range"
    value: Any = None  # fixed
    choices: tuple = ()  # choice
    low: float | int | None = None  # range
    high: float | int | None = None
    log: bool = False
    step: float | int | None = None

    def to_dict(self) -> dict[str, Any]:
        if self.kind == "fixed":
            return {"value": self.value}
        if self.kind == "choice":
            return {"choices": list(self.choices)}
        out: dict[str, Any] = {"low": self.low, "high": self.high, "log": self.log}
        if self.step is not None:
            out["step"] = self.step
        return out


@dataclass(frozen=True)
class Space:
    params: dict[str, Param] = field(default_factory=dict)
    source: str = "<default>"

    def suggest(self, trial, **overrides: Any) -> TrainConfig:
        """Suggest every non-fixed parameter on `trial`; return the complete TrainConfig."""
        values = {name: _suggest(trial, p) for name, p in self.params.items()}
        values.update(overrides)
        return TrainConfig(**values)

    def fixed_config(self) -> TrainConfig:
        """The config with every non-fixed param at its first choice / low end (for checks)."""
        return TrainConfig(**{n: _first(p) for n, p in self.params.items()})

    def max_epochs(self) -> int:
        """The most epochs any trial can train per fold (pruning steps are fold * this + epoch)."""
        p = self.params.get("epochs")
        if p is None:
            return TrainConfig().epochs
        return int(p.value if p.kind == "fixed" else max(p.choices) if p.kind == "choice" else p.high)

    def values(self, name: str) -> list | None:
        """The values `name` can take: the fixed value, the choices, the TrainConfig default when
        the space leaves it out; None for a range."""
        p = self.params.get(name)
        if p is None:
            return [getattr(TrainConfig(), name)]
        if p.kind == "fixed":
            return [p.value]
        return list(p.choices) if p.kind == "choice" else None

    def searched(self) -> list[str]:
        return [n for n, p in self.params.items() if p.kind != "fixed"]

    def to_dict(self) -> dict[str, Any]:
        return {name: p.to_dict() for name, p in sorted(self.params.items())}

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str = "<study>") -> Space:
        params = {}
        for name, spec in data.items():
            if "value" in spec:
                params[name] = Param(name, "fixed", value=spec["value"])
            elif "choices" in spec:
                params[name] = Param(name, "choice", choices=tuple(spec["choices"]))
            else:
                params[name] = Param(name, "range", low=spec["low"], high=spec["high"],
                                     log=spec.get("log", False), step=spec.get("step"))
        return cls(params, source)


def _suggest(trial, p: Param) -> Any:
    if p.kind == "fixed":
        return p.value
    if p.kind == "choice":
        return trial.suggest_categorical(p.name, list(p.choices))
    if _int_range(p):
        return trial.suggest_int(p.name, p.low, p.high, log=p.log, step=int(p.step or 1))
    return trial.suggest_float(p.name, float(p.low), float(p.high), log=p.log, step=p.step)


def _int_range(p: Param) -> bool:
    return isinstance(p.low, int) and isinstance(p.high, int) and field_types()[p.name] is int


def distribution(p: Param):
    """The optuna distribution _suggest draws a searched param from (warm starts record
    imported trials with it, so they sit in the study exactly as its own trials do)."""
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

    if p.kind == "choice":
        return CategoricalDistribution(list(p.choices))
    if _int_range(p):
        return IntDistribution(p.low, p.high, log=p.log, step=int(p.step or 1))
    return FloatDistribution(float(p.low), float(p.high), log=p.log, step=p.step)


def _first(p: Param) -> Any:
    return p.value if p.kind == "fixed" else p.choices[0] if p.kind == "choice" else p.low


def default_space_path() -> Path:
    return Path(str(resources.files("histosweep.search").joinpath("default_space.toml")))


def load_space(path: str | Path | None = None) -> Space:
    """Read and validate a space file (the packaged default when `path` is None)."""
    path = Path(path) if path else default_space_path()
    if path.is_dir():
        raise SpaceError(f"space file {path} is a folder; pass --space with the path of a TOML file")
    if not path.is_file():
        raise SpaceError(f"space file {path} not found (pass --space with an existing TOML file)")
    try:
        doc = tomllib.loads(path.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise SpaceError(f"space file {path} is not valid TOML: {exc}") from None
    return parse_space(doc, source=str(path))


def parse_space(doc: dict[str, Any], *, source: str = "<space>") -> Space:
    extra = sorted(set(doc) - {"params"})
    if extra or not isinstance(doc.get("params"), dict):
        raise SpaceError(f"{source}: expected one [params] table, found {extra or 'none'}")
    params = {name: _parse_param(source, name, spec) for name, spec in doc["params"].items()}
    defaults = TrainConfig()
    for name in field_names():
        params.setdefault(name, Param(name, "fixed", value=getattr(defaults, name)))
    _check_values(source, params)
    return Space(params, source)


def _parse_param(source: str, name: str, spec: Any) -> Param:
    types = field_types()
    if name in MOVED_KEYS:
        raise SpaceError(f"{source}: {name} in [params]: {MOVED_KEYS[name]}")
    if name not in types:
        close = [ALIASES[name]] if name in ALIASES else difflib.get_close_matches(name, list(types), n=1)
        hint = f"did you mean {close[0]!r}?" if close else f"known keys: {', '.join(sorted(types))}"
        raise SpaceError(f"{source}: unknown key {name!r} in [params] ({hint})")
    want = types[name]
    _check_not_searched(source, name, spec)
    if isinstance(spec, list):
        if not spec:
            raise SpaceError(f"{source}: {name} is an empty list (give at least one choice)")
        return Param(name, "choice", choices=tuple(_typed(source, name, v, want) for v in spec))
    if isinstance(spec, dict):
        return _parse_range(source, name, spec, want)
    return Param(name, "fixed", value=_typed(source, name, spec, want))


def _parse_range(source: str, name: str, spec: dict, want: type) -> Param:
    unknown = sorted(set(spec) - RANGE_KEYS)
    if unknown or not {"low", "high"} <= set(spec):
        raise SpaceError(f"{source}: {name} range needs low and high (optional log, step); got {sorted(spec)}")
    if want not in (int, float):
        raise SpaceError(f"{source}: {name} is a {want.__name__}; give a value or a list, not a range")
    low, high = (_typed(source, name, spec[k], want) for k in ("low", "high"))
    log = spec.get("log", False)
    step = spec.get("step")
    if not isinstance(log, bool):
        raise SpaceError(f"{source}: {name}.log must be true or false, got {log!r}")
    if low > high:
        raise SpaceError(f"{source}: {name} has low {low} > high {high} (swap them)")
    if log and low <= 0:
        raise SpaceError(f"{source}: {name} is a log range but low is {low} (log ranges need low > 0)")
    if step is not None and (log or not isinstance(step, int | float) or step <= 0):
        raise SpaceError(f"{source}: {name}.step must be a positive number and cannot be used with log")
    _check_int_step(source, name, step, want)
    return Param(name, "range", low=low, high=high, log=log, step=step)


def _check_not_searched(source: str, name: str, spec: Any) -> None:
    """Trials train with the study's seed (the objective overrides it), and searching a seed
    would only select lucky noise: a searched seed is refused, not silently ignored."""
    if name == "seed" and isinstance(spec, list | dict):
        raise SpaceError(
            f"{source}: seed cannot be searched (got {spec!r}): trials train with the study's "
            "seed; remove seed from [params] and set it with `histosweep create --seed S`"
        )


def _check_int_step(source: str, name: str, step: Any, want: type) -> None:
    """An integer field steps by whole numbers (Optuna's suggest_int would truncate 0.5 to 0)."""
    if want is int and step is not None and (isinstance(step, bool) or step != int(step)):
        raise SpaceError(
            f"{source}: {name} is an integer range but has step {step}; use a whole number "
            f"step >= 1 (e.g. step = {max(1, round(step))}) or drop step"
        )


def _typed(source: str, name: str, value: Any, want: type) -> Any:
    ok = (
        isinstance(value, bool) if want is bool
        else isinstance(value, int) and not isinstance(value, bool) if want is int
        else isinstance(value, int | float) and not isinstance(value, bool) if want is float
        else isinstance(value, str)
    )
    if not ok:
        raise SpaceError(
            f"{source}: {name} must be {want.__name__} values, got {value!r} ({type(value).__name__})"
        )
    if want is float:
        value = float(value)
        if not math.isfinite(value):
            raise SpaceError(f"{source}: {name} must be finite, got {value}")
    return value


def _check_values(source: str, params: dict[str, Param]) -> None:
    """Every choice and both range ends must make a valid TrainConfig on their own."""
    base = {n: _first(p) for n, p in params.items()}
    try:  # the first values together first: a fault there is the field the message names,
        TrainConfig(**base)  # not the first parameter varied below
    except ConfigError as exc:
        field = str(exc).removeprefix("invalid TrainConfig: ").split(" ", 1)[0]
        what = f"{field} = {base[field]!r}" if field in base else "the first values together"
        raise SpaceError(f"{source}: {what} is not allowed: {exc}") from None
    for name, p in params.items():
        candidates = (
            [p.value] if p.kind == "fixed" else list(p.choices) if p.kind == "choice" else [p.low, p.high]
        )
        for value in candidates:
            try:
                TrainConfig(**{**base, name: value})
            except ConfigError as exc:
                raise SpaceError(f"{source}: {name} = {value!r} is not allowed: {exc}") from None


def check_backbones(space: Space) -> None:
    """Every backbone name in the space must be known to timm (imports timm: slow)."""
    from histosweep.model import check_backbone

    for name in ("image_backbone", "mask_backbone"):
        p = space.params[name]
        for value in [p.value] if p.kind == "fixed" else p.choices:
            try:
                check_backbone(value, field=name)
            except Exception as exc:  # ModelError
                raise SpaceError(f"{space.source}: {exc}") from None
