"""ImageNet backbones of the ASFD family (Table 1) and the two extra pyramid levels C6, C7.

Every backbone maps an image to ``[C2, C3, C4, C5]`` (strides 4, 8, 16, 32, Sec. 3.1) and exposes
``out_channels`` (one entry per level). Layouts and parameter names follow the public
checkpoints so that a local ImageNet state dict loads by name (:func:`load_pretrained`):

* ``mobilenet0.25`` / ``mobilenet1.0``: MobileNetV1 as in RetinaFace (``stage1/2/3`` of
  ``conv_bn`` / ``conv_dw`` blocks, BN + LeakyReLU(0.1)). C2 (stride 4) is the output of
  ``stage1[3]``, the ``32->32`` block that follows the ``16->32`` stride-2 block (x0.25 widths);
  C3 = ``stage1`` (stride 8), C4 = ``stage2`` (16), C5 = ``stage3`` (32).
* ``resnet18/34/50/101/152``: torchvision's ResNet (v1.5: the stride of a bottleneck sits on its
  3x3 conv). C2..C5 = ``layer1..layer4``. The classifier (``fc``) is not built.

Nothing here downloads: ``load_pretrained`` reads a file the user already has.
"""
from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Callable, Mapping

from torch import Tensor, nn

from nas_search.registry import Registry
from nas_search.runtime import load_checkpoint

BACKBONE_STRIDES: tuple[int, ...] = (4, 8, 16, 32)
EXTRA_STRIDES: tuple[int, ...] = (64, 128)

BackboneFactory = Callable[..., "Backbone"]
BACKBONES: Registry[BackboneFactory] = Registry("backbone")
register_backbone = BACKBONES.register


def build_backbone(name: str, **kwargs) -> "Backbone":
    return BACKBONES.build(name, **kwargs)


class Backbone(nn.Module):
    """Base class: ``forward(x) -> [C2, C3, C4, C5]``; ``out_channels`` gives their widths."""

    out_channels: tuple[int, ...]
    strides: tuple[int, ...] = BACKBONE_STRIDES

    def remap_state_dict(self, state: Mapping[str, Tensor]) -> tuple[dict[str, Tensor], list[str]]:
        """Rename checkpoint keys to this module's names; returns ``(mapped, dropped_keys)``.

        The base rule drops the ImageNet classifier (``fc.*``, ``classifier.*``, ``head.*``).
        """
        mapped, dropped = {}, []
        for key, value in state.items():
            if key.split(".")[0] in ("fc", "classifier", "head"):
                dropped.append(key)
            else:
                mapped[key] = value
        return mapped, dropped


# --------------------------------------------------------------------------------------------
# MobileNetV1 (RetinaFace layout)


def conv_bn(inp: int, oup: int, stride: int, leaky: float = 0.1) -> nn.Sequential:
    """3x3 conv -> BN -> LeakyReLU: the MobileNetV1 stem."""
    return nn.Sequential(
        nn.Conv2d(inp, oup, 3, stride, 1, bias=False),
        nn.BatchNorm2d(oup),
        nn.LeakyReLU(leaky, inplace=True),
    )


def conv_dw(inp: int, oup: int, stride: int, leaky: float = 0.1) -> nn.Sequential:
    """Depthwise 3x3 -> BN -> LeakyReLU -> pointwise 1x1 -> BN -> LeakyReLU."""
    return nn.Sequential(
        nn.Conv2d(inp, inp, 3, stride, 1, groups=inp, bias=False),
        nn.BatchNorm2d(inp),
        nn.LeakyReLU(leaky, inplace=True),
        nn.Conv2d(inp, oup, 1, 1, 0, bias=False),
        nn.BatchNorm2d(oup),
        nn.LeakyReLU(leaky, inplace=True),
    )


class MobileNetV1(Backbone):
    """MobileNetV1 with width multiplier ``width`` (RetinaFace's x0.25 has a stem of 8 channels).

    ``C2_INDEX`` is the ``stage1`` block whose output is C2 (stride 4).
    """

    C2_INDEX = 3
    # (in, out, stride) of the depthwise-separable blocks at width 0.25, per stage.
    STAGES: tuple[tuple[tuple[int, int, int], ...], ...] = (
        ((8, 16, 1), (16, 32, 2), (32, 32, 1), (32, 64, 2), (64, 64, 1)),
        ((64, 128, 2),) + ((128, 128, 1),) * 5,
        ((128, 256, 2), (256, 256, 1)),
    )

    def __init__(self, width: float = 0.25) -> None:
        super().__init__()

        def w(c: int) -> int:
            return int(c * width / 0.25)

        stem = conv_bn(3, w(8), 2)
        blocks = [[conv_dw(w(i), w(o), s) for i, o, s in stage] for stage in self.STAGES]
        self.stage1 = nn.Sequential(stem, *blocks[0])
        self.stage2 = nn.Sequential(*blocks[1])
        self.stage3 = nn.Sequential(*blocks[2])
        self.out_channels = (w(32), w(64), w(128), w(256))

    def forward(self, x: Tensor) -> list[Tensor]:
        for i, block in enumerate(self.stage1):
            x = block(x)
            if i == self.C2_INDEX:
                c2 = x
        c3 = x
        c4 = self.stage2(c3)
        c5 = self.stage3(c4)
        return [c2, c3, c4, c5]

    def remap_state_dict(self, state: Mapping[str, Tensor]) -> tuple[dict[str, Tensor], list[str]]:
        """Also accept a flat ``features.<k>.*`` numbering (stem = 0, then the 13 blocks)."""
        mapped, dropped = super().remap_state_dict(state)
        stage_of = [(name, i) for name, stage in
                    (("stage1", self.stage1), ("stage2", self.stage2), ("stage3", self.stage3))
                    for i in range(len(stage))]
        renamed = {}
        for key, value in mapped.items():
            parts = key.split(".")
            if parts[0] == "features" and len(parts) > 2 and parts[1].isdigit() \
                    and int(parts[1]) < len(stage_of):
                stage, index = stage_of[int(parts[1])]
                key = ".".join([stage, str(index), *parts[2:]])
            renamed[key] = value
        return renamed, dropped


@register_backbone("mobilenet0.25")
def mobilenet0_25() -> MobileNetV1:
    return MobileNetV1(width=0.25)


@register_backbone("mobilenet1.0")
def mobilenet1_0() -> MobileNetV1:
    return MobileNetV1(width=1.0)


# --------------------------------------------------------------------------------------------
# ResNet (torchvision layout and parameter names)


def _downsample(inp: int, oup: int, stride: int) -> nn.Sequential | None:
    if stride == 1 and inp == oup:
        return None
    return nn.Sequential(nn.Conv2d(inp, oup, 1, stride, bias=False), nn.BatchNorm2d(oup))


class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, inp: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(inp, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = _downsample(inp, planes, stride)

    def forward(self, x: Tensor) -> Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + identity)


class Bottleneck(nn.Module):
    expansion = 4

    def __init__(self, inp: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        out = planes * self.expansion
        self.conv1 = nn.Conv2d(inp, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, out, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(out)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = _downsample(inp, out, stride)

    def forward(self, x: Tensor) -> Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + identity)


class ResNet(Backbone):
    """torchvision's ResNet without ``avgpool``/``fc``; C2..C5 are ``layer1..layer4``."""

    def __init__(self, block: type[BasicBlock] | type[Bottleneck], layers: tuple[int, ...]) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 64, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        inp, stages = 64, []
        for i, n_blocks in enumerate(layers):
            planes = 64 * 2 ** i
            blocks = []
            for j in range(n_blocks):
                blocks.append(block(inp, planes, stride=2 if (i > 0 and j == 0) else 1))
                inp = planes * block.expansion
            stages.append(nn.Sequential(*blocks))
        self.layer1, self.layer2, self.layer3, self.layer4 = stages
        self.out_channels = tuple(64 * 2 ** i * block.expansion for i in range(4))

    def forward(self, x: Tensor) -> list[Tensor]:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        feats = []
        for layer in (self.layer1, self.layer2, self.layer3, self.layer4):
            x = layer(x)
            feats.append(x)
        return feats


RESNET_LAYOUTS: dict[str, tuple[type[BasicBlock] | type[Bottleneck], tuple[int, ...]]] = {
    "resnet18": (BasicBlock, (2, 2, 2, 2)),
    "resnet34": (BasicBlock, (3, 4, 6, 3)),
    "resnet50": (Bottleneck, (3, 4, 6, 3)),
    "resnet101": (Bottleneck, (3, 4, 23, 3)),
    "resnet152": (Bottleneck, (3, 8, 36, 3)),
}


for _name, (_block, _layers) in RESNET_LAYOUTS.items():
    register_backbone(_name)(partial(ResNet, _block, _layers))


# --------------------------------------------------------------------------------------------
# Extra pyramid levels


class ExtraLevels(nn.Module):
    """C6 and C7 (strides 64, 128) on top of C5, DSFD-style (Sec. 3.1 needs six maps).

    Each new level is ``1x1 conv (reduce to mid) -> BN -> ReLU -> 3x3 stride-2 conv -> BN ->
    ReLU`` on the level below: the 1x1 keeps the cost independent of the (possibly 2048-wide)
    C5, the stride-2 3x3 halves the size with ``ceil`` rounding like every backbone stage.
    The paper does not describe these layers; ``mid`` and ``out_channels`` are calibrated
    against Table 5 in :mod:`detectors.models.asfd`.
    """

    def __init__(self, in_channels: int, mid_channels: int, out_channels: int) -> None:
        super().__init__()

        def level(inp: int) -> nn.Sequential:
            return nn.Sequential(
                nn.Conv2d(inp, mid_channels, 1, bias=False), nn.BatchNorm2d(mid_channels),
                nn.ReLU(inplace=True),
                nn.Conv2d(mid_channels, out_channels, 3, 2, 1, bias=False),
                nn.BatchNorm2d(out_channels), nn.ReLU(inplace=True),
            )

        self.c6 = level(in_channels)
        self.c7 = level(out_channels)
        self.out_channels = (out_channels, out_channels)

    def forward(self, c5: Tensor) -> list[Tensor]:
        c6 = self.c6(c5)
        return [c6, self.c7(c6)]


# --------------------------------------------------------------------------------------------
# Loading local ImageNet weights


@dataclass
class LoadReport:
    """What :func:`load_pretrained` did: keys loaded, dropped (classifier), missing, unexpected."""

    loaded: list[str] = field(default_factory=list)
    dropped: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)

    def summary(self) -> str:
        def head(keys: list[str]) -> str:
            return ", ".join(keys[:5]) + (f", ... ({len(keys)} in all)" if len(keys) > 5 else "")

        lines = [f"loaded {len(self.loaded)} tensors, dropped {len(self.dropped)}"]
        if self.missing:
            lines.append(f"missing (left at init): {head(self.missing)}")
        if self.unexpected:
            lines.append(f"unexpected (ignored): {head(self.unexpected)}")
        return "; ".join(lines)


def _unwrap_checkpoint(obj: object, path: Path) -> dict[str, Tensor]:
    """The state dict inside common checkpoint wrappers, with any ``module.`` prefix removed."""
    if isinstance(obj, dict):
        for key in ("state_dict", "model", "model_state"):
            if key in obj and isinstance(obj[key], dict):
                obj = obj[key]
                break
    if not isinstance(obj, dict) or not all(isinstance(v, Tensor) for v in obj.values()):
        raise ValueError(f"{path}: not a state dict of tensors (or a dict holding one under "
                         "'state_dict' / 'model')")
    return {k.removeprefix("module."): v for k, v in obj.items()}


def load_pretrained(backbone: Backbone, path: str | Path, strict: bool = True) -> LoadReport:
    """Load a local ImageNet state dict (torchvision/timm/RetinaFace key style) into ``backbone``.

    Keys are renamed by ``backbone.remap_state_dict`` (classifier dropped). A tensor whose shape
    differs from the module's raises ``ValueError`` naming the key; missing keys raise when
    ``strict``, else they keep their initial values. Unexpected keys are ignored. The returned
    report lists all of them.
    """
    state = _unwrap_checkpoint(load_checkpoint(path, "pretrained weights file"), Path(path))
    mapped, dropped = backbone.remap_state_dict(state)
    own = backbone.state_dict()
    report = LoadReport(dropped=sorted(dropped))
    accepted: OrderedDict[str, Tensor] = OrderedDict()
    for key, value in mapped.items():
        if key not in own:
            report.unexpected.append(key)
        elif own[key].shape != value.shape:
            raise ValueError(f"{path}: {key} has shape {tuple(value.shape)}, the "
                             f"{type(backbone).__name__} expects {tuple(own[key].shape)}")
        else:
            accepted[key] = value
    report.loaded = list(accepted)
    report.missing = [k for k in own if k not in accepted and not k.endswith("num_batches_tracked")]
    if report.missing and strict:
        raise ValueError(f"{path}: {report.summary()}")
    backbone.load_state_dict(accepted, strict=False)
    return report
