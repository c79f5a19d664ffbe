"""WIDER-format and FDDB parsing, image checks, and the synthetic smoke-test set."""
from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from asfd_cli.main import main as asfd_main
from detectors.data.fddb import load_fddb, parse_fddb_ellipses
from detectors.data.image import ImageReadError, load_image, to_rgb8
from detectors.data.synthetic import make_synthetic
from detectors.data.wider import (
    AnnotationError, WiderDataset, check_images, parse_wider_annotations,
)

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
needs_data = pytest.mark.skipif(not DATA.is_dir(), reason=f"shared test data not found at {DATA}")
FACE = "10 20 30 40 0 0 0 0 0 0"


def write(tmp_path: Path, text: str, name: str = "gt_bbx_gt.txt") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


@needs_data
def test_shared_val_sample_parses_with_degenerate_boxes_reported():
    with pytest.warns(UserWarning, match=r"dropped 2 of 2426 boxes with w <= 0 or h <= 0"):
        ds = WiderDataset.from_dir(DATA / "wider-val-sample")
    assert (len(ds), ds.num_boxes) == (136, 2424)
    assert ds.images_root == DATA / "wider-val-sample" / "images"
    first = ds[0]
    assert first.rel_path == "0--Parade/0_Parade_Parade_0_814.jpg"
    assert first.key == "0--Parade/0_Parade_Parade_0_814"
    # First line "30.06 169.12 3.25 3.65 2 0 0 0 1 0" -> xyxy, blur 2, occlusion 1.
    np.testing.assert_allclose(first.boxes[0], [30.06, 169.12, 33.31, 172.77], atol=1e-4)
    assert first.attributes[0].tolist() == [2, 0, 0, 0, 1, 0]
    assert first.boxes.dtype == np.float32 and first.boxes.shape == (36, 4)


@needs_data
def test_shared_extra_and_dlib_sets_parse():
    extra = WiderDataset.from_dir(DATA / "wider-extra")
    assert (len(extra), extra.num_boxes) == (51, 1300)
    assert sum(int(s.invalid.sum()) for s in extra) == 5  # README: 5 boxes have invalid = 1
    assert sum(len(s.training_boxes()) for s in extra) == 1295
    dlib = WiderDataset.from_dir(DATA / "dlib-faces")
    assert (len(dlib), dlib.num_boxes) == (9, 43)
    assert dlib.images_root == DATA / "dlib-faces"  # paths there are written as images/<name>.jpg


@pytest.mark.parametrize("body, line, message", [
    (f"a/1.jpg\n2\n{FACE}\n10 20 30\n", 4, "expected 10 fields"),
    (f"a/1.jpg\n1\n10 20 x 40 0 0 0 0 0 0\n", 3, "non-numeric field"),
    (f"a/1.jpg\n3\n{FACE}\n{FACE}\na/2.jpg\n1\n{FACE}\n", 5,
     "count mismatch: a/1.jpg (line 1) declares 3"),
    (f"a/1.jpg\n1\n{FACE}\n{FACE}\na/2.jpg\n1\n{FACE}\n", 4, "expected an image path"),
    (f"a/1.jpg\n2\n{FACE}\n", 4, "unexpected end of file"),
    ("a/1.jpg\ntwo\n", 2, "face count of a/1.jpg must be a non-negative integer"),
    ("a/1.jpg\n0\n1 0 0 0 0 0 0 0 0 0\n", 3, "expected the dummy line"),
    (f"a/1.jpg\n2\n{FACE}\nnan 20 30 40 0 0 0 0 0 0\n", 4, "x = nan is not a finite coordinate"),
    ("a/1.jpg\n1\n10 20 inf 40 0 0 0 0 0 0\n", 3, "w = inf is not a finite coordinate"),
    ("a/1.jpg\n1\n10 20 1e30 40 0 0 0 0 0 0\n", 3, "w = 1e+30 is not a finite coordinate"),
    ("a/1.jpg\n1\n10 20 30 -inf 0 0 0 0 0 0\n", 3, "h = -inf is not a finite coordinate"),
    ("a/1.jpg\n1\n10 20 30 40 0 0 0 300 0 0\n", 3, "invalid = 300 is not one of the codes 0..1"),
    ("a/1.jpg\n1\n10 20 30 40 3 0 0 0 0 0\n", 3, "blur = 3 is not one of the codes 0..2"),
    ("a/1.jpg\n1\n10 20 30 40 0 0 0 0 0.5 0\n", 3, "occlusion = 0.5 is not one of the codes"),
    ("a/1.jpg\n1\n10 20 30 40 0 0 0 0 0 nan\n", 3, "pose = nan is not one of the codes"),
])
def test_malformed_annotations_name_file_and_line(tmp_path, body, line, message):
    path = write(tmp_path, body)
    with pytest.raises(AnnotationError, match=re.escape(f"{path}:{line}: ")) as info:
        parse_wider_annotations(path, tmp_path)
    assert message in str(info.value) and info.value.line == line


def test_on_error_warn_skips_only_the_bad_record(tmp_path):
    path = write(tmp_path, f"a/1.jpg\n1\n{FACE}\na/2.jpg\n2\n{FACE}\n1 2 3\na/3.jpg\n1\n{FACE}\n")
    with pytest.warns(UserWarning, match=re.escape(f"{path}:7: expected 10 fields")):
        samples = parse_wider_annotations(path, tmp_path, on_error="warn")
    assert [s.rel_path for s in samples] == ["a/1.jpg", "a/3.jpg"]


def test_on_error_warn_skips_a_non_finite_box_record(tmp_path):
    path = write(tmp_path, f"a/1.jpg\n1\n10 20 nan 40 0 0 0 0 0 0\na/2.jpg\n1\n{FACE}\n")
    with pytest.warns(UserWarning, match=re.escape(f"{path}:3: w = nan")):
        samples = parse_wider_annotations(path, tmp_path, on_error="warn")
    assert [s.rel_path for s in samples] == ["a/2.jpg"]


def test_zero_face_images_with_dummy_line(tmp_path):
    path = write(tmp_path, f"a/0.jpg\n0\n0 0 0 0 0 0 0 0 0 0 \na/1.jpg\n1\n{FACE} \na/2.jpg\n0\n")
    samples = parse_wider_annotations(path, tmp_path / "images")
    assert [len(s.boxes) for s in samples] == [0, 1, 0]
    assert samples[0].boxes.shape == (0, 4) and samples[0].attributes.shape == (0, 6)
    np.testing.assert_array_equal(samples[1].boxes, [[10, 20, 40, 60]])
    assert samples[1].image_path == tmp_path / "images" / "a" / "1.jpg"


def test_corrupt_and_missing_images_are_named(tmp_path):
    (tmp_path / "images" / "a").mkdir(parents=True)
    bad = tmp_path / "images" / "a" / "1.jpg"
    bad.write_bytes(b"\x00garbage bytes, not a JPEG" * 10)
    Image.new("RGB", (8, 6)).save(tmp_path / "images" / "a" / "2.jpg")
    write(tmp_path, f"a/1.jpg\n1\n{FACE}\na/2.jpg\n1\n{FACE}\na/3.jpg\n1\n{FACE}\n",
          "faces_bbx_gt.txt")
    with pytest.raises(ImageReadError, match=re.escape(str(bad))):
        load_image(bad)
    with pytest.raises(FileNotFoundError, match="3.jpg"):
        load_image(tmp_path / "images" / "a" / "3.jpg")
    with pytest.raises(ImageReadError, match=re.escape(str(bad))):
        WiderDataset.from_dir(tmp_path)
    with pytest.warns(UserWarning) as record:
        ds = WiderDataset.from_dir(tmp_path, on_error="warn")
    assert [s.rel_path for s in ds] == ["a/2.jpg"]
    messages = " ".join(str(w.message) for w in record)
    assert str(bad) in messages and "3.jpg" in messages
    assert check_images(list(ds)) == list(ds)


def test_16_bit_png_is_scaled_to_8_bits_not_clipped(tmp_path):
    ramp = np.linspace(0, 65535, 64 * 8).round().astype(np.uint16).reshape(8, 64)
    Image.fromarray(ramp).save(tmp_path / "deep.png")
    with Image.open(tmp_path / "deep.png") as im:
        assert im.mode.startswith("I;16")  # really a 16-bit file
    rgb = load_image(tmp_path / "deep.png")
    assert rgb.dtype == np.uint8 and rgb.shape == (8, 64, 3)
    expected = np.round(ramp / 257.0).astype(np.uint8)
    np.testing.assert_array_equal(rgb[..., 0], expected)
    np.testing.assert_array_equal(rgb[..., 0], rgb[..., 2])
    assert (rgb == 255).mean() < 0.01  # PIL's convert("RGB") clips ~all of it to 255
    assert to_rgb8(Image.fromarray(ramp)).tolist() == rgb.tolist()  # PIL input: same rule
    with pytest.raises(ImageReadError, match="mode F"):
        to_rgb8(Image.fromarray(np.zeros((2, 2), np.float32)), "f.tif")


def test_official_layout_needs_a_split(tmp_path):
    (tmp_path / "WIDER_val" / "images" / "a").mkdir(parents=True)
    Image.new("RGB", (8, 6)).save(tmp_path / "WIDER_val" / "images" / "a" / "1.jpg")
    (tmp_path / "wider_face_split").mkdir()
    write(tmp_path / "wider_face_split", f"a/1.jpg\n1\n{FACE}\n", "wider_face_val_bbx_gt.txt")
    with pytest.raises(ValueError, match="pass split"):
        WiderDataset.from_dir(tmp_path)
    ds = WiderDataset.from_dir(tmp_path, split="val")
    assert ds[0].image_path == tmp_path / "WIDER_val" / "images" / "a" / "1.jpg"
    with pytest.raises(FileNotFoundError, match="wider_face_train_bbx_gt.txt"):
        WiderDataset.from_dir(tmp_path, split="train")


def test_fddb_folds_parse_and_errors(tmp_path):
    folds = tmp_path / "FDDB-folds"
    folds.mkdir()
    (tmp_path / "2002" / "big").mkdir(parents=True)
    Image.new("RGB", (120, 90)).save(tmp_path / "2002" / "big" / "img_1.jpg")
    (folds / "FDDB-fold-01.txt").write_text("2002/big/img_1\n2002/big/img_2\n")
    (folds / "FDDB-fold-01-ellipseList.txt").write_text(
        "2002/big/img_1\n2\n40 30 1.5 60 45  1\n20 15 -1.4 20 20  1\n"
        "2002/big/img_2\n1\n10 8 0 5 5  1\n")
    annotations = load_fddb(tmp_path)
    assert [a.name for a in annotations] == ["2002/big/img_1", "2002/big/img_2"]
    assert annotations[0].image_size == (120, 90) and annotations[1].image_size is None
    np.testing.assert_allclose(annotations[0].ellipses[0], [40, 30, 1.5, 60, 45])
    # Tight box of an axis-aligned ellipse (angle 0): cx +- major, cy +- minor.
    np.testing.assert_allclose(annotations[1].boxes, [[-5, -3, 15, 13]])
    bad = folds / "FDDB-fold-02-ellipseList.txt"
    bad.write_text("2002/big/img_1\n1\n40 30 1.5 60\n")
    with pytest.raises(AnnotationError, match=re.escape(f"{bad}:3: expected 6 fields")):
        parse_fddb_ellipses(bad, tmp_path)
    (folds / "FDDB-fold-01.txt").write_text("2002/big/img_2\n")
    with pytest.raises(ValueError, match="list different images"):
        load_fddb(tmp_path, folds=[1])
    with pytest.raises(FileNotFoundError, match=r"folds \[3\]"):
        load_fddb(tmp_path, folds=[3])


def test_synthetic_set_is_parseable_deterministic_and_labelled(tmp_path):
    txt = make_synthetic(tmp_path / "a", 20, seed=3, size=(96, 72))
    ds = WiderDataset.from_dir(tmp_path / "a")
    assert len(ds) == 20 and ds.annotation_file == txt
    assert "SMOKE-TEST" in (tmp_path / "a" / "README.txt").read_text()
    assert any(len(s.boxes) == 0 for s in ds) and ds.num_boxes > 20
    for s in ds:
        assert load_image(s.image_path).shape == (72, 96, 3)
        assert np.all(s.boxes >= 0) and np.all(s.boxes[:, 2] <= 96) and np.all(s.boxes[:, 3] <= 72)
    heights = np.concatenate([s.boxes[:, 3] - s.boxes[:, 1] for s in ds])
    assert heights.min() >= 6 and heights.max() <= 0.7 * 72  # 8 px faces, shorter when rotated
    make_synthetic(tmp_path / "b", 20, seed=3, size=(96, 72))
    assert (tmp_path / "b" / txt.name).read_text() == txt.read_text()
    make_synthetic(tmp_path / "c", 20, seed=4, size=(96, 72))
    assert (tmp_path / "c" / txt.name).read_text() != txt.read_text()


def test_make_synthetic_cli(tmp_path, capsys):
    argv = ["make-synthetic", str(tmp_path), "--images", "3", "--size", "64x48", "--seed", "1"]
    assert asfd_main(argv) == 0
    assert "SMOKE-TEST" in capsys.readouterr().out
    assert len(WiderDataset.from_dir(tmp_path)) == 3
