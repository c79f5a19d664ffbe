"""bench/table5.py and bench/search_cost.py --space fpn: the calibration readings and the FPN
step cost per pathway."""
from __future__ import annotations

import sys
from pathlib import Path

import torch

from detectors.models.asfd import resolve_genotype
from search_spaces.schemas import LEVELS

BENCH = Path(__file__).resolve().parents[1] / "bench"
sys.path.insert(0, str(BENCH))
import search_cost  # noqa: E402
import table5  # noqa: E402


def test_cut_cells_keeps_the_first_nodes_and_recomputes_the_leaves():
    g = resolve_genotype("asfd_paper_like")
    cut = table5.cut_cells(g, 3)
    assert all(c.n_nodes == 3 for c in cut.cells.values())
    assert cut.cells["P2"].nodes == g.cells["P2"].nodes[:3] and cut.cells["P2"].leaves == (3,)
    assert table5.cut_cells(g, None) is g


def test_readings_build_what_they_name():
    g = resolve_genotype("asfd_paper_like")
    with torch.device("meta"):
        chosen = table5.build_reading("D0", table5.Reading("x", first_level="P4"), g)
        half = table5.build_reading("D0", table5.Reading("x", half_width=True, cpm_nodes=2), g)
        bare = table5.build_reading("D0", table5.Reading("x", head_depth=0), g)
    assert chosen.config.head_depth == 1 and bare.config.head_depth == 0
    assert chosen.config.enhanced_levels == LEVELS[2:]
    assert chosen.config.feature_modules == ("autofem_fpn", "autofem_cpm")
    assert isinstance(half.feature_module, table5.HalfWidth)
    fpn, cpm = half.feature_module.inner
    assert fpn.channels == 32 and all(c.genotype.n_nodes == 2 for c in cpm.blocks.values())
    x = [torch.rand(1, 64, s, s) for s in (8, 4, 2, 1, 1)]
    out = table5.HalfWidth(64, torch.nn.Identity(), LEVELS[1:]).eval()(x)
    assert [o.shape for o in out] == [f.shape for f in x]


def test_fpn_search_cost_runs_both_pathways(capsys):
    search_cost.main(["--space", "fpn", "--channels", "8", "--size", "16", "--batch", "2",
                      "--repeats", "1"])
    out = capsys.readouterr().out
    rows = [line.split() for line in out.splitlines() if line.split()[0] in ("recursive",
                                                                             "one_hop")]
    assert len(rows) == 2 and rows[0][1] == rows[1][1] != "0.00"   # same MACs for both
