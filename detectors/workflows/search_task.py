"""The face-detection search task (Sec. 3.2, 4.1, 4.2): AutoFEM searched inside a light DSFD.

The paper searches AutoFEM-FPN and AutoFEM-CPM "on the basis of light DSFD respectively" (a
ResNet50 dual-shot detector with 2-layer heads, 256 channels, 6 nodes per CPM, 1/4 of the
channels per edge). :class:`FaceSearchSupernet` is that detector
(:class:`~detectors.models.asfd.DualShotDetector`: lateral pyramid = first shot, feature module =
second shot, one head network for both, DRMC loss, Eq. 8) whose feature module is a supernet:

* ``target="fpn"``: the AutoFEM-FPN supernet (Eq. 2) alone;
* ``target="cpm"``: a fixed FPN (``base_fpn``, DSFD's FEM-FPN by default: the light DSFD the
  paper starts from) followed by one AutoFEM-CPM supernet per level (Eq. 3 or Eq. 4-5).

Defaults are scaled to a laptop CPU (MobileNet0.25, 32 channels, 256 px, 1-layer heads);
``configs/search_*.yaml`` document the paper's values next to ours.

Data (the paper only says "based on WIDER FACE"): the images of a
:class:`~detectors.data.sources.DataSource` are split once more with
:func:`detectors.data.sources.split_images` (every ``1/arch_fraction``-th image of each event,
sorted by name): the *weight* images train the supernet weights (DSFD augmentation, per-sample
generators seeded by ``(seed, epoch, index)``), the *architecture* images drive the arch steps
and the validation loss (letterboxed, no augmentation). Batches are a deterministic function of
``(seed, epoch)``; in a multi-process search each rank reads its own shard of equal length
(:class:`torch.utils.data.DistributedSampler`), so every rank runs the same number of steps.
"""
from __future__ import annotations

import dataclasses
import inspect
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
from torch import Tensor

from detectors.data.loader import (
    DetectionBatch, FaceDetectionDataset, build_dataloader, prepare_batch, set_epoch,
)
from detectors.data.sources import DataSource, load_samples, split_images
from detectors.data.wider import FaceSample
from detectors.models.anchors import AnchorGenerator
from detectors.models.asfd import ASFDConfig, DualShotDetector, FeatureCascade, head_map_count
from detectors.models.backbones import build_backbone, load_pretrained
from detectors.models.heads import DetectionHeads
from detectors.models.losses import DRMCLoss
from genotypes.schema import ConcatMode, Genotype, GenotypeMeta
from nas_search.runtime import (
    ConfigError, apply_overrides, dataclass_from_dict, read_config_file, world_size,
)
from nas_search.search import SearchConfig
from nas_search.strategies import get_strategy
from nas_search.supernet import Supernet
from search_spaces.baselines import build_feature_module
from search_spaces.cpm import AutoFEMCPMSearch
from search_spaces.fpn import AutoFEMFPNSearch
from search_spaces.schemas import FPN_KEY, FPNGate, FPNPathway

SearchTarget = Literal["fpn", "cpm"]


@dataclass
class FaceSearchConfig:
    """The searched detector and its data; the search schedule is ``nas_search.SearchConfig``.

    ``base_fpn`` (``target="cpm"`` only) is a registered feature module run before the CPM
    supernets; ``"none"`` searches the CPMs on the lateral pyramid. ``fpn_pathway`` and
    ``fpn_gate`` (``target="fpn"`` only) are what the AutoFEM-FPN paths read and how they are
    gated (:mod:`search_spaces.fpn`; the genotype records both). ``mode`` (``target="cpm"``
    only) is the registered name of the CPM search strategy (:mod:`nas_search.strategies`); the
    FPN is searched by ``pcdarts``.
    ``arch_fraction`` is the share of the images held out for the architecture steps;
    ``max_images`` caps the images read (after the split of ``DataSource``), for quick runs.
    ``loss`` holds keyword arguments of :class:`~detectors.models.losses.DRMCLoss` (``margin``,
    ``lambda1``, ``lambda2``...; its defaults when absent).
    """

    target: SearchTarget = "cpm"
    backbone: str = "mobilenet0.25"
    pretrained: str | None = None
    channels: int = 32
    head_depth: int = 1
    base_fpn: str = "fem_fpn"
    fpn_pathway: FPNPathway = "recursive"
    fpn_gate: FPNGate = "product"
    mode: str = "top1_tree"
    concat: ConcatMode = "cat_leaf"
    n_nodes: int = 6
    k: int = 4
    image_size: int = 256
    batch_size: int = 4
    arch_fraction: float = 0.5
    max_images: int | None = None
    workers: int = 0
    loss: dict[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        problems = []
        try:
            get_strategy(self.mode)
        except KeyError as exc:  # names the registered strategies
            problems.append(f"mode: {exc.args[0]}")
        if self.channels % self.k:
            problems.append(f"channels={self.channels} must be divisible by k={self.k}")
        if self.n_nodes < 1:
            problems.append(f"n_nodes must be >= 1, got {self.n_nodes}")
        if not 0 < self.arch_fraction < 1:
            problems.append(f"arch_fraction must lie in (0, 1), got {self.arch_fraction}")
        unknown = set(self.loss) - set(inspect.signature(DRMCLoss).parameters)
        if unknown:
            problems.append(f"loss: {sorted(unknown)} are not DRMCLoss arguments")
        if self.image_size < 32 or self.batch_size < 1:
            problems.append(f"image_size >= 32 and batch_size >= 1 needed, got "
                            f"{self.image_size}, {self.batch_size}")
        if problems:
            raise ConfigError("FaceSearchConfig: " + "; ".join(problems))


@dataclass
class SearchFile:
    """A ``configs/search_*.yaml`` file: the ``task`` and the ``search`` schedule."""

    task: FaceSearchConfig
    search: SearchConfig

    def to_dict(self) -> dict[str, Any]:
        return {"task": dataclasses.asdict(self.task), "search": self.search.to_dict()}


def search_file_from_dict(data: dict[str, Any], source: str = "search config") -> SearchFile:
    """A :class:`SearchFile` from its ``task`` and ``search`` mappings; errors name ``source``
    and the dotted key."""
    unknown = sorted(set(data) - {"task", "search"})
    if unknown:
        raise ConfigError(f"{source}: unknown section(s) {unknown}; use task.* or search.*")
    return SearchFile(dataclass_from_dict(FaceSearchConfig, data.get("task") or {}, "task", source),
                      dataclass_from_dict(SearchConfig, data.get("search") or {}, "search", source))


#: Sections of the search-then-retrain configs (:mod:`detectors.workflows.pipeline`) that a
#: search skips, so that ``asfd search --config configs/demo.yaml`` searches what the demo searches.
PIPELINE_SECTIONS: frozenset[str] = frozenset({"train", "compare", "demo", "tune", "budgets"})


def load_search_file(path: str | Path | None, overrides: Sequence[str] = ()) -> SearchFile:
    """Read a search YAML (or start from the defaults) and apply ``key=value`` overrides
    (``task.channels=16``, ``search.epochs=3``); :data:`PIPELINE_SECTIONS` are skipped."""
    data: dict[str, Any] = {}
    source = "defaults"
    if path is not None:
        path = Path(path)
        data = read_config_file(path)
        source = str(path)
        data = {k: v for k, v in data.items() if k not in PIPELINE_SECTIONS}
    return search_file_from_dict(apply_overrides(data, list(overrides)), source)


class FaceSearchSupernet(Supernet, DualShotDetector):
    """A dual-shot detector whose feature module holds the architecture parameters."""

    def __init__(self, config: FaceSearchConfig) -> None:
        if config.target == "fpn":
            search_module = AutoFEMFPNSearch(config.channels, k=config.k,
                                             pathway=config.fpn_pathway, gate=config.fpn_gate)
            feature = FeatureCascade(search_module)
        elif config.target == "cpm":
            search_module = AutoFEMCPMSearch(config.channels, config.n_nodes, config.mode,
                                             config.concat, config.k)
            feature = FeatureCascade(build_feature_module(config.base_fpn, config.channels),
                                     search_module)
        else:
            raise ValueError(f"unknown search target {config.target!r}; use 'fpn' or 'cpm'")
        backbone = build_backbone(config.backbone)
        if config.pretrained:
            load_pretrained(backbone, config.pretrained)
        heads = DetectionHeads(config.channels, config.head_depth, norm="batch",
                               n_maps=head_map_count(dual_shot=True, passthrough=0),
                               cls_prior=ASFDConfig.cls_prior)
        super().__init__(backbone, feature, heads, config.channels, AnchorGenerator())
        self.config = config
        self.search_module = search_module

    @torch.no_grad()
    def genotype(self, top_k: int = 2) -> Genotype:
        """The AutoFEM-FPN (``fpn``) or the per-level AutoFEM-CPM cells ``P2..P7`` (``cpm``)."""
        c = self.config
        note = (f"searched in a dual-shot {c.backbone} detector, {c.channels} channels, "
                f"{c.image_size} px" + (f", base FPN {c.base_fpn}" if c.target == "cpm" else ""))
        if c.target == "fpn":
            return Genotype(sections={FPN_KEY: self.search_module.derive()}, meta=GenotypeMeta(
                search_space="autofem_fpn", op_set=self.search_module.op_set,
                mode=self.search_module.strategy.name,
                partial_channels_k=c.k, note=note))
        return Genotype(cells=self.search_module.derive(top_k), meta=GenotypeMeta(
            search_space="autofem_cpm", op_set=self.search_module.op_set, mode=c.mode,
            nodes=c.n_nodes, partial_channels_k=c.k, note=note))


class FaceSearchTask:
    """:class:`nas_search.task.SearchTask` for AutoFEM on a WIDER-format folder."""

    name = "face_detection"

    def __init__(self, config: FaceSearchConfig, data: DataSource, seed: int = 0) -> None:
        self.config, self.data, self.seed = config, data, seed
        samples = load_samples(data)
        weight, arch = split_images(samples, config.arch_fraction)
        if config.max_images is not None:
            n_arch = max(1, round(config.max_images * config.arch_fraction))
            weight, arch = weight[:config.max_images - n_arch], arch[:n_arch]
        if not weight or not arch:
            raise ValueError(f"{data.dir}: {len(samples)} image(s) cannot be split into weight and "
                             f"architecture images (arch_fraction={config.arch_fraction}); "
                             "use a folder with at least 2 images per event")
        self.weight_samples: list[FaceSample] = list(weight)
        self.arch_samples: list[FaceSample] = list(arch)
        world = world_size()
        distributed = world > 1
        size = config.image_size
        self._train = build_dataloader(
            FaceDetectionDataset(weight, train=True, size=size, seed=seed), config.batch_size,
            config.workers, seed, shuffle=True, distributed=distributed, drop_last=True)
        self._val = build_dataloader(
            FaceDetectionDataset(arch, train=False, size=size, seed=seed), config.batch_size,
            config.workers, seed, shuffle=True, distributed=distributed, drop_last=True)
        if len(self._train) == 0 or len(self._val) == 0:
            raise ValueError(f"{data.dir}: {len(weight)} weight / {len(arch)} architecture images "
                             f"give no full batch of {config.batch_size} per rank ({world} ranks)")
        self.criterion = DRMCLoss(**config.loss)

    @property
    def steps_per_epoch(self) -> int:
        """Search steps per epoch (the engine zips train and val batches once searching)."""
        return len(self._train)

    def build_supernet(self) -> FaceSearchSupernet:
        return FaceSearchSupernet(self.config)

    def train_batches(self, epoch: int) -> Iterable[DetectionBatch]:
        set_epoch(self._train, epoch)
        return self._train

    def val_batches(self, epoch: int) -> Iterable[DetectionBatch]:
        """Architecture batches. The engine zips them with the weight batches (DARTS), so a
        searching epoch has ``min(len(train), len(val))`` steps."""
        set_epoch(self._val, epoch)
        return self._val

    def loss(self, model: FaceSearchSupernet, batch: DetectionBatch) -> Tensor:
        images, boxes = prepare_batch(batch, next(model.parameters()).device)
        return self.criterion(model(images, first_shot=True), boxes).total

    def evaluate(self, model: FaceSearchSupernet) -> dict[str, float]:
        """``val_loss``: the mean DRMC loss (both shots) over the architecture images."""
        set_epoch(self._val, 0)
        losses = [float(self.loss(model, batch)) for batch in self._val]
        return {"val_loss": sum(losses) / len(losses)}

    def describe(self) -> dict[str, Any]:
        return {
            "dataset": Path(self.data.dir).name,
            "path": str(Path(self.data.dir).resolve()),
            "subset": self.data.subset,
            "weight_images": len(self.weight_samples),
            "arch_images": len(self.arch_samples),
            "faces": int(sum(len(s.training_boxes()) for s in
                             self.weight_samples + self.arch_samples)),
        }

