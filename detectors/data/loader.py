"""Torch datasets and loaders for face detection, deterministic under a seed.

Randomness is drawn per sample from ``numpy.random.default_rng([seed, epoch, index])``: a
sample's augmentation depends only on the seed, the epoch and its index, not on the number of
workers, the batch size or the rank. Shuffling uses :class:`DistributedSampler` (with one
replica when not distributed) whose permutation depends only on ``seed + epoch``, so a resumed
run sees the same batches. Call :func:`set_epoch` before each epoch.

Workers decode, crop, resize and flip, and hand over uint8 images with each sample's
photometric draw (:class:`DetectionBatch`); :func:`prepare_batch` moves a batch to the training
device, where it is scaled to float, distorted (:func:`~detectors.data.batch_augment.photometric`)
and normalised. A GPU thus receives a quarter of the bytes and does the per-pixel float work,
and the workers only the geometric part.
"""
from __future__ import annotations

from collections.abc import Sequence
from functools import partial
from typing import Any, NamedTuple

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler, get_worker_info

from detectors.data.augment import AugmentConfig, augment, letterbox
from detectors.data.batch_augment import photometric
from detectors.data.image import IMAGE_MEAN, IMAGE_STD, load_image, normalize, to_tensor, to_unit
from detectors.data.wider import FaceSample
from nas_search.runtime import seed_everything

__all__ = ["IMAGE_MEAN", "IMAGE_STD", "to_tensor", "FaceDetectionDataset", "DetectionSample",
           "DetectionBatch", "detection_collate", "prepare_batch", "loader_options",
           "build_dataloader", "set_epoch", "seed_worker"]
#: Batches each worker prepares ahead (PyTorch's default is 2): uint8 batches are small, and a
#: deeper queue absorbs the spread of per-image decode times.
PREFETCH_FACTOR = 4


class DetectionSample(NamedTuple):
    """One item: ``image`` ``[3, S, S]`` uint8 RGB, ``boxes`` ``[N, 4]`` xyxy float32 and
    ``photometric`` the ``[5]`` draw (:meth:`~detectors.data.augment.Photometric.as_array`), or
    ``None`` without augmentation."""

    image: torch.Tensor
    boxes: torch.Tensor
    photometric: torch.Tensor | None


class DetectionBatch(NamedTuple):
    """Collated samples: ``images`` ``[B, 3, S, S]`` uint8, ``boxes`` one ``[N_i, 4]`` tensor per
    image, ``photometric`` ``[B, 5]`` or ``None``. Still raw: see :func:`prepare_batch`."""

    images: torch.Tensor
    boxes: list[torch.Tensor]
    photometric: torch.Tensor | None


class FaceDetectionDataset(Dataset):
    """:class:`DetectionSample` items.

    Boxes are the sample's training boxes (``invalid`` ones removed). ``train=True``: the
    geometric :func:`~detectors.data.augment.augment` pipeline and its photometric draw.
    ``train=False``: :func:`~detectors.data.augment.letterbox` to ``size`` (boxes in the
    letterboxed frame; divide by ``size / max(H, W)`` to map back).

    The epoch lives in shared memory, so that persistent workers see :meth:`set_epoch`.
    """

    def __init__(self, samples: Sequence[FaceSample], train: bool, size: int = 640, seed: int = 0,
                 augment_config: AugmentConfig | None = None):
        self.samples = list(samples)
        self.train = train
        self.size = size
        self.seed = seed
        self.augment_config = augment_config or AugmentConfig()
        self._epoch = torch.zeros((), dtype=torch.int64).share_memory_()

    @property
    def epoch(self) -> int:
        return int(self._epoch)

    def set_epoch(self, epoch: int) -> None:
        self._epoch.fill_(epoch)

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> DetectionSample:
        sample = self.samples[index]
        image = load_image(sample.image_path)
        boxes = sample.training_boxes()
        draw = None
        if self.train:
            rng = np.random.default_rng([self.seed, self.epoch, index])
            image, boxes, params = augment(image, boxes, rng, self.size, self.augment_config)
            draw = torch.from_numpy(params.as_array())
        else:
            image, boxes, _ = letterbox(image, boxes, self.size)
        return DetectionSample(torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1))),
                               torch.from_numpy(np.ascontiguousarray(boxes, dtype=np.float32)),
                               draw)


def detection_collate(batch: Sequence[DetectionSample]) -> DetectionBatch:
    """Stack the (equal-sized) images and the draws; keep the per-image boxes in a list."""
    images, boxes, draws = zip(*batch)
    has_draws = [d is not None for d in draws]
    if any(has_draws) and not all(has_draws):
        raise ValueError("detection_collate: a batch mixes augmented and plain samples")
    return DetectionBatch(torch.stack(images), list(boxes),
                          torch.stack(draws) if all(has_draws) else None)


def _device_images(images: torch.Tensor, draws: torch.Tensor | None, device: torch.device
                   ) -> torch.Tensor:
    x = to_unit(images.to(device, non_blocking=True))
    return normalize(x if draws is None else photometric(x, draws))


def prepare_batch(
    batch: DetectionBatch, device: torch.device | str,
    memory_format: torch.memory_format = torch.contiguous_format,
) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """The network's input on ``device``: the uint8 images copied over (asynchronously from
    pinned memory), scaled to [0, 1], distorted by their photometric draws, normalised as
    :func:`~detectors.data.image.to_tensor` does; and the boxes.

    A GPU takes the batch at once; a CPU one image at a time, so that its floats stay in the
    caches (README.md, "Benchmark: training data pipeline")."""
    device = torch.device(device)
    draws = batch.photometric
    if device.type != "cpu":
        images = _device_images(batch.images, draws, device).contiguous(
            memory_format=memory_format)
    else:
        images = torch.empty(batch.images.shape, memory_format=memory_format)
        for i in range(len(images)):
            images[i] = _device_images(batch.images[i:i + 1],
                                       None if draws is None else draws[i:i + 1], device)[0]
    return images, [b.to(device, non_blocking=True) for b in batch.boxes]


def seed_worker(worker_id: int, base_seed: int) -> None:
    """``worker_init_fn``: seed Python, NumPy and torch global RNGs from (seed, epoch, worker),
    the epoch the workers start in (persistent workers start once).

    The dataset itself uses per-sample generators; this covers any code relying on global RNGs.
    """
    epoch = getattr(get_worker_info().dataset, "epoch", 0)
    state = np.random.SeedSequence([base_seed, epoch, worker_id]).generate_state(2)
    seed_everything(int(state[0]), int(state[1]), int(state[0]) << 32 | int(state[1]))


def loader_options(device: torch.device | str, workers: int) -> dict[str, Any]:
    """DataLoader settings for a training ``device``: pinned memory for CUDA (asynchronous
    copies), persistent workers (no restart each epoch) and :data:`PREFETCH_FACTOR` with
    workers."""
    return {"num_workers": workers, "pin_memory": torch.device(device).type == "cuda",
            "persistent_workers": workers > 0,
            "prefetch_factor": PREFETCH_FACTOR if workers > 0 else None}


def build_dataloader(
    dataset: FaceDetectionDataset, batch_size: int, workers: int = 0, seed: int = 0,
    shuffle: bool = True, distributed: bool = False, drop_last: bool = False,
    device: torch.device | str = "cpu",
) -> DataLoader:
    """A loader of :class:`DetectionBatch` es whose content depends only on (seed, epoch); see
    :func:`set_epoch`, and :func:`prepare_batch` for the step on ``device``.

    ``distributed=True`` shards with :class:`DistributedSampler` over the initialised process
    group; otherwise the same sampler runs with a single replica. :func:`loader_options` sets
    memory pinning, persistent workers and prefetching from ``device`` and ``workers``.
    """
    if distributed:
        sampler = DistributedSampler(dataset, shuffle=shuffle, seed=seed, drop_last=drop_last)
    else:
        sampler = DistributedSampler(dataset, num_replicas=1, rank=0, shuffle=shuffle, seed=seed,
                                     drop_last=drop_last)
    return DataLoader(
        dataset, batch_size=batch_size, sampler=sampler, collate_fn=detection_collate,
        worker_init_fn=partial(seed_worker, base_seed=seed),
        generator=torch.Generator().manual_seed(seed), drop_last=drop_last,
        **loader_options(device, workers),
    )


def set_epoch(loader: DataLoader, epoch: int) -> None:
    """Set the epoch of the loader's sampler and dataset (before iterating it)."""
    loader.sampler.set_epoch(epoch)
    if hasattr(loader.dataset, "set_epoch"):
        loader.dataset.set_epoch(epoch)
