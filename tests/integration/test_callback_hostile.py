"""The callback API under hostile input, over a real aiohttp server.

Each test is a way a buggy or compromised job pod (or anything in the cluster, with
`callbackAuth: none`) attacked the callback API: file names that belong to another
node, malformed bodies that answered 500, unbounded series, client disconnects logged
as errors. The store, metrics and app are the real ones; the target knows one
execution with nodes whose names prefix each other.
"""

from __future__ import annotations

import asyncio
import gzip
import json
import logging
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import msgspec
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from bjc.config.settings import Config, GaugeConfig, MetricsConfig
from bjc.kube.events import EventRequest, format_note
from bjc.reports.metrics import Metrics
from bjc.reports.results import apply_result, check_limits, decode_result
from bjc.reports.store import ReportStore
from bjc.web import bound_port, serve
from bjc.web.callback import EVENT_MAX_BYTES, OPENAPI, make_callback_app
from tests.integration.hostile_server import EID, StaticTarget
from tests.report_files import stored
from tests.served import Served

URL = "/report/node-1/" + EID
GAUGES = {"checks": GaugeConfig(help="checks", labels=["kind"])}


class Target(StaticTarget):
    """The fuzz server's target, keeping the notes of the events it was asked for."""

    def __init__(self) -> None:
        self.notes: list[str] = []

    async def create_event(self, node: str, execution_id: str, event: EventRequest) -> None:
        self.notes.append(format_note(event.message, event.args))


class Env:
    def __init__(self, client: TestClient, root: Path, metrics: Metrics, target: Target) -> None:
        self.client = client
        self.root = root
        self.dir = root / EID
        self.metrics = metrics
        self.target = target

    def files(self) -> dict[str, bytes]:
        return stored(self.dir)

    def held(self, node: str = "node-1") -> tuple[int, int]:
        return self.metrics.series_held(EID, node)


MakeEnv = Callable[..., Awaitable[Env]]


@pytest.fixture
def make_env(tmp_path: Path, aiohttp_client: Any) -> MakeEnv:
    async def make(*, dev_mode: bool = False, **overrides: Any) -> Env:
        root = tmp_path / "reports"
        config = Config(
            name="bjc",
            report_directory=str(root),
            metrics=MetricsConfig(prefix="t", gauges=GAUGES),
            **overrides,
        )
        store = ReportStore(root)
        await store.create_execution(EID)
        # what the other nodes (and bjc) already wrote
        await store.write_result(EID, "node-1-x", b'{"checks": [{"value": 1}]}')
        await store.write_file(EID, "node-1-x-report.txt", b"node-1-x's upload")
        await store.write_log(EID, "node-1", "main", b"node-1's pod log")
        metrics = Metrics(config)
        target = Target()
        app = make_callback_app(config, store, metrics, target, dev_mode=dev_mode)
        return Env(await aiohttp_client(Served(app)), root, metrics, target)

    return make


def series(count: int, start: int = 0, kind: str = "k") -> dict[str, Any]:
    return {"checks": [{"value": i, "labels": {"kind": f"{kind}{i}"}} for i in range(start, count)]}


# ------------------------------------------------------------------- file names
@pytest.mark.parametrize(
    ("query", "owner"),
    [
        ("x.json", "node node-1-x"),  # the other node's result (its metrics after a restart)
        ("x-report.txt", "node node-1-x"),  # the other node's upload
        ("x-new.bin", "node node-1-x"),  # any name in its namespace
        ("container-main.log", "reserved"),  # the pod log bjc writes for node-1
        ("container-sidecar.log", "reserved"),
    ],
)
async def test_upload_named_into_another_namespace_is_400(
    make_env: MakeEnv, query: str, owner: str
) -> None:
    env = await make_env()
    before = env.files()
    resp = await env.client.post(f"{URL}/file?name={query}", data=b"forged")
    assert resp.status == 400
    text = await resp.text()
    assert text.startswith("invalid upload: file name") and owner in text
    assert env.files() == before


async def test_same_through_content_disposition_and_multipart(make_env: MakeEnv) -> None:
    env = await make_env()
    before = env.files()
    headers = {"Content-Disposition": 'attachment; filename="x.json"'}
    resp = await env.client.post(f"{URL}/file", data=b"forged", headers=headers)
    assert resp.status == 400
    form = aiohttp.FormData()
    form.add_field("file", b"honest", filename="mine.txt")
    form.add_field("file", b"forged", filename="x-report.txt")
    resp = await env.client.post(f"{URL}/file", data=form)
    assert resp.status == 400
    assert "belongs to node node-1-x" in await resp.text()
    assert env.files() == before  # the honest part was staged and discarded


@pytest.mark.parametrize("name", ["report.txt", "x.txt", "x", "containers.log", "container-A.log"])
async def test_honest_names_keep_the_layout(make_env: MakeEnv, name: str) -> None:
    env = await make_env()
    resp = await env.client.post(f"{URL}/file?name={name}", data=b"mine")
    assert resp.status == 200
    assert env.files()[f"node-1-{name}"] == b"mine"


async def test_the_longer_node_keeps_its_own_names(make_env: MakeEnv) -> None:
    env = await make_env()
    resp = await env.client.post(f"/report/node-1-x/{EID}/file?name=x.json", data=b"{}")
    assert resp.status == 200
    assert env.files()["node-1-x-x.json"] == b"{}"


async def test_dev_mode_unknown_execution_still_protects_bjc_names(make_env: MakeEnv) -> None:
    env = await make_env(dev_mode=True)
    other = "202402021200"
    resp = await env.client.post(f"/report/a/{other}/file?name=container-main.log", data=b"x")
    assert resp.status == 400
    for node in (".bjc-execution", "%2Ebjc-execution"):  # its result would be the state
        resp = await env.client.post(f"/report/{node}/{other}/result", json=series(1))
        assert resp.status == 400
        assert "must not start with '.'" in await resp.text()
    assert (await env.client.post(f"/report/a/{other}/file?name=x.json", data=b"x")).status == 200
    assert sorted(p.name for p in (env.root / other).iterdir()) == ["a-x.json"]


async def test_node_names_too_long_for_a_file_are_400_not_500(make_env: MakeEnv) -> None:
    env = await make_env(dev_mode=True)
    node = "n" * 252  # a valid name on its own; `<node>.json` is 257 bytes
    resp = await env.client.post(f"/report/{node}/{EID}/result", json=series(1))
    assert resp.status == 400
    assert "longer than 255 bytes" in await resp.text()
    resp = await env.client.post(f"/report/{'n' * 200}/{EID}/file?name={'f' * 60}", data=b"x")
    assert resp.status == 400


async def test_malformed_content_disposition_is_400(make_env: MakeEnv) -> None:
    env = await make_env()
    for header in (";;;filename*=x''%%%", "attachment; filename*=bogus''a%FF"):
        resp = await env.client.post(
            f"{URL}/file", data=b"x", headers={"Content-Disposition": header}
        )
        assert resp.status == 400, header
        assert "malformed Content-Disposition" in await resp.text()


# -------------------------------------------------------------- malformed bodies
DEEP = b"[" * 100_000 + b"]" * 100_000
DEEP_EVENT = b"[" * 5_000 + b"]" * 5_000  # within the event body cap


@pytest.mark.parametrize(
    ("route", "body", "prefix"),
    [
        ("result", b'{"checks": [{"value": 1, "x": ' + DEEP + b"}]}", "error decoding result"),
        ("result", DEEP, "error decoding result"),
        ("result", b'{"checks": [{"value": 1, "labels": {"kind": "\xff"}}]}', "error decoding"),
        (
            "event",
            b'{"reason": "R", "message": "m", "x": ' + DEEP_EVENT + b"}",
            "error decoding event",
        ),
        ("event", b'{"reason": "R", "message": "\xed\xa0\x80"}', "error decoding event"),
        ("event", b'{"reason": "' + "Ä".encode() * 65 + b'", "message": "m"}', "invalid event"),
        (
            "event",
            b'{"reason": "R", "message": "m", "action": "' + b"\xc3\xa4" * 65 + b'"}',
            "invalid event",
        ),
    ],
)
async def test_malformed_bodies_are_400(
    make_env: MakeEnv, route: str, body: bytes, prefix: str
) -> None:
    env = await make_env()
    before = env.files()
    resp = await env.client.post(f"{URL}/{route}", data=body)
    assert resp.status == 400
    assert (await resp.text()).startswith(prefix)
    assert env.files() == before
    assert env.target.notes == []


async def test_bodies_are_taken_as_sent_whatever_their_content_encoding(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """As with Go's net/http: no decoder runs on the body (aiohttp's deflate decoder
    never answered a 2-byte body that arrived after the headers)."""
    runner, _ = await _served(tmp_path)
    caplog.set_level(logging.DEBUG)
    compressed = gzip.compress(json.dumps(series(1)).encode())
    try:
        for encoding in ("gzip", "deflate", "br", "x"):
            for route in ("result", "event", f"file?name={encoding}.bin"):
                reader, writer = await asyncio.open_connection("127.0.0.1", bound_port(runner))
                head = (
                    f"POST {URL}/{route} HTTP/1.1\r\nHost: x\r\nContent-Encoding: {encoding}"
                    f"\r\nContent-Length: {len(compressed)}\r\nConnection: close\r\n\r\n"
                )
                writer.write(head.encode())
                await writer.drain()
                await asyncio.sleep(0.01)  # the body arrives after the headers
                writer.write(compressed)
                answer = await asyncio.wait_for(reader.read(), 10)
                writer.close()
                expected = b"HTTP/1.1 200" if route.startswith("file") else b"HTTP/1.1 400"
                assert answer.startswith(expected), (encoding, route, answer)
                if route == "result":
                    assert b"error decoding result" in answer
    finally:
        await runner.cleanup()
    assert [r for r in caplog.records if r.levelno >= logging.WARNING] == []
    assert (tmp_path / EID / "node-1-gzip.bin").read_bytes() == compressed  # as the Go one


async def test_event_body_over_its_cap_is_413(make_env: MakeEnv) -> None:
    env = await make_env()
    event = {"reason": "R", "message": "%s" * (EVENT_MAX_BYTES // 2), "args": ["a"]}
    resp = await env.client.post(f"{URL}/event", json=event)
    assert resp.status == 413
    assert env.target.notes == []


async def test_huge_widths_render_as_go_does(make_env: MakeEnv) -> None:
    env = await make_env()
    event = {"reason": "R", "message": "%999999999s", "args": ["x"]}  # the 51 bytes
    assert (await env.client.post(f"{URL}/event", json=event)).status == 200
    event = {"reason": "R", "message": "%-9999999s|", "args": ["x"]}  # Go pads this one
    assert (await env.client.post(f"{URL}/event", json=event)).status == 200
    assert env.target.notes[0] == "%!(NOVERB)%!(EXTRA string=x)"
    assert env.target.notes[1] == "x" + " " * (1024 - 4) + "..."


# ------------------------------------------------------------------------ limits
async def test_label_value_over_the_limit_is_400(make_env: MakeEnv) -> None:
    env = await make_env(max_label_value_length=10)
    ok = {"checks": [{"value": 1, "labels": {"kind": "k" * 10, "other": "o" * 100}}]}
    assert (await env.client.post(f"{URL}/result", json=ok)).status == 200
    long = {"checks": [{"value": 1, "labels": {"kind": "k" * 11}}]}
    resp = await env.client.post(f"{URL}/result", json=long)
    assert resp.status == 400
    assert "maxLabelValueLength (10" in await resp.text()
    assert json.loads(env.files()["node-1.json"]) == ok  # the refused body is not stored


def test_label_values_are_checked_when_their_series_is_added() -> None:
    """maxLabelValueLength bounds what the metrics hold: a result setting a series the
    execution holds already is not checked again (the callback's hot path), also when
    the limit was lowered since; a new series over the limit is still refused."""
    config = Config(name="bjc", metrics=MetricsConfig(prefix="t", gauges=GAUGES))
    metrics = Metrics(config)
    held = decode_result(json.dumps({"checks": [{"value": 1, "labels": {"kind": "k" * 11}}]}))
    apply_result(metrics, EID, "node-1", held, check_limits(metrics, config, EID, "node-1", held))
    lowered = Config(
        name="bjc", metrics=MetricsConfig(prefix="t", gauges=GAUGES), max_label_value_length=10
    )
    assert check_limits(metrics, lowered, EID, "node-1", held)  # held: set again
    with pytest.raises(ValueError, match=r"maxLabelValueLength \(10"):
        check_limits(metrics, lowered, EID, "node-2", held)  # node-2's series is new


async def test_series_per_node_accumulate_across_results(make_env: MakeEnv) -> None:
    env = await make_env(max_series_per_node=100)
    assert (await env.client.post(f"{URL}/result", json=series(60))).status == 200
    assert (await env.client.post(f"{URL}/result", json=series(60))).status == 200  # same
    resp = await env.client.post(f"{URL}/result", json=series(101, 60))  # 41 new: 101
    assert resp.status == 400
    assert "node node-1 would hold 101 series" in await resp.text()
    assert "maxSeriesPerNode (100)" in await resp.text()
    assert json.loads(env.files()["node-1.json"]) == series(60)
    assert (await env.client.post(f"{URL}/result", json=series(100, 60))).status == 200
    assert env.held() == (100, 100)
    resp = await env.client.post(f"{URL}/result", json=series(101))  # one entry too many
    assert resp.status == 400
    assert "101 entries" in await resp.text()
    node_2 = f"/report/node-2/{EID}/result"
    assert (await env.client.post(node_2, json=series(100))).status == 200  # its own budget


async def test_series_per_execution(make_env: MakeEnv) -> None:
    env = await make_env(max_series_per_execution=150)
    assert (await env.client.post(f"{URL}/result", json=series(100))).status == 200
    resp = await env.client.post(f"/report/node-2/{EID}/result", json=series(51))
    assert resp.status == 400
    assert "maxSeriesPerExecution (150)" in await resp.text()
    assert (await env.client.post(f"/report/node-2/{EID}/result", json=series(50))).status == 200
    assert env.held("node-2") == (50, 150)
    unconfigured = {"other": [{"value": i, "labels": {"k": str(i)}} for i in range(500)]}
    resp = await env.client.post(f"/report/node-2/{EID}/result", json=unconfigured)
    assert resp.status == 200  # stored, exposed as no metric: no series


async def test_a_flood_of_new_label_values_stays_bounded(make_env: MakeEnv) -> None:
    """The issue's flood: one node posting 100,000 new label values, then more rounds."""
    env = await make_env()
    flood = msgspec.json.encode(series(100_000, kind="flood-"))
    resp = await env.client.post(f"{URL}/result", data=flood)
    assert resp.status == 400
    statuses = []
    for round_ in range(10):  # 1,000 new values each time: the first fits, no other
        resp = await env.client.post(f"{URL}/result", json=series(1000, kind=f"r{round_}-"))
        statuses.append(resp.status)
    assert statuses == [200] + [400] * 9
    assert env.metrics.series_count() == 1000 + 1  # and node-1's processing series
    assert len(env.metrics.render()[0]) < 100_000


async def test_concurrent_results_of_one_node_cannot_pass_the_limit_together(
    make_env: MakeEnv,
) -> None:
    env = await make_env(max_series_per_node=100)
    statuses = await asyncio.gather(
        *(env.client.post(f"{URL}/result", json=series(50, kind=f"c{i}-")) for i in range(20))
    )
    assert {r.status for r in statuses} <= {200, 400}
    assert env.held()[0] <= 100
    assert sum(1 for r in statuses if r.status == 200) >= 2


# ----------------------------------------------------------------------- logging
async def _served(root: Path) -> tuple[web.AppRunner, Metrics]:
    """The app served as bjc serves it (the test client's server cancels handlers)."""
    config = Config(name="bjc", report_directory=str(root), metrics=MetricsConfig(prefix="t"))
    store = ReportStore(root)
    await store.create_execution(EID)
    metrics = Metrics(config)
    app = make_callback_app(config, store, metrics, Target(), dev_mode=False)
    return await serve(app, "127.0.0.1", 0), metrics


async def test_client_disconnect_is_one_info_line(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    runner, metrics = await _served(tmp_path)
    caplog.set_level(logging.DEBUG)
    try:
        for route in ("result", "file?name=part.bin", "event"):
            _reader, writer = await asyncio.open_connection("127.0.0.1", bound_port(runner))
            head = f"POST {URL}/{route} HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n"
            writer.write(head.encode() + b'{"checks": [')
            await writer.drain()
            await asyncio.sleep(0.05)  # the handler is reading the body
            writer.close()
            await writer.wait_closed()
        async with aiohttp.ClientSession() as http:
            url = f"http://127.0.0.1:{bound_port(runner)}{URL}/result"
            async with http.post(url, json=series(1)) as resp:
                assert resp.status == 200  # the server answers on
    finally:
        await runner.cleanup()
    assert [r for r in caplog.records if r.levelno >= logging.WARNING] == []
    lines = [r for r in caplog.records if "client disconnected" in r.getMessage()]
    assert len(lines) == 3
    assert all(r.levelno == logging.INFO and not r.exc_info for r in lines)
    assert not (tmp_path / EID / "node-1-part.bin").exists()
    text = metrics.render()[0].decode()
    for route in ("result", "file", "event"):
        assert f'bjc_callback_requests_total{{code="499",route="{route}"}} 1.0' in text


async def test_malformed_http_is_one_info_line(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    runner, _ = await _served(tmp_path)
    caplog.set_level(logging.DEBUG)
    try:
        for raw in (
            b"POST /x HTTP/1.1\r\nHost: x\r\nContent-Length: abc\r\n\r\n",
            b"POST /x HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nZZ\r\n",
            b"GET /x HTTP/1.1\r\nBad Header\r\n\r\n",
        ):
            reader, writer = await asyncio.open_connection("127.0.0.1", bound_port(runner))
            writer.write(raw)
            await writer.drain()
            assert (await reader.read()).startswith(b"HTTP/1.0 400")
            writer.close()
    finally:
        await runner.cleanup()
    assert [r for r in caplog.records if r.levelno >= logging.WARNING] == []
    bad = [r for r in caplog.records if r.name == "aiohttp.server"]
    assert len(bad) == 3
    assert all(r.levelno == logging.INFO and not r.exc_info for r in bad)
    assert all("\n" not in r.getMessage() for r in bad)


# ----------------------------------------------------------------------- openapi
async def test_openapi_document_is_served(make_env: MakeEnv) -> None:
    env = await make_env()
    resp = await env.client.get("/openapi.json")
    assert resp.status == 200
    assert resp.content_type == "application/json"
    assert await resp.read() == OPENAPI
    document = json.loads(OPENAPI)
    assert set(document["paths"]) == {
        "/report/{node}/{executionID}/result",
        "/report/{node}/{executionID}/file",
        "/report/{node}/{executionID}/event",
        "/openapi.json",
    }
