"""What changed since the previous finished execution, computed from report directories
written by the real store (bjc.reports.changes, through bjc.reports.summary)."""

from __future__ import annotations

from pathlib import Path

import pytest

from bjc.reports import changes as changes_module
from bjc.reports.changes import JUDGED, failure
from bjc.reports.execution import Execution, JobStatus
from bjc.reports.store import ReportStore
from bjc.reports.summary import SummaryCache, verdicts
from tests.example_history import result


async def execution(
    store: ReportStore,
    eid: str,
    outcome: dict[str, str],
    *,
    finished: bool = True,
) -> None:
    """`outcome` per node: ok (succeeded with a result), fail, no-result, aborted, running."""
    run = Execution.new(eid, outcome, store, save=False)
    await store.ensure_execution(eid)
    await run.write_snapshot()
    for node, what in outcome.items():
        run.pod_created(node, f"job-{node}")
        if what == "ok":
            await store.write_result(eid, node, result(c=[(1.0, {})]))
            run.finish(node, JobStatus.SUCCEEDED)
        elif what == "no-result":
            run.finish(node, JobStatus.SUCCEEDED)
        elif what == "fail":
            run.finish(node, JobStatus.FAILED, f"{node} broke")
        elif what == "aborted":
            run.finish(node, JobStatus.ABORTED, "replaced by a newer execution")
    if finished:
        run.close()
    await run.flushed()


async def test_new_failures_recoveries_streaks_new_and_gone_nodes(tmp_path: Path) -> None:
    store = ReportStore(tmp_path)
    await execution(store, "202601010000", {"a": "fail", "b": "ok", "c": "fail", "d": "ok"})
    await execution(store, "202601020000", {"a": "fail", "b": "fail", "c": "ok", "d": "ok"})
    await execution(store, "202601030000", {"a": "fail", "b": "no-result", "c": "ok", "e": "ok"})
    cache = SummaryCache(tmp_path)

    first, _ = await cache.execution("202601010000")
    assert first.changes is not None and first.changes.previous is None
    assert [(f.node, f.streak) for f in first.changes.newly_failing] == [("a", 1), ("c", 1)]
    assert first.changes.new == [] and first.changes.gone == []

    second, _ = await cache.execution("202601020000")
    ch = second.changes
    assert ch is not None and ch.previous == "202601010000"
    assert [(f.node, f.streak, f.reason) for f in ch.newly_failing] == [("b", 1, "b broke")]
    assert [(f.node, f.streak) for f in ch.still_failing] == [("a", 2)]
    assert ch.recovered == ["c"]

    third, _ = await cache.execution("202601030000")
    ch = third.changes
    assert ch is not None and ch.previous == "202601020000"
    assert ch.newly_failing == []  # b failed again: it succeeded without a result
    assert [(f.node, f.streak, f.reason) for f in ch.still_failing] == [
        ("a", 3, "a broke"),
        ("b", 2, "no result arrived"),
    ]
    assert ch.recovered == [] and ch.new == ["e"] and ch.gone == ["d"]


async def test_aborted_nodes_keep_their_standing_and_running_executions_are_not_compared(
    tmp_path: Path,
) -> None:
    store = ReportStore(tmp_path)
    await execution(store, "202601010000", {"a": "fail", "b": "fail"})
    await execution(store, "202601020000", {"a": "aborted", "b": "ok"})  # replaced
    await execution(store, "202601030000", {"a": "fail", "b": "running"}, finished=False)
    cache = SummaryCache(tmp_path)

    replaced, _ = await cache.execution("202601020000")
    assert replaced.changes is not None
    assert replaced.changes.recovered == ["b"] and replaced.changes.still_failing == []
    running, _ = await cache.execution("202601030000")
    ch = running.changes
    assert ch is not None and ch.previous == "202601020000"
    # a was not judged in between: its streak goes on; b has not ended yet
    assert [(f.node, f.streak) for f in ch.still_failing] == [("a", 2)]
    assert ch.newly_failing == [] and ch.recovered == []
    standings = await cache.standings()
    assert [v.id for v, _, _ in standings] == ["202601010000", "202601020000"]
    assert standings[-1][2].streaks == {"a": 1, "b": 0}


async def test_a_job_end_is_judged_in_memory_as_the_summary_judges_it(tmp_path: Path) -> None:
    """One definition of "failed": the node conditions, set as each job ends from the
    execution in memory (`failure`), agree with the summary read from the directory."""
    store = ReportStore(tmp_path)
    eid = "202601010000"
    ends = {
        "ok": (JobStatus.SUCCEEDED, "", True),
        "no-result": (JobStatus.SUCCEEDED, "", False),
        "failed-with-result": (JobStatus.FAILED, "exited 2", True),
        "failed": (JobStatus.FAILED, "", False),
        "timed-out": (JobStatus.FAILED, "job did not finish within jobTimeout (10s)", False),
        "aborted": (JobStatus.ABORTED, "replaced by a newer execution", False),
        "running": (None, "", True),
    }
    run = Execution.new(eid, ends, store, save=False)
    await store.ensure_execution(eid)
    await run.write_snapshot()
    for node, (status, reason, with_result) in ends.items():
        run.pod_created(node, f"job-{node}")
        if with_result:
            await store.write_result(eid, node, result(c=[(1.0, {})]))
            run.result_received(node)
        if status is not None:
            run.finish(node, status, reason)
    run.close()
    await run.flushed()

    in_memory = {
        node: failure(job, job.result) for node, job in run.nodes.items() if job.status in JUDGED
    }
    summary, _ = await SummaryCache(tmp_path).execution(eid)
    verdicts_ = verdicts(summary)
    assert verdicts_ is not None
    assert {n: why for n, why in in_memory.items() if why is not None} == verdicts_.failed
    assert {n for n, why in in_memory.items() if why is None} == set(verdicts_.passed) == {"ok"}
    assert in_memory["no-result"] == "no result arrived" and in_memory["failed"] == "pod failed"


async def test_the_changes_follow_an_earlier_execution_that_changed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The standing before an execution is kept between views, and read again when an
    execution before it changes (another writer, a late result) or goes (pruned)."""
    store = ReportStore(tmp_path)
    await execution(store, "202601010000", {"a": "fail", "b": "ok"})
    await execution(store, "202601020000", {"a": "fail", "b": "ok"})
    await execution(store, "202601030000", {"a": "fail", "b": "fail"})
    cache = SummaryCache(tmp_path)
    walks = []
    history = changes_module.history
    monkeypatch.setattr(changes_module, "history", lambda chain: walks.append(1) or history(chain))

    third, _ = await cache.execution("202601030000")
    assert [(f.node, f.streak) for f in third.changes.still_failing] == [("a", 3)]
    assert (await cache.execution("202601030000"))[0].changes == third.changes
    assert len(walks) == 1  # the second view walked nothing

    await execution(store, "202601020000", {"a": "ok", "b": "ok"})  # rewritten
    third, _ = await cache.execution("202601030000")
    assert [(f.node, f.streak) for f in third.changes.newly_failing] == [("a", 1), ("b", 1)]
    await store.prune(keep=2)  # 202601010000 goes
    third, _ = await cache.execution("202601030000")
    assert third.changes.previous == "202601020000" and len(walks) == 3
