"""Training and deployment commands: ``asfd train``, ``detect``, ``eval`` and ``export``.

``train`` values come from the YAML config, then the dedicated flags (``--epochs 5``), then
``--set section.key=value`` (parsed as YAML), later ones winning. ``MODEL`` arguments accept a
model file (``model.pt``), a training run folder (its ``model.pt``) or, for ``detect`` and
``eval``, a raw ONNX export (``.onnx``, run by onnxruntime).
"""
from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rich.console import Console
from rich.markup import escape
from rich.progress import Progress
from rich.table import Table

from asfd_cli.console import console, finish, progress_bar
from asfd_cli.main import CLIError
from asfd_cli.model_cmds import parse_size, square_size
from asfd_cli.options import add_option, add_out, add_threads, non_negative_int, set_threads

if TYPE_CHECKING:
    from detectors.engine.config import TrainConfig
    from detectors.engine.reporting import TrainEvent

#: The file ``asfd detect --format fddb`` writes in its output folder.
FDDB_DETECTIONS = "fddb_detections.txt"
#: The list of the images ``asfd eval`` scored, beside its ``predictions/``.
EVAL_IMAGES = "images.txt"

#: ``asfd train`` flag -> dotted key of ``configs/train_*.yaml``.
TRAIN_FLAGS: dict[str, str] = {
    "model": "model.name", "epochs": "schedule.epochs", "batch_size": "data.batch_size",
    "lr": "optim.lr", "size": "data.size", "workers": "data.workers", "seed": "run.seed",
    "max_minutes": "run.max_minutes", "device": "run.device", "threads": "run.threads",
}


def resolve_model(path: Path) -> Path:
    """A model file, or the ``model.pt`` of a training run folder."""
    from detectors.engine.checkpoint import MODEL_FILE

    candidate = path / MODEL_FILE if path.is_dir() else path
    if not candidate.is_file():
        raise CLIError(f"no model at {path}" + (f" (no {MODEL_FILE} in the folder)"
                                                if path.is_dir() else ""))
    return candidate


def run_name(model: Path) -> str:
    """What a model is called in default output paths: a run folder's name (also for its
    ``model.pt``), else the file's stem (``d0.pt`` -> ``d0``)."""
    from detectors.engine.checkpoint import MODEL_FILE

    if model.is_dir():
        return model.resolve().name
    if model.name == MODEL_FILE and model.resolve().parent.name:
        return model.resolve().parent.name
    return model.stem


def open_detector(path: Path, score_threshold: float, max_size: int | None, device: str,
                  scale: float = 1.0, max_pixels: int | None = None, threads: int = 0) -> Any:
    """A PyTorch :class:`~detectors.engine.inference.Detector`, or an onnxruntime one for ``.onnx``;
    ``max_pixels`` caps an image's network input (None: the library's cap, 0: no cap),
    ``threads`` the CPU threads (0: the library's default)."""
    from detectors.engine.inference import MAX_INPUT_PIXELS, Detector, PostProcess
    from nas_search.runtime import DistContext, resolve_device

    postprocess = PostProcess(score_threshold=score_threshold)
    cap = MAX_INPUT_PIXELS if max_pixels is None else max_pixels or None
    path = resolve_model(path)
    if path.suffix == ".onnx":
        from detectors.engine.export import OnnxDetector

        return OnnxDetector(path, postprocess, max_size, threads or None, scale=scale,
                            max_pixels=cap)
    set_threads(threads)
    return Detector.from_file(path, postprocess=postprocess, max_size=max_size,
                              device=resolve_device(device, DistContext()), scale=scale,
                              max_pixels=cap)


def ap_table(title: str, results: dict[str, Any], caption: str | None = None) -> Table:
    table = Table(title=title, caption=caption)
    for column in ("setting", "AP", "faces"):
        table.add_column(column, justify="left" if column == "setting" else "right")
    for setting, r in results.items():
        table.add_row(setting.capitalize(), f"{r.ap:.4f}", str(r.num_faces))
    return table


# ----------------------------------------------------------------------------- train
def train_progress(out: Console, config: TrainConfig
                   ) -> tuple[Progress, Callable[[TrainEvent], None]]:
    """A bar over a training run (iterations, or the time budget when that ends it first) and
    the ``train`` callback that moves it and prints evaluations; epochs count from 0, as in
    ``metrics.csv``."""
    bar = progress_bar(out, count=False)
    job = bar.add_task("train", total=1.0, status="")
    budget_s = 60 * config.run.max_minutes if config.run.max_minutes else None

    def on_event(event: TrainEvent) -> None:
        done = event.iteration / max(event.total_iterations, 1)
        if budget_s:  # a time-boxed run ends at whichever limit comes first
            done = max(done, event.elapsed_s / budget_s)
        bar.update(job, completed=min(done, 1.0))
        if event.kind in ("start", "iteration"):  # later events count the epochs done
            bar.update(job, description=f"epoch {event.epoch} it {event.iteration}")
        if event.kind == "iteration":
            parts = "  ".join(f"{k} {v:.3f}" for k, v in event.parts.items()
                              if not k.endswith("num_pos"))
            bar.update(job, status=f"loss {event.loss:.3f} ({parts})  lr {event.lr:.2e}  "
                                   f"{event.images_per_s:.1f} img/s")
        elif event.kind == "eval":
            shown = "  ".join(f"{k.removeprefix('ap_').capitalize()} {v:.4f}"
                              for k, v in event.metrics.items())
            bar.console.print(f"AP after {event.epoch} epoch(s), iteration {event.iteration}: "
                              f"{shown}")
        elif event.kind == "start":
            bar.console.print(event.message)

    return bar, on_event


def cmd_train(args: argparse.Namespace) -> int:
    from detectors.engine.config import load_config
    from detectors.engine.trainer import train
    from nas_search.runtime import DistContext, NonFiniteLossError

    overrides = [f"{key}={json.dumps(getattr(args, flag))}" for flag, key in TRAIN_FLAGS.items()
                 if getattr(args, flag) is not None]
    config = load_config(args.config, overrides + args.overrides)
    if args.allow_changes and not args.resume:
        raise CLIError("--allow-change applies to --resume only")
    out_dir = args.out or Path("runs") / args.config.stem
    if not DistContext.current().is_main:  # a torchrun worker: rank 0 reports
        train(config, out_dir, resume=args.resume, allow_changes=args.allow_changes)
        return 0
    out = console()
    bar, on_event = train_progress(out, config)
    try:
        with bar:
            result = train(config, out_dir, resume=args.resume, callback=on_event,
                           allow_changes=args.allow_changes)
            finish(bar)
    except (NonFiniteLossError, FileExistsError) as exc:
        raise CLIError(str(exc)) from None
    if result.progress.metrics:
        table = Table(title=f"{config.model.name} AP", caption="on the validation set")
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
    add_out(p, "run folder (default: runs/<config name>)", type=Path)
    p.add_argument("--resume", action="store_true",
                   help="continue the run in --out, with the settings it started with")
    p.add_argument("--allow-change", dest="allow_changes", action="append", default=[],
                   metavar="KEY", help="with --resume: accept a new value of KEY (repeatable): "
                                       "run.max_minutes, schedule.epochs, eval (any eval.*) or "
                                       "data.val")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override any config value, e.g. --set optim.lr=0.01 (repeatable)")
    p.add_argument("--model", help="model.name: D0..D6, retinaface_mnet025, dsfd_like or a file")
    p.add_argument("--epochs", type=int, help="schedule.epochs")
    p.add_argument("--batch-size", type=int, help="data.batch_size (per process)")
    p.add_argument("--lr", type=float, help="optim.lr (after warm-up)")
    p.add_argument("--size", type=square_size, metavar="N|NxN",
                   help="data.size, the square training crop")
    p.add_argument("--workers", type=int, help="data.workers (DataLoader processes)")
    p.add_argument("--seed", type=int, help="run.seed")
    p.add_argument("--max-minutes", type=float, help="run.max_minutes: wall-clock budget")
    p.add_argument("--device", help="run.device: auto, cpu, cuda, cuda:1 ...")
    p.add_argument("--threads", type=int, help="run.threads: torch CPU threads (0: auto)")
    p.set_defaults(func=cmd_train)


# ----------------------------------------------------------------------------- detect
def cmd_detect(args: argparse.Namespace) -> int:
    from detectors.engine.inference import (
        PICTURE_MAX_BOXES, MultiScaleTest, PostProcess, above, iter_inputs, listed_images,
        picture_warning, write_detections,
    )
    from detectors.evaluation.fddb_eval import write_fddb_detections

    if args.images and (len(args.inputs) != 1 or not args.inputs[0].is_dir()):
        raise CLIError("--images needs exactly one input folder: the list's paths are relative "
                       "to it")
    max_boxes = PICTURE_MAX_BOXES if args.max_boxes is None else args.max_boxes
    if max_boxes < 0:
        raise CLIError(f"--max-boxes must be >= 0 (0: no cap), got {max_boxes}")
    # The txt and FDDB files keep everything eval keeps; --threshold filters JSON and pictures.
    floor = min(args.threshold, PostProcess().score_threshold)
    detector = open_detector(args.model, floor, args.max_size, args.device, args.scale,
                             args.max_pixels, args.threads)
    multiscale = MultiScaleTest() if args.multiscale else None
    inputs = (listed_images(args.inputs[0], args.images) if args.images
              else iter_inputs(args.inputs))
    table = Table(title="Faces found",
                  caption=f"scoring >= {args.threshold:g}; {escape(str(args.model))}")
    for column in ("image", "faces", "ms"):
        table.add_column(column, justify="left" if column == "image" else "right")
    fddb: dict[str, tuple[Any, Any]] = {}
    pictured = []
    for name, path in inputs.items():
        start = time.perf_counter()
        (found,) = detector.detect([path], multiscale)
        ms = (time.perf_counter() - start) * 1e3
        if args.format == "fddb":
            fddb[name] = (found.boxes.numpy(), found.scores.numpy())
        else:
            write_detections(args.output, name, path, found, args.threshold, max_boxes)
            pictured.append(found)
        table.add_row(escape(str(path)), str(len(above(found, args.threshold).scores)),
                      f"{ms:.0f}")
    out = console()
    out.print(table)
    if note := picture_warning(pictured, args.threshold, max_boxes):
        Console(stderr=True, soft_wrap=True).print(f"[bold yellow]warning:[/] {escape(note)}")
    if args.format == "fddb":
        path = write_fddb_detections(args.output / FDDB_DETECTIONS, fddb)
        out.print(f"wrote the FDDB detections of {len(inputs)} image(s) (scores >= {floor:g}) "
                  f"to {escape(str(path))}")
    else:
        out.print(f"wrote <name>.json and .jpg (scores >= {args.threshold:g}) and .txt (WIDER "
                  f"format, scores >= {floor:g}) for {len(inputs)} image(s) to "
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
    p.add_argument("--max-pixels", type=non_negative_int, metavar="N",
                   help="refuse an image that would still enter the network with more than N "
                        "pixels (default: 4096x4096; 0: no cap); memory grows with the pixels")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda ... (default: auto)")
    add_threads(p)


def register_detect(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("detect", help="detect faces in images; write JSON, WIDER txt and pictures",
                       description="Writes OUT/<name>.json, OUT/<name>.txt (WIDER format, ready "
                                   "for eval-preds) and OUT/<name>.jpg (boxes drawn) for each "
                                   "image; images of a folder keep their path inside it "
                                   "(OUT/<event>/<name>.*). --format fddb writes one FDDB "
                                   f"detection file OUT/{FDDB_DETECTIONS} for eval-fddb instead.")
    add_detector_args(p)
    p.add_argument("inputs", nargs="+", type=Path, metavar="IMAGE_OR_DIR",
                   help="images or folders")
    add_out(p, "output folder", required=True, type=Path, dest="output")
    add_option(p, "--score-threshold", deprecated=("--threshold",), dest="threshold",
               type=float, default=0.5, metavar="S",
               help="faces in the JSON and pictures score at least this (default: 0.5); "
                    "the txt / FDDB files keep every face scoring > 0.05, as eval does")
    p.add_argument("--format", choices=("wider", "fddb"), default="wider",
                   help="wider: per-image JSON, txt and picture (default); fddb: one FDDB "
                        "detection file")
    p.add_argument("--images", type=Path, metavar="LIST",
                   help="detect only the images of this list (paths relative to the one input "
                        "folder, extension optional: an FDDB fold file or eval's images.txt)")
    p.add_argument("--max-boxes", type=int, metavar="N",
                   help="pictures show the best N faces (default: 50; 0: all); a warning says "
                        "when more scored above the threshold")
    p.set_defaults(func=cmd_detect)


# ----------------------------------------------------------------------------- eval
def cmd_eval(args: argparse.Namespace) -> int:
    from detectors.data.sources import DataSource
    from detectors.engine.evaluate import evaluate_detector, evaluation_set
    from detectors.engine.inference import MultiScaleTest
    from detectors.evaluation.wider_eval import clear_wider_predictions, write_wider_predictions
    from detectors.models.asfd import genotype_source
    from visualize.plots import plot_pr_curves

    detector = open_detector(args.model, args.score_threshold, args.max_size, args.device,
                             args.scale, args.max_pixels, args.threads)
    source = DataSource(str(args.data), wider_split=args.wider_split, images=args.images,
                        subset=args.subset, val_fraction=args.val_fraction,
                        ground_truth=args.ground_truth)
    out = console()
    bar = progress_bar(out)
    job = bar.add_task("eval", total=None, status="")
    start = time.perf_counter()
    eval_set = evaluation_set(source)
    with bar:
        evaluation = evaluate_detector(
            detector, eval_set, MultiScaleTest() if args.multiscale else None,
            args.batch_size,
            progress=lambda done, total: bar.update(job, completed=done, total=total))
    elapsed = time.perf_counter() - start
    out_dir = args.out or Path("runs") / "eval" / run_name(args.model)
    out_dir.mkdir(parents=True, exist_ok=True)
    if stale := clear_wider_predictions(out_dir / "predictions"):
        out.print(f"removed {stale} prediction file(s) of an earlier run from "
                  f"{escape(str(out_dir / 'predictions'))}")
    write_wider_predictions(out_dir / "predictions", evaluation.detections)
    (out_dir / EVAL_IMAGES).write_text("".join(f"{s.rel_path}\n" for s in eval_set.samples))
    model_file = resolve_model(args.model)
    caption = (f"{len(evaluation.detections)} images, "
               f"{'multi-scale' if args.multiscale else 'single-scale'}"
               f"{f', scale {args.scale:g}' if args.scale != 1 else ''}, {elapsed:.0f} s")
    if not evaluation.official:
        caption += "; no official .mat: all faces count in every setting"
    out.print(ap_table("WIDER FACE AP", evaluation.results, caption))
    curves = {s.capitalize(): (r.precision, r.recall, r.ap) for s, r in evaluation.results.items()}
    png = plot_pr_curves(curves, out_dir / "pr_curves.png", title=f"WIDER FACE: {args.model.name}")
    (out_dir / "results.json").write_text(json.dumps(
        {"model": str(args.model),
         "genotype": None if model_file.suffix == ".onnx" else genotype_source(model_file),
         "images": EVAL_IMAGES, "data": vars(source), "multiscale": args.multiscale,
         "scale": args.scale, "max_size": args.max_size,
         "official": evaluation.official, **evaluation.ap()}, indent=1))
    out.print(f"predictions: {escape(str(out_dir / 'predictions'))} (images: "
              f"{escape(str(out_dir / EVAL_IMAGES))})\nPR curves: "
              f"{escape(str(png))}\nresults: {escape(str(out_dir / 'results.json'))}")
    return 0


def register_eval(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "eval", help="WIDER FACE Easy/Medium/Hard AP of a model on a WIDER-format folder",
        description="Runs the detector on the folder's images (optionally a held-out part), "
                    "writes OUT/predictions/<event>/<name>.txt (replacing an earlier run's), "
                    f"OUT/{EVAL_IMAGES} (the images scored: eval-preds --images takes it), "
                    "pr_curves.png, results.json.")
    add_detector_args(p)
    add_option(p, "--data", deprecated=("--wider",), type=Path, required=True, metavar="DIR",
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
    p.add_argument("--score-threshold", type=float, default=0.05, metavar="S",
                   help="detections kept for the PR curve (default: 0.05)")
    p.add_argument("--batch-size", type=int, default=1, help="images per forward pass")
    add_out(p, "output folder (default: runs/eval/<name of the run folder, or of the model "
               "file without extension>)", type=Path)
    p.set_defaults(func=cmd_eval)


# ----------------------------------------------------------------------------- export
#: ``asfd export --verify`` sizes (W, H) of a graph with dynamic sizes.
DEFAULT_VERIFY_SIZES: list[tuple[int, int]] = [(640, 480), (256, 320)]


def verify_size(text: str) -> tuple[int, int] | None:
    """A ``--verify`` size (``WxH``), or None for ``none``: skip the check."""
    return None if text.lower() == "none" else parse_size(text)


def cmd_export(args: argparse.Namespace) -> int:
    import tempfile

    from detectors.engine.export import export_onnx, quantize_onnx, verify_onnx
    # (inference registers the reference detectors)
    from detectors.engine.inference import PostProcess, find_images
    from detectors.models.asfd import load_model

    verify = args.verify if args.verify is not None else (
        [args.fixed_size] if args.fixed_size else DEFAULT_VERIFY_SIZES)
    if None in verify and len(verify) > 1:
        raise CLIError("--verify none skips the check; it takes no sizes besides")
    if args.fixed_size and any(size and size != args.fixed_size for size in verify):
        raise CLIError(f"--fixed-size {args.fixed_size[0]}x{args.fixed_size[1]}: the graph "
                       f"takes only that size, so --verify can only check it")
    sizes = tuple((size[1], size[0]) for size in verify if size)
    settings = {key: getattr(args, key) for key in ("score_threshold", "pre_nms_top_k")
                if getattr(args, key) is not None}
    if settings and not args.with_postprocess:
        raise CLIError("--score-threshold and --pre-nms-top-k set the in-graph "
                       "post-processing: add --with-postprocess")
    if args.int8 != (args.calibration is not None):
        raise CLIError("--int8 and --calibration DIR go together (static quantisation "
                       "calibrates on the images of DIR)")
    calibration = list(find_images(args.calibration).values()) if args.int8 else []
    if args.int8 and not calibration:
        raise CLIError(f"--calibration {args.calibration}: no images in that folder")
    postprocess = PostProcess(**settings)
    set_threads(args.threads)
    model = load_model(resolve_model(args.model)).eval()
    out = console()
    with tempfile.TemporaryDirectory() as tmp:
        fp32 = Path(tmp) / "fp32.onnx" if args.int8 else args.output
        path = export_onnx(model, fp32, args.with_postprocess, postprocess,
                           sample_size=(args.fixed_size or (640, 480))[::-1],
                           fixed_size=args.fixed_size is not None)
        if sizes:
            table = Table(title="onnxruntime vs PyTorch",
                          caption="max |difference|"
                                  + (" (float32 graph, before int8)" if args.int8 else ""))
            table.add_column("input WxH")
            table.add_column("outputs")
            results = verify_onnx(model, path, sizes, args.with_postprocess, postprocess,
                                  atol=args.atol)
            for v in results:
                table.add_row(f"{v.size[1]}x{v.size[0]}",
                              "  ".join(f"{k} {d:.2e}" for k, d in v.max_abs_diff.items())
                              + (f"  ({v.unmatched} rows differ after a near-tie)"
                                 if v.unmatched else ""))
            out.print(table)
            if not all(v.ok(args.atol) for v in results):
                raise CLIError(f"onnxruntime outputs differ from PyTorch's by more than "
                               f"{args.atol}")
        if args.int8:
            path = quantize_onnx(path, args.output, calibration, args.calibration_size)
    axes = "dynamic batch" + ("" if args.fixed_size else ", height, width")
    out.print(f"wrote {escape(str(path))} ({axes}; "
              f"{'decoding + NMS inside' if args.with_postprocess else 'raw outputs + anchors'}"
              f"{f'; int8, calibrated on {len(calibration)} images' if args.int8 else ''})")
    return 0


def register_export(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("export", help="export a model to ONNX (dynamic input size) and verify it",
                       description="ONNX export with dynamic batch, height and width; anchors are "
                                   "computed inside the graph. Verified with onnxruntime.")
    p.add_argument("model", type=Path, metavar="MODEL", help="model.pt or a training run folder")
    add_out(p, "output file", required=True, type=Path, metavar="ONNX", dest="output")
    add_threads(p)
    p.add_argument("--with-postprocess", action="store_true",
                   help="include decoding, top-k and NMS; output detections [K, 6]")
    p.add_argument("--score-threshold", type=float, metavar="S",
                   help="with --with-postprocess: score floor, applied before the top-k "
                        "(default: 0.05)")
    p.add_argument("--pre-nms-top-k", type=int,
                   help="with --with-postprocess: best boxes per image entering NMS "
                        "(default: 5000, the paper's)")
    p.add_argument("--int8", action="store_true",
                   help="static int8 quantisation (onnxruntime), calibrated on --calibration")
    p.add_argument("--calibration", type=Path, metavar="DIR",
                   help="with --int8: folder of calibration images (searched recursively)")
    p.add_argument("--calibration-size", type=parse_size, default=(640, 480), metavar="WxH",
                   help="with --int8: size the calibration images are resized to "
                        "(default: 640x480)")
    p.add_argument("--fixed-size", type=parse_size, metavar="WxH",
                   help="a graph for this input size only (the batch stays dynamic): the "
                        "anchors are computed once when onnxruntime loads it")
    p.add_argument("--verify", type=verify_size, nargs="*", metavar="WxH",
                   help="input sizes (width x height, as every size option) to compare with "
                        "PyTorch at (default: 640x480 256x320, or the --fixed-size; none to "
                        "skip)")
    p.add_argument("--atol", type=float, default=1e-3, help="tolerance of the check")
    p.set_defaults(func=cmd_export)


def register(subparsers: argparse._SubParsersAction) -> None:
    register_train(subparsers)
    register_detect(subparsers)
    register_eval(subparsers)
    register_export(subparsers)
