"""Speed of the ASFD family and the RetinaFace-style baseline, side by side in one run.

On the CPU (default: D0, D1 and the baseline), per model (untrained weights: speed does not
depend on them):

* latency: median wall-clock ms of the network's forward pass on one 640x480 image (Table 5's
  LAT, the paper's is on a GPU), with 1 and 2 intra-op threads, in PyTorch (eval mode,
  ``inference_mode``) and in onnxruntime (the raw export of :mod:`detectors.engine.export`,
  anchors included). Decoding and NMS are left out: their cost depends on how many boxes a *trained*
  model scores above the threshold, not on the architecture.
* training throughput: images/s of full SGD steps (forward, the model's loss with matching and
  hard negative mining, backward, update) at 640x640, batch 2, with the largest thread count.

With ``--device cuda`` (default: D0-D6 and the baseline), per model: the median forward
latency at 640x480, batch 1, in fp32 and under fp16 autocast (NHWC, ``torch.cuda.synchronize``
around each pass), beside Table 5's LAT column (the paper does not name its GPU).

Run: ``PYTHONPATH=. python bench/infer_speed.py [--device cuda] [--json out.json]``; on a shared
machine pin the cores (``taskset -c 0,1``) and close other work: the medians are only as quiet
as the box.

Measured figures: README, "Benchmark: inference and training speed" and "The ASFD family".
"""
from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from rich.console import Console
from rich.table import Table

from detectors.engine.config import ModelConfig
from detectors.engine.export import export_onnx, onnx_session
from detectors.engine.macs import measure_latency, profile_model
from detectors.engine.trainer import build_model
from detectors.models.asfd import ASFD_FAMILY, PAPER_TABLE5
from detectors.models.losses import build_loss

#: Model name -> the loss it trains with (configs/train_*.yaml).
MODELS: dict[str, str] = {**{v: "drmc" for v in ASFD_FAMILY}, "retinaface_mnet025": "retinaface"}
CPU_MODELS = ("D0", "D1", "retinaface_mnet025")


def onnx_latency(path: Path, size: tuple[int, int], threads: int, repeats: int,
                 warmup: int = 2) -> float:
    """Median ms of one onnxruntime run on a ``size = (W, H)`` image."""
    session = onnx_session(path, threads)
    width, height = size
    feed = {"images": np.zeros((1, 3, height, width), np.float32)}
    times = []
    for i in range(warmup + repeats):
        start = time.perf_counter()
        session.run(None, feed)
        if i >= warmup:
            times.append((time.perf_counter() - start) * 1e3)
    return statistics.median(times)


def train_images_per_s(model: torch.nn.Module, loss_name: str, size: int, batch: int,
                       steps: int, warmup: int = 1) -> float:
    """Images/s of SGD steps on random images with three faces each (median step time)."""
    loss_fn = build_loss(loss_name)
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)
    images = torch.randn(batch, 3, size, size)
    faces = [torch.tensor([[20.0, 30, 60, 80], [200, 200, 264, 280], [300, 100, 500, 340]])] * batch
    model.train()
    times = []
    for i in range(warmup + steps):
        start = time.perf_counter()
        loss = loss_fn(model(images), faces).total
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if i >= warmup:
            times.append(time.perf_counter() - start)
    return batch / statistics.median(times)


def cpu_rows(args: argparse.Namespace, size: tuple[int, int]) -> list[dict]:
    """Latency in PyTorch and onnxruntime per thread count, and training images/s."""
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.models:
            torch.manual_seed(0)
            model = build_model(ModelConfig(name=name)).eval()
            prof = profile_model(model, size)
            path = export_onnx(model, Path(tmp) / f"{name}.onnx", sample_size=(size[1], size[0]))
            row = {"model": name, "params_m": prof.params_m, "macs_g": prof.macs_b}
            for t in args.threads:
                torch.set_num_threads(t)
                row[f"torch_ms_{t}t"] = measure_latency(model, size, args.repeats)
                row[f"onnx_ms_{t}t"] = onnx_latency(path, size, t, args.repeats)
            torch.set_num_threads(max(args.threads))
            row["train_img_s"] = train_images_per_s(model, MODELS[name], args.train_size,
                                                    args.train_batch, args.train_steps)
            rows.append(row)
    return rows


def cuda_rows(args: argparse.Namespace, size: tuple[int, int]) -> list[dict]:
    """fp32 and fp16-autocast latency on the GPU, beside Table 5's LAT."""
    torch.backends.cudnn.benchmark = True
    rows = []
    for name in args.models:
        torch.manual_seed(0)
        model = build_model(ModelConfig(name=name)).eval()
        prof = profile_model(model, size)
        model = model.to(args.device, memory_format=torch.channels_last)
        paper = PAPER_TABLE5.get(name)
        row = {"model": name, "params_m": prof.params_m, "macs_g": prof.macs_b,
               "paper_ms": paper.latency_ms if paper else float("nan"),
               "fp32_ms": measure_latency(model, size, args.repeats, warmup=10)}
        with torch.autocast("cuda", dtype=torch.float16):
            row["fp16_ms"] = measure_latency(model, size, args.repeats, warmup=10)
        rows.append(row)
        del model
        torch.cuda.empty_cache()
    return rows


HEADERS = {"model": "model", "params_m": "params (M)", "macs_g": "MACs (G)",
           "paper_ms": "Table 5 LAT (ms)", "fp32_ms": "fp32 (ms)", "fp16_ms": "fp16 (ms)",
           "train_img_s": "train img/s"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cpu", help="cpu, or cuda for the GPU table")
    parser.add_argument("--models", nargs="+", choices=list(MODELS),
                        help="default: D0, D1 and the baseline on the CPU, all on CUDA")
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--repeats", type=int, default=10, help="timed runs per latency")
    parser.add_argument("--train-size", type=int, default=640)
    parser.add_argument("--train-batch", type=int, default=2)
    parser.add_argument("--train-steps", type=int, default=3)
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()
    size = (640, 480)
    on_cuda = torch.device(args.device).type == "cuda"
    args.models = args.models or (list(MODELS) if on_cuda else list(CPU_MODELS))

    if on_cuda:
        rows = cuda_rows(args, size)
        title = (f"{torch.cuda.get_device_name(args.device)}: forward latency at "
                 f"{size[0]}x{size[1]}, batch 1 (median of {args.repeats})")
    else:
        rows = cpu_rows(args, size)
        title = (f"CPU speed: forward latency at {size[0]}x{size[1]} (median of "
                 f"{args.repeats}), training at {args.train_size}x{args.train_size} batch "
                 f"{args.train_batch} ({max(args.threads)} threads)")
    headers = {**HEADERS, **{f"{rt}_ms_{t}t": f"{label} {t}T (ms)" for t in args.threads
                             for rt, label in (("torch", "PyTorch"), ("onnx", "ORT"))}}
    table = Table(title=title)
    for key in rows[0]:
        table.add_column(headers[key], justify="left" if key == "model" else "right")
    for row in rows:
        table.add_row(*(f"{v:.2f}" if isinstance(v, float) else v for v in row.values()))
    Console(width=160).print(table)
    if args.json:
        device = torch.cuda.get_device_name(args.device) if on_cuda else "cpu"
        args.json.write_text(json.dumps({"size": size, "threads": args.threads, "device": device,
                                         "torch": torch.__version__, "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
