"""Execution state machine, its journal on disk, retirement, ids and node selection."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

from bjc.engine.controller import next_execution_id, select_nodes
from bjc.kube.objects import Node, NodeCondition, NodeSpec, NodeStatus, ObjectMeta
from bjc.reports.execution import Execution, JobStatus, RetiredExecution, decode_state
from bjc.reports.store import JOURNAL_FILE, STATE_FILE, ReportStore

EID = "202611270101"


async def new_execution(
    tmp_path: Path, nodes=("a", "b", "c"), **kw
) -> tuple[Execution, ReportStore]:
    store = ReportStore(tmp_path)
    await store.create_execution(EID)
    execution = Execution.new(EID, nodes, store, **kw)
    await execution.flushed()
    return execution, store


async def on_disk(store: ReportStore):
    snapshot, journal = await store.read_state(EID)
    return decode_state(snapshot, journal)


async def test_a_job_ends_exactly_once(tmp_path):
    ex, _ = await new_execution(tmp_path)
    assert ex.pod_created("a", "pod-a")
    assert not ex.pod_created("a", "pod-a")
    assert ex.finish("a", JobStatus.SUCCEEDED)
    assert not ex.finish("a", JobStatus.FAILED, "late duplicate")
    assert ex.nodes["a"].status is JobStatus.SUCCEEDED
    assert not ex.finish("unknown-node", JobStatus.FAILED)
    assert ex.counts() == (1, 3)
    assert ex.nodes["a"].duration_ms is not None and ex.nodes["a"].duration_ms >= 0


async def test_error_means_not_succeeded_or_no_result(tmp_path):
    ex, _ = await new_execution(tmp_path)
    ex.finish("a", JobStatus.SUCCEEDED)
    ex.result_received("b")
    ex.finish("b", JobStatus.SUCCEEDED)
    ex.result_received("c")
    ex.finish("c", JobStatus.FAILED)
    assert [ex.nodes[n].error for n in "abc"] == [True, False, True]


async def test_wait_finished_wakes_on_finish(tmp_path):
    import asyncio

    ex, _ = await new_execution(tmp_path)
    waiter = asyncio.ensure_future(ex.wait_finished("a"))
    await asyncio.sleep(0)
    assert not waiter.done()
    ex.finish("a", JobStatus.FAILED, "gone")
    await asyncio.wait_for(waiter, 5)
    await asyncio.wait_for(ex.wait_finished("a"), 5)  # already finished: returns at once


async def test_changes_are_journaled_and_replayed(tmp_path):
    ex, store = await new_execution(tmp_path, tokens=True)
    ex.pod_created("a", "pod-a")
    ex.result_received("a")
    ex.finish("a", JobStatus.SUCCEEDED)
    ex.finish("b", JobStatus.FAILED, "pod deleted")
    await ex.flushed()
    assert (tmp_path / EID / JOURNAL_FILE).is_file()
    state = await on_disk(store)
    assert state.nodes == ex.nodes
    assert state.pods_started == 1 and not state.done
    assert state.nodes["a"].token and state.nodes["a"].token != state.nodes["b"].token


async def test_a_torn_journal_line_is_ignored(tmp_path):
    ex, store = await new_execution(tmp_path)
    ex.finish("a", JobStatus.SUCCEEDED)
    await ex.flushed()
    await store.append_journal(EID, b'{"node": "b", "job": {"stat')  # crash mid-write
    state = await on_disk(store)
    assert state.nodes["a"].status is JobStatus.SUCCEEDED
    assert state.nodes["b"].status is JobStatus.PENDING


async def test_long_journals_are_folded_into_a_snapshot(tmp_path):
    ex, store = await new_execution(tmp_path, nodes=("a",))
    for _ in range(6):  # more lines than 4 per node
        ex.changed("a")
        await ex.flushed()
    assert not (tmp_path / EID / JOURNAL_FILE).exists()
    ex.finish("a", JobStatus.SUCCEEDED)
    ex.close()
    await ex.flushed()
    state = await on_disk(store)
    assert state.done and state.nodes["a"].status is JobStatus.SUCCEEDED
    assert (tmp_path / EID / STATE_FILE).is_file()


async def test_abort_closes_every_unfinished_job(tmp_path):
    ex, store = await new_execution(tmp_path)
    ex.finish("a", JobStatus.SUCCEEDED)
    assert ex.abort("replaced") == ["b", "c"]
    assert ex.done and ex.nodes["b"].status is JobStatus.ABORTED
    await ex.flushed()
    assert (await on_disk(store)).done


async def test_retired_execution_keeps_callbacks_working(tmp_path):
    ex, store = await new_execution(tmp_path, tokens=True)
    ex.abort("done")
    await ex.flushed()
    retired = ex.retire()
    again = RetiredExecution(await on_disk(store), retired)
    assert again.nodes is retired.nodes  # equal node sets are shared across the history
    assert retired.has_node("a") and not retired.has_node("z")
    assert retired.token_of("a") == ex.nodes["a"].token
    assert retired.result_received("b") and not retired.result_received("z")


async def test_a_result_is_recorded_by_its_file_alone(tmp_path):
    ex, store = await new_execution(tmp_path)
    ex.finish("b", JobStatus.SUCCEEDED)
    ex.close()
    await ex.flushed()
    await store.write_result(EID, "b", b'{"checks": []}')  # a late result: only its file
    state = await on_disk(store)
    assert not state.nodes["b"].result  # nothing in the state says so
    state.note_results(await store.read_results(EID, state.nodes))
    assert state.nodes["b"].result and not state.nodes["b"].error
    assert not state.nodes["a"].result and not state.nodes["c"].result


def id_time(execution_id: str) -> dt.datetime:
    """The local time an id names (its minute, or its second)."""
    return dt.datetime.strptime(execution_id, "%Y%m%d%H%M%S"[: len(execution_id) - 2])


def test_execution_ids_take_the_minute_then_seconds_and_never_repeat():
    t = dt.datetime(2026, 11, 27, 3, 4, 59, 900_000)
    assert next_execution_id(t, None) == "202611270304"  # the Go controller's id
    assert next_execution_id(t, "202611270303") == "202611270304"
    assert next_execution_id(t, "202611270304") == "20261127030459"  # minute taken: seconds
    # the second taken too: the next free second, a new minute's plain id first
    assert next_execution_id(t, "20261127030459") == "202611270305"
    assert next_execution_id(t, "202611270305") == "20261127030500"
    assert next_execution_id(t, "20261127030558") == "20261127030559"  # 60 s ahead: the bound
    assert next_execution_id(t, "20261127030559") is None  # more than a minute ahead: none
    assert next_execution_id(t, "202612312359") is None  # the clock went back: none


def test_execution_ids_stay_within_a_minute_of_a_fake_clock():
    """`@every 30s` for 24 h, with a burst of 100 triggers every 2 h: ids unique, in time
    order as text, and never more than a minute ahead (the old rule ended 23 h 59 min
    ahead)."""
    start = dt.datetime(2026, 12, 5, 8, 47, 0)
    ids: list[str] = []
    skipped = 0
    for step in range(24 * 120):
        now = start + dt.timedelta(seconds=30 * step)
        for _ in range(100 if step % 240 == 239 else 1):
            eid = next_execution_id(now, ids[-1] if ids else None)
            if eid is None:
                skipped += 1
                continue
            assert id_time(eid) - now <= dt.timedelta(seconds=60), (now, eid)
            ids.append(eid)
    assert len(set(ids)) == len(ids) and sorted(ids) == ids
    assert [id_time(e) for e in ids] == sorted(id_time(e) for e in ids)
    assert ids[:3] == ["202612050847", "20261205084730", "202612050848"]
    # a burst at :30 gets the ids of :30 to :59, the next minute's and :00 to :30 of it
    assert skipped == 12 * (100 - 62)


def test_node_selection():
    def node(name, ready=True, unschedulable=False):
        return Node(
            metadata=ObjectMeta(name=name),
            spec=NodeSpec(unschedulable=unschedulable),
            status=NodeStatus(conditions=[NodeCondition("Ready", "True" if ready else "False")]),
        )

    nodes = [node("b"), node("a"), node("down", ready=False), node("cordoned", unschedulable=True)]
    assert select_nodes(nodes, run_on_unscheduled=False) == ["a", "b"]
    assert select_nodes(nodes, run_on_unscheduled=True) == ["a", "b", "cordoned"]
