"""WIDER FACE annotations: the official text format and its folder layouts.

The text format (``wider_face_{train,val}_bbx_gt.txt``, official readme), one block per image::

    <event>/<name>.jpg
    <count>
    x y w h blur expression illumination invalid occlusion pose      (``count`` lines)

An image with 0 faces is followed by ONE dummy line ``0 0 0 0 0 0 0 0 0 0``. The same format is
used for any folder of faces (the shared ``wider-val-sample/``, ``wider-extra/``, ``dlib-faces/``
and the synthetic smoke-test set of :mod:`detectors.data.synthetic`).

Box policy (the paper is silent; these follow DSFD/PyramidBox practice):

* :class:`FaceSample` keeps every box with ``w > 0`` and ``h > 0``, tiny and ``invalid`` ones
  included: evaluation needs them (the official WIDER protocol reads its own ``.mat`` ground
  truth, where they are ignore regions).
* Boxes with ``w <= 0`` or ``h <= 0`` are not faces: the parser drops them and warns once per
  file with their count.
* Training targets are :meth:`FaceSample.training_boxes` (``invalid`` boxes removed); faces under
  ``min_face`` pixels are removed *after* augmentation and resizing to the training size
  (:func:`detectors.data.augment.drop_small_faces`), so the threshold is in network pixels.
"""
from __future__ import annotations

import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np

from detectors.data.image import ImageReadError, read_image_size

ATTRIBUTES: tuple[str, ...] = ("blur", "expression", "illumination", "invalid", "occlusion", "pose")
#: Largest code of each attribute (official readme: blur, occlusion 0-2; the others 0-1).
ATTRIBUTE_MAX: dict[str, int] = {"blur": 2, "expression": 1, "illumination": 1, "invalid": 1,
                                 "occlusion": 2, "pose": 1}
#: Bound on ``|x|, |y|, w, h`` in pixels: far beyond any real image, so a larger value is a
#: corrupt line, not a face.
MAX_COORDINATE = 1e5
IMAGE_EXTENSIONS: tuple[str, ...] = (".jpg", ".jpeg", ".png", ".bmp")
FIELDS_PER_FACE = 4 + len(ATTRIBUTES)
SPLITS: tuple[str, ...] = ("train", "val")

OnError = Literal["raise", "warn"]
Split = Literal["train", "val"]


class AnnotationError(ValueError):
    """A malformed line of an annotation or prediction text file; the message names file:line."""

    def __init__(self, path: str | Path, line: int, message: str):
        super().__init__(f"{path}:{line}: {message}")
        self.path = Path(path)
        self.line = line


@dataclass(frozen=True, eq=False)
class FaceSample:
    """One annotated image.

    ``boxes`` are ``xyxy`` float32 pixels ``(N, 4)`` (``x2 = x + w``); ``attributes`` are the six
    WIDER codes ``(N, 6)`` int8 in :data:`ATTRIBUTES` order; ``rel_path`` is the path as written in
    the annotation file (``<event>/<name>.jpg`` for WIDER FACE).
    """

    image_path: Path
    rel_path: str
    boxes: np.ndarray
    attributes: np.ndarray

    @property
    def key(self) -> str:
        """The image's key in prediction folders and dicts: :func:`image_key` of ``rel_path``."""
        return image_key(self.rel_path)

    @property
    def invalid(self) -> np.ndarray:
        """Boolean mask of the boxes flagged ``invalid = 1``."""
        return self.attribute("invalid").astype(bool)

    def attribute(self, name: str) -> np.ndarray:
        if name not in ATTRIBUTES:
            raise KeyError(f"unknown WIDER attribute {name!r}; expected one of {ATTRIBUTES}")
        return self.attributes[:, ATTRIBUTES.index(name)]

    def training_boxes(self) -> np.ndarray:
        """The boxes a detector is trained on: all but the ``invalid`` ones."""
        return self.boxes[~self.invalid]


def image_key(path: str) -> str:
    """``"<event>/<name>.jpg"`` or ``"<event>/<name>"`` -> ``"<event>/<name>"``."""
    suffix = Path(path).suffix
    return path[: -len(suffix)] if suffix.lower() in IMAGE_EXTENSIONS else path


def is_image_path(line: str) -> bool:
    return line.strip().lower().endswith(IMAGE_EXTENSIONS)


def read_image_list(path: str | Path) -> list[str]:
    """Relative image paths, one a line; blank lines and ``#`` comments ignored."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"image list not found: {path}")
    lines = (line.split("#", 1)[0].strip() for line in path.read_text().splitlines())
    return [line for line in lines if line]


def _parse_face_line(tokens: list[str], path: Path, line_no: int) -> list[float]:
    if len(tokens) != FIELDS_PER_FACE:
        raise AnnotationError(
            path, line_no, f"expected {FIELDS_PER_FACE} fields 'x y w h {' '.join(ATTRIBUTES)}', "
            f"got {len(tokens)}: {' '.join(tokens)!r}")
    try:
        values = [float(t) for t in tokens]
    except ValueError:
        raise AnnotationError(path, line_no, f"non-numeric field in {' '.join(tokens)!r}") from None
    for name, v in zip(("x", "y", "w", "h"), values):
        if not abs(v) <= MAX_COORDINATE:  # also catches nan
            raise AnnotationError(path, line_no, f"{name} = {v:g} is not a finite coordinate "
                                  f"within +-{MAX_COORDINATE:g} px")
    for name, v in zip(ATTRIBUTES, values[4:]):
        if not (v.is_integer() and 0 <= v <= ATTRIBUTE_MAX[name]):
            raise AnnotationError(path, line_no, f"{name} = {v:g} is not one of the codes "
                                  f"0..{ATTRIBUTE_MAX[name]}")
    return values


def xywh_to_xyxy(xywh: np.ndarray) -> np.ndarray:
    """``(N, >=4)`` rows ``x y w h ...`` -> ``(N, 4)`` ``x1 y1 x2 y2`` with ``x2 = x + w``."""
    return np.concatenate([xywh[:, :2], xywh[:, :2] + xywh[:, 2:4]], axis=1)


def _parse_record(
    lines: list[str], i: int, path: Path, images_root: Path,
) -> tuple[FaceSample, int, int]:
    """Parse the block starting at ``lines[i]``: (sample, next index, degenerate boxes dropped)."""
    rel = lines[i].strip()
    if not is_image_path(rel):
        raise AnnotationError(
            path, i + 1, f"expected an image path ending in one of {IMAGE_EXTENSIONS}, got {rel!r} "
            "(does the face count of the previous image match its box lines?)")
    if i + 1 >= len(lines):
        raise AnnotationError(path, i + 2,
                              f"unexpected end of file: missing the face count of {rel}")
    count_text = lines[i + 1].strip()
    if not count_text.isdigit():
        raise AnnotationError(
            path, i + 2, f"face count of {rel} must be a non-negative integer, got {count_text!r}")
    count = int(count_text)
    rows = []
    for k in range(count):
        j = i + 2 + k
        if j >= len(lines):
            raise AnnotationError(path, j + 1, f"unexpected end of file: {rel} (line {i + 1}) "
                                  f"declares {count} faces, found {k}")
        if is_image_path(lines[j]):
            raise AnnotationError(path, j + 1, f"count mismatch: {rel} (line {i + 1}) declares "
                                  f"{count} faces, found {k} before the next image path")
        rows.append(_parse_face_line(lines[j].split(), path, j + 1))
    nxt = i + 2 + count
    if count == 0 and nxt < len(lines) and not is_image_path(lines[nxt]):
        dummy = _parse_face_line(lines[nxt].split(), path, nxt + 1)
        if any(dummy):
            raise AnnotationError(path, nxt + 1, f"{rel} declares 0 faces; expected the dummy line "
                                  f"'0 0 0 0 0 0 0 0 0 0' or the next image path")
        nxt += 1
    table = np.asarray(rows, dtype=np.float64).reshape(-1, FIELDS_PER_FACE)
    keep = (table[:, 2] > 0) & (table[:, 3] > 0)
    boxes = xywh_to_xyxy(table[keep]).astype(np.float32)
    sample = FaceSample(images_root / rel, rel, boxes, table[keep, 4:].astype(np.int8))
    return sample, nxt, int((~keep).sum())


def parse_wider_annotations(
    txt_path: str | Path, images_root: str | Path, on_error: OnError = "raise",
) -> list[FaceSample]:
    """Parse a WIDER-format annotation file; image paths are resolved under ``images_root``.

    Malformed input (wrong field count, non-numeric field, a coordinate that is not finite or
    beyond :data:`MAX_COORDINATE`, an attribute outside its codes :data:`ATTRIBUTE_MAX`, count
    mismatch, truncated file) raises :class:`AnnotationError` naming file:line; with
    ``on_error='warn'`` the bad record is skipped with a warning naming file:line and parsing
    resumes at the next image path.
    """
    path, images_root = Path(txt_path), Path(images_root)
    lines = path.read_text().splitlines()
    samples: list[FaceSample] = []
    degenerate = total = 0
    i = 0
    while i < len(lines):
        if not lines[i].strip():
            i += 1
            continue
        try:
            sample, i_next, dropped = _parse_record(lines, i, path, images_root)
        except AnnotationError as err:
            if on_error == "raise":
                raise
            warnings.warn(f"{err}; skipping the record that starts at {path}:{i + 1}", stacklevel=2)
            i = next((j for j in range(i + 1, len(lines)) if is_image_path(lines[j])), len(lines))
            continue
        samples.append(sample)
        degenerate += dropped
        total += dropped + len(sample.boxes)
        i = i_next
    if degenerate:
        warnings.warn(f"{path}: dropped {degenerate} of {total} boxes with w <= 0 or h <= 0",
                      stacklevel=2)
    return samples


def check_images(samples: list[FaceSample], on_error: OnError = "raise") -> list[FaceSample]:
    """Check that every image exists and has a readable header; drop (with a warning) or raise."""
    good = []
    for sample in samples:
        try:
            read_image_size(sample.image_path)
        except (FileNotFoundError, ImageReadError) as err:
            if on_error == "raise":
                raise
            warnings.warn(f"{err}; skipping it", stacklevel=2)
            continue
        good.append(sample)
    return good


def _find_annotation_file(root: Path, split: Split | None) -> tuple[Path, Path]:
    """(annotation file, images root) for the official layout or a flat WIDER-format folder."""
    if split is not None and split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    official = root / "wider_face_split"
    if official.is_dir():
        if split is None:
            raise ValueError(
                f"{root} has the official WIDER FACE layout: pass split='train' or 'val'")
        return official / f"wider_face_{split}_bbx_gt.txt", root / f"WIDER_{split}" / "images"
    candidates = sorted(root.glob("*_bbx_gt.txt"))
    if split is not None:
        candidates = [c for c in candidates if f"_{split}_" in c.name]
    if not candidates:
        raise FileNotFoundError(f"no *_bbx_gt.txt annotation file in {root}"
                                + (f" for split {split!r}" if split else ""))
    if len(candidates) > 1:
        raise ValueError(
            f"several annotation files in {root}: {[c.name for c in candidates]}; pass split")
    txt = candidates[0]
    first = next((line.strip() for line in txt.read_text().splitlines() if line.strip()), "")
    images_root = next((d for d in (root / "images", root) if (d / first).is_file()),
                       root / "images")
    return txt, images_root


@dataclass(frozen=True)
class WiderDataset:
    """The samples of one WIDER-format annotation file, with where they came from."""

    samples: tuple[FaceSample, ...]
    annotation_file: Path
    images_root: Path

    @classmethod
    def from_dir(
        cls, root: str | Path, split: Split | None = None, on_error: OnError = "raise",
        verify_images: bool = True,
    ) -> WiderDataset:
        """Load a folder in the official layout (``WIDER_<split>/images``, ``wider_face_split/``)
        or any WIDER-format folder (``images/`` + one ``*_bbx_gt.txt``; image paths relative to
        ``images/`` or to the folder itself). ``verify_images`` checks each image's header."""
        root = Path(root)
        if not root.is_dir():
            raise FileNotFoundError(f"dataset folder not found: {root}")
        txt, images_root = _find_annotation_file(root, split)
        if not txt.is_file():
            raise FileNotFoundError(f"annotation file not found: {txt}")
        samples = parse_wider_annotations(txt, images_root, on_error)
        if verify_images:
            samples = check_images(samples, on_error)
        return cls(tuple(samples), txt, images_root)

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> FaceSample:
        return self.samples[index]

    def __iter__(self) -> Iterator[FaceSample]:
        return iter(self.samples)

    @property
    def num_boxes(self) -> int:
        return sum(len(s.boxes) for s in self.samples)
