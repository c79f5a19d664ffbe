"""The official WIDER FACE protocol: hand-worked cases, a sequential transcription of the official
algorithm as a cross-check, the shared official ground truth, and the prediction file format."""
from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

from asfd_cli.main import main as asfd_main
from detectors.data.wider import AnnotationError
from detectors.evaluation.wider_eval import (
    SETTINGS, THRESHOLDS, WiderGroundTruth, evaluate_wider, load_wider_ground_truth,
    read_prediction_file, voc_ap, wider_iou, write_wider_predictions,
)

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
GT_DIR = DATA / "wider-val-sample" / "ground_truth"
needs_gt = pytest.mark.skipif(not GT_DIR.is_dir(),
                              reason=f"official ground truth sample not found at {GT_DIR}")

G1, G2 = [0, 0, 9, 9], [20, 0, 29, 9]  # xyxy; 10 x 10 pixels each with the +1 convention
FAR = [100, 100, 109, 109]


def ground_truth(images: dict[str, tuple[list, list[bool]]]) -> WiderGroundTruth:
    """Same countable mask in every setting."""
    keys = tuple(images)
    boxes = tuple(np.array(b, dtype=float).reshape(-1, 4) for b, _ in images.values())
    masks = tuple(np.array(m, dtype=bool) for _, m in images.values())
    return WiderGroundTruth(keys, boxes, {s: masks for s in SETTINGS})


def preds(*rows):
    boxes, scores = zip(*rows)
    return np.array(boxes, dtype=float), np.array(scores, dtype=float)


def test_iou_uses_the_plus_one_pixel_convention():
    # Overlap 5 x 10 pixels, each box 10 x 10: 50 / 150.
    iou = wider_iou(np.array([G1], float), np.array([[5, 0, 14, 9], G1], float))
    np.testing.assert_allclose(iou, [[1 / 3, 1.0]])


def test_duplicate_detection_is_a_false_positive():
    gt = ground_truth({"e/a": ([G1, G2], [True, True])})
    # Normalised scores 1, 2/3, 1/3, 0: TP, duplicate (FP), TP, far away (FP).
    r = evaluate_wider({"e/a": preds((G1, 0.9), (G1, 0.8), (G2, 0.7), (FAR, 0.6))}, gt)["hard"]
    assert r.ap == pytest.approx(0.5 * 1 + 0.5 * 2 / 3)
    at = [np.flatnonzero(np.isclose(THRESHOLDS, t))[0] for t in (0.9, 0.5, 0.2, 0.0)]
    np.testing.assert_allclose(r.precision[at], [1.0, 0.5, 2 / 3, 0.5])
    np.testing.assert_allclose(r.recall[at], [0.5, 0.5, 1.0, 1.0])
    assert r.num_faces == 2


def test_detection_on_an_ignored_face_is_dropped_not_a_proposal():
    gt = ground_truth({"e/a": ([G1, G2], [True, False])})
    # Normalised 1, 0.5625, 0: on the ignored G2 (dropped), on G1 (TP), far away (FP).
    r = evaluate_wider({"e/a": preds((G2, 0.9), (G1, 0.55), (FAR, 0.1))}, gt)["easy"]
    assert r.num_faces == 1
    assert r.precision[-1] == pytest.approx(0.5)  # 1 TP / 2 proposals (the dropped one is not one)
    assert r.precision[0] == 0.0 and r.recall[0] == 0.0  # only the dropped one passes t = 0.999
    assert r.ap == pytest.approx(1.0)


def test_images_without_predictions_count_their_faces(tmp_path):
    gt = ground_truth({"e/a": ([G1], [True]), "e/b": ([G1, G2], [True, True])})
    expected = re.escape("no predictions for 1 of 2 images (e.g. ['e/b'])")
    with pytest.warns(UserWarning, match=expected):
        r = evaluate_wider({"e/a.jpg": preds((G1, 0.5), (FAR, 0.4))}, gt)
    assert r["medium"].num_faces == 3
    assert r["medium"].recall.max() == pytest.approx(1 / 3)
    assert r["medium"].ap == pytest.approx(1 / 3)


def test_ties_in_score_enter_together():
    gt = ground_truth({"e/a": ([G1, G2], [True, True])})
    # Normalised 1, 1, 0: TP and FP tie, so precision is 1/2 at every threshold above 0.
    r = evaluate_wider({"e/a": preds((G1, 0.7), (FAR, 0.7), (G2, 0.2))}, gt)["hard"]
    assert set(np.round(r.precision[:-1], 6)) == {0.5}
    assert (r.precision[-1], r.recall[-1]) == pytest.approx((2 / 3, 1.0))
    assert r.ap == pytest.approx(2 / 3)  # envelope: 2/3 over the whole recall range


def test_all_scores_equal_pass_every_threshold():
    gt = ground_truth({"e/a": ([G1, G2], [True, True])})
    # max == min: the official code divides by zero (NaN scores, AP 0); we set all scores to 1.
    r = evaluate_wider({"e/a": preds((G1, 0.5), (FAR, 0.5))}, gt)["hard"]
    np.testing.assert_allclose(r.precision, 0.5)
    np.testing.assert_allclose(r.recall, 0.5)
    assert r.ap == pytest.approx(0.25)


def test_voc_ap_envelope():
    ap = voc_ap(np.array([0.5, 0.5, 1.0]), np.array([1.0, 0.5, 0.25]))
    assert ap == pytest.approx(0.5 * 1.0 + 0.5 * 0.25)


def official_sequential(gt: WiderGroundTruth, detections, setting, iou_thresh=0.5):
    """A line-by-line transcription of the official MATLAB loops (read_pred sort, norm_score,
    image_evaluation, image_pr_info, dataset_pr_info, VOCap)."""
    def overlap(a, b):
        iw = min(a[2], b[2]) - max(a[0], b[0]) + 1
        ih = min(a[3], b[3]) - max(a[1], b[1]) + 1
        if iw <= 0 or ih <= 0:
            return 0.0
        area_a = (a[2] - a[0] + 1) * (a[3] - a[1] + 1)
        area_b = (b[2] - b[0] + 1) * (b[3] - b[1] + 1)
        return iw * ih / (area_a + area_b - iw * ih)

    sorted_preds = {}
    for k, (b, s) in detections.items():
        order = np.argsort(-s, kind="stable")
        sorted_preds[k] = (b[order], s[order])
    all_scores = np.concatenate([s for _, s in sorted_preds.values()])
    lo, hi = all_scores.min(), all_scores.max()
    pr = np.zeros((1000, 2))
    count_face = 0
    for key, gt_boxes, keep in zip(gt.keys, gt.boxes, gt.countable[setting]):
        count_face += keep.sum()
        if key not in sorted_preds or len(gt_boxes) == 0:
            continue
        boxes, scores = sorted_preds[key]
        scores = (scores - lo) / (hi - lo)
        recall_list = np.zeros(len(gt_boxes))
        proposal_list = np.ones(len(boxes))
        pred_recall = np.zeros(len(boxes))
        for h in range(len(boxes)):
            ov = [overlap(gt_b, boxes[h]) for gt_b in gt_boxes]
            idx = int(np.argmax(ov))
            if ov[idx] >= iou_thresh:
                if not keep[idx]:
                    recall_list[idx] = -1
                    proposal_list[h] = -1
                elif recall_list[idx] == 0:
                    recall_list[idx] = 1
            pred_recall[h] = np.sum(recall_list == 1)
        for t in range(1000):
            thresh = 1 - (t + 1) / 1000
            r_index = np.flatnonzero(scores >= thresh)
            if len(r_index):
                r = r_index[-1]
                pr[t] += [np.sum(proposal_list[:r + 1] == 1), pred_recall[r]]
    with np.errstate(invalid="ignore"):
        precision = pr[:, 1] / pr[:, 0]
    recall = pr[:, 1] / count_face
    mrec, mpre = np.concatenate(([0], recall, [1])), np.concatenate(([0], precision, [0]))
    for i in range(len(mpre) - 2, -1, -1):
        mpre[i] = np.fmax(mpre[i], mpre[i + 1])  # MATLAB max ignores NaN
    i = np.flatnonzero(mrec[1:] != mrec[:-1]) + 1
    return np.sum((mrec[i] - mrec[i - 1]) * mpre[i]), np.nan_to_num(precision), recall


def test_matches_a_transcription_of_the_official_loops():
    rng = np.random.default_rng(0)
    images, detections = {}, {}
    for n in range(6):
        g = int(rng.integers(0, 12))
        xy = rng.uniform(0, 200, (g, 2))
        gt_boxes = np.concatenate([xy, xy + rng.uniform(1, 30, (g, 2))], axis=1)
        images[f"e/{n}"] = (gt_boxes, list(rng.random(g) < 0.7))
        near = gt_boxes[rng.integers(0, max(g, 1), 2 * g)] if g else np.zeros((0, 4))
        jitter = near + rng.normal(0, 2, near.shape)
        xy = rng.uniform(0, 200, (10, 2))
        clutter = np.concatenate([xy, xy + rng.uniform(1, 30, (10, 2))], axis=1)
        boxes = np.concatenate([jitter, clutter])
        detections[f"e/{n}"] = (boxes, np.round(rng.random(len(boxes)), 1))  # ties on purpose
    gt = ground_truth(images)
    for setting in SETTINGS:
        ap, precision, recall = official_sequential(gt, detections, setting)
        result = evaluate_wider(detections, gt)[setting]
        np.testing.assert_allclose(result.precision, precision, atol=1e-12)
        np.testing.assert_allclose(result.recall, recall, atol=1e-12)
        assert result.ap == pytest.approx(ap, abs=1e-12)
        assert 0.05 < result.ap < 0.95  # a non-trivial case


@needs_gt
def test_official_ground_truth_as_predictions_gives_ap_one(tmp_path):
    gt = load_wider_ground_truth(GT_DIR.parent)  # also finds ground_truth/ below
    assert len(gt.keys) == 136 and sum(len(b) for b in gt.boxes) == 2426
    assert [sum(int(m.sum()) for m in gt.countable[s]) for s in SETTINGS] == [359, 697, 1992]
    scores = np.arange(2426, 0, -1, dtype=float)  # strictly decreasing over the whole set
    offsets = np.cumsum([0] + [len(b) for b in gt.boxes])
    detections = {k + ".jpg": (b, scores[offsets[i]:offsets[i + 1]])
                  for i, (k, b) in enumerate(zip(gt.keys, gt.boxes))}
    assert {s: r.ap for s, r in evaluate_wider(detections, GT_DIR).items()} == pytest.approx(
        {"easy": 1.0, "medium": 1.0, "hard": 1.0})
    write_wider_predictions(tmp_path / "preds", detections)
    from_files = evaluate_wider(tmp_path / "preds", GT_DIR)
    assert [from_files[s].ap for s in SETTINGS] == pytest.approx([1.0, 1.0, 1.0])
    argv = ["eval-preds", str(tmp_path / "preds"), str(GT_DIR), "--plot", str(tmp_path / "pr.png")]
    assert asfd_main(argv) == 0
    assert (tmp_path / "pr.png").stat().st_size > 0


def test_prediction_files_round_trip_sorted_by_score(tmp_path):
    boxes = np.array([[1, 2, 11, 22], [5, 5, 8, 9]], dtype=float)
    write_wider_predictions(tmp_path, {"0--Parade/x_1.jpg": (boxes, np.array([0.2, 0.9]))})
    lines = (tmp_path / "0--Parade" / "x_1.txt").read_text().splitlines()
    assert lines[:2] == ["x_1", "2"]
    assert lines[2].split() == ["5.000", "5.000", "3.000", "4.000", "0.900000"]
    read_boxes, read_scores = read_prediction_file(tmp_path / "0--Parade" / "x_1.txt")
    np.testing.assert_allclose(read_boxes, boxes[::-1])
    np.testing.assert_allclose(read_scores, [0.9, 0.2])


@pytest.mark.parametrize("text, line, message", [
    ("x\n2\n1 2 3 4 0.5\n", 2, "declares 2 boxes but 1 lines follow"),
    ("x\n1\n1 2 3 0.5\n", 3, "expected 5 fields"),
    ("x\n2\n1 2 3 4 0.5\n1 2 3 4 high\n", 4, "non-numeric field"),
    ("x\nmany\n", 2, "box count must be a non-negative integer"),
    ("x\n2\n1 2 3 4 0.5\n1 2 3 4 nan\n", 4, "non-finite value in '1 2 3 4 nan'"),
    ("x\n2\n1 2 3 4 inf\n1 2 3 4 0.5\n", 3, "non-finite value in '1 2 3 4 inf'"),
    ("x\n1\n1 -inf 3 4 0.5\n", 3, "non-finite value"),
])
def test_bad_prediction_files_name_file_and_line(tmp_path, text, line, message):
    path = tmp_path / "p.txt"
    path.write_text(text)
    with pytest.raises(AnnotationError, match=re.escape(f"{path}:{line}: {message}")):
        read_prediction_file(path)


def test_non_finite_in_memory_predictions_are_rejected():
    gt = ground_truth({"a/1": ([G1], [True])})
    with pytest.raises(ValueError, match="predictions for a/1: non-finite"):
        evaluate_wider({"a/1": preds((G1, float("nan")))}, gt)


def test_a_folder_with_no_matching_file_names_the_expected_layout(tmp_path):
    gt = ground_truth({"0--Parade/x_1": ([G1], [True])})
    write_wider_predictions(tmp_path, {"x_1": preds((G1, 0.9))})  # flat, as detect wrote it
    with pytest.raises(FileNotFoundError, match=re.escape(
            f"expected one <event>/<name>.txt per image, e.g. {tmp_path}/0--Parade/x_1.txt; "
            f"found {tmp_path}/x_1.txt instead")):
        evaluate_wider(tmp_path, gt)


@needs_gt
def test_eval_preds_scores_the_listed_images_only(tmp_path, capsys):
    gt = load_wider_ground_truth(GT_DIR)
    listed = [k for i, k in enumerate(gt.keys) if gt.countable["easy"][i].any()][:3]
    detections = {k: (gt.boxes[gt.keys.index(k)], np.linspace(1, 0.5, len(gt.boxes[i])))
                  for i, k in enumerate(gt.keys) if k in listed}
    write_wider_predictions(tmp_path / "preds", detections)
    (tmp_path / "list.txt").write_text("".join(f"{k}.jpg\n" for k in listed))
    argv = ["eval-preds", str(tmp_path / "preds"), str(GT_DIR)]
    assert asfd_main([*argv, "--images", str(tmp_path / "list.txt")]) == 0
    out = capsys.readouterr().out
    assert "3 images" in out and out.count("1.0000") == 3
    with pytest.warns(UserWarning, match="no predictions for 133 of 136 images"):
        assert asfd_main(argv) == 0  # the whole set: the other images' faces are missed
    assert "1.0000" not in capsys.readouterr().out
    (tmp_path / "list.txt").write_text("0--Parade/not_there.jpg\n")
    assert asfd_main([*argv, "--images", str(tmp_path / "list.txt")]) == 2
    err = " ".join(capsys.readouterr().err.split())  # rich wraps long lines
    assert "list.txt: 1 image(s) have no official ground truth" in err
    (tmp_path / "preds" / listed[0]).with_suffix(".txt").write_text("x\n1\n1 2 3 4 nan\n")
    assert asfd_main(argv) == 2
    assert ".txt:3: non-finite value" in " ".join(capsys.readouterr().err.split())
