"""Data and evaluation commands: ``asfd make-synthetic``, ``asfd eval-preds`` (official WIDER
FACE protocol) and ``asfd eval-fddb`` (FDDB discrete / continuous ROC)."""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

from asfd_cli.main import CLIError
from asfd_cli.model_cmds import parse_size
from asfd_cli.options import add_out


def cmd_make_synthetic(args: argparse.Namespace) -> int:
    from detectors.data.synthetic import make_synthetic
    from detectors.data.wider import WiderDataset

    if args.legacy_out is not None:  # the positional OUT of earlier versions
        if args.out is not None and args.out != args.legacy_out:
            raise CLIError(f"two output folders: {args.legacy_out} and --out {args.out}")
        print("note: asfd make-synthetic OUT is deprecated; use --out OUT", file=sys.stderr)
    out = args.out or args.legacy_out
    if out is None:
        raise CLIError("make-synthetic needs the output folder: -o/--out OUT")
    txt = make_synthetic(out, args.images, seed=args.seed, size=args.size)
    dataset = WiderDataset.from_dir(out, verify_images=False)
    Console().print(f"wrote {len(dataset)} images, {dataset.num_boxes} faces: {txt}\n"
                    "[bold yellow]SMOKE-TEST dataset: never use it for reported figures.[/]")
    return 0


def cmd_eval_preds(args: argparse.Namespace) -> int:
    from detectors.data.wider import image_key, read_image_list
    from detectors.evaluation.wider_eval import (
        SETTINGS, evaluate_wider, load_wider_ground_truth, restrict_ground_truth,
    )

    start = time.perf_counter()
    gt = load_wider_ground_truth(args.gt_dir)
    if args.images:
        keys = list(dict.fromkeys(image_key(rel) for rel in read_image_list(args.images)))
        try:
            gt = restrict_ground_truth(gt, keys)
        except ValueError as exc:
            raise CLIError(f"{args.images}: {exc}") from None
    results = evaluate_wider(args.pred_dir, gt, iou_thresh=args.iou)
    elapsed = time.perf_counter() - start
    table = Table(title="WIDER FACE AP",
                  caption=f"{len(gt.keys)} images, IoU {args.iou:g}, {elapsed:.1f} s")
    for column in ("setting", "AP", "faces"):
        table.add_column(column, justify="left" if column == "setting" else "right")
    for s in SETTINGS:
        table.add_row(s.capitalize(), f"{results[s].ap:.4f}", str(results[s].num_faces))
    Console().print(table)
    if args.plot:
        from visualize.plots import plot_pr_curves

        curves = {s.capitalize(): (results[s].precision, results[s].recall, results[s].ap)
                  for s in SETTINGS}
        out = plot_pr_curves(curves, args.plot, title=f"WIDER FACE: {args.pred_dir}")
        Console().print(f"PR curves: {out}")
    return 0


def cmd_eval_fddb(args: argparse.Namespace) -> int:
    from detectors.data.fddb import load_fddb
    from detectors.evaluation.fddb_eval import evaluate_fddb, read_fddb_detections

    annotations = load_fddb(args.fddb_dir, args.folds)
    result = evaluate_fddb(read_fddb_detections(args.pred_file), annotations)
    table = Table(title="FDDB ROC",
                  caption=f"{result.num_faces} faces; TPR at {args.fp} false positives")
    table.add_column("score")
    table.add_column("TPR", justify="right")
    for kind in ("discrete", "continuous"):
        table.add_row(kind, f"{result.tpr_at(args.fp, kind):.4f}")
    Console().print(table)
    if args.plot:
        from visualize.plots import plot_roc

        curves = {kind: (result.false_positives, tpr, result.tpr_at(args.fp, kind))
                  for kind, tpr in (("discrete", result.tpr_discrete),
                                    ("continuous", result.tpr_continuous))}
        Console().print(f"ROC: {plot_roc(curves, args.plot, title='FDDB', report_fp=args.fp)}")
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "make-synthetic", help="write a synthetic SMOKE-TEST face set in the WIDER FACE format",
        description="Face-like patterns on cluttered backgrounds, labelled in the WIDER FACE text "
                    "format. For testing the pipeline only, never for reported figures.")
    p.add_argument("legacy_out", type=Path, nargs="?", help=argparse.SUPPRESS)
    add_out(p, "output folder (required)", type=Path)
    p.add_argument("--images", type=int, required=True, metavar="N", help="number of images")
    p.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    p.add_argument("--size", type=parse_size, default=(640, 480), metavar="WxH",
                   help="image size, width x height (default: 640x480)")
    p.set_defaults(func=cmd_make_synthetic)

    p = subparsers.add_parser(
        "eval-preds",
        help="WIDER FACE Easy/Medium/Hard AP of a prediction folder (official protocol)",
        description="Evaluate predictions in the official WIDER FACE format (<event>/<name>.txt) "
                    "against the official ground truth .mat files.")
    p.add_argument("pred_dir", type=Path, metavar="PRED_DIR",
                   help="folder of <event>/<name>.txt files")
    p.add_argument("gt_dir", type=Path, metavar="GT_DIR",
                   help="folder holding wider_face_val.mat and wider_{easy,medium,hard}_val.mat "
                        "(directly or under ground_truth/)")
    p.add_argument("--iou", type=float, default=0.5, help="IoU threshold (default: 0.5)")
    p.add_argument("--images", type=Path, metavar="LIST",
                   help="score only these images (one <event>/<name>.jpg a line, e.g. the "
                        "images.txt that asfd eval writes); default: all of GT_DIR")
    p.add_argument("--plot", type=Path, metavar="PNG", help="write the PR curves to this image")
    p.set_defaults(func=cmd_eval_preds)

    p = subparsers.add_parser(
        "eval-fddb", help="FDDB discrete and continuous ROC of a detection file",
        description="Evaluate detections in the official FDDB format (name, count, 'x y w h score' "
                    "lines) against the FDDB ellipse folds.")
    p.add_argument("pred_file", type=Path, metavar="PRED_FILE", help="detection file")
    p.add_argument("fddb_dir", type=Path, metavar="FDDB_DIR",
                   help="FDDB root: FDDB-folds/ and the images as <name>.jpg")
    p.add_argument("--folds", type=int, nargs="+", metavar="K",
                   help="folds to use (default: all found)")
    p.add_argument("--fp", type=int, default=1000,
                   help="false positives to report TPR at (default: 1000)")
    p.add_argument("--plot", type=Path, metavar="PNG", help="write the ROC curves to this image")
    p.set_defaults(func=cmd_eval_fddb)
