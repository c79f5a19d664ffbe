"""Search commands: ``asfd search``, ``derive``, ``compare``, ``compare-seeds``, ``tune`` and
``demo``.

Every config value can be set three ways, later ones winning: the YAML file (``--config``), a
dedicated flag (``--epochs 5``), or ``--set section.key=value`` (parsed as YAML).
"""
from __future__ import annotations

import argparse
import contextlib
import json
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from rich.console import Console
from rich.markup import escape
from rich.progress import Progress
from rich.table import Table

from asfd_cli.console import console, finish, progress_bar
from asfd_cli.main import CLIError
from asfd_cli.model_cmds import square_size
from asfd_cli.options import add_option, add_out, add_threads, set_threads
from nas_search.strategies import list_strategies
from search_spaces.schemas import fpn_of

if TYPE_CHECKING:
    from detectors.workflows.compare import Arm, CompareRow
    from detectors.workflows.pipeline import PipelineConfig
    from detectors.workflows.tune import TuneSettings
    from genotypes.schema import Genotype

#: The engine's ``progress(epoch, step, metrics)`` callback.
ProgressFn = Callable[[int, int, Mapping[str, float]], None]

#: The shipped configs (``configs/`` of a source checkout or editable install).
CONFIG_DIR = Path(__file__).resolve().parents[1] / "configs"

#: ``asfd search`` flag -> dotted config key of ``configs/search_*.yaml``.
SEARCH_FLAGS: dict[str, str] = {
    "mode": "task.mode", "concat": "task.concat", "nodes": "task.n_nodes",
    "channels": "task.channels", "backbone": "task.backbone", "image_size": "task.image_size",
    "batch_size": "task.batch_size", "max_images": "task.max_images",
    "epochs": "search.epochs", "warmup": "search.warmup_epochs", "seed": "search.seed",
    "device": "search.device",
}

THREADS_HELP = ("torch CPU threads of the search (default: 1; the supernet's many small convs "
                "gain little from more, and lose badly when the cores are shared)")

#: Share of the search epochs spent warming up the weights (paper: 20 of 50, Sec. 4.1), used
#: when the epochs are set (``--epochs``, ``--set search.epochs``) and the warm-up is not.
WARMUP_SHARE = 0.4


@contextlib.contextmanager
def user_errors(*kinds: type[BaseException]) -> Iterator[None]:
    """Turn the library errors ``kinds`` into :class:`CLIError` (one line, exit code 2)."""
    try:
        yield
    except kinds as exc:
        raise CLIError(str(exc)) from None


def warmup_overrides(args: argparse.Namespace) -> list[str]:
    """One rule for ``--epochs N`` and ``--set search.epochs=N``: the warm-up becomes
    :data:`WARMUP_SHARE` of the epochs, unless ``--warmup`` or ``--set search.warmup_epochs``
    sets it."""
    from nas_search.runtime import load_yaml

    given = {key.strip(): raw for key, _, raw in (o.partition("=") for o in args.overrides)}
    if args.warmup is not None or "search.warmup_epochs" in given:
        return []
    epochs = (load_yaml(given["search.epochs"], "--set search.epochs") if "search.epochs" in given
              else args.epochs)
    if not isinstance(epochs, int) or isinstance(epochs, bool):
        return []  # unset, or a wrong type the config check reports
    return [f"search.warmup_epochs={round(WARMUP_SHARE * epochs)}"]


def flag_overrides(args: argparse.Namespace, flags: Mapping[str, str]) -> list[str]:
    """``key=value`` overrides (values as JSON, a subset of YAML) for the flags that were given."""
    return [f"{key}={json.dumps(getattr(args, name))}" for name, key in flags.items()
            if getattr(args, name, None) is not None]


def add_config_args(p: argparse.ArgumentParser, default: str | None, what: str) -> None:
    p.add_argument("--config", default=default, metavar="YAML",
                   help=f"{what} config file (default: {default or 'built-in defaults'})")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override any config value, e.g. --set search.arch_lr=0.006 (repeatable)")


def search_progress(out: Console, total_steps: int) -> tuple[Progress, ProgressFn]:
    """A rich progress bar over search steps and the engine's ``progress`` callback for it;
    epochs count from 0, as in ``history.jsonl``."""
    bar = progress_bar(out)
    job = bar.add_task("search", total=total_steps, status="")

    def update(epoch: int, step: int, metrics: Mapping[str, float]) -> None:
        shown = "  ".join(f"{k} {v:.3g}" for k, v in metrics.items())
        bar.update(job, completed=step, description=f"epoch {epoch}", status=shown)

    return bar, update


def genotype_table(genotype: Genotype, title: str) -> Table:
    """One row per searched level: its edges (parent:op per node) and output nodes."""
    table = Table(title=title)
    for column in ("level", "architecture", "output"):
        table.add_column(column)
    fpn = fpn_of(genotype)
    if fpn is not None:
        for level, g in fpn.levels.items():
            table.add_row(level, "  ".join(f"{p}: {op}" for p, op in g.paths().items()),
                          " ".join(f"{p} {w:.2f}" for p, w in g.fusion.items()))
    for level, cell in genotype.cells.items():
        nodes = "  ".join(f"{j}<-" + ",".join(f"{e.parent}:{e.op}" for e in node.edges)
                          for j, node in enumerate(cell.nodes, 1))
        table.add_row(level, nodes, f"{cell.concat} {list(cell.output_nodes)}")
    return table


# ----------------------------------------------------------------------------- search
def cmd_search(args: argparse.Namespace) -> int:
    import torch

    from detectors.data.sources import DataSource
    from detectors.engine.distributed import WorkerError, init_from_env
    from detectors.workflows.pipeline import (
        check_search_resume, run_search, search_steps, synthetic_dataset,
    )
    from detectors.workflows.search_task import load_search_file
    from nas_search.runtime import NonFiniteLossError
    from nas_search.search import CHECKPOINT_FILE, GENOTYPE_FILE

    set_threads(args.threads)
    overrides = [f"task.target={json.dumps(args.target)}", *flag_overrides(args, SEARCH_FLAGS)]
    spec = load_search_file(args.config, overrides + args.overrides + warmup_overrides(args))
    out = console()
    run_dir = Path(args.out)
    checkpoint = run_dir / CHECKPOINT_FILE
    if checkpoint.exists() and not args.resume:
        raise CLIError(f"{run_dir} holds a search checkpoint: pass --resume to continue it, or "
                       "choose another --out")
    if args.resume and not checkpoint.exists():
        raise CLIError(f"nothing to resume: {checkpoint} does not exist")
    data_dir = args.data if args.data is not None else run_dir / "data"
    if args.resume and (run_dir / GENOTYPE_FILE).is_file():  # written when the search ends
        check_search_resume(spec, DataSource(str(data_dir)), run_dir)
        out.print(f"the search in {escape(str(run_dir))} is complete: nothing to resume; its "
                  f"genotype: {escape(str(run_dir / GENOTYPE_FILE))}")
        return 0
    with init_from_env() as rank, user_errors(WorkerError, NonFiniteLossError):
        if args.data is None:
            if rank == 0:
                synthetic_dataset(data_dir, args.synthetic_images, seed=spec.search.seed)
                out.print(f"[yellow]no --data: searching on a SYNTHETIC smoke-test set "
                          f"({args.synthetic_images} images) at {escape(str(data_dir))}; "
                          "not for reported figures[/]")
            if torch.distributed.is_initialized():
                torch.distributed.barrier()
        data = DataSource(str(data_dir))
        if args.nproc > 1 or rank != 0:
            artifacts = run_search(spec, data, run_dir, args.resume, nproc=args.nproc)
        else:
            bar, update = search_progress(out, search_steps(spec, data))
            with bar:
                artifacts = run_search(spec, data, run_dir, args.resume, progress=update)
                finish(bar)
    if artifacts is None:  # a torchrun rank other than 0
        return 0
    out.print(genotype_table(artifacts.genotype, f"{args.target} genotype"))
    metrics = "  ".join(f"{k} {v:.4g}" for k, v in artifacts.genotype.meta.metrics.items())
    out.print(f"final metrics: {metrics}")
    for what, path in (("genotype", artifacts.genotype_path), ("graph", artifacts.svg),
                       ("history", artifacts.history_path),
                       ("history plot", artifacts.history_png)):
        out.print(f"{what:>13}: {escape(str(path)) if path else '- (Graphviz dot not found)'}")
    return 0


def register_search(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "search", help="search AutoFEM-FPN or AutoFEM-CPM in a dual-shot face detector",
        description="Differentiable search (PC-DARTS or the top-1 Gumbel tree) of an AutoFEM "
                    "module; writes RUN_DIR/genotype.yaml, genotype.svg, history.jsonl, "
                    "history.png and checkpoint.pt (for --resume).")
    p.add_argument("target", choices=("fpn", "cpm"), help="the module to search")
    add_config_args(p, None, "search")
    p.add_argument("--data", help="WIDER-format folder (default: generate a synthetic "
                                  "smoke-test set in RUN_DIR/data)")
    add_out(p, "run folder", required=True, metavar="RUN_DIR")
    p.add_argument("--resume", action="store_true",
                   help="continue RUN_DIR's checkpoint, with the settings it started with (only "
                        "search.device, search.log_every and task.workers may change)")
    p.add_argument("--mode", choices=list_strategies(),
                   help="CPM search strategy (registered in nas_search.strategies)")
    p.add_argument("--concat", choices=("cat_leaf", "cat_all"), help="CPM cell output")
    p.add_argument("--nodes", type=int, help="intermediate nodes per CPM cell")
    p.add_argument("--epochs", type=int,
                   help=f"search epochs (warm-up: {WARMUP_SHARE:.0%}% unless --warmup; the same "
                        "for --set search.epochs=N)")
    p.add_argument("--warmup", type=int, help="epochs before the architecture steps start")
    p.add_argument("--channels", type=int, help="supernet width")
    p.add_argument("--backbone", help="backbone name (e.g. mobilenet0.25, resnet50)")
    add_option(p, "--size", deprecated=("--image-size",), dest="image_size", type=square_size,
               metavar="N|NxN", help="task.image_size: the square search input (px)")
    p.add_argument("--batch-size", type=int, help="images per step (per process)")
    p.add_argument("--max-images", type=int, help="read at most this many images")
    p.add_argument("--seed", type=int, help="seed of weights, data order and Gumbel samples")
    p.add_argument("--device", help="cpu, cuda, cuda:1 ...")
    p.add_argument("--nproc", type=int, default=1,
                   help="spawn this many gloo processes (or launch with torchrun)")
    add_threads(p, default=1, help=THREADS_HELP)
    p.add_argument("--synthetic-images", type=int, default=32,
                   help="size of the synthetic set made when --data is absent (default: 32)")
    p.set_defaults(func=cmd_search)


# ----------------------------------------------------------------------------- derive
def cmd_derive(args: argparse.Namespace) -> int:
    from detectors.engine.macs import profile_model
    from detectors.models.asfd import PAPER_TABLE5, save_model
    from detectors.workflows.pipeline import derive_detector

    set_threads(args.threads)
    model = derive_detector(args.source, args.variant)
    path = save_model(model, args.out, extra={"derived_from": str(args.source)})
    prof = profile_model(model, (640, 480))
    params, macs = f"{prof.params_m:.3f} M", f"{prof.macs_b:.3f} G"
    paper = PAPER_TABLE5[args.variant]
    table = Table(title=f"ASFD-{args.variant}",
                  caption=f"derived from {escape(str(args.source))}")
    for column in ("feature modules", "params", "MACs @640x480", "paper params", "paper MACs"):
        table.add_column(column)
    table.add_row(" -> ".join(model.config.feature_modules), params, macs,
                  f"{paper.params_m} M", f"{paper.macs_b} G")
    out = console()
    out.print(table)
    out.print(f"untrained model: {escape(str(path))}")
    if args.train:
        from asfd_cli.train_cmds import train_progress
        from detectors.engine.checkpoint import MODEL_FILE
        from detectors.engine.config import load_config
        from detectors.engine.trainer import train
        from detectors.workflows.pipeline import resolve_search_output, with_genotype
        from nas_search.runtime import NonFiniteLossError

        threads = [f"run.threads={args.threads}"] if args.threads else []
        config = with_genotype(load_config(args.train, threads + args.overrides),
                               resolve_search_output(args.source), args.variant)
        train_dir = args.train_out or path.with_suffix("")
        out.print(f"training ASFD-{args.variant} with {escape(str(args.train))} into "
                  f"{escape(str(train_dir))}")
        bar, on_event = train_progress(out, config)
        with bar, user_errors(NonFiniteLossError, FileExistsError):
            result = train(config, train_dir, callback=on_event)
            finish(bar)
        if result.progress.metrics:
            out.print("AP " + "  ".join(f"{k.removeprefix('ap_')} {v:.4f}"
                                        for k, v in result.progress.metrics.items()))
        out.print(f"trained model: {escape(str(train_dir / MODEL_FILE))}")
    return 0


def register_derive(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "derive", help="build the fixed ASFD network of a searched genotype",
        description="Derive the discrete architecture of a search (RUN_DIR or a genotype file "
                    "or shipped name) into an untrained ASFD-D0..D6 network, print its params "
                    "and MACs, and optionally train it.")
    p.add_argument("source", metavar="RUN_DIR|GENOTYPE")
    p.add_argument("--variant", default="D0", help="ASFD family member, D0..D6 (default: D0)")
    add_out(p, "the untrained model file", required=True, type=Path, metavar="MODEL.pt")
    p.add_argument("--train", metavar="CONFIG", help="then train it with this training config")
    p.add_argument("--train-out", type=Path, metavar="DIR",
                   help="training run folder (default: MODEL path without .pt)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a training config value (with --train)")
    add_threads(p, help="torch CPU threads, also the training's run.threads with --train "
                        "(default: 0, one per core)")
    p.set_defaults(func=cmd_derive)


# ----------------------------------------------------------------------------- compare
def rows_table(rows: Sequence[CompareRow], title: str) -> Table:
    from detectors.workflows.compare import COLUMNS

    table = Table(title=title)
    for header, _ in COLUMNS:
        table.add_column(header, justify="left" if header in ("method", "concat", "top op")
                         else "right")
    for row in rows:
        table.add_row(*(fmt(row) for _, fmt in COLUMNS))
    return table


def cmd_compare(args: argparse.Namespace) -> int:
    from detectors.workflows.compare import COMPARE_CSV, COMPARE_MD, CompareSettings, run_compare
    from detectors.workflows.pipeline import load_pipeline_config

    set_threads(args.threads)
    config = load_pipeline_config(args.config, CompareSettings, "compare", args.budget,
                                  flag_overrides(args, {"device": "search.device"})
                                  + args.overrides)
    arms = config.settings.parsed_arms()
    out = console()
    bar = progress_bar(out)
    overall = bar.add_task("arms", total=len(arms), status="")
    current = bar.add_task("", total=100, status="")
    names = [a.name for a in arms]

    def status(arm: Arm, stage: str, fraction: float) -> None:
        bar.update(overall, completed=names.index(arm.name))
        bar.update(current, description=f"{arm.name}: {stage}", completed=round(100 * fraction))

    with bar:
        rows = run_compare(config, args.data, args.out, status)
        bar.remove_task(current)  # the last arm's stage is over
        finish(bar)
    table = rows_table(rows, "Table 3 under one budget")
    table.caption = f"data: {escape(str(args.data))}"
    out.print(table)
    out.print(f"written: {escape(str(Path(args.out) / COMPARE_CSV))}, "
              f"{escape(str(Path(args.out) / COMPARE_MD))}")
    return 0


def register_compare(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "compare", help="Table 3 on a budget: PC-DARTS vs top-1 tree, cat_all vs cat_leaf, nodes",
        description="Search the AutoFEM-CPM with every arm of the config under the same budget, "
                    "measure memory and time per search step, retrain each derived network the "
                    "same way and score it on held-out images. Writes OUT/compare.csv (rows are "
                    "skipped when rerun: resumable) and OUT/compare.md.")
    add_config_args(p, str(CONFIG_DIR / "search_compare.yaml"), "comparison")
    p.add_argument("--data", required=True, help="WIDER-format folder")
    add_out(p, "output folder", required=True, type=Path, metavar="DIR")
    p.add_argument("--budget", help="a named budget of the config (e.g. micro, paper)")
    p.add_argument("--device", help="search device (cpu, cuda ...); training: train.run.device")
    add_threads(p, default=1, help=THREADS_HELP)
    p.set_defaults(func=cmd_compare)


def cmd_compare_seeds(args: argparse.Namespace) -> int:
    from detectors.workflows.compare import read_rows, seed_spread, spread_markdown

    runs = []
    for folder in args.runs:
        rows = read_rows(folder)
        if not rows:
            raise ValueError(f"{folder}: no compare.csv with finished arms")
        runs.append(rows)
    text = spread_markdown(seed_spread(runs), len(runs))
    if args.out:
        args.out.write_text(text, encoding="utf-8")
    console().print(text, markup=False)
    return 0


def register_compare_seeds(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "compare-seeds", help="AP range of each compare arm over seeds, and what beats the spread",
        description="Read the compare.csv of several `asfd compare` runs that differ only in "
                    "their seed (--set search.seed=1 --set train.run.seed=1) and print each "
                    "arm's AP range and whether it is separated from the best arm beyond it.")
    p.add_argument("runs", nargs="+", type=Path, metavar="DIR", help="compare out folders")
    add_out(p, "also write the Markdown table here", type=Path, metavar="MD")
    p.set_defaults(func=cmd_compare_seeds)


# ----------------------------------------------------------------------------- demo
def cmd_demo(args: argparse.Namespace) -> int:
    from detectors.engine.reporting import TrainEvent
    from detectors.workflows.demo import DemoSettings, run_demo
    from detectors.workflows.pipeline import load_pipeline_config

    set_threads(args.threads)
    config = load_pipeline_config(args.config, DemoSettings, "demo", args.budget, args.overrides)
    out = console()
    start = time.perf_counter()
    if args.data is None:
        out.print(f"[yellow]no --data: generating {config.settings.synthetic_images} SYNTHETIC "
                  "smoke-test images; the AP below is a smoke test, not a face-detection figure[/]")
    bar = progress_bar(out)
    search_job = bar.add_task("1/2 search AutoFEM-CPM", total=None, status="")
    train_job = bar.add_task("2/2 retrain ASFD-" + config.settings.variant, total=None, status="")

    def on_search(total_steps: int) -> ProgressFn:
        bar.update(search_job, total=total_steps)

        def update(epoch: int, step: int, metrics: Mapping[str, float]) -> None:
            bar.update(search_job, completed=step, status="  ".join(
                f"{k} {v:.3g}" for k, v in metrics.items()))

        return update

    def on_train(event: TrainEvent) -> None:
        if event.kind == "start":  # the search is over
            bar.update(search_job, completed=bar.tasks[search_job].total)
        bar.update(train_job, total=event.total_iterations, completed=event.iteration,
                   status=f"loss {event.loss:.3f}" if event.kind == "iteration" else event.message)

    with bar:
        result = run_demo(config, args.out, args.data, on_search, on_train)
        finish(bar)
    minutes = (time.perf_counter() - start) / 60
    out.print(genotype_table(result.search.genotype, "searched AutoFEM-CPM (one cell per level)"))
    label = "smoke test, synthetic data" if result.synthetic else f"held-out {args.data}"
    table = Table(title=f"ASFD-{config.settings.variant} AP", caption=escape(label))
    for column in ("Easy", "Medium", "Hard", "params", "MACs @640x480"):
        table.add_column(column, justify="right")
    table.add_row(*(f"{result.metrics.get(f'ap_{s}', float('nan')):.4f}"
                    for s in ("easy", "medium", "hard")),
                  f"{result.profile.params_m:.3f} M", f"{result.profile.macs_b:.3f} G")
    out.print(table)
    s = result.search
    for what, path in (("data", result.data_dir), ("genotype", s.genotype_path),
                       ("graph", s.svg), ("search history", s.history_path),
                       ("history plot", s.history_png), ("untrained model", result.untrained_model),
                       ("trained model", result.train_dir / "model.pt"),
                       ("training log", result.train_dir / "metrics.csv")):
        out.print(f"{what:>16}: {escape(str(path)) if path else '- (Graphviz dot not found)'}")
    out.print(f"done in {minutes:.1f} min")
    return 0


def register_demo(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "demo", help="search, derive, retrain and evaluate in a few minutes (synthetic data "
                     "unless --data)",
        description="The whole method on a small budget: an AutoFEM-CPM search (top-1 Gumbel "
                    "tree, cat_leaf), the derived ASFD-D0, a short retraining and its AP on "
                    "held-out images. Rerunning with the same --out resumes.")
    add_config_args(p, str(CONFIG_DIR / "demo.yaml"), "demo")
    p.add_argument("--data", help="WIDER-format folder (default: synthetic smoke-test faces)")
    add_out(p, "output folder (default: runs/demo)", type=Path, default=Path("runs/demo"))
    p.add_argument("--budget", help="a named budget of the config (e.g. smoke)")
    add_threads(p, default=1, help=THREADS_HELP)
    p.set_defaults(func=cmd_demo)


# ----------------------------------------------------------------------------- tune
def _tune_worker(config: PipelineConfig[TuneSettings], data: str, out: Path, trials: int, storage: str, study: str,
                 worker: int) -> None:
    """One ``--jobs`` process (module level, so that it can be spawned)."""
    from detectors.workflows.tune import run_tune

    run_tune(config, data, out, trials, storage, study, worker)


def cmd_tune(args: argparse.Namespace) -> int:
    import multiprocessing

    import optuna

    from detectors.workflows.pipeline import load_pipeline_config
    from detectors.workflows.tune import TuneSettings, default_storage, open_study, run_tune

    set_threads(args.threads)
    config = load_pipeline_config(args.config, TuneSettings, "tune", args.budget,
                                  flag_overrides(args, {"objective": "tune.objective"})
                                  + args.overrides)
    storage = args.storage or default_storage(args.out)
    args.out.mkdir(parents=True, exist_ok=True)
    out = console()
    out.print(f"study {args.study!r} in {escape(storage)}: {args.trials} trial(s) per process, "
              f"{args.jobs} process(es), objective AP {config.settings.objective}")
    if args.jobs > 1:
        open_study(storage, args.study, config.settings)  # create it once, before the workers
        context = multiprocessing.get_context("spawn")
        workers = [context.Process(target=_tune_worker, args=(
            config, args.data, args.out, args.trials, storage, args.study, args.worker + i))
            for i in range(args.jobs)]
        for w in workers:
            w.start()
        for w in workers:
            w.join()
        failed = [w.exitcode for w in workers if w.exitcode]
        if failed:
            raise CLIError(f"{len(failed)} tuning process(es) failed (exit codes {failed})")
        study = open_study(storage, args.study, config.settings)
    else:
        study = run_tune(config, args.data, args.out, args.trials, storage, args.study,
                         args.worker)
    finished = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    table = Table(title=f"study {args.study}, best first",
                  caption=f"{len(study.trials)} trials, {len(finished)} complete; top 10 shown")
    for column in ("trial", f"AP {config.settings.objective}", "margin", "lambda1", "lambda2",
                   "lr"):
        table.add_column(column, justify="right")
    for t in sorted(finished, key=lambda t: -t.value)[:10]:
        table.add_row(str(t.number), f"{t.value:.4f}",
                      *(f"{t.params[k]:.4g}" for k in ("margin", "lambda1", "lambda2", "lr")))
    out.print(table)
    if finished:
        best = study.best_trial
        out.print(f"best: --set loss.params.margin={best.params['margin']:.4g} "
                  f"--set loss.params.lambda1={best.params['lambda1']:.4g} "
                  f"--set loss.params.lambda2={best.params['lambda2']:.4g} "
                  f"--set optim.lr={best.params['lr']:.4g}  (run {best.user_attrs['run_dir']})")
    return 0


def register_tune(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "tune", help="Optuna over the DRMC loss weights (m, lambda1, lambda2) and the lr",
        description="Each trial trains the configured ASFD variant briefly and scores the "
                    "chosen AP on held-out images; the median pruner stops weak trials early. "
                    "Processes sharing --storage and --study add to one study.")
    add_config_args(p, str(CONFIG_DIR / "search_tune.yaml"), "tuning")
    p.add_argument("--data", required=True, help="WIDER-format folder")
    add_out(p, "folder of the trials' training runs (and of tune.db by default)",
            required=True, type=Path, metavar="RUN_DIR")
    p.add_argument("--trials", type=int, default=10, help="trials per process (default: 10)")
    p.add_argument("--storage", help="Optuna storage URL (default: sqlite:///RUN_DIR/tune.db)")
    p.add_argument("--study", default="drmc", help="study name (default: drmc)")
    p.add_argument("--objective", choices=("easy", "medium", "hard"), help="tune.objective")
    p.add_argument("--budget", help="a named budget of the config (e.g. smoke)")
    p.add_argument("--jobs", type=int, default=1, help="processes to spawn (default: 1)")
    p.add_argument("--worker", type=int, default=0,
                   help="index of this process's sampler seed (tune.seed + worker); give each "
                        "process started by hand its own (default: 0)")
    add_threads(p, default=1, help=THREADS_HELP)
    p.set_defaults(func=cmd_tune)


def register(subparsers: argparse._SubParsersAction) -> None:
    register_search(subparsers)
    register_derive(subparsers)
    register_compare(subparsers)
    register_compare_seeds(subparsers)
    register_tune(subparsers)
    register_demo(subparsers)
