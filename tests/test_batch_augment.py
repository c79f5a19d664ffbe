"""Batched photometric augmentation in torch against PIL ``ImageEnhance`` (the PyramidBox/DSFD
semantics) and exact HSV, per-sample selection and the order of the steps."""
from __future__ import annotations

import colorsys

import numpy as np
import pytest
import torch
from PIL import Image, ImageEnhance

from detectors.data.augment import Photometric
from detectors.data.batch_augment import (
    adjust_brightness, adjust_contrast, adjust_saturation, photometric, rotate_hue,
)

ENHANCERS = {"brightness": (ImageEnhance.Brightness, adjust_brightness),
             "contrast": (ImageEnhance.Contrast, adjust_contrast),
             "saturation": (ImageEnhance.Color, adjust_saturation)}


def random_image(seed: int = 0, shape: tuple[int, int] = (12, 16)) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (*shape, 3), dtype=np.uint8)


def unit(image: np.ndarray) -> torch.Tensor:
    """``HWC`` uint8 -> ``[1, 3, H, W]`` float in [0, 1]."""
    return torch.from_numpy(image).permute(2, 0, 1)[None].float() / 255


def levels(x: torch.Tensor) -> np.ndarray:
    """``[1, 3, H, W]`` in [0, 1] -> ``HWC`` float grey levels."""
    return x[0].permute(1, 2, 0).numpy().astype(np.float64) * 255


def pil_hue(image: np.ndarray, steps: int) -> np.ndarray:
    """PIL's 8-bit HSV hue rotation by ``steps`` of 360/256 degrees."""
    hsv = np.array(Image.fromarray(image).convert("HSV"))
    hsv[..., 0] = (hsv[..., 0].astype(np.int16) + steps) % 256
    return np.asarray(Image.fromarray(hsv, "HSV").convert("RGB"))


@pytest.mark.parametrize("name", sorted(ENHANCERS))
@pytest.mark.parametrize("factor", [0.55, 0.9, 1.1, 1.45])
def test_each_enhancement_matches_pil(name, factor):
    image = random_image()
    pil_kind, ours = ENHANCERS[name]
    expected = np.asarray(pil_kind(Image.fromarray(image)).enhance(factor)).astype(np.float64)
    got = levels(ours(unit(image), torch.tensor([factor])))
    # PIL truncates each blend to 8 bits (< 1 level) and rounds its grey (0.5 level * factor).
    assert np.abs(got - expected).max() <= 1.25
    assert np.abs(got - expected).mean() <= 0.6


@pytest.mark.parametrize("degrees", [-18.0, 7.5, 120.0])
def test_hue_rotation_matches_exact_hsv(degrees):
    image = random_image(1)
    got = levels(rotate_hue(unit(image), torch.tensor([degrees])))
    expected = np.array([[colorsys.hsv_to_rgb((h + degrees / 360) % 1, s, v)
                          for h, s, v in (colorsys.rgb_to_hsv(*(p / 255)) for p in row)]
                         for row in image]) * 255
    np.testing.assert_allclose(got, expected, atol=1e-3)


@pytest.mark.parametrize("steps", [-13, 5, 85])
def test_hue_rotation_matches_pil_up_to_its_8_bit_hsv(steps):
    image = random_image(2)
    got = levels(rotate_hue(unit(image), torch.tensor([steps * 360 / 256])))
    diff = np.abs(got - pil_hue(image, steps))
    own = np.abs(pil_hue(image, 0).astype(np.float64) - image)  # PIL's own round-trip error
    assert diff.mean() <= own.mean() + 0.25 and diff.max() <= own.max() + 4
    # Red rotated by +120 degrees becomes green.
    red = unit(np.full((1, 1, 3), (255, 0, 0), dtype=np.uint8))
    np.testing.assert_allclose(levels(rotate_hue(red, torch.tensor([120.0])))[0, 0],
                               [0, 255, 0], atol=1e-3)


def pil_sequence(image: np.ndarray, draw: Photometric) -> np.ndarray:
    """The draw applied step by step with PIL, in the order of ``draw_photometric``."""
    def enhance(im: np.ndarray, kind, factor: float) -> np.ndarray:
        return np.asarray(kind(Image.fromarray(im)).enhance(factor))

    out = enhance(image, ImageEnhance.Brightness, draw.brightness)
    if draw.contrast_first:
        out = enhance(out, ImageEnhance.Contrast, draw.contrast)
    out = enhance(out, ImageEnhance.Color, draw.saturation)
    if not draw.contrast_first:
        out = enhance(out, ImageEnhance.Contrast, draw.contrast)
    return out.astype(np.float64)


def test_photometric_follows_the_drawn_order_like_pil():
    image = random_image(3)
    results = {}
    for first in (True, False):
        draw = Photometric(first, brightness=1.1, contrast=1.5, saturation=1.45)
        got = levels(photometric(unit(image), torch.from_numpy(draw.as_array())[None]))
        diff = np.abs(got - pil_sequence(image, draw))
        assert diff.max() <= 4 and diff.mean() <= 1  # PIL's truncations, amplified by the factors
        results[first] = got
    # Clipping makes the order matter: far more than the tolerance above.
    assert np.abs(results[True] - results[False]).max() > 10


def test_photometric_touches_only_drawn_samples_and_batches_like_one_by_one():
    images = torch.cat([unit(random_image(seed)) for seed in range(4)])
    draws = [Photometric(), Photometric(True, 1.1, 0.7, 1.0, 0.0),
             Photometric(False, 1.0, 1.3, 0.6, -12.0), Photometric(hue_degrees=9.0)]
    params = torch.stack([torch.from_numpy(d.as_array()) for d in draws])
    out = photometric(images, params)
    assert torch.equal(out[0], images[0])  # the identity draw leaves its image bit for bit
    for i in range(1, 4):
        assert not torch.equal(out[i], images[i])
        torch.testing.assert_close(out[i:i + 1], photometric(images[i:i + 1], params[i:i + 1]),
                                   rtol=0, atol=1e-6)
    assert out.min() >= 0 and out.max() <= 1
    with pytest.raises(ValueError, match=r"expected shape \(4, 5\), got \(4, 4\)"):
        photometric(images, params[:, :4])
