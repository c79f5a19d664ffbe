"""FDDB ROC: ellipse/box region overlap, one-to-one matching, discrete and continuous scores."""
from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

from asfd_cli.main import main as asfd_main
from detectors.data.fddb import FDDBAnnotation
from detectors.data.wider import AnnotationError
from detectors.evaluation.fddb_eval import (
    ellipse_box_iou, evaluate_fddb, match, read_fddb_detections, write_fddb_detections,
)

# Vertical ellipse (major axis along y): semi-axes 40 (y) and 30 (x), centre (50, 50).
ELLIPSE = np.array([[40.0, 30.0, np.pi / 2, 50.0, 50.0]])
TIGHT_BOX = np.array([[20.0, 10.0, 80.0, 90.0]])
FAR_BOX = [150.0, 150.0, 190.0, 190.0]


def annotation(name: str = "img") -> FDDBAnnotation:
    return FDDBAnnotation(name, Path(f"{name}.jpg"), ELLIPSE, (200, 200))


def test_ellipse_box_iou_matches_the_analytic_ratio():
    # An ellipse covers pi/4 of its tight box.
    iou = ellipse_box_iou(ELLIPSE, np.vstack([TIGHT_BOX, [FAR_BOX], [[20, 10, 50, 90]]]))
    np.testing.assert_allclose(iou[0, :2], [np.pi / 4, 0.0], atol=0.01)
    # Left half of the tight box: intersection = the left half of the ellipse, union = that half
    # box plus the right half of the ellipse.
    half_e, half_b = np.pi * 40 * 30 / 2, 30 * 80
    np.testing.assert_allclose(iou[0, 2], half_e / (half_b + half_e), atol=0.005)
    # Centred on the left border: only the visible half of the ellipse counts.
    on_border = np.array([[40.0, 30.0, np.pi / 2, 0.0, 50.0]])
    clipped = ellipse_box_iou(on_border, np.array([[0.0, 10, 30, 90]]), image_size=(200, 200))
    np.testing.assert_allclose(clipped, [[np.pi / 4]], atol=0.01)


def test_matching_is_one_to_one_and_maximises_total_overlap():
    # Greedy (best pair first) would match E1-A (0.6) and leave E2 unmatched.
    iou = np.array([[0.6, 0.58], [0.55, 0.0]])
    np.testing.assert_allclose(np.sort(match(iou)), [0.55, 0.58])
    np.testing.assert_allclose(match(np.array([[0.7, 0.0], [0.0, 0.0]])), [0.7])


def test_perfect_box_then_extra_box():
    boxes = np.vstack([TIGHT_BOX, [FAR_BOX]])
    result = evaluate_fddb({"img": (boxes, np.array([0.9, 0.3]))}, [annotation()])
    np.testing.assert_array_equal(result.thresholds, [0.9, 0.3])
    np.testing.assert_array_equal(result.false_positives, [0, 1])
    np.testing.assert_array_equal(result.tpr_discrete, [1.0, 1.0])
    np.testing.assert_allclose(result.tpr_continuous, [np.pi / 4, np.pi / 4], atol=0.01)
    assert result.tpr_at(0) == 1.0


def test_extra_box_scoring_higher_costs_tpr_at_zero_fp():
    result = evaluate_fddb({"img": (np.vstack([TIGHT_BOX, [FAR_BOX]]), np.array([0.3, 0.9]))},
                           [annotation(), annotation("other")])
    np.testing.assert_array_equal(result.false_positives, [1, 1])
    np.testing.assert_array_equal(result.tpr_discrete, [0.0, 0.5])  # 2 faces, "other" undetected
    assert result.tpr_at(0) == 0.0 and result.tpr_at(1) == 0.5
    assert result.tpr_at(1, "continuous") == pytest.approx(np.pi / 8, abs=0.01)


def test_a_second_box_on_the_same_face_is_a_false_positive():
    boxes = np.vstack([TIGHT_BOX, TIGHT_BOX + 1])
    result = evaluate_fddb({"img": (boxes, np.array([0.8, 0.7]))}, [annotation()])
    np.testing.assert_array_equal(result.false_positives, [0, 1])
    np.testing.assert_array_equal(result.tpr_discrete, [1.0, 1.0])


def test_detection_file_format_and_cli(tmp_path):
    path = tmp_path / "dets.txt"
    path.write_text("2002/big/img_1\n2\n20 10 60 80 0.9\n150 150 40 40 0.3\n2002/big/img_2\n0\n")
    dets = read_fddb_detections(path)
    np.testing.assert_allclose(dets["2002/big/img_1"][0], np.vstack([TIGHT_BOX, [FAR_BOX]]))
    assert len(dets["2002/big/img_2"][1]) == 0
    folds = tmp_path / "FDDB-folds"
    folds.mkdir()
    (folds / "FDDB-fold-01-ellipseList.txt").write_text(
        "2002/big/img_1\n1\n40 30 1.5707963 50 50 1\n2002/big/img_2\n1\n10 8 0 5 5 1\n")
    argv = ["eval-fddb", str(path), str(tmp_path), "--plot", str(tmp_path / "roc.png")]
    assert asfd_main(argv) == 0
    assert (tmp_path / "roc.png").stat().st_size > 0
    path.write_text("2002/big/img_1\n2\n20 10 60 80 0.9\n")
    with pytest.raises(AnnotationError, match=re.escape(f"{path}:4: unexpected end of file")):
        read_fddb_detections(path)
    path.write_text("2002/big/img_1\n2\n20 10 60 80 0.9\n20 10 nan 80 0.3\n")
    with pytest.raises(AnnotationError, match=re.escape(f"{path}:4: non-finite value")):
        read_fddb_detections(path)


def test_written_detection_file_reads_back_sorted_by_score(tmp_path):
    boxes = np.array([[1.0, 2.0, 11.0, 22.0], [5.0, 5.0, 8.0, 9.0]])
    path = write_fddb_detections(tmp_path / "d.txt", {
        "2002/08/11/big/img_591": (boxes, np.array([0.2, 0.9])), "2003/img_2": (boxes[:0], [])})
    assert path.read_text().splitlines()[:3] == [
        "2002/08/11/big/img_591", "2", "5.000 5.000 3.000 4.000 0.900000"]
    dets = read_fddb_detections(path)
    np.testing.assert_allclose(dets["2002/08/11/big/img_591"][0], boxes[::-1])
    np.testing.assert_allclose(dets["2002/08/11/big/img_591"][1], [0.9, 0.2])
    assert len(dets["2003/img_2"][1]) == 0


@pytest.mark.parametrize("max_fp, right", [(50, 1100), (1500, 1500), (40000, 2000)])
def test_roc_x_range_keeps_the_1000_fp_point(tmp_path, monkeypatch, max_fp, right):
    import visualize.plots as plots

    figures = []
    monkeypatch.setattr(plots, "save_figure", lambda fig, out: figures.append(fig) or out)
    fp = np.linspace(0, max_fp, 20)
    plots.plot_roc({"discrete": (fp, np.linspace(0, 0.9, 20), 0.9)}, tmp_path / "roc.png",
                   report_fp=1000)
    assert figures[0].axes[0].get_xlim() == pytest.approx((0, right))
