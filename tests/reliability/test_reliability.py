"""The short deterministic subset of the reliability scenarios (full counts: `nox -s reliability`).

Each scenario runs with its small count (`Scenario.quick`) and a fixed seed; the
callback Service selects the pod bjc labels as leader. A row must show results
acknowledged and none lost, no pod created twice, no node run twice, no leaked
descriptor. The scenarios that need a lease to expire (15 s per kill) or 200
nodes run only in `nox -s reliability`.
"""

from __future__ import annotations

import pytest

from .scenarios import SCENARIOS, Scenario, run_scenario

QUICK = [s for s in SCENARIOS if s.quick]


@pytest.mark.parametrize("scenario", QUICK, ids=[s.name for s in QUICK])
async def test_nothing_acknowledged_is_lost(scenario: Scenario, tmp_path):
    row = await run_scenario(scenario, scenario.quick, tmp_path)
    assert not row.notes, row.notes
    assert row.acknowledged > 0, row
    counts = (row.lost, row.pods_twice, row.runs_twice, row.leaked_fds)
    assert counts == (0, 0, 0, 0), row
