"""How soon detectors trained from scratch leave the constant-predictor plateau, side by side.

Every model starts with its classification loss on the plateau of
:func:`detectors.models.losses.constant_predictor_loss`. That is the loss of the best classifier
that ignores the image: 2.560 for DRMC's margin loss, 2.249 for plain cross-entropy, both with 1:3
hard-negative mining. A model only learns faces once it leaves that plateau.

Each model trains on the same ``--batches`` fixed augmented batches of ``--data``, cycled, so
the probe measures the optimisation alone and not the data. The optimiser is plain on purpose
(AdamW would hide gradient-scale problems by normalising them away): SGD with lr 0.01, momentum
0.9, wd 5e-4, gradient clip ``--grad-clip`` (10; 0: none) and a linear warm-up over ``--warmup`` iterations. Each model
uses the loss it is trained with
(``bench/infer_speed.py``'s ``MODELS``).

For each model it reports:

* **escape:** the first iteration at which the second-shot classification loss, averaged over
  one cycle of the batches, is 10% under the plateau;
* the classification and regression parts at the end;
* the median gradient norm before clipping;
* seconds per step.

Run (~4 min on 2 cores, 1 thread; ``../shared/data`` beside the project)::

    PYTHONPATH=. python bench/learning_probe.py --models D0 retinaface_mnet025 --iters 200
    PYTHONPATH=. python bench/learning_probe.py --models "D0@head_norm=none@cls_prior=null" \
        D0@passthrough_topdown=false D0:dsfd --iters 200
    PYTHONPATH=. python bench/learning_probe.py --models D0@genotype=my_genotype.yaml

The measured escapes are in the README, "Detectors that learn" (learning probe).
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from detectors.data.loader import FaceDetectionDataset, detection_collate, prepare_batch
from detectors.data.sources import DataSource, load_samples
from detectors.engine.config import ModelConfig
from detectors.engine.trainer import build_model
from detectors.models.losses import build_loss, constant_predictor_loss
from nas_search.runtime import load_yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
from infer_speed import MODELS  # noqa: E402  (the loss each model trains with)

ESCAPE_FRACTION = 0.9


def fixed_batches(data: Path, batches: int, batch: int, size: int, seed: int = 0):
    """``batches`` augmented batches of the first images of ``data`` (deterministic)."""
    dataset = FaceDetectionDataset(load_samples(DataSource(dir=str(data))), train=True,
                                   size=size, seed=seed)
    if len(dataset) < batches * batch:
        raise ValueError(f"{data}: {len(dataset)} images, the probe needs {batches * batch}")
    return [prepare_batch(detection_collate([dataset[b * batch + i] for i in range(batch)]), "cpu")
            for b in range(batches)]


#: The spec key that names the model's genotype (a library name or a YAML file) instead of a
#: builder option.
GENOTYPE_KEY = "genotype"


def parse_spec(spec: str) -> tuple[ModelConfig, str]:
    """``MODEL[:LOSS][@KEY=VALUE]...`` -> (model config, loss); the default loss is the
    model's own, values are YAML builder options (``D0@head_conv=full``,
    ``D0@enhanced_levels=[P2, P3]``) except ``genotype=`` (``D0@genotype=g.yaml``)."""
    head, *pairs = spec.split("@")
    name, _, loss = head.partition(":")
    if name not in MODELS:
        raise SystemExit(f"unknown model {name!r} in {spec!r}; choose from {sorted(MODELS)}")
    options, genotype = {}, ModelConfig.genotype
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep:
            raise SystemExit(f"{spec!r}: option {pair!r} is not KEY=VALUE")
        if key == GENOTYPE_KEY:
            genotype = value
        else:
            options[key] = load_yaml(value, f"{spec!r}: option {key!r}")
    return ModelConfig(name=name, genotype=genotype, options=options), loss or MODELS[name]


def probe(spec: str, batches, iters: int, lr: float, warmup: int,
          grad_clip: float = 10.0) -> dict:
    """Train ``spec``'s model from scratch on the cycled ``batches``; the probe's row for it."""
    config, loss = parse_spec(spec)
    torch.manual_seed(0)
    model = build_model(config).train()
    loss_fn = build_loss(loss)
    plateau = constant_predictor_loss(loss_fn.margin, loss_fn.neg_pos_ratio)
    optimizer = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9, weight_decay=5e-4)
    cls_history, norms, times = [], [], []
    escape = None
    for it in range(iters):
        for group in optimizer.param_groups:
            group["lr"] = lr * min(1.0, (it + 1) / warmup)
        images, boxes = batches[it % len(batches)]
        start = time.perf_counter()
        result = loss_fn(model(images), boxes)
        optimizer.zero_grad(set_to_none=True)
        result.total.backward()
        norms.append(float(torch.nn.utils.clip_grad_norm_(
            model.parameters(), grad_clip if grad_clip > 0 else float("inf"))))
        optimizer.step()
        times.append(time.perf_counter() - start)
        cls_history.append(float(result.parts["second/cls"]))
        window = cls_history[-len(batches):]
        if escape is None and len(window) == len(batches) \
                and statistics.mean(window) < ESCAPE_FRACTION * plateau:
            escape = it + 1
    return {"model": spec, "loss": loss, "escape": escape,
            "cls_end": statistics.mean(cls_history[-len(batches):]),
            "reg_end": float(result.parts["second/reg"]), "plateau": plateau,
            "grad_norm": statistics.median(norms), "s_per_step": statistics.median(times)}


def write_json(path: Path, args: argparse.Namespace, rows: list[dict]) -> None:
    """A bench's arguments and rows as JSON at ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"args": {k: str(v) for k, v in vars(args).items()},
                                "rows": rows}, indent=1))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", nargs="+", default=["D0", "retinaface_mnet025"],
                        metavar="MODEL[:LOSS][@KEY=VALUE]",
                        help=f"models of {sorted(MODELS)}, each with its own loss or LOSS, "
                             "builder options (e.g. D0@head_conv=full) and a genotype "
                             "(D0@genotype=g.yaml)")
    parser.add_argument("--data", type=Path, default=Path("../shared/data/wider-extra"))
    parser.add_argument("--iters", type=int, default=200)
    parser.add_argument("--batches", type=int, default=4)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--lr", type=float, default=0.01)
    parser.add_argument("--warmup", type=int, default=50)
    parser.add_argument("--grad-clip", type=float, default=10.0, help="max global L2 norm (0: none)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--json", type=Path, help="also write the rows here")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    batches = fixed_batches(args.data, args.batches, args.batch, args.size)
    rows = [probe(spec, batches, args.iters, args.lr, args.warmup, args.grad_clip)
            for spec in args.models]

    table = Table(title=f"From-scratch probe: {args.batches} fixed batches of {args.batch} at "
                        f"{args.size} px, {args.iters} SGD steps, clip {args.grad_clip or 'none'}, "
                        f"{args.threads} thread(s)")
    for header in ("model", "loss", "escape (iter)", "cls at end", "plateau", "reg at end",
                   "grad norm", "s/step"):
        table.add_column(header, justify="left" if header == "model" else "right")
    for row in rows:
        table.add_row(escape(row["model"]), row["loss"], str(row["escape"] or f"> {args.iters}"),
                      f"{row['cls_end']:.3f}", f"{row['plateau']:.3f}", f"{row['reg_end']:.3f}",
                      f"{row['grad_norm']:.2f}", f"{row['s_per_step']:.3f}")
    Console(width=160).print(table)
    if args.json:
        write_json(args.json, args, rows)


if __name__ == "__main__":
    main()
