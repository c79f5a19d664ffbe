"""The one option vocabulary of the ``asfd`` commands, and the deprecated spellings it replaced.

One name per idea, in every command that has the idea:

* ``--data DIR``: the WIDER-format folder a command reads.
* ``-o, --out PATH``: what a command writes (a file or a folder).
* ``--size WxH``: an image size, width x height; ``N`` means ``NxN``. Training and search crops
  are square: ``train`` and ``search`` take ``N`` or ``NxN``.
* ``--score-threshold S``: the lowest face score kept (``detect``: faces in the JSON and the
  pictures, default 0.5; ``eval``: the detections the PR curve is built from, default 0.05).
  ``--iou T`` is the IoU a detection needs to match a face.
* ``--threads N``: torch (and onnxruntime) CPU threads.

An old spelling (e.g. ``--wider``, ``--output``, ``--image-size``, ``--threshold``) still works:
it is hidden from ``--help`` and prints a one-line note naming its replacement.
"""
from __future__ import annotations

import argparse
import sys
from typing import Any


class _Store(argparse.Action):
    """argparse's ``store``; a hidden (deprecated) spelling also prints a note on stderr."""

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace,
                 values: Any, option_string: str | None = None) -> None:
        if option_string is not None and option_string not in self.option_strings:
            print(f"note: {parser.prog} {option_string} is deprecated; use "
                  f"{self.option_strings[-1]}", file=sys.stderr)
        setattr(namespace, self.dest, values)


def add_option(parser: argparse.ArgumentParser, *flags: str, deprecated: tuple[str, ...] = (),
               **kwargs: Any) -> argparse.Action:
    """``parser.add_argument(*flags, **kwargs)`` that also accepts the ``deprecated`` spellings,
    which ``--help`` and error messages do not show."""
    action = parser.add_argument(*flags, *deprecated, action=_Store, **kwargs)
    # The parser finds options through its own table; --help and errors show option_strings.
    action.option_strings = [s for s in action.option_strings if s not in deprecated]
    return action


def add_out(parser: argparse.ArgumentParser, what: str, *, required: bool = False,
            metavar: str = "OUT", **kwargs: Any) -> argparse.Action:
    """``-o, --out`` (``--output`` deprecated)."""
    return add_option(parser, "-o", "--out", deprecated=("--output",), required=required,
                      metavar=metavar, help=what, **kwargs)


def non_negative_int(text: str) -> int:
    """An argparse type: an integer >= 0."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {value}")
    return value


def add_threads(parser: argparse.ArgumentParser, default: int = 0, help: str | None = None
                ) -> argparse.Action:
    """``--threads N``; 0 keeps torch's default (one thread per core)."""
    return parser.add_argument(
        "--threads", type=non_negative_int, default=default, metavar="N",
        help=help or f"torch CPU threads (default: {default}{': one per core' * (default == 0)})")


def set_threads(threads: int) -> None:
    """Apply ``--threads`` (0: leave torch's default)."""
    if threads:
        import torch

        torch.set_num_threads(threads)
