"""DRMC loss (Eq. 6-8) and the DSFD baseline loss."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from detectors.models.box_ops import encode
from detectors.models.heads import DetectorOutput, ShotOutput
from detectors.models.losses import (
    constant_predictor_loss,
    LOSSES, DRMCLoss, DSFDLoss, build_loss, diou_loss, hard_negative_mask, margin_cross_entropy,
)


def t(*rows):
    return torch.tensor(rows, dtype=torch.float32)


def test_diou_is_zero_for_identical_boxes_and_matches_a_hand_case():
    boxes = t([0, 0, 10, 10], [3, 4, 5, 9])
    assert diou_loss(boxes, boxes).tolist() == pytest.approx([0, 0], abs=1e-6)
    # pred [0,0,2,2], gt [1,0,3,2]: IoU = 2/6; centres (1,1), (2,1): rho^2 = 1;
    # enclosing [0,0,3,2]: c^2 = 13.
    assert diou_loss(t([0, 0, 2, 2]), t([1, 0, 3, 2])).item() == pytest.approx(1 - 1 / 3 + 1 / 13)
    # Disjoint boxes: IoU 0, the distance term still gives a gradient direction.
    far = diou_loss(t([0, 0, 1, 1]), t([9, 0, 10, 1])).item()
    assert far == pytest.approx(1 + 81 / (100 + 1))


def test_diou_is_finite_for_degenerate_boxes():
    pred = t([2, 2, 2, 2]).requires_grad_()
    loss = diou_loss(pred, t([2, 2, 2, 2]))
    loss.sum().backward()
    assert torch.isfinite(loss).all() and torch.isfinite(pred.grad).all()


def test_margin_ce_equals_ce_at_zero_and_grows_with_the_margin():
    torch.manual_seed(0)
    logits, target = torch.randn(16, 2), torch.randint(0, 2, (16,))
    assert torch.allclose(margin_cross_entropy(logits, target, 0.0),
                          F.cross_entropy(logits, target, reduction="none"))
    losses = [margin_cross_entropy(logits, target, m).mean().item() for m in (0.0, 0.2, 0.5, 1.0)]
    assert losses == sorted(losses) and losses[0] < losses[-1]
    # Eq. 7 by hand for one sample: target class 1, logits (0, 1), m = 0.5.
    hand = -torch.log(torch.exp(torch.tensor(0.5)) / (1 + torch.exp(torch.tensor(0.5))))
    assert margin_cross_entropy(t([0, 1]), torch.tensor([1]), 0.5).item() == pytest.approx(
        hand.item())


def test_constant_predictor_loss_is_the_best_image_blind_classifier():
    # m = 0, 1:3: the face probability 1/4 everywhere, loss 4 H(1/4) per positive.
    assert constant_predictor_loss(0.0, 3.0) == pytest.approx(-math.log(0.25) - 3 * math.log(0.75))
    for margin in (0.0, 0.2, 1.0):
        best = constant_predictor_loss(margin, 3.0)
        gaps = torch.linspace(-6, 6, 12001)   # the same logit gap at every anchor
        logits = torch.stack([torch.zeros_like(gaps), gaps], -1)
        pos = margin_cross_entropy(logits, torch.ones(len(gaps), dtype=torch.long), margin)
        neg = margin_cross_entropy(logits, torch.zeros(len(gaps), dtype=torch.long), margin)
        assert float((pos + 3 * neg).min()) == pytest.approx(best, abs=1e-5)


def test_hard_negative_mask_keeps_three_hardest_negatives_per_positive():
    loss = t([0.1, 5.0, 0.2, 0.9, 0.3, 0.8, 0.7, 0.0],
             [0.5, 0.4, 0.3, 0.2, 0.1, 0.0, 0.6, 0.9])
    positive = torch.zeros(2, 8, dtype=torch.bool)
    positive[0, 0] = True
    mask = hard_negative_mask(loss, positive, 3)
    assert mask[0].nonzero().flatten().tolist() == [0, 1, 3, 5]
    # An image without faces contributes neg_pos_ratio negatives.
    assert mask[1].nonzero().flatten().tolist() == [0, 6, 7]


def _shot(n_anchors: int = 4, batch: int = 2, seed: int = 0) -> ShotOutput:
    g = torch.Generator().manual_seed(seed)
    anchors = t([0, 0, 16, 16], [16, 0, 32, 16], [0, 16, 16, 32], [16, 16, 32, 32])[:n_anchors]
    return ShotOutput(torch.randn(batch, n_anchors, 2, generator=g).requires_grad_(),
                      torch.randn(batch, n_anchors, 4, generator=g).mul(0.1).requires_grad_(),
                      anchors)


def test_drmc_follows_eq8_structure():
    second, first = _shot(seed=0), _shot(seed=1)
    gts = [t([1, 1, 15, 15]), t([17, 17, 31, 31], [0, 16, 15, 31])]
    loss = DRMCLoss(margin=0.2, lambda1=2.0, lambda2=0.5)
    total = loss(DetectorOutput(second, first), gts)
    only_second = loss(DetectorOutput(second, None), gts)
    r2, c2, n2 = loss.shot_loss(second, gts)
    r1, c1, n1 = loss.shot_loss(first, gts)
    assert n2.item() == 3 and n1.item() == 3
    assert only_second.total.item() == pytest.approx(((2.0 * r2 + c2) / n2).item(), rel=1e-6)
    assert total.total.item() == pytest.approx(
        ((2.0 * r2 + c2) / n2 + 0.5 * (2.0 * r1 + c1) / n1).item(), rel=1e-6)
    assert set(total.parts) == {f"{s}/{k}" for s in ("first", "second")
                                for k in ("reg", "cls", "num_pos")}
    total.total.backward()
    assert all(torch.isfinite(x.grad).all() for x in (second.cls, second.reg, first.reg))


def test_drmc_regression_is_diou_on_decoded_boxes():
    shot = _shot(n_anchors=1, batch=1)
    gt = t([1, 2, 15, 14])
    with torch.no_grad():
        shot.reg.copy_(encode(gt, shot.anchors)[None])   # a perfect regression
    reg, _, n = DRMCLoss().shot_loss(shot, [gt])
    assert n.item() == 1 and reg.item() == pytest.approx(0.0, abs=1e-5)


def test_losses_are_finite_without_faces_and_with_degenerate_boxes():
    for loss in (DRMCLoss(), DSFDLoss()):
        second, first = _shot(), _shot(seed=3)
        out = loss(DetectorOutput(second, first), [torch.zeros(0, 4), t([5, 5, 5, 12])])
        # No valid face: N is clamped to 1, the regression sum is empty.
        assert torch.isfinite(out.total) and out.parts["second/num_pos"].item() == 1
        assert out.parts["second/reg"].item() == 0
        out.total.backward()
        assert torch.isfinite(second.cls.grad).all() and second.cls.grad.abs().sum() > 0


def test_dsfd_loss_is_smooth_l1_on_offsets_plus_ce():
    shot = _shot(n_anchors=1, batch=1)
    gt = t([1, 2, 15, 14])
    reg, cls, _ = DSFDLoss().shot_loss(shot, [gt])
    target = encode(gt, shot.anchors)
    assert reg.item() == pytest.approx(
        F.smooth_l1_loss(shot.reg[0], target, reduction="sum").item())
    assert cls.item() == pytest.approx(
        F.cross_entropy(shot.cls[0], torch.tensor([1]), reduction="sum").item())


def test_loss_registry():
    assert set(LOSSES) >= {"drmc", "dsfd", "retinaface"}
    assert isinstance(build_loss("drmc", margin=0.3), DRMCLoss)
    assert build_loss("retinaface").lambda2 == 0
    with pytest.raises(KeyError, match="unknown loss 'focal'"):
        build_loss("focal")
