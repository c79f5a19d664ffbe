"""Search strategies: the registry, pcdarts and top1_tree in isolation, the strategy rule of a
genotype, and a toy third strategy registered in a few lines and searched end to end."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

from asfd_cli.main import main
from genotypes import CellGenotype, Edge, Genotype, GenotypeError, GenotypeMeta, NodeGenotype
from genotypes.io import save_genotype
from nas_search.cell import SearchCell, edge_index
from nas_search.gumbel import scale_by_sample
from nas_search.search import SearchConfig, search
from nas_search.strategies import (
    STRATEGIES, SearchStrategy, get_strategy, list_strategies, register_strategy,
    strategy_problems, validate_for_strategy,
)
from nas_toys import CONV_OPS, ToyTask


class Sampler:
    """A stand-in for the cell: its mode, and a recorded 'Gumbel' draw that picks ``index``."""

    def __init__(self, training: bool, index: int = 0):
        self.training, self.index, self.drawn = training, index, []

    def gumbel_sample(self, logits, scale_by_length=True):
        self.drawn.append(scale_by_length)
        return torch.nn.functional.one_hot(torch.tensor(self.index), len(logits)).float(), \
            self.index

    scale_by_sample = staticmethod(scale_by_sample)


def edges_called(values):
    """``edge(i) = values[i]``, recording the parents run."""
    called = []

    def edge(i):
        called.append(i)
        return values[i]
    return edge, called


@pytest.fixture
def uniform_dag(monkeypatch):
    """A toy third strategy: a node is the mean of all its edges, a derived node keeps the parent
    of strongest op. Registered for this test only."""
    monkeypatch.setattr(STRATEGIES, "_items", dict(STRATEGIES._items))

    @register_strategy
    class UniformDAG(SearchStrategy):
        name = "uniform_dag"
        edges_per_node = 1

        def node_forward(self, gamma, edge, sampler):
            return sum(edge(i) for i in range(len(gamma))) / len(gamma)

        def derive_parents(self, gamma, op_strength, top_k):
            return [max(range(len(gamma)), key=lambda i: op_strength[i])]

    return UniformDAG


# --------------------------------------------------------------------------------- registry
def test_registry_lists_the_two_algorithms_and_names_unknown_ones():
    assert {"pcdarts", "top1_tree"} <= set(list_strategies())
    assert get_strategy("top1_tree").name == "top1_tree"
    strategy = get_strategy("pcdarts")
    assert get_strategy(strategy) is strategy
    with pytest.raises(KeyError, match=r"unknown search strategy 'darts'; registered: "
                                       r"\[.*'pcdarts', 'top1_tree'"):
        get_strategy("darts")
    with pytest.raises(KeyError, match="unknown search strategy 'darts'"):
        SearchCell(4, 2, CONV_OPS, "darts", "cat_all")
    import nas_search  # its names import on first use (the registry alone loads no torch)

    assert nas_search.get_strategy is get_strategy and nas_search.SearchCell is SearchCell
    with pytest.raises(AttributeError, match="no attribute 'Cell'"):
        nas_search.Cell


# ----------------------------------------------------------------------------- algorithms
def test_pcdarts_node_is_the_softmax_weighted_sum_of_every_edge():
    gamma, values = torch.tensor([0.3, -1.0, 2.0]), torch.tensor([1.0, 10.0, 100.0])
    edge, called = edges_called(values)
    out = get_strategy("pcdarts").node_forward(gamma, edge, Sampler(training=True))
    assert called == [0, 1, 2]
    torch.testing.assert_close(out, (torch.softmax(gamma, 0) * values).sum())


def test_pcdarts_derives_the_top_k_parents_by_edge_normalised_strength():
    pcdarts = get_strategy("pcdarts")
    gamma = torch.tensor([0.0, 1.0, 1.0, 0.5])  # softmax ~ 1 : 2.72 : 2.72 : 1.65
    assert pcdarts.derive_parents(gamma, [1.0, 0.2, 0.9, 0.9], top_k=2) == [2, 3]
    assert pcdarts.derive_parents(gamma, [1.0] * 4, top_k=1) == [1]  # tie: the lower parent
    assert pcdarts.derive_parents(gamma[:1], [1.0], top_k=2) == [0]


def test_top1_tree_runs_one_edge_sampled_in_training_and_argmax_in_eval():
    tree = get_strategy("top1_tree")
    gamma, values = torch.tensor([0.0, 3.0, 1.0]), torch.tensor([1.0, 10.0, 100.0])
    edge, called = edges_called(values)
    sampler = Sampler(training=True, index=2)
    assert tree.node_forward(gamma, edge, sampler) == 100.0
    assert called == [2] and sampler.drawn == [True]  # length-scaled gradient (Eq. 5)
    edge, called = edges_called(values)
    assert tree.node_forward(gamma, edge, Sampler(training=False)) == 10.0 and called == [1]
    assert tree.derive_parents(gamma, [0.0, 0.0, 1.0], top_k=2) == [1]


# ----------------------------------------------------------------------- genotype rule
def two_edge_genotype(mode: str) -> Genotype:
    cell = CellGenotype((NodeGenotype((Edge(0, "conv_1x1"),)),
                         NodeGenotype((Edge(0, "conv_1x1"), Edge(1, "conv_1x3")))))
    return Genotype(cells={"c": cell}, meta=GenotypeMeta(mode=mode))


def test_strategy_rule_of_a_genotype():
    assert strategy_problems(two_edge_genotype("pcdarts")) == []
    assert strategy_problems(two_edge_genotype("")) == []  # no strategy recorded
    assert strategy_problems(two_edge_genotype("top1_tree")) == [
        "cells.c.nodes[1].edges: a top1_tree genotype has exactly 1 edge per node, node 2 has 2"]
    with pytest.raises(GenotypeError, match=r"^g\.yaml: meta\.mode: unknown search strategy "
                                            r"'random'; registered: .*'pcdarts', 'top1_tree'"):
        validate_for_strategy(two_edge_genotype("random"), source="g.yaml")


def test_cli_validate_applies_the_strategy_rule(tmp_path, capsys):
    path = save_genotype(two_edge_genotype("top1_tree"), tmp_path / "g.yaml")
    assert main(["genotypes", "validate", str(path)]) == 2
    assert "a top1_tree genotype has exactly 1 edge per node, node 2 has 2" in \
        capsys.readouterr().err
    save_genotype(two_edge_genotype("pcdarts"), path)
    assert main(["genotypes", "validate", str(path)]) == 0
    assert "edges per node against strategy pcdarts" in " ".join(capsys.readouterr().out.split())


def test_cli_search_mode_choices_are_the_registered_strategies(capsys):
    with pytest.raises(SystemExit):
        main(["search", "cpm", "-o", "unused", "--mode", "darts"])
    assert "invalid choice: 'darts' (choose from 'pcdarts', 'top1_tree')" in \
        capsys.readouterr().err


def test_face_search_config_names_the_registered_strategies():
    from detectors.workflows.search_task import FaceSearchConfig

    with pytest.raises(ValueError, match=r"mode: unknown search strategy 'darts'; registered"):
        FaceSearchConfig(mode="darts")


# ------------------------------------------------------------------------ a third strategy
def test_a_toy_strategy_registered_in_a_few_lines_runs_a_search(uniform_dag, tmp_path):
    assert "uniform_dag" in list_strategies()
    cell = SearchCell(4, 3, CONV_OPS, "uniform_dag", "cat_leaf", k=1)
    seen = {e: [] for e in range(len(cell.edges))}
    for e, mixed in enumerate(cell.edges):
        mixed.register_forward_hook(lambda m, a, out, e=e: seen[e].append(out))
    node3 = []
    cell.project.register_forward_pre_hook(lambda m, args: node3.append(args[0][-1]))
    cell(torch.randn(2, 4, 5, 5))
    assert all(len(v) == 1 for v in seen.values()) and cell.last_path is None
    torch.testing.assert_close(node3[0], sum(seen[edge_index(i, 3)][0] for i in range(3)) / 3)

    result = search(ToyTask(mode="uniform_dag", op_sampling=False),
                    SearchConfig(epochs=2, warmup_epochs=1, log_every=100), tmp_path)
    assert result.genotype.meta.mode == "uniform_dag"
    assert all(len(node.edges) == 1 for node in result.genotype.cells["cell0"].nodes)


def test_the_engine_checks_a_derived_genotype_against_its_strategy(uniform_dag, tmp_path):
    uniform_dag.edges_per_node = 2  # a rule its derivation (one parent) breaks
    with pytest.raises(GenotypeError, match="a uniform_dag genotype has exactly 2 edges per "
                                            "node, node 1 has 1"):
        search(ToyTask(mode="uniform_dag", op_sampling=False),
               SearchConfig(epochs=1, warmup_epochs=0, log_every=100), tmp_path)


def test_fpn_search_fuses_paths_through_its_strategy(uniform_dag):
    from search_spaces.fpn import AutoFEMFPNSearch

    level = AutoFEMFPNSearch(4, k=1, strategy="uniform_dag").blocks["P4"]
    terms = [torch.full((1, 4, 2, 2), v) for v in (1.0, 2.0, 6.0)]
    torch.testing.assert_close(level.combine(terms), torch.full((1, 4, 2, 2), 3.0))
    pcdarts = AutoFEMFPNSearch(4, k=1).blocks["P4"]
    torch.testing.assert_close(pcdarts.combine(terms),
                               sum(w * t for w, t in zip(pcdarts.fusion_weights(), terms)))
    with pytest.raises(ValueError, match="'top1_tree' samples a sub-set of the paths"):
        AutoFEMFPNSearch(4, k=1, strategy="top1_tree")


def test_search_cost_bench_compares_the_strategies(capsys):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
    import search_cost

    search_cost.main(["--channels", "4", "--size", "6", "--batch", "1", "--k", "1",
                      "--nodes", "3", "--repeats", "1", "--op-set", "S_FPN",
                      "--strategies", "pcdarts", "top1_tree"])
    rows = [line.split() for line in capsys.readouterr().out.splitlines()[2:]]
    assert [(r[1], r[2]) for r in rows] == [("pcdarts", "6"), ("top1_tree", "3"),
                                            ("pcdarts/top1_tree", "2.0x")]


def test_search_cost_breakdown_adds_up_to_the_saved_bytes(capsys):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
    import search_cost

    search_cost.main(["--channels", "4", "--size", "6", "--batch", "1", "--k", "1",
                      "--nodes", "3", "--repeats", "1", "--op-set", "S_FPN",
                      "--strategies", "pcdarts", "top1_tree", "--breakdown"])
    lines = capsys.readouterr().out.splitlines()
    totals = {line.split()[1]: float(line.split()[3]) for line in lines[2:4]}
    start = next(i for i, line in enumerate(lines) if line.strip().startswith("saved by")) + 1
    columns = [line[38:].split()[:2] for line in lines[start:]]
    for j, name in enumerate(("pcdarts", "top1_tree")):
        assert sum(float(c[j]) for c in columns) == pytest.approx(
            totals[name], abs=0.01 * len(columns))  # each cell is rounded to 0.01 MiB
