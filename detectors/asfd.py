"""The dual-shot detector (Sec. 3.1, Fig. 2) and the ASFD D0-D6 family (Sec. 3.4, Table 1).

Pipeline: backbone -> ``[C2..C5]`` -> :class:`~detectors.backbones.ExtraLevels` ``[C6, C7]`` ->
lateral 1x1 conv + BN + ReLU of C2..C5 to ``W`` channels (C6, C7 are built at ``W``) = the
*first-shot* pyramid; a feature module (AutoFEM: fixed AutoFEM-FPN then fixed AutoFEM-CPM, from
a genotype) maps it to the *second-shot* pyramid; the same heads run on both shots (first shot
with anchors half the size, DSFD's progressive anchors). Inference uses the second shot only,
so the first shot is computed in training mode (or on request) and costs nothing at test time.
The first shot covers the levels the feature module enhances: on a level it passes through
(:attr:`ASFDConfig.enhanced_levels`) both shots would see the same map through the same heads
with anchors of two sizes, i.e. contradictory targets for one prediction.

Compound scaling (Eq. 9, Table 1): ``W = 64 * theta`` for AutoFEM and heads. We follow Table 1
for the depths (AutoFEM 0.5, 0.5, 0.5, 1, 1, 2, 2; heads 1, 1, 1, 2, 2, 4, 4): Eq. 9 as printed
gives ``D_head = 2^((theta-1)/2 + 1) = 2`` at theta = 1, twice Table 1's values, which are
``2 * D_autofem``.

Fractional AutoFEM depth (our decision, judged by Table 5's parameter and MAC counts; see
:func:`autofem_modules` and :data:`HALF_DEPTH_LEVELS`): one AutoFEM *layer* is the cascade
AutoFEM-FPN -> AutoFEM-CPM; depth ``n`` stacks ``n`` of them on all six levels; depth 0.5 is one
layer, both halves, on the four coarsest levels P4..P7. The stride-4 and stride-8 levels reach
the second shot through the parameter-free top-down path of
:meth:`DualShotDetector.passthrough_levels`. They hold 94% of the 25,600 locations at 640x480,
and Table 5 leaves D0 0.48 G MACs beside its backbone, 0.28 G of which its heads take.

Calibration: the README's "The ASFD family" section and ``bench/table5.py`` give the measured
table, the candidate readings of depth 0.5 and the rule per row. :attr:`ScalingRow.fpn_fuse`
(AutoFEM-FPN's ``F_c``) is the one choice set per row: Table 5 follows no single rule.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Mapping, Sequence

import torch
from torch import Tensor, nn

import search_spaces.cpm  # noqa: F401  (registers autofem_cpm)
from detectors.anchors import AnchorGenerator, Shot
from detectors.backbones import Backbone, ExtraLevels, build_backbone
from detectors.config import replace_fields
from detectors.heads import DetectionHeads, DetectorOutput, HeadConv, HeadNorm, ShotOutput
from genotypes.io import genotype_from_dict, genotype_to_dict, load_genotype
from genotypes.schema import LEVELS, Genotype
from nas_search.checkpoint import load_checkpoint
from nas_search.registry import list_ops
from search_spaces.baselines import build_feature_module
from search_spaces.fpn import FuseKind  # (and registers autofem_fpn)
from search_spaces.ops import ConvBNAct, upsample_to

Variant = Literal["D0", "D1", "D2", "D3", "D4", "D5", "D6"]

#: Feature modules built from a genotype (they receive ``genotype=``); the others only need
#: ``channels``.
GENOTYPE_FEATURE_MODULES: frozenset[str] = frozenset({"autofem_fpn", "autofem_cpm"})


@dataclass(frozen=True)
class ScalingRow:
    """One row of Table 1: backbone, theta and the AutoFEM / head depths; ``fpn_fuse`` is the
    kind of AutoFEM-FPN's ``F_c``, calibrated per row against Table 5 (module docstring)."""

    backbone: str
    theta: int
    fem_depth: float
    head_depth: int
    fpn_fuse: FuseKind = "separable"

    @property
    def width(self) -> int:
        """Eq. 9: ``W_autofem = W_head = 64 * theta``."""
        return 64 * self.theta


ASFD_FAMILY: dict[str, ScalingRow] = {
    "D0": ScalingRow("mobilenet0.25", 1, 0.5, 1),
    "D1": ScalingRow("mobilenet1.0", 1, 0.5, 1),
    "D2": ScalingRow("resnet18", 2, 0.5, 1),
    "D3": ScalingRow("resnet34", 3, 1, 2, fpn_fuse="dense"),
    "D4": ScalingRow("resnet50", 4, 1, 2, fpn_fuse="dense"),
    "D5": ScalingRow("resnet101", 5, 2, 4),
    "D6": ScalingRow("resnet152", 6, 2, 4),
}


@dataclass(frozen=True)
class PaperFigures:
    """Table 5: parameters (M), multiply-adds at 640x480 (B), GPU latency (ms)."""

    params_m: float
    macs_b: float
    latency_ms: float


PAPER_TABLE5: dict[str, PaperFigures] = {
    "D0": PaperFigures(0.62, 0.73, 8.9),
    "D1": PaperFigures(3.90, 4.27, 9.2),
    "D2": PaperFigures(13.56, 20.48, 12.4),
    "D3": PaperFigures(26.56, 46.32, 23.1),
    "D4": PaperFigures(36.76, 70.45, 28.7),
    "D5": PaperFigures(67.73, 147.40, 32.8),
    "D6": PaperFigures(86.10, 183.11, 37.7),
}


#: The levels a half-depth AutoFEM enhances (module docstring).
HALF_DEPTH_LEVELS: tuple[str, ...] = LEVELS[2:]


def autofem_modules(depth: float) -> tuple[str, ...]:
    """The feature-module cascade of an AutoFEM of ``depth`` layers (see the module docstring).

    ``0.5 -> (autofem_fpn, autofem_cpm)`` (on :data:`HALF_DEPTH_LEVELS`);
    ``n -> (autofem_fpn, autofem_cpm) * n`` for a positive integer n.
    """
    if depth == 0.5:
        return ("autofem_fpn", "autofem_cpm")
    if depth >= 1 and float(depth).is_integer():
        return ("autofem_fpn", "autofem_cpm") * int(depth)
    raise ValueError(f"AutoFEM depth must be 0.5 or a positive integer, got {depth}")


def anchors_from_dict(data: dict[str, Any]) -> AnchorGenerator:
    """An :class:`AnchorGenerator` from a mapping (lists become tuples); an unknown key is a
    ValueError naming it."""
    known = {f.name for f in dataclasses.fields(AnchorGenerator)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise ValueError(f"anchors: unknown key(s) {unknown}; known: {sorted(known)}")
    return AnchorGenerator(**{k: tuple(v) if isinstance(v, list) else v for k, v in data.items()})


@dataclass(frozen=True)
class ASFDConfig:
    """Everything needed to rebuild a detector of the dual-shot framework (with its genotype).

    ``feature_modules`` are registered feature-module names cascaded in order (AutoFEM:
    ``autofem_fpn``, ``autofem_cpm``; DSFD-style baselines: ``fem_fpn``, ``fem_cpm``...; ``none``
    for no enhancement). They transform the ``enhanced_levels``, the coarsest levels of the
    pyramid; the finer ones reach the second shot unchanged. ``dual_shot=False`` gives a
    single-shot (RetinaFace-style) detector. ``head_norm`` and ``cls_prior`` are the heads'
    per-map BatchNorm and prior-probability initialisation (:mod:`detectors.heads`);
    ``passthrough_topdown`` feeds the levels outside ``enhanced_levels`` a top-down path
    (:meth:`DualShotDetector.passthrough_levels`); ``fpn_fuse`` is the kind of ``F_c`` of an
    ``autofem_fpn`` module (:data:`search_spaces.fpn.FUSE_BLOCKS`).
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
    anchors: AnchorGenerator = field(default_factory=AnchorGenerator)
    name: str = ""

    def __post_init__(self) -> None:
        for key in ("feature_modules", "enhanced_levels"):  # YAML gives lists
            object.__setattr__(self, key, tuple(getattr(self, key)))
        if isinstance(self.anchors, dict):  # YAML / model.options give a mapping
            object.__setattr__(self, "anchors", anchors_from_dict(self.anchors))
        n = len(self.enhanced_levels)
        if n == 0 or self.enhanced_levels != LEVELS[len(LEVELS) - n:]:
            raise ValueError(f"enhanced_levels must be the coarsest levels of {LEVELS} (e.g. "
                             f"{HALF_DEPTH_LEVELS}), got {self.enhanced_levels}")

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
        """Inverse of :meth:`to_dict`; unknown keys raise a ValueError naming ``source``."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"{source}: unknown detector config keys {unknown}; "
                             f"known: {sorted(known)}")
        return cls(**data)


def asfd_config(variant: Variant, **overrides) -> ASFDConfig:
    """Table 1's configuration of ``variant``, with field ``overrides`` (unknown ones are a
    :class:`~detectors.config.ConfigError`)."""
    try:
        row = ASFD_FAMILY[variant]
    except KeyError:
        raise KeyError(f"unknown ASFD variant {variant!r}; choose from {sorted(ASFD_FAMILY)}") \
            from None
    base = ASFDConfig(backbone=row.backbone, width=row.width,
                      feature_modules=autofem_modules(row.fem_depth),
                      enhanced_levels=HALF_DEPTH_LEVELS if row.fem_depth == 0.5 else LEVELS,
                      head_depth=row.head_depth, fpn_fuse=row.fpn_fuse,
                      name=f"ASFD-{variant}")
    return replace_fields(base, overrides, f"model.options of ASFD-{variant}")


def head_map_count(dual_shot: bool, passthrough: int) -> int:
    """Maps of a dual-shot detector's heads: every level of the second shot, and the first
    shot's levels (those not passed through) when there is a first shot."""
    return len(LEVELS) + (len(LEVELS) - passthrough if dual_shot else 0)


class FeatureCascade(nn.Sequential):
    """Feature modules applied one after the other (pyramid in, pyramid out)."""

    def forward(self, feats: Sequence[Tensor]) -> list[Tensor]:
        for module in self:
            feats = module(feats)
        return list(feats)


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
) -> FeatureCascade:
    """Registered feature modules ``names`` in order, on ``levels``; AutoFEM ones are built from
    ``genotype``; ``options[name]`` are extra keyword arguments of module ``name``."""
    modules = []
    for name in names:
        kwargs = dict((options or {}).get(name, {}))
        if name in GENOTYPE_FEATURE_MODULES:
            if genotype is None:
                raise ValueError(f"feature module {name!r} needs a genotype")
            kwargs["genotype"] = genotype
        modules.append(build_feature_module(name, channels, levels=levels, **kwargs))
    return FeatureCascade(*modules)


class ASFD(DualShotDetector):
    """A detector built from an :class:`ASFDConfig` (and a genotype for AutoFEM modules);
    it keeps both, so that :func:`save_model` / :func:`load_model` can rebuild it."""

    def __init__(self, config: ASFDConfig, genotype: Genotype | None = None) -> None:
        needs_genotype = any(n in GENOTYPE_FEATURE_MODULES for n in config.feature_modules)
        super().__init__(
            backbone=build_backbone(config.backbone),
            feature_module=build_feature_cascade(
                config.feature_modules, config.width, genotype if needs_genotype else None,
                config.enhanced_levels, {"autofem_fpn": {"fuse": config.fpn_fuse}}),
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
    return load_genotype(genotype, known_ops=list_ops())


def build_asfd(
    variant: Variant, genotype: Genotype | str | Path = "asfd_paper_like", **overrides,
) -> ASFD:
    """ASFD-``variant`` (Table 1) with the AutoFEM of ``genotype``; ``overrides`` replace
    :class:`ASFDConfig` fields (e.g. ``backbone="resnet50"``, ``dual_shot=False``)."""
    return ASFD(asfd_config(variant, **overrides), resolve_genotype(genotype))


CHECKPOINT_FORMAT = "asfd-model"
CHECKPOINT_VERSION = 2


def upgrade_checkpoint(ckpt: dict[str, Any]) -> dict[str, Any]:
    """A version-1 checkpoint in version 2's terms: its passed-through levels had no top-down
    path, its heads no norms and PyTorch's default init (``passthrough_topdown: false``,
    ``head_norm: none``, ``cls_prior: null``), and its heads kept their tower convs at the even
    indices of a ``tower`` Sequential (``heads.cls.tower.2.*`` is ``heads.cls.convs.1.*``)."""
    if ckpt.get("version") != 1:
        return ckpt
    config = {**ckpt["config"], "head_norm": "none", "cls_prior": None,
              "passthrough_topdown": False}
    state = {}
    for key, value in ckpt["state_dict"].items():
        parts = key.split(".")
        if parts[:1] == ["heads"] and parts[2:3] == ["tower"]:
            key = ".".join([*parts[:2], "convs", str(int(parts[3]) // 2), *parts[4:]])
        state[key] = value
    return {**ckpt, "version": 2, "config": config, "state_dict": state}


def save_model(model: ASFD, path: str | Path, extra: dict[str, Any] | None = None) -> Path:
    """Write weights, config and genotype in one file, which :func:`load_model` rebuilds;
    ``extra`` (plain values: provenance, epoch, metrics) is stored under ``"extra"``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({
        "format": CHECKPOINT_FORMAT,
        "version": CHECKPOINT_VERSION,
        "config": model.config.to_dict(),
        "genotype": None if model.genotype is None else genotype_to_dict(model.genotype),
        "state_dict": model.state_dict(),
        "extra": extra or {},
    }, path)
    return path


def load_model(path: str | Path, map_location: str | torch.device = "cpu") -> ASFD:
    """Rebuild the detector saved by :func:`save_model`, load its weights, move it to
    ``map_location``."""
    path = Path(path)
    ckpt = load_checkpoint(path, "model file")
    if not isinstance(ckpt, dict) or ckpt.get("format") != CHECKPOINT_FORMAT:
        raise ValueError(f"{path}: not an asfd model checkpoint (no format={CHECKPOINT_FORMAT!r})")
    ckpt = upgrade_checkpoint(ckpt)
    if ckpt.get("version") != CHECKPOINT_VERSION:
        raise ValueError(f"{path}: checkpoint version {ckpt.get('version')}, this asfd reads "
                         f"versions 1-{CHECKPOINT_VERSION}")
    config = ASFDConfig.from_dict(ckpt["config"], source=f"{path}: config")
    genotype = None if ckpt["genotype"] is None else genotype_from_dict(
        ckpt["genotype"], known_ops=list_ops(), source=f"{path}: genotype")
    model = ASFD(config, genotype)
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
