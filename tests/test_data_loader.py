"""Torch dataset and loader: normalisation, collation, seeded determinism."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from detectors.data.image import IMAGE_MEAN, IMAGE_STD, MEAN_PIXEL, to_tensor
from detectors.data.loader import (
    FaceDetectionDataset, build_dataloader, detection_collate, set_epoch,
)
from detectors.data.synthetic import make_synthetic
from detectors.data.wider import WiderDataset


@pytest.fixture(scope="module")
def samples(tmp_path_factory):
    root = tmp_path_factory.mktemp("synth")
    make_synthetic(root, 8, seed=0, size=(64, 48))
    return list(WiderDataset.from_dir(root))


def first_batch(samples, seed, epoch=0, workers=0):
    dataset = FaceDetectionDataset(samples, train=True, size=48, seed=seed)
    loader = build_dataloader(dataset, batch_size=4, workers=workers, seed=seed)
    set_epoch(loader, epoch)
    return next(iter(loader))


def test_to_tensor_normalises_with_the_shared_constants():
    x = to_tensor(np.full((5, 7, 3), MEAN_PIXEL, dtype=np.uint8))
    assert x.shape == (3, 5, 7) and x.dtype == torch.float32
    assert x.abs().max() < 0.01  # the mean pixel maps to ~0
    white = to_tensor(np.full((1, 1, 3), 255, dtype=np.uint8))[:, 0, 0]
    expected = (1 - np.array(IMAGE_MEAN)) / np.array(IMAGE_STD)
    np.testing.assert_allclose(white.numpy(), expected, rtol=1e-6)
    with pytest.raises(ValueError, match="uint8 RGB"):
        to_tensor(np.zeros((4, 4), dtype=np.uint8))


def test_collate_stacks_images_and_lists_boxes():
    batch = [(torch.zeros(3, 8, 8), torch.zeros(2, 4)), (torch.ones(3, 8, 8), torch.zeros(0, 4))]
    images, boxes = detection_collate(batch)
    assert images.shape == (2, 3, 8, 8) and [b.shape[0] for b in boxes] == [2, 0]


def test_same_seed_same_batch_regardless_of_workers(samples):
    images, boxes = first_batch(samples, seed=7)
    assert images.shape == (4, 3, 48, 48)
    again_images, again_boxes = first_batch(samples, seed=7, workers=2)
    torch.testing.assert_close(again_images, images, rtol=0, atol=0)
    assert all(torch.equal(a, b) for a, b in zip(again_boxes, boxes))
    other_epoch, _ = first_batch(samples, seed=7, epoch=1)
    other_seed, _ = first_batch(samples, seed=8)
    assert not torch.equal(other_epoch, images) and not torch.equal(other_seed, images)


def test_eval_mode_letterboxes_without_randomness(samples):
    dataset = FaceDetectionDataset(samples, train=False, size=32)
    image, boxes = dataset[1]
    assert image.shape == (3, 32, 32)
    expected = samples[1].training_boxes() * 0.5  # 64 px wide -> 32
    np.testing.assert_allclose(boxes.numpy(), expected, rtol=1e-5)
    torch.testing.assert_close(dataset[1][0], image, rtol=0, atol=0)
