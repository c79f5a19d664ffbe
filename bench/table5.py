"""ASFD D0-D6 against Table 5 (params, MACs at 640x480), and the readings behind the calibration.

Three tables, every figure counted by :func:`detectors.engine.macs.count_macs` on the ``meta``
device (shapes only: the whole script takes seconds), genotype ``asfd_paper_like``:

* ``family``: D0-D6 as built by ``build_asfd``, with the ratios to Table 5;
* ``half``: candidate readings of Table 1's AutoFEM depth 0.5 at D0-D2, each with both AutoFEM
  halves unless it says otherwise: the level set the cascade runs on (the finer levels take
  the parameter-free top-down path), a narrower level set for the CPM, CPM cells cut to their
  first ``n`` nodes (a half-depth CPM), half-width modules (a 1x1 conv to ``W/2`` before
  the cascade and back to ``W`` after it, per level), and heads of the prediction convs alone
  (Table 1's one head layer read as the prediction conv);
* ``fuse``: D0-D6 with AutoFEM-FPN's ``F_c`` separable and dense.

Run: ``PYTHONPATH=. python bench/table5.py [--tables family half fuse]``. Measured figures:
README, "The ASFD family".
"""
from __future__ import annotations

import argparse
import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from detectors.engine.macs import count_macs, count_parameters
from detectors.models.asfd import (
    ASFD, ASFD_FAMILY, PAPER_TABLE5, asfd_config, build_feature_cascade, resolve_genotype,
)
from genotypes.schema import CellGenotype, Genotype
from search_spaces.fpn import FuseKind
from search_spaces.ops import ConvBNAct
from search_spaces.schemas import LEVELS

BOTH = ("autofem_fpn", "autofem_cpm")
HALF_DEPTH_VARIANTS = tuple(v for v, row in ASFD_FAMILY.items() if row.fem_depth == 0.5)


@dataclass(frozen=True)
class Reading:
    """One candidate reading of depth 0.5."""

    name: str
    modules: tuple[str, ...] = BOTH
    first_level: str = "P3"
    cpm_nodes: int | None = None   # None: the genotype's cells as they are
    half_width: bool = False
    fpn_fuse: FuseKind = "separable"
    cpm_first_level: str | None = None   # None: the CPM on the cascade's levels too
    head_depth: int = 1   # tower layers; 0: Table 1's one head layer is the prediction conv


READINGS: tuple[Reading, ...] = (
    Reading("FPN + CPM, P3-P7, heads of the prediction convs alone (built: HALF_DEPTH)",
            head_depth=0),
    Reading("CPM only, P3-P7 (CPM_HALF_DEPTH, the build before it)", ("autofem_cpm",)),
    Reading("FPN + CPM, P3-P7"),
    Reading("CPM only, P3-P7, heads of the prediction convs alone", ("autofem_cpm",),
            head_depth=0),
    Reading("FPN + CPM (3 of 6 nodes: half-depth CPM), P3-P7", cpm_nodes=3),
    Reading("FPN + CPM (2 nodes), P3-P7", cpm_nodes=2),
    Reading("FPN + CPM (1 node), P3-P7", cpm_nodes=1),
    Reading("FPN + CPM at half width, P3-P7", half_width=True),
    Reading("FPN on P3-P7, CPM on P4-P7 (NESTED_HALF_DEPTH)", cpm_first_level="P4"),
    Reading("FPN + CPM, P4-P7 (TABLE5_HALF_DEPTH)", first_level="P4"),
    Reading("FPN + CPM (3 nodes), P4-P7", first_level="P4", cpm_nodes=3),
    Reading("FPN + CPM, P5-P7 (half of the levels)", first_level="P5"),
    Reading("FPN + CPM, P2-P7 (= depth 1)", first_level="P2"),
    Reading("FPN (dense F_c) + CPM, P2-P7 (= D3's AutoFEM)", first_level="P2", fpn_fuse="dense"),
)


class HalfWidth(nn.Module):
    """A feature cascade run at ``channels // 2``: per level a 1x1 conv + BN + ReLU down before
    it and one up after it."""

    def __init__(self, channels: int, inner: nn.Module, levels: Sequence[str]) -> None:
        super().__init__()
        half = channels // 2
        self.down = nn.ModuleList(ConvBNAct(channels, half, 1) for _ in levels)
        self.inner = inner
        self.up = nn.ModuleList(ConvBNAct(half, channels, 1) for _ in levels)

    def forward(self, feats: Sequence[Tensor]) -> list[Tensor]:
        inner = self.inner([d(f) for d, f in zip(self.down, feats)])
        return [u(f) for u, f in zip(self.up, inner)]


def cut_cells(genotype: Genotype, nodes: int | None) -> Genotype:
    """``genotype`` with every cell cut to its first ``nodes`` nodes (parents precede nodes, so
    the cut cell is valid; its leaves are recomputed)."""
    if nodes is None:
        return genotype
    cells = {k: CellGenotype(c.nodes[:nodes], c.concat) for k, c in genotype.cells.items()}
    return dataclasses.replace(genotype, cells=cells)


def build_reading(variant: str, reading: Reading, genotype: Genotype) -> ASFD:
    levels = LEVELS[LEVELS.index(reading.first_level):]
    module_levels = () if reading.cpm_first_level is None else tuple(
        levels if name != "autofem_cpm" else LEVELS[LEVELS.index(reading.cpm_first_level):]
        for name in reading.modules)
    config = asfd_config(variant, feature_modules=reading.modules, enhanced_levels=levels,
                         fpn_fuse=reading.fpn_fuse, module_levels=module_levels,
                         head_depth=reading.head_depth)
    genotype = cut_cells(genotype, reading.cpm_nodes)
    model = ASFD(config, genotype)
    if reading.half_width:
        inner = build_feature_cascade(reading.modules, config.width // 2, genotype, levels,
                                      {"autofem_fpn": {"fuse": reading.fpn_fuse}})
        model.feature_module = HalfWidth(config.width, inner, levels)
    return model


def ratios(model: nn.Module, variant: str) -> tuple[float, float, float, float]:
    """Params (M), MACs (G) at 640x480, and their ratios to Table 5."""
    model.eval()
    params = count_parameters(model) / 1e6
    macs = count_macs(model, torch.zeros(1, 3, 480, 640, device="meta")) / 1e9
    paper = PAPER_TABLE5[variant]
    return params, params / paper.params_m, macs, macs / paper.macs_b


def cell(params: float, p_ratio: float, macs: float, m_ratio: float) -> str:
    fits = abs(p_ratio - 1) <= 0.1 and abs(m_ratio - 1) <= 0.1
    return f"{params:.2f}M ({p_ratio:.2f}) / {macs:.2f}G ({m_ratio:.2f})" + (" *" if fits else "")


def markdown(header: Sequence[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return "\n".join(lines + ["| " + " | ".join(r) + " |" for r in rows])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tables", nargs="+", choices=["family", "half", "fuse"],
                        default=["family", "half", "fuse"])
    parser.add_argument("--genotype", default="asfd_paper_like")
    args = parser.parse_args(argv)
    genotype = resolve_genotype(args.genotype)
    print("params (ratio to Table 5) / MACs at 640x480 (ratio); * = both within 10%\n")
    with torch.device("meta"):   # no weights are allocated or initialised
        if "family" in args.tables:
            rows = [[v, row.backbone, str(row.width), str(row.fem_depth), row.fpn_fuse,
                     cell(*ratios(ASFD(asfd_config(v), genotype), v))]
                    for v, row in ASFD_FAMILY.items()]
            print(markdown(["model", "backbone", "W", "AutoFEM depth", "F_c", "ours / paper"],
                           rows) + "\n")
        if "half" in args.tables:
            rows = [[r.name] + [cell(*ratios(build_reading(v, r, genotype), v))
                                for v in HALF_DEPTH_VARIANTS] for r in READINGS]
            print(markdown(["reading of depth 0.5", *HALF_DEPTH_VARIANTS], rows) + "\n")
        if "fuse" in args.tables:
            rows = [[v] + [cell(*ratios(ASFD(asfd_config(v, fpn_fuse=kind), genotype), v))
                           for kind in ("separable", "dense")] for v in ASFD_FAMILY]
            print(markdown(["model", "F_c separable", "F_c dense"], rows))


if __name__ == "__main__":
    main()
