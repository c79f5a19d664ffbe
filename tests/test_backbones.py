"""Backbones: layouts, parameter counts, strides, extra levels, loading local ImageNet weights."""
from __future__ import annotations

import pytest
import torch

from detectors.models.backbones import (
    BACKBONES, Backbone, ExtraLevels, MobileNetV1, build_backbone, load_pretrained,
    register_backbone,
)


def n_params(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def test_registry_lists_the_table1_backbones():
    assert {"mobilenet0.25", "mobilenet1.0", "resnet18", "resnet34", "resnet50", "resnet101",
            "resnet152"} <= set(BACKBONES)
    with pytest.raises(KeyError, match="unknown backbone 'vgg16'"):
        build_backbone("vgg16")
    with pytest.raises(KeyError, match="already registered"):
        register_backbone("resnet18")(lambda: None)


@pytest.mark.parametrize("name, expected", [
    ("mobilenet0.25", 213_072),   # RetinaFace's MobileNetV1 x0.25 without fc: ~0.213M
    ("mobilenet1.0", 3_206_976),  # ~3.2M
    ("resnet18", 11_176_512),     # torchvision 11,689,512 minus fc (513,000)
    ("resnet50", 23_508_032),     # torchvision 25,557,032 minus fc (2,049,000)
])
def test_parameter_counts_match_the_reference_models(name, expected):
    assert n_params(build_backbone(name)) == expected


@pytest.mark.parametrize("name, channels", [
    ("mobilenet0.25", (32, 64, 128, 256)),
    ("resnet18", (64, 128, 256, 512)),
])
def test_c2_to_c5_have_strides_4_to_32_with_ceil_rounding(name, channels):
    net = build_backbone(name).eval()
    feats = net(torch.zeros(1, 3, 100, 77))
    assert net.out_channels == channels
    assert [tuple(f.shape[1:]) for f in feats] == [
        (c, -(-100 // s), -(-77 // s)) for c, s in zip(channels, (4, 8, 16, 32))]


def test_mobilenet_c2_is_the_block_after_the_first_stride_2_block():
    net = MobileNetV1(0.25).eval()
    x = torch.randn(1, 3, 32, 32)
    expected = net.stage1[: MobileNetV1.C2_INDEX + 1](x)
    assert torch.equal(net(x)[0], expected)
    assert net.stage1[2][0].stride == (2, 2) and net.stage1[3][0].stride == (1, 1)


def test_extra_levels_halve_twice():
    extra = ExtraLevels(256, 64, 48).eval()
    c6, c7 = extra(torch.zeros(1, 256, 15, 20))
    assert c6.shape == (1, 48, 8, 10) and c7.shape == (1, 48, 4, 5)
    assert extra.out_channels == (48, 48)


def _torchvision_style_state(net: torch.nn.Module) -> dict[str, torch.Tensor]:
    """A checkpoint as torchvision writes it: our keys, random values, an fc, a DDP prefix."""
    state = {f"module.{k}": torch.randn_like(v) if v.is_floating_point() else v
             for k, v in net.state_dict().items()}
    state["module.fc.weight"] = torch.randn(1000, 512)
    state["module.fc.bias"] = torch.randn(1000)
    return state


def test_load_pretrained_maps_keys_and_drops_the_classifier(tmp_path):
    net = build_backbone("resnet18")
    state = _torchvision_style_state(net)
    path = tmp_path / "resnet18.pth"
    torch.save({"state_dict": state}, path)
    report = load_pretrained(net, path)
    assert torch.equal(net.layer1[0].conv1.weight, state["module.layer1.0.conv1.weight"])
    assert torch.equal(net.bn1.running_var, state["module.bn1.running_var"])
    assert {"fc.weight", "fc.bias"} <= set(report.dropped)
    assert report.missing == [] and report.unexpected == []


def test_load_pretrained_accepts_flat_features_numbering_for_mobilenet(tmp_path):
    net = MobileNetV1(0.25)
    source = MobileNetV1(0.25)
    flat = {}
    for k, v in source.state_dict().items():
        stage, index, rest = k.split(".", 2)
        offset = {"stage1": 0, "stage2": 6, "stage3": 12}[stage]
        flat[f"features.{offset + int(index)}.{rest}"] = v
    path = tmp_path / "mnet.pth"
    torch.save(flat, path)
    load_pretrained(net, path)
    assert torch.equal(net.stage2[0][3].weight, source.stage2[0][3].weight)
    assert torch.equal(net.stage3[1][0].weight, source.stage3[1][0].weight)


def test_load_pretrained_reports_missing_unexpected_and_bad_shapes(tmp_path):
    net = build_backbone("mobilenet0.25")
    state = {k: v.clone() for k, v in net.state_dict().items()}
    del state["stage3.1.3.weight"]
    state["stage9.0.weight"] = torch.zeros(1)
    path = tmp_path / "partial.pth"
    torch.save(state, path)
    with pytest.raises(ValueError, match="missing .*stage3.1.3.weight"):
        load_pretrained(net, path)
    report = load_pretrained(net, path, strict=False)
    assert report.missing == ["stage3.1.3.weight"] and report.unexpected == ["stage9.0.weight"]

    state["stage3.1.3.weight"] = torch.zeros(3, 3)
    torch.save(state, path)
    with pytest.raises(ValueError, match=r"partial.pth: stage3.1.3.weight has shape \(3, 3\)"):
        load_pretrained(net, path)
    with pytest.raises(FileNotFoundError):
        load_pretrained(net, tmp_path / "absent.pth")



@register_backbone("tiny_test_backbone")
class TinyBackbone(Backbone):
    """What a user's own backbone file holds: a Backbone subclass and its registration."""

    out_channels = (8, 8, 8, 8)

    def __init__(self) -> None:
        super().__init__()
        self.stages = torch.nn.ModuleList(
            torch.nn.Conv2d(3 if i == 0 else 8, 8, 3, stride=4 if i == 0 else 2, padding=1)
            for i in range(4))

    def forward(self, x):
        feats = []
        for stage in self.stages:
            x = stage(x)
            feats.append(x)
        return feats


def test_a_new_backbone_is_one_registration_and_builds_a_detector():
    from detectors.models.asfd import ASFD, ASFDConfig

    model = ASFD(ASFDConfig(backbone="tiny_test_backbone", width=16, feature_modules=(),
                            head_depth=0)).eval()
    assert isinstance(model.backbone, TinyBackbone)
    out = model(torch.zeros(1, 3, 64, 64))
    assert out.second.cls.shape[1] == out.second.anchors.shape[0] > 0
