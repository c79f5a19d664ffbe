"""The shared runtime (``nas_search.runtime``): atomic files, RNG state, seeding, ranks, the
typed config loader, the activation meter, and the one non-finite-loss error."""
from __future__ import annotations

import os
import random
import subprocess
import sys
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import pytest
import torch

from nas_search.runtime import (
    ActivationMeter, ConfigError, DistContext, NonFiniteLossError, atomic_path, cpu_threads,
    dataclass_from_dict, is_main, load_checkpoint, load_yaml, rank, rng_state, save_checkpoint,
    seed_everything, set_rng_state, world_size,
)


def draws() -> tuple[float, float, float]:
    return random.random(), float(np.random.rand()), float(torch.rand(()))


# ----------------------------------------------------------------------------- files
def test_atomic_path_replaces_on_success_and_keeps_the_old_file_on_failure(tmp_path):
    path = tmp_path / "f.txt"
    path.write_text("old")
    with pytest.raises(RuntimeError), atomic_path(path) as tmp:
        tmp.write_text("torn")
        raise RuntimeError("crash while writing")
    assert path.read_text() == "old" and sorted(p.name for p in tmp_path.iterdir()) == ["f.txt"]
    with atomic_path(path) as tmp:
        tmp.write_text("new")
    assert path.read_text() == "new" and sorted(p.name for p in tmp_path.iterdir()) == ["f.txt"]
    saved = save_checkpoint({"w": torch.arange(3)}, tmp_path / "sub" / "c.pt")
    assert torch.equal(load_checkpoint(saved)["w"], torch.arange(3))


# ----------------------------------------------------------------------------- RNG
def test_rng_state_round_trips_through_a_weights_only_file(tmp_path):
    seed_everything(5)
    save_checkpoint({"rng": rng_state()}, tmp_path / "s.pt")
    expected = draws()
    seed_everything(6)
    set_rng_state(load_checkpoint(tmp_path / "s.pt")["rng"])  # no NumPy globals needed
    assert draws() == expected


def test_rng_state_of_the_old_training_layout_restores():
    """``last.pt`` files kept NumPy's keys as an array and had no ``cuda`` entry on a CPU."""
    seed_everything(7)
    old = {"python": random.getstate(), "numpy": np.random.get_state(),
           "torch": torch.get_rng_state()}
    expected = draws()
    seed_everything(8)
    set_rng_state(old)
    assert draws() == expected


def test_seed_everything_takes_one_seed_per_library():
    seed_everything(1, 2, 3)
    a = draws()
    random.seed(1)
    np.random.seed(2)
    torch.manual_seed(3)
    assert a == draws()


# ----------------------------------------------------------------------------- distributed
def test_single_process_rank_world_and_threads(monkeypatch):
    assert (rank(), world_size(), is_main()) == (0, 1, True)
    monkeypatch.setenv("RANK", "3")
    monkeypatch.setenv("WORLD_SIZE", "4")
    monkeypatch.setenv("LOCAL_RANK", "1")
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "2")
    ctx = DistContext.current()  # torchrun's variables before the group is joined
    assert (ctx.rank, ctx.world_size, ctx.local_rank, ctx.enabled, ctx.is_main) == (
        3, 4, 1, True, False)
    assert cpu_threads(0, ctx) == max(1, (os.cpu_count() or 1) // 2)
    assert cpu_threads(5, ctx) == 5


# ----------------------------------------------------------------------------- config
@dataclass
class Inner:
    name: str
    kind: Literal["a", "b"] = "a"


@dataclass
class Outer:
    lr: float = 0.1
    betas: tuple[float, float] = (0.5, 0.999)
    sizes: tuple[int, ...] = ()
    inner: list[Inner] = field(default_factory=list)
    limit: int | None = None


def test_typed_loader_converts_and_names_file_and_key():
    data = load_yaml("lr: 8e-3\nbetas: [1, 0.9]\nsizes: [1, 2, 3]\ninner: [{name: x, kind: b}]",
                     "c.yaml")
    cfg = dataclass_from_dict(Outer, data, source="c.yaml")
    assert cfg == Outer(8e-3, (1.0, 0.9), (1, 2, 3), [Inner("x", "b")], None)
    assert isinstance(cfg.betas[0], float)
    cases = [({"lrr": 1}, "c.yaml: unknown key(s) ['lrr']"),
             ({"lr": "fast"}, "c.yaml: lr: expected float, got 'fast'"),
             ({"betas": [1]}, "c.yaml: betas: expected 2 values, got [1]"),
             ({"sizes": [1, 2.5]}, "c.yaml: sizes[1]: expected int, got 2.5"),
             ({"inner": [{}]}, "c.yaml: inner[0]: missing required key(s) ['name']"),
             ({"inner": [{"name": "x", "kind": "c"}]}, "c.yaml: inner[0].kind: 'c' is not one of"),
             ([1, 2], "c.yaml: expected a mapping, got [1, 2]")]
    for data, message in cases:
        with pytest.raises(ConfigError) as info:
            dataclass_from_dict(Outer, data, source="c.yaml")
        assert str(info.value).startswith(message), (data, str(info.value))
    with pytest.raises(ConfigError, match=r"c.yaml, line 1: not valid YAML"):
        load_yaml("a: [1", "c.yaml")


def test_the_config_loader_needs_no_torch():
    code = ("import sys; import detectors.engine.config; from nas_search.runtime import load_yaml; "
            "print('torch' in sys.modules)")
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert run.stdout.strip() == "False"


# ----------------------------------------------------------------------------- errors
def test_training_and_search_raise_the_one_non_finite_loss_error():
    import detectors.engine.trainer
    import nas_search.search

    assert detectors.engine.trainer.NonFiniteLossError is nas_search.search.NonFiniteLossError
    assert issubclass(NonFiniteLossError, FloatingPointError)


# ----------------------------------------------------------------------------- memory
def test_activation_meter_counts_activations_once_and_skips_parameters():
    weight = torch.randn(64, 64, requires_grad=True)  # a parameter: not an activation
    x = torch.randn(32, 64)
    with ActivationMeter() as meter:
        h = x @ weight  # saves x (8 KiB) and weight (skipped)
        y = (h.relu() * h.relu()).sum()  # two relu outputs (8 KiB each), saved by relu and mul
    assert meter.bytes == meter.saved_bytes == 3 * 32 * 64 * 4
    assert meter.cuda_peak_bytes is None  # not on a CUDA device
    assert meter.saved_by == {"no grad, 64 ch": 32 * 64 * 4,  # x, outside autograd
                              "ReluBackward0, 64 ch": 2 * 32 * 64 * 4}
    y.backward()
    leaf = torch.randn(32, 64, requires_grad=True)
    with ActivationMeter() as meter:
        h = leaf[:, :32].exp()  # saves its 4 KiB output h
        (h * h).sum()  # saves h twice more: the same storage, not counted again
    assert meter.bytes == 32 * 32 * 4
    with ActivationMeter(exclude=[x]) as meter:
        x @ weight  # x is excluded, weight is a parameter
    assert meter.bytes == 0


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_activation_meter_reads_the_cuda_peak_above_what_is_held():
    held = torch.randn(1024, 1024, device="cuda")  # 4 MiB allocated before: not counted
    x = torch.randn(256, 256, device="cuda", requires_grad=True)
    with ActivationMeter("cuda") as meter:
        (x.exp() * 2).sum().backward()
    assert 0 < meter.cuda_peak_bytes < held.numel() * 4
    assert meter.bytes == meter.cuda_peak_bytes and meter.saved_bytes == 256 * 256 * 4
