"""Torch dataset and loader: uint8 samples, collation, the device step (photometric draws and
normalisation), loader settings from the device, seeded determinism with persistent workers."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from detectors.data.augment import Photometric
from detectors.data.batch_augment import photometric
from detectors.data.image import IMAGE_MEAN, IMAGE_STD, MEAN_PIXEL, normalize, to_tensor
from detectors.data.loader import (
    PREFETCH_FACTOR, DetectionBatch, DetectionSample, FaceDetectionDataset, build_dataloader,
    detection_collate, loader_options, prepare_batch, set_epoch,
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


def test_collate_stacks_images_and_draws_and_lists_boxes():
    draw = torch.from_numpy(Photometric().as_array())
    batch = [DetectionSample(torch.zeros(3, 8, 8, dtype=torch.uint8), torch.zeros(2, 4), draw),
             DetectionSample(torch.ones(3, 8, 8, dtype=torch.uint8), torch.zeros(0, 4), draw)]
    images, boxes, draws = detection_collate(batch)
    assert images.shape == (2, 3, 8, 8) and [b.shape[0] for b in boxes] == [2, 0]
    assert draws.shape == (2, 5)
    plain = [sample._replace(photometric=None) for sample in batch]
    assert detection_collate(plain).photometric is None
    with pytest.raises(ValueError, match="mixes augmented and plain"):
        detection_collate([batch[0], plain[1]])


def test_training_samples_are_uint8_with_their_draw(samples):
    dataset = FaceDetectionDataset(samples, train=True, size=48, seed=0)
    image, boxes, draw = dataset[2]
    assert image.dtype == torch.uint8 and image.shape == (3, 48, 48) and image.is_contiguous()
    assert boxes.dtype == torch.float32 and draw.shape == (5,)


def test_prepare_batch_normalises_exactly_as_to_tensor(samples):
    dataset = FaceDetectionDataset(samples, train=False, size=32)
    batch = detection_collate([dataset[0], dataset[1]])
    images, boxes = prepare_batch(batch, "cpu", torch.channels_last)
    expected = torch.stack([to_tensor(np.ascontiguousarray(im.permute(1, 2, 0).numpy()))
                            for im in batch.images])
    assert torch.equal(images, expected) and images.is_contiguous(memory_format=torch.channels_last)
    assert all(torch.equal(a, b) for a, b in zip(boxes, batch.boxes))


def test_prepare_batch_applies_the_photometric_draws(samples):
    dataset = FaceDetectionDataset(samples, train=False, size=32)
    plain = detection_collate([dataset[0], dataset[1]])
    draws = torch.stack([torch.from_numpy(Photometric(brightness=0.9).as_array()),
                         torch.from_numpy(Photometric().as_array())])
    images, _ = prepare_batch(plain._replace(photometric=draws), "cpu")
    expected = normalize(photometric(plain.images.float() / 255, draws))
    torch.testing.assert_close(images, expected, rtol=0, atol=1e-6)
    assert torch.equal(images[1], prepare_batch(plain, "cpu")[0][1])
    assert not torch.equal(images[0], prepare_batch(plain, "cpu")[0][0])


@pytest.mark.parametrize("device, workers, expected", [
    ("cpu", 0, (False, False, None)), ("cpu", 3, (False, True, PREFETCH_FACTOR)),
    ("cuda", 0, (True, False, None)), (torch.device("cuda", 1), 3, (True, True, PREFETCH_FACTOR)),
])
def test_loader_options_follow_the_device_and_workers(device, workers, expected):
    options = loader_options(device, workers)
    assert (options["pin_memory"], options["persistent_workers"],
            options["prefetch_factor"]) == expected
    assert options["num_workers"] == workers


def test_build_dataloader_pins_memory_for_cuda_only(samples):
    dataset = FaceDetectionDataset(samples, train=True, size=48)
    on_gpu = build_dataloader(dataset, batch_size=4, workers=2, device="cuda")
    assert on_gpu.pin_memory and on_gpu.persistent_workers and on_gpu.prefetch_factor == 4
    assert not build_dataloader(dataset, batch_size=4, workers=2).pin_memory


def test_same_seed_same_batch_regardless_of_workers(samples):
    images, boxes, draws = first_batch(samples, seed=7)
    assert images.shape == (4, 3, 48, 48) and images.dtype == torch.uint8
    again = first_batch(samples, seed=7, workers=2)
    assert torch.equal(again.images, images) and torch.equal(again.photometric, draws)
    assert all(torch.equal(a, b) for a, b in zip(again.boxes, boxes))
    other_epoch = first_batch(samples, seed=7, epoch=1)
    other_seed = first_batch(samples, seed=8)
    assert not torch.equal(other_epoch.images, images)
    assert not torch.equal(other_seed.images, images)


def test_persistent_workers_follow_set_epoch(samples):
    dataset = FaceDetectionDataset(samples, train=True, size=48, seed=7)
    loader = build_dataloader(dataset, batch_size=4, workers=2, seed=7)
    assert loader.persistent_workers
    set_epoch(loader, 0)
    assert torch.equal(next(iter(loader)).images, first_batch(samples, seed=7).images)
    list(loader)  # the workers stay alive for the next epoch
    set_epoch(loader, 1)
    batch: DetectionBatch = next(iter(loader))
    expected = first_batch(samples, seed=7, epoch=1)
    assert torch.equal(batch.images, expected.images)
    assert torch.equal(batch.photometric, expected.photometric)


def test_eval_mode_letterboxes_without_randomness(samples):
    dataset = FaceDetectionDataset(samples, train=False, size=32)
    image, boxes, draw = dataset[1]
    assert image.shape == (3, 32, 32) and image.dtype == torch.uint8 and draw is None
    expected = samples[1].training_boxes() * 0.5  # 64 px wide -> 32
    np.testing.assert_allclose(boxes.numpy(), expected, rtol=1e-5)
    torch.testing.assert_close(dataset[1][0], image, rtol=0, atol=0)
