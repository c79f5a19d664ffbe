"""Cost of one search step of ONE cell: PC-DARTS DAG vs the paper's top-1 Gumbel tree; with
``--space fpn``, of the AutoFEM-FPN supernet with its two pathways (recursive / one-hop).

The paper (Sec. 3.2, Table 3) searches 8-node AutoFEM-CPM cells with the tree only, "due to the
memory limitation" of PC-DARTS. A PC-DARTS cell with ``n`` intermediate nodes runs all
``n(n+1)/2`` mixed edges per forward; the tree runs ``n`` (one sampled parent per node). The
physical target of the saving is that edge ratio, ``(n+1)/2``: 3.5x at n=6, 4.5x at n=8.

Measured per step (forward + backward of one :class:`~nas_search.cell.SearchCell` with the 12 ops
of S_CPM, same channels, input and ``k``):

* activation memory: the bytes autograd saves for the backward pass (distinct storages seen by
  ``torch.autograd.graph.saved_tensors_hooks``, parameters excluded), on any device; on CUDA
  also ``torch.cuda.max_memory_allocated`` above what was allocated before the step;
* time: median over ``--repeats`` timed steps after a warm-up step.

Why the measured ratios fall short of the edge ratio. Both modes pay the same for one executed
edge (its 12 ops at ``C/k`` channels and the node product ``w * y``, which saves the full-width
edge output; the partial-channel bypass, concat and shuffle are transient, saving nothing for the
backward pass), so the saved bytes fit ``e * edges + f``. The fixed part ``f`` is paid by both:
the cell input, the output projection (its 1x1 conv saves the ``n*C``-channel concatenation of the
node slots, its BN its input) and the loss. At C=32, 40x40, batch 2, n=6: ``e`` = 5.2 MiB per
edge and ``f`` = 3.1 MiB (the 6C-channel projection input alone is 2.3 MiB), so the tree's
``6e + f`` is 10% above ``6e`` and 3.5x becomes 3.27x; ``f`` grows with ``n`` (projection width),
so 4.5x becomes 4.20x. The CUDA peak also counts transient buffers (concat, shuffle copies, conv
workspaces) and gradients allocated during the step, fixed parts too: 3.13x and 4.0x. Time
carries fixed per-step work as well (projection, BN and loss kernels, the tree's host sync per
sampled parent) plus launch overhead per kernel; on a shared CPU it is also noisy.

Measured (pcdarts / top1_tree per step; saved = autograd-saved MiB, peak = CUDA peak):

* CPU (shared 2 cores, 1 thread), C=32, 40x40, batch 2: n=6 saved 111.9 / 34.2 = 3.27x,
  415 / 178 ms = 2.3x; n=8 saved 190.3 / 45.3 = 4.20x, 896 / 255 ms = 3.5x.
* H100, same sizes: n=6 saved 3.27x, peak 3.13x, 141 / 47 ms = 3.00x; n=8 saved 4.20x,
  peak 3.99x, 281 / 68 ms = 4.16x.
* H100, C=256, 80x80, batch 4: n=6 saved 7157 / 2188 MiB = 3.27x, peak 3.13x, 149 / 49 ms =
  3.04x; n=8 saved 12175 / 2900 MiB = 4.20x, peak 4.00x, 366 / 91 ms = 4.05x.

Run: ``PYTHONPATH=. python bench/search_cost.py --channels 32 --size 40 --batch 2`` (CPU) or
``--device cuda`` on a GPU.

``--space fpn`` measures the same per step for the AutoFEM-FPN supernet (S_FPN, partial
channels ``k``) on a six-level pyramid whose finest map is ``--size`` square (each level half
the one below), once per pathway of ``search_spaces.fpn``, with the MACs of the supernet's
forward pass (``detectors.macs.count_macs``). The pathways run the same ops on the same
shapes, so their MACs are equal; the recursive one only chains them level by level. Measured
figures: README, "Search spaces and genotypes".
"""
from __future__ import annotations

import argparse
import statistics
import time
from dataclasses import dataclass

import torch

import search_spaces.ops  # noqa: F401  (registers S_CPM)
from detectors.macs import count_macs
from genotypes.schema import FPN_PATHWAYS, SEARCH_MODES
from nas_search.cell import SearchCell, num_edges
from nas_search.registry import get_op_set
from search_spaces.fpn import AutoFEMFPNSearch


@dataclass(frozen=True)
class StepCost:
    saved_bytes: int
    cuda_peak_bytes: int | None
    seconds: float


class SavedTensorBytes:
    """Context manager summing the distinct storages autograd saves, ``exclude`` not counted."""

    def __init__(self, exclude: list[torch.Tensor]):
        self.exclude = {p.untyped_storage().data_ptr() for p in exclude}
        self.storages: dict[int, int] = {}

    def pack(self, t: torch.Tensor) -> torch.Tensor:
        storage = t.untyped_storage()
        if storage.data_ptr() not in self.exclude:
            self.storages[storage.data_ptr()] = storage.nbytes()
        return t

    def __enter__(self) -> SavedTensorBytes:
        self.hooks = torch.autograd.graph.saved_tensors_hooks(self.pack, lambda t: t)
        self.hooks.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self.hooks.__exit__(*exc)

    @property
    def total(self) -> int:
        return sum(self.storages.values())


def step(module: torch.nn.Module, x: torch.Tensor | list[torch.Tensor]) -> None:
    out = module(x)
    sum(o.square().mean() for o in (out if isinstance(out, list) else [out])).backward()


def measure(cell: torch.nn.Module, x: torch.Tensor | list[torch.Tensor],
            repeats: int) -> StepCost:
    """One step's cost of ``cell`` (a search cell or the FPN supernet) on input ``x``."""
    cuda = next(cell.parameters()).device.type == "cuda"
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    step(cell, x)  # warm-up (allocator, kernels selection)
    with SavedTensorBytes(list(cell.parameters())) as saved:
        step(cell, x)
    peak = None
    if cuda:
        cell.zero_grad(set_to_none=False)  # keep the grads allocated: not activations
        sync()
        base = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
        step(cell, x)
        sync()
        peak = torch.cuda.max_memory_allocated() - base
    times = []
    for _ in range(repeats):
        sync()
        start = time.perf_counter()
        step(cell, x)
        sync()
        times.append(time.perf_counter() - start)
    return StepCost(saved.total, peak, statistics.median(times))


def fpn_pyramid(batch: int, channels: int, size: int, device: torch.device
                ) -> list[torch.Tensor]:
    """Six maps, the finest ``size`` square, each next level ``ceil(size / 2)``."""
    sizes = [size]
    for _ in range(5):
        sizes.append(-(-sizes[-1] // 2))
    return [torch.randn(batch, channels, s, s, device=device) for s in sizes]


def main_fpn(args: argparse.Namespace, device: torch.device) -> None:
    """The FPN supernet's step cost and MACs per pathway."""
    feats = fpn_pyramid(args.batch, args.channels, args.size, device)
    print(f"# AutoFEM-FPN supernet, S_FPN, C={args.channels}, k={args.k}, pyramid "
          f"{args.batch}x{args.channels}x{args.size}^2..{feats[-1].shape[-1]}^2, {device}"
          + (f" ({torch.cuda.get_device_name(device)})" if device.type == "cuda" else ""))
    print(f"{'pathway':<10} {'MMACs':>8} {'saved MiB':>10}"
          + (f" {'cuda peak MiB':>13}" if device.type == "cuda" else "") + f" {'ms/step':>9}")
    for pathway in FPN_PATHWAYS:
        torch.manual_seed(0)
        fpn = AutoFEMFPNSearch(args.channels, k=args.k, pathway=pathway).to(device)
        macs = count_macs(fpn, feats) / 1e6
        c = measure(fpn, feats, args.repeats)
        row = f"{pathway:<10} {macs:>8.2f} {c.saved_bytes / 2**20:>10.2f}"
        row += f" {c.cuda_peak_bytes / 2**20:>13.2f}" if c.cuda_peak_bytes is not None else ""
        print(row + f" {c.seconds * 1e3:>9.2f}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--space", choices=["cpm", "fpn"], default="cpm",
                        help="one CPM cell per search mode, or the FPN supernet per pathway")
    parser.add_argument("--channels", type=int, default=32)
    parser.add_argument("--size", type=int, default=40, help="input height = width")
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--k", type=int, default=4, help="PC-DARTS partial-channel divisor")
    parser.add_argument("--nodes", type=int, nargs="+", default=[6, 8])
    parser.add_argument("--op-set", default="S_CPM")
    parser.add_argument("--concat", choices=["cat_all", "cat_leaf"], default="cat_all")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=1, help="CPU intra-op threads")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    if args.space == "fpn":
        main_fpn(args, device)
        return
    ops = get_op_set(args.op_set)
    x = torch.randn(args.batch, args.channels, args.size, args.size, device=device)
    cuda_col = device.type == "cuda"
    print(f"# one SearchCell, {len(ops)} ops ({args.op_set}), C={args.channels}, k={args.k}, "
          f"input {args.batch}x{args.channels}x{args.size}x{args.size}, {args.concat}, "
          f"{device}" + (f" ({torch.cuda.get_device_name(device)})" if cuda_col else ""))
    header = f"{'nodes':>5} {'mode':<10} {'edges':>5} {'saved MiB':>10}"
    header += f" {'cuda peak MiB':>13}" if cuda_col else ""
    print(header + f" {'ms/step':>9}")
    for n in args.nodes:
        costs = {}
        for mode in SEARCH_MODES:
            torch.manual_seed(0)
            cell = SearchCell(args.channels, n, ops, mode, args.concat, args.k).to(device)
            cell.gumbel_generator = torch.Generator().manual_seed(0)
            costs[mode] = c = measure(cell, x, args.repeats)
            row = f"{n:>5} {mode:<10} {num_edges(n) if mode == 'pcdarts' else n:>5}"
            row += f" {c.saved_bytes / 2**20:>10.2f}"
            row += f" {c.cuda_peak_bytes / 2**20:>13.2f}" if cuda_col else ""
            print(row + f" {c.seconds * 1e3:>9.2f}")
        dag, tree = costs["pcdarts"], costs["top1_tree"]
        ratio = (f"{n:>5} {'ratio':<10} {num_edges(n) / n:>4.1f}x"
                 f" {dag.saved_bytes / tree.saved_bytes:>9.2f}x")
        if cuda_col:
            ratio += f" {dag.cuda_peak_bytes / tree.cuda_peak_bytes:>12.2f}x"
        print(ratio + f" {dag.seconds / tree.seconds:>8.2f}x")


if __name__ == "__main__":
    main()
