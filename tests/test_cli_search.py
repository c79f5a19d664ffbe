"""``asfd search``, ``asfd derive`` and ``asfd demo`` end to end on tiny synthetic sets."""
from __future__ import annotations

import dataclasses
import json

import pytest

from asfd_cli.main import build_parser, main
from asfd_cli.search_cmds import SEARCH_FLAGS, flag_overrides, warmup_overrides
from detectors.models.asfd import load_model
from detectors.workflows.pipeline import derive_detector, feature_modules_for
from detectors.workflows.search_task import load_search_file
from genotypes.io import load_genotype
from nas_search.registry import list_ops
from search_spaces.schemas import LEVELS, fpn_of

TINY = ["--set", "task.channels=8", "--set", "task.image_size=64", "--set", "task.batch_size=4",
        "--set", "task.base_fpn=none", "--synthetic-images", "8"]



@pytest.fixture(scope="module")
def search_run(tmp_path_factory):
    run = tmp_path_factory.mktemp("run")
    code = main(["search", "cpm", "--out", str(run), "--epochs", "2", "--nodes", "3",
                 "--mode", "top1_tree", "--concat", "cat_leaf", *TINY])
    assert code == 0
    return run


def test_search_writes_a_valid_genotype_graph_and_history(search_run, capsys):
    genotype = load_genotype(search_run / "genotype.yaml", known_ops=list_ops())
    assert tuple(genotype.cells) == LEVELS and fpn_of(genotype) is None
    assert all(c.n_nodes == 3 and c.concat == "cat_leaf" for c in genotype.cells.values())
    assert all(len(node.edges) == 1 for c in genotype.cells.values() for node in c.nodes)
    meta = genotype.meta
    assert (meta.mode, meta.nodes, meta.epochs, meta.dataset) == ("top1_tree", 3, 2, "data")
    assert {"train_loss", "arch_loss", "val_loss"} <= set(meta.metrics)
    assert (search_run / "data" / "README.txt").read_text().startswith("SMOKE-TEST")
    assert "<svg" in (search_run / "genotype.svg").read_text()
    history = [json.loads(line) for line in (search_run / "history.jsonl").read_text().splitlines()]
    assert [h["epoch"] for h in history] == [0, 1]
    assert any(k.endswith("P2.gamma") for k in history[0]["arch_weights"])
    assert (search_run / "history.png").read_bytes()[:4] == b"\x89PNG"
    saved = (search_run / "search_config.yaml").read_text()
    assert "n_nodes: 3" in saved and "warmup_epochs: 1" in saved  # 40% of 2 epochs, rounded


def test_search_refuses_to_overwrite_a_run_without_resume(search_run, capsys):
    assert main(["search", "cpm", "--out", str(search_run), "--epochs", "2", "--nodes", "3",
                 *TINY]) == 2
    assert "resume" in capsys.readouterr().err


def test_resume_of_a_finished_search_says_so_and_keeps_its_settings(search_run, tmp_path,
                                                                   capsys):
    args = ["search", "cpm", "--out", str(search_run), "--resume", "--epochs", "2", "--nodes", "3",
            "--mode", "top1_tree", "--concat", "cat_leaf", *TINY]
    genotype = (search_run / "genotype.yaml").read_text()
    assert main(args) == 0
    assert "is complete: nothing to resume" in " ".join(capsys.readouterr().out.split())
    assert main([*args, "--max-images", "40"]) == 2
    assert "cannot resume with changed settings (task.max_images: None -> 40)" in \
        " ".join(capsys.readouterr().err.split())
    assert main([*args, "--data", str(tmp_path)]) == 2
    assert f"data.dir: '{search_run / 'data'}' -> '{tmp_path}'" in \
        " ".join(capsys.readouterr().err.split())
    assert (search_run / "genotype.yaml").read_text() == genotype
    args[3] = str(tmp_path / "empty")
    assert main(args) == 2
    assert "nothing to resume" in capsys.readouterr().err


@pytest.mark.parametrize("argv, warmup", [
    (["--set", "search.epochs=1"], ["search.warmup_epochs=0"]),
    (["--epochs", "10"], ["search.warmup_epochs=4"]),
    (["--epochs", "10", "--set", "search.epochs=5"], ["search.warmup_epochs=2"]),
    (["--set", "search.epochs=5", "--warmup", "1"], []),
    (["--set", "search.epochs=5", "--set", "search.warmup_epochs=1"], []),
    ([], []),
])
def test_epochs_set_either_way_bring_the_same_warmup(argv, warmup):
    args = build_parser().parse_args(["search", "cpm", "--out", "x", *argv])
    assert warmup_overrides(args) == warmup
    spec = load_search_file(None, [*flag_overrides(args, SEARCH_FLAGS), *args.overrides, *warmup])
    assert spec.search.warmup_epochs < spec.search.epochs


def test_derive_saves_a_loadable_untrained_d0(search_run, tmp_path, capsys):
    out = tmp_path / "d0.pt"
    assert main(["derive", str(search_run), "--variant", "D0", "-o", str(out)]) == 0
    model = load_model(out)
    assert model.config.name == "ASFD-D0" and model.config.feature_modules == ("autofem_cpm",)
    assert model.genotype.cells == load_genotype(search_run / "genotype.yaml").cells
    printed = capsys.readouterr().out
    assert "autofem_cpm" in printed and " M" in printed and str(out) in printed


def test_bad_config_is_a_one_line_error(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text("task:\n  nodes: 4\n")
    assert main(["search", "cpm", "--config", str(bad), "--out", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err
    assert "bad.yaml" in err and "'nodes'" in err
    bad.write_text("task:\n  n_nodes: [4\n")
    assert main(["search", "cpm", "--config", str(bad), "--out", str(tmp_path / "r")]) == 2
    assert "bad.yaml, line 3: not valid YAML" in " ".join(capsys.readouterr().err.split())


def test_a_searched_part_alone_gives_the_variant_its_modules():
    paper = load_genotype("asfd_paper_like")
    fpn_only = dataclasses.replace(paper, cells={})
    cpm_only = dataclasses.replace(paper, sections={})
    assert feature_modules_for("D0", paper) == ("autofem_fpn", "autofem_cpm")
    assert feature_modules_for("D0", fpn_only) == ("autofem_fpn",)
    assert feature_modules_for("D0", cpm_only) == ("autofem_cpm",)
    assert feature_modules_for("D3", paper) == ("autofem_fpn", "autofem_cpm")
    assert feature_modules_for("D5", cpm_only) == ("autofem_cpm", "autofem_cpm")
    substituted = derive_detector(fpn_only, "D0").config
    assert substituted.feature_modules == ("autofem_fpn",)
    assert substituted.enhanced_levels == LEVELS[1:]   # the variant's own levels
    assert derive_detector(paper, "D0").config.enhanced_levels == LEVELS[1:]


def test_demo_runs_the_whole_method_and_says_where_everything_is(tmp_path, capsys):
    assert main(["demo", "--out", str(tmp_path), "--budget", "smoke"]) == 0
    printed = capsys.readouterr().out
    assert "SYNTHETIC" in printed and "smoke test" in printed
    for name in ("search/genotype.yaml", "search/genotype.svg", "search/history.png",
                 "model_untrained.pt", "train/model.pt", "train/metrics.csv"):
        assert (tmp_path / name).is_file() and str(tmp_path / name) in printed.replace("\n", "")
    trained = load_model(tmp_path / "train" / "model.pt")
    assert trained.genotype.cells == load_genotype(tmp_path / "search" / "genotype.yaml").cells
    eval_rows = [r for r in (tmp_path / "train" / "metrics.csv").read_text().splitlines()
                 if r.startswith("eval,")]
    assert eval_rows and all(0 <= float(v) <= 1 for v in eval_rows[-1].split(",")[-3:])


def test_derive_train_shows_a_finished_bar(tmp_path, capsys):
    """``derive --train`` draws the training bar (0-based epochs, time left) and finishes it;
    the shipped pcdarts_example derives."""
    from detectors.data.synthetic import make_synthetic

    make_synthetic(tmp_path / "data", 4, seed=1, size=(96, 80))
    config = tmp_path / "train.yaml"
    config.write_text(f"data: {{train: [{{dir: {tmp_path / 'data'}}}], size: 64, batch_size: 2, "
                      "workers: 0}\neval: {every: 0}\nschedule: {epochs: 1, warmup_iters: 1}\n")
    assert main(["derive", "pcdarts_example", "-o", str(tmp_path / "d0.pt"), "--train",
                 str(config), "--threads", "1"]) == 0
    out = capsys.readouterr().out
    bar = next(line for line in out.splitlines() if line.startswith("epoch 0 it 2"))
    assert "100%" in bar and " left " in bar
    assert (tmp_path / "d0" / "model.pt").is_file()
    assert load_model(tmp_path / "d0" / "model.pt").genotype.meta.mode == "pcdarts"
