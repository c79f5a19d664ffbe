"""Torch datasets and loaders for face detection, deterministic under a seed.

Randomness is drawn per sample from ``numpy.random.default_rng([seed, epoch, index])``: a
sample's augmentation depends only on the seed, the epoch and its index, not on the number of
workers, the batch size or the rank. Shuffling uses :class:`DistributedSampler` (with one
replica when not distributed) whose permutation depends only on ``seed + epoch``, so a resumed
run sees the same batches. Call :func:`set_epoch` before each epoch.
"""
from __future__ import annotations

import random
from collections.abc import Sequence
from functools import partial

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler, get_worker_info

from detectors.data.augment import AugmentConfig, augment, letterbox
from detectors.data.image import IMAGE_MEAN, IMAGE_STD, load_image, to_tensor
from detectors.data.wider import FaceSample

__all__ = ["IMAGE_MEAN", "IMAGE_STD", "to_tensor", "FaceDetectionDataset", "detection_collate",
           "build_dataloader", "set_epoch", "seed_worker"]


class FaceDetectionDataset(Dataset):
    """``(image [3, S, S] normalised float, boxes [N, 4] xyxy float)`` pairs.

    Boxes are the sample's training boxes (``invalid`` ones removed). ``train=True``: the
    :func:`~detectors.data.augment.augment` pipeline. ``train=False``:
    :func:`~detectors.data.augment.letterbox` to ``size`` (boxes in the letterboxed frame; divide
    by ``size / max(H, W)`` to map back).
    """

    def __init__(self, samples: Sequence[FaceSample], train: bool, size: int = 640, seed: int = 0,
                 augment_config: AugmentConfig | None = None):
        self.samples = list(samples)
        self.train = train
        self.size = size
        self.seed = seed
        self.augment_config = augment_config or AugmentConfig(size=size)
        if self.augment_config.size != size:
            raise ValueError(f"augment_config.size {self.augment_config.size} != size {size}")
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        sample = self.samples[index]
        image = load_image(sample.image_path)
        boxes = sample.training_boxes()
        if self.train:
            rng = np.random.default_rng([self.seed, self.epoch, index])
            image, boxes = augment(image, boxes, rng, self.augment_config)
        else:
            image, boxes, _ = letterbox(image, boxes, self.size)
        return to_tensor(image), torch.from_numpy(np.ascontiguousarray(boxes, dtype=np.float32))


def detection_collate(
    batch: Sequence[tuple[torch.Tensor, torch.Tensor]],
) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """Stack the (equal-sized) images; keep the per-image box tensors in a list."""
    images, boxes = zip(*batch)
    return torch.stack(images), list(boxes)


def seed_worker(worker_id: int, base_seed: int) -> None:
    """``worker_init_fn``: seed Python, NumPy and torch global RNGs from (seed, epoch, worker).

    The dataset itself uses per-sample generators; this covers any code relying on global RNGs.
    """
    epoch = getattr(get_worker_info().dataset, "epoch", 0)
    state = np.random.SeedSequence([base_seed, epoch, worker_id]).generate_state(2)
    random.seed(int(state[0]))
    np.random.seed(int(state[1]))
    torch.manual_seed(int(state[0]) << 32 | int(state[1]))


def build_dataloader(
    dataset: FaceDetectionDataset, batch_size: int, workers: int = 0, seed: int = 0,
    shuffle: bool = True, distributed: bool = False, drop_last: bool = False,
) -> DataLoader:
    """A loader whose batches depend only on (seed, epoch); see :func:`set_epoch`.

    ``distributed=True`` shards with :class:`DistributedSampler` over the initialised process
    group; otherwise the same sampler runs with a single replica.
    """
    if distributed:
        sampler = DistributedSampler(dataset, shuffle=shuffle, seed=seed, drop_last=drop_last)
    else:
        sampler = DistributedSampler(dataset, num_replicas=1, rank=0, shuffle=shuffle, seed=seed,
                                     drop_last=drop_last)
    return DataLoader(
        dataset, batch_size=batch_size, sampler=sampler, num_workers=workers,
        collate_fn=detection_collate, worker_init_fn=partial(seed_worker, base_seed=seed),
        generator=torch.Generator().manual_seed(seed), drop_last=drop_last,
        pin_memory=torch.cuda.is_available(),
    )


def set_epoch(loader: DataLoader, epoch: int) -> None:
    """Set the epoch of the loader's sampler and dataset (before iterating it)."""
    loader.sampler.set_epoch(epoch)
    if hasattr(loader.dataset, "set_epoch"):
        loader.dataset.set_epoch(epoch)
