"""A callback server process for the fuzz tests: `python -m tests.integration.hostile_server ROOT`.

The real callback app, report store and metrics on a loopback port, in its own process
so that the tests can see it stay alive and measure its memory. The target knows one
execution whose node names prefix each other (node-1, node-1-x, ...); events are built
into real Event bodies (the note formatted) but sent nowhere. Before serving, the
other nodes' files and bjc's own are written, so that the tests can check nothing
changed them. Prints `PORT <n>` when ready, stops on SIGTERM or when stdin closes.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import signal
import sys
from pathlib import Path

from bjc.config.settings import Config, GaugeConfig, MetricsConfig
from bjc.kube.events import EventRequest, build_event
from bjc.reports import materializer
from bjc.reports.execution import Stale, stale_attempt
from bjc.reports.metrics import Metrics
from bjc.reports.store import ReportStore
from bjc.web import bound_port, serve
from bjc.web.callback import make_callback_app

EID = "202401011200"
NODES = ("node-1", "node-1-x", "node-1-x-y", "node-2", "n")
UPLOAD_LIMIT = 256 * 1024


class StaticTarget:
    def execution_allowed(self, node: str, execution_id: str) -> bool:
        return execution_id == EID and node in NODES

    def nodes_of(self, execution_id: str) -> tuple[str, ...] | None:
        return NODES if execution_id == EID else None

    def token_valid(self, node: str, execution_id: str, token: str, attempt: int) -> bool:
        return False

    def stale(self, node: str, execution_id: str, attempt: int) -> Stale | None:
        return stale_attempt(node, attempt, 0, None)  # every job on its first attempt

    def result_received(self, node: str, execution_id: str) -> None:
        return None

    async def create_event(self, node: str, execution_id: str, event: EventRequest) -> None:
        pod = {"metadata": {"name": f"fuzz-job-{node}-{execution_id}", "namespace": "ns"}}
        build_event(pod, event, "fuzz", "ns", dt.datetime.now(dt.UTC))


def config(root: Path) -> Config:
    return Config(
        name="fuzz",
        report_directory=str(root),
        max_upload_size=UPLOAD_LIMIT,
        metrics=MetricsConfig(
            prefix="fuzz", gauges={"checks": GaugeConfig(help="h", labels=["kind", "where"])}
        ),
    )


async def prepare(store: ReportStore) -> None:
    """What the other nodes and bjc wrote before the fuzzing starts."""
    await store.create_execution(EID)
    await store.write_state(EID, b'{"id": "' + EID.encode() + b'", "tokens": "secret"}')
    await store.append_journal(EID, b'{"node": "node-2"}\n')
    for node in NODES:
        await store.write_result(EID, node, b'{"checks": [{"value": 1}]}')
        await store.write_file(EID, f"{node}-report.txt", f"{node}'s upload".encode())
        await store.write_log(EID, node, "main", f"{node}'s pod log".encode())
    await store.close()  # their results are files before the fuzzing starts


async def main(root: Path) -> None:
    # Results stay in the results log while fuzzing (no file is written from it in the
    # background), so every change after a request is that request's own.
    materializer.MATERIALIZE_DELAY_S = 1e9
    store = ReportStore(root)
    await prepare(store)
    cfg = config(root)
    app = make_callback_app(cfg, store, Metrics(cfg), StaticTarget(), dev_mode=False)
    runner = await serve(app, "127.0.0.1", 0)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    loop.add_reader(sys.stdin.fileno(), stop.set)  # the test closed our stdin: it is gone
    print(f"PORT {bound_port(runner)}", flush=True)
    try:
        await stop.wait()
    finally:
        await runner.cleanup()


if __name__ == "__main__":
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)  # bugs show in pytest's output
    asyncio.run(main(Path(sys.argv[1])))
