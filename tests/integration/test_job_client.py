"""bjc.client (the Python job client) over real HTTP: the callback app, and flaky servers.

The client is synchronous (urllib), so each call runs in a worker thread while the
aiohttp server under test runs on the test's event loop.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import subprocess
import sys
import tempfile
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from bjc.client import Client, Refused, Unreachable
from bjc.config.settings import Config, GaugeConfig, MetricsConfig
from bjc.reports.metrics import Metrics
from bjc.reports.store import ReportStore
from bjc.web.callback import make_callback_app
from tests.integration.bjc_command import REPO
from tests.integration.test_callback import EID, NODE, Target
from tests.report_files import stored
from tests.served import Served

FAST = {"retries": 3, "backoff": 0.01}
ServerFactory = Callable[[web.Application], Awaitable[TestServer]]


class Controller:
    """The real callback app (store, metrics) with callbackAuth: token."""

    def __init__(self, server: Served, root: Path, target: Target) -> None:
        self.server = server
        self.dir = root / EID
        self.target = target

    def client(self, url_token: str | None = "s3cret", **options: Any) -> Client:
        """A client for URLs that carry `url_token` (as the controller sets them)."""
        base = str(self.server.make_url(f"/report/{NODE}/{EID}"))
        query = f"?token={url_token}" if url_token else ""
        urls = (f"{base}/{route}{query}" for route in ("result", "file", "event"))
        return Client(*urls, **options)


@pytest.fixture
async def controller(tmp_path: Path) -> AsyncIterator[Controller]:
    root = tmp_path / "reports"
    config = Config(
        name="bjc",
        report_directory=str(root),
        callback_auth="token",
        metrics=MetricsConfig(prefix="foo", gauges={"test": GaugeConfig(help="h", labels=["a"])}),
    )
    store = ReportStore(root)
    await store.create_execution(EID)
    target = Target()
    app = make_callback_app(config, store, Metrics(config), target, dev_mode=False)
    server = await Served.start(app)  # as `bjc run` serves it: results on the fast path
    try:
        yield Controller(server, root, target)
    finally:
        await server.close()


async def test_report_upload_and_event_reach_the_controller(
    controller: Controller, tmp_path: Path
) -> None:
    client = controller.client()
    await asyncio.to_thread(client.report, {"test": [{"value": 1.5, "labels": {"a": "x"}}]})
    assert json.loads(stored(controller.dir)[f"{NODE}.json"]) == {
        "test": [{"value": 1.5, "labels": {"a": "x"}}]
    }
    verbatim = b'{\n  "test": [{"value": 2}]\n}\n'
    await asyncio.to_thread(client.report, verbatim)
    assert stored(controller.dir)[f"{NODE}.json"] == verbatim
    assert controller.target.results == [(NODE, EID), (NODE, EID)]

    big = tmp_path / "disk usage.log"
    big.write_bytes(bytes(range(256)) * 4096)  # 1 MiB, streamed from disk
    assert await asyncio.to_thread(client.upload, big) == [f"{NODE}-disk usage.log"]
    assert (controller.dir / f"{NODE}-disk usage.log").read_bytes() == big.read_bytes()
    named = await asyncio.to_thread(client.upload, b"<p>hi</p>", "page.html")
    assert named == [f"{NODE}-page.html"]
    assert (controller.dir / f"{NODE}-page.html").read_bytes() == b"<p>hi</p>"

    await asyncio.to_thread(client.event, "Checked", "%d disks, %s", [2, "ok"])
    await asyncio.to_thread(client.event, "DiskFull", "full", type="Warning", action="Alerted")
    plain, warning = (event for _, _, event in controller.target.events)
    assert (plain.warning, plain.reason, plain.message, plain.args) == (
        False, "Checked", "%d disks, %s", ["2", "ok"],
    )  # fmt: skip
    assert (plain.action, warning.warning, warning.action) == (None, True, "Alerted")


async def test_a_token_outside_the_urls_is_sent_as_bearer(controller: Controller) -> None:
    bearer = controller.client(url_token=None, token="s3cret", **FAST)
    await asyncio.to_thread(bearer.event, "Checked", "with a bearer token")
    assert len(controller.target.events) == 1
    wrong = controller.client(url_token="wrong", **FAST)
    with pytest.raises(Refused) as refused:
        await asyncio.to_thread(wrong.upload, b"x", "x.txt")
    assert (refused.value.status, refused.value.reason) == (401, "missing or invalid token")
    assert "wrong" not in str(refused.value) and "token=***" in str(refused.value)


async def test_4xx_raises_refused_with_the_reason_and_is_not_retried(
    controller: Controller,
) -> None:
    client = controller.client(**FAST)
    with pytest.raises(Refused) as refused:
        await asyncio.to_thread(client.report, {})
    assert refused.value.status == 400
    assert refused.value.reason == "invalid result: empty result: at least one metric is required"
    with pytest.raises(Refused) as bad_name:
        await asyncio.to_thread(client.upload, b"x", "../escape")
    assert bad_name.value.status == 400
    assert bad_name.value.reason.startswith("invalid upload: ")
    with pytest.raises(Refused) as bad_event:
        await asyncio.to_thread(client.event, "lower", "message")
    assert "must start with an upper-case letter" in bad_event.value.reason
    assert f"{NODE}.json" not in stored(controller.dir)


# ------------------------------------------------------------------ retries
class Flaky:
    """Answers with the given statuses in turn, then 200 (echoing ?name=).

    With `hang_first`, the first request gets no answer until a second one arrives.
    """

    def __init__(self, *statuses: int, hang_first: bool = False) -> None:
        self.statuses = list(statuses)
        self.hang_first = hang_first
        self.bodies: list[bytes] = []
        self.retried = asyncio.Event()

    async def handle(self, request: web.Request) -> web.Response:
        self.bodies.append(await request.read())
        if len(self.bodies) > 1:
            self.retried.set()
        elif self.hang_first:
            await self.retried.wait()
        if self.statuses:
            status = self.statuses.pop(0)
            headers = {"Retry-After": "0"} if status == 429 else {}
            return web.Response(status=status, text=f"busy ({status})\n", headers=headers)
        return web.Response(text=f"{NODE}-{request.query.get('name', '')}\n")

    async def serve(self, aiohttp_server: ServerFactory) -> str:
        app = web.Application(client_max_size=16 * 1024 * 1024)
        app.router.add_post("/report/{node}/{eid}/{route}", self.handle)
        server = await aiohttp_server(app)
        return str(server.make_url(f"/report/{NODE}/{EID}"))


def client_for(base: str, **options: Any) -> Client:
    return Client(f"{base}/result", f"{base}/file", f"{base}/event", **options)


async def test_503_and_429_are_retried_until_the_answer_is_200(
    aiohttp_server: ServerFactory, tmp_path: Path
) -> None:
    flaky = Flaky(503, 429, 502)
    client = client_for(await flaky.serve(aiohttp_server), **FAST)
    data = tmp_path / "data.bin"
    data.write_bytes(b"0123456789" * 1000)
    assert await asyncio.to_thread(client.upload, data) == [f"{NODE}-data.bin"]
    assert flaky.bodies == [data.read_bytes()] * 4  # every attempt sent the whole file


async def test_a_file_object_is_streamed_whole_on_every_attempt(
    aiohttp_server: ServerFactory,
) -> None:
    flaky = Flaky(503, 502, 503)
    client = client_for(await flaky.serve(aiohttp_server), **FAST)
    data = b"0123456789" * 1000
    with tempfile.SpooledTemporaryFile(max_size=1024) as spool:  # what `bjc report` sends
        spool.write(b"skip" + data)
        spool.seek(4)  # sent from where it stands
        assert await asyncio.to_thread(client.upload, spool, "x.bin") == [f"{NODE}-x.bin"]
        flaky.statuses = [429]
        spool.seek(4)
        await asyncio.to_thread(client.report, spool)
    assert flaky.bodies == [data] * 6  # 3 + 1 for the upload, 1 + 1 for the result


async def test_bjc_report_sends_stdin_whole_again_on_a_retry(
    aiohttp_server: ServerFactory, tmp_path: Path
) -> None:
    """stdin cannot be read twice: `bjc report` spools it (to a file past 1 MiB)."""
    flaky = Flaky(503, 503)
    base = await flaky.serve(aiohttp_server)
    data = os.urandom(3 * 1024 * 1024)
    env = {
        **os.environ, "PYTHONPATH": str(REPO), "TMPDIR": str(tmp_path),
        "CALLBACK_SERVICE_FILE_URL": f"{base}/file",
        "CALLBACK_SERVICE_RESULT_URL": f"{base}/result",
    }  # fmt: skip
    for route in ("file", "result"):
        run = await asyncio.to_thread(
            subprocess.run,
            [sys.executable, "-m", "bjc", "report", route, "-", "--backoff", "0.01"],
            input=data, env=env, capture_output=True, timeout=60,
        )  # fmt: skip
        assert run.returncode == 0, run.stderr
        flaky.statuses = [503, 503]
    assert len(flaky.bodies) == 6 and all(body == data for body in flaky.bodies)
    assert os.listdir(tmp_path) == []  # the spool is gone


async def test_a_timeout_is_retried(aiohttp_server: ServerFactory) -> None:
    flaky = Flaky(hang_first=True)
    client = client_for(await flaky.serve(aiohttp_server), timeout=0.5, **FAST)
    await asyncio.to_thread(client.event, "Checked", "after a timeout")
    assert len(flaky.bodies) == 2 and flaky.bodies[0] == flaky.bodies[1]


async def test_gives_up_after_the_retries_with_the_last_answer(
    aiohttp_server: ServerFactory,
) -> None:
    flaky = Flaky(500, 500, 500, 503, 200)
    client = client_for(await flaky.serve(aiohttp_server), **FAST)
    with pytest.raises(Unreachable) as gave_up:
        await asyncio.to_thread(client.report, {"test": [{"value": 1}]})
    assert (gave_up.value.attempts, gave_up.value.status) == (4, 503)
    assert gave_up.value.last == "503 busy (503)"
    assert len(flaky.bodies) == 4


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def test_connection_refused_is_retried_then_unreachable() -> None:
    client = client_for(f"http://127.0.0.1:{closed_port()}/report/{NODE}/{EID}", **FAST)
    with pytest.raises(Unreachable) as gave_up:
        await asyncio.to_thread(client.event, "Checked", "nobody listens")
    assert (gave_up.value.attempts, gave_up.value.status) == (4, None)
    assert gave_up.value.last.startswith("cannot connect")
