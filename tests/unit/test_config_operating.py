"""The config keys that operate executions (docs/operating.md): defaults and validation."""

from __future__ import annotations

from .test_config import load, single_problem


def test_defaults_keep_the_go_behaviour() -> None:
    config, warnings = load()
    assert warnings == []
    assert config.suspend is False


def test_suspend_must_be_a_boolean() -> None:
    assert load(suspend=True)[0].suspend is True
    problem = single_problem(suspend="yes")
    assert problem.startswith("suspend: invalid value")
    assert "boolean" in problem
