"""The shared heads: per-map BatchNorm, initialisation with a prior, and old checkpoints."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from detectors.models.asfd import ASFD, asfd_config, build_asfd, load_model, save_model
from detectors.models.heads import (
    DetectionHeads, PredictionHead, init_head_, last_conv, prior_logits,
)


def test_prior_logits_give_the_prior_face_probability():
    for prior in (0.01, 0.2, 0.5):
        assert torch.softmax(prior_logits(prior), 0)[1].item() == pytest.approx(prior)
    with pytest.raises(ValueError, match="cls_prior must lie in"):
        prior_logits(1.0)


def test_per_map_norms_share_the_convs_and_keep_their_own_statistics():
    torch.manual_seed(0)
    head = PredictionHead(8, depth=1, outputs=2, norm="batch", n_maps=3).train()
    small, large = torch.randn(4, 8, 5, 5), 10 + 5 * torch.randn(4, 8, 5, 5)
    head([small, large], first_map=1)          # maps 1 and 2
    means = [bn.running_mean.abs().mean().item() for bn in head.norms[0]]
    assert means[0] == 0                       # map 0 untouched
    assert means[2] > 10 * means[1] > 0        # each map normalised by its own statistics
    with pytest.raises(ValueError, match="head has 3 maps"):
        head([small, small], first_map=2)
    # without norms every map runs the same function
    plain = PredictionHead(8, depth=1, outputs=2, norm="none").eval()
    assert torch.equal(plain([small], 0), plain([small], 5)) and not plain.per_map


def test_init_keeps_the_signal_and_sets_the_prior_bias():
    torch.manual_seed(0)
    head = PredictionHead(64, depth=1, outputs=2, norm="batch", n_maps=1).train()
    init_head_(head, prior_logits(0.01))
    out = last_conv(head.predict)
    assert out.weight.std().item() == pytest.approx(1 / math.sqrt(64), rel=0.15)
    assert out.bias[1].item() == pytest.approx(math.log(0.01 / 0.99))
    logits = head([torch.randn(8, 64, 16, 16)])
    # logit gaps centred on the prior's, with a spread of order one (the gradient flows back)
    gap = logits[..., 1] - logits[..., 0]
    assert gap.median().item() == pytest.approx(math.log(0.01 / 0.99), abs=1.0)
    assert 0.2 < gap.std().item() < 5


def test_detector_heads_follow_the_config():
    d0 = build_asfd("D0")
    assert d0.config.head_norm == "batch" and d0.config.cls_prior == 0.001
    assert d0.heads.n_maps == d0.config.head_maps == 11          # 6 second-shot + 5 first-shot
    single = ASFD(asfd_config("D0", dual_shot=False), d0.genotype)
    assert single.heads.n_maps == 6
    with pytest.raises(ValueError, match="heads have norms for 3 maps"):
        type(d0).__bases__[0](d0.backbone, d0.feature_module,
                              DetectionHeads(64, 1, norm="batch", n_maps=3), 64)


def _as_version_1(model: ASFD, path) -> None:
    """Write ``model`` (heads without norms, default init) the way version 1 of the format did."""
    save_model(model, path)
    ckpt = torch.load(path, weights_only=True)
    config = {k: v for k, v in ckpt["config"].items()
              if k not in ("head_norm", "cls_prior", "passthrough_topdown")}
    state = {}
    for key, value in ckpt["state_dict"].items():
        parts = key.split(".")
        if parts[:1] == ["heads"] and parts[2:3] == ["convs"]:
            key = ".".join([*parts[:2], "tower", str(2 * int(parts[3])), *parts[4:]])
        state[key] = value
    torch.save({**ckpt, "version": 1, "config": config, "state_dict": state}, path)


def test_version_1_checkpoints_still_load(tmp_path):
    torch.manual_seed(0)
    old = build_asfd("D0", head_depth=2, head_norm="none", cls_prior=None,
                     passthrough_topdown=False).eval()
    _as_version_1(old, tmp_path / "v1.pt")
    loaded = load_model(tmp_path / "v1.pt").eval()
    assert loaded.config.head_norm == "none" and loaded.config.cls_prior is None
    assert not loaded.config.passthrough_topdown
    x = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(old(x).second.cls, loaded(x).second.cls)
    assert isinstance(loaded.heads.cls.convs[1], nn.Sequential)


def test_d0_overfits_one_small_batch_below_the_constant_predictor_plateau():
    """A learning test, not a timed one: ASFD-D0 as ``build_asfd("D0")`` builds it (full width)
    leaves the plateau of the image-blind classifier on one fixed batch of synthetic faces."""
    from detectors.data.image import to_tensor
    from detectors.data.synthetic import synthesize_image
    from detectors.models.losses import DRMCLoss, constant_predictor_loss

    rng = np.random.default_rng(3)
    images, boxes = [], []
    while len(images) < 2:
        _, image, faces = synthesize_image((128, 128), rng)
        if faces:
            images.append(to_tensor(np.asarray(image)))
            boxes.append(torch.tensor([f.box for f in faces], dtype=torch.float32))
    images = torch.stack(images)
    torch.manual_seed(0)
    model = build_asfd("D0").train()
    loss_fn = DRMCLoss()
    plateau = constant_predictor_loss(loss_fn.margin, loss_fn.neg_pos_ratio)
    optimizer = torch.optim.AdamW(model.parameters(), lr=2e-3, weight_decay=5e-4)
    cls = []
    for _ in range(40):
        result = loss_fn(model(images), boxes)
        optimizer.zero_grad()
        result.total.backward()
        optimizer.step()
        cls.append(float(result.parts["second/cls"]))
    assert min(cls[-5:]) < 0.6 * plateau, cls
