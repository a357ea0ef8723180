"""The module graph keeps its layers (pyproject.toml [tool.importlinter], docs/architecture.md).

import-linter reads the real imports of bjc (also those inside functions) and
fails on any import from a lower layer to a higher one, and between modules of
one layer that are declared independent. Every top-level module must sit in a
layer, so a new module cannot escape the check.
"""

from __future__ import annotations

import pkgutil
import tomllib
from pathlib import Path

import pytest
from importlinter.cli import lint_imports

import bjc

ROOT = Path(__file__).resolve().parents[2]
PYPROJECT = ROOT / "pyproject.toml"


def _layers() -> list[str]:
    contracts = tomllib.loads(PYPROJECT.read_text())["tool"]["importlinter"]["contracts"]
    (layered,) = [c for c in contracts if c["type"] == "layers"]
    return list(layered["layers"])


def test_the_import_contracts_are_kept(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(ROOT)
    assert lint_imports(config_filename=str(PYPROJECT), no_cache=True, no_logo=True) == 0


def test_every_module_has_a_layer() -> None:
    placed = {name.strip() for layer in _layers() for name in layer.split("|")}
    modules = {f"bjc.{m.name}" for m in pkgutil.iter_modules(bjc.__path__)}
    assert modules - placed == set()
