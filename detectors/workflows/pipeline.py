"""The end-to-end steps behind ``asfd search / derive / compare / tune / demo``.

search (AutoFEM supernet, :mod:`detectors.workflows.search_task`) -> genotype -> derive (a
fixed ASFD network, :func:`detectors.models.asfd.build_asfd`) -> retrain
(:func:`detectors.engine.trainer.train`) -> evaluate (WIDER Easy/Medium/Hard AP). Each step is a
function of dataclass configs and paths so that the CLI, the comparison, the tuner and the demo
compose the same code.

A search with ``nproc > 1`` runs in local gloo workers
(:func:`detectors.engine.distributed.spawn_gloo`); the engine keeps the ranks identical
(broadcast initial state, averaged gradients, one Gumbel stream).
"""
from __future__ import annotations

import copy
import dataclasses
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Generic, TypeVar

import yaml

from detectors.data.sources import DataSource
from detectors.data.synthetic import ANNOTATION_FILE, make_synthetic
from detectors.engine.checkpoint import STATE_FILE
from detectors.engine.config import TrainConfig, config_from_dict
from detectors.engine.distributed import spawn_gloo
from detectors.engine.reporting import TrainEvent
from detectors.engine.trainer import TrainResult, train
from detectors.models.asfd import (
    ASFD, GENOTYPE_FEATURE_MODULES, Variant, asfd_config, build_asfd,
)
from detectors.workflows.search_task import FaceSearchTask, SearchFile, search_file_from_dict
from genotypes.io import load_genotype
from genotypes.schema import Genotype
from genotypes.validate import NO_LIMITS
from nas_search.registry import list_ops
from nas_search.runtime import (
    ConfigError, DistContext, apply_overrides, dataclass_from_dict, load_yaml, rank,
    read_config_file, refuse_changes, resolve_device,
)
from nas_search.search import GENOTYPE_FILE, HISTORY_FILE, ProgressFn, search
from nas_search.supernet import Supernet
from search_spaces.schemas import fpn_of

SEARCH_CONFIG_FILE = "search_config.yaml"
#: Settings a resumed search may change: they do not change what is computed.
SEARCH_RESUME_FREE: tuple[str, ...] = ("search.device", "search.log_every", "task.workers")
GENOTYPE_SVG = "genotype.svg"
HISTORY_PNG = "history.png"


# ----------------------------------------------------------------------------- data
def synthetic_dataset(out_dir: str | Path, n_images: int = 32, size: tuple[int, int] = (320, 240),
                      seed: int = 0) -> Path:
    """A SMOKE-TEST folder of synthetic faces (:mod:`detectors.data.synthetic`) at ``out_dir``;
    an existing one is reused (a resumed run sees the same images)."""
    out_dir = Path(out_dir)
    if not (out_dir / ANNOTATION_FILE).is_file():
        make_synthetic(out_dir, n_images, seed=seed, size=size)
    return out_dir


# ----------------------------------------------------------------------------- search
@dataclass
class SearchArtifacts:
    """What a search leaves in its run folder (``svg`` is None without Graphviz' ``dot`` and,
    like ``history_png``, when not rendered), and the searched supernet when it ran in this
    process."""

    run_dir: Path
    genotype: Genotype
    genotype_path: Path
    history_path: Path
    svg: Path | None
    history_png: Path | None
    supernet: Supernet | None = None


def search_steps(spec: SearchFile, data: DataSource) -> int:
    """Steps of a single-process search of ``spec`` on ``data`` (for progress bars)."""
    return FaceSearchTask(spec.task, data, spec.search.seed).steps_per_epoch * spec.search.epochs


def _search_in_process(spec: SearchFile, data: DataSource, run_dir: Path, resume: bool,
                       progress: ProgressFn | None = None) -> Supernet:
    task = FaceSearchTask(spec.task, data, seed=spec.search.seed)
    device = resolve_device(spec.search.device, DistContext.current())
    config = dataclasses.replace(spec.search, device=str(device))
    return search(task, config, run_dir, resume=resume, progress=progress).model


def run_search(spec: SearchFile, data: DataSource, run_dir: str | Path, resume: bool = False,
               progress: ProgressFn | None = None, nproc: int = 1, render: bool = True
               ) -> SearchArtifacts | None:
    """Search, then (``render``) write ``genotype.svg`` and ``history.png`` beside the engine's
    files; ``resume`` continues the checkpoint of ``run_dir`` with unchanged settings
    (:func:`check_search_resume`).

    ``nproc > 1`` spawns gloo workers (``progress`` is then not called). Under ``torchrun`` every
    rank calls this; rank 0 alone writes and returns the artifacts, the others return None.
    """
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    if resume:
        check_search_resume(spec, data, run_dir)
    if rank() == 0:
        (run_dir / SEARCH_CONFIG_FILE).write_text(search_settings(spec, data))
    supernet = None
    if nproc > 1:
        spawn_gloo(_search_in_process, nproc, spec, data, run_dir, resume)
    else:
        supernet = _search_in_process(spec, data, run_dir, resume, progress)
    if rank() != 0:
        return None
    return dataclasses.replace(render_search(run_dir, render), supernet=supernet)


def search_settings(spec: SearchFile, data: DataSource) -> str:
    """``search_config.yaml``: the data, task and schedule of a search."""
    return yaml.safe_dump({"data": dataclasses.asdict(data), **spec.to_dict()}, sort_keys=False)


def check_search_resume(spec: SearchFile, data: DataSource, run_dir: str | Path) -> None:
    """Refuse to resume the search in ``run_dir`` with other settings (data folder, task,
    schedule) than its ``search_config.yaml`` records, but for :data:`SEARCH_RESUME_FREE`: a
    :class:`~detectors.engine.config.ConfigError` naming the changed keys."""
    path = Path(run_dir) / SEARCH_CONFIG_FILE
    if path.is_file():
        refuse_changes(load_yaml(path.read_text(encoding="utf-8"), str(path)),
                       load_yaml(search_settings(spec, data), "the new settings"), str(path),
                       SEARCH_RESUME_FREE, hint="; search into another folder for new settings")


def render_search(run_dir: str | Path, render: bool = True) -> SearchArtifacts:
    """A finished search's artifacts; with ``render``, first draw its genotype (svg) and the
    history of its structural choices (png): the parent probabilities ``gamma`` of the CPM
    nodes, or the path fusion ``beta`` of the FPN levels (``asfd plot-history`` draws any
    other parameter group)."""
    from visualize.history import load_history, plot_history

    run_dir = Path(run_dir)
    genotype = load_genotype(run_dir / GENOTYPE_FILE, known_ops=list_ops(), limits=NO_LIMITS)
    svg = png = None
    if render:
        try:
            from visualize.render import render_genotype

            svg = render_genotype(genotype, run_dir / GENOTYPE_SVG, name=str(run_dir))
        except (ImportError, RuntimeError) as exc:  # graphviz package or `dot` missing
            warnings.warn(f"genotype not rendered: {exc}", stacklevel=2)
        png = plot_history(load_history(run_dir), run_dir / HISTORY_PNG,
                           params="gamma" if genotype.cells else "beta")
    return SearchArtifacts(run_dir, genotype, run_dir / GENOTYPE_FILE, run_dir / HISTORY_FILE,
                           svg, png)


# ----------------------------------------------------------------------------- derive
def resolve_search_output(source: str | Path) -> Path | str:
    """A run folder's ``genotype.yaml``, else ``source`` itself (a genotype file or name)."""
    path = Path(source)
    return path / GENOTYPE_FILE if path.is_dir() else source


def feature_modules_for(variant: Variant, genotype: Genotype) -> tuple[str, ...]:
    """The variant's AutoFEM cascade restricted to the parts ``genotype`` has.

    A search yields one part (``fpn`` or ``cells``); the variant keeps the searched part alone,
    e.g. D3 of a CPM search gets AutoFEM-CPM, D5 two of them.
    """
    has = {"autofem_fpn": fpn_of(genotype) is not None, "autofem_cpm": bool(genotype.cells)}
    return tuple(m for m in asfd_config(variant).feature_modules
                 if m not in GENOTYPE_FEATURE_MODULES or has[m])


def feature_overrides(variant: Variant, genotype: Genotype) -> dict[str, tuple[str, ...]]:
    """:class:`~detectors.models.asfd.ASFDConfig` fields that build ``variant`` from ``genotype``:
    none when the variant's own cascade applies, else :func:`feature_modules_for` (on the
    variant's own levels)."""
    modules = feature_modules_for(variant, genotype)
    if modules == asfd_config(variant).feature_modules:
        return {}
    return {"feature_modules": modules}


def derive_detector(genotype: Genotype | str | Path, variant: Variant = "D0",
                    **overrides: Any) -> ASFD:
    """The fixed, untrained ASFD-``variant`` network of a searched genotype (Sec. 3.4)."""
    if not isinstance(genotype, Genotype):
        genotype = load_genotype(resolve_search_output(genotype), known_ops=list_ops(),
                                 limits=NO_LIMITS)
    for key, value in feature_overrides(variant, genotype).items():
        overrides.setdefault(key, value)
    return build_asfd(variant, genotype, **overrides)


def detector_options(variant: Variant, genotype: Genotype) -> dict[str, Any]:
    """``ModelConfig.options`` that build ``variant`` from ``genotype`` (:func:`feature_overrides`)."""
    return {key: list(value) for key, value in feature_overrides(variant, genotype).items()}


# ----------------------------------------------------------------------------- configs
SettingsT = TypeVar("SettingsT")


@dataclass
class PipelineConfig(Generic[SettingsT]):
    """A search-then-retrain config file: the search file's ``task`` and ``search`` sections,
    ``train`` (a :class:`detectors.engine.config.TrainConfig` mapping whose ``model`` and
    ``data`` the pipeline fills) and one command-specific section (``settings``)."""

    search: SearchFile
    train: dict[str, Any]
    settings: SettingsT


def load_pipeline_config(path: str | Path | None, settings_type: type[SettingsT], section: str,
                         budget: str | None = None, overrides: Sequence[str] = ()
                         ) -> PipelineConfig[SettingsT]:
    """Read the YAML, apply its ``budgets[budget]`` list of ``key=value``, then ``overrides``;
    errors name the file and the dotted key."""
    source = str(path) if path else "defaults"
    data: dict[str, Any] = {}
    if path is not None:
        data = read_config_file(Path(path))
    budgets = data.pop("budgets", None) or {}
    if budget is not None:
        if budget not in budgets:
            raise ConfigError(f"{source}: no budget {budget!r}; defined: {sorted(budgets)}")
        data = apply_overrides(data, list(budgets[budget]))
    data = apply_overrides(data, list(overrides))
    unknown = sorted(set(data) - {"task", "search", "train", section})
    if unknown:
        raise ConfigError(f"{source}: unknown section(s) {unknown}; expected task, search, "
                          f"train, {section}, budgets")
    search_part = search_file_from_dict({k: data[k] for k in ("task", "search") if k in data},
                                        source)
    train = data.get("train") or {}
    config_from_dict(copy.deepcopy(train), f"{source}: train")  # validate early
    settings = dataclass_from_dict(settings_type, data.get(section) or {}, section, source)
    return PipelineConfig(search_part, train, settings)


# ----------------------------------------------------------------------------- retrain
def held_out_split(data_dir: str | Path, holdout_fraction: float) -> tuple[DataSource, DataSource]:
    """``(train, held-out)`` sources of one folder (:func:`detectors.data.sources.split_images`)."""
    return (DataSource(str(data_dir), subset="train", val_fraction=holdout_fraction),
            DataSource(str(data_dir), subset="val", val_fraction=holdout_fraction))


def with_genotype(config: TrainConfig, genotype: str | Path, variant: Variant) -> TrainConfig:
    """``config`` set to train ASFD-``variant`` of ``genotype`` (a file or a shipped name)."""
    loaded = load_genotype(genotype, known_ops=list_ops(), limits=NO_LIMITS)
    options = {**config.model.options, **detector_options(variant, loaded)}
    model = dataclasses.replace(config.model, name=variant, genotype=str(genotype),
                                options=options)
    return dataclasses.replace(config, model=model)


def retrain_config(train: dict[str, Any], genotype: str | Path, variant: Variant,
                   data_dir: str | Path, holdout_fraction: float) -> TrainConfig:
    """``train``'s recipe for ASFD-``variant`` of ``genotype``, trained on the ``train`` part of
    ``data_dir`` and evaluated on its held-out part (:func:`held_out_split`)."""
    config = with_genotype(config_from_dict(copy.deepcopy(train), "train"), genotype, variant)
    fit, held_out = held_out_split(data_dir, holdout_fraction)
    return dataclasses.replace(config, data=dataclasses.replace(config.data, train=[fit],
                                                                val=held_out))


def retrain(config: TrainConfig, out_dir: str | Path,
            callback: Callable[[TrainEvent], None] | None = None) -> TrainResult:
    """Train (or, when ``out_dir`` holds an unfinished run, resume) and evaluate on
    ``config.data.val``; the AP is in ``result.progress.metrics``."""
    return train(config, out_dir, resume=(Path(out_dir) / STATE_FILE).is_file(),
                 callback=callback)
