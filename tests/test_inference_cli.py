"""``asfd train / detect / eval / export`` end to end on a tiny RetinaFace-style model."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from asfd_cli.main import main
from asfd_cli.train_cmds import run_name
from detectors.data.synthetic import make_synthetic
from detectors.evaluation.fddb_eval import read_fddb_detections

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
VAL_SAMPLE = SHARED / "wider-val-sample"


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    """A RetinaFace-style model trained for 2 iterations on synthetic faces, via the CLI."""
    root = tmp_path_factory.mktemp("cli")
    make_synthetic(root / "data", 4, seed=5, size=(96, 80))
    config = root / "train.yaml"
    config.write_text(f"model: {{name: retinaface_mnet025}}\nloss: {{name: retinaface}}\n"
                      f"data: {{train: [{{dir: {root / 'data'}}}], size: 64, batch_size: 2, "
                      f"workers: 0}}\nrun: {{threads: 1}}\neval: {{every: 0}}\n")
    assert main(["train", str(config), "--out", str(root / "run"), "--epochs", "1",
                 "--set", "schedule.warmup_iters=1"]) == 0
    return root / "run"


def test_train_command_writes_a_loadable_run(trained):
    assert (trained / "model.pt").is_file() and (trained / "metrics.csv").is_file()
    assert main(["train", str(trained / "config.yaml"), "--out", str(trained)]) == 2  # no --resume


def test_detect_writes_json_txt_and_picture(trained, tmp_path):
    image = next((trained.parent / "data" / "images").rglob("*.jpg"))
    assert main(["detect", str(trained), str(image), "-o", str(tmp_path),
                 "--score-threshold", "0.9"]) == 0
    written = sorted(p.name for p in tmp_path.iterdir())
    assert written == [f"{image.stem}{ext}" for ext in (".jpg", ".json", ".txt")]
    record = json.loads((tmp_path / f"{image.stem}.json").read_text())
    assert record["image"] == str(image)
    assert all(d["score"] >= 0.9 for d in record["detections"])
    lines = (tmp_path / f"{image.stem}.txt").read_text().splitlines()
    assert lines[0] == image.stem
    # The txt is not cut at --threshold: it keeps everything eval keeps (scores > 0.05).
    scores = [float(line.split()[4]) for line in lines[2:]]
    assert int(lines[1]) == len(scores) > len(record["detections"])
    assert min(scores) < 0.9 and all(s > 0.05 for s in scores)


def test_detect_caps_the_boxes_of_a_picture_and_warns(trained, tmp_path, capsys):
    image = next((trained.parent / "data" / "images").rglob("*.jpg"))
    assert main(["detect", str(trained), str(image), "-o", str(tmp_path), "--score-threshold", "0",
                 "--max-boxes", "2"]) == 0
    err = capsys.readouterr().err
    warnings = [line for line in err.splitlines() if line.startswith("warning:")]
    assert len(warnings) == 1 and "have more than 2 faces scoring >= 0" in warnings[0]
    assert warnings[0].endswith("(--max-boxes)") or "nearly constant" in warnings[0]  # unwrapped
    record = json.loads((tmp_path / f"{image.stem}.json").read_text())
    assert len(record["detections"]) > 2  # the cap is for the picture only
    assert main(["detect", str(trained), str(image), "-o", str(tmp_path),
                 "--max-boxes", "-1"]) == 2
    assert "--max-boxes must be >= 0" in capsys.readouterr().err


def test_run_name_names_eval_folders_after_the_run():
    assert run_name(Path("runs/d0")) == "d0"
    assert run_name(Path("runs/d0/model.pt")) == "d0"
    assert run_name(Path("d0.pt")) == "d0" and run_name(Path("x/d1.onnx")) == "d1"


@pytest.mark.skipif(not VAL_SAMPLE.is_dir(), reason=f"shared data not found at {VAL_SAMPLE}")
def test_eval_and_detect_outputs_chain_into_eval_preds(trained, tmp_path, monkeypatch, capsys):
    listed = tmp_path / "two.txt"
    listed.write_text("1--Handshaking/1_Handshaking_Handshaking_1_158.jpg\n"
                      "5--Car_Accident/5_Car_Accident_Accident_5_177.jpg\n")
    monkeypatch.chdir(tmp_path)
    assert main(["eval", str(trained / "model.pt"), "--data", str(VAL_SAMPLE), "--images",
                 str(listed)]) == 0
    out_dir = tmp_path / "runs" / "eval" / trained.name  # named after the run, not "model"
    result = json.loads((out_dir / "results.json").read_text())
    assert result["official"] and 0 <= result["ap_hard"] <= 1
    assert result["genotype"] is None and result["images"] == "images.txt"  # no AutoFEM
    predictions = sorted(p.relative_to(out_dir / "predictions").as_posix()
                         for p in (out_dir / "predictions").rglob("*.txt"))
    assert predictions == ["1--Handshaking/1_Handshaking_Handshaking_1_158.txt",
                           "5--Car_Accident/5_Car_Accident_Accident_5_177.txt"]
    assert (out_dir / "images.txt").read_text() == listed.read_text()
    assert (out_dir / "pr_curves.png").stat().st_size > 0
    # detect on the same images mirrors the folders and scores exactly like eval's files.
    assert main(["detect", str(trained), str(VAL_SAMPLE / "images"), "--images", str(listed),
                 "-o", str(tmp_path / "det")]) == 0
    capsys.readouterr()
    tables = []
    for folder in (out_dir / "predictions", tmp_path / "det"):
        assert main(["eval-preds", str(folder), str(VAL_SAMPLE), "--images",
                     str(out_dir / "images.txt")]) == 0
        # The AP rows only: the title and caption carry a time, and their wrapping with it.
        tables.append([line for line in capsys.readouterr().out.splitlines()
                       if any(f" {s} " in line for s in ("Easy", "Medium", "Hard"))])
    assert len(tables[0]) == 3 and tables[0] == tables[1]
    # A second eval into the same folder replaces the first one's predictions.
    listed.write_text("5--Car_Accident/5_Car_Accident_Accident_5_177.jpg\n")
    assert main(["eval", str(trained), "--data", str(VAL_SAMPLE), "--images", str(listed)]) == 0
    assert "removed 2 prediction file(s) of an earlier run" in capsys.readouterr().out
    assert [p.name for p in (out_dir / "predictions").rglob("*.txt")] == [
        "5_Car_Accident_Accident_5_177.txt"]
    assert not (out_dir / "predictions" / "1--Handshaking").exists()
    assert (out_dir / "images.txt").read_text() == listed.read_text()
    # Flat files (not <event>/<name>.txt) are an error naming the layout, not AP 0.
    assert main(["eval-preds", str(tmp_path / "det" / "5--Car_Accident"), str(VAL_SAMPLE)]) == 2
    assert "expected one <event>/<name>.txt per image" in " ".join(capsys.readouterr().err.split())


def test_detect_fddb_format_feeds_eval_fddb(trained, tmp_path, capsys):
    root = tmp_path / "fddb"
    images = sorted((trained.parent / "data" / "images").rglob("*.jpg"))[:2]
    names = ["2002/08/11/big/img_591", "2003/01/13/big/img_1"]
    for name, image in zip(names, images):
        (root / name).parent.mkdir(parents=True)
        (root / f"{name}.jpg").write_bytes(image.read_bytes())
    (root / "2003" / "extra.jpg").write_bytes(images[0].read_bytes())  # not in any fold
    (root / "FDDB-folds").mkdir()
    (root / "FDDB-folds" / "FDDB-fold-01.txt").write_text("".join(f"{n}\n" for n in names))
    (root / "FDDB-folds" / "FDDB-fold-01-ellipseList.txt").write_text(
        "".join(f"{n}\n1\n20 15 1.5 40 40 1\n" for n in names))
    assert main(["detect", str(trained), str(root), "--format", "fddb", "--images",
                 str(root / "FDDB-folds" / "FDDB-fold-01.txt"), "-o", str(tmp_path / "out")]) == 0
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["fddb_detections.txt"]
    dets = read_fddb_detections(tmp_path / "out" / "fddb_detections.txt")
    assert list(dets) == names and min(len(s) for _, s in dets.values()) > 0
    capsys.readouterr()
    assert main(["eval-fddb", str(tmp_path / "out" / "fddb_detections.txt"), str(root)]) == 0
    assert "TPR at 1000 false positives" in " ".join(capsys.readouterr().out.split())
    assert main(["detect", str(trained), str(root), str(root), "--images",
                 str(root / "FDDB-folds" / "FDDB-fold-01.txt"), "-o", str(tmp_path / "x")]) == 2


def test_export_command_verifies_two_sizes(trained, tmp_path):
    assert main(["export", str(trained), "-o", str(tmp_path / "m.onnx"),
                 "--verify", "64x96", "96x64"]) == 0
    assert (tmp_path / "m.onnx").stat().st_size > 0


def test_export_verify_none_postprocess_settings_and_int8(trained, tmp_path, capsys):
    export = ["export", str(trained), "-o"]
    assert main([*export, str(tmp_path / "raw.onnx"), "--verify", "none"]) == 0
    assert (tmp_path / "raw.onnx").stat().st_size > 0
    for bad, message in ((["--verify", "none", "64x64"], "--verify none skips the check"),
                         (["--pre-nms-top-k", "100"], "add --with-postprocess"),
                         (["--int8"], "--int8 and --calibration DIR go together"),
                         (["--with-postprocess", "--pre-nms-top-k", "0"], "at least 1")):
        assert main([*export, str(tmp_path / "bad.onnx"), *bad]) == 2
        assert message in capsys.readouterr().err
    pp = tmp_path / "pp.onnx"
    assert main([*export, str(pp), "--with-postprocess", "--pre-nms-top-k", "100",
                 "--score-threshold", "0.01", "--verify", "64x96"]) == 0
    data = trained.parent / "data"
    assert main(["eval", str(pp), "--data", str(data), "--out", str(tmp_path / "e")]) == 0
    assert json.loads((tmp_path / "e" / "results.json").read_text())["ap_easy"] >= 0
    int8 = tmp_path / "int8.onnx"
    assert main([*export, str(int8), "--int8", "--calibration", str(data / "images"),
                 "--calibration-size", "64x48", "--verify", "64x96"]) == 0
    assert "int8, calibrated on 4 images" in " ".join(capsys.readouterr().out.split())
    assert main([*export, str(int8), "--int8", "--calibration", str(tmp_path / "e" / "x")]) == 2


def test_detect_and_eval_refuse_images_above_the_pixel_cap(trained, tmp_path, capsys):
    image = next((trained.parent / "data" / "images").rglob("*.jpg"))  # 96x80
    assert main(["detect", str(trained), str(image), "--out", str(tmp_path / "a"),
                 "--max-pixels", "5000", "--threads", "1"]) == 2
    err = capsys.readouterr().err
    assert str(image) in err and "96x80" in err and "--max-pixels 0" in err
    assert not (tmp_path / "a").exists()
    assert main(["detect", str(trained), str(image), "--out", str(tmp_path / "b"),
                 "--max-pixels", "0", "--threads", "1"]) == 0
    assert main(["detect", str(trained), str(image), "--out", str(tmp_path / "c"),
                 "--max-pixels", "5000", "--max-size", "64", "--threads", "1"]) == 0
    assert main(["eval", str(trained), "--data", str(trained.parent / "data"), "--out",
                 str(tmp_path / "e"), "--max-pixels", "5000", "--threads", "1"]) == 2
    assert "--max-pixels 0" in capsys.readouterr().err
