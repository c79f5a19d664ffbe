"""The dual-shot detector (Sec. 3.1, Fig. 2), the ASFD D0-D6 family (Sec. 3.4, Table 1) and
the model files of every detector.

Pipeline: backbone -> ``[C2..C5]`` -> :class:`~detectors.models.backbones.ExtraLevels`
``[C6, C7]`` -> lateral 1x1 conv + BN + ReLU to ``W`` channels = the *first-shot* pyramid; a feature module
(AutoFEM: AutoFEM-FPN then AutoFEM-CPM, from a genotype) maps it to the *second-shot* pyramid;
the same heads run on both shots, the first with anchors half the size (DSFD's progressive
anchors). Inference uses the second shot only. The first shot covers only the levels the
feature module enhances (:attr:`ASFDConfig.enhanced_levels`): on a passed-through level both
shots would give one prediction contradictory targets.

Compound scaling (Eq. 9): ``W = 64 * theta`` for AutoFEM and heads; the depths follow Table 1,
which Eq. 9 as printed contradicts. Depth 0.5 is :data:`HALF_DEPTH`: both AutoFEM halves on
P3-P7, with Table 1's one head layer read as the prediction conv (the one reading with both
halves on every enhanced level that fits Table 5 for D0). The other readings measured
(:data:`CPM_HALF_DEPTH`, D0-D2's earlier build; :data:`TABLE5_HALF_DEPTH`;
:data:`NESTED_HALF_DEPTH`) are ``model.options``. P2 reaches the second shot through the
parameter-free top-down path of :meth:`DualShotDetector.passthrough_levels`. The calibration
against Table 5 (:attr:`ScalingRow.fpn_fuse` per row, the heads of D0-D2): README, "The ASFD
family", and ``bench/table5.py``.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Literal, Mapping, Sequence

import torch
from torch import Tensor, nn

import search_spaces.cpm  # noqa: F401  (registers autofem_cpm)
from detectors.models.anchors import AnchorGenerator, Shot
from detectors.models.backbones import Backbone, ExtraLevels, build_backbone
from detectors.models.heads import DetectionHeads, DetectorOutput, HeadConv, HeadNorm, ShotOutput
from genotypes.io import genotype_from_dict, genotype_to_dict, load_genotype
from genotypes.schema import Genotype
from genotypes.validate import NO_LIMITS
from nas_search.registry import Registry, list_ops
from nas_search.runtime import (
    dataclass_from_dict, load_checkpoint, replace_fields, save_checkpoint,
)
from search_spaces.baselines import build_feature_module
from search_spaces.fpn import FuseKind  # (and registers autofem_fpn)
from search_spaces.ops import ConvBNAct, upsample_to
from search_spaces.schemas import LEVELS

#: Feature modules built from a genotype (they receive ``genotype=``); the others only need
#: ``channels``.
GENOTYPE_FEATURE_MODULES: frozenset[str] = frozenset({"autofem_fpn", "autofem_cpm"})


@dataclass(frozen=True)
class ScalingRow:
    """One row of Table 1: backbone, theta and the AutoFEM / head depths; ``fpn_fuse`` is the
    kind of AutoFEM-FPN's ``F_c``, calibrated per row against Table 5 (README, "The ASFD
    family"). ``head_depth`` layers are built as a tower before the prediction conv, but in the
    rows of depth 0.5, which build :data:`HALF_DEPTH`'s heads."""

    backbone: str
    theta: int
    fem_depth: float
    head_depth: int
    fpn_fuse: FuseKind = "separable"

    @property
    def width(self) -> int:
        """Eq. 9: ``W_autofem = W_head = 64 * theta``."""
        return 64 * self.theta


#: Table 1, a registered row per family member: the one list of D0..D6.
ASFD_FAMILY: Registry[ScalingRow] = Registry("ASFD variant")
ASFD_FAMILY.add("D0", ScalingRow("mobilenet0.25", 1, 0.5, 1))
ASFD_FAMILY.add("D1", ScalingRow("mobilenet1.0", 1, 0.5, 1))
ASFD_FAMILY.add("D2", ScalingRow("resnet18", 2, 0.5, 1))
ASFD_FAMILY.add("D3", ScalingRow("resnet34", 3, 1, 2, fpn_fuse="dense"))
ASFD_FAMILY.add("D4", ScalingRow("resnet50", 4, 1, 2, fpn_fuse="dense"))
ASFD_FAMILY.add("D5", ScalingRow("resnet101", 5, 2, 4))
ASFD_FAMILY.add("D6", ScalingRow("resnet152", 6, 2, 4))
#: An ASFD family member's name: a key of :data:`ASFD_FAMILY`.
Variant = Literal[tuple(ASFD_FAMILY)]


@dataclass(frozen=True)
class PaperFigures:
    """Table 5: parameters (M), multiply-adds at 640x480 (B), GPU latency (ms)."""

    params_m: float
    macs_b: float
    latency_ms: float


#: Table 5's figures, row by row of :data:`ASFD_FAMILY`.
PAPER_TABLE5: dict[str, PaperFigures] = dict(zip(ASFD_FAMILY, (
    PaperFigures(0.62, 0.73, 8.9),
    PaperFigures(3.90, 4.27, 9.2),
    PaperFigures(13.56, 20.48, 12.4),
    PaperFigures(26.56, 46.32, 23.1),
    PaperFigures(36.76, 70.45, 28.7),
    PaperFigures(67.73, 147.40, 32.8),
    PaperFigures(86.10, 183.11, 37.7),
), strict=True))


@dataclass(frozen=True)
class HalfDepthReading:
    """What an AutoFEM of depth 0.5 (D0-D2, Table 1) builds: feature ``modules`` on ``levels``,
    or each on its ``module_levels`` set (:attr:`ASFDConfig.module_levels`), and heads of
    ``head_depth`` tower layers (:attr:`ASFDConfig.head_depth`) before the prediction conv."""

    modules: tuple[str, ...]
    levels: tuple[str, ...]
    head_depth: int
    module_levels: tuple[tuple[str, ...], ...] = ()

    def options(self) -> dict[str, Any]:
        """The ``model.options`` that select this reading."""
        options: dict[str, Any] = {"feature_modules": list(self.modules),
                                   "enhanced_levels": list(self.levels),
                                   "head_depth": self.head_depth}
        if self.module_levels:
            options["module_levels"] = [list(levels) for levels in self.module_levels]
        return options


#: Depth 0.5 as D0-D2 build it: both halves on P3-P7, and Table 1's one head layer read as the
#: prediction conv (no tower). Within 10% of Table 5 for D0 and D1; in 40 CPU minutes with crops
#: down to 0.08 it leads the baseline at the sample's own scale; at 2.46x it leads on Hard and
#: trails on Easy and Medium by about 0.01 (README, "Detectors that learn").
HALF_DEPTH = HalfDepthReading(("autofem_fpn", "autofem_cpm"), LEVELS[1:], head_depth=0)
#: AutoFEM-CPM alone on P3-P7 with a one-layer head tower: D0-D2's build before HALF_DEPTH
#: (D0 at 1.21 of Table 5's MACs); ``model.options`` select it.
CPM_HALF_DEPTH = HalfDepthReading(("autofem_cpm",), LEVELS[1:], head_depth=1)
#: Both halves on P4-P7: within 10% of Table 5 for D0 and D1, but in 40 CPU minutes it learns
#: no small faces (README, "The ASFD family"); ``model.options`` select it.
TABLE5_HALF_DEPTH = HalfDepthReading(("autofem_fpn", "autofem_cpm"), LEVELS[2:], head_depth=1)
#: Both halves, the FPN on P3-P7 and the CPM on P4-P7: within 10% of Table 5 for D0 and D1,
#: with a learned module on P3 (which TABLE5_HALF_DEPTH lacks); ``model.options`` select it.
NESTED_HALF_DEPTH = HalfDepthReading(("autofem_fpn", "autofem_cpm"), LEVELS[1:], head_depth=1,
                                     module_levels=(LEVELS[1:], LEVELS[2:]))


def autofem_modules(depth: float) -> tuple[str, ...]:
    """The feature-module cascade of an AutoFEM of ``depth`` layers (see the module docstring).

    ``0.5 -> HALF_DEPTH.modules`` (on ``HALF_DEPTH.levels``, the same cascade as depth 1);
    ``n -> (autofem_fpn, autofem_cpm) * n`` for a positive integer n.
    """
    if depth == 0.5:
        return HALF_DEPTH.modules
    if depth >= 1 and float(depth).is_integer():
        return ("autofem_fpn", "autofem_cpm") * int(depth)
    raise ValueError(f"AutoFEM depth must be 0.5 or a positive integer, got {depth}")


def anchors_from_dict(data: dict[str, Any]) -> AnchorGenerator:
    """An :class:`AnchorGenerator` from a mapping (lists become tuples); an unknown key or a
    wrong type is a :class:`~nas_search.runtime.ConfigError` naming it."""
    return dataclass_from_dict(AnchorGenerator, data, "anchors")


@dataclass(frozen=True)
class ASFDConfig:
    """Everything needed to rebuild a detector of the dual-shot framework (with its genotype).

    ``feature_modules`` are registered feature-module names cascaded in order (AutoFEM:
    ``autofem_fpn``, ``autofem_cpm``; DSFD-style baselines: ``fem_fpn``, ``fem_cpm``...; ``none``
    for no enhancement). They transform the ``enhanced_levels``, the coarsest levels of the
    pyramid; the finer ones reach the second shot unchanged. ``dual_shot=False`` gives a
    single-shot (RetinaFace-style) detector. ``head_norm`` and ``cls_prior`` are the heads'
    per-map BatchNorm and prior-probability initialisation (:mod:`detectors.models.heads`);
    ``passthrough_topdown`` feeds the levels outside ``enhanced_levels`` a top-down path
    (:meth:`DualShotDetector.passthrough_levels`); ``fpn_fuse`` is the kind of ``F_c`` of an
    ``autofem_fpn`` module (:data:`search_spaces.fpn.FUSE_BLOCKS`). ``module_levels``, one
    level set per feature module (each the coarsest of ``enhanced_levels``), narrows a module
    to its set: the finer enhanced levels pass it unchanged (e.g. the FPN on P3-P7, the CPM on
    P4-P7); empty puts every module on ``enhanced_levels``.
    """

    backbone: str = "mobilenet0.25"
    width: int = 64
    feature_modules: tuple[str, ...] = ("autofem_cpm",)
    enhanced_levels: tuple[str, ...] = LEVELS
    head_depth: int = 1
    fpn_fuse: FuseKind = "separable"
    head_conv: HeadConv = "separable"
    head_norm: HeadNorm = "batch"
    cls_prior: float | None = 0.001
    passthrough_topdown: bool = True
    dual_shot: bool = True
    anchors: AnchorGenerator = field(default_factory=lambda: AnchorGenerator(aspect_ratio=1.5))
    module_levels: tuple[tuple[str, ...], ...] = ()
    name: str = ""

    def __post_init__(self) -> None:
        for key in ("feature_modules", "enhanced_levels"):  # YAML gives lists
            object.__setattr__(self, key, tuple(getattr(self, key)))
        object.__setattr__(self, "module_levels", tuple(tuple(s) for s in self.module_levels))
        if isinstance(self.anchors, dict):  # YAML / model.options give a mapping
            object.__setattr__(self, "anchors", anchors_from_dict(self.anchors))
        if not is_coarsest(self.enhanced_levels, LEVELS):
            raise ValueError(f"enhanced_levels must be the coarsest levels of {LEVELS} (e.g. "
                             f"{HALF_DEPTH.levels}), got {self.enhanced_levels}")
        if self.module_levels and len(self.module_levels) != len(self.feature_modules):
            raise ValueError(f"module_levels gives {len(self.module_levels)} level sets for "
                             f"{len(self.feature_modules)} feature modules")
        for name, levels in zip(self.feature_modules, self.module_levels):
            if not is_coarsest(levels, self.enhanced_levels):
                raise ValueError(f"module_levels of {name!r} must be the coarsest levels of "
                                 f"enhanced_levels {self.enhanced_levels}, got {levels}")

    @property
    def passthrough(self) -> int:
        """How many of the finest levels skip the feature modules."""
        return len(LEVELS) - len(self.enhanced_levels)

    @property
    def head_maps(self) -> int:
        """The maps the shared heads run on: six second-shot levels, then the first shot's."""
        return head_map_count(self.dual_shot, self.passthrough)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str = "config") -> ASFDConfig:
        """Inverse of :meth:`to_dict`; unknown keys and wrong types are a
        :class:`~nas_search.runtime.ConfigError` naming ``source`` and the key."""
        return dataclass_from_dict(cls, data, source=source)


def asfd_config(variant: Variant, **overrides) -> ASFDConfig:
    """Table 1's configuration of ``variant``, with field ``overrides`` (unknown ones are a
    :class:`~nas_search.runtime.ConfigError`)."""
    row = ASFD_FAMILY[variant]
    base = ASFDConfig(backbone=row.backbone, width=row.width,
                      feature_modules=autofem_modules(row.fem_depth), head_depth=row.head_depth,
                      fpn_fuse=row.fpn_fuse, name=f"ASFD-{variant}")
    if row.fem_depth == 0.5:   # the whole reading: modules, levels, heads
        base = replace_fields(base, HALF_DEPTH.options(), "HALF_DEPTH")
    return replace_fields(base, overrides, f"model.options of ASFD-{variant}")


def is_coarsest(levels: Sequence[str], of: Sequence[str]) -> bool:
    """Whether ``levels`` are the last (coarsest) ones of ``of``, one at least."""
    return 0 < len(levels) <= len(of) and tuple(levels) == tuple(of[len(of) - len(levels):])


def head_map_count(dual_shot: bool, passthrough: int) -> int:
    """Maps of a dual-shot detector's heads: every level of the second shot, and the first
    shot's levels (those not passed through) when there is a first shot."""
    return len(LEVELS) + (len(LEVELS) - passthrough if dual_shot else 0)


class FeatureCascade(nn.Sequential):
    """Feature modules applied one after the other (pyramid in, pyramid out). ``skips[i]``
    finest maps pass module ``i`` unchanged (it maps the coarser ones); none by default."""

    def __init__(self, *modules: nn.Module, skips: Sequence[int] = ()) -> None:
        super().__init__(*modules)
        self.skips = tuple(skips) or (0,) * len(modules)
        if len(self.skips) != len(modules):
            raise ValueError(f"{len(self.skips)} skips for {len(modules)} feature modules")

    def forward(self, feats: Sequence[Tensor]) -> list[Tensor]:
        feats = list(feats)
        for module, skip in zip(self, self.skips):
            feats = feats[:skip] + list(module(feats[skip:]))
        return feats


class DualShotDetector(nn.Module):
    """Backbone + lateral pyramid (first shot) -> feature module (second shot) -> shared heads.

    ``feature_module`` is any module mapping the six-map pyramid (``channels`` each) to a pyramid
    of the same shapes: a fixed AutoFEM, a hand-designed baseline, or a search supernet.
    ``dual_shot=False`` never computes the first shot (a single-shot detector). ``passthrough``:
    how many of the finest levels skip the feature module (it maps the coarser ones); the first
    shot skips them (module docstring). They reach the second shot through
    :meth:`passthrough_levels`.
    """

    def __init__(
        self, backbone: Backbone, feature_module: nn.Module, heads: DetectionHeads,
        channels: int, anchors: AnchorGenerator | None = None, dual_shot: bool = True,
        passthrough: int = 0, passthrough_topdown: bool = True,
    ) -> None:
        super().__init__()
        self.backbone = backbone
        self.extra = ExtraLevels(backbone.out_channels[-1], channels, channels)
        self.lateral = nn.ModuleList(ConvBNAct(c, channels, 1) for c in backbone.out_channels)
        self.feature_module = feature_module
        self.heads = heads
        self.anchor_generator = anchors or AnchorGenerator()
        self.dual_shot = dual_shot
        self.channels = channels
        self.passthrough = passthrough
        self.passthrough_topdown = passthrough_topdown
        if heads.per_map and heads.n_maps != head_map_count(dual_shot, passthrough):
            raise ValueError(f"heads have norms for {heads.n_maps} maps; this detector runs "
                             f"them on {head_map_count(dual_shot, passthrough)}")

    def pyramid(self, images: Tensor) -> list[Tensor]:
        """The first-shot pyramid: C2..C5 through the laterals, then C6, C7 (``channels`` each)."""
        feats = self.backbone(images)
        laterals = [conv(f) for conv, f in zip(self.lateral, feats)]
        return laterals + self.extra(feats[-1])

    def first_map(self, shot: Shot, first_level: int) -> int:
        """The heads' map index of level ``first_level`` in ``shot``: second-shot levels are maps
        0-5, the first shot's follow (:func:`head_map_count`)."""
        return first_level if shot == "second" else len(LEVELS) + first_level - self.passthrough

    def shot(self, feats: Sequence[Tensor], shot: Shot, first_level: int = 0) -> ShotOutput:
        """The heads' predictions on ``feats``, the maps of the levels from ``first_level`` on."""
        cls, reg = self.heads(feats, self.first_map(shot, first_level))
        shapes = [tuple(f.shape[-2:]) for f in feats]
        anchors = self.anchor_generator(shapes, shot, device=cls.device, first_level=first_level)
        return ShotOutput(cls, reg, anchors)

    def passthrough_levels(self, laterals: Sequence[Tensor], coarser: Tensor) -> list[Tensor]:
        """The second-shot maps of the passed-through levels (finest first), given their lateral
        maps and the enhanced map of the next coarser level. With ``passthrough_topdown`` each
        is Eq. 2's top-down path with the identity op, ``P_i = C_i x F_up(P_{i+1})`` (DSFD's
        FEM-FPN product, no parameters): a lateral map alone carries only the backbone's small
        receptive field, and on the stride-4 level of D0 that blocked learning (README)."""
        if not self.passthrough_topdown:
            return list(laterals)
        maps = []
        for lateral in reversed(laterals):
            coarser = lateral * upsample_to(coarser, lateral)
            maps.append(coarser)
        return maps[::-1]

    def forward(self, images: Tensor, first_shot: bool | None = None) -> DetectorOutput:
        """``images [B, 3, H, W]`` (any H, W). The first shot is computed when ``first_shot``
        is True, or by default in training mode (it only feeds the loss)."""
        first, skip = self.pyramid(images), self.passthrough
        enhanced = list(self.feature_module(first[skip:]))
        second = self.shot(self.passthrough_levels(first[:skip], enhanced[0]) + enhanced, "second")
        want_first = self.training if first_shot is None else first_shot
        if not (want_first and self.dual_shot):
            return DetectorOutput(second)
        return DetectorOutput(second, self.shot(first[skip:], "first", first_level=skip))

    def anchors_for(self, height: int, width: int, shot: Shot = "second") -> Tensor:
        """The anchors of an ``height x width`` input (same as the forward pass's)."""
        return self.anchor_generator(self.anchor_generator.feature_shapes(height, width), shot)


def build_feature_cascade(
    names: Sequence[str], channels: int, genotype: Genotype | None,
    levels: Sequence[str] = LEVELS, options: Mapping[str, Mapping[str, Any]] | None = None,
    module_levels: Sequence[Sequence[str]] = (),
) -> FeatureCascade:
    """Registered feature modules ``names`` in order, on ``levels`` (or each on its
    ``module_levels`` set, the coarsest of ``levels``); AutoFEM ones are built from
    ``genotype``; ``options[name]`` are extra keyword arguments of module ``name``."""
    modules, skips = [], []
    for name, own in zip(names, module_levels or [levels] * len(names), strict=True):
        kwargs = dict((options or {}).get(name, {}))
        if name in GENOTYPE_FEATURE_MODULES:
            if genotype is None:
                raise ValueError(f"feature module {name!r} needs a genotype")
            kwargs["genotype"] = genotype
        modules.append(build_feature_module(name, channels, levels=tuple(own), **kwargs))
        skips.append(len(levels) - len(own))
    return FeatureCascade(*modules, skips=skips)


class ASFD(DualShotDetector):
    """A detector built from an :class:`ASFDConfig` (and a genotype for AutoFEM modules);
    it keeps both, so that :func:`save_model` / :func:`load_model` can rebuild it."""

    def __init__(self, config: ASFDConfig, genotype: Genotype | None = None) -> None:
        needs_genotype = any(n in GENOTYPE_FEATURE_MODULES for n in config.feature_modules)
        super().__init__(
            backbone=build_backbone(config.backbone),
            feature_module=build_feature_cascade(
                config.feature_modules, config.width, genotype if needs_genotype else None,
                config.enhanced_levels, {"autofem_fpn": {"fuse": config.fpn_fuse}},
                config.module_levels),
            heads=DetectionHeads(config.width, config.head_depth, config.head_conv,
                                 config.head_norm, config.head_maps, config.cls_prior),
            channels=config.width, anchors=config.anchors, dual_shot=config.dual_shot,
            passthrough=config.passthrough, passthrough_topdown=config.passthrough_topdown,
        )
        self.config = config
        self.genotype = genotype if needs_genotype else None


def resolve_genotype(genotype: Genotype | str | Path) -> Genotype:
    """A genotype object as is, else a file path or a shipped genotype name, loaded and checked."""
    if isinstance(genotype, Genotype):
        return genotype
    return load_genotype(genotype, known_ops=list_ops(), limits=NO_LIMITS)


def build_asfd(
    variant: Variant, genotype: Genotype | str | Path = "asfd_paper_like", **overrides,
) -> ASFD:
    """ASFD-``variant`` (Table 1) with the AutoFEM of ``genotype``; ``overrides`` replace
    :class:`ASFDConfig` fields (e.g. ``backbone="resnet50"``, ``dual_shot=False``)."""
    return ASFD(asfd_config(variant, **overrides), resolve_genotype(genotype))


# ----------------------------------------------------------------------------- model files
CHECKPOINT_FORMAT = "asfd-model"
CHECKPOINT_VERSION = 3
#: The format reference detectors were saved in before they shared :data:`CHECKPOINT_FORMAT`.
LEGACY_REFERENCE_FORMAT = "asfd-reference-model"


@dataclass(frozen=True)
class ModelArch:
    """A detector class a model file can hold, and how to rebuild one from the file's config
    mapping and genotype (``source`` names the file in errors)."""

    cls: type[nn.Module]
    build: Callable[[dict[str, Any], Genotype | None, str], nn.Module]


#: The detector classes :func:`save_model` writes, by the ``arch`` a model file records.
MODEL_ARCHS: Registry[ModelArch] = Registry("model architecture")
MODEL_ARCHS.add("asfd", ModelArch(ASFD, lambda config, genotype, source: ASFD(
    ASFDConfig.from_dict(config, source=f"{source}: config"), genotype)))


def upgrade_checkpoint(ckpt: dict[str, Any]) -> dict[str, Any]:
    """An older model file in the current version's terms.

    Version 1: its passed-through levels had no top-down path, its heads no norms and PyTorch's
    default init (``passthrough_topdown: false``, ``head_norm: none``, ``cls_prior: null``), and
    its heads kept their tower convs at the even indices of a ``tower`` Sequential
    (``heads.cls.tower.2.*`` is ``heads.cls.convs.1.*``). Versions 1-2 hold an ASFD (no
    ``arch``). :data:`LEGACY_REFERENCE_FORMAT` files hold a reference detector of their
    ``arch`` and no genotype."""
    if ckpt.get("format") == LEGACY_REFERENCE_FORMAT and ckpt.get("version") == 1:
        return {**ckpt, "format": CHECKPOINT_FORMAT, "version": CHECKPOINT_VERSION,
                "genotype": None}
    if ckpt.get("version") == 1:
        config = {**ckpt["config"], "head_norm": "none", "cls_prior": None,
                  "passthrough_topdown": False}
        state = {}
        for key, value in ckpt["state_dict"].items():
            parts = key.split(".")
            if parts[:1] == ["heads"] and parts[2:3] == ["tower"]:
                key = ".".join([*parts[:2], "convs", str(int(parts[3]) // 2), *parts[4:]])
            state[key] = value
        ckpt = {**ckpt, "version": 2, "config": config, "state_dict": state}
    if ckpt.get("version") == 2:
        ckpt = {**ckpt, "version": 3, "arch": "asfd"}
    return ckpt


def save_model(model: nn.Module, path: str | Path, extra: dict[str, Any] | None = None) -> Path:
    """Write a detector of a :data:`MODEL_ARCHS` class (architecture name, config, genotype,
    weights) in one file, atomically, which :func:`load_model` rebuilds; ``extra`` (plain
    values: provenance, epoch, metrics) is stored under ``"extra"``."""
    arch = next((name for name, a in MODEL_ARCHS.items() if isinstance(model, a.cls)), None)
    if arch is None:
        raise TypeError(f"cannot save a {type(model).__name__}: not a registered model "
                        f"architecture {MODEL_ARCHS.names()}")
    genotype = getattr(model, "genotype", None)
    return save_checkpoint({
        "format": CHECKPOINT_FORMAT,
        "version": CHECKPOINT_VERSION,
        "arch": arch,
        "config": model.config.to_dict(),
        "genotype": None if genotype is None else genotype_to_dict(genotype),
        "state_dict": model.state_dict(),
        "extra": extra or {},
    }, path)


def load_model(path: str | Path, map_location: str | torch.device = "cpu") -> nn.Module:
    """Rebuild the detector saved by :func:`save_model` (or an older version of it), load its
    weights, move it to ``map_location``. Reference detectors need
    :mod:`detectors.models.reference_detectors` imported (it registers them)."""
    path = Path(path)
    ckpt = load_checkpoint(path, "model file")
    fmt = ckpt.get("format") if isinstance(ckpt, dict) else None
    if fmt not in (CHECKPOINT_FORMAT, LEGACY_REFERENCE_FORMAT):
        raise ValueError(f"{path}: not an asfd model checkpoint (format {fmt!r}, expected "
                         f"{CHECKPOINT_FORMAT!r}); training state checkpoints (last.pt) hold "
                         "the model next to it as model.pt")
    ckpt = upgrade_checkpoint(ckpt)
    if ckpt.get("version") != CHECKPOINT_VERSION:
        raise ValueError(f"{path}: checkpoint version {ckpt.get('version')}, this asfd reads "
                         f"versions 1-{CHECKPOINT_VERSION}")
    genotype = None if ckpt["genotype"] is None else genotype_from_dict(
        ckpt["genotype"], known_ops=list_ops(), source=f"{path}: genotype", limits=NO_LIMITS)
    if ckpt.get("arch") not in MODEL_ARCHS:
        raise ValueError(f"{path}: model architecture {ckpt.get('arch')!r} is not registered "
                         f"{MODEL_ARCHS.names()}")
    model = MODEL_ARCHS[ckpt["arch"]].build(ckpt["config"], genotype, str(path))
    model.load_state_dict(ckpt["state_dict"])
    return model.to(map_location)


def genotype_source(path: str | Path) -> str | None:
    """Where the genotype inside a saved detector came from: the ``derived_from`` its file
    records (``asfd derive``), else ``"<path> (embedded)"``; ``None`` when it holds no genotype
    (a reference detector, or no AutoFEM module)."""
    ckpt = load_checkpoint(path, "model file")
    if not isinstance(ckpt, dict) or ckpt.get("genotype") is None:
        return None
    return str((ckpt.get("extra") or {}).get("derived_from") or f"{path} (embedded)")
