"""Tests that need an outside tool skip without it, except under CI, which must run them."""

from __future__ import annotations

import pytest

from tests.integration.demo_process import require


def test_a_missing_tool_skips_outside_ci_and_fails_under_ci(monkeypatch):
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.skip.Exception, match="not installed: no-such-tool-bjc"):
        require("sh", "no-such-tool-bjc")
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="not installed: no-such-tool-bjc"):
        require("sh", "no-such-tool-bjc")
    assert set(require("sh")) == {"sh"}
