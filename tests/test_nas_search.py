"""The search loop: config, exact resume, history, NaN guard, digits end-to-end, multi-process."""
from __future__ import annotations

import json
import math
import os
import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from genotypes.io import load_genotype
from genotypes.validate import validate_genotype
from nas_search.registry import list_ops
from nas_search.runtime import NonFiniteLossError
from nas_search.search import (
    CHECKPOINT_FILE, GENOTYPE_FILE, HISTORY_FILE, SearchConfig, search,
)
from nas_toys import ToySupernet, ToyTask

TOY = dict(epochs=3, warmup_epochs=1, w_lr=0.05, arch_lr=0.05, log_every=1, seed=3)


class Interrupt(Exception):
    pass


def interrupt_at(epoch: int, step: int):
    def progress(e, s, metrics):
        if (e, s) == (epoch, step):
            raise Interrupt
    return progress


def arch_state(model) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in model.named_arch_parameters()}


def read_history(run_dir) -> list[dict]:
    return [json.loads(line) for line in (run_dir / HISTORY_FILE).read_text().splitlines()]


def test_config_round_trips_and_names_bad_fields():
    cfg = SearchConfig.from_dict({"epochs": 4, "warmup_epochs": 1, "w_lr": 1,
                                  "arch_betas": [0.9, 0.99]})
    assert cfg.w_lr == 1.0 and cfg.arch_betas == (0.9, 0.99)
    assert SearchConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(ValueError, match="cfg.yaml: unknown key.*'epoch'"):
        SearchConfig.from_dict({"epoch": 3}, source="cfg.yaml")
    with pytest.raises(ValueError, match="w_lr: expected float"):
        SearchConfig.from_dict({"w_lr": "fast"})
    with pytest.raises(ValueError, match=r"warmup_epochs .*got 5: set search\.warmup_epochs"):
        SearchConfig(epochs=5, warmup_epochs=5)
    with pytest.raises(ValueError, match=r"w_lr must be > 0, got 0\.0; grad_clip must be >= 0, "
                                         r"got -1\.0"):
        SearchConfig(w_lr=0.0, grad_clip=-1.0)


@pytest.mark.parametrize("mode", ["top1_tree", "pcdarts"])
def test_interrupted_and_resumed_search_is_bitwise_identical(tmp_path, mode):
    config = SearchConfig(**TOY)
    task = ToyTask(mode=mode)
    straight = search(task, config, tmp_path / "straight")
    with pytest.raises(Interrupt):  # mid-epoch 1: the checkpoint holds epoch 0
        search(ToyTask(mode=mode), config, tmp_path / "resumed", progress=interrupt_at(1, 5))
    assert len(read_history(tmp_path / "resumed")) == 1
    resumed = search(ToyTask(mode=mode), config, tmp_path / "resumed", resume=True)
    a, b = arch_state(straight.model), arch_state(resumed.model)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert not all(torch.equal(a[k], arch_state(task.build_supernet())[k]) for k in a)
    for p, q in zip(straight.model.state_dict().values(), resumed.model.state_dict().values()):
        assert torch.equal(p, q)
    assert resumed.genotype.cells == straight.genotype.cells
    hist_a, hist_b = read_history(tmp_path / "straight"), read_history(tmp_path / "resumed")
    assert [h["epoch"] for h in hist_b] == [0, 1, 2]
    assert [h["arch_weights"] for h in hist_a] == [h["arch_weights"] for h in hist_b]
    again = search(ToyTask(mode=mode), config, tmp_path / "resumed", resume=True)  # finished
    assert again.metrics == straight.metrics and again.genotype.cells == straight.genotype.cells


def test_history_logs_every_epoch_and_the_genotype_is_saved(tmp_path):
    result = search(ToyTask(), SearchConfig(**TOY), tmp_path)
    history = read_history(tmp_path)
    assert [h["epoch"] for h in history] == [0, 1, 2]
    assert [h["step"] for h in history] == [3, 6, 9]
    assert history[0]["tau"] == 10.0 and history[-1]["tau"] == pytest.approx(0.1)
    assert "arch_loss" not in history[0]["metrics"] and "arch_loss" in history[1]["metrics"]
    torch.manual_seed(TOY["seed"])  # the supernet as the search built it
    initial = ToyTask().build_supernet().arch_weights()
    assert history[0]["arch_weights"] == initial  # warm-up epoch: architecture untouched
    assert history[1]["arch_weights"] != initial
    gamma = history[-1]["arch_weights"]["cells.0.gamma"]["node3"]
    assert set(gamma) == {"0", "1", "2"} and sum(gamma.values()) == pytest.approx(1.0)
    assert load_genotype(tmp_path / GENOTYPE_FILE) == result.genotype
    meta = result.genotype.meta
    assert (meta.mode, meta.nodes, meta.partial_channels_k, meta.seed, meta.epochs,
            meta.dataset) == ("top1_tree", 3, 2, 3, 3, "toy-random")
    assert meta.metrics["val_loss"] == history[-1]["metrics"]["val_loss"]


def test_non_finite_loss_names_the_step_and_keeps_the_checkpoint(tmp_path):
    with pytest.raises(NonFiniteLossError, match=r"weight step \(epoch 1, step 3\)"):
        search(ToyTask(nan_epoch=1), SearchConfig(**TOY), tmp_path)
    state = torch.load(tmp_path / CHECKPOINT_FILE, weights_only=True)
    assert state["epoch"] == 1 and all(torch.isfinite(v).all() for v in state["model"].values()
                                       if v.is_floating_point())


def test_an_existing_run_is_never_overwritten_nor_resumed_with_another_config(tmp_path):
    with pytest.raises(FileNotFoundError, match="nothing to resume"):
        search(ToyTask(), SearchConfig(**TOY), tmp_path, resume=True)
    search(ToyTask(), SearchConfig(**TOY), tmp_path)
    with pytest.raises(FileExistsError, match="resume=True"):
        search(ToyTask(), SearchConfig(**TOY), tmp_path)
    with pytest.raises(ValueError, match="arch_lr: 0.05 -> 0.1"):
        search(ToyTask(), SearchConfig(**TOY | {"arch_lr": 0.1}), tmp_path, resume=True)
    with pytest.raises(ValueError, match=r"checkpoint\.pt: does not fit the supernet of task "
                                         r"'toy' \(another width or model\?\): size mismatch"):
        search(WiderToyTask(), SearchConfig(**TOY), tmp_path, resume=True)


class WiderToyTask(ToyTask):
    """The toy task with an 8-channel supernet."""

    def build_supernet(self) -> ToySupernet:
        return ToySupernet(channels=8, mode=self.mode, concat=self.concat, k=self.k)


class NaNValidationTask(ToyTask):
    """The toy task whose validation loss is NaN from its second evaluation on."""

    evaluations = 0

    def evaluate(self, model):
        NaNValidationTask.evaluations += 1
        return {"val_loss": math.nan if NaNValidationTask.evaluations > 1 else 1.0}


def test_a_non_finite_metric_is_an_error_and_never_written(tmp_path):
    NaNValidationTask.evaluations = 0
    with pytest.raises(NonFiniteLossError, match=r"non-finite \{'val_loss': nan\} at the end of "
                                                 r"epoch 1 \(step 6\)"):
        search(NaNValidationTask(), SearchConfig(**TOY), tmp_path)
    assert [h["epoch"] for h in read_history(tmp_path)] == [0]
    assert torch.load(tmp_path / CHECKPOINT_FILE, weights_only=True)["epoch"] == 1
    assert not (tmp_path / GENOTYPE_FILE).exists()


@pytest.mark.parametrize("mode", ["pcdarts", "top1_tree"])
def test_digits_search_lowers_val_loss_and_derives_a_valid_genotype(tmp_path, mode):
    digits = pytest.importorskip("search_spaces.digits")
    task = digits.DigitsSearchTask(mode=mode, n_nodes=3, channels=8, batches_per_epoch=8)
    with torch.no_grad():
        before = task.evaluate(task.build_supernet().eval())["val_loss"]
    config = SearchConfig(epochs=3, warmup_epochs=1, w_lr=0.1, log_every=100)
    result = search(task, config, tmp_path)
    assert result.metrics["val_loss"] < 0.7 * before
    validate_genotype(result.genotype, known_ops=list_ops())
    cell = result.genotype.cells["cell"]
    assert all(len(n.edges) == (1 if mode == "top1_tree" else min(2, j))
               for j, n in enumerate(cell.nodes, start=1))
    assert result.genotype.meta.dataset == "sklearn-digits"


# ------------------------------------------------------------------------- multi-process
def _rank_main(rank: int, world: int, port: int, run_dir: str) -> None:
    os.environ.setdefault("GLOO_SOCKET_IFNAME", "lo")  # hosts whose name does not resolve
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank,
                            world_size=world)
    try:
        torch.set_num_threads(1)
        result = search(ToyTask(shard=rank), SearchConfig(**TOY), run_dir)
        torch.save(arch_state(result.model), f"{run_dir}/arch_rank{rank}.pt")
    finally:
        dist.destroy_process_group()


@pytest.mark.slow
def test_multi_process_search_keeps_every_rank_on_one_architecture(tmp_path):
    """Each rank sees its own data shard; averaged gradients and one Gumbel stream keep the
    architectures identical, and only rank 0 writes the run files."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    mp.start_processes(_rank_main, args=(2, port, str(tmp_path)), nprocs=2, start_method="fork")
    a, b = (torch.load(tmp_path / f"arch_rank{r}.pt") for r in (0, 1))
    assert all(torch.equal(a[k], b[k]) for k in a)
    torch.manual_seed(TOY["seed"])
    initial = arch_state(ToyTask().build_supernet())
    assert not all(torch.equal(a[k], initial[k]) for k in a)
    assert len(read_history(tmp_path)) == TOY["epochs"]
    assert (tmp_path / GENOTYPE_FILE).exists()
