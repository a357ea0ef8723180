"""An optional bearer-token check for the simulated API server.

Exists so tests can prove that clients keep their credentials fresh: with
`sim.auth.accept(...)` set, API requests without one of the accepted tokens get
401 Unauthorized shaped like kube-apiserver's, and changing the accepted set
revokes tokens at once. Off by default (the sim then accepts everyone). Deliberately
not here: authorization, client certificates, and the `/_sim/` admin paths, which
are never checked.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from aiohttp import web

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

_UNAUTHORIZED = {
    "kind": "Status",
    "apiVersion": "v1",
    "metadata": {},
    "status": "Failure",
    "message": "Unauthorized",
    "reason": "Unauthorized",
    "code": 401,
}


class TokenCheck:
    def __init__(self) -> None:
        self.tokens: frozenset[str] | None = None  # None: no check
        self.rejected = 0  # 401s answered

    def accept(self, *tokens: str) -> None:
        """From now on only these bearer tokens are accepted."""
        self.tokens = frozenset(tokens)

    def off(self) -> None:
        self.tokens = None

    @web.middleware
    async def middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        if self.tokens is not None and not request.path.startswith("/_sim/"):
            scheme, _, token = request.headers.get("Authorization", "").partition(" ")
            if scheme != "Bearer" or token not in self.tokens:
                self.rejected += 1
                return web.json_response(_UNAUTHORIZED, status=401)
        return await handler(request)
