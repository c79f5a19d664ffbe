"""FDDB annotations: ten folds of ellipses (Jain & Learned-Miller, FDDB tech report UM-CS-2010-009).

Layout under the FDDB root::

    FDDB-folds/FDDB-fold-XX.txt               image names, one a line, no extension
    FDDB-folds/FDDB-fold-XX-ellipseList.txt   name, count, then ``count`` lines
                                              ``major_radius minor_radius angle cx cy 1``
    <name>.jpg                                e.g. 2002/08/11/big/img_591.jpg

``angle`` is in radians, the direction of the major axis from the image x axis (y pointing down),
as the official tool passes it to OpenCV's ellipse drawing.
"""
from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from detectors.data.image import read_image_size
from detectors.data.wider import AnnotationError

ELLIPSE_FIELDS = "major minor angle cx cy 1"
FOLD_RE = re.compile(r"FDDB-fold-(\d+)-ellipseList\.txt$")


@dataclass(frozen=True, eq=False)
class FDDBAnnotation:
    """One FDDB image: ``ellipses`` ``(N, 5)`` float64 rows ``(major_r, minor_r, angle, cx, cy)``;
    ``image_size`` ``(W, H)`` when the image was found (the evaluation clips regions to it)."""

    name: str
    image_path: Path
    ellipses: np.ndarray
    image_size: tuple[int, int] | None = None

    @property
    def boxes(self) -> np.ndarray:
        """Tight ``xyxy`` float32 boxes around the ellipses (for training and drawing)."""
        return ellipse_extents(self.ellipses).astype(np.float32)


def ellipse_extents(ellipses: np.ndarray) -> np.ndarray:
    """Tight ``xyxy`` boxes ``(N, 4)`` of ellipses ``(major_r, minor_r, angle, cx, cy)``."""
    a, b, t, cx, cy = np.asarray(ellipses, dtype=np.float64).reshape(-1, 5).T
    half_w = np.hypot(a * np.cos(t), b * np.sin(t))
    half_h = np.hypot(a * np.sin(t), b * np.cos(t))
    return np.stack([cx - half_w, cy - half_h, cx + half_w, cy + half_h], axis=1)


def parse_fddb_blocks(path: str | Path, fields: str) -> list[tuple[str, np.ndarray]]:
    """Read the FDDB block format shared by ellipse lists and detection files: an image name,
    a count, then ``count`` lines of the whitespace-separated numbers named in ``fields``.
    Returns ``(name, table)`` pairs; malformed input (``nan``/``inf`` included) raises
    :class:`AnnotationError`."""
    path = Path(path)
    n_fields = len(fields.split())
    lines = [line.strip() for line in path.read_text().splitlines()]
    blocks: list[tuple[str, np.ndarray]] = []
    seen: set[str] = set()
    i = 0
    while i < len(lines):
        if not lines[i]:
            i += 1
            continue
        name = lines[i]
        if name in seen:
            raise AnnotationError(path, i + 1, f"image {name} appears twice")
        if i + 1 >= len(lines) or not lines[i + 1].isdigit():
            got = repr(lines[i + 1]) if i + 1 < len(lines) else "end of file"
            raise AnnotationError(
                path, i + 2, f"count of {name} must be a non-negative integer, got {got}")
        count = int(lines[i + 1])
        rows = []
        for j in range(i + 2, i + 2 + count):
            if j >= len(lines):
                raise AnnotationError(path, j + 1, f"unexpected end of file: {name} (line {i + 1}) "
                                      f"declares {count} rows, found {j - i - 2}")
            tokens = lines[j].split()
            if len(tokens) != n_fields:
                raise AnnotationError(path, j + 1, f"expected {n_fields} fields '{fields}', "
                                      f"got {len(tokens)}: {lines[j]!r}")
            try:
                row = [float(t) for t in tokens]
            except ValueError:
                raise AnnotationError(path, j + 1, f"non-numeric field in {lines[j]!r}") from None
            if not np.isfinite(row).all():
                raise AnnotationError(path, j + 1, f"non-finite value in {lines[j]!r}")
            rows.append(row)
        blocks.append((name, np.asarray(rows, dtype=np.float64).reshape(-1, n_fields)))
        seen.add(name)
        i += 2 + count
    return blocks


def parse_fddb_ellipses(path: str | Path, images_root: str | Path) -> list[FDDBAnnotation]:
    """Parse one ``FDDB-fold-XX-ellipseList.txt``; images are ``<images_root>/<name>.jpg``."""
    out = []
    for name, table in parse_fddb_blocks(path, ELLIPSE_FIELDS):
        image_path = Path(images_root) / f"{name}.jpg"
        size = read_image_size(image_path) if image_path.is_file() else None
        out.append(FDDBAnnotation(name, image_path, table[:, :5], size))
    return out


def load_fddb(root: str | Path, folds: Sequence[int] | None = None) -> list[FDDBAnnotation]:
    """All annotations of the given folds (default: every fold found), in fold order.

    Each ellipse list is checked against its name list ``FDDB-fold-XX.txt`` when that exists.
    """
    root = Path(root)
    fold_dir = root / "FDDB-folds"
    found = {int(m.group(1)): p for p in fold_dir.glob("FDDB-fold-*-ellipseList.txt")
             if (m := FOLD_RE.search(p.name))}
    if not found:
        raise FileNotFoundError(f"no FDDB-folds/FDDB-fold-XX-ellipseList.txt under {root}")
    wanted = sorted(found) if folds is None else list(folds)
    missing = [f for f in wanted if f not in found]
    if missing:
        raise FileNotFoundError(
            f"FDDB folds {missing} not found in {fold_dir} (found {sorted(found)})")
    out: list[FDDBAnnotation] = []
    for fold in wanted:
        annotations = parse_fddb_ellipses(found[fold], root)
        name_list = fold_dir / f"FDDB-fold-{fold:02d}.txt"
        if name_list.is_file():
            names = [n.strip() for n in name_list.read_text().splitlines() if n.strip()]
            if names != [a.name for a in annotations]:
                raise ValueError(f"{name_list} and {found[fold].name} list different images")
        out.extend(annotations)
    return out
