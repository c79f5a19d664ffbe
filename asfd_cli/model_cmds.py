"""Model commands: ``asfd profile`` (Table 5's #Params, #FLOPS (MACs) and latency, measured),
and the ``--size`` parsers every command shares."""
from __future__ import annotations

import argparse
from pathlib import Path

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from asfd_cli.main import CLIError
from asfd_cli.options import add_threads, set_threads


def parse_size(text: str) -> tuple[int, int]:
    """``"640x480"`` -> ``(640, 480)`` (width x height); ``"320"`` -> ``(320, 320)``."""
    try:
        values = [int(v) for v in text.lower().split("x")]
    except ValueError:
        values = []
    if len(values) not in (1, 2):
        raise argparse.ArgumentTypeError(f"size must be WIDTHxHEIGHT (e.g. 640x480) or N for "
                                         f"NxN; got {text!r}")
    width, height = values if len(values) == 2 else values * 2
    if width < 1 or height < 1:
        raise argparse.ArgumentTypeError(f"size must be positive, got {text!r}")
    return width, height


def square_size(text: str) -> int:
    """``--size`` of the square training and search crops: ``"320"`` or ``"320x320"`` -> 320."""
    width, height = parse_size(text)
    if width != height:
        raise argparse.ArgumentTypeError(f"training and search crops are square: give N or NxN, "
                                         f"got {text!r}")
    return width


def cmd_profile(args: argparse.Namespace) -> int:
    import torch

    from detectors.engine.macs import measure_latency, profile_model
    from detectors.models.asfd import ASFD_FAMILY, PAPER_TABLE5, build_asfd, load_model
    from detectors.models.reference_detectors import REFERENCE_DETECTORS, build_reference_detector

    set_threads(args.threads)
    width, height = args.size
    table = Table(title="Model size and speed",
                  caption=f"params (M), MACs (B) at {width}x{height}, median CPU latency (ms, "
                          f"{torch.get_num_threads()} thread(s)); paper = Table 5")
    for column in ("model", "backbone", "W", "params", "paper", "ratio", "MACs", "paper",
                   "ratio", "ms"):
        table.add_column(column, no_wrap=True,
                         justify="left" if column in ("model", "backbone") else "right")
    for target in args.models or list(ASFD_FAMILY):
        if target in ASFD_FAMILY:
            model, paper = build_asfd(target, args.genotype), PAPER_TABLE5[target]
        elif target in REFERENCE_DETECTORS:
            model, paper = build_reference_detector(target), None
        elif Path(target).is_file():
            model, paper = load_model(target), None
        else:
            raise CLIError(f"{target!r} is neither a variant ({', '.join(ASFD_FAMILY)}), a "
                           f"reference detector ({', '.join(sorted(REFERENCE_DETECTORS))}) nor a "
                           "model file")
        prof = profile_model(model, args.size)
        latency = measure_latency(model, args.size, args.repeats) if args.repeats else None
        table.add_row(
            escape(model.config.name or target), model.config.backbone, str(model.config.width),
            f"{prof.params_m:.2f}", f"{paper.params_m:.2f}" if paper else "-",
            f"{prof.params_m / paper.params_m:.2f}" if paper else "-",
            f"{prof.macs_b:.2f}", f"{paper.macs_b:.2f}" if paper else "-",
            f"{prof.macs_b / paper.macs_b:.2f}" if paper else "-",
            f"{latency:.1f}" if latency is not None else "-",
        )
    console = Console()
    if not console.is_terminal:
        console = Console(width=120)  # piped or captured: keep every column readable
    console.print(table)
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "profile", help="parameters, multiply-adds and CPU latency of ASFD variants or models",
        description="Measure #params and MACs (Table 5's #FLOPS are multiply-adds: FLOPs / 2 "
                    "of every convolution and matrix product, counted by "
                    "torch.utils.flop_counter) of the inference graph (second shot), and the "
                    "median CPU latency of one image.")
    p.add_argument("models", nargs="*", metavar="MODEL",
                   help="variant D0..D6, a reference detector (retinaface_mnet025, dsfd_like) "
                        "or a model file (default: D0..D6)")
    p.add_argument("--size", type=parse_size, default=(640, 480), metavar="WxH",
                   help="input size, width x height (default: 640x480, the paper's VGA)")
    p.add_argument("--genotype", default="asfd_paper_like",
                   help="AutoFEM genotype file or shipped name for variants "
                        "(default: asfd_paper_like)")
    p.add_argument("--repeats", type=int, default=5,
                   help="timed forward passes per model; 0 skips latency (default: 5)")
    add_threads(p, default=1)
    p.set_defaults(func=cmd_profile)
