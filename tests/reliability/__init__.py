"""Reliability scenarios: bjc run processes killed, failed over and starved, losses counted.

`python -m tests.reliability` runs every scenario with full counts (`nox -s reliability`)
and writes the table to docs/reliability.md; `test_reliability.py` runs a short
deterministic subset in the default test suite.
"""
