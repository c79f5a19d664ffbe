"""Reference detectors built from the toolkit's parts: a RetinaFace-style and a DSFD-style baseline.

``retinaface_mnet025`` (RetinaFace with MobileNet0.25, Deng et al. 2020, without landmarks):
MobileNetV1 x0.25 C3..C5 (strides 8, 16, 32) -> lateral 1x1 conv + BN + LeakyReLU(0.1) to 64
channels -> FPN (:func:`search_spaces.baselines.fpn`) -> SSH context module per level -> a 1x1
classification and a 1x1 regression conv per level, two square anchors per location (16/32,
64/128, 256/512), a single shot, trained with smooth-L1 + softmax CE (loss ``retinaface``).
Differences from the original, all from reusing the shared FPN: a 3x3 merge conv also on the top
level, ReLU instead of LeakyReLU after the merges, bilinear instead of nearest up-sampling (sizes
against the original's: README, "Data, training, inference, evaluation, export").

``dsfd_like``: the dual-shot framework of :mod:`detectors.models.asfd` with DSFD's FEM (``fem_fpn``
then ``fem_cpm``) in place of AutoFEM; by default on D0's backbone, width and heads, so that it
compares with ASFD-D0 module for module (Table 2's setting); ``backbone``, ``width`` and
``head_depth`` are options. It is an :class:`~detectors.models.asfd.ASFD` and saves like one.

Both are registered in :data:`REFERENCE_DETECTORS`; :func:`detectors.models.asfd.save_model` and
:func:`~detectors.models.asfd.load_model` save and load them (the RetinaFace-style one is the model
architecture ``retinaface``).
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from functools import partial
from typing import Any, Callable, Sequence

import torch
from torch import Tensor, nn

from detectors.models.anchors import AnchorGenerator, Shot
from detectors.models.asfd import ASFD, MODEL_ARCHS, ModelArch, asfd_config, build_feature_cascade
from detectors.models.backbones import build_backbone
from detectors.models.heads import DetectorOutput, ShotOutput
from nas_search.registry import Registry
from nas_search.runtime import dataclass_from_dict, replace_fields
from search_spaces.baselines import PerLevel, register_feature_module
from search_spaces.ops import ConvBNAct
from search_spaces.schemas import LEVELS

LeakyReLU = partial(nn.LeakyReLU, 0.1)
RETINAFACE_LEVELS: tuple[str, ...] = ("P3", "P4", "P5")


# ----------------------------------------------------------------------------- anchors
@dataclass(frozen=True)
class MultiAnchorGenerator:
    """Several square anchors per location: level ``l`` carries one anchor per size in
    ``sizes[l]``. Order: level-major, row-major over ``(y, x)``, then the sizes of a location
    (the order of :class:`AnchorHeads`' outputs). Centres as in :class:`AnchorGenerator`."""

    strides: tuple[int, ...] = (8, 16, 32)
    sizes: tuple[tuple[float, ...], ...] = ((16, 32), (64, 128), (256, 512))

    def __post_init__(self) -> None:
        if len(self.strides) != len(self.sizes) or not all(self.sizes):
            raise ValueError(f"anchor strides {self.strides} and sizes {self.sizes} must pair up, "
                             "with at least one size per level")

    @property
    def per_location(self) -> tuple[int, ...]:
        return tuple(len(s) for s in self.sizes)

    def feature_shapes(self, height: int, width: int) -> list[tuple[int, int]]:
        return AnchorGenerator(self.strides, (1.0,) * len(self.strides)).feature_shapes(
            height, width)

    def __call__(self, shapes: Sequence[tuple[int, int]], shot: Shot = "second",
                 device: torch.device | str | None = None) -> Tensor:
        """All anchors ``[A, 4]`` (``xyxy``); ``shot`` is accepted for interface parity only."""
        if len(shapes) != len(self.strides):
            raise ValueError(f"got {len(shapes)} feature maps, the anchors have "
                             f"{len(self.strides)} levels")
        level = AnchorGenerator().level_anchors
        return torch.cat([
            torch.stack([level(tuple(shape), stride, s, device) for s in sizes], 1).reshape(-1, 4)
            for shape, stride, sizes in zip(shapes, self.strides, self.sizes)])


# ----------------------------------------------------------------------------- SSH context
class SSH(nn.Module):
    """RetinaFace's SSH context module: 3x3 (C/2), 5x5 (two 3x3, C/4) and 7x7 (three 3x3, C/4)
    receptive-field branches sharing their first conv, concatenated, then ReLU."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        if channels % 4:
            raise ValueError(f"SSH needs channels divisible by 4, got {channels}")
        half, quarter = channels // 2, channels // 4
        self.conv3 = ConvBNAct(channels, half, 3, act=None)
        self.conv5_1 = ConvBNAct(channels, quarter, 3, act=LeakyReLU)
        self.conv5_2 = ConvBNAct(quarter, quarter, 3, act=None)
        self.conv7_2 = ConvBNAct(quarter, quarter, 3, act=LeakyReLU)
        self.conv7_3 = ConvBNAct(quarter, quarter, 3, act=None)

    def forward(self, x: Tensor) -> Tensor:
        t5 = self.conv5_1(x)
        t7 = self.conv7_2(t5)
        return torch.relu(torch.cat([self.conv3(x), self.conv5_2(t5), self.conv7_3(t7)], 1))


@register_feature_module("ssh")
def ssh(channels: int, levels: Sequence[str] = RETINAFACE_LEVELS) -> PerLevel:
    """SSH on every level (own weights per level)."""
    return PerLevel(channels, {lv: SSH(channels) for lv in levels})


# ----------------------------------------------------------------------------- RetinaFace-style
class AnchorHeads(nn.Module):
    """Per-level 1x1 convs: ``k_l * 2`` class logits and ``k_l * 4`` offsets per location."""

    def __init__(self, channels: int, per_location: Sequence[int]) -> None:
        super().__init__()
        self.cls = nn.ModuleList(nn.Conv2d(channels, 2 * k, 1) for k in per_location)
        self.reg = nn.ModuleList(nn.Conv2d(channels, 4 * k, 1) for k in per_location)

    @staticmethod
    def _flatten(maps: list[Tensor], values: int) -> Tensor:
        return torch.cat([m.permute(0, 2, 3, 1).reshape(m.shape[0], -1, values) for m in maps], 1)

    def forward(self, feats: Sequence[Tensor]) -> tuple[Tensor, Tensor]:
        cls = self._flatten([conv(f) for conv, f in zip(self.cls, feats)], 2)
        reg = self._flatten([conv(f) for conv, f in zip(self.reg, feats)], 4)
        return cls, reg


@dataclass(frozen=True)
class RetinaFaceConfig:
    """What :class:`RetinaFaceStyle` is built from (saved in its checkpoints)."""

    backbone: str = "mobilenet0.25"
    width: int = 64
    feature_modules: tuple[str, ...] = ("fpn", "ssh")
    anchors: MultiAnchorGenerator = field(default_factory=MultiAnchorGenerator)
    name: str = "RetinaFace-MobileNet0.25"

    def __post_init__(self) -> None:
        object.__setattr__(self, "feature_modules", tuple(self.feature_modules))
        if isinstance(self.anchors, dict):  # a checkpoint, YAML or model.options give a mapping
            object.__setattr__(self, "anchors",
                               dataclass_from_dict(MultiAnchorGenerator, self.anchors, "anchors"))

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RetinaFaceConfig:
        return cls(**data)


class RetinaFaceStyle(nn.Module):
    """Single-shot detector on C3..C5 (see the module docstring); returns a
    :class:`DetectorOutput` with ``first=None``, so the shared losses and inference apply."""

    def __init__(self, config: RetinaFaceConfig = RetinaFaceConfig()) -> None:
        super().__init__()
        self.config = config
        self.backbone = build_backbone(config.backbone)
        in_channels = self.backbone.out_channels[1:]  # C3, C4, C5
        self.lateral = nn.ModuleList(ConvBNAct(c, config.width, 1, act=LeakyReLU)
                                     for c in in_channels)
        self.feature_module = build_feature_cascade(config.feature_modules, config.width, None,
                                                    levels=RETINAFACE_LEVELS)
        self.heads = AnchorHeads(config.width, config.anchors.per_location)
        self.anchor_generator = config.anchors

    def forward(self, images: Tensor, first_shot: bool | None = None) -> DetectorOutput:
        c3, c4, c5 = self.backbone(images)[1:]
        feats = self.feature_module([conv(c) for conv, c in zip(self.lateral, (c3, c4, c5))])
        cls, reg = self.heads(feats)
        anchors = self.anchor_generator([tuple(f.shape[-2:]) for f in feats], device=cls.device)
        return DetectorOutput(ShotOutput(cls, reg, anchors))

    def anchors_for(self, height: int, width: int, shot: Shot = "second") -> Tensor:
        return self.anchor_generator(self.anchor_generator.feature_shapes(height, width), shot)


# ----------------------------------------------------------------------------- registry
DetectorFactory = Callable[..., nn.Module]
REFERENCE_DETECTORS: Registry[DetectorFactory] = Registry("reference detector")
register_reference_detector = REFERENCE_DETECTORS.register
MODEL_ARCHS.add("retinaface", ModelArch(RetinaFaceStyle, lambda config, genotype, source:
                                        RetinaFaceStyle(RetinaFaceConfig.from_dict(config))))


def build_reference_detector(name: str, **options) -> nn.Module:
    """The reference detector registered as ``name``, built with ``options``."""
    return REFERENCE_DETECTORS[name](**options)


@register_reference_detector("retinaface_mnet025")
def retinaface_mnet025(**overrides) -> RetinaFaceStyle:
    return RetinaFaceStyle(replace_fields(RetinaFaceConfig(), overrides,
                                          "model.options of retinaface_mnet025"))


@register_reference_detector("dsfd_like")
def dsfd_like(backbone: str = "mobilenet0.25", width: int = 64, head_depth: int = 1,
              **overrides) -> ASFD:
    """DSFD's FEM (FEM-FPN -> FEM-CPM, on all six levels as in DSFD) in the dual-shot framework,
    D0's parts by default."""
    overrides.setdefault("enhanced_levels", LEVELS)
    config = asfd_config("D0", backbone=backbone, width=width, head_depth=head_depth,
                         feature_modules=("fem_fpn", "fem_cpm"), name=f"DSFD-like ({backbone})",
                         **overrides)
    return ASFD(config)
