"""Execution summaries computed from report directories written by the real store."""

from __future__ import annotations

from pathlib import Path

import msgspec
import pytest

from bjc.reports.execution import Execution, JobStatus
from bjc.reports.store import ReportStore
from bjc.reports.summary import (
    MAX_FILES,
    MAX_RESULT_BYTES,
    MAX_TAIL_CHARS,
    MAX_VALUES,
    SummaryCache,
    filter_nodes,
    problem,
    read_execution,
    short_duration,
)
from tests.example_history import EID, OLD, TIMEOUT, result, write_execution


async def test_every_status_is_derived_from_the_state_and_the_files(tmp_path: Path) -> None:
    store = ReportStore(tmp_path)
    await write_execution(store)

    summary = read_execution(tmp_path / EID)

    nodes = {n.node: n for n in summary.nodes}
    assert {n: s.status for n, s in nodes.items()} == {
        "ok": "succeeded",
        "no-result": "succeeded",
        "crashed": "failed",
        "slow": "timed_out",
        "deadline": "timed_out",
        "gone": "aborted",
        "busy": "running",
        "waiting": "pending",
    }
    # errors first, in the order that needs attention; then by name
    assert [n.node for n in summary.nodes] == [
        "crashed", "deadline", "slow", "gone", "busy", "waiting", "no-result", "ok",
    ]  # fmt: skip
    assert summary.state == "running" and summary.finished is None
    c = summary.counts
    assert (c.nodes, c.succeeded, c.failed, c.timed_out, c.aborted) == (8, 2, 1, 2, 1)
    assert (c.running, c.pending, c.results, c.finished) == (1, 1, 1, 6)
    assert c.errors == 5  # every finished node but the one with its result
    assert not nodes["busy"].error and not nodes["waiting"].error  # not finished: no verdict

    ok = nodes["ok"]
    assert ok.result and not ok.error and ok.pod == "job-ok"
    assert [(v.name, v.labels, v.value) for v in ok.values] == [
        ("disk", {"mount": "/"}, 0.5),
        ("disk", {"mount": "/var"}, 0.75),
    ]
    assert ok.files == ["ok-report.txt"] and ok.logs == ["ok-container-check.log"]
    assert ok.log_tail == ""  # only for nodes with errors
    assert nodes["crashed"].log_tail == "/var is read-only"
    assert problem(nodes["crashed"]) == "pod failed"
    assert problem(nodes["no-result"]) == "no result arrived"
    assert problem(nodes["slow"]) == TIMEOUT
    assert problem(nodes["busy"]) == problem(ok) == ""
    assert nodes["waiting"].pod == "" and nodes["waiting"].created is None


async def test_a_summary_never_contains_a_callback_token(tmp_path: Path) -> None:
    store = ReportStore(tmp_path)
    execution = await write_execution(store)
    tokens = [execution.token_of(n) for n in execution.nodes]
    assert all(tokens)

    encoded = msgspec.json.encode(read_execution(tmp_path / EID)).decode()

    assert not [t for t in tokens if t in encoded]
    assert "token" not in encoded


async def test_a_finished_execution_has_its_timing(tmp_path: Path) -> None:
    store = ReportStore(tmp_path)
    execution = await write_execution(store)
    for node in ("busy", "waiting"):
        execution.finish(node, JobStatus.SUCCEEDED)
    execution.close()
    await execution.flushed()

    summary = read_execution(tmp_path / EID)

    assert summary.state == "finished"
    assert summary.started is not None and summary.finished is not None
    assert summary.duration_s == pytest.approx(
        (summary.finished - summary.started).total_seconds(), abs=0.002
    )
    timed = sorted(n.duration_ms for n in summary.nodes if n.duration_ms is not None)
    assert summary.durations is not None
    assert summary.durations.max_ms == timed[-1]
    assert summary.durations.slowest in {n.node for n in summary.nodes}


async def test_files_go_to_the_longest_node_name_they_start_with(tmp_path: Path) -> None:
    store = ReportStore(tmp_path)
    await store.create_execution(EID)
    execution = Execution.new(EID, ["web", "web-1"], store)
    await execution.flushed()
    await store.write_result(EID, "web-1", result(up=[(1, {})]))
    await store.write_file(EID, "web-1-out.txt", b"")  # web-1's upload "out.txt"
    await store.write_file(EID, "web-2-out.txt", b"")  # web's upload "2-out.txt"
    await store.write_file(EID, "web-container-main.log", b"")
    await store.write_file(EID, "stray.txt", b"")  # nobody's

    nodes = {n.node: n for n in read_execution(tmp_path / EID).nodes}

    assert nodes["web-1"].files == ["web-1-out.txt"] and nodes["web-1"].result
    assert nodes["web"].files == ["web-2-out.txt"] and not nodes["web"].result
    assert nodes["web"].logs == ["web-container-main.log"]


async def test_what_one_node_can_make_a_summary_carry_is_bounded(tmp_path: Path) -> None:
    store = ReportStore(tmp_path)
    await store.create_execution(EID)
    execution = Execution.new(EID, ["many", "huge"], store)
    execution.finish("many", JobStatus.FAILED)
    await execution.flushed()
    await store.write_result(EID, "many", result(g=[(i, {"i": str(i)}) for i in range(25)]))
    big = result(g=[(i, {"pad": "x" * 100}) for i in range(1000)])
    assert len(big) > MAX_RESULT_BYTES
    await store.write_result(EID, "huge", big)
    for i in range(MAX_FILES + 5):
        await store.write_file(EID, f"many-f{i:02d}", b"")
    await store.write_log(EID, "many", "main", b"x" * 5000 + b"\n")

    nodes = {n.node: n for n in read_execution(tmp_path / EID).nodes}

    many, huge = nodes["many"], nodes["huge"]
    assert len(many.values) == MAX_VALUES and many.more_values == 25 - MAX_VALUES
    assert len(many.files) == MAX_FILES and many.more_files == 5
    assert len(many.log_tail) == MAX_TAIL_CHARS
    assert huge.result and huge.values == [] and huge.result_bytes == len(big)


async def test_a_directory_without_bjc_state_shows_its_results(tmp_path: Path) -> None:
    """E.g. the Go controller's history on a volume that bjc now serves."""
    directory = tmp_path / EID
    directory.mkdir()
    (directory / "node-a.json").write_bytes(result(up=[(1, {})]))
    (directory / "node-a-report.txt").write_bytes(b"")

    summary = read_execution(directory)

    assert summary.state == "unknown" and summary.started is None
    (node,) = summary.nodes
    assert (node.node, node.status, node.result, node.error) == ("node-a", "unknown", True, False)
    assert node.files == ["node-a-report.txt"]
    assert summary.counts.unknown == 1


async def test_filter_by_status_or_error(tmp_path: Path) -> None:
    store = ReportStore(tmp_path)
    await write_execution(store)
    summary = read_execution(tmp_path / EID)

    assert [n.node for n in filter_nodes(summary, "timed_out").nodes] == ["deadline", "slow"]
    errors = filter_nodes(summary, "error").nodes
    assert {n.node for n in errors} == {"crashed", "deadline", "slow", "gone", "no-result"}
    assert len(errors) == summary.counts.errors
    assert filter_nodes(summary, "error").counts == summary.counts
    with pytest.raises(ValueError, match=r"unknown status 'broken'.*timed_out"):
        filter_nodes(summary, "broken")


async def test_the_cache_recomputes_only_what_changed(tmp_path: Path) -> None:
    store = ReportStore(tmp_path)
    await write_execution(store, OLD)
    await write_execution(store, EID)
    cache = SummaryCache(tmp_path)

    first, _ = await cache.execution(EID)
    again, _ = await cache.execution("latest")
    assert again is first  # same signature: not read again

    index = await cache.index()
    assert index.latest == EID
    assert [e.id for e in index.executions] == [EID, OLD]
    assert index.executions[0].counts == first.counts

    await store.write_result(EID, "no-result", result(up=[(1, {})]))  # a late result
    changed, _ = await cache.execution(EID)
    assert changed is not first
    assert changed.counts.results == first.counts.results + 1
    assert (await cache.index()).executions[0].counts.results == changed.counts.results

    await store.prune(1)
    assert [e.id for e in (await cache.index()).executions] == [EID]
    with pytest.raises(FileNotFoundError):
        await cache.execution(OLD)
    with pytest.raises(ValueError, match="not an execution id"):
        await cache.execution("../etc")


async def test_no_execution_yet(tmp_path: Path) -> None:
    cache = SummaryCache(tmp_path)
    index = await cache.index()
    assert index.latest is None and index.executions == []
    with pytest.raises(FileNotFoundError, match="no execution yet"):
        await cache.execution("latest")


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(0.0125, "12 ms"), (4.25, "4.2s"), (59.4, "59.4s"), (185, "3m05s"), (7620, "2h07m")],
)
def test_format_duration(seconds: float, text: str) -> None:
    assert short_duration(seconds) == text
