"""Table 3 under one budget: PC-DARTS vs the top-1 Gumbel tree, cat_all vs cat_leaf, 4/6/8 nodes.

Every *arm* (search mode, cell output, intermediate nodes) runs the same protocol:

1. a short search with the same :class:`~detectors.workflows.search_task.FaceSearchConfig` and
   :class:`~nas_search.search.SearchConfig` (only mode, concat and nodes change);
2. cost probe on the searched supernet: peak activation memory and wall time of one search
   step (a forward + backward pass on a weight batch, Gumbel sampling on; an architecture step
   costs the same pass). Activation memory is measured, not estimated
   (:class:`~nas_search.runtime.ActivationMeter`): on CPU the bytes autograd saves for the
   backward pass, on CUDA the peak allocated above the memory held before the step.
3. derivation into the same ASFD variant (D0 by default) and retraining with the same
   training config (:mod:`detectors.engine.trainer`);
4. WIDER Easy/Medium/Hard AP on held-out images.

Held-out images (the paper evaluates on WIDER val, disjoint from its search and training data):
the data folder is split once by :func:`detectors.data.sources.split_images` with
``holdout_fraction``; the ``val`` part is only evaluated, the ``train`` part is searched
(split again into weight / architecture images by the task) and retrained on.

Results go to ``compare.csv`` one row per finished arm (a rerun skips them: resumable; an
interrupted search resumes from its checkpoint, and its ``search_min`` then counts the resumed
part only) and, at the end, ``compare.md``. Seed-to-seed spread: run the comparison once per
seed (``search.seed`` and ``train.run.seed``) into separate folders and read them with
:func:`seed_spread` (``asfd compare-seeds``).
"""
from __future__ import annotations

import csv
import dataclasses
import statistics
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from detectors.engine.macs import count_parameters
from detectors.engine.reporting import TrainEvent
from detectors.models.asfd import Variant
from detectors.workflows.pipeline import (
    PipelineConfig, held_out_split, retrain, retrain_config, run_search,
)
from detectors.workflows.search_task import FaceSearchSupernet, FaceSearchTask
from genotypes.schema import CONCAT_MODES, ConcatMode, Genotype
from nas_search.runtime import ActivationMeter, ConfigError
from nas_search.search import CHECKPOINT_FILE
from nas_search.strategies import list_strategies

COMPARE_CSV = "compare.csv"
COMPARE_MD = "compare.md"


# ----------------------------------------------------------------------------- cost probe
@dataclass(frozen=True)
class StepCost:
    """Median over the timed steps: activation bytes and seconds of one forward + backward."""

    activation_bytes: int
    seconds: float

    @property
    def activation_mb(self) -> float:
        return self.activation_bytes / 2**20


def measure_step_cost(task: FaceSearchTask, model: FaceSearchSupernet, steps: int = 3,
                      device: str | torch.device = "cpu", seed: int = 0) -> StepCost:
    """Profile ``steps`` search steps (after one untimed warm-up step) of ``model`` on ``task``'s
    weight batches, in training mode with Gumbel sampling from a generator seeded by ``seed``."""
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    device = torch.device(device)
    model.to(device).train()
    model.set_gumbel_generator(torch.Generator().manual_seed(seed))
    batches = _endless(task)
    costs: list[tuple[int, float]] = []
    for i in range(steps + 1):
        batch = next(batches)
        with ActivationMeter(device) as meter:
            start = time.perf_counter()
            task.loss(model, batch).backward()
        elapsed = time.perf_counter() - start
        model.zero_grad(set_to_none=True)
        if i > 0:
            costs.append((meter.bytes, elapsed))
    return StepCost(int(statistics.median(c[0] for c in costs)),
                    statistics.median(c[1] for c in costs))


def _endless(task: FaceSearchTask) -> Iterator[Any]:
    """Weight batches without end, epoch after epoch."""
    epoch = 0
    while True:
        for batch in task.train_batches(epoch):
            yield batch
        epoch += 1


# ----------------------------------------------------------------------------- arms and config
@dataclass(frozen=True)
class Arm:
    """One row of Table 3: search strategy (``mode``, a registered name), cell output and
    intermediate nodes per CPM cell."""

    mode: str
    concat: ConcatMode
    n_nodes: int

    @property
    def name(self) -> str:
        return f"{self.mode}-{self.concat}-{self.n_nodes}"

    @property
    def method(self) -> str:
        """Table 3's label."""
        return "PC-DARTS" if self.mode == "pcdarts" else f"ours+{self.concat}"


#: Table 3's rows: PC-DARTS (cat_all, as PC-DARTS cells concatenate every node) at 4 and 6
#: nodes (8 was out of the paper's memory), ours with cat_all and cat_leaf at 4, 6, 8 nodes.
TABLE3_ARMS: tuple[Arm, ...] = (
    Arm("pcdarts", "cat_all", 4), Arm("pcdarts", "cat_all", 6),
    *(Arm("top1_tree", c, n) for c in ("cat_all", "cat_leaf") for n in (4, 6, 8)),
)


@dataclass
class CompareSettings:
    """``compare`` section: the arms, the held-out share, the ASFD variant retrained, the
    number of timed steps of the cost probe, and whether to draw each arm's genotype and
    history (``render``)."""

    arms: list[dict[str, Any]] = field(
        default_factory=lambda: [dataclasses.asdict(a) for a in TABLE3_ARMS])
    holdout_fraction: float = 0.25
    variant: Variant = "D0"
    cost_steps: int = 3
    render: bool = True

    def parsed_arms(self) -> list[Arm]:
        """The arms as :class:`Arm` s, checked (a bad one is named by its position)."""
        arms = []
        for i, arm in enumerate(self.arms):
            try:
                arms.append(Arm(**arm))
            except TypeError:
                raise ConfigError(f"compare.arms[{i}]: expected mode, concat, n_nodes; "
                                  f"got {arm!r}") from None
            if arms[-1].mode not in list_strategies() or arms[-1].concat not in CONCAT_MODES:
                raise ConfigError(f"compare.arms[{i}]: mode must be a registered search strategy "
                                  f"({', '.join(list_strategies())}) and "
                                  f"concat one of {CONCAT_MODES}, got {arm!r}")
        if len({a.name for a in arms}) != len(arms):
            raise ConfigError("compare.arms: an arm is listed twice")
        return arms


# ----------------------------------------------------------------------------- results
@dataclass
class CompareRow:
    """One finished arm (the columns of ``compare.csv``)."""

    arm: str
    method: str
    nodes: int
    concat: str
    mem_mb: float
    time_s: float
    search_min: float
    edges: float
    outputs: float
    top_op: str
    params_m: float
    ap_easy: float
    ap_medium: float
    ap_hard: float


def genotype_summary(genotype: Genotype) -> tuple[float, float, str]:
    """Mean edges per cell, mean output nodes per cell (leaves for ``cat_leaf``), commonest op."""
    cells = list(genotype.cells.values())
    edges = [e for c in cells for node in c.nodes for e in node.edges]
    top_op = Counter(e.op for e in edges).most_common(1)[0][0]
    return (len(edges) / len(cells), sum(len(c.output_nodes) for c in cells) / len(cells), top_op)


def read_rows(out_dir: str | Path) -> list[CompareRow]:
    """The rows of ``out_dir/compare.csv`` (empty when absent)."""
    path = Path(out_dir) / COMPARE_CSV
    if not path.is_file():
        return []
    types = {f.name: f.type for f in dataclasses.fields(CompareRow)}
    with path.open(newline="", encoding="utf-8") as f:
        return [CompareRow(**{k: _typed(types[k], v) for k, v in row.items()})
                for row in csv.DictReader(f)]


def _typed(tp: str, value: str) -> Any:
    return {"int": int, "float": float}.get(tp, str)(value)


def append_row(out_dir: str | Path, row: CompareRow) -> None:
    path = Path(out_dir) / COMPARE_CSV
    new = not path.is_file()
    with path.open("a", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, [fld.name for fld in dataclasses.fields(CompareRow)])
        if new:
            writer.writeheader()
        writer.writerow(dataclasses.asdict(row))


#: ``compare.md`` / table columns: (header, row -> text).
COLUMNS: tuple[tuple[str, Callable[[CompareRow], str]], ...] = (
    ("method", lambda r: r.method), ("nodes", lambda r: str(r.nodes)),
    ("concat", lambda r: r.concat), ("MB/step", lambda r: f"{r.mem_mb:.1f}"),
    ("s/step", lambda r: f"{r.time_s:.3f}"), ("search min", lambda r: f"{r.search_min:.1f}"),
    ("edges", lambda r: f"{r.edges:.1f}"), ("outputs", lambda r: f"{r.outputs:.1f}"),
    ("top op", lambda r: r.top_op), ("params M", lambda r: f"{r.params_m:.3f}"),
    ("Easy", lambda r: f"{r.ap_easy:.3f}"), ("Medium", lambda r: f"{r.ap_medium:.3f}"),
    ("Hard", lambda r: f"{r.ap_hard:.3f}"),
)


def write_markdown(out_dir: str | Path, rows: Sequence[CompareRow], header: str) -> Path:
    """``compare.md``: ``header`` then one Markdown table of ``rows``."""
    lines = [header, "", "| " + " | ".join(h for h, _ in COLUMNS) + " |",
             "|" + "---|" * len(COLUMNS)]
    lines += ["| " + " | ".join(fmt(r) for _, fmt in COLUMNS) + " |" for r in rows]
    path = Path(out_dir) / COMPARE_MD
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


# ----------------------------------------------------------------------------- seeds
METRICS: tuple[str, ...] = ("ap_easy", "ap_medium", "ap_hard")


@dataclass(frozen=True)
class ArmSpread:
    """One arm's AP over several seeded runs of the comparison: ``low``/``mean``/``high`` per
    metric."""

    arm: str
    method: str
    low: dict[str, float]
    mean: dict[str, float]
    high: dict[str, float]

    def separated_from(self, other: ArmSpread, metric: str) -> bool:
        """Whether the two arms' seed ranges of ``metric`` do not overlap (the difference
        exceeds the seed-to-seed spread)."""
        return self.low[metric] > other.high[metric] or other.low[metric] > self.high[metric]


def seed_spread(runs: Sequence[Sequence[CompareRow]]) -> list[ArmSpread]:
    """The range of each arm's AP over ``runs`` (one comparison per seed, e.g. two ``compare``
    out folders); an arm missing from a run is an error naming it."""
    if len(runs) < 2:
        raise ValueError("seed_spread needs the rows of at least two runs")
    by_run = [{row.arm: row for row in rows} for rows in runs]
    spreads = []
    for row in runs[0]:
        missing = [i for i, run in enumerate(by_run) if row.arm not in run]
        if missing:
            raise ValueError(f"arm {row.arm!r} is missing from run(s) {missing}")
        values = {m: [getattr(run[row.arm], m) for run in by_run] for m in METRICS}
        spreads.append(ArmSpread(row.arm, row.method, {m: min(v) for m, v in values.items()},
                                 {m: statistics.mean(v) for m, v in values.items()},
                                 {m: max(v) for m, v in values.items()}))
    return spreads


def spread_markdown(spreads: Sequence[ArmSpread], n_seeds: int) -> str:
    """A Markdown table: each arm's AP as min-max over the seeds, and whether it is separated
    from the best arm (by mean Easy AP) beyond the seed spread, per metric."""
    best = max(spreads, key=lambda s: s.mean["ap_easy"])
    lines = [f"| arm | method | Easy ({n_seeds} seeds) | Medium | Hard | vs {best.arm}: "
             "separated E/M/H |", "|---|---|---|---|---|---|"]
    for s in spreads:
        cells = [f"{s.low[m]:.3f}-{s.high[m]:.3f}" for m in METRICS]
        sep = "(best)" if s is best else "/".join(
            "yes" if s.separated_from(best, m) else "no" for m in METRICS)
        lines.append(f"| {s.arm} | {s.method} | " + " | ".join(cells) + f" | {sep} |")
    return "\n".join(lines) + "\n"


# ----------------------------------------------------------------------------- the comparison
#: ``status(arm, stage, fraction done)``, stage in ``search``, ``cost``, ``retrain``.
StatusFn = Callable[[Arm, str, float], None]


def arm_row(arm: Arm, cost: StepCost, search_s: float, genotype: Genotype, params: int,
            metrics: dict[str, float]) -> CompareRow:
    edges, outputs, top_op = genotype_summary(genotype)
    return CompareRow(arm.name, arm.method, arm.n_nodes, arm.concat, cost.activation_mb,
                      cost.seconds, search_s / 60, edges, outputs, top_op, params / 1e6,
                      metrics["ap_easy"], metrics["ap_medium"], metrics["ap_hard"])


def run_arm(arm: Arm, config: PipelineConfig[CompareSettings], data_dir: str | Path,
            arm_dir: Path, status: StatusFn | None = None) -> CompareRow:
    """Search, cost probe, derivation, retraining and held-out AP of one arm."""
    settings = config.settings
    notify = status or (lambda arm, stage, fraction: None)
    spec = dataclasses.replace(config.search, task=dataclasses.replace(
        config.search.task, target="cpm", mode=arm.mode, concat=arm.concat, n_nodes=arm.n_nodes))
    fit, _ = held_out_split(data_dir, settings.holdout_fraction)
    task = FaceSearchTask(spec.task, fit, seed=spec.search.seed)
    total_steps = task.steps_per_epoch * spec.search.epochs
    start = time.perf_counter()
    artifacts = run_search(
        spec, fit, arm_dir / "search", resume=(arm_dir / "search" / CHECKPOINT_FILE).is_file(),
        progress=lambda epoch, step, metrics: notify(arm, "search", step / total_steps),
        render=settings.render)
    search_s = time.perf_counter() - start
    notify(arm, "cost", 0.0)
    cost = measure_step_cost(task, artifacts.supernet, settings.cost_steps, spec.search.device,
                             spec.search.seed)
    train_config = retrain_config(config.train, artifacts.genotype_path, settings.variant,
                                  data_dir, settings.holdout_fraction)

    def on_train(event: TrainEvent) -> None:
        if event.kind == "iteration":
            notify(arm, "retrain", event.iteration / max(event.total_iterations, 1))

    result = retrain(train_config, arm_dir / "train", on_train)
    return arm_row(arm, cost, search_s, artifacts.genotype, count_parameters(result.model),
                   result.progress.metrics)


def run_compare(config: PipelineConfig[CompareSettings], data_dir: str | Path,
                out_dir: str | Path, status: StatusFn | None = None) -> list[CompareRow]:
    """Every arm of ``config`` (finished ones, found in ``compare.csv``, are skipped); returns
    the rows in arm order and writes ``compare.md``."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    arms = config.settings.parsed_arms()
    done = {row.arm: row for row in read_rows(out_dir)}
    for arm in arms:
        if arm.name not in done:
            done[arm.name] = run_arm(arm, config, data_dir, out_dir / "arms" / arm.name, status)
            append_row(out_dir, done[arm.name])
    rows = [done[arm.name] for arm in arms]
    c = config.search
    header = (f"# Table 3 under one budget ({Path(data_dir).name})\n\n"
              f"Search: {c.task.backbone}, {c.task.channels} channels, {c.task.image_size} px, "
              f"batch {c.task.batch_size}, {c.search.epochs} epochs (architecture after "
              f"{c.search.warmup_epochs}), k={c.task.k}. Retrain: ASFD-{config.settings.variant}; "
              f"AP on the held-out {config.settings.holdout_fraction:.0%} of the images. "
              "MB/step: activation memory of one supernet forward + backward "
              "(CPU: saved tensors; GPU: peak allocated); s/step: its wall time. edges and "
              "outputs: per derived cell (mean over P2-P7); top op: the commonest op.")
    write_markdown(out_dir, rows, header)
    return rows
