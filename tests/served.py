"""The callback app served as `bjc run` serves it, for aiohttp's test client.

pytest-aiohttp's `aiohttp_client(app)` and `aiohttp_server(app)` start an app on a
plain AppRunner site, which would bypass the result fast path (bjc.web.fastresult).
`Served(app)` starts it with `bjc.web.serve` instead, so every callback test talks
real HTTP to the fast path for results and to aiohttp for everything else:
`await aiohttp_client(Served(app))`, or `await Served.start(app)` for a server alone.
"""

from __future__ import annotations

import asyncio
from typing import Any

from aiohttp import web
from aiohttp.test_utils import BaseTestServer
from yarl import URL

from bjc.web import bound_port, serve


class Served(BaseTestServer):
    __test__ = False

    def __init__(self, app: web.Application) -> None:
        super().__init__(host="127.0.0.1")
        self.app = app

    @classmethod
    async def start(cls, app: web.Application) -> Served:
        server = cls(app)
        await server.start_server()
        return server

    async def start_server(
        self, loop: asyncio.AbstractEventLoop | None = None, **kwargs: Any
    ) -> None:
        if self.runner:
            return
        self.runner = await serve(self.app, self.host, 0)
        self.port = bound_port(self.runner)
        self.scheme = "http"
        self._root = URL(f"http://{self.host}:{self.port}")

    async def _make_runner(self, **kwargs: Any) -> web.AppRunner:
        raise NotImplementedError("started by bjc.web.serve")
