"""Rendering of genotypes, the search-history plot, PR / ROC plots, and their CLI commands."""
from __future__ import annotations

import dataclasses
import json
import math
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from asfd_cli.main import main
from detectors.evaluation.fddb_eval import tpr_at
from genotypes import load_genotype
from search_spaces.schemas import LEGEND_PATHS, LEVELS, fpn_of
from visualize.history import (
    MIN_Y_SPAN, HistoryRecord, column_label, final_table, grid_positions, history_figure,
    history_panels, load_history, panel_title, plot_history, value_limits,
)
from visualize.plots import plot_pr_curves, plot_roc
from visualize.render import genotype_to_dot, render_genotype


def ops_of(genotype) -> set[str]:
    ops = {e.op for c in genotype.cells.values() for n in c.nodes for e in n.edges}
    if fpn_of(genotype):
        ops |= {op for lv in fpn_of(genotype).levels.values() for op in lv.paths().values()}
    return ops


def assert_drawn_png(path, min_size=(200, 200)) -> None:
    """A readable PNG of at least ``min_size`` with something drawn on it."""
    with Image.open(path) as im:
        assert im.format == "PNG" and im.size >= min_size
        gray = np.asarray(im.convert("L"), dtype=float)
    assert (gray < 200).mean() > 0.005  # not a blank canvas


# -------------------------------------------------------------------------------- rendering
@pytest.mark.parametrize("name", ["asfd_paper_like", "pcdarts_example"])
def test_svg_shows_every_op_cell_and_level(name, tmp_path):
    g = load_genotype(name)
    svg = render_genotype(g, tmp_path / "g.svg").read_text()
    assert svg.lstrip().startswith("<?xml") and "</svg>" in svg
    for text in ops_of(g) | {f"cell {c}" for c in g.cells}:
        assert text in svg, text
    if fpn_of(g):
        for lv in LEVELS:
            assert f">{lv}<" in svg and f">C{lv[1:]}<" in svg
        assert "β=0.58" in svg  # P2's top-down fusion weight


def test_dot_structure_of_a_dag_cell():
    dot = genotype_to_dot(load_genotype("pcdarts_example"))
    # every chosen edge of P4, with its op; the output collects every node under cat_all
    for parent, node, op in [(0, 1, "sep_conv_3x3"), (1, 2, "dil_conv_3x3_r2"),
                             (2, 4, "conv_1x5_5x1")]:
        assert f"cell_P4_{parent} -> cell_P4_{node} [label={op}]" in dot
    assert sum(f"cell_P4_{j} -> cell_P4_out" in dot for j in range(1, 5)) == 4


def test_fpn_edges_come_from_neighbour_levels():
    dot = genotype_to_dot(load_genotype("asfd_paper_like"))
    assert 'fpn_C3 -> fpn_P2 [label="td: dil_conv_3x3_r2\\nβ=0.58"' in dot
    assert 'fpn_C6 -> fpn_P7 [label="bu: sep_conv_5x5\\nβ=0.56"' in dot
    assert 'fpn_C7 -> fpn_P7 [label="same: conv_1x1\\nβ=0.44"' in dot
    assert "fpn_C8" not in dot and "fpn_C1" not in dot


def test_graph_has_a_title_and_a_legend(tmp_path):
    g = load_genotype("asfd_paper_like")
    dot = genotype_to_dot(g, name="asfd_paper_like")
    assert 'label="asfd_paper_like\\nautofem top1_tree" labelloc=t' in dot
    assert "subgraph cluster_legend" in dot
    for path, color, style in [("same", "black", "dotted"), ("td", '"#1f5fbf"', "solid"),
                               ("bu", '"#2a8a2a"', "dashed")]:
        assert (f"legend_{path}_from -> legend_{path}_to [label=\"{LEGEND_PATHS[path]}\" "
                f"color={color}") in dot and f"style={style}]" in dot
    assert 'legend_leaf [label="leaf (no successor)" peripheries=2]' in dot
    assert "legend_cascade_from -> legend_cascade_to" in dot
    svg = render_genotype(g, tmp_path / "g.svg", name="asfd_paper_like").read_text()
    assert ">asfd_paper_like<" in svg and ">legend<" in svg
    assert ">top&#45;down (from level i+1)<" in svg
    cells_only = genotype_to_dot(dataclasses.replace(g, sections={}))  # no paths to explain
    assert "legend_leaf" in cells_only and "legend_td" not in cells_only
    assert "legend_cascade" not in cells_only and "asfd_paper_like" not in cells_only


def test_png_and_pdf_render(tmp_path):
    g = load_genotype("pcdarts_example")
    assert_drawn_png(render_genotype(g, tmp_path / "g.png"))
    assert render_genotype(g, tmp_path / "g.pdf").read_bytes().startswith(b"%PDF")


def test_render_rejects_unknown_suffix(tmp_path):
    with pytest.raises(ValueError, match=r"suffix must be one of \.svg, \.png, \.pdf"):
        render_genotype(load_genotype("pcdarts_example"), tmp_path / "g.jpg")


def test_render_without_dot_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(RuntimeError, match="`dot` executable was not found"):
        render_genotype(load_genotype("pcdarts_example"), tmp_path / "g.svg")


# ---------------------------------------------------------------------------------- history
def fake_history_lines() -> list[dict]:
    def alpha(p):  # two edges of a cell; edge 0->2 only appears from epoch 1 on
        return {"0->1": {"conv_1x1": p, "sep_conv_3x3": 1 - p}}

    return [
        {"epoch": 0, "step": 10, "tau": 10.0, "metrics": {"loss": 2.0},
         "arch_weights": {"cpm.P3.alpha": alpha(0.5), "cpm.P3.gamma": {"node2": {"0": 0.5,
                                                                                "1": 0.5}},
                          "fpn.beta": {"P2": {"same": 0.5, "td": 0.5}}}},
        {"epoch": 1, "step": 20, "tau": 5.0,
         "arch_weights": {"cpm.P3.alpha": alpha(0.6) | {"0->2": {"conv_1x3": 1.0}},
                          "cpm.P3.gamma": {"node2": {"0": 0.3, "1": 0.7}}}},
        {"epoch": 2, "step": 30, "tau": 1.0,
         "arch_weights": {"cpm.P3.alpha": alpha(0.9) | {"0->2": {"conv_1x3": 1.0}},
                          "cpm.P3.gamma": {"node2": {"0": 0.1, "1": 0.9}}}},
    ]


@pytest.fixture
def run_dir(tmp_path):
    lines = fake_history_lines()
    resumed_duplicate = lines[1]  # a resumed run logs epoch 1 again: the later line wins
    stale = json.loads(json.dumps(resumed_duplicate))
    stale["tau"] = 99.0
    text = "\n".join(json.dumps(x) for x in [lines[0], stale, lines[2], resumed_duplicate])
    (tmp_path / "history.jsonl").write_text(text + "\n\n")
    return tmp_path


def test_load_history(run_dir):
    history = load_history(run_dir)
    assert [r.epoch for r in history] == [0, 1, 2]
    assert [r.tau for r in history] == [10.0, 5.0, 1.0]
    assert history[0].metrics == {"loss": 2.0}
    assert load_history(run_dir / "history.jsonl") == history


def test_load_history_errors_name_the_line(tmp_path):
    (tmp_path / "history.jsonl").write_text('{"epoch": 0}\n{"epoch": 1,,}\n')
    with pytest.raises(ValueError, match=r"history\.jsonl:2: invalid JSON"):
        load_history(tmp_path)
    (tmp_path / "history.jsonl").write_text('{"step": 3}\n')
    with pytest.raises(ValueError, match=r"history\.jsonl:1: expected an object with an "
                                         r"integer 'epoch'"):
        load_history(tmp_path)
    with pytest.raises(FileNotFoundError):
        load_history(tmp_path / "missing")


def test_history_panels(run_dir):
    panels = history_panels(load_history(run_dir))
    assert [(p.param, p.row) for p in panels] == [
        ("cpm.P3.alpha", "0->1"), ("cpm.P3.gamma", "node2"), ("fpn.beta", "P2"),
        ("cpm.P3.alpha", "0->2")]
    first = panels[0]
    np.testing.assert_allclose(first.epochs, [0, 1, 2])
    np.testing.assert_allclose(first.series["conv_1x1"], [0.5, 0.6, 0.9])
    late = panels[3].series["conv_1x3"]  # the row absent at epoch 0 is NaN there
    assert math.isnan(late[0]) and list(late[1:]) == [1.0, 1.0]
    fpn = panels[2].series["td"]
    assert fpn[0] == 0.5 and np.isnan(fpn[1:]).all()
    only_gamma = history_panels(load_history(run_dir), params=["gamma"])
    assert [(p.param, p.row) for p in only_gamma] == [("cpm.P3.gamma", "node2")]


def test_plot_history_writes_a_png(run_dir, tmp_path):
    out = plot_history(load_history(run_dir), tmp_path / "h.png")
    assert_drawn_png(out, min_size=(600, 200))
    with pytest.raises(ValueError, match="no architecture weights match 'nothing'"):
        plot_history(load_history(run_dir), tmp_path / "x.png", params="nothing")


def test_panel_titles_name_level_module_and_choice():
    cpm, fpn = "feature_module.1.blocks.P3", "feature_module.0.blocks.P4"
    assert panel_title(f"{cpm}.gamma", "node2") == "P3 cell, node 2 parent"
    assert panel_title(f"{cpm}.alpha", "0->2") == "P3 cell, edge 0→2 op"
    assert panel_title(f"{fpn}.alpha", "td") == "P4 FPN, top-down path op"
    assert panel_title(f"{fpn}.beta", "fusion") == "P4 FPN, path fusion"
    assert panel_title("cell.arch_gamma", "node3") == "cell, node 3 parent"  # no level
    assert panel_title("head.delta", "r") == "head.delta r"  # an unknown kind keeps its names
    assert column_label(f"{cpm}.gamma", "0") == "node 0"
    assert column_label(f"{fpn}.beta", "bu") == "bottom-up"
    assert column_label(f"{cpm}.alpha", "conv_1x1") == "conv_1x1"


def test_value_limits_fit_the_data():
    lo, hi = value_limits([np.array([0.083, 0.086]), np.array([0.084, math.nan])])
    assert 0.08 < lo < 0.083 and 0.086 < hi < 0.09
    lo, hi = value_limits([np.array([0.5, 0.5])])  # constant: a MIN_Y_SPAN window around it
    assert hi - lo == pytest.approx(MIN_Y_SPAN) and (lo + hi) / 2 == pytest.approx(0.5)
    assert value_limits([np.array([math.nan])]) == (0.0, 1.0)


def test_grid_positions_start_groups_on_new_rows():
    assert grid_positions([5, 5], 6) == [(0, c) for c in range(5)] + [(1, c) for c in range(5)]
    assert grid_positions([2, 3], 6) == [(0, 0), (0, 1), (0, 2), (0, 3), (0, 4)]  # it fits
    assert grid_positions([1, 1, 1, 1], 3) == [(0, 0), (0, 1), (0, 2), (1, 0)]
    wrapped = grid_positions([1, 8], 3)  # a wide group starts a row, then wraps
    assert wrapped[1] == (1, 0) and wrapped[-1] == (3, 1)


def cell_history(nodes: int = 6, epochs: int = 4) -> list[HistoryRecord]:
    """A CPM search's log: six levels, parent probabilities near uniform that drift apart."""
    rng = np.random.default_rng(0)
    records = []
    for e in range(epochs):
        weights = {}
        for level in LEVELS:
            gamma = {}
            for j in range(1, nodes + 1):
                p = np.full(j, 1 / j) + rng.normal(0, 0.004 * e, j)
                gamma[f"node{j}"] = {str(i): float(v) for i, v in enumerate(p / p.sum())}
            weights[f"feature_module.1.blocks.{level}.gamma"] = gamma
        records.append(HistoryRecord(epoch=e, arch_weights=weights))
    return records


def test_history_figure_draws_every_level_with_one_legend_and_data_limits():
    history = cell_history()
    fig = history_figure(history)
    curves, heat = fig.subfigs
    drawn = [ax for ax in curves.axes if ax.axison]
    # 6 levels x nodes 2..6 (node 1 has one parent, always 1.0): all 30, more than the old 24
    assert len(drawn) == 30
    assert {ax.get_title() for ax in drawn} == {f"{lv} cell, node {j} parent"
                                                for lv in LEVELS for j in range(2, 7)}
    assert "6 single-candidate rows (always 1.0) not drawn" in curves.get_suptitle()
    assert all(ax.get_legend() is None for ax in fig.axes)
    assert len(curves.legends) == 1 and len(fig.legends) == 0
    assert [t.get_text() for t in curves.legends[0].get_texts()] == [f"node {i}"
                                                                    for i in range(6)]
    for ax in drawn:  # y fits the curves, not 0-1
        values = np.concatenate([line.get_ydata() for line in ax.get_lines()])
        lo, hi = ax.get_ylim()
        assert lo <= values.min() and values.max() <= hi
        assert hi - lo < 0.2
    images = [ax for ax in heat.axes if ax.get_images()]
    assert [ax.get_title() for ax in images] == [f"{lv} cell node parents" for lv in LEVELS]
    assert images[0].get_images()[0].get_array().shape == (5, 6)  # nodes 2..6 x parents 0..5
    assert "epoch 3" in heat.get_suptitle()


def test_history_figure_gives_each_fpn_level_a_row():
    ops = ["conv_1x1", "sep_conv_3x3"]
    records = []
    for e in range(2):
        weights = {}
        for i, level in enumerate(LEVELS):
            paths = ["same"] + (["td"] if i < 5 else []) + (["bu"] if i > 0 else [])
            prefix = f"feature_module.0.blocks.{level}"
            weights[f"{prefix}.alpha"] = {p: {ops[0]: 0.5 + 0.01 * e, ops[1]: 0.5 - 0.01 * e}
                                          for p in paths}
            weights[f"{prefix}.beta"] = {"fusion": {p: 1 / len(paths) for p in paths}}
        records.append(HistoryRecord(epoch=e, arch_weights=weights))
    curves, heat = history_figure(records).subfigs
    rows: dict[str, set[int]] = {}
    for ax in (ax for ax in curves.axes if ax.axison):
        rows.setdefault(ax.get_title().split()[0], set()).add(ax.get_subplotspec().rowspan.start)
    assert rows == {lv: {i} for i, lv in enumerate(LEVELS)}  # one grid row per level
    titles = {ax.get_title() for ax in curves.axes}
    assert {"P4 FPN, top-down path op", "P2 FPN, same-level path op", "P7 FPN, path fusion"} \
        <= titles and "P7 FPN, top-down path op" not in titles
    assert [t.get_text() for t in curves.legends[0].get_texts()] == ops + [
        "same-level", "top-down", "bottom-up"]
    assert len([ax for ax in heat.axes if ax.get_images()]) == 12  # alpha and beta per level


def test_final_table_takes_the_last_record_and_drops_single_rows(run_dir):
    history = load_history(run_dir)
    epoch, rows, columns, values = final_table(history, "cpm.P3.alpha")
    assert (epoch, rows, columns) == (2, ["0->1"], ["conv_1x1", "sep_conv_3x3"])
    np.testing.assert_allclose(values, [[0.9, 0.1]])
    epoch, rows, _, values = final_table(history, "fpn.beta")  # logged at epoch 0 only
    assert (epoch, rows) == (0, ["P2"])


def test_history_figure_errors(run_dir):
    history = load_history(run_dir)
    with pytest.raises(ValueError, match="every row .* has a single candidate"):
        history_figure([HistoryRecord(0, arch_weights={"c.gamma": {"node1": {"0": 1.0}}})])
    with pytest.raises(ValueError, match="ncols must be at least 1"):
        history_figure(history, ncols=0)


def test_visualize_does_not_import_the_engine():
    code = ("import sys, visualize.history, visualize.render, visualize.plots; "
            "print(sorted(m for m in ('nas_search', 'torch', 'detectors') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout
    assert out.strip() == "[]"


# ------------------------------------------------------------------------------ PR and ROC
def test_pr_curves_png(tmp_path):
    recall = np.linspace(0, 0.9, 50)
    curves = {name: (1 - recall * k, recall, ap)
              for name, k, ap in [("Easy", 0.1, 0.95), ("Medium", 0.3, 0.9), ("Hard", 0.8, 0.7)]}
    assert_drawn_png(plot_pr_curves(curves, tmp_path / "pr.png", title="WIDER val"))
    with pytest.raises(ValueError, match="curve 'Bad'"):
        plot_pr_curves({"Bad": (np.ones(3), np.ones(4), 0.5)}, tmp_path / "bad.png")


def test_roc_png_and_tpr_at(tmp_path):
    fp = np.array([0, 10, 500, 1000, 2000])
    tpr = np.array([0.0, 0.5, 0.9, 0.95, 0.97])
    assert tpr_at(fp, tpr, 1000) == 0.95
    assert tpr_at(fp, tpr, 600) == 0.9
    assert tpr_at(fp + 5, tpr, 1) == 0.0
    curves = {"discrete": (fp, tpr, 0.95), "continuous": (fp, tpr * 0.8, 0.76)}
    assert_drawn_png(plot_roc(curves, tmp_path / "roc.png", report_fp=1000))


# -------------------------------------------------------------------------------------- CLI
def test_cli_render(tmp_path, capsys):
    out = tmp_path / "paper.svg"
    assert main(["render", "asfd_paper_like", "-o", str(out)]) == 0
    assert str(out) in capsys.readouterr().out
    assert "dil_conv_5x5_r2" in out.read_text() and ">asfd_paper_like<" in out.read_text()
    assert main(["render", "no_such_genotype", "-o", str(out)]) == 2
    assert "no shipped genotype" in capsys.readouterr().err


def test_cli_plot_history(run_dir, capsys):
    assert main(["plot-history", str(run_dir), "--params", "alpha"]) == 0
    assert_drawn_png(run_dir / "history.png")
    assert "history.png" in capsys.readouterr().out
    assert main(["plot-history", str(run_dir), "--ncols", "0"]) == 2
    assert "ncols must be at least 1" in capsys.readouterr().err


def test_render_refuses_a_huge_cell_unless_lifted(tmp_path, capsys):
    from genotypes import (
        CellGenotype, Edge, Genotype, GenotypeError, GenotypeLimits, GenotypeMeta, NodeGenotype,
        save_genotype,
    )
    from visualize.render import build_graph

    chain = CellGenotype(tuple(NodeGenotype((Edge(j - 1, "conv_1x1"),)) for j in range(1, 101)))
    g = Genotype(cells={"c": chain}, meta=GenotypeMeta(mode="top1_tree"))
    with pytest.raises(GenotypeError, match="100 nodes, above the cap of 64 per cell"):
        render_genotype(g, tmp_path / "big.svg")  # dot would take ~25 s
    assert "cell_c_100" in build_graph(g, limits=GenotypeLimits(max_nodes=None)).source
    path = save_genotype(g, tmp_path / "big.yaml")
    assert main(["render", str(path), "--out", str(tmp_path / "big.svg")]) == 2
    assert "--max-nodes 0" in capsys.readouterr().err and not (tmp_path / "big.svg").exists()
