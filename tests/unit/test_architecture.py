"""The module graph keeps its layers (pyproject.toml [tool.importlinter], docs/architecture.md).

import-linter reads the real imports of bjc (also those inside functions) and
fails on any import from a lower layer to a higher one, and between modules of
one layer that are declared independent. Every module must sit in a layer, so a
new module cannot escape the check.
"""

from __future__ import annotations

import importlib
import logging
import pkgutil
import tomllib
from pathlib import Path
from typing import Any

import pytest
from importlinter.cli import lint_imports

import bjc

ROOT = Path(__file__).resolve().parents[2]
PYPROJECT = ROOT / "pyproject.toml"


def _contracts() -> list[dict[str, Any]]:
    return tomllib.loads(PYPROJECT.read_text())["tool"]["importlinter"]["contracts"]


def _names(layers: list[str], prefix: str = "") -> set[str]:
    return {prefix + name.strip() for layer in layers for name in layer.split("|")}


def test_the_import_contracts_are_kept(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(ROOT)
    # import-linter configures logging (dictConfig), which disables every logger that
    # exists in this process: bjc's, which later tests read through caplog
    enabled = [
        logger
        for logger in logging.root.manager.loggerDict.values()
        if isinstance(logger, logging.Logger) and not logger.disabled
    ]
    try:
        assert lint_imports(config_filename=str(PYPROJECT), no_cache=True, no_logo=True) == 0
    finally:
        for logger in enabled:
            logger.disabled = False


def test_every_module_has_a_layer() -> None:
    """Top-level modules and packages in the package layers; modules of a layered
    package (a contract's container) in that package's layers."""
    top: set[str] = set()
    inner: dict[str, set[str]] = {}
    for contract in _contracts():
        if contract["type"] != "layers":
            continue
        for container in contract.get("containers", []):
            inner[container] = _names(contract["layers"], container + ".")
        if not contract.get("containers"):
            top |= _names(contract["layers"])
    missing = {f"bjc.{m.name}" for m in pkgutil.iter_modules(bjc.__path__)} - top
    for container, placed in inner.items():
        path = importlib.import_module(container).__path__
        missing |= {f"{container}.{m.name}" for m in pkgutil.iter_modules(path)} - placed
    assert missing == set()
