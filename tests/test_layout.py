"""The package layout of the README is true: no package imports one to its left."""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
#: What each package may import (besides itself and third-party code): README, "Layout".
ALLOWED: dict[str, set[str]] = {
    "genotypes": set(),
    "nas_search": {"genotypes"},
    "search_spaces": {"nas_search", "genotypes"},
    "visualize": {"genotypes"},
    "detectors": {"search_spaces", "nas_search", "genotypes", "visualize"},
}
PROJECT = {*ALLOWED, "asfd_cli"}


def imported_packages(path: Path) -> set[str]:
    """Top-level project packages that ``path`` imports (anywhere in the file)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.add(node.module.split(".")[0])
    return found & PROJECT


@pytest.mark.parametrize("package", sorted(ALLOWED))
def test_no_package_imports_one_above_it(package):
    bad = {str(p.relative_to(ROOT)): sorted(imported_packages(p) - ALLOWED[package] - {package})
           for p in sorted((ROOT / package).rglob("*.py"))}
    assert not {k: v for k, v in bad.items() if v}
