"""glibc malloc settings: page faults of a step-like allocation pattern, and when they apply."""
from __future__ import annotations

import ctypes
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from nas_search.runtime import allocator
from nas_search.runtime.allocator import retain_freed_memory

ROOT = Path(__file__).resolve().parents[1]
needs_glibc = pytest.mark.skipif(allocator.glibc() is None, reason="the C library is not glibc")

#: A training step in a fresh process: three conv-BN-ReLU blocks on a [4, 16, 192, 192] batch
#: (2,304 pages per activation), forward and backward; the minor page faults per step of five
#: steps after three.
STEP_SCRIPT = """
import json, resource, sys, torch
from torch import nn
from nas_search.runtime.allocator import retain_freed_memory
applied = retain_freed_memory() if sys.argv[1] == "retain" else None
torch.manual_seed(0)
torch.set_num_threads(1)
net = nn.Sequential(*[m for _ in range(3) for m in
                      (nn.Conv2d(16, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU())])
x = torch.randn(4, 16, 192, 192)
def step():
    net(x).square().mean().backward()
for _ in range(3):
    step()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(5):
    step()
faults = (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) / 5
print(json.dumps({"applied": applied, "faults": faults, "pages": x.numel() * 4 // 4096}))
"""


def run_steps(arm: str, env: dict[str, str] | None = None) -> dict:
    """The pattern's figures in a fresh process, under the caller's malloc variables only."""
    env = {**{k: v for k, v in os.environ.items() if k not in allocator.USER_SETTINGS},
           "PYTHONPATH": str(ROOT), **(env or {})}
    out = subprocess.run([sys.executable, "-c", STEP_SCRIPT, arm], env=env, check=True,
                         capture_output=True, text=True).stdout
    return json.loads(out.splitlines()[-1])


@needs_glibc
def test_retained_memory_spares_the_page_faults_of_each_step() -> None:
    default, retained = run_steps("default"), run_steps("retain")
    assert retained["applied"] is True
    # under glibc's defaults each step faults in 4-9 activations' pages (measured: 9,600-19,800);
    # with the thresholds raised, at most 0.6 of one (0-1,400 after three steps)
    assert default["faults"] > 2 * default["pages"]
    assert retained["faults"] < min(retained["pages"], default["faults"] / 4)


@needs_glibc
@pytest.mark.parametrize("name", ["MALLOC_TRIM_THRESHOLD_", "GLIBC_TUNABLES"])
def test_a_users_own_malloc_settings_win(name: str) -> None:
    value = "glibc.malloc.check=0" if name == "GLIBC_TUNABLES" else "131072"
    assert run_steps("retain", {name: value})["applied"] is False


def test_nothing_is_set_off_glibc(monkeypatch: pytest.MonkeyPatch) -> None:
    class Musl:  # a C library with mallopt but without glibc's version call
        def mallopt(self, param: int, value: int) -> int:
            raise AssertionError("mallopt called off glibc")

    for name in allocator.USER_SETTINGS:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(ctypes, "CDLL", lambda name: Musl())
    assert allocator.glibc() is None
    assert retain_freed_memory() is False



def test_cpu_training_and_search_keep_freed_memory(monkeypatch: pytest.MonkeyPatch,
                                                   tmp_path: Path) -> None:
    import detectors.engine.distributed as distributed
    import nas_search.search as search
    from nas_toys import ToyTask

    calls = []
    for module in (distributed, search):
        monkeypatch.setattr(module, "retain_freed_memory", lambda module=module: calls.append(module) or True)
    distributed.TrainProcess.join("cpu", 1)
    search.search(ToyTask(), search.SearchConfig(epochs=1, warmup_epochs=0),
                  tmp_path)
    assert calls == [distributed, search]
