"""AutoFEM-FPN (Eq. 2) and AutoFEM-CPM: supernets, derivation, fixed modules, weight inheritance."""
from __future__ import annotations

import math

import pytest
import torch

from genotypes.schema import Genotype
from nas_search.registry import get_op_set
from nas_search.supernet import Supernet, is_arch_parameter
from search_spaces.baselines import build_feature_module
from search_spaces.cpm import AutoFEMCPM, AutoFEMCPMSearch
from search_spaces.fpn import (
    AutoFEMFPN, AutoFEMFPNSearch, _FusionLevel, fusion_logits, gate, gate_map, level_paths,
    path_terms,
)
from search_spaces.schemas import FPN_KEY, LEVELS, FPNGenotype, FPNLevelGenotype

C = 8
PYRAMID_SIZES = [(math.ceil(641 / s), math.ceil(479 / s)) for s in (4, 8, 16, 32, 64, 128)]
SMALL = [(21, 15), (11, 8), (6, 4), (3, 2), (2, 1), (1, 1)]



def pyramid(sizes=PYRAMID_SIZES, batch=1, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(batch, C, h, w, generator=g) for h, w in sizes]


def shapes(maps):
    return [tuple(m.shape) for m in maps]


def make_one_hot(alpha: torch.nn.Parameter, seed: int) -> list[int]:
    """Set each row of ``alpha`` to a random one-hot choice (softmax exactly one-hot)."""
    choice = torch.randint(0, alpha.shape[-1], alpha.shape[:-1],
                           generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        alpha.zero_().scatter_(-1, choice.unsqueeze(-1), 1e4)
    return choice.tolist()


class AutoFEMSupernet(Supernet):
    """FPN then CPM, as the face search task composes them."""

    def __init__(self, mode="top1_tree", k=2):
        super().__init__()
        self.fpn = AutoFEMFPNSearch(C, k=k)
        self.cpm = AutoFEMCPMSearch(C, n_nodes=2, strategy=mode, k=k)

    def forward(self, feats):
        return self.cpm(self.fpn(feats))

    def genotype(self, top_k=2):
        return Genotype(cells=self.cpm.derive(top_k), sections={FPN_KEY: self.fpn.derive()})


# ----------------------------------------------------------------------------- FPN structure


class _IdentityLevel(_FusionLevel):
    """Every op the identity, so that a path's term is its gated input."""

    def run_path(self, j, path, x):
        return x


def test_level_paths():
    assert level_paths(LEVELS, 0) == ("same", "td")
    assert level_paths(LEVELS, 3) == ("same", "td", "bu")
    assert level_paths(LEVELS, 5) == ("same", "bu")


@pytest.mark.parametrize("pathway", ["recursive", "one_hop"])
def test_path_terms_follow_the_pathway(pathway):
    feats = pyramid(SMALL[:4])
    blocks = [_IdentityLevel(C, level_paths(LEVELS[:4], i)) for i in range(4)]
    terms = path_terms(blocks, feats, pathway)
    assert [set(t) for t in terms] == [set(b.paths) for b in blocks]
    # one_hop: P^td_{i+1} := C_{i+1}, P^bu_{i-1} := C_{i-1}; recursive: the previous level's
    # path feature, starting from the top / bottom backbone map
    td, bu = feats[3], feats[0]
    for i in (2, 1, 0):
        td = gate("td", td if pathway == "recursive" else feats[i + 1], feats[i])
        assert torch.equal(terms[i]["td"], td)
    for i in (1, 2, 3):
        bu = gate("bu", bu if pathway == "recursive" else feats[i - 1], feats[i])
        assert torch.equal(terms[i]["bu"], bu)
    assert all(torch.equal(t["same"], c) for t, c in zip(terms, feats))
    with pytest.raises(ValueError, match="unknown FPN pathway 'two_hop'"):
        path_terms(blocks, feats, "two_hop")


@pytest.mark.parametrize("pathway, reaches_p7", [("recursive", True), ("one_hop", False)])
def test_recursive_top_down_path_carries_the_top_level_to_the_bottom(pathway, reaches_p7):
    """Eq. 2 / Fig. 3(d): P2 sees C7 through the top-down pass; one hop sees C3 at most."""
    torch.manual_seed(0)
    fpn = AutoFEMFPNSearch(C, k=1, pathway=pathway).eval()
    feats = [f.requires_grad_() for f in pyramid(SMALL)]
    fpn(feats)[0].sum().backward()
    assert (feats[5].grad is not None and feats[5].grad.abs().sum() > 0) == reaches_p7
    assert feats[1].grad.abs().sum() > 0


def test_gate_resizes_then_multiplies_by_the_level_map():
    c = torch.full((1, 1, 3, 3), 2.0)
    coarse = torch.full((1, 1, 2, 2), 3.0)
    fine = torch.arange(25.0).view(1, 1, 5, 5)
    assert torch.equal(gate("same", c, c), c)
    assert torch.allclose(gate("td", coarse, c), torch.full((1, 1, 3, 3), 6.0))
    expected = 2 * torch.tensor([[6.0, 8.0, 9.0], [16.0, 18.0, 19.0], [21.0, 23.0, 24.0]])
    assert torch.equal(gate("bu", fine, c)[0, 0], expected)


def test_normalized_gate_divides_the_level_map_by_its_rms_per_image():
    c = torch.stack([torch.full((1, 3, 3), 2.0), torch.full((1, 3, 3), -5.0)])
    coarse = torch.full((2, 1, 2, 2), 3.0)
    expected = torch.stack([torch.full((1, 3, 3), 3.0), torch.full((1, 3, 3), -3.0)])
    torch.testing.assert_close(gate("td", coarse, gate_map(c, "normalized")), expected)
    assert torch.equal(gate_map(c, "product"), c)
    assert torch.equal(gate("td", coarse, gate_map(torch.zeros(2, 1, 3, 3), "normalized")),
                       torch.zeros(2, 1, 3, 3))
    with pytest.raises(ValueError, match="unknown FPN gate 'sigmoid'"):
        AutoFEMFPNSearch(C, k=1, gate="sigmoid")


@pytest.mark.parametrize("pathway, kind, td_degree, bu_degree", [
    ("recursive", "product", [6, 5, 4, 3, 2], [2, 3, 4, 5, 6]),
    ("one_hop", "product", [2] * 5, [2] * 5),
    ("recursive", "normalized", [1] * 5, [1] * 5),
])
def test_gate_sets_the_degree_of_each_term_in_the_input_scale(pathway, kind, td_degree,
                                                              bu_degree):
    """With BN's statistics fixed (eval), every op is of degree 1 in its input: a product gate
    adds degrees and the recursive pathway compounds them; the normalized gate keeps 1."""
    torch.manual_seed(0)
    fpn = AutoFEMFPNSearch(C, k=1, pathway=pathway, gate=kind).eval()
    blocks = [fpn.blocks[lv] for lv in LEVELS]
    feats = [f.abs() + 0.1 for f in pyramid(SMALL)]
    with torch.no_grad():
        base = path_terms(blocks, feats, pathway, kind)
        doubled = path_terms(blocks, [2 * f for f in feats], pathway, kind)

    def degree(i, path):
        return math.log2(doubled[i][path].norm() / base[i][path].norm())
    assert [degree(i, "td") for i in range(5)] == pytest.approx(td_degree, abs=1e-3)
    assert [degree(i, "bu") for i in range(1, 6)] == pytest.approx(bu_degree, abs=1e-3)


def test_fpn_supernet_shapes_and_arch_parameters():
    fpn = AutoFEMFPNSearch(C, k=4)
    out = fpn(pyramid())
    assert shapes(out) == [(1, C, h, w) for h, w in PYRAMID_SIZES]
    arch = {n: p.shape for n, p in fpn.named_parameters() if is_arch_parameter(n)}
    n_ops = len(get_op_set("S_FPN"))
    assert arch["blocks.P2.arch_alpha"] == (2, n_ops) and arch["blocks.P7.arch_alpha"] == (2, n_ops)
    assert arch["blocks.P4.arch_alpha"] == (3, n_ops) and arch["blocks.P4.arch_beta"] == (3,)
    assert len(arch) == 2 * len(LEVELS)


def test_fpn_supernet_backward_reaches_every_arch_parameter():
    fpn = AutoFEMFPNSearch(C, k=4)
    sum(o.square().mean() for o in fpn(pyramid(SMALL, batch=2))).backward()
    for name, p in fpn.named_parameters():
        if is_arch_parameter(name):
            assert p.grad is not None and p.grad.abs().sum() > 0, name


def test_fpn_derive_takes_argmax_ops_and_softmax_fusion():
    torch.manual_seed(0)
    fpn = AutoFEMFPNSearch(C, k=4)
    ops = get_op_set("S_FPN")
    with torch.no_grad():
        fpn.blocks["P4"].arch_alpha.zero_()
        fpn.blocks["P4"].arch_alpha[:, 0] = torch.tensor([0.1, 0.2, 0.3])
        fpn.blocks["P4"].arch_alpha[1, 4] = 1.0   # td -> dil_conv_3x3_r3
        fpn.blocks["P4"].arch_beta.copy_(torch.tensor([0.0, math.log(2.0), math.log(5.0)]))
    g = fpn.derive()
    assert set(g.levels) == set(LEVELS)
    assert g.levels["P4"].paths() == {"same": ops[0], "td": "dil_conv_3x3_r3", "bu": ops[0]}
    assert g.levels["P4"].fusion == pytest.approx({"same": 0.125, "td": 0.25, "bu": 0.625})
    assert g.levels["P2"].bu is None and g.levels["P7"].td is None


@pytest.mark.parametrize("pathway, kind", [("recursive", "product"), ("one_hop", "product"),
                                           ("recursive", "normalized")])
def test_fixed_fpn_matches_the_supernet_at_one_hot_alpha(pathway, kind):
    torch.manual_seed(0)
    fpn = AutoFEMFPNSearch(C, k=1, pathway=pathway, gate=kind)
    for seed, block in enumerate(fpn.blocks.values()):
        make_one_hot(block.arch_alpha, seed)
        torch.nn.init.normal_(block.arch_beta)
    feats = pyramid(SMALL, batch=2)
    fpn(feats)  # one training step of BN statistics, copied below with the weights
    genotype = fpn.derive()
    assert (genotype.pathway, genotype.gate) == (pathway, kind)
    fixed = AutoFEMFPN(C, genotype)
    fixed.load_from_search(fpn)
    fpn.eval(), fixed.eval()
    for a, b in zip(fpn(feats), fixed(feats)):
        assert torch.allclose(a, b, atol=1e-6)
    # beta is learnable (Eq. 2's "learnable scalars"), starting at the searched softmax(beta)
    assert {n for n, _ in fixed.named_parameters() if n.endswith("beta")} == {
        f"blocks.{lv}.beta" for lv in LEVELS}
    assert torch.allclose(fixed.blocks["P4"].fusion_weights(), fpn.blocks["P4"].fusion_weights())


def test_fixed_fpn_learns_its_fusion_weights():
    fixed = AutoFEMFPN(C, AutoFEMFPNSearch(C, k=4).derive())
    sum(o.square().mean() for o in fixed(pyramid(SMALL, batch=2))).backward()
    assert all(block.beta.grad.abs().sum() > 0 for block in fixed.blocks.values())


def test_fixed_fpn_loads_a_state_dict_with_fusion_buffers():
    """Checkpoints made when softmax(beta) was a fixed ``fusion`` buffer still load."""
    torch.manual_seed(0)
    fixed = AutoFEMFPN(C, AutoFEMFPNSearch(C, k=4).derive()).eval()
    old = {k: v for k, v in fixed.state_dict().items() if not k.endswith(".beta")}
    weights = {lv: torch.softmax(torch.randn(len(b.paths)), 0) for lv, b in fixed.blocks.items()}
    old.update({f"blocks.{lv}.fusion": w for lv, w in weights.items()})
    fresh = AutoFEMFPN(C, fixed.genotype).eval()
    fresh.load_state_dict(old)
    for lv, w in weights.items():
        assert torch.allclose(fresh.blocks[lv].fusion_weights(), w, atol=1e-6)
    assert torch.equal(fresh.blocks["P3"].fuse[1].weight, fixed.blocks["P3"].fuse[1].weight)


def test_fixed_fpn_on_a_sub_pyramid_drops_the_bottom_levels_bu_path():
    g = AutoFEMFPNSearch(C, k=4).derive()
    fixed = AutoFEMFPN(C, g, levels=LEVELS[2:])
    assert set(fixed.blocks) == set(LEVELS[2:])
    assert fixed.blocks["P4"].paths == ("same", "td") and fixed.blocks["P5"].paths == (
        "same", "td", "bu")
    kept = {p: g.levels["P4"].fusion[p] for p in ("same", "td")}
    expected = torch.tensor([kept["same"], kept["td"]]) / sum(kept.values())
    assert torch.allclose(fixed.blocks["P4"].fusion_weights(), expected, atol=1e-6)
    sizes = PYRAMID_SIZES[2:]
    assert shapes(fixed(pyramid(sizes))) == [(1, C, h, w) for h, w in sizes]


def test_fusion_logits_floor_zero_weights():
    beta = fusion_logits([0.0, 0.25, 0.75])
    assert torch.isfinite(beta).all()
    assert torch.allclose(torch.softmax(beta, 0), torch.tensor([0.0, 0.25, 0.75]), atol=1e-5)


def test_fixed_fpn_dense_fuse():
    g = AutoFEMFPNSearch(C, k=1).derive()
    dense = AutoFEMFPN(C, g, fuse="dense")
    sep = AutoFEMFPN(C, g)
    n = lambda m: sum(p.numel() for p in m.blocks["P4"].fuse.parameters())  # noqa: E731
    assert n(dense) == C * C * 9 + 2 * C and n(sep) == C * 9 + C * C + 2 * C
    assert shapes(dense.eval()(pyramid(SMALL))) == shapes(pyramid(SMALL))
    with pytest.raises(ValueError, match="F_c is 'dense'"):
        dense.load_from_search(AutoFEMFPNSearch(C, k=1))
    with pytest.raises(ValueError, match="unknown F_c kind 'wide'"):
        AutoFEMFPN(C, g, fuse="wide")


def test_fixed_fpn_has_only_the_chosen_ops():
    g = AutoFEMFPNSearch(C, k=4).derive()
    fixed = AutoFEMFPN(C, g)
    assert shapes(fixed(pyramid())) == [(1, C, h, w) for h, w in PYRAMID_SIZES]
    assert set(fixed.blocks["P2"].ops) == {"same", "td"}
    assert set(fixed.blocks["P5"].ops) == {"same", "td", "bu"}


def test_fixed_fpn_errors():
    g = AutoFEMFPNSearch(C, k=4).derive()
    levels = dict(g.levels)
    levels["P3"] = FPNLevelGenotype(same="conv_1x1", td=None, bu="conv_1x1",
                                    fusion={"same": 0.5, "bu": 0.5})
    with pytest.raises(ValueError, match="level P3"):
        AutoFEMFPN(C, FPNGenotype(levels=levels))
    with pytest.raises(ValueError, match="k=1"):
        AutoFEMFPN(C, g).load_from_search(AutoFEMFPNSearch(C, k=4))
    with pytest.raises(ValueError, match="'fpn' part"):
        build_feature_module("autofem_fpn", C, genotype=Genotype(cells={}))


# ----------------------------------------------------------------------------- CPM


@pytest.mark.parametrize("mode", ["top1_tree", "pcdarts"])
@pytest.mark.parametrize("concat", ["cat_leaf", "cat_all"])
def test_cpm_supernet_shapes_and_gradients(mode, concat):
    torch.manual_seed(0)
    cpm = AutoFEMCPMSearch(C, n_nodes=3, strategy=mode, concat=concat, k=4)
    out = cpm(pyramid())
    assert shapes(out) == [(1, C, h, w) for h, w in PYRAMID_SIZES]
    sum(o.square().mean() for o in out).backward()
    for lv, cell in cpm.blocks.items():
        assert cell.arch_alpha.grad.abs().sum() > 0, lv
        assert cell.arch_gamma.grad.abs().sum() > 0, lv


def test_cpm_levels_have_their_own_architecture():
    cpm = AutoFEMCPMSearch(C, n_nodes=3, k=4)
    assert len({id(cell.arch_alpha) for cell in cpm.blocks.values()}) == len(LEVELS)
    make_one_hot(cpm.blocks["P2"].arch_alpha, 0)
    make_one_hot(cpm.blocks["P7"].arch_alpha, 1)
    cells = cpm.derive()
    assert set(cells) == set(LEVELS)
    assert cells["P2"] != cells["P7"]
    assert all(len(node.edges) == 1 for node in cells["P3"].nodes)  # top1_tree derives a tree


def test_fixed_cpm_matches_the_supernet_at_one_hot_alpha():
    torch.manual_seed(0)
    cpm = AutoFEMCPMSearch(C, n_nodes=4, strategy="top1_tree", concat="cat_leaf", k=1)
    for seed, cell in enumerate(cpm.blocks.values()):
        make_one_hot(cell.arch_alpha, seed)
        torch.nn.init.normal_(cell.arch_gamma)
    feats = pyramid(SMALL, batch=2)
    cpm(feats)
    fixed = AutoFEMCPM(C, cpm.derive())
    fixed.load_from_search(cpm)
    cpm.eval(), fixed.eval()  # eval: the supernet runs the argmax tree the genotype records
    for a, b in zip(cpm(feats), fixed(feats)):
        assert torch.allclose(a, b, atol=1e-6)


def test_fixed_cpm_errors():
    cells = AutoFEMCPMSearch(C, n_nodes=2, k=4).derive()
    del cells["P5"]
    with pytest.raises(ValueError, match=r"\['P5'\]"):
        AutoFEMCPM(C, cells)


# ----------------------------------------------------------------------------- together


def test_supernet_reports_and_derives_the_whole_autofem():
    torch.manual_seed(0)
    net = AutoFEMSupernet()
    out = net(pyramid(SMALL, batch=2))
    assert shapes(out) == [(2, C, h, w) for h, w in SMALL]
    names = {n for n, _ in net.named_arch_parameters()}
    assert "fpn.blocks.P3.arch_beta" in names and "cpm.blocks.P3.arch_gamma" in names
    weights = net.arch_weights()
    assert set(weights["fpn.blocks.P4.alpha"]) == {"same", "td", "bu"}
    assert sum(weights["fpn.blocks.P4.beta"]["fusion"].values()) == pytest.approx(1.0)
    assert "cpm.blocks.P4.gamma" in weights
    assert len(weights) == 2 * len(LEVELS) + 2 * len(LEVELS)  # FPN alpha+beta, CPM alpha+gamma

    genotype = net.genotype()
    modules = [build_feature_module("autofem_fpn", C, genotype=genotype),
               build_feature_module("autofem_cpm", C, genotype=genotype)]
    feats = pyramid()
    for module in modules:
        feats = module(feats)
    assert shapes(feats) == [(1, C, h, w) for h, w in PYRAMID_SIZES]
