"""Summary pages and their JSON on the real file server, over HTTP."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import msgspec

from bjc.reports.execution import Execution
from bjc.reports.store import ReportStore
from bjc.reports.summary import ExecutionSummary, SummaryIndex
from bjc.web.files import make_file_app
from tests.example_history import EID, OLD, result, write_execution


async def history(root: Path) -> tuple[ReportStore, Execution]:
    store = ReportStore(root)
    await write_execution(store, OLD)
    return store, await write_execution(store, EID)


async def test_index_and_execution_as_json(tmp_path: Path, aiohttp_client: Any) -> None:
    await history(tmp_path)
    client = await aiohttp_client(make_file_app(tmp_path))

    resp = await client.get("/summary/summary.json")
    assert resp.status == 200 and resp.content_type == "application/json"
    index = msgspec.json.decode(await resp.read(), type=SummaryIndex)
    assert index.latest == EID and [e.id for e in index.executions] == [EID, OLD]

    for path in (f"/summary/{EID}/summary.json", "/summary/latest/summary.json"):
        resp = await client.get(path)
        assert resp.status == 200, path
        summary = msgspec.json.decode(await resp.read(), type=ExecutionSummary)
        assert summary.id == EID and summary.counts == index.executions[0].counts
        assert len(summary.nodes) == summary.counts.nodes == 8

    failed = await client.get(f"/summary/{EID}/summary.json?status=timed_out")
    nodes = msgspec.json.decode(await failed.read(), type=ExecutionSummary).nodes
    assert [n.node for n in nodes] == ["deadline", "slow"]


async def test_execution_page_links_to_files_logs_and_filters(
    tmp_path: Path, aiohttp_client: Any
) -> None:
    await history(tmp_path)
    client = await aiohttp_client(make_file_app(tmp_path))

    resp = await client.get(f"/summary/{EID}/")
    assert resp.status == 200 and resp.content_type == "text/html"
    html = await resp.text()
    assert "<script" not in html  # readable without JavaScript
    links = set(re.findall(r'href="([^"]+)"', html))
    for file in (
        "ok.json",
        "ok-report.txt",
        "ok-container-check.log",
        "crashed-container-check.log",
    ):
        assert f"../../{EID}/{file}" in links, file
        # each link leads to the file through the directory listing's server
        resp = await client.get(f"/summary/{EID}/../../{EID}/{file}")
        assert resp.status == 200, file
        if file.endswith(".log"):  # shown in the browser, not downloaded
            assert resp.headers["Content-Type"] == "text/plain; charset=utf-8"
    assert {"?status=failed", "?status=timed_out", "?status=error", "../"} <= links
    assert "/var is read-only" in html and "no result arrived" in html
    assert 'disk{mount="/var"} 0.75' in html

    only = await (await client.get(f"/summary/{EID}/?status=failed")).text()
    assert "crashed" in only and "job-ok" not in only


async def test_index_page_counts_and_progress(tmp_path: Path, aiohttp_client: Any) -> None:
    await history(tmp_path)
    client = await aiohttp_client(make_file_app(tmp_path))

    html = await (await client.get("/summary/")).text()

    assert f'href="{EID}/"' in html and f'href="{OLD}/"' in html
    assert f'href="../{EID}/"' in html  # the execution's directory listing
    assert '<progress max="8" value="6">' in html  # both are still running
    assert f'href="{EID}/?status=error">5<' in html


async def test_nothing_of_the_state_file_reaches_a_page(
    tmp_path: Path, aiohttp_client: Any
) -> None:
    _, execution = await history(tmp_path)
    tokens = [execution.token_of(n) for n in execution.nodes]
    client = await aiohttp_client(make_file_app(tmp_path))

    for path in ("/summary/", "/summary/summary.json", f"/summary/{EID}/",
                 f"/summary/{EID}/summary.json", f"/summary/{EID}/?status=error"):  # fmt: skip
        body = await (await client.get(path)).text()
        assert not [t for t in tokens if t in body], path


async def test_job_supplied_text_is_escaped(tmp_path: Path, aiohttp_client: Any) -> None:
    store = ReportStore(tmp_path)
    await store.create_execution(EID)
    execution = Execution.new(EID, ["n"], store)
    await execution.flushed()
    await store.write_result(EID, "n", result(g=[(1, {"x": "<img src=x onerror=alert(1)>"})]))
    client = await aiohttp_client(make_file_app(tmp_path))

    html = await (await client.get(f"/summary/{EID}/")).text()

    assert "<img" not in html and "&lt;img src=x onerror=alert(1)&gt;" in html


async def test_bad_requests_say_why(tmp_path: Path, aiohttp_client: Any) -> None:
    await history(tmp_path)
    client = await aiohttp_client(make_file_app(tmp_path))

    cases = {
        "/summary/123/": (400, "is not an execution id"),
        "/summary/..%2Fetc/summary.json": (400, "is not an execution id"),
        "/summary/209901010000/": (404, "does not exist"),
        f"/summary/{EID}/?status=broken": (400, "unknown status 'broken'"),
    }
    for path, (status, reason) in cases.items():
        resp = await client.get(path)
        assert resp.status == status, path
        assert reason in await resp.text(), path
    for path, target in (("/summary", "/summary/"), (f"/summary/{EID}", f"/summary/{EID}/")):
        resp = await client.get(path, allow_redirects=False)
        assert resp.status == 301 and resp.headers["Location"] == target


async def test_no_history_yet(tmp_path: Path, aiohttp_client: Any) -> None:
    client = await aiohttp_client(make_file_app(tmp_path))
    assert "No execution yet" in await (await client.get("/summary/")).text()
    resp = await client.get("/summary/latest/")
    assert resp.status == 404 and "no execution yet" in await resp.text()


async def test_a_change_by_another_writer_shows_at_once(
    tmp_path: Path, aiohttp_client: Any
) -> None:
    """A standby serves the summary of what the leader writes to the shared volume."""
    await history(tmp_path)
    client = await aiohttp_client(make_file_app(tmp_path))
    path = f"/summary/{EID}/summary.json"
    before = msgspec.json.decode(await (await client.get(path)).read(), type=ExecutionSummary)

    await ReportStore(tmp_path).write_result(EID, "busy", result(up=[(1, {})]))

    after = msgspec.json.decode(await (await client.get(path)).read(), type=ExecutionSummary)
    assert after.counts.results == before.counts.results + 1
    listing = await (await client.get(f"/{EID}/")).text()  # directory listings stay
    assert "busy.json" in listing
