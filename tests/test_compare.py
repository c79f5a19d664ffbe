"""``asfd compare``: the cost probe, arms, resumable rows, and the Table 3 run on a micro budget."""
from __future__ import annotations

import csv
import dataclasses
from pathlib import Path

import pytest
import torch

from asfd_cli.main import main
from detectors.data.sources import DataSource
from detectors.data.synthetic import make_synthetic
from detectors.workflows.compare import (
    COMPARE_CSV, COMPARE_MD, TABLE3_ARMS, Arm, CompareRow, CompareSettings, append_row,
    genotype_summary, measure_step_cost, read_rows, seed_spread, spread_markdown,
)
from detectors.workflows.pipeline import load_pipeline_config
from detectors.workflows.search_task import FaceSearchConfig, FaceSearchTask
from genotypes.schema import CellGenotype, Edge, Genotype, NodeGenotype
from nas_search.runtime import ConfigError

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "configs" / "search_compare.yaml"



@pytest.fixture(scope="module")
def faces(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("faces")
    make_synthetic(root, 24, seed=4, size=(96, 72))
    return root


def test_tree_search_step_uses_less_activation_memory_than_pcdarts(faces):
    costs = {}
    for mode in ("pcdarts", "top1_tree"):
        config = FaceSearchConfig(mode=mode, n_nodes=6, channels=8, image_size=64, batch_size=2,
                                  base_fpn="none")
        task = FaceSearchTask(config, DataSource(str(faces)))
        torch.manual_seed(0)
        costs[mode] = measure_step_cost(task, task.build_supernet(), steps=1)
    assert costs["top1_tree"].activation_bytes > 0 and costs["top1_tree"].seconds > 0
    # 6 nodes: the DAG runs 21 mixed edges per cell, the tree 6
    assert costs["pcdarts"].activation_bytes > 1.5 * costs["top1_tree"].activation_bytes


def test_table3_arms_and_labels():
    assert len(TABLE3_ARMS) == 8 and len({a.name for a in TABLE3_ARMS}) == 8
    assert {a.n_nodes for a in TABLE3_ARMS if a.mode == "pcdarts"} == {4, 6}
    assert Arm("top1_tree", "cat_leaf", 6).method == "ours+cat_leaf"
    assert Arm("pcdarts", "cat_all", 4).method == "PC-DARTS"
    settings = load_pipeline_config(CONFIG, CompareSettings, "compare").settings
    assert settings.parsed_arms() == list(TABLE3_ARMS)
    with pytest.raises(ConfigError, match=r"compare.arms\[0\]"):
        CompareSettings(arms=[{"mode": "darts", "concat": "cat_all", "n_nodes": 4}]).parsed_arms()
    with pytest.raises(ConfigError, match="no budget 'huge'"):
        load_pipeline_config(CONFIG, CompareSettings, "compare", budget="huge")


def test_genotype_summary_counts_edges_and_outputs():
    tree = CellGenotype((NodeGenotype((Edge(0, "conv_1x1"),)), NodeGenotype((Edge(1, "conv_1x1"),)),
                         NodeGenotype((Edge(0, "sep_conv_3x3"),))), "cat_leaf")
    assert genotype_summary(Genotype(cells={"P2": tree, "P3": dataclasses.replace(
        tree, concat="cat_all")})) == (3.0, 2.5, "conv_1x1")


def test_rows_round_trip_through_the_csv(tmp_path):
    row = CompareRow("top1_tree-cat_leaf-6", "ours+cat_leaf", 6, "cat_leaf", 12.5, 0.25, 1.5,
                     6.0, 2.5, "conv_1x1", 0.6, 0.9, 0.8, 0.5)
    append_row(tmp_path, row)
    append_row(tmp_path, dataclasses.replace(row, arm="x", nodes=4))
    assert read_rows(tmp_path) == [row, dataclasses.replace(row, arm="x", nodes=4)]


def _row(arm: str, easy: float, medium: float, hard: float) -> CompareRow:
    return CompareRow(arm, "ours+cat_leaf", 6, "cat_leaf", 1.0, 0.1, 1.0, 6.0, 3.0, "conv_1x1",
                      0.6, easy, medium, hard)


def test_seed_spread_separates_arms_only_beyond_the_seed_range(tmp_path, capsys):
    seed0 = [_row("a", 0.30, 0.20, 0.10), _row("b", 0.10, 0.19, 0.05)]
    seed1 = [_row("a", 0.34, 0.16, 0.12), _row("b", 0.12, 0.22, 0.11)]
    a, b = seed_spread([seed0, seed1])
    assert (a.low["ap_easy"], a.high["ap_easy"]) == (0.30, 0.34)
    assert a.mean["ap_easy"] == pytest.approx(0.32)
    assert b.separated_from(a, "ap_easy")                       # 0.10-0.12 vs 0.30-0.34
    assert not b.separated_from(a, "ap_medium")                 # 0.19-0.22 vs 0.16-0.20
    assert not b.separated_from(a, "ap_hard")                   # 0.05-0.11 vs 0.10-0.12
    table = spread_markdown([a, b], 2)
    assert "| a | ours+cat_leaf | 0.300-0.340 |" in table and "(best)" in table
    assert table.rstrip().endswith("| yes/no/no |")
    with pytest.raises(ValueError, match="'b' is missing from run"):
        seed_spread([seed0, seed0[:1]])
    with pytest.raises(ValueError, match="at least two runs"):
        seed_spread([seed0])
    for i, rows in enumerate((seed0, seed1)):
        (tmp_path / str(i)).mkdir()
        for row in rows:
            append_row(tmp_path / str(i), row)
    assert main(["compare-seeds", str(tmp_path / "0"), str(tmp_path / "1"),
                 "-o", str(tmp_path / "spread.md")]) == 0
    assert (tmp_path / "spread.md").read_text() == table
    assert main(["compare-seeds", str(tmp_path / "0"), str(tmp_path / "missing")]) == 2
    assert "missing: no compare.csv" in " ".join(capsys.readouterr().err.split())


@pytest.mark.slow
def test_compare_micro_budget_fills_table3_and_resumes(faces, tmp_path, capsys):
    out = tmp_path / "cmp"
    args = ["compare", "--data", str(faces), "--out", str(out), "--budget", "micro"]
    assert main(args) == 0
    rows = read_rows(out)
    assert [r.arm for r in rows] == [a.name for a in TABLE3_ARMS]
    by_arm = {r.arm: r for r in rows}
    for n in (4, 6):  # same budget, same nodes: the tree step keeps fewer activations
        assert by_arm[f"pcdarts-cat_all-{n}"].mem_mb > by_arm[f"top1_tree-cat_all-{n}"].mem_mb
    assert all(r.edges == r.nodes for r in rows if r.method != "PC-DARTS")  # one parent a node
    assert all(r.outputs == r.nodes for r in rows if r.concat == "cat_all")
    assert all(r.outputs < r.nodes for r in rows if r.concat == "cat_leaf")
    assert all(0 <= r.ap_hard <= 1 and r.params_m > 0 for r in rows)
    table = (out / COMPARE_MD).read_text()
    assert table.count("| ours+cat_leaf |") == 3 and table.count("| PC-DARTS |") == 2
    printed = capsys.readouterr().out
    assert "PC-DARTS" in printed and "compare.csv" in printed
    with (out / COMPARE_CSV).open() as f:  # a rerun skips every finished row
        before = list(csv.reader(f))
    assert main(args) == 0
    with (out / COMPARE_CSV).open() as f:
        assert list(csv.reader(f)) == before
