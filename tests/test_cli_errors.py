"""Bad input and failing workers give one-line errors (exit code 2), never a traceback."""
from __future__ import annotations

import pytest
import torch
import torch.multiprocessing as mp
from PIL import Image
from torch.utils.data import DataLoader, Dataset

from asfd_cli.main import error_line, main
from detectors.data.image import ImageReadError, load_image, read_image_size
from detectors.data.synthetic import make_synthetic
from detectors.engine.distributed import WorkerError, spawn_gloo


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("data")
    make_synthetic(root, 4, seed=1, size=(96, 80))
    return root


def tiny_config(tmp_path, data, workers: int = 0):
    path = tmp_path / "tiny.yaml"
    path.write_text("model: {name: D0, options: {width: 16}}\n"
                    f"data: {{train: [{{dir: {data}}}], size: 64, batch_size: 2, "
                    f"workers: {workers}}}\n"
                    "schedule: {epochs: 1, warmup_iters: 2}\n"
                    "run: {threads: 1, device: cpu}\neval: {every: 0}\n")
    return path


def one_line_error(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and len(err.splitlines()) == 1, err
    return err


@pytest.mark.parametrize("override, message", [
    ("optim.lr=[1", "override 'optim.lr=[1', line 1: not valid YAML"),
    ("data.size=0", "data.size must be >= 32, got 0"),
    ("loss.params={foo: 1}", "loss.params: unknown key(s) ['foo'] of loss 'drmc'"),
    ("model.options={foo: 1}", "model.options of ASFD-D0: unknown key(s) ['foo']"),
    (f"run.device=cuda:{torch.cuda.device_count()}", "CUDA device(s) usable by torch"),
])
def test_train_config_mistakes_are_one_line(tmp_path, data, capsys, override, message):
    config = tiny_config(tmp_path, data)
    assert main(["train", str(config), "--out", str(tmp_path / "run"), "--set", override]) == 2
    assert message in one_line_error(capsys)


def test_allow_change_without_resume_is_an_error(tmp_path, data, capsys):
    config = tiny_config(tmp_path, data)
    assert main(["train", str(config), "--out", str(tmp_path / "run"),
                 "--allow-change", "schedule.epochs"]) == 2
    assert "--allow-change applies to --resume only" in one_line_error(capsys)


def test_a_decompression_bomb_names_the_image(tmp_path, monkeypatch):
    path = tmp_path / "bomb.png"
    Image.new("L", (100, 100)).save(path)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)  # 10,000 pixels: over twice the limit
    for read in (load_image, read_image_size):
        with pytest.raises(ImageReadError, match=rf"image {path}: .*decompression bomb"):
            read(path)


def test_a_decompression_bomb_met_by_a_loader_worker_is_one_line(tmp_path, data, monkeypatch,
                                                                  capsys):
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)  # every 96x80 image is a 'bomb' now
    config = tiny_config(tmp_path, data, workers=1)
    assert main(["train", str(config), "--out", str(tmp_path / "run")]) == 2
    err = one_line_error(capsys)
    assert f"cannot read image {data}" in err and "decompression bomb" in err


class Unreadable(Dataset):
    def __len__(self) -> int:
        return 1

    def __getitem__(self, index: int):
        raise ImageReadError("cannot read image a/b.jpg: broken")


def test_an_error_raised_in_a_worker_keeps_its_last_line():
    with pytest.raises(ImageReadError) as info:
        next(iter(DataLoader(Unreadable(), num_workers=1)))
    assert "Traceback" in str(info.value)  # the DataLoader appends the worker's traceback
    assert error_line(info.value) == "cannot read image a/b.jpg: broken"


@pytest.mark.parametrize("failure, message", [
    (mp.ProcessExitedException("process 1 terminated with signal SIGKILL", error_index=1,
                               error_pid=7, exit_code=-9, signal_name="SIGKILL"),
     "worker process 1 terminated with signal SIGKILL; its run keeps the last checkpoint written"),
    (mp.ProcessRaisedException("\n\n-- Process 0 terminated with the following error:\n"
                               "Traceback (most recent call last):\n  File \"x.py\", line 1\n"
                               "ValueError: bad data in the worker\n", 0, 7),
     "bad data in the worker"),
], ids=["killed", "raised"])
def test_a_dead_or_failed_spawned_worker_is_one_line(monkeypatch, failure, message):
    def spawn(*args, **kwargs):  # what torch.multiprocessing.spawn raises (it costs seconds)
        raise failure

    monkeypatch.setattr(mp, "spawn", spawn)
    with pytest.raises(WorkerError) as info:
        spawn_gloo(print, 2)
    assert error_line(info.value) == message


@pytest.mark.parametrize("command", ["demo", "compare"])
def test_nan_loss_in_demo_or_compare_is_a_one_line_error(monkeypatch, tmp_path, capsys, command):
    import detectors.workflows.compare
    import detectors.workflows.demo
    from nas_search.runtime import NonFiniteLossError

    def explode(*args, **kwargs):
        raise NonFiniteLossError("train: non-finite loss nan at epoch 0, iteration 3")

    monkeypatch.setattr(detectors.workflows.demo, "run_demo", explode)
    monkeypatch.setattr(detectors.workflows.compare, "run_compare", explode)
    argv = [command, "--out", str(tmp_path / "o"), "--threads", "0"]
    if command == "compare":
        argv += ["--data", str(tmp_path)]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "non-finite loss nan at epoch 0" in err and "Traceback" not in err
