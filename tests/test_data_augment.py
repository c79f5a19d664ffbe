"""Augmentation: boxes stay in bounds and follow the pixels, flip is an involution, crops keep
the boxes whose centres they contain."""
from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from detectors.data.augment import (
    AugmentConfig, anchor_sampling_window, augment, centres_inside, crop_resize, drop_small_faces,
    Photometric, draw_photometric, hflip, letterbox, random_crop_window, square_crop_window,
)
from detectors.data.image import MEAN_PIXEL

COLOURS = np.array([[255, 0, 0], [0, 255, 0], [0, 0, 255], [255, 255, 0]], dtype=np.uint8)


def painted(width: int = 80, height: int = 60) -> tuple[np.ndarray, np.ndarray]:
    """A black image with each box filled in its own colour."""
    boxes = np.array([[4, 6, 20, 26], [30, 10, 50, 30], [55, 35, 75, 55], [10, 38, 26, 54]],
                     dtype=np.float32)
    image = np.zeros((height, width, 3), dtype=np.uint8)
    for box, colour in zip(boxes.astype(int), COLOURS):
        image[box[1]:box[3], box[0]:box[2]] = colour
    return image, boxes


def assert_boxes_follow_pixels(image: np.ndarray, boxes: np.ndarray, colours: np.ndarray) -> None:
    height, width = image.shape[:2]
    assert np.all(boxes >= 0)
    assert np.all(boxes[:, [0, 2]] <= width) and np.all(boxes[:, [1, 3]] <= height)
    for box, colour in zip(boxes, colours):
        cx, cy = int((box[0] + box[2]) / 2), int((box[1] + box[3]) / 2)
        np.testing.assert_array_equal(image[cy, cx], colour)


def test_hflip_is_an_involution_and_moves_boxes_with_pixels():
    image, boxes = painted()
    flipped, fboxes = hflip(image, boxes)
    np.testing.assert_array_equal(fboxes[0], [80 - 20, 6, 80 - 4, 26])
    assert_boxes_follow_pixels(flipped, fboxes, COLOURS)
    back, bboxes = hflip(flipped, fboxes)
    np.testing.assert_array_equal(back, image)
    np.testing.assert_array_equal(bboxes, boxes)


def test_crop_resize_keeps_centres_inside_and_maps_exactly():
    image, boxes = painted()
    # Window x in [25, 85) (past the right border), y in [0, 60); output 2x upsampled.
    window = (25.0, 0.0, 85.0, 60.0)
    out, kept = crop_resize(image, boxes, window, (120, 120), Image.Resampling.NEAREST)
    assert out.shape == (120, 120, 3)
    # Box centres x: 12, 40, 65, 18 -> only the 2nd and 3rd are inside the window.
    np.testing.assert_allclose(kept, [[10, 20, 50, 60], [60, 70, 100, 110]])
    assert_boxes_follow_pixels(out, kept, COLOURS[[1, 2]])
    np.testing.assert_array_equal(out[5, 115], MEAN_PIXEL)  # beyond the image: mean padding


def test_random_crop_window_properties():
    _, boxes = painted()
    centres = (boxes[:, :2] + boxes[:, 2:]) / 2
    for seed in range(50):
        x0, y0, x1, y1 = window = random_crop_window(boxes, (80, 60), np.random.default_rng(seed))
        assert 0 <= x0 < x1 <= 80 and 0 <= y0 < y1 <= 60
        assert x1 - x0 >= 0.3 * 80 - 1e-6 and y1 - y0 >= 0.3 * 60 - 1e-6
        assert 0.5 <= (y1 - y0) / (x1 - x0) <= 2
        assert centres_inside(centres, window).any()


def test_square_crop_window_is_square_inside_and_keeps_a_face():
    _, boxes = painted()
    centres = (boxes[:, :2] + boxes[:, 2:]) / 2
    sides = []
    for seed in range(50):
        x0, y0, x1, y1 = window = square_crop_window(boxes, (80, 60), np.random.default_rng(seed))
        assert x1 - x0 == pytest.approx(y1 - y0)
        assert 0 <= x0 < x1 <= 80 and 0 <= y0 < y1 <= 60
        assert 0.3 * 60 - 1e-6 <= x1 - x0 <= 60 + 1e-6
        assert centres_inside(centres, window).any()
        sides.append(x1 - x0)
    assert np.ptp(sides) > 20  # the side is drawn, not fixed


def test_square_crop_window_falls_back_to_a_short_side_square_around_a_face():
    boxes = np.array([[70, 2, 78, 10]], dtype=np.float32)  # one face in a corner
    window = square_crop_window(boxes, (80, 60), np.random.default_rng(0), trials=0)
    assert window == pytest.approx((20.0, 0.0, 80.0, 60.0))
    assert square_crop_window(np.zeros((0, 4), np.float32), (80, 60), np.random.default_rng(0),
                              trials=0) == pytest.approx((10.0, 0.0, 70.0, 60.0))


def test_augment_with_crop_square_keeps_the_faces_aspect():
    image = np.zeros((600, 900, 3), dtype=np.uint8)
    boxes = np.array([[400, 250, 460, 330]], dtype=np.float32)  # 3:4 face
    cfg = AugmentConfig(crop_square=True, anchor_sampling_p=0.0, min_face=0.0)
    checked = 0
    for seed in range(20):
        _, out, _ = augment(image, boxes, np.random.default_rng(seed), 160, cfg)
        inside = out[(out[:, 0] > 0) & (out[:, 2] < 160) & (out[:, 1] > 0) & (out[:, 3] < 160)]
        for x0, y0, x1, y1 in inside:  # faces not clipped by the window keep 3:4
            assert (y1 - y0) / (x1 - x0) == pytest.approx(4 / 3, rel=1e-3)
            checked += 1
    assert checked >= 10  # most draws keep the face whole (the SSD crop stretches all of them)


@pytest.mark.parametrize("face", [4.0, 30.0, 300.0])
def test_anchor_sampling_rescales_the_chosen_face_near_an_anchor(face):
    boxes = np.array([[100, 80, 100 + face, 80 + face]], dtype=np.float32)
    image = np.zeros((700, 900, 3), dtype=np.uint8)
    scales = (16, 32, 64, 128, 256, 512)
    nearest = int(np.argmin(np.abs(np.array(scales) - face)))
    top = scales[min(nearest + 1, len(scales) - 1)]
    for seed in range(20):
        rng = np.random.default_rng(seed)
        window = anchor_sampling_window(boxes, (900, 700), rng, 128, scales)
        assert window[2] - window[0] == pytest.approx(window[3] - window[1])  # square
        _, out = crop_resize(image, boxes, window, (128, 128))
        assert len(out) == 1  # the sampled face is always kept
        size = float(np.sqrt((out[0, 2] - out[0, 0]) * (out[0, 3] - out[0, 1])))
        assert scales[0] / 2 - 1e-3 <= size <= min(2 * top, 128) + 1e-3


def test_draw_photometric_ranges_probabilities_and_identity():
    cfg = AugmentConfig()
    draws = [draw_photometric(np.random.default_rng(seed), cfg) for seed in range(400)]
    assert draw_photometric(np.random.default_rng(3), AugmentConfig(photometric_p=0.0)) \
        in (Photometric(), Photometric(contrast_first=True))
    for name, lo, hi in (("brightness", 0.875, 1.125), ("contrast", 0.5, 1.5),
                         ("saturation", 0.5, 1.5), ("hue_degrees", -18.0, 18.0)):
        values = np.array([getattr(d, name) for d in draws])
        drawn = values != getattr(Photometric(), name)
        assert 0.4 < drawn.mean() < 0.6, name  # each step with p = 0.5
        assert np.all((values[drawn] >= lo) & (values[drawn] <= hi)), name
    assert 0.4 < np.mean([d.contrast_first for d in draws]) < 0.6
    assert draw_photometric(np.random.default_rng(7)) == draw_photometric(np.random.default_rng(7))
    np.testing.assert_array_equal(Photometric(True, 1.1, 0.9, 1.2, -5.0).as_array(),
                                  np.array([1, 1.1, 0.9, 1.2, -5], dtype=np.float32))


def test_drop_small_faces_uses_the_shorter_side():
    boxes = np.array([[0, 0, 5, 50], [0, 0, 6, 6], [0, 0, 40, 5.9]], dtype=np.float32)
    np.testing.assert_array_equal(drop_small_faces(boxes, 6.0), boxes[[1]])


def test_letterbox_keeps_aspect_and_pads_with_the_mean():
    image, boxes = painted()
    out, mapped, scale = letterbox(image, boxes, 40)
    assert out.shape == (40, 40, 3) and scale == pytest.approx(0.5)
    np.testing.assert_allclose(mapped, boxes * 0.5)
    np.testing.assert_array_equal(out[35, 10], MEAN_PIXEL)  # below the 30-row image


def test_augment_pipeline_is_seeded_and_in_bounds():
    image, boxes = painted(160, 120)[0], painted(160, 120)[1] * 2
    cfg = AugmentConfig(min_face=6)
    outputs = [augment(image, boxes, np.random.default_rng(seed), 64, cfg) for seed in range(12)]
    for out, kept, draw in outputs:
        assert out.shape == (64, 64, 3) and out.dtype == np.uint8
        assert isinstance(draw, Photometric)
        assert np.all(kept >= 0) and np.all(kept <= 64)
        assert np.all(np.minimum(kept[:, 2] - kept[:, 0], kept[:, 3] - kept[:, 1]) >= 6)
    again = augment(image, boxes, np.random.default_rng(5), 64, cfg)
    np.testing.assert_array_equal(again[0], outputs[5][0])
    np.testing.assert_array_equal(again[1], outputs[5][1])
    assert again[2] == outputs[5][2]
    assert any(not np.array_equal(o[0], outputs[0][0]) for o in outputs[1:])
