"""An optional bearer-token check for the simulated API server.

Exists so tests can prove that clients keep their credentials fresh: with
`sim.auth.accept(...)` set, API requests without one of the accepted tokens get
401 Unauthorized shaped like kube-apiserver's, and changing the accepted set
revokes tokens at once. Off by default (the sim then accepts everyone).

Also an optional RBAC check per token, so a test can run bjc under exactly the rules
a deployment grants (the Go controller's Helm chart grants fewer than bjc's
manifests): `sim.auth.grant(token, rules, namespace)` binds RBAC PolicyRules
(apiGroups, resources, verbs; `*` matches all) to requests bearing `token`, in one
namespace (a Role) or cluster-wide (`namespace=None`: a ClusterRole). A request with
such a token that no grant allows gets 403 Forbidden shaped like kube-apiserver's;
requests with other tokens are not checked. Deliberately not here: resourceNames,
non-resource URLs, users and groups, client certificates, and the `/_sim/` admin
paths, which are never checked.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Any

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


@dataclass(frozen=True)
class _Grant:
    namespace: str | None  # None: cluster-wide
    groups: frozenset[str]
    resources: frozenset[str]
    verbs: frozenset[str]

    def allows(self, verb: str, group: str, resource: str, namespace: str | None) -> bool:
        if self.namespace is not None and self.namespace != namespace:
            return False
        return all(
            "*" in names or value in names
            for names, value in (
                (self.groups, group),
                (self.resources, resource),
                (self.verbs, verb),
            )
        )


class TokenCheck:
    def __init__(self) -> None:
        self.tokens: frozenset[str] | None = None  # None: no check
        self.rejected = 0  # 401s answered
        self.grants: dict[str, list[_Grant]] = {}  # token -> what it may do
        self.forbidden: list[tuple[str, str, str]] = []  # (verb, resource, namespace) refused

    def grant(
        self, token: str, rules: Iterable[dict[str, Any]], namespace: str | None = None
    ) -> None:
        """From now on requests bearing `token` may do what these PolicyRules allow (in
        `namespace`, or cluster-wide) and any earlier grant, and nothing else."""
        self.grants.setdefault(token, []).extend(
            _Grant(
                namespace,
                frozenset(r.get("apiGroups", ())),
                frozenset(r.get("resources", ())),
                frozenset(r.get("verbs", ())),
            )
            for r in rules
        )

    def forbids(
        self, request: web.Request, verb: str, group: str, resource: str, namespace: str | None
    ) -> str:
        """Why the request is refused ("" if allowed), as kube-apiserver words it."""
        scheme, _, token = request.headers.get("Authorization", "").partition(" ")
        grants = self.grants.get(token) if scheme == "Bearer" else None
        if grants is None or any(g.allows(verb, group, resource, namespace) for g in grants):
            return ""
        self.forbidden.append((verb, resource, namespace or ""))
        where = f' in the namespace "{namespace}"' if namespace else " at the cluster scope"
        return (
            f'{resource} is forbidden: User "{token[:8]}..." cannot {verb} resource '
            f'"{resource}" in API group "{group}"{where}'
        )

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
