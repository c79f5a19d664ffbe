"""AutoFEM-FPN (Sec. 3.2, Eq. 2): per-level fusion of a same-level, a top-down and a bottom-up path.

For level ``i`` with backbone map ``C_i``::

    P^td_i = F_up(O^td_i(P^td_{i+1})) x C_i        (top-down path; absent at the top level)
    P^bu_i = F_down(O^bu_i(P^bu_{i-1})) x C_i      (bottom-up path; absent at the bottom level)
    P_i    = F_c(b^0_i O^0_i(C_i) + b^td_i P^td_i + b^bu_i P^bu_i)

with ``b = softmax(beta_i)`` over the paths present (PC-DARTS edge normalisation). The supernet
combines a level's paths as a search strategy combines a node's parents
(:meth:`~nas_search.strategies.SearchStrategy.node_forward`, ``beta`` the parent logits):
``pcdarts``, Eq. 3, is exactly this sum. A level keeps every path, so no strategy derivation
applies: the genotype records ``softmax(beta)``, which the derived module starts from.

Our definitions where the paper is loose:

* What a path reads, the genotype's ``pathway`` (:data:`~search_spaces.schemas.FPN_PATHWAYS`):

  - ``recursive`` (Fig. 3(d), as PANet and BiFPN): ``P^td_i`` and ``P^bu_i`` are the features
    along the two paths. A top-down pass from the top level down computes ``P^td``, each level
    reading the one above; a bottom-up pass from the bottom level up computes ``P^bu``. The
    passes start from the backbone maps: ``P^td_top := C_top``, ``P^bu_bottom := C_bottom``.
    A path's output thus sees every coarser (td) or finer (bu) level.
  - ``one_hop``: ``P^td_{i+1} := C_{i+1}`` and ``P^bu_{i-1} := C_{i-1}``, the neighbouring
    backbone maps ("takes each feature and those of neighboring resolutions as input"). The
    mixed ops of the pyramid are then independent of each other. Genotype files written before
    the field existed hold this reading.

  The supernet and the fixed module share the passes (:func:`path_terms`); their parameters
  and MACs do not depend on the pathway (README: search cost of both).
* On a sub-pyramid (the ``levels`` of a half-depth AutoFEM, e.g. P4..P7) the bottom level has
  no bottom-up input and drops its ``bu`` path; its fusion weights are renormalised over the
  paths it keeps.
* The gating ``x C_i`` multiplies the *resized* path output, as in the P_6 line of Eq. 2 (the P_2
  line, ``F_up(O(P^td_3 x C_2))``, multiplies before resizing, which cannot type-check: read as a
  typo). The genotype's ``gate`` (:data:`~search_spaces.schemas.FPN_GATES`) says by what:
  ``product``, ``C_i`` as printed; ``normalized``, ``C_i / rms(C_i)`` (per image, over channels
  and positions). A product of two maps is of degree 2 in the network's input scale, and the
  recursive pathway compounds it: level i's ``td`` term is of degree ``1 + (levels above)``.
  Batch statistics hide this in training; with BN's running statistics at test time a
  shift in feature scale (another image size) is raised to that power (README, "The ASFD
  family"). The normalized gate keeps every term of degree 1, parameter-free.
* ``F_up`` is bilinear resizing to ``C_i``'s exact size; ``F_down`` is 3x3/2 max pooling
  (``ceil(size / 2)``, see :func:`search_spaces.ops.downsample_to`).
* ``F_c`` is one separable 3x3 unit (ReLU -> depthwise 3x3 -> pointwise -> BN), the same block
  as ``sep_conv_3x3``, chosen for the small D0/D1 budgets of Table 5; the fixed module can use
  a dense 3x3 conv instead (``fuse="dense"``, :data:`FUSE_BLOCKS`), which ``detectors.models.asfd``
  picks per variant against Table 5. The supernet's ``F_c`` is separable.
* The derived module's ``beta`` are learnable parameters (the paper's "learnable scalars"),
  initialised to ``log`` of the searched ``softmax(beta)`` the genotype records, so that the
  untrained network computes what the genotype describes. State dicts saved when they were
  fixed ``fusion`` buffers load (:meth:`_FixedLevel._load_from_state_dict`).
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Literal

import torch
from torch import Tensor, nn

from genotypes.schema import Genotype
from nas_search.gumbel import GumbelSampled
from nas_search.mixed_op import MixedOp
from nas_search.registry import build_op, get_op_set
from nas_search.strategies import SearchStrategy, get_strategy
from nas_search.supernet import ArchTable
from search_spaces.baselines import FeatureModule, register_feature_module
from search_spaces.ops import SepConv, downsample_to, upsample_to
from search_spaces.schemas import (
    FPN_GATES, FPN_PATHS, FPN_PATHWAYS, LEVELS, FPNGate, FPNGenotype, FPNLevelGenotype,
    FPNPathway, fpn_of,
)


def level_paths(levels: Sequence[str], i: int) -> tuple[str, ...]:
    """The Eq. 2 paths present at level ``i``: ``same``, ``td`` below the top, ``bu`` above the
    bottom, in ``FPN_PATHS`` order."""
    present = {"same": True, "td": i < len(levels) - 1, "bu": i > 0}
    return tuple(p for p in FPN_PATHS if present[p])


FuseKind = Literal["separable", "dense"]


def dense_fuse(channels: int) -> nn.Sequential:
    """``F_c`` as a dense 3x3 conv, in the ReLU -> conv -> BN order of the candidate ops."""
    return nn.Sequential(nn.ReLU(), nn.Conv2d(channels, channels, 3, padding=1, bias=False),
                         nn.BatchNorm2d(channels))


#: The ``F_c`` blocks by name (module docstring).
FUSE_BLOCKS: dict[str, Callable[[int], nn.Module]] = {"separable": SepConv, "dense": dense_fuse}


def check_choice(what: str, value: str, choices: tuple[str, ...]) -> str:
    """``value`` if it is one of ``choices``, else a ValueError naming ``what`` and them
    (an FPN ``pathway`` of :data:`FPN_PATHWAYS`, a ``gate`` of :data:`FPN_GATES`)."""
    if value not in choices:
        raise ValueError(f"unknown FPN {what} {value!r}; expected one of {choices}")
    return value


#: The ``rms`` floor of a normalized gate (an all-zero ``C_i`` gates to zero).
GATE_EPS = 1e-5


def gate_map(c: Tensor, kind: FPNGate) -> Tensor:
    """What gates level i's neighbour paths: ``C_i`` (``product``), or ``C_i`` divided by its
    per-image rms over channels and positions (``normalized``)."""
    if kind == "product":
        return c
    return c * torch.rsqrt(c.square().mean(dim=(1, 2, 3), keepdim=True) + GATE_EPS)


def gate(path: str, y: Tensor, g: Tensor) -> Tensor:
    """One Eq. 2 term before its beta: ``y`` on the same level, ``F_up(y) x g`` top-down,
    ``F_down(y) x g`` bottom-up, ``g`` the level's :func:`gate_map`."""
    if path == "same":
        return y
    return (upsample_to(y, g) if path == "td" else downsample_to(y, g)) * g


class _FusionLevel(nn.Module):
    """One level of Eq. 2; subclasses run a path's op and combine the paths' terms."""

    def __init__(self, channels: int, paths: tuple[str, ...],
                 fuse: FuseKind = "separable") -> None:
        super().__init__()
        if fuse not in FUSE_BLOCKS:
            raise ValueError(f"unknown F_c kind {fuse!r}; expected one of {sorted(FUSE_BLOCKS)}")
        self.paths = paths
        self.fuse = FUSE_BLOCKS[fuse](channels)  # F_c

    def run_path(self, j: int, path: str, x: Tensor) -> Tensor:
        raise NotImplementedError

    def combine(self, terms: Sequence[Tensor]) -> Tensor:
        """The input of ``F_c``: this level's terms, in ``paths`` order, fused."""
        raise NotImplementedError

    def term(self, path: str, x: Tensor, g: Tensor) -> Tensor:
        """The ``path`` term of this level before its beta, on input ``x``, gated by ``g``
        (:func:`gate`)."""
        return gate(path, self.run_path(self.paths.index(path), path, x), g)

    def forward(self, terms: dict[str, Tensor]) -> Tensor:
        """``F_c`` of the fused terms ``{path: term}`` of this level."""
        return self.fuse(self.combine([terms[p] for p in self.paths]))


def path_terms(blocks: Sequence[_FusionLevel], feats: Sequence[Tensor],
               pathway: FPNPathway, kind: FPNGate = "product") -> list[dict[str, Tensor]]:
    """Every level's Eq. 2 terms ``{path: term}``, finest level first, gated by ``kind``. The
    top-down pass runs from the top level down and the bottom-up pass from the bottom level up;
    on each, a level's path reads the previous level's term (``recursive``; the passes start
    from the top and the bottom backbone maps) or the neighbouring backbone map (``one_hop``)."""
    recursive = check_choice("pathway", pathway, FPN_PATHWAYS) == "recursive"
    kind = check_choice("gate", kind, FPN_GATES)
    gates = [gate_map(c, kind) for c in feats]
    terms = [{"same": block.term("same", c, c)} for block, c in zip(blocks, feats)]
    td = feats[-1]
    for i in reversed(range(len(feats) - 1)):
        td = blocks[i].term("td", td if recursive else feats[i + 1], gates[i])
        terms[i]["td"] = td
    bu = feats[0]
    for i in range(1, len(feats)):
        bu = blocks[i].term("bu", bu if recursive else feats[i - 1], gates[i])
        terms[i]["bu"] = bu
    return terms


class _SearchLevel(GumbelSampled, _FusionLevel):
    """Search-time level: a MixedOp per path, ``arch_alpha`` (paths x ops) and ``arch_beta``,
    the paths combined by ``strategy`` with ``beta`` as their parent logits."""

    def __init__(self, channels: int, paths: tuple[str, ...], op_names: tuple[str, ...],
                 k: int, strategy: SearchStrategy) -> None:
        super().__init__(channels, paths)
        self.op_names, self.strategy = op_names, strategy
        self.ops = nn.ModuleDict({p: MixedOp(channels, op_names, k=k) for p in paths})
        self.arch_alpha = nn.Parameter(1e-3 * torch.randn(len(paths), len(op_names)))
        self.arch_beta = nn.Parameter(1e-3 * torch.randn(len(paths)))

    def run_path(self, j: int, path: str, x: Tensor) -> Tensor:
        return self.ops[path](x, torch.softmax(self.arch_alpha[j], dim=0))

    def combine(self, terms: Sequence[Tensor]) -> Tensor:
        return self.strategy.node_forward(self.arch_beta, terms.__getitem__, self)

    def fusion_weights(self) -> Tensor:
        """The fusion the genotype records, ``softmax(beta)``."""
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


#: The smallest fusion weight whose log initialises a learnable beta (a weight of 0 would give
#: ``-inf``, which no gradient step could move).
MIN_FUSION_WEIGHT = 1e-6


def fusion_logits(weights: Sequence[float]) -> Tensor:
    """``beta`` with ``softmax(beta) = weights / sum(weights)`` (weights floored at
    :data:`MIN_FUSION_WEIGHT`)."""
    return torch.tensor(weights, dtype=torch.float32).clamp_min(MIN_FUSION_WEIGHT).log()


class _FixedLevel(_FusionLevel):
    """Derived level: the chosen op per path and learnable ``beta``, ``softmax(beta)`` starting
    at the genotype's fusion weights (renormalised over ``paths``)."""

    def __init__(self, channels: int, paths: tuple[str, ...], genotype: FPNLevelGenotype,
                 fuse: FuseKind = "separable") -> None:
        super().__init__(channels, paths, fuse)
        ops = genotype.paths()
        self.ops = nn.ModuleDict({p: build_op(ops[p], channels) for p in paths})
        self.beta = nn.Parameter(fusion_logits([genotype.fusion[p] for p in paths]))

    def run_path(self, j: int, path: str, x: Tensor) -> Tensor:
        return self.ops[path](x)

    def fusion_weights(self) -> Tensor:
        return torch.softmax(self.beta, dim=0)

    def combine(self, terms: Sequence[Tensor]) -> Tensor:
        b = self.fusion_weights()
        return sum(b[j] * t for j, t in enumerate(terms))

    def _load_from_state_dict(self, state_dict: dict, prefix: str, *args, **kwargs) -> None:
        """Read a state dict saved when the weights were a fixed ``fusion`` buffer (softmax
        values) as ``beta = log(fusion)``."""
        old = state_dict.pop(prefix + "fusion", None)
        if old is not None and prefix + "beta" not in state_dict:
            state_dict[prefix + "beta"] = fusion_logits(old.tolist())
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)


class _FPN(FeatureModule):
    """Runs the two passes of :func:`path_terms` and fuses every level's terms."""

    blocks: nn.ModuleDict
    pathway: FPNPathway
    gate: FPNGate

    def forward(self, feats: Sequence[Tensor]) -> list[Tensor]:
        self.check_pyramid(feats)
        blocks = [self.blocks[lv] for lv in self.levels]
        terms = path_terms(blocks, feats, self.pathway, self.gate)
        return [block(t) for block, t in zip(blocks, terms)]

    def extra_repr(self) -> str:
        return f"pathway={self.pathway}, gate={self.gate}"


def padding_sensitive(module: nn.Module) -> bool:
    """Whether zero-padding an input changes ``module``'s outputs beyond the padded border: it
    holds an AutoFEM-FPN with the ``normalized`` gate, whose rms runs over the whole map, the
    padding included (a batch of mixed sizes then differs from its images run alone)."""
    return any(isinstance(m, _FPN) and m.gate == "normalized" for m in module.modules())


class AutoFEMFPNSearch(_FPN):
    """The AutoFEM-FPN supernet: every O of Eq. 2 a PC-DARTS MixedOp over ``op_set`` (``1/k`` of
    the channels), ``arch_alpha`` per path per level, ``arch_beta`` per level; the paths read
    what ``pathway`` says, gated as ``gate`` says, and each level fuses them by ``strategy``
    (module docstring), one that runs every path: a level keeps them all."""

    def __init__(self, channels: int, k: int = 4, op_set: str = "S_FPN",
                 levels: Sequence[str] = LEVELS, pathway: FPNPathway = "recursive",
                 strategy: str | SearchStrategy = "pcdarts", gate: FPNGate = "product") -> None:
        super().__init__(channels, levels)
        self.op_set, self.k = op_set, k
        self.pathway = check_choice("pathway", pathway, FPN_PATHWAYS)
        self.gate = check_choice("gate", gate, FPN_GATES)
        self.strategy = get_strategy(strategy)
        if self.strategy.samples_path:
            raise ValueError(f"AutoFEM-FPN search: strategy {self.strategy.name!r} samples a "
                             "sub-set of the paths, but every level keeps all its paths (Eq. 2)")
        op_names = get_op_set(op_set)
        self.blocks = nn.ModuleDict({
            lv: _SearchLevel(channels, level_paths(self.levels, i), op_names, k, self.strategy)
            for i, lv in enumerate(self.levels)
        })

    @torch.no_grad()
    def derive(self) -> FPNGenotype:
        """Each path keeps its strongest op (argmax alpha); fusion keeps softmax(beta); the
        genotype records the pathway and the gate."""
        return FPNGenotype(levels={lv: block.derive() for lv, block in self.blocks.items()},
                           pathway=self.pathway, gate=self.gate)


class AutoFEMFPN(_FPN):
    """The derived AutoFEM-FPN: only the genotype's ops, pathway and gate, learnable fusion
    weights, ``F_c`` of kind ``fuse``."""

    def __init__(self, channels: int, genotype: FPNGenotype,
                 levels: Sequence[str] = LEVELS, fuse: FuseKind = "separable") -> None:
        super().__init__(channels, levels)
        self.genotype = genotype
        self.pathway = check_choice("pathway", genotype.pathway, FPN_PATHWAYS)
        self.gate = check_choice("gate", genotype.gate, FPN_GATES)
        self.fuse_kind = fuse
        blocks = {}
        for i, lv in enumerate(self.levels):
            paths = level_paths(self.levels, i)
            blocks[lv] = _FixedLevel(channels, paths, _check_level(genotype, lv, paths), fuse)
        self.blocks = nn.ModuleDict(blocks)

    @torch.no_grad()
    def load_from_search(self, search: AutoFEMFPNSearch) -> None:
        """Copy the chosen ops' and ``F_c``'s weights (and BN statistics) from a ``k = 1``
        supernet, so that this module computes what the supernet computes at one-hot alpha."""
        if search.k != 1:
            raise ValueError(f"load_from_search needs a k=1 supernet (its ops are channels/k "
                             f"wide), got k={search.k}")
        if self.fuse_kind != "separable":
            raise ValueError(f"load_from_search: this module's F_c is {self.fuse_kind!r}, the "
                             f"supernet's is separable")
        if (search.levels, search.channels, search.pathway, search.gate) != (
                self.levels, self.channels, self.pathway, self.gate):
            raise ValueError(f"supernet levels/channels/pathway/gate {search.levels}/"
                             f"{search.channels}/{search.pathway}/{search.gate} differ from "
                             f"{self.levels}/{self.channels}/{self.pathway}/{self.gate}")
        for lv, block in self.blocks.items():
            source = search.blocks[lv]
            block.fuse.load_state_dict(source.fuse.state_dict())
            for path in block.paths:
                op_name = self.genotype.levels[lv].paths()[path]
                if op_name not in source.op_names:
                    raise ValueError(f"{lv}.{path}: op {op_name!r} is not a candidate of the "
                                     f"supernet {list(source.op_names)}")
                chosen = source.ops[path].ops[source.op_names.index(op_name)]
                block.ops[path].load_state_dict(chosen.state_dict())


def _check_level(genotype: FPNGenotype, level: str, paths: tuple[str, ...]) -> FPNLevelGenotype:
    """The genotype of ``level``, checked to have ``paths`` and their fusion weights (it may
    have more: the bottom level of a sub-pyramid drops its ``bu``, see the module docstring)."""
    if level not in genotype.levels:
        raise ValueError(f"FPN genotype has no level {level!r} (has {sorted(genotype.levels)})")
    g = genotype.levels[level]
    if not set(paths) <= set(g.paths()) & set(g.fusion):
        raise ValueError(f"FPN genotype level {level}: paths {tuple(g.paths())} with fusion "
                         f"{sorted(g.fusion)}; this level needs {paths}")
    return g


@register_feature_module("autofem_fpn")
def autofem_fpn(channels: int, genotype: Genotype, levels: Sequence[str] = LEVELS,
                fuse: FuseKind = "separable") -> AutoFEMFPN:
    """The derived AutoFEM-FPN of a whole ``Genotype`` (its ``fpn`` section)."""
    fpn = fpn_of(genotype)
    if fpn is None:
        raise ValueError("autofem_fpn needs a genotype with an 'fpn' part; this one has none")
    return AutoFEMFPN(channels, fpn, levels, fuse)
