"""The controller's HTTP servers: callback API, report file server, health probes.

Each server is a separate aiohttp application built by an explicit factory
(`make_callback_app`, `make_file_app`, `make_health_app`) and served on its own
port; `serve` starts one on a TCP site and returns the runner its owner must clean
up. Metrics exposition lives with the metrics (bjc.metrics).

Deliberately not here: any controller logic; the apps get what they need passed in.
"""

from __future__ import annotations

from aiohttp import web


async def serve(app: web.Application, host: str | None, port: int) -> web.AppRunner:
    """Start `app` on host:port (port 0 picks a free one); the caller owns the runner."""
    # in-flight requests get 5 s to finish on shutdown (SIGTERM must exit within seconds)
    runner = web.AppRunner(app, access_log=None, handle_signals=False, shutdown_timeout=5.0)
    await runner.setup()
    site = web.TCPSite(runner, host, port, reuse_address=True)
    try:
        await site.start()
    except BaseException:
        await runner.cleanup()
        raise
    return runner


def bound_port(runner: web.AppRunner) -> int:
    """The port a runner's first site listens on (useful with port 0)."""
    for addr in runner.addresses:
        if isinstance(addr, tuple):
            return int(addr[1])
    raise RuntimeError("runner has no TCP site")
