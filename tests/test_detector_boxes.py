"""Box geometry, anchors and matching of the detector."""
from __future__ import annotations

import math

import pytest
import torch

from detectors.models.anchors import AnchorGenerator
from detectors.models.box_ops import batched_nms, box_iou, decode, encode, nms
from detectors.models.matching import match_anchors, match_batch


def t(*rows):
    return torch.tensor(rows, dtype=torch.float32)


def test_box_iou_hand_values():
    a = t([0, 0, 10, 10])
    b = t([0, 0, 10, 10], [5, 0, 15, 10], [20, 20, 30, 30], [3, 3, 3, 8])
    assert box_iou(a, b)[0].tolist() == pytest.approx([1.0, 50 / 150, 0.0, 0.0])


def test_encode_uses_ssd_variances_and_decode_inverts_it():
    anchor = t([0, 0, 16, 16])           # centre (8, 8), size 16
    gt = t([2, 4, 22, 20])               # centre (12, 12), size 20 x 16
    offsets = encode(gt, anchor)
    assert offsets[0].tolist() == pytest.approx(
        [4 / (0.1 * 16), 4 / (0.1 * 16), math.log(20 / 16) / 0.2, 0.0])
    boxes = torch.rand(50, 2) * 100
    boxes = torch.cat([boxes, boxes + 1 + torch.rand(50, 2) * 50], 1)
    anchors = torch.rand(50, 2) * 100
    anchors = torch.cat([anchors, anchors + 1 + torch.rand(50, 2) * 50], 1)
    assert torch.allclose(decode(encode(boxes, anchors), anchors), boxes, atol=1e-4)


def test_nms_greedy_order_threshold_and_top_k():
    boxes = t([0, 0, 10, 10], [1, 0, 11, 10], [20, 20, 30, 30], [0, 0, 10, 9], [50, 50, 60, 60])
    scores = torch.tensor([0.9, 0.8, 0.7, 0.95, 0.1])
    # box 3 (0.95) suppresses 0 (IoU 0.9) and 1 (IoU ~0.74); 2 and 4 are apart.
    assert nms(boxes, scores, 0.3).tolist() == [3, 2, 4]
    assert nms(boxes, scores, 0.95).tolist() == [3, 0, 1, 2, 4]
    assert nms(boxes, scores, 0.3, post_top_k=2).tolist() == [3, 2]
    assert nms(boxes, scores, 0.3, pre_top_k=2).tolist() == [3]
    per_image = batched_nms(boxes[None].repeat(2, 1, 1), torch.stack([scores, scores.flip(0)]))
    assert per_image[0].tolist() == [3, 2, 4]
    assert nms(torch.zeros(0, 4), torch.zeros(0)).tolist() == []


def test_anchor_grid_centres_sizes_and_order():
    gen = AnchorGenerator(strides=(4, 8), sizes=(16, 32))
    anchors = gen([(2, 3), (1, 2)])
    assert anchors.shape == (2 * 3 + 1 * 2, 4)
    assert anchors[0].tolist() == [2 - 8, 2 - 8, 2 + 8, 2 + 8]        # (x, y) = (0, 0)
    assert anchors[1].tolist() == [6 - 8, 2 - 8, 6 + 8, 2 + 8]        # row-major: x first
    assert anchors[3].tolist() == [2 - 8, 6 - 8, 2 + 8, 6 + 8]        # next row
    assert anchors[6].tolist() == [4 - 16, 4 - 16, 4 + 16, 4 + 16]    # level 2 starts
    first = gen([(2, 3), (1, 2)], shot="first")
    assert (first[:, 2] - first[:, 0]).tolist() == [8.0] * 6 + [16.0] * 2
    # The levels from ``first_level`` on: level 2 alone, as in the full set.
    assert torch.equal(gen([(1, 2)], first_level=1), anchors[6:])
    with pytest.raises(ValueError, match="got 2 feature maps, the anchors have 1 levels from "
                                         "level 1"):
        gen([(2, 3), (1, 2)], first_level=1)


def test_anchor_aspect_ratio_and_feature_shapes():
    gen = AnchorGenerator(aspect_ratio=1.5)
    a = gen.level_anchors((1, 1), 4, 16)[0]
    w, h = (a[2] - a[0]).item(), (a[3] - a[1]).item()
    assert h / w == pytest.approx(1.5) and w * h == pytest.approx(256)
    assert gen.feature_shapes(100, 77) == [(25, 20), (13, 10), (7, 5), (4, 3), (2, 2), (1, 1)]
    with pytest.raises(ValueError, match="got 2 feature maps"):
        gen([(1, 1), (1, 1)])


def test_matching_threshold_and_forced_best_anchor():
    anchors = t([0, 0, 10, 10], [0, 0, 20, 20], [100, 100, 110, 110], [40, 40, 50, 50])
    gt = t([0, 0, 10, 12],      # IoU 0.83 with anchor 0
           [38, 38, 60, 60])    # best anchor 3 with IoU 100/484 = 0.21 < 0.35: forced
    m = match_anchors(anchors, gt, iou_threshold=0.35)
    assert m.labels.tolist() == [1, 0, 0, 1]   # anchor 1: IoU 120/400 = 0.3 < 0.35
    assert m.boxes[0].tolist() == gt[0].tolist() and m.boxes[3].tolist() == gt[1].tolist()
    assert match_anchors(anchors, gt, iou_threshold=0.25).labels.tolist() == [1, 1, 0, 1]


def test_matching_without_faces_and_with_degenerate_boxes():
    anchors = t([0, 0, 10, 10], [0, 0, 20, 20])
    empty = match_anchors(anchors, torch.zeros(0, 4))
    assert empty.labels.tolist() == [0, 0]
    degenerate = match_anchors(anchors, t([5, 5, 5, 9]))   # zero width: dropped, not forced
    assert degenerate.labels.tolist() == [0, 0]
    batch = match_batch(anchors, [t([0, 0, 10, 10]), torch.zeros(0, 4)])
    assert batch.labels.tolist() == [[1, 0], [0, 0]] and batch.boxes.shape == (2, 2, 4)


def _match_one_by_one(anchors, gt, iou_threshold):
    """The SSD loop, image by image: the reference the batched matching must equal."""
    gt = gt[(gt[:, 2] > gt[:, 0]) & (gt[:, 3] > gt[:, 1])]
    labels, boxes = torch.zeros(len(anchors), dtype=torch.long), torch.zeros(len(anchors), 4)
    if len(gt):
        iou = box_iou(gt, anchors)
        best_iou, best_gt = iou.max(dim=0)
        for face, anchor in enumerate(iou.argmax(dim=1).tolist()):
            best_gt[anchor], best_iou[anchor] = face, 1.0
        labels, boxes = (best_iou >= iou_threshold).long(), gt[best_gt]
    return labels, boxes


@pytest.mark.parametrize("max_elements, merge_cost", [
    (1 << 25, 1 << 30),   # one pass, every image padded to the most crowded one
    (200, 1 << 30),       # chunks cut by size
    (1 << 25, 0),         # chunks of equal face counts only (the CPU's choice, at the limit)
    (1 << 25, 300),       # in between: the padding a chunk takes is bounded
])
def test_batched_matching_equals_the_per_image_loop(max_elements, merge_cost):
    g = torch.Generator().manual_seed(0)
    xy = torch.rand(60, 2, generator=g) * 50
    anchors = torch.cat((xy, xy + 4 + torch.rand(60, 2, generator=g) * 12), dim=1)
    faces = []
    for count in (0, 1, 7, 3, 12, 3, 0):
        f_xy = torch.rand(count, 2, generator=g) * 50
        f = torch.cat((f_xy, f_xy + torch.rand(count, 2, generator=g) * 15), dim=1)
        if count > 2:
            f[1] = f[0] + 0.25               # two faces with one best anchor: the later wins
            f[2, 2] = f[2, 0]                # zero width: dropped
        faces.append(f)
    batch = match_batch(anchors, faces, 0.3, max_elements=max_elements,
                        merge_cost=merge_cost)
    for i, f in enumerate(faces):
        labels, boxes = _match_one_by_one(anchors, f, 0.3)
        assert torch.equal(batch.labels[i], labels)
        positive = labels == 1
        assert torch.equal(batch.boxes[i][positive], boxes[positive])


def test_nms_equals_the_greedy_definition_on_many_boxes():
    """The survivor-only rounds give exactly the textbook O(N^2) greedy result."""
    g = torch.Generator().manual_seed(0)
    xy = torch.rand(600, 2, generator=g) * 200
    boxes = torch.cat([xy, xy + torch.rand(600, 2, generator=g) * 40 + 2], 1)
    scores = torch.rand(600, generator=g)
    order = scores.argsort(descending=True)
    suppress = (box_iou(boxes[order], boxes[order]) > 0.3).triu(1)
    alive, expected = torch.ones(600, dtype=torch.bool), []
    for i in range(600):
        if alive[i]:
            expected.append(int(order[i]))
            alive &= ~suppress[i]
    assert nms(boxes, scores, 0.3, post_top_k=None).tolist() == expected
    assert nms(boxes, scores, 0.3, post_top_k=50).tolist() == expected[:50]
