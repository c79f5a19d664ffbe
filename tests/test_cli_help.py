"""Every `asfd` command's --help renders (argparse formats help lazily, so a bad help string only
fails when a user asks for it)."""
import pytest

from asfd_cli.main import build_parser


def _commands() -> list[list[str]]:
    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    out = []
    for name, p in sub.choices.items():
        out.append([name])
        nested = [a for a in p._actions if getattr(a, "choices", None) and isinstance(a.choices, dict)]
        out.extend([name, child] for a in nested for child in a.choices)
    return out


@pytest.mark.parametrize("argv", _commands(), ids=" ".join)
def test_help_renders(argv, capsys):
    with pytest.raises(SystemExit) as exit_info:
        build_parser().parse_args([*argv, "--help"])
    assert exit_info.value.code == 0
    assert "usage: asfd" in capsys.readouterr().out
