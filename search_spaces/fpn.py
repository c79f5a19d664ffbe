"""AutoFEM-FPN (Sec. 3.2, Eq. 2): per-level fusion of a same-level, a top-down and a bottom-up path.

For level ``i`` with backbone map ``C_i``::

    P_i = F_c( b^0_i  O^0_i(C_i)
             + b^td_i F_up(O^td_i(P^td_{i+1})) x C_i        (absent at the top level)
             + b^bu_i F_down(O^bu_i(P^bu_{i-1})) x C_i )     (absent at the bottom level)

with ``b = softmax(beta_i)`` over the paths present (PC-DARTS edge normalisation).

Our definitions where the paper is loose:

* ``P^td_{i+1} := C_{i+1}`` and ``P^bu_{i-1} := C_{i-1}``: each path reads the neighbouring
  backbone map. The paper's text says the module "takes each feature and those of neighboring
  resolutions as input"; with this reading the 16 mixed ops of the pyramid are independent,
  so one pass computes them in parallel at the cost of a single layer, and deeper variants come
  from stacking modules (compound scaling). It is used by the supernet and the fixed module alike.
* The gating ``x C_i`` multiplies the *resized* path output, as in the P_6 line of Eq. 2 (the P_2
  line, ``F_up(O(P^td_3 x C_2))``, multiplies before resizing, which cannot type-check: read as a
  typo).
* ``F_up`` is bilinear resizing to ``C_i``'s exact size; ``F_down`` is 3x3/2 max pooling
  (``ceil(size / 2)``, see :func:`search_spaces.ops.downsample_to`).
* ``F_c`` is one separable 3x3 unit (ReLU -> depthwise 3x3 -> pointwise -> BN), the same block
  as ``sep_conv_3x3``, chosen for the small D0/D1 budgets of Table 5.
* The derived module keeps the learned ``softmax(beta)`` values as fixed buffers: the genotype
  records them, and the fixed network is exactly what the genotype describes.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from genotypes.schema import FPN_PATHS, LEVELS, FPNGenotype, FPNLevelGenotype, Genotype
from nas_search.mixed_op import MixedOp
from nas_search.registry import build_op, get_op_set
from nas_search.supernet import ArchTable
from search_spaces.baselines import FeatureModule, register_feature_module
from search_spaces.ops import SepConv, downsample_to, upsample_to


def level_paths(levels: Sequence[str], i: int) -> tuple[str, ...]:
    """The Eq. 2 paths present at level ``i``: ``same``, ``td`` below the top, ``bu`` above the
    bottom, in ``FPN_PATHS`` order."""
    present = {"same": True, "td": i < len(levels) - 1, "bu": i > 0}
    return tuple(p for p in FPN_PATHS if present[p])


def path_inputs(feats: Sequence[Tensor], i: int) -> dict[str, Tensor]:
    """The map each path of level ``i`` reads: ``C_i``, ``P^td_{i+1} = C_{i+1}``,
    ``P^bu_{i-1} = C_{i-1}`` (the ones that exist)."""
    inputs = {"same": feats[i]}
    if i < len(feats) - 1:
        inputs["td"] = feats[i + 1]
    if i > 0:
        inputs["bu"] = feats[i - 1]
    return inputs


def gate(path: str, y: Tensor, c: Tensor) -> Tensor:
    """One Eq. 2 term before its beta: ``y`` on the same level, ``F_up(y) x C_i`` top-down,
    ``F_down(y) x C_i`` bottom-up."""
    if path == "same":
        return y
    return (upsample_to(y, c) if path == "td" else downsample_to(y, c)) * c


class _FusionLevel(nn.Module):
    """One level of Eq. 2; subclasses run a path's op and give the fusion weights."""

    def __init__(self, channels: int, paths: tuple[str, ...]) -> None:
        super().__init__()
        self.paths = paths
        self.fuse = SepConv(channels)  # F_c

    def run_path(self, j: int, path: str, x: Tensor) -> Tensor:
        raise NotImplementedError

    def fusion_weights(self) -> Tensor:
        raise NotImplementedError

    def forward(self, inputs: dict[str, Tensor]) -> Tensor:
        c, b = inputs["same"], self.fusion_weights()
        total = sum(b[j] * gate(p, self.run_path(j, p, inputs[p]), c)
                    for j, p in enumerate(self.paths))
        return self.fuse(total)


class _SearchLevel(_FusionLevel):
    """Search-time level: a MixedOp per path, ``arch_alpha`` (paths x ops) and ``arch_beta``."""

    def __init__(self, channels: int, paths: tuple[str, ...], op_names: tuple[str, ...],
                 k: int) -> None:
        super().__init__(channels, paths)
        self.op_names = op_names
        self.ops = nn.ModuleDict({p: MixedOp(channels, op_names, k=k) for p in paths})
        self.arch_alpha = nn.Parameter(1e-3 * torch.randn(len(paths), len(op_names)))
        self.arch_beta = nn.Parameter(1e-3 * torch.randn(len(paths)))

    def run_path(self, j: int, path: str, x: Tensor) -> Tensor:
        return self.ops[path](x, torch.softmax(self.arch_alpha[j], dim=0))

    def fusion_weights(self) -> Tensor:
        return torch.softmax(self.arch_beta, dim=0)

    @torch.no_grad()
    def arch_weights(self) -> dict[str, ArchTable]:
        """This level's softmaxes for the history log: ``{"alpha": {path: {op: p}},
        "beta": {"fusion": {path: p}}}`` (the supernet prefixes the module path)."""
        alpha = torch.softmax(self.arch_alpha, dim=-1).tolist()
        return {
            "alpha": {p: dict(zip(self.op_names, row)) for p, row in zip(self.paths, alpha)},
            "beta": {"fusion": dict(zip(self.paths, self.fusion_weights().tolist()))},
        }

    def derive(self) -> FPNLevelGenotype:
        best = self.arch_alpha.argmax(dim=1).tolist()
        chosen = {p: self.op_names[best[j]] for j, p in enumerate(self.paths)}
        fusion = {p: float(w) for p, w in zip(self.paths, self.fusion_weights())}
        return FPNLevelGenotype(same=chosen["same"], td=chosen.get("td"), bu=chosen.get("bu"),
                                fusion=fusion)


class _FixedLevel(_FusionLevel):
    """Derived level: the chosen op per path and the fusion weights as a buffer."""

    def __init__(self, channels: int, paths: tuple[str, ...], genotype: FPNLevelGenotype) -> None:
        super().__init__(channels, paths)
        ops = genotype.paths()
        self.ops = nn.ModuleDict({p: build_op(ops[p], channels) for p in paths})
        self.register_buffer("fusion", torch.tensor([genotype.fusion[p] for p in paths]))

    def run_path(self, j: int, path: str, x: Tensor) -> Tensor:
        return self.ops[path](x)

    def fusion_weights(self) -> Tensor:
        return self.fusion


class _FPN(FeatureModule):
    """Applies one ``_FusionLevel`` per level to its path inputs."""

    blocks: nn.ModuleDict

    def forward(self, feats: Sequence[Tensor]) -> list[Tensor]:
        self.check_pyramid(feats)
        return [self.blocks[lv](path_inputs(feats, i)) for i, lv in enumerate(self.levels)]


class AutoFEMFPNSearch(_FPN):
    """The AutoFEM-FPN supernet: every O of Eq. 2 a PC-DARTS MixedOp over ``op_set`` (``1/k`` of
    the channels), ``arch_alpha`` per path per level, ``arch_beta`` per level."""

    def __init__(self, channels: int, k: int = 4, op_set: str = "S_FPN",
                 levels: Sequence[str] = LEVELS) -> None:
        super().__init__(channels, levels)
        self.op_set, self.k = op_set, k
        op_names = get_op_set(op_set)
        self.blocks = nn.ModuleDict({
            lv: _SearchLevel(channels, level_paths(self.levels, i), op_names, k)
            for i, lv in enumerate(self.levels)
        })

    @torch.no_grad()
    def derive(self) -> FPNGenotype:
        """Each path keeps its strongest op (argmax alpha); fusion keeps softmax(beta)."""
        return FPNGenotype(levels={lv: block.derive() for lv, block in self.blocks.items()})


class AutoFEMFPN(_FPN):
    """The derived AutoFEM-FPN: only the genotype's ops, fixed fusion weights."""

    def __init__(self, channels: int, genotype: FPNGenotype,
                 levels: Sequence[str] = LEVELS) -> None:
        super().__init__(channels, levels)
        self.genotype = genotype
        blocks = {}
        for i, lv in enumerate(self.levels):
            paths = level_paths(self.levels, i)
            blocks[lv] = _FixedLevel(channels, paths, _check_level(genotype, lv, paths))
        self.blocks = nn.ModuleDict(blocks)

    @torch.no_grad()
    def load_from_search(self, search: AutoFEMFPNSearch) -> None:
        """Copy the chosen ops' and ``F_c``'s weights (and BN statistics) from a ``k = 1``
        supernet, so that this module computes what the supernet computes at one-hot alpha."""
        if search.k != 1:
            raise ValueError(f"load_from_search needs a k=1 supernet (its ops are channels/k "
                             f"wide), got k={search.k}")
        if search.levels != self.levels or search.channels != self.channels:
            raise ValueError(f"supernet levels/channels {search.levels}/{search.channels} differ "
                             f"from {self.levels}/{self.channels}")
        for lv, block in self.blocks.items():
            source = search.blocks[lv]
            block.fuse.load_state_dict(source.fuse.state_dict())
            for path, op_name in self.genotype.levels[lv].paths().items():
                if op_name not in source.op_names:
                    raise ValueError(f"{lv}.{path}: op {op_name!r} is not a candidate of the "
                                     f"supernet {list(source.op_names)}")
                chosen = source.ops[path].ops[source.op_names.index(op_name)]
                block.ops[path].load_state_dict(chosen.state_dict())


def _check_level(genotype: FPNGenotype, level: str, paths: tuple[str, ...]) -> FPNLevelGenotype:
    """The genotype of ``level``, checked to have exactly ``paths`` and their fusion weights."""
    if level not in genotype.levels:
        raise ValueError(f"FPN genotype has no level {level!r} (has {sorted(genotype.levels)})")
    g = genotype.levels[level]
    if tuple(g.paths()) != paths or set(g.fusion) != set(paths):
        raise ValueError(f"FPN genotype level {level}: paths {tuple(g.paths())} with fusion "
                         f"{sorted(g.fusion)}; this level needs exactly {paths}")
    return g


@register_feature_module("autofem_fpn")
def autofem_fpn(channels: int, genotype: Genotype, levels: Sequence[str] = LEVELS) -> AutoFEMFPN:
    """The derived AutoFEM-FPN of a whole ``Genotype`` (its ``fpn`` part)."""
    if genotype.fpn is None:
        raise ValueError("autofem_fpn needs a genotype with an 'fpn' part; this one has none")
    return AutoFEMFPN(channels, genotype.fpn, levels)
