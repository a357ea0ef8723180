"""An open-loop load generator: requests leave on a fixed timetable, whatever the answers do.

A closed-loop client (wrk, or N workers that each wait for their answer) sends less
while the server stalls, so the stall hides in a handful of slow samples
("coordinated omission"). Here request k is due at `start + k / rate`; it is sent at
that moment on a connection of its own pool, without waiting for earlier answers,
and its latency is measured from when it was due, not from when it left. A
generator that falls behind its own timetable therefore counts against the server
(pessimistic), and how far it fell behind is reported (`max_send_lag_ms`) so a
generator-bound run can be told apart.

Run in its own process (at 500 requests/s Python and aiohttp keep up easily):
`python -m benchmarks.openloop --rate 500 --duration 10 --eid ID --nodes N URL`,
where URL is the callback server's base URL; prints one JSON object.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time

import aiohttp


def percentile(sorted_values: list[float], q: float) -> float:
    """The `q` quantile (0..1) of already sorted values, nearest rank."""
    if not sorted_values:
        return float("nan")
    rank = max(1, round(q * len(sorted_values)))
    return sorted_values[min(rank, len(sorted_values)) - 1]


async def run(
    base_url: str, eid: str, nodes: int, body: bytes, rate: float, duration: float
) -> dict[str, float]:
    total = int(rate * duration)
    latencies: list[float] = []
    statuses: dict[int, int] = {}
    failures = 0
    max_lag = 0.0
    headers = {"Content-Type": "application/json"}
    connector = aiohttp.TCPConnector(limit=256)
    async with aiohttp.ClientSession(connector=connector) as http:

        async def one(k: int, due: float) -> None:
            nonlocal failures
            url = f"{base_url}/report/node-{k % nodes + 1}/{eid}/result"
            try:
                async with http.post(url, data=body, headers=headers) as resp:
                    await resp.read()
                    statuses[resp.status] = statuses.get(resp.status, 0) + 1
            except aiohttp.ClientError:
                failures += 1
            latencies.append(time.perf_counter() - due)

        tasks = []
        start = time.perf_counter() + 0.05
        for k in range(total):
            due = start + k / rate
            delay = due - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            max_lag = max(max_lag, time.perf_counter() - due)
            tasks.append(asyncio.create_task(one(k, due)))
        await asyncio.gather(*tasks)
        elapsed = time.perf_counter() - start
    latencies.sort()
    ok = sum(n for status, n in statuses.items() if 200 <= status < 300)
    return {
        "rate": rate,
        "requests": float(total),
        "achieved_per_s": round(total / elapsed, 1),
        "non_2xx": float(total - ok - failures),
        "failures": float(failures),
        "p50_ms": round(percentile(latencies, 0.50) * 1000, 2),
        "p99_ms": round(percentile(latencies, 0.99) * 1000, 2),
        "max_ms": round(latencies[-1] * 1000, 2),
        "max_send_lag_ms": round(max_lag * 1000, 2),
    }


def main() -> None:
    p = argparse.ArgumentParser(prog="python -m benchmarks.openloop")
    p.add_argument("url", help="base URL of the callback server")
    p.add_argument("--eid", required=True, help="execution ID to post results to")
    p.add_argument("--nodes", type=int, required=True, help="post to node-1 ... node-N in turn")
    p.add_argument("--rate", type=float, default=500.0, help="requests per second")
    p.add_argument("--duration", type=float, default=10.0, help="seconds of load")
    p.add_argument("--body", required=True, help="file holding the result body")
    args = p.parse_args()
    with open(args.body, "rb") as f:
        body = f.read()
    out = asyncio.run(run(args.url, args.eid, args.nodes, body, args.rate, args.duration))
    print(json.dumps(out))


if __name__ == "__main__":
    main()
