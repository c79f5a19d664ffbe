"""Training configuration: nested dataclasses read from YAML, overridable with ``key=value``.

A config file mirrors :class:`TrainConfig` section by section (``model``, ``data``, ``optim``,
``schedule``, ``loss``, ``eval``, ``run``); every key is optional and unknown keys are errors
naming the file and the dotted key. ``_base_: other.yaml`` (relative to the file) starts from
another config: sections merge key by key, and a key's value (a list, a mapping such as
``data.val``, a scalar) replaces the base's whole.
``--set optim.lr=0.01`` (parsed as YAML, so lists and booleans work:
``--set schedule.milestones=[10,16]``) overrides any field after loading. Files and overrides
read YAML 1.2 floats (``8e-3`` is a float, not the string YAML 1.1 makes of it); values are
range-checked (:data:`RANGES`).

Defaults are the paper's recipe (Sec. 4.1): SGD momentum 0.9, weight decay 5e-4, lr linearly
from 1e-6 to 0.015 over the first 500 iterations, divided by 10 at epochs 25 and 40 of 50;
the rest (input size, batch, matching, loss constants) is our choice, documented per field.
"""
from __future__ import annotations

import dataclasses
import math
import re
import types
import typing
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, TypeVar

import yaml

Subset = Literal["all", "train", "val"]
OptimizerName = Literal["sgd", "adamw"]


class ConfigError(ValueError):
    """A malformed config: the message names the file and the dotted key."""


class _Loader(yaml.SafeLoader):
    """PyYAML's safe loader (YAML 1.1) that also reads YAML 1.2 floats without a dot
    (``8e-3``, ``1e5``), which YAML 1.1 leaves as strings."""


_Loader.add_implicit_resolver("tag:yaml.org,2002:float",
                              re.compile(r"^[-+]?[0-9][0-9_]*(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"),
                              list("-+0123456789"))


def load_yaml(text: str, source: str) -> Any:
    """Parse YAML text with :class:`_Loader`; a syntax error is a one-line :class:`ConfigError`
    naming ``source`` and the line."""
    try:
        return yaml.load(text, Loader=_Loader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f", line {mark.line + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ConfigError(f"{source}{where}: not valid YAML: {problem}") from None


@dataclass
class DataSource:
    """One WIDER-format folder: ``images/<event>/<name>.jpg`` + one ``*_bbx_gt.txt``, or the
    official WIDER FACE layout (``WIDER_<split>/images``, ``wider_face_split/``), then
    ``wider_split`` (``train`` / ``val``) says which split.

    ``images`` is an optional list file (one relative image path per line, ``#`` comments)
    restricting the folder to those images. ``subset`` then splits what remains into a
    deterministic train/val partition (:func:`detectors.train.split_images`): within each event,
    images sorted by name, every ``1/val_fraction``-th one (evenly spaced) is ``val``, the others
    ``train``. Use the same ``val_fraction`` on the train and val side to hold out part of a folder.

    ``ground_truth``: the folder of the official evaluation ``.mat`` files (``eval_tools``'
    ``ground_truth/``) when it is not ``<dir>/ground_truth`` or ``<dir>``; evaluation only.
    """

    dir: str
    wider_split: Literal["train", "val"] | None = None
    images: str | None = None
    subset: Subset = "all"
    val_fraction: float = 0.5
    ground_truth: str | None = None


@dataclass
class ModelConfig:
    """``name``: an ASFD variant ``D0``..``D6``, a reference detector (``retinaface_mnet025``,
    ``dsfd_like``) or a model file (``model.pt``: its architecture and weights are the starting
    point, e.g. a derived network); ``genotype``: a library name or a YAML file (ASFD variants);
    ``pretrained``: optional local ImageNet weights of the backbone (nothing downloads);
    ``options``: extra keyword arguments of the reference detector's builder."""

    name: str = "D0"
    genotype: str = "asfd_paper_like"
    pretrained: str | None = None
    options: dict[str, Any] = field(default_factory=dict)


@dataclass
class DataConfig:
    """``size``: square training input (after crop + resize); ``workers``: DataLoader processes."""

    train: list[DataSource] = field(default_factory=list)
    val: DataSource | None = None
    size: int = 640
    batch_size: int = 8
    workers: int = 2


@dataclass
class OptimConfig:
    """``name``: ``sgd`` (Sec. 4.1; ``momentum``, L2 ``weight_decay``) or ``adamw`` (Adam with
    decoupled ``weight_decay``; ``momentum`` unused). AdamW is our choice for training from
    scratch: it scales each step by the gradient's running magnitude, which differs ~20x between
    ASFD-D0 and the RetinaFace-style baseline at the start (``bench/learning_probe.py``), so one
    learning rate serves both. ``lr`` is the rate after warm-up; ``grad_clip`` the max global L2
    norm (0 disables; our choice, it keeps from-scratch training of tiny models stable)."""

    name: OptimizerName = "sgd"
    lr: float = 0.015
    momentum: float = 0.9
    weight_decay: float = 5e-4
    grad_clip: float = 10.0


@dataclass
class ScheduleConfig:
    """Linear warm-up from ``warmup_start_lr`` over ``warmup_iters`` iterations, then ``policy``:
    ``step`` multiplies the lr by ``gamma`` at each milestone (the paper's); ``cosine`` follows
    ``lr * (r + (1 - r) (1 + cos(pi t)) / 2)`` with ``r = min_lr_ratio`` and ``t`` the share of
    training done. Training ends after ``epochs``.

    ``milestone_unit``: ``epoch`` (the paper's: ``milestones`` are epochs; cosine's ``t`` counts
    iterations) or ``budget`` (``milestones`` and ``t`` are fractions of ``run.max_minutes``
    elapsed, e.g. ``[0.6, 0.85]``, and ``epochs`` is only an upper bound): for time-boxed runs
    whose speed is not known in advance (a shared CPU). The lr then depends on the wall clock,
    so such runs are not bit-reproducible.
    """

    policy: Literal["step", "cosine"] = "step"
    min_lr_ratio: float = 0.01
    epochs: int = 50
    milestones: list[float] = field(default_factory=lambda: [25, 40])
    milestone_unit: Literal["epoch", "budget"] = "epoch"
    gamma: float = 0.1
    warmup_iters: int = 500
    warmup_start_lr: float = 1e-6


@dataclass
class LossConfig:
    """``name`` in ``detectors.losses.LOSSES``; ``params`` its keyword arguments (DRMC: ``margin``
    m, ``lambda1``, ``lambda2``, ``iou_threshold`` of the anchor matching; the paper gives no
    values, :mod:`detectors.losses` documents ours)."""

    name: str = "drmc"
    params: dict[str, Any] = field(default_factory=dict)


@dataclass
class EvalConfig:
    """AP on ``data.val`` every ``every`` epochs (0: only at the end) with
    :class:`detectors.inference.Detector`; images are resized by ``scale`` (1.0: original size,
    the paper's single-scale protocol), and those whose longer side then exceeds ``max_size``
    are shrunk to it."""

    every: int = 5
    score_threshold: float = 0.05
    max_size: int | None = None
    scale: float = 1.0


@dataclass
class RunConfig:
    """``max_minutes``: wall-clock budget; on expiry the run checkpoints, evaluates and stops.
    ``amp``: mixed precision, used on CUDA only. ``channels_last``: NHWC memory format for the
    model and its inputs (2-3x faster depthwise convolutions on CPUs; D0 trains 1.3x faster).
    ``threads``: torch CPU threads (0: the cores shared out among the local processes).
    ``log_every``: iterations between metrics.csv rows;
    ``checkpoint_every``: epochs between checkpoints (one is also written on stopping)."""

    seed: int = 0
    max_minutes: float | None = None
    amp: bool = True
    channels_last: bool = True
    device: str = "auto"
    threads: int = 0
    log_every: int = 10
    checkpoint_every: int = 1


@dataclass
class TrainConfig:
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    run: RunConfig = field(default_factory=RunConfig)

    def __post_init__(self) -> None:
        problems = [f"{key} must be {rule}, got {value!r}" for key, (ok, rule) in RANGES.items()
                    if (value := field_value(self, key)) is not None
                    and not (math.isfinite(value) and ok(value))]
        if problems:
            raise ConfigError("; ".join(problems))

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)


# ----------------------------------------------------------------------------- value ranges
#: A value check and the rule it enforces, in words.
Rule = tuple[Callable[[float], bool], str]


def at_least(low: float) -> Rule:
    return (lambda v: v >= low), f">= {low}"


def above(low: float) -> Rule:
    return (lambda v: v > low), f"> {low}"


def within(low: float, high: float) -> Rule:
    return (lambda v: low <= v <= high), f"in [{low}, {high}]"


#: The ranges :class:`TrainConfig` checks (``None`` values pass; NaN and infinity never do).
RANGES: dict[str, Rule] = {
    "data.size": at_least(32), "data.batch_size": at_least(1), "data.workers": at_least(0),
    "optim.lr": above(0), "optim.momentum": within(0, 1), "optim.weight_decay": at_least(0),
    "optim.grad_clip": at_least(0),
    "schedule.epochs": at_least(1), "schedule.gamma": above(0),
    "schedule.warmup_iters": at_least(0), "schedule.warmup_start_lr": at_least(0),
    "schedule.min_lr_ratio": within(0, 1),
    "eval.every": at_least(0), "eval.score_threshold": within(0, 1),
    "eval.max_size": at_least(1), "eval.scale": above(0),
    "run.max_minutes": at_least(0), "run.threads": at_least(0), "run.log_every": at_least(1),
    "run.checkpoint_every": at_least(1),
}


def field_value(obj: Any, key: str) -> Any:
    """The value of dotted ``key`` (``"optim.lr"``) in nested dataclasses."""
    for part in key.split("."):
        obj = getattr(obj, part)
    return obj


DataclassT = TypeVar("DataclassT")


def replace_fields(obj: DataclassT, changes: Mapping[str, Any], what: str) -> DataclassT:
    """``dataclasses.replace(obj, **changes)``; keys that are no field of ``obj`` are a
    :class:`ConfigError` naming ``what`` and the known keys."""
    known = sorted(f.name for f in dataclasses.fields(obj) if f.init)
    unknown = sorted(set(changes) - set(known))
    if unknown:
        raise ConfigError(f"{what}: unknown key(s) {unknown}; known: {known}")
    return dataclasses.replace(obj, **changes)


# ----------------------------------------------------------------------------- resume
def changed_settings(saved: Mapping[str, Any], current: Mapping[str, Any], prefix: str = ""
                     ) -> dict[str, tuple[Any, Any]]:
    """``{dotted key: (saved value, current value)}`` for every leaf that differs between two
    nested mappings (a key absent on one side has the value None there)."""
    changes: dict[str, tuple[Any, Any]] = {}
    for key in [*current, *(k for k in saved if k not in current)]:
        old, new = saved.get(key), current.get(key)
        if isinstance(old, Mapping) and isinstance(new, Mapping):
            changes |= changed_settings(old, new, f"{prefix}{key}.")
        elif old != new:
            changes[f"{prefix}{key}"] = (old, new)
    return changes


def is_under(key: str, prefixes: Collection[str]) -> bool:
    """Whether dotted ``key`` is one of ``prefixes`` or inside one (``eval.every`` in ``eval``)."""
    return any(key == p or key.startswith(f"{p}.") for p in prefixes)


def refuse_changes(saved: Mapping[str, Any], current: Mapping[str, Any], where: str,
                   free: Collection[str] = (), allowed: Collection[str] = (), hint: str = ""
                   ) -> None:
    """Check that a run resumed from ``where`` keeps its ``saved`` settings: keys under ``free``
    (no effect on the result) and ``allowed`` (accepted by the user) may differ, any other
    change is a :class:`ConfigError` naming the keys, old and new values, and ``hint``."""
    refused = {k: v for k, v in changed_settings(saved, current).items()
               if not is_under(k, free) and not is_under(k, allowed)}
    if refused:
        diff = "; ".join(f"{k}: {old!r} -> {new!r}" for k, (old, new) in refused.items())
        raise ConfigError(f"{where}: cannot resume with changed settings ({diff}); a resumed run "
                          f"keeps the settings it started with{hint}")


# ----------------------------------------------------------------------------- typed conversion
def _convert(value: Any, tp: Any, where: str) -> Any:
    """``value`` (plain YAML data) as type ``tp``; ``ConfigError`` naming ``where`` otherwise."""
    origin = typing.get_origin(tp)
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping, got {value!r}")
        return dataclass_from_dict(tp, value, where)
    if origin in (typing.Union, types.UnionType):
        options = typing.get_args(tp)
        if value is None and type(None) in options:
            return None
        errors = []
        for option in (o for o in options if o is not type(None)):
            try:
                return _convert(value, option, where)
            except ConfigError as exc:
                errors.append(str(exc))
        raise ConfigError(errors[0] if len(errors) == 1 else f"{where}: {value!r} fits none of "
                          f"{[getattr(o, '__name__', str(o)) for o in options]}")
    if origin is Literal:
        if value not in typing.get_args(tp):
            raise ConfigError(f"{where}: {value!r} is not one of {list(typing.get_args(tp))}")
        return value
    if origin is list:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        (item,) = typing.get_args(tp)
        return [_convert(v, item, f"{where}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping, got {value!r}")
        return dict(value)
    if tp is float and isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if tp in (int, str, bool) and type(value) is tp:
        return value
    raise ConfigError(f"{where}: expected {tp.__name__}, got {value!r}")


def dataclass_from_dict(cls: type, data: dict[str, Any], where: str) -> Any:
    """Build dataclass ``cls`` from ``data`` with type checks; errors name the dotted key ``where``."""
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {unknown}; known: {sorted(names)}")
    missing = [f.name for f in dataclasses.fields(cls) if f.name not in data
               and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING]
    if missing:
        raise ConfigError(f"{where}: missing required key(s) {missing}")
    return cls(**{k: _convert(v, hints[k], f"{where}.{k}".lstrip(".")) for k, v in data.items()})


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Set dotted keys from ``key=value`` strings (values parsed as YAML) in nested ``data``."""
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"override {item!r}: expected key=value, e.g. optim.lr=0.01")
        *parents, leaf = key.strip().split(".")
        node = data
        for part in parents:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"override {item!r}: {part!r} is not a section")
        node[leaf] = load_yaml(raw, f"override {item!r}")
    return data


def config_from_dict(data: dict[str, Any], source: str = "config") -> TrainConfig:
    """A validated :class:`TrainConfig`; errors name ``source`` and the dotted key."""
    try:
        return dataclass_from_dict(TrainConfig, data, "")
    except ConfigError as exc:
        raise ConfigError(f"{source}: {exc}") from None


def merge(base: dict[str, Any], update: dict[str, Any]) -> dict[str, Any]:
    """``update`` over ``base``, section by section; within a section, values are replaced
    whole (a data source given in a child config is not mixed with the base's)."""
    return {**base, **{section: {**base[section], **value}
                       if isinstance(value, dict) and isinstance(base.get(section), dict)
                       else value for section, value in update.items()}}


def read_config_file(path: Path, _seen: tuple[Path, ...] = ()) -> dict[str, Any]:
    """A YAML config as plain data, its ``_base_`` chain resolved."""
    if not path.is_file():
        raise FileNotFoundError(f"config not found: {path}")
    if path.resolve() in _seen:
        raise ConfigError(f"{path}: _base_ chain loops back to itself")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not a text file (byte {exc.start} is no UTF-8)") from None
    data = load_yaml(text, str(path)) or {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the top level must be a mapping of sections")
    base = data.pop("_base_", None)
    if base is None:
        return data
    return merge(read_config_file(path.parent / base, (*_seen, path.resolve())), data)


def load_config(path: str | Path | None = None, overrides: list[str] = ()) -> TrainConfig:
    """Read a YAML config (or start from the defaults) and apply ``key=value`` overrides.

    Relative data paths stay relative to the working directory (the project root for the
    shipped configs).
    """
    data = {} if path is None else read_config_file(Path(path))
    source = "defaults" if path is None else str(path)
    return config_from_dict(apply_overrides(data, list(overrides)), source)
