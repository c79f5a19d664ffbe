"""SearchCell (PC-DARTS DAG / top-1 Gumbel tree strategies), derivation, FixedCell, Supernet
plumbing."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from genotypes.schema import CellGenotype, Edge, NodeGenotype
from nas_search.cell import (
    FixedCell, SearchCell, SlotProjection, best_op, edge_index, node_edges, num_edges,
)
from nas_search.gumbel import gumbel_noise
from nas_search.runtime import ActivationMeter
from nas_search.strategies import get_strategy
from nas_toys import CONV_OPS, ToySupernet

OPS3 = (*CONV_OPS, "test_double")


def make_cell(**kwargs) -> SearchCell:
    torch.manual_seed(0)
    args = dict(channels=4, n_nodes=3, op_names=CONV_OPS, strategy="top1_tree", concat="cat_all",
                k=1)
    cell = SearchCell(**(args | kwargs))
    cell.gumbel_generator = torch.Generator().manual_seed(1)
    return cell


def record_edges(cell: SearchCell) -> dict[int, list[torch.Tensor]]:
    """Edge number -> outputs of its MixedOp, one per call."""
    seen: dict[int, list[torch.Tensor]] = {e: [] for e in range(len(cell.edges))}
    for e, mixed in enumerate(cell.edges):
        mixed.register_forward_hook(lambda m, a, out, e=e: seen[e].append(out))
    return seen


def record_projection(cell: SearchCell) -> dict[str, object]:
    """The node tensors and slot indices the projection receives, and its conv output."""
    got: dict[str, object] = {}
    cell.project.register_forward_pre_hook(lambda m, args: got.update(xs=args[0], slots=args[1]))
    cell.project.bn.register_forward_pre_hook(lambda m, args: got.update(conv=args[0]))
    return got


def test_edge_numbering_covers_every_edge_once():
    n = 5
    rows = [edge_index(i, j) for j in range(1, n + 1) for i in range(j)]
    assert rows == list(range(num_edges(n)))
    assert [list(range(num_edges(n)))[node_edges(j)] for j in (1, 3)] == [[0], [3, 4, 5]]
    with pytest.raises(ValueError):
        edge_index(3, 3)


def test_best_op_skips_none_ops():
    assert best_op([0.6, 0.3, 0.1], ("none", "a", "b")) == 1
    with pytest.raises(ValueError, match="none-op"):
        best_op([1.0], ("zero",))


def test_top1_tree_runs_exactly_one_incoming_edge_per_node_with_weight_one():
    cell = make_cell(n_nodes=4)
    calls, got = record_edges(cell), record_projection(cell)
    cell(torch.randn(2, 4, 5, 5))
    parents = [node.edges[0].parent for node in cell.last_path.nodes]
    for j in range(1, 5):
        ran = [i for i in range(j) if calls[edge_index(i, j)]]
        assert ran == [parents[j - 1]] and len(calls[edge_index(ran[0], j)]) == 1
        # node value (projection input) is the edge output itself: weight exactly 1.0
        assert torch.equal(got["xs"][j - 1], calls[edge_index(ran[0], j)][0])
    assert sum(map(len, calls.values())) == 4  # n of the n(n+1)/2 = 10 edges


def test_slot_projection_with_autograd_sums_slot_convs_and_saves_no_concatenation():
    torch.manual_seed(0)
    project = SlotProjection(n_slots=3, channels=4).eval()
    xs = [torch.randn(2, 4, 5, 5, requires_grad=True) for _ in range(2)]
    with torch.no_grad():
        expected = project(xs, [0, 2])
    with ActivationMeter() as meter:
        got = project(xs, [0, 2])
    torch.testing.assert_close(got, expected)
    assert not any(key.endswith(" 8 ch") for key in meter.saved_by)  # the two slots stacked
    upstream = torch.randn_like(got)
    grads = torch.autograd.grad((got * upstream).sum(), [*xs, project.conv.weight])
    stacked = project.bn(F.conv2d(torch.cat(xs, dim=1), project.slot_weight([0, 2])))
    expected_grads = torch.autograd.grad((stacked * upstream).sum(), [*xs, project.conv.weight])
    torch.testing.assert_close(grads, expected_grads)


def test_top1_tree_cell_saves_each_node_once_for_the_backward():
    cell, x = make_cell(n_nodes=4, k=2), torch.randn(2, 4, 5, 5)
    with ActivationMeter(exclude=cell.parameters()) as meter:
        cell(x)
    node_bytes = x.numel() * 4
    # the node values w_i * MixedOp(x_i), saved once for the parent weight's gradient and the
    # projection alike; nothing n-slot wide (4 nodes x 4 channels)
    assert meter.saved_by["_ScaleBySampleBackward, 4 ch"] == 4 * node_bytes
    assert not any(key.endswith(" 16 ch") for key in meter.saved_by)


def test_top1_tree_parent_gradient_is_softmax_gradient_times_parent_count():
    cell, tau = make_cell(), 1.7
    cell.temperature = tau
    with torch.no_grad():
        cell.arch_gamma.copy_(torch.tensor([0.0, 0.4, -0.3, 0.2, 0.9, -0.5]))
    calls = record_edges(cell)
    out = cell(torch.randn(2, 4, 5, 5))
    edge_out = {j: calls[edge_index(node.edges[0].parent, j)][0]
                for j, node in enumerate(cell.last_path.nodes, start=1)}
    loss = (out * torch.randn_like(out)).sum()
    grad_gamma, *grad_y = torch.autograd.grad(loss, [cell.arch_gamma, *edge_out.values()])
    replay = torch.Generator().manual_seed(1)
    for j, gy in zip(edge_out, grad_y):
        gamma = cell.arch_gamma.detach()[node_edges(j)]
        p = torch.softmax((gamma + gumbel_noise((j,), replay)) / tau, 0)
        i = cell.last_path.nodes[j - 1].edges[0].parent
        assert i == int(p.argmax())
        upstream = torch.zeros(j)
        upstream[i] = (gy * edge_out[j]).sum()  # dL/dw_i; the other weights are unused
        expected = j * p * (upstream - (p * upstream).sum()) / tau
        torch.testing.assert_close(grad_gamma[node_edges(j)], expected)
    assert grad_gamma[node_edges(3)].abs().sum() > 0


def test_cat_leaf_projects_exactly_the_leaves_of_the_sampled_tree():
    cell = make_cell(n_nodes=4, concat="cat_leaf", op_names=OPS3)
    with torch.no_grad():  # strongly prefer the chain 0 -> 1 -> 2 -> 3, node 4 from 0
        cell.arch_gamma.copy_(torch.tensor([0, 0, 9, 0, 0, 9, 9, 0, 0, 0.]))
    calls, got = record_edges(cell), record_projection(cell)
    cell(torch.randn(2, 4, 5, 5))
    parents = [node.edges[0].parent for node in cell.last_path.nodes]
    assert parents == [0, 1, 2, 0]
    leaves = sorted(set(range(1, 5)) - set(parents))
    assert [s + 1 for s in got["slots"]] == leaves == [3, 4]
    nodes = {j: calls[edge_index(p, j)][0] for j, p in enumerate(parents, start=1)}
    for x, j in zip(got["xs"], leaves):
        assert torch.equal(x, nodes[j])
    zero_filled = torch.cat([nodes[j] if j in leaves else torch.zeros_like(nodes[j])
                             for j in range(1, 5)], dim=1)
    torch.testing.assert_close(got["conv"], F.conv2d(zero_filled, cell.project.conv.weight))


def test_pcdarts_node_is_the_edge_normalised_sum_of_all_incoming_edges():
    cell = make_cell(strategy="pcdarts", k=2)
    with torch.no_grad():
        cell.arch_gamma.normal_()
    calls, got = record_edges(cell), record_projection(cell)
    cell(torch.randn(2, 4, 5, 5))
    assert all(len(v) == 1 for v in calls.values())
    for j in range(1, 4):
        w = torch.softmax(cell.arch_gamma.detach()[node_edges(j)], 0)
        expected = sum(w[i] * calls[edge_index(i, j)][0] for i in range(j))
        torch.testing.assert_close(got["xs"][j - 1], expected)


def test_pcdarts_cat_leaf_uses_the_leaves_of_the_derived_dag():
    cell = make_cell(strategy="pcdarts", concat="cat_leaf", n_nodes=4, top_k=1)
    with torch.no_grad():  # top-1 parents: 1 <- 0, 2 <- 1, 3 <- 0, 4 <- 0: leaves 2, 3, 4
        cell.arch_gamma.copy_(torch.tensor([0, 0, 5, 5, 0, 0, 5, 0, 0, 0.]))
    got = record_projection(cell)
    cell(torch.randn(2, 4, 5, 5))
    assert cell.derive(1).leaves == (2, 3, 4)
    assert list(got["slots"]) == [1, 2, 3]


def test_derive_picks_argmax_ops_and_parents_by_edge_normalised_strength():
    cell = make_cell(op_names=OPS3)
    with torch.no_grad():
        cell.arch_alpha.zero_()
        cell.arch_alpha[edge_index(0, 1), 2] = 3.0  # test_double
        cell.arch_alpha[edge_index(1, 2), 1] = 3.0  # test_conv1
        cell.arch_alpha[edge_index(1, 3), 0] = 6.0  # peaked: strong edge
        cell.arch_alpha[edge_index(2, 3), 1] = 6.0
        # node 3: gamma prefers parent 0, whose op mixture is flat (weak)
        cell.arch_gamma.copy_(torch.tensor([0.0, 0.0, 0.5, 1.0, 0.9, 0.0]))
    tree = cell.derive()
    assert tree == CellGenotype((NodeGenotype((Edge(0, "test_double"),)),
                                 NodeGenotype((Edge(1, "test_conv1"),)),
                                 NodeGenotype((Edge(0, "test_conv3"),))), "cat_all")
    cell.strategy = get_strategy("pcdarts")
    dag = cell.derive(top_k=2)
    assert [n.parents for n in dag.nodes] == [(0,), (0, 1), (1, 2)]
    assert dag.nodes[2].edges == (Edge(1, "test_conv3"), Edge(2, "test_conv1"))
    assert [n.parents for n in cell.derive(top_k=5).nodes] == [(0,), (0, 1), (0, 1, 2)]


@pytest.mark.parametrize("training", [True, False])
def test_fixed_cell_reproduces_the_sampled_path_of_a_k1_search_cell(training):
    cell = make_cell(n_nodes=4, concat="cat_leaf", op_names=OPS3, op_sampling=True)
    with torch.no_grad():
        cell.arch_gamma.normal_()
        cell.project.bn.running_mean.normal_()
    cell.train(training)
    op_calls = [[0] * 3 for _ in cell.edges]
    for e, mixed in enumerate(cell.edges):
        for o, op in enumerate(mixed.ops):
            op.register_forward_hook(lambda *_, e=e, o=o: op_calls[e].__setitem__(o, 1))
    x = torch.randn(2, 4, 5, 5)
    y = cell(x)
    assert all(sum(c) <= 1 for c in op_calls)  # one op per executed edge
    fixed = FixedCell.from_search_cell(cell, cell.last_path).train(training)
    assert len(fixed.ops) == 4
    assert torch.equal(fixed(x), y)


def test_fixed_cell_sums_dag_edges_and_rejects_partial_channel_weights():
    genotype = CellGenotype((NodeGenotype((Edge(0, "test_double"),)),
                             NodeGenotype((Edge(0, "test_double"), Edge(1, "test_double")))),
                            "cat_leaf")
    fixed = FixedCell(4, genotype).eval()
    x = torch.randn(2, 4, 3, 3)
    with torch.no_grad():
        fixed.project.conv.weight.copy_(torch.eye(4).view(4, 4, 1, 1))
    torch.testing.assert_close(fixed(x), 6 * x / (1 + 1e-5) ** 0.5)  # node 2 = 2x + 2(2x)
    with pytest.raises(ValueError, match="partial channels"):
        FixedCell.from_search_cell(make_cell(k=2, n_nodes=2), genotype)
    with pytest.raises(ValueError, match="out of range"):
        FixedCell(4, CellGenotype((NodeGenotype((Edge(1, "test_conv1"),)),)))


def test_search_cell_rejects_unknown_strategies_and_concats():
    with pytest.raises(KeyError, match="unknown search strategy 'darts'; registered"):
        make_cell(strategy="darts")
    with pytest.raises(ValueError, match="unknown concat"):
        make_cell(concat="cat_some")


# --------------------------------------------------------------------------- Supernet
def test_arch_and_weight_parameters_are_disjoint_and_cover_the_model():
    net = ToySupernet(n_cells=2, mode="pcdarts", k=2)
    arch = dict(net.named_arch_parameters())
    assert sorted(arch) == [f"cells.{c}.arch_{p}" for c in (0, 1) for p in ("alpha", "gamma")]
    arch_ids = {id(p) for p in net.arch_parameters()}
    weight_ids = {id(p) for p in net.weight_parameters()}
    assert not arch_ids & weight_ids
    assert arch_ids | weight_ids == {id(p) for p in net.parameters()}


def test_supernet_reports_arch_weights_and_sets_sampling_state():
    net = ToySupernet(n_cells=2, n_nodes=3)
    table = net.arch_weights()
    assert sorted(table) == ["cells.0.alpha", "cells.0.gamma", "cells.1.alpha", "cells.1.gamma"]
    assert list(table["cells.0.alpha"]) == ["0->1", "0->2", "1->2", "0->3", "1->3", "2->3"]
    assert list(table["cells.1.gamma"]["node3"]) == ["0", "1", "2"]
    for row in [*table["cells.0.alpha"].values(), *table["cells.1.gamma"].values()]:
        assert sum(row.values()) == pytest.approx(1.0)
    gen = torch.Generator()
    net.set_temperature(0.25)
    net.set_gumbel_generator(gen)
    assert all(c.temperature == 0.25 and c.gumbel_generator is gen for c in net.cells)
