"""The controller's HTTP servers: callback API, report file server, health probes.

Each server is a separate aiohttp application built by an explicit factory
(`make_callback_app`, `make_file_app`, `make_health_app`, `make_metrics_app`) and
served on its own port; `serve` starts one on a TCP site and returns the runner its
owner must clean up. The callback app's site is `bjc.web.fastresult.FastResultSite`:
result posts are answered there, everything else by the app.

Every server logs through `ServerLog`: a malformed request or a client that goes away
is the client's problem, so it is one INFO line, not aiohttp's ERROR with a traceback.
Request bodies are not inflated (`Content-Encoding` is not applied), as in Go.

Deliberately not here: any controller logic; the apps get what they need passed in.
"""

from __future__ import annotations

import logging
from collections.abc import MutableMapping
from typing import Any

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError

from bjc.web.callback import FAST_RESULTS
from bjc.web.fastresult import FastResultSite

_EXPECTED = (HttpProcessingError, web.RequestPayloadError, ConnectionResetError)


class ServerLog(logging.LoggerAdapter):
    """aiohttp's server logger, with client errors as one line at INFO.

    aiohttp logs an unparsable request (BadHttpMessage: bad header, bad chunk size,
    bad multipart part headers, ...) and a handler that failed because its client
    disconnected at ERROR with a traceback. Anything else stays as it is.
    """

    def log(self, level: int, msg: object, *args: Any, **kwargs: Any) -> None:
        exc = kwargs.get("exc_info")
        if level >= logging.ERROR and isinstance(exc, _EXPECTED):
            kwargs.pop("exc_info")
            reason = " ".join(str(exc).split())[:300] or type(exc).__name__
            self.logger.info(f"{msg}: %s", *args, reason, **kwargs)
            return
        super().log(level, msg, *args, **kwargs)

    def process(self, msg: Any, kwargs: MutableMapping[str, Any]) -> tuple[Any, Any]:
        return msg, kwargs


SERVER_LOG = ServerLog(logging.getLogger("aiohttp.server"))
#: In-flight requests get this long to finish on shutdown (SIGTERM must exit within seconds).
SHUTDOWN_TIMEOUT_S = 5.0


async def serve(app: web.Application, host: str | None, port: int) -> web.AppRunner:
    """Start `app` on host:port (port 0 picks a free one); the caller owns the runner.

    A callback app with FAST_RESULTS gets the result fast path (bjc.web.fastresult) in
    front of it on the same port.
    """
    runner = web.AppRunner(
        app,
        access_log=None,
        handle_signals=False,
        shutdown_timeout=SHUTDOWN_TIMEOUT_S,
        logger=SERVER_LOG,
        # Bodies are taken as sent, as Go's net/http server does: an upload with
        # Content-Encoding: gzip is stored compressed, and no decoder runs on input a
        # client controls (aiohttp's deflate decoder waits forever on some of it).
        auto_decompress=False,
    )
    await runner.setup()
    site: web.TCPSite
    if app.get(FAST_RESULTS):
        site = FastResultSite(runner, host, port, grace_s=SHUTDOWN_TIMEOUT_S, reuse_address=True)
    else:
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
