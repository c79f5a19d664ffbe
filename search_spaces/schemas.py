"""The genotype schemas of this package's search spaces (:mod:`genotypes.spaces`), registered on
import and free of torch, so that ``asfd render`` and ``asfd genotypes`` start fast.

- ``autofem`` (``meta.search_space`` ``autofem``, ``autofem_fpn``, ``autofem_cpm``): cells
  are keyed by pyramid level, exactly :data:`LEVELS` (one AutoFEM-CPM per level), and the
  section ``fpn`` holds the AutoFEM-FPN (Eq. 2, :mod:`search_spaces.fpn`)::

      fpn:
        pathway: recursive     # or one_hop; absent (older files): one_hop
        gate: normalized       # or product; absent (older files): product
        levels:
          P2: {same: conv_1x1, td: sep_conv_5x5, bu: null, fusion: {same: 0.42, td: 0.58}}
          ...                  # exactly P2..P7

- ``digits`` (the toy task of :mod:`search_spaces.digits`): generic cells, named freely.

The paper's candidate op sets (Sec. 3.2) are here too, as names, so that genotype files are
checked without torch; :mod:`search_spaces.ops` implements and registers them in this order
(the order indexes the architecture parameters ``alpha``).
"""
from __future__ import annotations

import math
from collections.abc import Collection
from dataclasses import dataclass, field
from typing import Any, Literal

from genotypes.fields import read_mapping, read_number, read_str
from genotypes.schema import Genotype
from genotypes.spaces import (
    DrawnEdge, SectionDrawing, SectionSchema, SpaceSchema, register_space_schema,
)
from genotypes.validate import op_problem

#: Pyramid levels ``P2``..``P7`` (strides 4..128), the names used throughout the codebase.
LEVELS: tuple[str, ...] = ("P2", "P3", "P4", "P5", "P6", "P7")

FPNPath = Literal["same", "td", "bu"]
FPNPathway = Literal["recursive", "one_hop"]
FPN_PATHS: tuple[str, ...] = ("same", "td", "bu")
#: What the ``td`` / ``bu`` paths of AutoFEM-FPN read (Eq. 2, ``search_spaces.fpn``):
#: ``recursive`` the previous level's path feature (Fig. 3(d), PANet/BiFPN), ``one_hop`` the
#: neighbouring backbone map. Files written before the field existed hold ``one_hop`` networks.
FPN_PATHWAYS: tuple[str, ...] = ("recursive", "one_hop")
FPNGate = Literal["product", "normalized"]
#: How a ``td`` / ``bu`` path is gated by ``C_i`` (Eq. 2, ``search_spaces.fpn.gate``):
#: ``product`` the printed ``x C_i``, ``normalized`` ``x C_i / rms(C_i)`` per image. Files
#: written before the field existed hold ``product`` networks.
FPN_GATES: tuple[str, ...] = ("product", "normalized")
#: Which level feeds a path of level i: itself, the level above (top-down), below (bottom-up).
PATH_SOURCE_OFFSET: dict[str, int] = {"same": 0, "td": 1, "bu": -1}
#: A drawing's legend for each path, in :data:`FPN_PATHS` order.
LEGEND_PATHS: dict[str, str] = {"same": "same level", "td": "top-down (from level i+1)",
                                "bu": "bottom-up (from level i-1)"}
#: Fusion weights are softmax(beta) values; a file may round them to two decimals, so the sum is
#: checked to this absolute tolerance (0.33 + 0.33 + 0.33 passes).
FUSION_SUM_TOL = 0.02
#: The file key of the AutoFEM-FPN section.
FPN_KEY = "fpn"

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


@dataclass(frozen=True)
class FPNLevelGenotype:
    """One AutoFEM-FPN level (Eq. 2): the op on each path present and the learned fusion weights.

    ``td`` is absent (None) at the top level P7 and ``bu`` at the bottom level P2. ``fusion`` holds
    softmax(beta) over the paths present, keyed by path name.
    """

    same: str
    td: str | None
    bu: str | None
    fusion: dict[str, float] = field(default_factory=dict)

    def paths(self) -> dict[str, str]:
        """The paths present at this level, ``{path: op}``, in the order same, td, bu."""
        ops = {"same": self.same, "td": self.td, "bu": self.bu}
        return {p: o for p, o in ops.items() if o is not None}


@dataclass(frozen=True)
class FPNGenotype:
    """The levels of an AutoFEM-FPN, the ``pathway`` its paths were searched with
    (:data:`FPN_PATHWAYS`; absent from older files, which read as ``one_hop``) and its ``gate``
    (:data:`FPN_GATES`; absent: ``product``)."""

    levels: dict[str, FPNLevelGenotype]
    pathway: FPNPathway = "one_hop"
    gate: FPNGate = "product"


def fpn_of(genotype: Genotype) -> FPNGenotype | None:
    """The AutoFEM-FPN section of ``genotype``, if it has one."""
    return genotype.sections.get(FPN_KEY)


def level_set_problems(path: str, names: Collection[object], item: str, rule: str) -> list[str]:
    """``names`` against exactly :data:`LEVELS`: the missing levels and the unexpected names."""
    missing = [lv for lv in LEVELS if lv not in names]
    extra = [name for name in names if name not in LEVELS]
    problems = []
    if missing:
        problems.append(f"{path}: missing level(s) {', '.join(missing)}; {rule} "
                        f"{', '.join(LEVELS)}")
    if extra:
        problems.append(f"{path}: unexpected {item}(s) {', '.join(map(str, extra))}; {rule} "
                        f"{', '.join(LEVELS)}")
    return problems


class FPNSection(SectionSchema):
    """The ``fpn`` section: an :class:`FPNGenotype`."""

    key = FPN_KEY
    flow_depth = 2  # one level per line

    def parse(self, value: Any) -> FPNGenotype:
        data = read_mapping(value, "fpn", keys=("pathway", "gate", "levels"),
                            required=("levels",))
        parsed = {}
        for name, lv in read_mapping(data["levels"], "fpn.levels").items():
            path = f"fpn.levels.{name}"
            lv = read_mapping(lv, path, keys=("same", "td", "bu", "fusion"),
                              required=("same", "fusion"))
            fusion = read_mapping(lv["fusion"], f"{path}.fusion", keys=FPN_PATHS)
            parsed[str(name)] = FPNLevelGenotype(
                same=read_str(lv["same"], f"{path}.same"),
                td=None if lv.get("td") is None else read_str(lv["td"], f"{path}.td"),
                bu=None if lv.get("bu") is None else read_str(lv["bu"], f"{path}.bu"),
                fusion={p: read_number(w, f"{path}.fusion.{p}") for p, w in fusion.items()})
        # a file written before ``pathway`` existed holds a one-hop network
        pathway = read_str(data.get("pathway", "one_hop"), "fpn.pathway")
        gate = read_str(data.get("gate", "product"), "fpn.gate")  # likewise a product gate
        return FPNGenotype(levels=parsed, pathway=pathway, gate=gate)

    def to_dict(self, section: FPNGenotype) -> dict[str, Any]:
        return {"pathway": section.pathway, "gate": section.gate,
                "levels": {name: {"same": lv.same, "td": lv.td, "bu": lv.bu,
                                  "fusion": dict(lv.fusion)}
                           for name, lv in section.levels.items()}}

    def problems(self, section: FPNGenotype, known_ops: Collection[str] | None) -> list[str]:
        """Eq. (2): levels exactly P2..P7; ``td`` everywhere but the top, ``bu`` everywhere but
        the bottom; fusion weights softmax(beta) over exactly the paths present; a known
        pathway and gate."""
        problems: list[str] = []
        if section.pathway not in FPN_PATHWAYS:
            problems.append(f"fpn.pathway: unknown pathway {section.pathway!r}; "
                            f"expected one of {', '.join(FPN_PATHWAYS)}")
        if section.gate not in FPN_GATES:
            problems.append(f"fpn.gate: unknown gate {section.gate!r}; "
                            f"expected one of {', '.join(FPN_GATES)}")
        problems += level_set_problems("fpn.levels", section.levels, "level",
                                       "an FPN has exactly")
        top, bottom = LEVELS[-1], LEVELS[0]
        for name in (lv for lv in LEVELS if lv in section.levels):
            level, path = section.levels[name], f"fpn.levels.{name}"
            problems += op_problem(f"{path}.same", level.same, known_ops)
            for p, absent_at, why in (("td", top, "no level above"),
                                      ("bu", bottom, "no level below")):
                op = getattr(level, p)
                if name == absent_at and op is not None:
                    problems.append(f"{path}.{p}: must be null at {name} ({why}), got {op!r}")
                elif name != absent_at and op is None:
                    problems.append(f"{path}.{p}: missing; every level but {absent_at} has a "
                                    f"{p} path")
                elif op is not None:
                    problems += op_problem(f"{path}.{p}", op, known_ops)
            present = set(level.paths())
            if set(level.fusion) != present:
                problems.append(f"{path}.fusion: weights given for {sorted(level.fusion)} but "
                                f"the paths present are {sorted(present)}")
            elif any(not 0.0 <= w <= 1.0 for w in level.fusion.values()):
                problems.append(f"{path}.fusion: weights must lie in [0, 1], got "
                                f"{level.fusion}")
            elif not math.isclose(sum(level.fusion.values()), 1.0, abs_tol=FUSION_SUM_TOL):
                problems.append(f"{path}.fusion: weights sum to "
                                f"{sum(level.fusion.values()):.4g}, not 1 (they are "
                                f"softmax(beta))")
        return problems

    def drawing(self, section: FPNGenotype) -> SectionDrawing:
        """Inputs ``C_i`` feeding outputs ``P_i`` (Eq. 2), P7 on top: the same-level path from
        ``C_i``, the top-down one from level ``i+1``, the bottom-up one from ``i-1``, each
        labelled with its op and its fusion weight. The neighbour paths start at the
        neighbour's input, whatever the pathway (the title names it)."""
        levels = [lv for lv in reversed(LEVELS) if lv in section.levels]
        edges = tuple(
            DrawnEdge(f"C{LEVELS[LEVELS.index(lv) + PATH_SOURCE_OFFSET[path]][1:]}", lv,
                      rf"{path}: {op}\nβ={section.levels[lv].fusion[path]:.2f}", path)
            for lv in levels for path, op in section.levels[lv].paths().items())
        return SectionDrawing(title=f"AutoFEM-FPN ({section.pathway} paths, {section.gate} gate)",
                              inputs=tuple(f"C{lv[1:]}" for lv in levels),
                              outputs=tuple(levels), edges=edges,
                              kinds=tuple(LEGEND_PATHS.items()),
                              feeds_cells="FPN output P_i feeds cell P_i")


class AutoFEMSchema(SpaceSchema):
    """AutoFEM genotypes: the FPN section, and cells keyed by level."""

    def __init__(self) -> None:
        super().__init__("autofem", ("autofem", "autofem_fpn", "autofem_cpm"),
                         sections=(FPNSection(),), cell_names=LEVELS)

    def problems(self, genotype: Genotype) -> list[str]:
        """An AutoFEM-CPM (an AutoFEM search space, or a cell named after a level) has one cell
        per level, exactly ``P2..P7``, as the derived ASFD networks build them: D0-D2 use
        P3-P7, D3-D6 all six."""
        cells = genotype.cells
        if not cells or (genotype.meta.search_space not in self.search_spaces
                         and not any(name in LEVELS for name in cells)):
            return []
        return level_set_problems("cells", cells, "cell", "an AutoFEM-CPM has one cell per level")


AUTOFEM = register_space_schema(AutoFEMSchema())
DIGITS = register_space_schema(SpaceSchema("digits", ("digits",)))
