"""The paper's candidate op sets (Sec. 3.2) by name, as data, so that genotype files can be
checked without importing torch (``asfd render`` / ``asfd genotypes validate`` start fast).

``search_spaces.ops`` registers an implementation of every name and registers these sets in this
order (the order indexes the architecture parameters ``alpha``): ``S_FPN`` = the first six of the
paper's list, ``S_CPM`` all twelve as the paper lists them.
"""
from __future__ import annotations

PAPER_OP_SETS: dict[str, tuple[str, ...]] = {
    "S_FPN": ("conv_1x1", "sep_conv_3x3", "sep_conv_5x5",
              "dil_conv_3x3_r2", "dil_conv_3x3_r3", "dil_conv_5x5_r2"),
    "S_CPM": ("conv_1x1", "sep_conv_3x3", "sep_conv_5x5",
              "conv_1x3", "conv_3x1", "conv_1x3_3x1",
              "conv_1x5", "conv_5x1", "conv_1x5_5x1",
              "dil_conv_3x3_r2", "dil_conv_3x3_r3", "dil_conv_5x5_r2"),
}


def paper_ops() -> list[str]:
    """Every op name of the paper's sets, sorted."""
    return sorted({op for ops in PAPER_OP_SETS.values() for op in ops})
