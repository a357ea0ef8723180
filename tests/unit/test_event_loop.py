"""`bjc run` and `bjc demo` run on uvloop where it is installed, else on asyncio's loop."""

from __future__ import annotations

import asyncio
import sys

import pytest

from bjc.commands.process import run_async


async def _loop_module() -> str:
    await asyncio.sleep(0)
    return type(asyncio.get_running_loop()).__module__


def test_runs_on_uvloop_where_installed() -> None:
    pytest.importorskip("uvloop")
    assert run_async(_loop_module()).startswith("uvloop")


def test_runs_on_asyncio_loop_without_uvloop(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "uvloop", None)  # `import uvloop` now fails
    assert run_async(_loop_module()).startswith("asyncio")
