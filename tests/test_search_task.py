"""The face search task: supernet forward/backward per target and mode, data split, configs."""
from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from detectors.data.loader import prepare_batch
from detectors.data.sources import DataSource
from detectors.data.synthetic import make_synthetic
from detectors.workflows.search_task import (
    FaceSearchConfig, FaceSearchTask, SearchFile, load_search_file,
)
from genotypes.validate import validate_genotype
from nas_search.registry import list_ops
from nas_search.runtime import ConfigError
from search_spaces.schemas import LEVELS, fpn_of

ROOT = Path(__file__).resolve().parents[1]
TINY = dict(channels=8, n_nodes=2, image_size=64, batch_size=2)



@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory) -> DataSource:
    root = tmp_path_factory.mktemp("faces")
    make_synthetic(root, 8, seed=1, size=(96, 72))
    return DataSource(str(root))


@pytest.mark.parametrize("target, mode", [("cpm", "top1_tree"), ("cpm", "pcdarts"),
                                          ("fpn", "pcdarts")])
def test_supernet_step_trains_weights_and_architecture(tiny_data, target, mode):
    torch.manual_seed(0)
    task = FaceSearchTask(FaceSearchConfig(target=target, mode=mode, **TINY), tiny_data)
    model = task.build_supernet().train()
    model.set_gumbel_generator(torch.Generator().manual_seed(0))
    batch = next(iter(task.train_batches(0)))
    loss = task.loss(model, batch)
    assert loss.dim() == 0 and math.isfinite(loss.item()) and loss.item() > 0
    loss.backward()
    assert model.backbone.stage1[0][0].weight.grad.abs().sum() > 0
    # At 64 px the DRMC loss picks no anchor on the coarse levels; a surrogate over every
    # second-shot output reaches all six cells / FPN levels.
    model.zero_grad()
    output = model(prepare_batch(batch, "cpu")[0])
    (output.second.cls.sum() + output.second.reg.sum()).backward()
    arch = dict(model.named_arch_parameters())
    trained = {n for n, p in arch.items() if p.grad is not None and p.grad.abs().sum() > 0}
    alphas = {n for n in arch if n.endswith("arch_alpha")}
    assert len(alphas) == len(LEVELS) and alphas <= trained  # every level's ops learn
    if mode == "pcdarts":  # every edge runs: gamma (cpm) / beta (fpn) learn too
        assert trained == set(arch)
    assert not set(map(id, model.arch_parameters())) & set(map(id, model.weight_parameters()))


@pytest.mark.parametrize("target, mode", [("cpm", "top1_tree"), ("cpm", "pcdarts"),
                                          ("fpn", "pcdarts")])
def test_genotype_has_the_searched_part_only(tiny_data, target, mode):
    task = FaceSearchTask(FaceSearchConfig(target=target, mode=mode, concat="cat_all", **TINY),
                          tiny_data)
    genotype = task.build_supernet().genotype(top_k=2)
    validate_genotype(genotype, known_ops=list_ops())
    if target == "cpm":
        assert fpn_of(genotype) is None and tuple(genotype.cells) == LEVELS
        edges = {len(node.edges) for cell in genotype.cells.values() for node in cell.nodes}
        assert edges == ({1} if mode == "top1_tree" else {1, 2})  # node 1 has one parent only
        assert all(c.concat == "cat_all" and c.n_nodes == 2 for c in genotype.cells.values())
        assert (genotype.meta.mode, genotype.meta.nodes, genotype.meta.op_set) == (mode, 2, "S_CPM")
    else:
        assert not genotype.cells and tuple(fpn_of(genotype).levels) == LEVELS
        assert genotype.meta.op_set == "S_FPN" and fpn_of(genotype).pathway == "recursive"
        assert fpn_of(genotype).gate == "product"
        one_hop = FaceSearchConfig(target=target, mode=mode, fpn_pathway="one_hop",
                                   fpn_gate="normalized", **TINY)
        fpn = fpn_of(FaceSearchTask(one_hop, tiny_data).build_supernet().genotype())
        assert (fpn.pathway, fpn.gate) == ("one_hop", "normalized")
    assert genotype.meta.partial_channels_k == 4 and "mobilenet0.25" in genotype.meta.note


def test_weight_and_architecture_images_are_a_deterministic_partition(tiny_data):
    config = FaceSearchConfig(**TINY)
    a, b = FaceSearchTask(config, tiny_data, seed=3), FaceSearchTask(config, tiny_data, seed=3)
    weight = {s.rel_path for s in a.weight_samples}
    arch = {s.rel_path for s in a.arch_samples}
    assert weight and arch and not weight & arch and len(weight | arch) == 8
    assert weight == {s.rel_path for s in b.weight_samples}
    first = [batch.images for batch in a.train_batches(1)]
    again = [batch.images for batch in b.train_batches(1)]
    assert all(torch.equal(x, y) for x, y in zip(first, again))
    other_epoch = [batch.images for batch in a.train_batches(2)]
    assert not all(torch.equal(x, y) for x, y in zip(first, other_epoch))
    description = a.describe()
    assert (description["weight_images"], description["arch_images"]) == (len(weight), len(arch))
    assert description["dataset"] == Path(tiny_data.dir).name


def test_evaluate_reports_the_architecture_loss(tiny_data):
    task = FaceSearchTask(FaceSearchConfig(**TINY), tiny_data)
    model = task.build_supernet().eval()
    with torch.no_grad():
        metrics = task.evaluate(model)
        direct = [float(task.loss(model, b)) for b in task.val_batches(0)]
    assert set(metrics) == {"val_loss"}
    assert metrics["val_loss"] == pytest.approx(sum(direct) / len(direct))


def test_too_few_images_is_a_clear_error(tmp_path):
    make_synthetic(tmp_path, 1, size=(64, 48))
    with pytest.raises(ValueError, match="cannot be split"):
        FaceSearchTask(FaceSearchConfig(**TINY), DataSource(str(tmp_path)))


@pytest.mark.parametrize("name, target", [("search_cpm.yaml", "cpm"), ("search_fpn.yaml", "fpn")])
def test_shipped_search_configs_load_and_follow_the_paper_schedule(name, target):
    spec = load_search_file(ROOT / "configs" / name, ["search.epochs=5", "task.channels=16"])
    assert isinstance(spec, SearchFile) and spec.task.target == target
    assert (spec.search.epochs, spec.task.channels) == (5, 16)
    # Sec. 4.1: Adam lr 0.01, wd 5e-4 on the architecture, K = 4; 6 nodes for the CPM
    assert (spec.search.arch_lr, spec.search.arch_weight_decay, spec.task.k) == (0.01, 5e-4, 4)
    assert spec.task.n_nodes == 6


def test_search_config_errors_name_the_file_and_key(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("task:\n  chanels: 8\n")
    with pytest.raises(ConfigError, match=r"bad.yaml: task: unknown key\(s\) \['chanels'\]"):
        load_search_file(bad)
    bad.write_text("search:\n  epochs: many\n")
    with pytest.raises(ValueError, match=r"bad.yaml: search\.epochs: expected int"):
        load_search_file(bad)
    with pytest.raises(ConfigError, match="divisible by k=4"):
        load_search_file(None, ["task.channels=10"])
    with pytest.raises(ConfigError, match="task.fpn_pathway: 'two_hop' is not one of"):
        load_search_file(None, ["task.fpn_pathway=two_hop"])
    with pytest.raises(ConfigError, match="task.fpn_gate: 'sigmoid' is not one of"):
        load_search_file(None, ["task.fpn_gate=sigmoid"])
    with pytest.raises(ConfigError, match="unknown section"):
        load_search_file(None, ["model.name=D0"])
