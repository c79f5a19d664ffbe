"""Which images a run reads: a WIDER-format folder (:class:`DataSource`), restricted to an image
list, then split deterministically into train and val."""
from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from detectors.data.wider import FaceSample, WiderDataset, read_image_list

Subset = Literal["all", "train", "val"]


@dataclass
class DataSource:
    """One WIDER-format folder: ``images/<event>/<name>.jpg`` + one ``*_bbx_gt.txt``, or the
    official WIDER FACE layout (``WIDER_<split>/images``, ``wider_face_split/``), then
    ``wider_split`` (``train`` / ``val``) says which split.

    ``images`` is an optional list file (one relative image path per line, ``#`` comments)
    restricting the folder to those images. ``subset`` then splits what remains into a
    deterministic train/val partition (:func:`split_images`): within each event,
    images sorted by name, every ``1/val_fraction``-th one (evenly spaced) is ``val``, the others
    ``train``. Use the same ``val_fraction`` on the train and val side to hold out part of a folder.

    ``ground_truth``: the folder of the official evaluation ``.mat`` files (``eval_tools``'
    ``ground_truth/``) when it is not ``<dir>/ground_truth`` or ``<dir>``; evaluation only.
    """

    dir: str
    wider_split: Literal["train", "val"] | None = None
    images: str | None = None
    subset: Subset = "all"
    val_fraction: float = 0.5
    ground_truth: str | None = None


def is_val_position(index: int, fraction: float) -> bool:
    """Whether the ``index``-th image (0-based) of an event is held out: evenly spaced, so that
    ``floor(n * fraction)`` of the first ``n`` images are, for every ``n``."""
    return math.floor((index + 1) * fraction) > math.floor(index * fraction)


def split_images(samples: Sequence[FaceSample], val_fraction: float
                 ) -> tuple[list[FaceSample], list[FaceSample]]:
    """Deterministic ``(train, val)`` split: within each event (the folder of ``rel_path``),
    images sorted by name, the positions :func:`is_val_position` picks go to ``val``.
    Order of ``samples`` is kept in both lists."""
    if not 0 <= val_fraction <= 1:
        raise ValueError(f"val_fraction must lie in [0, 1], got {val_fraction}")
    by_event: dict[str, list[str]] = {}
    for s in samples:
        by_event.setdefault(str(Path(s.rel_path).parent), []).append(s.rel_path)
    held_out = {rel for names in by_event.values()
                for i, rel in enumerate(sorted(names)) if is_val_position(i, val_fraction)}
    return ([s for s in samples if s.rel_path not in held_out],
            [s for s in samples if s.rel_path in held_out])


def load_samples(source: DataSource) -> list[FaceSample]:
    """The images of ``source``: its folder, restricted to the ``images`` list, then its
    ``subset`` of the :func:`split_images` partition."""
    samples = list(WiderDataset.from_dir(source.dir, source.wider_split).samples)
    if source.images is not None:
        wanted = read_image_list(source.images)
        known = {s.rel_path for s in samples}
        unknown = [rel for rel in wanted if rel not in known]
        if unknown:
            raise ValueError(f"{source.images}: {len(unknown)} image(s) are not annotated in "
                             f"{source.dir}, e.g. {unknown[:3]}")
        keep = set(wanted)
        samples = [s for s in samples if s.rel_path in keep]
    if source.subset != "all":
        train, val = split_images(samples, source.val_fraction)
        samples = train if source.subset == "train" else val
    if not samples:
        raise ValueError(f"{source.dir}: no images selected (images={source.images}, "
                         f"subset={source.subset}, val_fraction={source.val_fraction})")
    return samples
