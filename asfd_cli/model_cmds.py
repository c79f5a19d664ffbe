"""Model commands: ``asfd profile`` (Table 5's #Params, #FLOPS (MACs) and latency, measured)."""
from __future__ import annotations

import argparse
from pathlib import Path

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from asfd_cli.main import CLIError

VARIANTS: tuple[str, ...] = ("D0", "D1", "D2", "D3", "D4", "D5", "D6")


def parse_size(text: str) -> tuple[int, int]:
    """``"640x480"`` -> ``(640, 480)`` (width x height)."""
    try:
        width, height = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"size must be WIDTHxHEIGHT, e.g. 640x480; got {text!r}") \
            from None
    if width < 1 or height < 1:
        raise argparse.ArgumentTypeError(f"size must be positive, got {text!r}")
    return width, height


def cmd_profile(args: argparse.Namespace) -> int:
    import torch

    from detectors.asfd import PAPER_TABLE5, build_asfd, load_model
    from detectors.macs import measure_latency, profile_model

    torch.set_num_threads(args.threads)
    width, height = args.size
    table = Table(title=f"params (M), MACs (B) at {width}x{height}, median CPU latency (ms, "
                        f"{args.threads} thread{'s' * (args.threads > 1)}); paper = Table 5")
    for column in ("model", "backbone", "W", "params", "paper", "ratio", "MACs", "paper",
                   "ratio", "ms"):
        table.add_column(column, no_wrap=True,
                         justify="left" if column in ("model", "backbone") else "right")
    for target in args.models:
        if target in VARIANTS:
            model, paper = build_asfd(target, args.genotype), PAPER_TABLE5[target]
        elif Path(target).is_file():
            model, paper = load_model(target), None
        else:
            raise CLIError(f"{target!r} is neither a variant ({', '.join(VARIANTS)}) nor a model "
                           "checkpoint file")
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
        description="Measure #params and MACs (Table 5's #FLOPS are multiply-adds) of the "
                    "inference graph (second shot), and the median CPU latency of one image.")
    p.add_argument("models", nargs="*", default=list(VARIANTS), metavar="MODEL",
                   help="variant D0..D6 or a saved model checkpoint (default: D0..D6)")
    p.add_argument("--size", type=parse_size, default=(640, 480), metavar="WxH",
                   help="input size, width x height (default: 640x480, the paper's VGA)")
    p.add_argument("--genotype", default="asfd_paper_like",
                   help="AutoFEM genotype file or shipped name for variants "
                        "(default: asfd_paper_like)")
    p.add_argument("--repeats", type=int, default=5,
                   help="timed forward passes per model; 0 skips latency (default: 5)")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads (default: 1)")
    p.set_defaults(func=cmd_profile)
