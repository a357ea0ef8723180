"""`bjc sim`: serve a simulated cluster on loopback until interrupted.

Exists so people (and kubectl) can poke at the simulated cluster outside the test
suite: it starts the API server, creates N Ready nodes, runs one node agent for all
of them, writes a kubeconfig, and shuts down cleanly on SIGINT/SIGTERM. It does not
daemonize, persist state, or listen on anything but 127.0.0.1.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import sys

from bjc.sim.agent import JobBehaviour, NodeAgent
from bjc.sim.server import SimCluster


def _labels(text: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        key, sep, value = part.partition("=")
        if not sep or not key:
            raise argparse.ArgumentTypeError(f"--node-labels: {part!r} is not key=value")
        out[key] = value
    return out


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="bjc sim", description="Serve a simulated Kubernetes cluster.")
    p.add_argument(
        "--port", type=int, default=6443, help="API port on 127.0.0.1 (0: any free port)"
    )
    p.add_argument(
        "--nodes", type=int, default=3, help="number of simulated nodes (node-1 ... node-N)"
    )
    p.add_argument(
        "--node-labels", type=_labels, default={}, help="labels for every node: k=v,k2=v2"
    )
    p.add_argument("--kubeconfig-out", help="write a kubeconfig for this cluster to FILE")
    p.add_argument("--job-command", help="shell command run for every container, with its env")
    p.add_argument("--run-seconds", type=float, default=1.0, help="built-in run time of a pod")
    p.add_argument("--history-size", type=int, default=10000, help="watch history length")
    return p


async def serve(args: argparse.Namespace) -> None:
    sim = SimCluster(history_size=args.history_size)
    names = [f"node-{i}" for i in range(1, args.nodes + 1)]
    for name in names:
        sim.add_node(name, labels=args.node_labels)
    await sim.start(port=args.port)
    agent = NodeAgent(
        sim.url,
        None,
        behaviour=JobBehaviour(run_seconds=args.run_seconds),
        job_command=args.job_command,
    )
    await agent.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        if args.kubeconfig_out:
            sim.write_kubeconfig(args.kubeconfig_out)
        print(f"bjc sim: serving {sim.url} with {len(names)} node(s)", flush=True)
        if args.kubeconfig_out:
            print(f"bjc sim: kubeconfig written to {args.kubeconfig_out}", flush=True)
            print(f"  export KUBECONFIG={args.kubeconfig_out}", flush=True)
        await stop.wait()
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)
        await agent.stop()
        await sim.stop()
        print("bjc sim: stopped", flush=True)


def main(argv: list[str]) -> int:
    args = _parser().parse_args(argv)
    if args.nodes < 0:
        print("bjc sim: --nodes must be >= 0", file=sys.stderr)
        return 2
    if args.history_size < 1:
        print("bjc sim: --history-size must be >= 1", file=sys.stderr)
        return 2
    try:
        asyncio.run(serve(args))
    except OSError as exc:
        print(f"bjc sim: cannot serve on port {args.port}: {exc}", file=sys.stderr)
        return 1
    with contextlib.suppress(Exception):
        sys.stdout.flush()
    return 0
