"""Result-callback throughput and latency: the real callback app, store and metrics.

The server (bjc.web.callback with a ReportStore in a temporary directory and the real
Metrics) runs in its own process; this process is the client: 50 concurrent
connections posting a 10-series result payload over loopback, a bounded number of
requests (warm-up first, then at most 5,000 or 30 s). Every request writes
`<node>.json` through the store (temporary file + rename, off the event loop) and
sets 10 gauge series.

Run: `python -m benchmarks.bench_callbacks`; `run()` returns the numbers.
"""

from __future__ import annotations

import asyncio
import json
import multiprocessing as mp
import statistics
import tempfile
import time
from multiprocessing.synchronize import Event as MpEvent
from typing import Any

CONCURRENCY = 50
REQUESTS = 5000
WARMUP = 300
TIME_LIMIT_S = 30.0
EID = "202401011200"
NODES = 200

PAYLOAD = json.dumps(
    {
        "test": [
            {"value": i * 1.5, "labels": {"label_a": f"check-{i}", "label_b": "disk"}}
            for i in range(10)
        ]
    }
).encode()


class _AllowAll:
    def execution_allowed(self, node: str, execution_id: str) -> bool:
        return execution_id == EID

    def nodes_of(self, execution_id: str) -> None:
        return None

    def token_valid(self, node: str, execution_id: str, token: str) -> bool:
        return True

    async def result_received(self, node: str, execution_id: str) -> None:
        return None

    async def create_event(self, node: str, execution_id: str, event: Any) -> None:
        return None


def _server(root: str, port_queue: Any, stop: MpEvent) -> None:
    from bjc.config.settings import Config, GaugeConfig, MetricsConfig
    from bjc.reports.metrics import Metrics
    from bjc.reports.store import ReportStore
    from bjc.web import bound_port, serve
    from bjc.web.callback import make_callback_app

    async def main() -> None:
        config = Config(
            name="bench",
            report_directory=root,
            metrics=MetricsConfig(
                prefix="bench",
                gauges={"test": GaugeConfig(help="bench", labels=["label_a", "label_b"])},
            ),
        )
        store = ReportStore(root)
        await store.create_execution(EID)
        app = make_callback_app(config, store, Metrics(config), _AllowAll(), dev_mode=False)
        runner = await serve(app, "127.0.0.1", 0)
        port_queue.put(bound_port(runner))
        try:
            await asyncio.get_running_loop().run_in_executor(None, stop.wait)
        finally:
            await runner.cleanup()

    asyncio.run(main())


async def _load(port: int, count: int, deadline: float) -> tuple[list[float], int, float]:
    import aiohttp

    latencies: list[float] = []
    errors = 0
    issued = 0
    url = f"http://127.0.0.1:{port}/report/node-{{}}/{EID}/result"
    headers = {"Content-Type": "application/json"}
    connector = aiohttp.TCPConnector(limit=CONCURRENCY)
    async with aiohttp.ClientSession(connector=connector) as session:

        async def worker() -> None:
            nonlocal issued, errors
            while issued < count and time.monotonic() < deadline:
                n = issued
                issued += 1
                t0 = time.perf_counter()
                async with session.post(
                    url.format(n % NODES), data=PAYLOAD, headers=headers
                ) as resp:
                    await resp.read()
                    if resp.status != 200:
                        errors += 1
                latencies.append(time.perf_counter() - t0)

        start = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(CONCURRENCY)))
        elapsed = time.perf_counter() - start
    return latencies, errors, elapsed


def run() -> dict[str, float]:
    ctx = mp.get_context("spawn")
    with tempfile.TemporaryDirectory(prefix="bjc-bench-") as root:
        ports = ctx.Queue()
        stop = ctx.Event()
        proc = ctx.Process(target=_server, args=(root, ports, stop), daemon=True)
        proc.start()
        try:
            port = ports.get(timeout=30)
            asyncio.run(_load(port, WARMUP, time.monotonic() + TIME_LIMIT_S))
            latencies, errors, elapsed = asyncio.run(
                _load(port, REQUESTS, time.monotonic() + TIME_LIMIT_S)
            )
        finally:
            stop.set()
            proc.join(timeout=10)
            if proc.is_alive():
                proc.kill()
                proc.join()
    if errors:
        raise RuntimeError(f"{errors} of {len(latencies)} result callbacks failed")
    latencies.sort()
    p99 = latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))]
    return {
        "callbacks_per_s": round(len(latencies) / elapsed, 1),
        "callback_p99_ms": round(p99 * 1000, 2),
        "callback_p50_ms": round(statistics.median(latencies) * 1000, 2),
        "callback_requests": float(len(latencies)),
    }


if __name__ == "__main__":
    print(json.dumps(run(), indent=2))
