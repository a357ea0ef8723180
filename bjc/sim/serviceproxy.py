"""The API server's service proxy, for bjc.sim:
`GET /api/v1/namespaces/{ns}/services/{name}[:port]/proxy/{path}`.

Exists so clients that reach a controller's HTTP servers through the API server run
against bjc.sim as against kube-apiserver: `kubectl bjc status` reads the file
server's summaries so, without a port-forward (like `kubectl get --raw
/api/v1/namespaces/bjc-system/services/bjc:8080/proxy/summary/summary.json`). The
request goes to a ready pod the Service selects (`status.podIP`), at the Service
port named by `name:port` (a port name or number; none: the first port), mapped by
its `targetPort` (a number, or a container port name of the pod). The answer's
status, content type and body come back. Deliberately not here: methods other than
GET and HEAD, `https:` schemes, node and pod proxies, websockets, streaming.
"""

from __future__ import annotations

import re
from typing import Any

import aiohttp
from aiohttp import web

from bjc.sim.store import ApiError

#: namespace, service[:port], path
PATH = re.compile(r"^/api/v1/namespaces/([^/]+)/services/([^/]+)/proxy(/.*)?$")

Obj = dict[str, Any]


def _ready(pod: Obj) -> bool:
    status = pod.get("status") or {}
    return (
        bool(status.get("podIP"))
        and not pod["metadata"].get("deletionTimestamp")
        and any(
            c.get("type") == "Ready" and c.get("status") == "True"
            for c in status.get("conditions") or []
        )
    )


def _target_port(service: Obj, wanted: str, pod: Obj) -> int:
    ports = (service.get("spec") or {}).get("ports") or []
    port = next(
        (p for p in ports if not wanted or wanted in (p.get("name"), str(p.get("port")))), None
    )
    if port is None:
        raise ApiError(503, "ServiceUnavailable", f"no service port {wanted!r}")
    target = port.get("targetPort", port["port"])
    if isinstance(target, int) or str(target).isdigit():
        return int(target)
    for container in (pod.get("spec") or {}).get("containers") or []:
        for p in container.get("ports") or []:
            if p.get("name") == target:
                return int(p["containerPort"])
    raise ApiError(503, "ServiceUnavailable", f"no container port named {target!r}")


async def forward(
    request: web.Request, service: Obj, pods: list[Obj], port: str, path: str
) -> web.Response:
    """Send `request` (GET or HEAD) to a ready pod of `service`; `pods`: its namespace's."""
    if request.method not in ("GET", "HEAD"):
        raise ApiError(405, "MethodNotAllowed", f"{request.method} is not proxied by bjc.sim")
    selector = (service.get("spec") or {}).get("selector") or {}
    ready = [
        p
        for p in pods
        if selector
        and all((p["metadata"].get("labels") or {}).get(k) == v for k, v in selector.items())
        and _ready(p)
    ]
    name = service["metadata"]["name"]
    if not ready:
        raise ApiError(503, "ServiceUnavailable", f'no endpoints available for service "{name}"')
    pod = ready[0]
    url = f"http://{pod['status']['podIP']}:{_target_port(service, port, pod)}{path or '/'}"
    try:
        async with aiohttp.ClientSession() as http:
            async with http.request(request.method, url, params=request.query) as resp:
                body = await resp.read()
                return web.Response(
                    status=resp.status,
                    body=body,
                    headers={"Content-Type": resp.headers.get("Content-Type", "text/plain")},
                )
    except aiohttp.ClientError as e:
        raise ApiError(503, "ServiceUnavailable", f"error trying to reach service: {e}") from None
