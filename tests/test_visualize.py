"""Rendering of genotypes, the search-history plot, PR / ROC plots, and their CLI commands."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest
from PIL import Image

from asfd_cli.main import main
from genotypes import LEVELS, load_genotype
from visualize.history import HistoryRecord, history_panels, load_history, plot_history
from visualize.plots import plot_pr_curves, plot_roc, tpr_at
from visualize.render import genotype_to_dot, render_genotype


def ops_of(genotype) -> set[str]:
    ops = {e.op for c in genotype.cells.values() for n in c.nodes for e in n.edges}
    if genotype.fpn:
        ops |= {op for lv in genotype.fpn.levels.values() for op in lv.paths().values()}
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
    if g.fpn:
        for lv in LEVELS:
            assert f">{lv}<" in svg and f">C{lv[1:]}<" in svg
        assert "β=0.58" in svg  # P2's top-down fusion weight


def test_dot_structure_of_a_dag_cell():
    dot = genotype_to_dot(load_genotype("pcdarts_example"))
    # every chosen edge, with its op; the output collects every node under cat_all
    for parent, node, op in [(0, 1, "sep_conv_3x3"), (1, 2, "dil_conv_3x3_r2"),
                             (2, 4, "conv_1x5_5x1")]:
        assert f"cell_cpm_{parent} -> cell_cpm_{node} [label={op}]" in dot
    assert sum(f"cell_cpm_{j} -> cell_cpm_out" in dot for j in range(1, 5)) == 4


def test_fpn_edges_come_from_neighbour_levels():
    dot = genotype_to_dot(load_genotype("asfd_paper_like"))
    assert 'fpn_C3 -> fpn_P2 [label="td: dil_conv_3x3_r2\\nβ=0.58"' in dot
    assert 'fpn_C6 -> fpn_P7 [label="bu: sep_conv_5x5\\nβ=0.56"' in dot
    assert 'fpn_C7 -> fpn_P7 [label="same: conv_1x1\\nβ=0.44"' in dot
    assert "fpn_C8" not in dot and "fpn_C1" not in dot


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
    out = plot_history(load_history(run_dir), tmp_path / "h.png", max_panels=3)
    assert_drawn_png(out, min_size=(600, 200))
    with pytest.raises(ValueError, match="no architecture weights match 'nothing'"):
        plot_history(load_history(run_dir), tmp_path / "x.png", params="nothing")


def test_plot_history_panel_grid(run_dir, tmp_path):
    history = [HistoryRecord(epoch=e, arch_weights={"a": {f"r{i}": {"x": 0.5, "y": 0.5}
                                                           for i in range(6)}})
               for e in range(2)]
    with Image.open(plot_history(history, tmp_path / "one.png", max_panels=1)) as one, \
            Image.open(plot_history(history, tmp_path / "six.png", ncols=3)) as six:
        assert six.size[0] == 3 * one.size[0] and six.size[1] == 2 * one.size[1]


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
    assert_drawn_png(plot_roc({"discrete": (fp, tpr), "continuous": (fp, tpr * 0.8)},
                              tmp_path / "roc.png"))


# -------------------------------------------------------------------------------------- CLI
def test_cli_render(tmp_path, capsys):
    out = tmp_path / "paper.svg"
    assert main(["render", "asfd_paper_like", "-o", str(out)]) == 0
    assert str(out) in capsys.readouterr().out
    assert "dil_conv_5x5_r2" in out.read_text()
    assert main(["render", "no_such_genotype", "-o", str(out)]) == 2
    assert "no shipped genotype" in capsys.readouterr().err


def test_cli_plot_history(run_dir, capsys):
    assert main(["plot-history", str(run_dir), "--params", "alpha"]) == 0
    assert_drawn_png(run_dir / "history.png")
    assert "history.png" in capsys.readouterr().out
