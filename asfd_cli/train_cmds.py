"""Training and deployment commands: ``asfd train``, ``detect``, ``eval`` and ``export``.

``train`` values come from the YAML config, then the dedicated flags (``--epochs 5``), then
``--set section.key=value`` (parsed as YAML), later ones winning. ``MODEL`` arguments accept a
model file (``model.pt``), a training run folder (its ``model.pt``) or, for ``detect`` and
``eval``, a raw ONNX export (``.onnx``, run by onnxruntime).
"""
from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.progress import (
    BarColumn, MofNCompleteColumn, Progress, TaskProgressColumn, TextColumn, TimeElapsedColumn,
)
from rich.table import Table

from asfd_cli.main import CLIError
from asfd_cli.model_cmds import parse_size

#: ``asfd train`` flag -> dotted key of ``configs/train_*.yaml``.
TRAIN_FLAGS: dict[str, str] = {
    "model": "model.name", "epochs": "schedule.epochs", "batch_size": "data.batch_size",
    "lr": "optim.lr", "size": "data.size", "workers": "data.workers", "seed": "run.seed",
    "max_minutes": "run.max_minutes", "device": "run.device", "threads": "run.threads",
}


def console() -> Console:
    c = Console()
    return c if c.is_terminal else Console(width=140)


def resolve_model(path: Path) -> Path:
    """A model file, or the ``model.pt`` of a training run folder."""
    from detectors.train import MODEL_FILE

    candidate = path / MODEL_FILE if path.is_dir() else path
    if not candidate.is_file():
        raise CLIError(f"no model at {path}" + (f" (no {MODEL_FILE} in the folder)"
                                                if path.is_dir() else ""))
    return candidate


def open_detector(path: Path, score_threshold: float, max_size: int | None, device: str,
                  scale: float = 1.0) -> Any:
    """A PyTorch :class:`~detectors.inference.Detector`, or an onnxruntime one for ``.onnx``."""
    from detectors.inference import Detector, PostProcess
    from detectors.train import DistContext, resolve_device

    postprocess = PostProcess(score_threshold=score_threshold)
    path = resolve_model(path)
    if path.suffix == ".onnx":
        from detectors.export import OnnxDetector

        return OnnxDetector(path, postprocess, max_size, scale=scale)
    return Detector.from_file(path, postprocess=postprocess, max_size=max_size,
                              device=resolve_device(device, DistContext()), scale=scale)


def ap_table(title: str, results: dict[str, Any]) -> Table:
    table = Table(title=title)
    for column in ("setting", "AP", "faces"):
        table.add_column(column, justify="left" if column == "setting" else "right")
    for setting, r in results.items():
        table.add_row(setting.capitalize(), f"{r.ap:.4f}", str(r.num_faces))
    return table


# ----------------------------------------------------------------------------- train
def cmd_train(args: argparse.Namespace) -> int:
    from detectors.config import load_config
    from detectors.train import NonFiniteLossError, TrainEvent, train

    overrides = [f"{key}={json.dumps(getattr(args, flag))}" for flag, key in TRAIN_FLAGS.items()
                 if getattr(args, flag) is not None]
    config = load_config(args.config, overrides + args.overrides)
    out_dir = args.out or Path("runs") / args.config.stem
    if os.environ.get("RANK", "0") != "0":  # a torchrun worker: rank 0 reports
        train(config, out_dir, resume=args.resume)
        return 0
    out = console()
    bar = Progress(TextColumn("[bold]{task.description}"), BarColumn(), TaskProgressColumn(),
                   TimeElapsedColumn(), TextColumn("{task.fields[status]}"), console=out)
    job = bar.add_task("train", total=1.0, status="")
    budget_s = 60 * config.run.max_minutes if config.run.max_minutes else None

    def on_event(event: TrainEvent) -> None:
        done = event.iteration / max(event.total_iterations, 1)
        if budget_s:  # a time-boxed run ends at whichever limit comes first
            done = max(done, event.elapsed_s / budget_s)
        bar.update(job, completed=min(done, 1.0),
                   description=f"epoch {event.epoch + 1} it {event.iteration}")
        if event.kind == "iteration":
            parts = "  ".join(f"{k} {v:.3f}" for k, v in event.parts.items()
                              if not k.endswith("num_pos"))
            bar.update(job, status=f"loss {event.loss:.3f} ({parts})  lr {event.lr:.2e}  "
                                   f"{event.images_per_s:.1f} img/s")
        elif event.kind == "eval":
            shown = "  ".join(f"{k.removeprefix('ap_').capitalize()} {v:.4f}"
                              for k, v in event.metrics.items())
            bar.console.print(f"epoch {event.epoch} (iteration {event.iteration}) AP: {shown}")
        elif event.kind == "start":
            bar.console.print(event.message)

    try:
        with bar:
            result = train(config, out_dir, resume=args.resume, callback=on_event)
    except (NonFiniteLossError, FileExistsError) as exc:
        raise CLIError(str(exc)) from None
    if result.progress.metrics:
        table = Table(title=f"{config.model.name}: AP on the validation set")
        for column in ("Easy", "Medium", "Hard"):
            table.add_column(column, justify="right")
        table.add_row(*(f"{v:.4f}" for v in result.progress.metrics.values()))
        out.print(table)
    out.print(f"{result.stopped} after {result.progress.iteration} iterations "
              f"({result.progress.elapsed_s / 60:.1f} min); model: "
              f"{escape(str(Path(out_dir) / 'model.pt'))}")
    return 0


def register_train(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "train", help="train a detector (ASFD D0-D6 or a reference detector) from a config",
        description="Train with the paper's recipe (Sec. 4.1) or any configs/train_*.yaml; writes "
                    "OUT/config.yaml, last.pt (resumable state), model.pt and metrics.csv. "
                    "Multi-process: torchrun --nproc_per_node N -m asfd_cli.main train ...")
    p.add_argument("config", type=Path, metavar="CONFIG",
                   help="training YAML (configs/train_*.yaml)")
    p.add_argument("--out", type=Path, help="run folder (default: runs/<config name>)")
    p.add_argument("--resume", action="store_true", help="continue the run in --out")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override any config value, e.g. --set optim.lr=0.01 (repeatable)")
    p.add_argument("--model", help="model.name: D0..D6, retinaface_mnet025, dsfd_like or a file")
    p.add_argument("--epochs", type=int, help="schedule.epochs")
    p.add_argument("--batch-size", type=int, help="data.batch_size (per process)")
    p.add_argument("--lr", type=float, help="optim.lr (after warm-up)")
    p.add_argument("--size", type=int, help="data.size, the square training input")
    p.add_argument("--workers", type=int, help="data.workers (DataLoader processes)")
    p.add_argument("--seed", type=int, help="run.seed")
    p.add_argument("--max-minutes", type=float, help="run.max_minutes: wall-clock budget")
    p.add_argument("--device", help="run.device: auto, cpu, cuda, cuda:1 ...")
    p.add_argument("--threads", type=int, help="run.threads: torch CPU threads (0: auto)")
    p.set_defaults(func=cmd_train)


# ----------------------------------------------------------------------------- detect
def cmd_detect(args: argparse.Namespace) -> int:
    from detectors.inference import MultiScaleTest, iter_inputs, write_detections

    detector = open_detector(args.model, args.threshold, args.max_size, args.device, args.scale)
    multiscale = MultiScaleTest() if args.multiscale else None
    inputs = iter_inputs(args.inputs)
    table = Table(title=f"faces scoring >= {args.threshold} ({escape(str(args.model))})")
    for column in ("image", "faces", "ms"):
        table.add_column(column, justify="left" if column == "image" else "right")
    for name, path in inputs.items():
        start = time.perf_counter()
        (found,) = detector.detect([path], multiscale)
        ms = (time.perf_counter() - start) * 1e3
        write_detections(args.output, name, path, found, args.threshold)
        table.add_row(escape(str(path)), str(len(found.scores)), f"{ms:.0f}")
    out = console()
    out.print(table)
    out.print(f"wrote <name>.json, .txt (WIDER format) and .jpg for {len(inputs)} image(s) to "
              f"{escape(str(args.output))}")
    return 0


def add_detector_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("model", type=Path, metavar="MODEL",
                   help="model.pt, a training run folder, or a raw .onnx export")
    p.add_argument("--multiscale", action="store_true",
                   help="multi-scale (0.5, 1, 1.5) + flip test with box voting")
    p.add_argument("--scale", type=float, default=1.0, metavar="F",
                   help="resize every image by F before the network (default: 1, original "
                        "size; 2.46 = 1024/416 restores the 416-px WIDER sample to WIDER's "
                        "full resolution)")
    p.add_argument("--max-size", type=int, metavar="PX",
                   help="then shrink images whose longer side exceeds PX (default: no cap)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda ... (default: auto)")


def register_detect(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("detect", help="detect faces in images; write JSON, WIDER txt and pictures",
                       description="Writes OUT/<name>.json, OUT/<name>.txt (WIDER format) and "
                                   "OUT/<name>.jpg (boxes drawn) for each image.")
    add_detector_args(p)
    p.add_argument("inputs", nargs="+", metavar="IMAGE_OR_DIR", help="images or folders")
    p.add_argument("-o", "--output", type=Path, required=True, metavar="OUT", help="output folder")
    p.add_argument("--threshold", type=float, default=0.5,
                   help="score threshold of the faces kept (default: 0.5)")
    p.set_defaults(func=cmd_detect)


# ----------------------------------------------------------------------------- eval
def cmd_eval(args: argparse.Namespace) -> int:
    from detectors.config import DataSource
    from detectors.evaluation.wider_eval import write_wider_predictions
    from detectors.inference import MultiScaleTest
    from detectors.train import evaluate_detector, evaluation_set
    from visualize.plots import plot_pr_curves

    detector = open_detector(args.model, args.score_threshold, args.max_size, args.device,
                             args.scale)
    source = DataSource(str(args.wider), wider_split=args.wider_split, images=args.images,
                        subset=args.subset, val_fraction=args.val_fraction,
                        ground_truth=args.ground_truth)
    out = console()
    bar = Progress(TextColumn("[bold]eval"), BarColumn(), MofNCompleteColumn(),
                   TimeElapsedColumn(), console=out)
    job = bar.add_task("eval", total=None)
    start = time.perf_counter()
    with bar:
        evaluation = evaluate_detector(
            detector, evaluation_set(source), MultiScaleTest() if args.multiscale else None,
            args.batch_size,
            progress=lambda done, total: bar.update(job, completed=done, total=total))
    elapsed = time.perf_counter() - start
    out_dir = args.out or Path("runs") / "eval" / args.model.stem
    write_wider_predictions(out_dir / "predictions", evaluation.detections)
    title = (f"WIDER FACE AP, {len(evaluation.detections)} images "
             f"({'multi-scale' if args.multiscale else 'single-scale'}"
             f"{f', scale {args.scale:g}' if args.scale != 1 else ''}, {elapsed:.0f} s)")
    if not evaluation.official:
        title += " - no official .mat: all faces count in every setting"
    out.print(ap_table(title, evaluation.results))
    curves = {s.capitalize(): (r.precision, r.recall, r.ap) for s, r in evaluation.results.items()}
    png = plot_pr_curves(curves, out_dir / "pr_curves.png", title=f"WIDER FACE: {args.model.name}")
    (out_dir / "results.json").write_text(json.dumps(
        {"model": str(args.model), "data": vars(source), "multiscale": args.multiscale,
         "scale": args.scale, "max_size": args.max_size,
         "official": evaluation.official, **evaluation.ap()}, indent=1))
    out.print(f"predictions: {escape(str(out_dir / 'predictions'))}\nPR curves: "
              f"{escape(str(png))}\nresults: {escape(str(out_dir / 'results.json'))}")
    return 0


def register_eval(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "eval", help="WIDER FACE Easy/Medium/Hard AP of a model on a WIDER-format folder",
        description="Runs the detector on the folder's images (optionally a held-out part), "
                    "writes OUT/predictions/<event>/<name>.txt, pr_curves.png, results.json.")
    add_detector_args(p)
    p.add_argument("--wider", type=Path, required=True, metavar="DIR",
                   help="WIDER-format folder (images/ + *_bbx_gt.txt, ground_truth/*.mat)")
    p.add_argument("--wider-split", choices=("train", "val"),
                   help="split of an official WIDER FACE layout")
    p.add_argument("--ground-truth", metavar="DIR",
                   help="folder of the official .mat files (default: DIR/ground_truth or DIR)")
    p.add_argument("--images", metavar="LIST", help="evaluate only the images of this list file")
    p.add_argument("--subset", choices=("all", "train", "val"), default="all",
                   help="part of the deterministic split to evaluate (default: all)")
    p.add_argument("--val-fraction", type=float, default=0.5,
                   help="held-out share of that split (default: 0.5)")
    p.add_argument("--score-threshold", type=float, default=0.05,
                   help="detections kept for the PR curve (default: 0.05)")
    p.add_argument("--batch-size", type=int, default=1, help="images per forward pass")
    p.add_argument("--out", type=Path, help="output folder (default: runs/eval/<model name>)")
    p.set_defaults(func=cmd_eval)


# ----------------------------------------------------------------------------- export
def cmd_export(args: argparse.Namespace) -> int:
    from detectors.export import export_onnx, verify_onnx
    from detectors.reference_detectors import load_detector

    model = load_detector(resolve_model(args.model)).eval()
    path = export_onnx(model, args.output, with_postprocess=args.with_postprocess)
    out = console()
    out.print(f"wrote {escape(str(path))} (dynamic batch, height, width; "
              f"{'decoding + NMS inside' if args.with_postprocess else 'raw outputs + anchors'})")
    if args.verify:
        table = Table(title="onnxruntime vs PyTorch, max |difference|")
        table.add_column("input WxH")
        table.add_column("outputs")
        sizes = tuple((height, width) for width, height in args.verify)
        results = verify_onnx(model, path, sizes, args.with_postprocess)
        for v in results:
            table.add_row(f"{v.size[1]}x{v.size[0]}",
                          "  ".join(f"{k} {d:.2e}" for k, d in v.max_abs_diff.items()))
        out.print(table)
        if not all(v.ok(args.atol) for v in results):
            raise CLIError(f"onnxruntime outputs differ from PyTorch's by more than {args.atol}")
    return 0


def register_export(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("export", help="export a model to ONNX (dynamic input size) and verify it",
                       description="ONNX export with dynamic batch, height and width; anchors are "
                                   "computed inside the graph. Verified with onnxruntime.")
    p.add_argument("model", type=Path, metavar="MODEL", help="model.pt or a training run folder")
    p.add_argument("-o", "--output", type=Path, required=True, metavar="ONNX", help="output file")
    p.add_argument("--with-postprocess", action="store_true",
                   help="include decoding, top-k and NMS; output detections [K, 6]")
    p.add_argument("--verify", type=parse_size, nargs="*", default=[(640, 480), (256, 320)],
                   metavar="WxH", help="input sizes (width x height, as every size option) to "
                                       "compare with PyTorch at (default: 640x480 256x320; none "
                                       "to skip)")
    p.add_argument("--atol", type=float, default=1e-3, help="tolerance of the check")
    p.set_defaults(func=cmd_export)


def register(subparsers: argparse._SubParsersAction) -> None:
    register_train(subparsers)
    register_detect(subparsers)
    register_eval(subparsers)
    register_export(subparsers)
