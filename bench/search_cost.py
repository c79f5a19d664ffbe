"""Cost of one search step of ONE cell per search strategy (``--strategies``, default every
registered one: the PC-DARTS DAG and the paper's top-1 Gumbel tree); with ``--space fpn``, of the
AutoFEM-FPN supernet with its two pathways (recursive / one-hop).

The paper (Sec. 3.2, Table 3) searches 8-node AutoFEM-CPM cells with the tree only, "due to the
memory limitation" of PC-DARTS. A PC-DARTS cell with ``n`` intermediate nodes runs all
``n(n+1)/2`` mixed edges per forward; the tree runs ``n`` (one sampled parent per node). The
physical target of the saving is that edge ratio, ``(n+1)/2``: 3.5x at n=6, 4.5x at n=8.

Measured per step (forward + backward of one :class:`~nas_search.cell.SearchCell` with the 12 ops
of S_CPM, same channels, input and ``k``): activation memory
(:class:`~nas_search.runtime.ActivationMeter`: the bytes autograd saves for the backward pass on
any device, and on CUDA the peak allocated above what was held before the step) and time (median
over ``--repeats`` timed steps after a warm-up step). ``--space fpn`` measures the same for the
AutoFEM-FPN supernet (S_FPN, partial channels ``k``) on a six-level pyramid whose finest map is
``--size`` square, once per pathway of ``search_spaces.fpn``, with the MACs of its forward pass
(``detectors.engine.macs.count_macs``).

Run: ``PYTHONPATH=. python bench/search_cost.py --channels 32 --size 40 --batch 2`` (CPU) or
``--device cuda`` on a GPU. Measured figures, and what the memory ratio needs to reach the edge
ratio: README, "Benchmark: search cost of one cell".
"""
from __future__ import annotations

import argparse
import statistics
import time
from dataclasses import dataclass

import torch

import search_spaces.ops  # noqa: F401  (registers S_CPM)
from detectors.engine.macs import count_macs
from nas_search.cell import SearchCell
from nas_search.registry import get_op_set
from nas_search.runtime import ActivationMeter, use_fast_conv_backward
from nas_search.strategies import list_strategies
from search_spaces.fpn import AutoFEMFPNSearch
from search_spaces.schemas import FPN_PATHWAYS


@dataclass(frozen=True)
class StepCost:
    saved_bytes: int
    cuda_peak_bytes: int | None
    seconds: float
    saved_by: dict[str, int]


def step(module: torch.nn.Module, x: torch.Tensor | list[torch.Tensor]) -> None:
    out = module(x)
    sum(o.square().mean() for o in (out if isinstance(out, list) else [out])).backward()


def measure(cell: torch.nn.Module, x: torch.Tensor | list[torch.Tensor],
            repeats: int) -> StepCost:
    """One step's cost of ``cell`` (a search cell or the FPN supernet) on input ``x``."""
    device = next(cell.parameters()).device
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    step(cell, x)  # warm-up (allocator, kernels selection)
    cell.zero_grad(set_to_none=False)  # keep the grads allocated: not activations
    with ActivationMeter(device, exclude=cell.parameters()) as meter:
        step(cell, x)
    times = []
    for _ in range(repeats):
        sync()
        start = time.perf_counter()
        step(cell, x)
        sync()
        times.append(time.perf_counter() - start)
    return StepCost(meter.saved_bytes, meter.cuda_peak_bytes, statistics.median(times),
                    dict(meter.saved_by))


def print_breakdown(costs: dict[str, StepCost], ref: str) -> None:
    """Saved MiB by what made the saved tensor and its channels, one column per strategy, and
    each strategy's ratio to ``ref`` (the sparsest)."""
    names = list(costs)
    keys = sorted({k for c in costs.values() for k in c.saved_by},
                  key=lambda k: -max(c.saved_by.get(k, 0) for c in costs.values()))
    print(f"  {'saved by':<36}" + "".join(f" {n:>12}" for n in names) + "  ratio to " + ref)
    for key in keys:
        mib = {n: costs[n].saved_by.get(key, 0) / 2**20 for n in names}
        ratios = ", ".join(f"{mib[n] / mib[ref]:.2f}x" for n in names if n != ref and mib[ref])
        print(f"  {key:<36}" + "".join(f" {mib[n]:>12.2f}" for n in names) + f"  {ratios}")


def edges_run(cell: SearchCell, x: torch.Tensor) -> int:
    """How many of the cell's mixed edges one (gradient-free) forward runs."""
    calls: list[int] = []
    hooks = [m.register_forward_hook(lambda *_: calls.append(1)) for m in cell.edges]
    with torch.no_grad():
        cell(x)
    for hook in hooks:
        hook.remove()
    return len(calls)


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
                        help="one CPM cell per search strategy, or the FPN supernet per pathway")
    parser.add_argument("--strategies", nargs="+", choices=list_strategies(),
                        default=list_strategies(), help="the CPM cell's search strategies")
    parser.add_argument("--channels", type=int, default=32)
    parser.add_argument("--size", type=int, default=40, help="input height = width")
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--k", type=int, default=4, help="PC-DARTS partial-channel divisor")
    parser.add_argument("--nodes", type=int, nargs="+", default=[6, 8])
    parser.add_argument("--op-set", default="S_CPM")
    parser.add_argument("--concat", choices=["cat_all", "cat_leaf"], default="cat_all")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--breakdown", action="store_true",
                        help="also the saved bytes by what made each saved tensor, per strategy")
    parser.add_argument("--fast-backward", action="store_true",
                        help="the conv backward search() uses (use_fast_conv_backward); "
                             "default: PyTorch's native one")
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
    width = max(10, *(len(s) for s in args.strategies))
    header = f"{'nodes':>5} {'strategy':<{width}} {'edges':>5} {'saved MiB':>10}"
    header += f" {'cuda peak MiB':>13}" if cuda_col else ""
    print(header + f" {'ms/step':>9}")
    for n in args.nodes:
        costs, edges = {}, {}
        for name in args.strategies:
            torch.manual_seed(0)
            cell = SearchCell(args.channels, n, ops, name, args.concat, args.k).to(device)
            if args.fast_backward:
                use_fast_conv_backward(cell)
            cell.gumbel_generator = torch.Generator().manual_seed(0)
            costs[name] = c = measure(cell, x, args.repeats)
            edges[name] = edges_run(cell, x)
            row = f"{n:>5} {name:<{width}} {edges[name]:>5}"
            row += f" {c.saved_bytes / 2**20:>10.2f}"
            row += f" {c.cuda_peak_bytes / 2**20:>13.2f}" if cuda_col else ""
            print(row + f" {c.seconds * 1e3:>9.2f}")
        ref = min(args.strategies, key=lambda name: edges[name])  # the sparsest
        for name in (s for s in args.strategies if s != ref):
            a, b = costs[name], costs[ref]
            ratio = (f"{n:>5} {'/'.join((name, ref)):<{width}} {edges[name] / edges[ref]:>4.1f}x"
                     f" {a.saved_bytes / b.saved_bytes:>9.2f}x")
            if cuda_col:
                ratio += f" {a.cuda_peak_bytes / b.cuda_peak_bytes:>12.2f}x"
            print(ratio + f" {a.seconds / b.seconds:>8.2f}x")
        if args.breakdown:
            print_breakdown(costs, ref)


if __name__ == "__main__":
    main()
