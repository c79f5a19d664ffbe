"""The dual-shot detector, the ASFD family (Table 1) and model checkpoints."""
from __future__ import annotations

import dataclasses

import pytest
import torch

from asfd_cli.main import main as asfd_main
from detectors.engine.macs import count_macs, count_parameters
from detectors.models.anchors import AnchorGenerator
from detectors.models.asfd import (
    ASFD, ASFD_FAMILY, CPM_HALF_DEPTH, HALF_DEPTH, NESTED_HALF_DEPTH, PAPER_TABLE5,
    TABLE5_HALF_DEPTH, ASFDConfig, DualShotDetector, FeatureCascade, asfd_config,
    autofem_modules, build_asfd, build_feature_cascade, load_model, save_model,
)
from detectors.models.backbones import build_backbone
from detectors.models.heads import DetectionHeads
from detectors.models.losses import DRMCLoss
from detectors.models.reference_detectors import build_reference_detector
from search_spaces.schemas import LEVELS

# A detector small enough for gradient steps in a unit test, on the shipped genotype's cells.
TINY = dict(width=16, head_depth=1)


def n_anchors(h: int, w: int, strides=(4, 8, 16, 32, 64, 128)) -> int:
    return sum(-(-h // s) * -(-w // s) for s in strides)



@pytest.fixture(scope="module")
def d0() -> ASFD:
    torch.manual_seed(0)
    return build_asfd("D0")


@pytest.mark.parametrize("h, w", [(100, 77), (160, 128)])
def test_d0_forward_any_size_both_shots_in_training(d0, h, w):
    d0.train()
    out = d0(torch.rand(2, 3, h, w))
    a = n_anchors(h, w)
    assert out.second.cls.shape == (2, a, 2) and out.second.reg.shape == (2, a, 4)
    # The first shot skips P2, which D0's AutoFEM passes through.
    assert out.first is not None
    assert out.first.cls.shape == (2, n_anchors(h, w, (8, 16, 32, 64, 128)), 2)
    assert torch.equal(out.second.anchors, d0.anchors_for(h, w))
    sizes = (out.first.anchors[:, 2:] - out.first.anchors[:, :2]).prod(1).sqrt()
    assert sizes[0].item() == pytest.approx(16) and sizes[-1].item() == pytest.approx(256)
    heights = out.first.anchors[:, 3] - out.first.anchors[:, 1]
    widths = out.first.anchors[:, 2] - out.first.anchors[:, 0]
    assert torch.allclose(heights / widths, torch.tensor(1.5))   # DSFD's official h/w


def test_inference_uses_the_second_shot_only(d0):
    d0.eval()
    with torch.no_grad():
        out = d0(torch.rand(1, 3, 64, 64))
        forced = d0(torch.rand(1, 3, 64, 64), first_shot=True)
    assert out.first is None and forced.first is not None


def test_both_shots_share_the_heads(d0):
    d0.eval()
    x = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        out = d0(x, first_shot=True)
        cls, reg = d0.heads(d0.pyramid(x)[1:], d0.first_map("first", 1))
    assert torch.equal(out.first.cls, cls) and torch.equal(out.first.reg, reg)
    assert d0.heads.n_maps == 6 + 5 and d0.first_map("first", 1) == 6
    # one set of conv weights; each map (level of a shot) has its own BatchNorm in the tower
    with torch.device("meta"):
        towered = build_asfd("D0", **CPM_HALF_DEPTH.options())
    assert len(towered.heads.cls.norms[0]) == towered.heads.n_maps == 11


#: Table 5 ratios (ours / paper) at 640x480: within 10% in params and MACs, but D2's MACs, which
#: no reading of depth 0.5 reaches (README, "The ASFD family"); D0 and D1 under the other
#: readings: CPM_HALF_DEPTH (D0-D2's earlier build) puts D0's MACs at 1.21, the others fit.
READINGS = {"": HALF_DEPTH, "cpm": CPM_HALF_DEPTH, "table5": TABLE5_HALF_DEPTH,
            "nested": NESTED_HALF_DEPTH}
TABLE5_BOUNDS = {v: ((0.9, 1.1), (0.9, 1.1)) for v in PAPER_TABLE5} | {
    "D2": ((0.9, 1.1), (0.6, 0.7))} | {
    f"{v}/{r}": ((0.9, 1.1), (0.9, 1.1)) for v in ("D0", "D1") for r in list(READINGS)[1:]} | {
    "D0/cpm": ((0.9, 1.1), (1.1, 1.3))}


@pytest.mark.parametrize("variant", [*PAPER_TABLE5, *(f"{v}/{r}" for v in ("D0", "D1")
                                                      for r in list(READINGS)[1:])])
def test_parameters_and_macs_against_table5(variant):
    name, _, reading = variant.partition("/")
    options = READINGS[reading].options() if reading else {}
    with torch.device("meta"):   # shapes only: counting D6 at 640x480 takes a second
        model = build_asfd(name, **options).eval()
    params = count_parameters(model) / 1e6 / PAPER_TABLE5[name].params_m
    macs = count_macs(model, torch.zeros(1, 3, 480, 640, device="meta")) / 1e9 \
        / PAPER_TABLE5[name].macs_b
    (p_lo, p_hi), (m_lo, m_hi) = TABLE5_BOUNDS[variant]
    assert p_lo <= params <= p_hi and m_lo <= macs <= m_hi, (params, macs)


def test_half_depth_runs_both_halves_on_p3_to_p7_before_bare_prediction_convs(d0):
    assert asfd_config("D0").enhanced_levels == HALF_DEPTH.levels == LEVELS[1:]
    assert asfd_config("D3").enhanced_levels == LEVELS
    fpn, cpm = d0.feature_module
    assert tuple(fpn.blocks) == tuple(cpm.blocks) == LEVELS[1:] and d0.passthrough == 1
    assert fpn.pathway == "one_hop"   # the shipped genotype's
    # Table 1's one head layer is the prediction conv at depth 0.5, a tower layer from D3 on
    assert [asfd_config(v).head_depth for v in ASFD_FAMILY] == [0, 0, 0, 2, 2, 4, 4]
    assert len(d0.heads.cls.convs) == len(d0.heads.reg.convs) == 0
    assert HALF_DEPTH.options()["head_depth"] == 0 and CPM_HALF_DEPTH.options()["head_depth"] == 1
    with torch.device("meta"):
        earlier = build_asfd("D0", **CPM_HALF_DEPTH.options())
    (cpm,) = earlier.feature_module
    assert tuple(cpm.blocks) == LEVELS[1:] and len(earlier.heads.cls.convs) == 1


def test_table5_half_depth_runs_both_halves_on_p4_to_p7():
    torch.manual_seed(0)
    d0 = build_asfd("D0", **TABLE5_HALF_DEPTH.options())
    fpn, cpm = d0.feature_module
    assert tuple(fpn.blocks) == tuple(cpm.blocks) == TABLE5_HALF_DEPTH.levels == LEVELS[2:]
    assert fpn.blocks["P4"].paths == ("same", "td")
    d0.eval()
    x = torch.rand(1, 3, 64, 64)
    up = lambda a, ref: torch.nn.functional.interpolate(  # noqa: E731
        a, size=ref.shape[-2:], mode="bilinear", align_corners=False)
    with torch.no_grad():
        first = d0.pyramid(x)
        second = d0(x).second
        enhanced = d0.feature_module(first[2:])
        # P3, P2: the lateral maps gated by the up-sampled level above (identity top-down path)
        p3 = first[1] * up(enhanced[0], first[1])
        p2 = first[0] * up(p3, first[0])
        fine_cls, _ = d0.heads([p2, p3])
    assert torch.allclose(second.cls[:, :fine_cls.shape[1]], fine_cls, atol=1e-6)
    assert len(enhanced) == 4
    assert all(not torch.equal(e, f) for e, f in zip(enhanced, first[2:]))


def test_nested_half_depth_runs_the_cpm_on_the_coarser_fpn_outputs():
    torch.manual_seed(0)
    d0 = build_asfd("D0", **(NESTED_HALF_DEPTH.options() | TINY)).eval()
    fpn, cpm = d0.feature_module
    assert tuple(fpn.blocks) == LEVELS[1:] and tuple(cpm.blocks) == LEVELS[2:]
    assert d0.feature_module.skips == (0, 1) and d0.passthrough == 1
    with torch.no_grad():
        first = d0.pyramid(torch.rand(1, 3, 64, 64))[1:]
        after_fpn = fpn(first)
        out = d0.feature_module(first)
        expected = [after_fpn[0], *cpm(after_fpn[1:])]
    assert len(out) == 5 and all(torch.equal(o, e) for o, e in zip(out, expected))


def test_feature_cascade_passes_the_skipped_finest_maps_unchanged():
    class Double(torch.nn.Module):
        def forward(self, feats):
            return [2 * f for f in feats]

    maps = [torch.full((1,), float(i)) for i in range(4)]
    out = FeatureCascade(Double(), Double(), skips=(1, 3))(maps)
    assert [o.item() for o in out] == [0.0, 2.0, 4.0, 12.0]
    with pytest.raises(ValueError, match="1 skips for 2 feature modules"):
        FeatureCascade(Double(), Double(), skips=(1,))


def test_module_levels_must_be_one_coarsest_set_per_module():
    both, levels = ("autofem_fpn", "autofem_cpm"), LEVELS[1:]
    with pytest.raises(ValueError, match="gives 1 level sets for 2 feature modules"):
        ASFDConfig(feature_modules=both, enhanced_levels=levels, module_levels=[levels])
    with pytest.raises(ValueError, match="module_levels of 'autofem_cpm' must be the coarsest"):
        ASFDConfig(feature_modules=both, enhanced_levels=levels,
                   module_levels=[levels, ["P3", "P4"]])
    config = ASFDConfig(feature_modules=both, enhanced_levels=levels,
                        module_levels=[list(levels), list(LEVELS[3:])])
    assert config.module_levels == (levels, LEVELS[3:])   # YAML lists accepted
    assert ASFDConfig(feature_modules=both).module_levels == ()   # every module on all levels


def test_nested_reading_round_trips_through_a_model_file(tmp_path):
    torch.manual_seed(0)
    model = build_asfd("D0", **(NESTED_HALF_DEPTH.options() | TINY)).eval()
    loaded = load_model(save_model(model, tmp_path / "nested.pt")).eval()
    assert loaded.config.module_levels == NESTED_HALF_DEPTH.module_levels
    x = torch.rand(1, 3, 48, 64)
    with torch.no_grad():
        assert torch.equal(loaded(x).second.cls, model(x).second.cls)


def test_enhanced_levels_must_be_the_coarsest_levels():
    for bad in ((), ("P2", "P3"), ("P3", "P5", "P6", "P7")):
        with pytest.raises(ValueError, match="enhanced_levels must be the coarsest levels"):
            ASFDConfig(enhanced_levels=bad)
    assert ASFDConfig(enhanced_levels=["P6", "P7"]).passthrough == 4   # YAML lists accepted


def test_the_family_is_listed_once(tmp_path, capsys):
    """D0..D6 is ``ASFD_FAMILY``'s keys: the ``Variant`` type, Table 5 and the CLI read it."""
    import typing

    from detectors.models.asfd import Variant

    assert list(ASFD_FAMILY) == [f"D{i}" for i in range(7)]
    assert typing.get_args(Variant) == tuple(ASFD_FAMILY)
    assert list(PAPER_TABLE5) == list(ASFD_FAMILY)
    with pytest.raises(KeyError, match=r"unknown ASFD variant 'D9'; registered: \['D0'"):
        asfd_config("D9")
    argv = ["derive", "asfd_paper_like", "--variant", "D9", "-o", str(tmp_path / "d9.pt")]
    assert asfd_main(argv) == 2 and not (tmp_path / "d9.pt").exists()
    assert "unknown ASFD variant 'D9'" in capsys.readouterr().err


def test_table1_scaling():
    assert [r.width for r in ASFD_FAMILY.values()] == [64, 64, 128, 192, 256, 320, 384]
    assert [r.head_depth for r in ASFD_FAMILY.values()] == [1, 1, 1, 2, 2, 4, 4]
    assert autofem_modules(0.5) == HALF_DEPTH.modules == autofem_modules(1)
    assert autofem_modules(2) == ("autofem_fpn", "autofem_cpm") * 2
    with pytest.raises(ValueError, match="0.5 or a positive integer"):
        autofem_modules(1.5)
    config = asfd_config("D3")
    assert (config.backbone, config.width, config.head_depth) == ("resnet34", 192, 2)
    assert config.feature_modules == ("autofem_fpn", "autofem_cpm")
    # F_c of AutoFEM-FPN: dense at D3/D4, separable elsewhere (calibrated against Table 5)
    assert [r.fpn_fuse == "dense" for r in ASFD_FAMILY.values()] == [0, 0, 0, 1, 1, 0, 0]
    with torch.device("meta"):
        assert build_asfd("D3").feature_module[0].blocks["P4"].fuse[1].groups == 1
        assert build_asfd("D5").feature_module[2].blocks["P4"].fuse[1].groups == 320
    with pytest.raises(KeyError, match="unknown ASFD variant 'D7'"):
        asfd_config("D7")


def test_single_shot_and_baseline_feature_modules():
    model = ASFD(ASFDConfig(width=16, feature_modules=("fem_fpn", "fem_cpm"), head_depth=0,
                            head_conv="full", dual_shot=False)).train()
    out = model(torch.rand(2, 3, 40, 40))   # batch 2: BatchNorm trains on the 1x1 top level
    assert out.first is None and out.second.cls.shape == (2, n_anchors(40, 40), 2)
    assert model.genotype is None
    with pytest.raises(ValueError, match="'autofem_cpm' needs a genotype"):
        ASFD(ASFDConfig(width=16))


def test_generic_detector_takes_any_pyramid_module():
    backbone = build_backbone("mobilenet0.25")
    model = DualShotDetector(backbone, build_feature_cascade(["none"], 8, None),
                             DetectionHeads(8, 0), channels=8).train()
    out = model(torch.rand(2, 3, 33, 33))
    assert out.first is not None
    assert torch.equal(out.first.cls, out.second.cls)   # identity feature module


def test_training_steps_reduce_the_drmc_loss():
    torch.manual_seed(0)
    model = build_asfd("D0", **TINY).train()
    images = torch.rand(2, 3, 64, 64)
    gts = [torch.tensor([[8.0, 8.0, 40.0, 44.0]]), torch.tensor([[30.0, 20.0, 50.0, 36.0]])]
    loss_fn = DRMCLoss()
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    losses = []
    for _ in range(10):
        loss = loss_fn(model(images), gts).total
        opt.zero_grad()
        loss.backward()
        assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.85 * losses[0], losses


def test_save_and_load_round_trip(tmp_path, d0):
    d0.eval()
    path = save_model(d0, tmp_path / "d0.pt", extra={"epoch": 3})
    loaded = load_model(path).eval()
    assert loaded.config == d0.config and loaded.genotype == d0.genotype
    assert torch.load(path, weights_only=True)["extra"] == {"epoch": 3}
    x = torch.rand(1, 3, 48, 64)
    with torch.no_grad():
        assert torch.equal(loaded(x).second.cls, d0(x).second.cls)
    torch.save({"weights": 1}, tmp_path / "other.pt")
    with pytest.raises(ValueError, match="not an asfd model checkpoint"):
        load_model(tmp_path / "other.pt")


def test_checkpoints_without_enhanced_levels_rebuild_on_all_levels(tmp_path):
    # Files written before the half-depth AutoFEM skipped P2 carry no ``enhanced_levels``.
    torch.manual_seed(0)
    old = ASFD(dataclasses.replace(asfd_config("D0", **TINY), enhanced_levels=LEVELS),
               build_asfd("D0", **TINY).genotype)
    path = save_model(old, tmp_path / "old.pt")
    ckpt = torch.load(path, weights_only=True)
    del ckpt["config"]["enhanced_levels"]
    torch.save(ckpt, path)
    assert load_model(path).config.enhanced_levels == LEVELS


def test_checkpoints_with_fixed_fpn_fusion_buffers_load(tmp_path):
    """Files written when the derived AutoFEM-FPN kept softmax(beta) as ``fusion`` buffers and
    before genotypes recorded a pathway (their FPN reads one hop) load as they were."""
    torch.manual_seed(0)
    model = build_asfd("D0", **(TABLE5_HALF_DEPTH.options() | TINY)).eval()
    path = save_model(model, tmp_path / "old.pt")
    ckpt = torch.load(path, weights_only=True)
    state = ckpt["state_dict"]
    for key in [k for k in state if k.endswith(".beta")]:
        state[key[:-len("beta")] + "fusion"] = torch.softmax(state.pop(key), 0)
    del ckpt["genotype"]["fpn"]["pathway"]
    torch.save(ckpt, path)
    loaded = load_model(path).eval()
    fpn = loaded.feature_module[0]
    assert fpn.pathway == "one_hop"
    assert torch.allclose(fpn.blocks["P5"].fusion_weights(),
                          model.feature_module[0].blocks["P5"].fusion_weights())


def test_config_round_trip_and_unknown_keys():
    config = dataclasses.replace(asfd_config("D5"), dual_shot=False)
    assert ASFDConfig.from_dict(config.to_dict()) == config
    with pytest.raises(ValueError, match=r"ckpt: unknown key\(s\) \['depth'\]"):
        ASFDConfig.from_dict({"depth": 3}, source="ckpt")


def test_anchors_given_as_a_mapping_become_a_generator():
    """``model.options: {anchors: {...}}`` (YAML) builds the same detector as the dataclass."""
    config = asfd_config("D0", anchors={"aspect_ratio": 1.5, "sizes": [8, 16, 32, 64, 128, 256]})
    assert config.anchors == AnchorGenerator(sizes=(8, 16, 32, 64, 128, 256), aspect_ratio=1.5)
    assert ASFDConfig.from_dict(config.to_dict()) == config
    with pytest.raises(ValueError, match=r"anchors: unknown key\(s\) \['aspect'\]"):
        asfd_config("D0", anchors={"aspect": 1.5})


def test_asfd_anchors_default_to_dsfd_official_aspect_ratio():
    """The ASFD family uses DSFD's official h/w = 1.5; the bare generator stays square."""
    assert asfd_config("D0").anchors.aspect_ratio == 1.5
    assert AnchorGenerator().aspect_ratio == 1.0


def test_reference_detector_anchors_given_as_a_mapping():
    """``model.options: {anchors: {...}}`` for the baseline builds its multi-anchor generator;
    an unknown key is a one-line error, not an AttributeError deep in the constructor."""
    model = build_reference_detector("retinaface_mnet025", anchors={"sizes": [[16], [64], [256]]})
    assert model.anchor_generator.sizes == ((16,), (64,), (256,))
    assert model.heads.cls[0].out_channels == 2
    with pytest.raises(ValueError, match=r"anchors: unknown key\(s\) \['aspect_ratio'\]"):
        build_reference_detector("retinaface_mnet025", anchors={"aspect_ratio": 1.5})


def test_profile_command_prints_ours_and_the_paper(capsys):
    assert asfd_main(["profile", "D0", "--size", "160x128", "--repeats", "1"]) == 0
    out = capsys.readouterr().out
    assert "ASFD-D0" in out and "mobilenet0.25" in out and "0.62" in out and "0.73" in out
    assert asfd_main(["profile", "D9"]) == 2
    assert "neither a variant" in capsys.readouterr().err


def test_profile_command_takes_reference_detectors_and_their_files(tmp_path, capsys):
    path = save_model(build_reference_detector("retinaface_mnet025"), tmp_path / "r.pt")
    assert asfd_main(["profile", "retinaface_mnet025", "dsfd_like", str(path), "--size", "64",
                      "--repeats", "0"]) == 0
    out = capsys.readouterr().out
    assert out.count("RetinaFace-MobileNet0.25") == 2 and "DSFD-like" in out
    assert "0.46" in out  # params (M), as the README gives them


def test_passed_through_levels_get_a_recursive_top_down_path():
    model = build_asfd("D0", enhanced_levels=("P4", "P5", "P6", "P7")).eval()
    up = lambda x, ref: torch.nn.functional.interpolate(  # noqa: E731
        x, size=ref.shape[-2:], mode="bilinear", align_corners=False)
    c2, c3 = torch.rand(1, 4, 16, 16), torch.rand(1, 4, 8, 8)
    e4 = torch.rand(1, 4, 4, 4)
    p2, p3 = model.passthrough_levels([c2, c3], e4)
    assert torch.allclose(p3, c3 * up(e4, c3)) and torch.allclose(p2, c2 * up(p3, c2))
    model.passthrough_topdown = False
    assert model.passthrough_levels([c2, c3], e4) == [c2, c3]
