"""The package layout of the README is true: no package imports one to its left, and no
tier of ``detectors`` one after it."""
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


#: The tiers of ``detectors`` and what each may import (README, "Layout").
DETECTOR_TIERS: dict[str, set[str]] = {
    "models": set(),
    "data": {"models"},
    "evaluation": {"data"},
    "engine": {"models", "data", "evaluation"},
    "workflows": {"models", "data", "evaluation", "engine"},
}


def imported_tiers(path: Path) -> set[str]:
    """The ``detectors`` sub-packages that ``path`` imports."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        names = ([alias.name for alias in node.names] if isinstance(node, ast.Import) else
                 [node.module] if isinstance(node, ast.ImportFrom) and node.module else [])
        found |= {n.split(".")[1] for n in names
                  if n.startswith("detectors.") and n.count(".") >= 1}
    return found


@pytest.mark.parametrize("tier", sorted(DETECTOR_TIERS))
def test_no_detector_tier_imports_one_above_it(tier):
    root = ROOT / "detectors" / tier
    assert root.is_dir()
    bad = {str(p.relative_to(ROOT)): sorted(imported_tiers(p) - DETECTOR_TIERS[tier] - {tier})
           for p in sorted(root.rglob("*.py"))}
    assert not {k: v for k, v in bad.items() if v}


def test_detectors_is_its_tiers_only():
    assert {p.name for p in (ROOT / "detectors").iterdir() if p.suffix == ".py"} == {"__init__.py"}
    assert {p.name for p in (ROOT / "detectors").iterdir()
            if p.is_dir() and p.name != "__pycache__"} == set(DETECTOR_TIERS)
