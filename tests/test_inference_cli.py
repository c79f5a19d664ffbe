"""``asfd train / detect / eval / export`` end to end on a tiny RetinaFace-style model."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from asfd_cli.main import main
from detectors.data.synthetic import make_synthetic

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
                 "--threshold", "0.2"]) == 0
    written = sorted(p.name for p in tmp_path.iterdir())
    assert written == [f"{image.stem}{ext}" for ext in (".jpg", ".json", ".txt")]
    record = json.loads((tmp_path / f"{image.stem}.json").read_text())
    assert record["image"] == str(image)
    assert all(d["score"] > 0.2 for d in record["detections"])
    lines = (tmp_path / f"{image.stem}.txt").read_text().splitlines()
    assert lines[0] == image.stem and int(lines[1]) == len(record["detections"])


@pytest.mark.skipif(not VAL_SAMPLE.is_dir(), reason=f"shared data not found at {VAL_SAMPLE}")
def test_eval_on_listed_held_out_images(trained, tmp_path):
    listed = tmp_path / "two.txt"
    listed.write_text("1--Handshaking/1_Handshaking_Handshaking_1_158.jpg\n"
                      "5--Car_Accident/5_Car_Accident_Accident_5_177.jpg\n")
    assert main(["eval", str(trained / "model.pt"), "--wider", str(VAL_SAMPLE), "--images",
                 str(listed), "--score-threshold", "0.3", "--out", str(tmp_path / "eval")]) == 0
    result = json.loads((tmp_path / "eval" / "results.json").read_text())
    assert result["official"] and 0 <= result["ap_hard"] <= 1
    predictions = sorted(p.relative_to(tmp_path / "eval" / "predictions").as_posix()
                         for p in (tmp_path / "eval" / "predictions").rglob("*.txt"))
    assert predictions == ["1--Handshaking/1_Handshaking_Handshaking_1_158.txt",
                           "5--Car_Accident/5_Car_Accident_Accident_5_177.txt"]
    assert (tmp_path / "eval" / "pr_curves.png").stat().st_size > 0


def test_export_command_verifies_two_sizes(trained, tmp_path):
    assert main(["export", str(trained), "-o", str(tmp_path / "m.onnx"),
                 "--verify", "64x96", "96x64"]) == 0
    assert (tmp_path / "m.onnx").stat().st_size > 0
