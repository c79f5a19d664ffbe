"""Every `asfd` command's --help renders (argparse formats help lazily, so a bad help string only
fails when a user asks for it), and every command speaks one option vocabulary."""
import argparse
import re
import subprocess
import sys
import warnings
from pathlib import Path

import pytest

from asfd_cli.main import build_parser, format_warning, main, one_line_warnings
from asfd_cli.model_cmds import parse_size


def _commands() -> list[list[str]]:
    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    out = []
    for name, p in sub.choices.items():
        out.append([name])
        nested = [a for a in p._actions if getattr(a, "choices", None) and isinstance(a.choices, dict)]
        out.extend([name, child] for a in nested for child in a.choices)
    return out


def test_every_command_module_exists_and_a_missing_one_is_an_error(monkeypatch):
    """``COMMAND_MODULES`` names only real modules; a stale name fails loudly, never silently."""
    import asfd_cli.main as cli

    for name in cli.COMMAND_MODULES:
        assert (Path(cli.__file__).parent / f"{name.split('.')[-1]}.py").is_file(), name
    monkeypatch.setattr(cli, "COMMAND_MODULES", (*cli.COMMAND_MODULES, "asfd_cli.no_such_cmds"))
    with pytest.raises(ModuleNotFoundError, match="asfd_cli.no_such_cmds"):
        cli.build_parser()


@pytest.mark.parametrize("argv", _commands(), ids=" ".join)
def test_help_renders(argv, capsys):
    with pytest.raises(SystemExit) as exit_info:
        build_parser().parse_args([*argv, "--help"])
    assert exit_info.value.code == 0
    assert "usage: asfd" in capsys.readouterr().out


# ------------------------------------------------------------------------- one vocabulary
#: Spellings replaced by the one vocabulary (asfd_cli/options.py): accepted, never shown.
OLD_SPELLINGS = ("--output", "--wider", "--image-size", "--threshold")


def _parsers() -> dict[str, argparse.ArgumentParser]:
    parser = build_parser()
    found = {}
    for argv in _commands():
        p = parser
        for name in argv:
            sub = next(a for a in p._actions if isinstance(a, argparse._SubParsersAction))
            p = sub.choices[name]
        found[" ".join(argv)] = p
    return found


def test_one_vocabulary_in_every_command():
    """Outputs are -o/--out, data --data, sizes --size; old spellings stay out of --help."""
    for name, p in _parsers().items():
        shown = {s for a in p._actions for s in a.option_strings}
        text = p.format_help()
        for old in OLD_SPELLINGS:
            assert old not in shown, f"{name} shows {old}"
            assert not re.search(rf"(?<![\w-]){old}(?![\w-])", text), f"{name} --help names {old}"
        if "--out" in shown:
            assert "-o" in shown, f"{name}: --out without -o"
    parsers = _parsers()
    for name in ("detect", "eval", "export", "derive", "search", "compare", "demo", "tune",
                 "profile"):
        assert "--threads" in {s for a in parsers[name]._actions for s in a.option_strings}, name
    assert "--data" in {s for a in parsers["eval"]._actions for s in a.option_strings}


@pytest.mark.parametrize("argv, dest, value", [
    (["eval", "m.pt", "--wider", "D"], "data", Path("D")),
    (["detect", "m.pt", "img.jpg", "--output", "O"], "output", Path("O")),
    (["detect", "m.pt", "img.jpg", "-o", "O", "--threshold", "0.3"], "threshold", 0.3),
    (["export", "m.pt", "--output", "m.onnx"], "output", Path("m.onnx")),
    (["derive", "g", "--output", "d0.pt"], "out", Path("d0.pt")),
    (["render", "g", "--output", "g.png"], "out", Path("g.png")),
    (["plot-history", "run", "--output", "h.png"], "out", Path("h.png")),
    (["compare-seeds", "a", "--output", "s.md"], "out", Path("s.md")),
    (["search", "cpm", "--out", "R", "--image-size", "64"], "image_size", 64),
])
def test_old_spellings_still_work_with_a_note(argv, dest, value, capsys):
    assert getattr(build_parser().parse_args(argv), dest) == value
    old = next(a for a in argv if a in OLD_SPELLINGS)
    assert f"{old} is deprecated; use --" in capsys.readouterr().err


@pytest.mark.parametrize("argv, dest, value", [
    (["eval", "m.pt", "--data", "D"], "data", Path("D")),
    (["detect", "m.pt", "img.jpg", "-o", "O", "--score-threshold", "0.3"], "threshold", 0.3),
    (["derive", "g", "-o", "d0.pt", "--threads", "2"], "threads", 2),
    (["search", "cpm", "-o", "R", "--size", "64x64"], "image_size", 64),
    (["train", "c.yaml", "--size", "320"], "size", 320),
    (["profile", "--size", "320"], "size", (320, 320)),
])
def test_new_spellings(argv, dest, value, capsys):
    assert getattr(build_parser().parse_args(argv), dest) == value
    assert "deprecated" not in capsys.readouterr().err


def test_sizes_parse_one_way():
    assert parse_size("640x480") == (640, 480) and parse_size("320") == (320, 320)
    for bad in ("640x", "0x4", "axb", "1x2x3"):
        with pytest.raises(argparse.ArgumentTypeError):
            parse_size(bad)


@pytest.mark.parametrize("argv, usage", [
    (["profile", "--bogus"], "usage: asfd profile"),
    (["genotypes", "validate", "g.yaml", "--bogus"], "usage: asfd genotypes validate"),
    (["search", "cpm", "--out", "R", "--size", "64x32"], "usage: asfd search"),
    (["eval", "m.pt", "--data", "D", "--threads", "-1"], "usage: asfd eval"),
])
def test_bad_flags_print_the_commands_usage(argv, usage, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    assert capsys.readouterr().err.startswith(usage)


def test_warnings_are_one_line():
    assert format_warning("a  b\nc", UserWarning, "/x/y.py", 3, "source()") == \
        "warning: a b c (UserWarning)\n"
    with one_line_warnings():
        assert warnings.formatwarning is format_warning
    assert warnings.formatwarning is not format_warning
    code = ("import warnings\nfrom asfd_cli.main import one_line_warnings\n"
            "with one_line_warnings():\n    warnings.warn('two\\nlines')\n")
    err = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True).stderr
    assert err == "warning: two lines (UserWarning)\n"


def test_light_commands_never_import_torch(tmp_path):
    """eval-preds, eval-fddb, render and genotypes start without torch (seconds saved): of
    ``search_spaces`` they import the torch-free genotype schemas only."""
    code = f"""
import sys
from asfd_cli.main import main
for argv in (["genotypes", "validate", "asfd_paper_like"], ["genotypes", "list"],
             ["render", "pcdarts_example", "-o", {str(tmp_path / "g.svg")!r}]):
    assert main(argv) == 0, argv
import detectors.data.fddb, detectors.data.wider, detectors.evaluation.fddb_eval
import detectors.evaluation.wider_eval  # what eval-preds and eval-fddb import
print(sorted(m for m in sys.modules if m.split(".")[0] in ("torch", "search_spaces")
             and m not in ("search_spaces", "search_spaces.schemas")))
"""
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip().splitlines()[-1] == "[]"


def test_bars_count_epochs_from_0_show_time_left_and_finish():
    import io

    from rich.console import Console
    from rich.progress import TimeRemainingColumn

    from asfd_cli.console import finish
    from asfd_cli.search_cmds import search_progress

    bar, update = search_progress(Console(file=io.StringIO()), total_steps=10)
    update(0, 4, {"loss": 1.0})  # the engine's first epoch is epoch 0, as in history.jsonl
    assert (bar.tasks[0].description, bar.tasks[0].completed) == ("epoch 0", 4)
    assert any(isinstance(c, TimeRemainingColumn) for c in bar.columns)
    finish(bar)  # e.g. a search that stopped early
    assert bar.tasks[0].finished
