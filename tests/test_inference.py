"""Inference: post-processing, box voting, multi-scale geometry, batching, output files, and
the reference detectors (anchors, size against the original's, save/load)."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from detectors.engine.inference import (
    Detections, Detector, DetectorBase, MultiScaleTest, PostProcess, box_voting, flip_boxes,
    NEAR_CONSTANT_MIN_BOXES, PICTURE_MAX_BOXES, draw_detections, iter_inputs, listed_images,
    picture_boxes, picture_warning, select, write_detections,
)
from detectors.engine.macs import profile_model
from detectors.models.asfd import (
    CHECKPOINT_VERSION, LEGACY_REFERENCE_FORMAT, load_model, save_model,
)
from detectors.models.reference_detectors import MultiAnchorGenerator, build_reference_detector


def boxes(*rows) -> torch.Tensor:
    return torch.tensor(rows, dtype=torch.float32)


# ----------------------------------------------------------------------------- post-processing
def test_select_thresholds_then_suppresses_at_iou_0_3():
    b = boxes([0, 0, 10, 10], [1, 0, 11, 10], [0, 0, 10, 16], [20, 20, 30, 30], [40, 40, 50, 50])
    s = torch.tensor([0.9, 0.8, 0.7, 0.6, 0.04])
    det = select(b, s, PostProcess(score_threshold=0.05, nms_iou=0.3))
    # IoU(0, 1) = 90/110 > 0.3 suppressed; IoU(0, 2) = 100/160 > 0.3 suppressed; last below 0.05.
    assert det.scores.tolist() == pytest.approx([0.9, 0.6])
    assert det.boxes.tolist() == [[0, 0, 10, 10], [20, 20, 30, 30]]
    top = select(b, s, PostProcess(score_threshold=0.0, pre_nms_top_k=2, post_nms_top_k=1))
    assert top.scores.tolist() == pytest.approx([0.9])


def test_box_voting_averages_by_score_and_drops_unconfirmed_boxes():
    b = boxes([0, 0, 10, 10], [2, 0, 12, 10], [100, 100, 110, 110], [50, 50, 60, 60],
              [51, 50, 61, 60])
    s = torch.tensor([0.75, 0.25, 0.9, 0.6, 0.2])
    det = box_voting(b, s, iou_threshold=0.3, min_votes=2)
    # The lone box at 100 is dropped (SFD rule); clusters merge with score weights.
    assert det.scores.tolist() == pytest.approx([0.75, 0.6])
    torch.testing.assert_close(det.boxes, boxes([0.5, 0, 10.5, 10], [50.25, 50, 60.25, 60]))
    keep_all = box_voting(b, s, min_votes=1)
    assert keep_all.scores.tolist() == pytest.approx([0.9, 0.75, 0.6])
    assert len(box_voting(b[:0], s[:0]).scores) == 0


def test_flip_boxes_is_an_involution():
    b = boxes([1, 2, 5, 9], [0, 0, 20, 4])
    assert flip_boxes(b, 20).tolist() == [[15, 2, 19, 9], [0, 0, 20, 4]]
    assert torch.equal(flip_boxes(flip_boxes(b, 20), 20), b)


class BrightestPixel(DetectorBase):
    """A stand-in network: one 8x8 box centred on each image's brightest pixel, score 0.9."""

    def raw(self, batch):
        gray = batch.sum(1).flatten(1)
        index = gray.argmax(1)
        y, x = (index // batch.shape[-1]).float() + 0.5, (index % batch.shape[-1]).float() + 0.5
        found = torch.stack([x - 4, y - 4, x + 4, y + 4], -1)[:, None]
        return found, torch.full(found.shape[:2], 0.9)


def test_multiscale_and_flip_map_boxes_back_to_the_original_frame():
    image = np.zeros((60, 100, 3), np.uint8)
    image[30:32, 70:72] = 255  # a bright spot centred at (71, 31)
    det = BrightestPixel()
    (single,) = det.detect([image])
    torch.testing.assert_close(single.boxes, boxes([66.5, 26.5, 74.5, 34.5]))
    (voted,) = det.detect([image], MultiScaleTest(scales=(0.5, 1.0, 2.0), flip=True))
    centre = (voted.boxes[0, :2] + voted.boxes[0, 2:]) / 2
    assert centre.tolist() == pytest.approx([71, 31], abs=1.0)
    shrunk = BrightestPixel(max_size=50)
    (small,) = shrunk.detect([image])  # run at 50x30, mapped back x2
    assert ((small.boxes[0, :2] + small.boxes[0, 2:]) / 2).tolist() == pytest.approx([71, 31],
                                                                                        abs=1.0)


def test_test_scale_resizes_before_the_network_and_maps_boxes_back():
    image = np.zeros((60, 100, 3), np.uint8)
    image[30:32, 70:72] = 255
    seen = []

    class Recorder(BrightestPixel):
        def raw(self, batch):
            seen.append(tuple(batch.shape[-2:]))
            return super().raw(batch)

    (found,) = Recorder(scale=2.5).detect([image])      # runs at 250x150
    (capped,) = Recorder(scale=2.5, max_size=200).detect([image])   # 2.5x, then capped: 200x120
    assert seen == [(150, 250), (120, 200)]
    for det, factor in ((found, 2.5), (capped, 2.0)):
        # An 8x8 box at the network's scale is 8 / factor wide in the image, around (71, 31).
        assert ((det.boxes[0, :2] + det.boxes[0, 2:]) / 2).tolist() == pytest.approx([71, 31],
                                                                                      abs=0.5)
        assert float(det.boxes[0, 2] - det.boxes[0, 0]) == pytest.approx(8 / factor)
    with pytest.raises(ValueError, match="test scale must be positive"):
        BrightestPixel(scale=0)


def test_images_above_the_pixel_cap_are_refused_before_decoding(tmp_path):
    image = np.zeros((60, 100, 3), np.uint8)
    with pytest.raises(ValueError, match=r"image 0: this 100x60 image would enter the network "
                                         r"at 250x150 \(0\.0 megapixels\), above the cap"):
        BrightestPixel(scale=2.5, max_pixels=100 * 60).detect([image])
    with pytest.raises(ValueError, match="at 150x90"):  # multi-scale: the largest pass counts
        BrightestPixel(max_pixels=100 * 60).detect([image], MultiScaleTest())
    (found,) = BrightestPixel(scale=2.5, max_size=100, max_pixels=100 * 60).detect([image])
    assert len(found.scores) == 1  # shrunk under the cap by max_size
    BrightestPixel(scale=2.5, max_pixels=None).detect([image])  # no cap
    path = tmp_path / "big.png"
    Image.fromarray(image).save(path)
    with pytest.raises(ValueError, match=f"^{path}: .*--max-pixels 0"):
        BrightestPixel(max_pixels=100).detect_paths({"big": path})
    with pytest.raises(ValueError, match="max_pixels must be at least 1"):
        BrightestPixel(max_pixels=0)


# ----------------------------------------------------------------------------- real detectors
@pytest.fixture(scope="module")
def retinaface():
    torch.manual_seed(0)
    return build_reference_detector("retinaface_mnet025").eval()


def test_retinaface_size_matches_the_original(retinaface):
    """The original (with landmark heads): ~0.43M parameters, ~0.74 G MACs at 640x480."""
    prof = profile_model(retinaface, (640, 480))
    assert abs(prof.params / 0.43e6 - 1) < 0.1
    assert abs(prof.macs / 0.74e9 - 1) < 0.05


def test_two_anchors_per_location_in_head_order():
    gen = MultiAnchorGenerator()
    anchors = gen(gen.feature_shapes(64, 96))
    assert len(anchors) == 2 * (8 * 12 + 4 * 6 + 2 * 3)
    assert anchors[:3].tolist() == [[-4, -4, 12, 12], [-12, -12, 20, 20], [4, -4, 20, 12]]
    level2 = anchors[2 * 96]
    assert level2.tolist() == [-24, -24, 40, 40]  # stride 16, size 64, centre (8, 8)


def test_same_size_images_batch_exactly(retinaface):
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 255, (48, 64, 3), dtype=np.uint8) for _ in range(2)]
    detector = Detector(retinaface, PostProcess(score_threshold=0.0))
    batched = detector.detect(images)
    for image, det in zip(images, batched):
        (alone,) = detector.detect([image])
        assert torch.allclose(alone.boxes, det.boxes, atol=1e-4)
        assert torch.allclose(alone.scores, det.scores, atol=1e-6)


def test_a_padding_sensitive_model_runs_images_of_different_sizes_one_at_a_time(
        normalized_gate_d0, retinaface):
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 255, shape, dtype=np.uint8) for shape in ((48, 64, 3), (96, 80, 3))]
    detector = Detector(normalized_gate_d0, PostProcess(score_threshold=0.0))
    assert detector.batch_by_size and not Detector(retinaface).batch_by_size
    alone = [detector.detect([image])[0] for image in images]
    for det, single in zip(detector.detect(images), alone):
        torch.testing.assert_close(det.scores, single.scores)
        torch.testing.assert_close(det.boxes, single.boxes)
    detector.batch_by_size = False   # a padded batch: the gate's rms sees the padding
    padded = detector.detect(images)[0]
    assert len(padded.scores) != len(alone[0].scores) or not torch.allclose(
        padded.scores, alone[0].scores, atol=1e-4)


@pytest.mark.parametrize("name", ["retinaface_mnet025", "dsfd_like"])
def test_reference_detectors_save_and_load(name, tmp_path):
    torch.manual_seed(1)
    model = build_reference_detector(name, **({"width": 16} if name == "dsfd_like" else {})).eval()
    path = save_model(model, tmp_path / "m.pt")
    assert torch.load(path, weights_only=True)["version"] == CHECKPOINT_VERSION
    loaded = load_model(path).eval()
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        a, b = model(x).second, loaded(x).second
    assert torch.equal(a.cls, b.cls) and torch.equal(a.reg, b.reg)
    assert torch.equal(a.anchors, b.anchors)
    if name == "dsfd_like":   # DSFD's FEM enhances all six levels, the stride-4 one included
        assert loaded.config.enhanced_levels == ("P2", "P3", "P4", "P5", "P6", "P7")


def test_reference_detector_files_of_the_old_format_still_load(retinaface, tmp_path):
    """RetinaFace-style files written before reference detectors shared the model-file format."""
    path = tmp_path / "old.pt"
    torch.save({"format": LEGACY_REFERENCE_FORMAT, "version": 1, "arch": "retinaface",
                "config": retinaface.config.to_dict(), "state_dict": retinaface.state_dict(),
                "extra": {"epoch": 2}}, path)
    loaded = load_model(path).eval()
    assert loaded.config == retinaface.config
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(loaded(x).second.cls, retinaface(x).second.cls)


def test_detect_writes_json_txt_and_picture(retinaface, tmp_path):
    image = np.full((40, 50, 3), 128, np.uint8)
    det = Detections(boxes([5, 6, 25, 30], [1, 1, 3, 3]), torch.tensor([0.8, 0.3]))
    json_path, txt_path, jpg_path = write_detections(tmp_path, "photo", image, det, 0.5)
    record = json.loads(json_path.read_text())
    assert (record["width"], record["height"]) == (50, 40)
    # The JSON (and picture) hold the faces >= 0.5; the txt every one, for the PR curve.
    assert record["detections"] == [{"box_xyxy": [5.0, 6.0, 25.0, 30.0], "score": 0.8}]
    lines = txt_path.read_text().splitlines()
    assert lines == ["photo", "2", "5.000 6.000 20.000 24.000 0.800000",
                     "1.000 1.000 2.000 2.000 0.300000"]
    with Image.open(jpg_path) as im:
        assert im.size == (50, 40)
        rgb = im.convert("RGB")
        edge, skipped = rgb.getpixel((5, 15)), rgb.getpixel((1, 2))
    assert edge[1] - edge[0] > 80  # the green edge of the 0.8 face
    assert abs(skipped[1] - skipped[0]) < 30  # the 0.3 face (below 0.5) is not drawn


def row_of_boxes(n: int, scores) -> Detections:
    """``n`` boxes 14 px wide side by side on y 100..140, scores as given."""
    return Detections(torch.tensor([[20 * i + 2, 100, 20 * i + 16, 140] for i in range(n)],
                                   dtype=torch.float32), torch.tensor(scores))


def test_picture_draws_the_best_boxes_with_filled_labels():
    det = row_of_boxes(10, [0.9 - 0.01 * i for i in range(10)])
    rgb = np.asarray(draw_detections(np.full((200, 200, 3), 128, np.uint8), det, 0.5,
                                     max_boxes=3)).astype(int)
    green = (rgb[..., 1] - rgb[..., 0]) > 80
    assert [bool(green[130, 20 * i + 2]) for i in range(10)] == [True] * 3 + [False] * 7
    label = rgb[88:99, 3:20]  # above the best box: a filled label with dark text on it
    assert ((label[..., 1] - label[..., 0]) > 80).mean() > 0.4
    assert (label.sum(-1) < 150).any()
    assert not green[80:100, 103:120].any()  # the 6th box has neither box nor label


def test_picture_boxes_keep_the_best_above_the_threshold():
    det = Detections(boxes([0, 0, 1, 1], [1, 1, 2, 2], [2, 2, 3, 3], [3, 3, 4, 4]),
                     torch.tensor([0.6, 0.9, 0.3, 0.7]))
    assert picture_boxes(det, 0.5, 2).scores.tolist() == pytest.approx([0.9, 0.7])
    assert picture_boxes(det, 0.5, 0).scores.tolist() == pytest.approx([0.9, 0.7, 0.6])
    with pytest.raises(ValueError, match="max_boxes must be >= 0"):
        picture_boxes(det, 0.5, -1)


def test_picture_warning_reports_the_cap_and_constant_scores_in_one_line():
    weak = row_of_boxes(60, [0.51 + 0.0001 * i for i in range(60)])  # 60 near-equal boxes
    good = row_of_boxes(3, [0.99, 0.8, 0.3])
    note = picture_warning([weak, good], 0.5, PICTURE_MAX_BOXES)
    assert "\n" not in note
    assert f"1 of 2 image(s) have more than {PICTURE_MAX_BOXES} faces scoring >= 0.5" in note
    assert "(up to 60)" in note and "nearly constant (0.510-0.516)" in note
    assert picture_warning([good], 0.5) is None
    assert picture_warning([weak], 0.5, max_boxes=0) == picture_warning([weak], 0.5, 100)
    few = row_of_boxes(NEAR_CONSTANT_MIN_BOXES - 1, [0.9] * (NEAR_CONSTANT_MIN_BOXES - 1))
    assert picture_warning([few], 0.5) is None  # a few equal faces are not suspicious


def test_iter_inputs_names_files_and_folder_images(tmp_path):
    (tmp_path / "d" / "e").mkdir(parents=True)
    for rel in ("a.jpg", "d/e/b.png", "d/c.jpg"):
        Image.new("RGB", (4, 4)).save(tmp_path / rel)
    found = iter_inputs([tmp_path / "a.jpg", tmp_path / "d"])
    assert sorted(found) == ["a", "c", "e/b"]  # a folder's images keep their path inside it
    with pytest.raises(FileNotFoundError, match="missing.jpg"):
        iter_inputs([tmp_path / "missing.jpg"])
    Image.new("RGB", (4, 4)).save(tmp_path / "d" / "c.png")
    with pytest.raises(ValueError, match="same outputs c"):
        iter_inputs([tmp_path / "d"])


def test_listed_images_follow_the_list_with_or_without_extension(tmp_path):
    (tmp_path / "d" / "e").mkdir(parents=True)
    for rel in ("d/a.jpg", "d/e/b.png", "d/e/c.jpg"):
        Image.new("RGB", (4, 4)).save(tmp_path / rel)
    listed = tmp_path / "list.txt"
    listed.write_text("e/c\n# a comment\na.jpg\ne/c.jpg\n")
    found = listed_images(tmp_path / "d", listed)
    assert found == {"e/c": tmp_path / "d/e/c.jpg", "a": tmp_path / "d/a.jpg"}
    listed.write_text("e/b\ne/zz\n")
    with pytest.raises(FileNotFoundError, match=r"list.txt: 1 listed image.*e/zz"):
        listed_images(tmp_path / "d", listed)


def test_detect_picture_never_overwrites_its_input(tmp_path):
    Image.new("RGB", (8, 8)).save(tmp_path / "p.jpg")
    det = Detections(torch.zeros((0, 4)), torch.zeros(0))
    with pytest.raises(ValueError, match="would overwrite it"):
        write_detections(tmp_path, "p", tmp_path / "p.jpg", det)
