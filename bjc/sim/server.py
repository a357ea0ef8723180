"""The simulated cluster's HTTP face: the Kubernetes REST API over aiohttp, and SimCluster.

Exists so that bjc, its tests, kubectl and kubernetes_asyncio talk real HTTP to
something with apiserver semantics (see store.py) and no Kubernetes installation.
Routing is one catch-all handler that parses Kubernetes paths
(`/api/v1/namespaces/{ns}/{plural}/{name}/{sub}`, `/apis/{group}/{version}/...`), so
fault injection sees every request with its verb and resource. Bodies and answers
are JSON or Kubernetes protobuf as the client asks (media.py, kubeproto.py), so
client-go programs work unmodified; lists and watches can be answered as
`meta.k8s.io/v1 Table` for kubectl. Deliberately absent: authentication/authorization,
server-side apply (415), OpenAPI beyond the minimal v3 documents kubectl needs,
aggregated discovery, the legacy `/api/v1/watch/...` paths, log following.
"""

from __future__ import annotations

import asyncio
import base64
import builtins
import contextlib
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import msgspec
import yaml
from aiohttp import web

from bjc.sim import kubeproto, media, serviceproxy
from bjc.sim import patch as patches
from bjc.sim.auth import TokenCheck
from bjc.sim.faults import Faults
from bjc.sim.selectors import SelectorError, combine, parse_field_selector, parse_label_selector
from bjc.sim.store import (
    BY_KIND,
    BY_PATH,
    CANONICAL,
    RESOURCES,
    ApiError,
    EventEncoder,
    Obj,
    ResourceType,
    Store,
    Watcher,
    bad_request,
    json_event,
    now_rfc3339,
    to_view,
)

_encode = msgspec.json.Encoder().encode

SERVER_VERSION = {
    "major": "1",
    "minor": "32",
    "gitVersion": "v1.32.0-bjcsim",
    "gitCommit": "0000000000000000000000000000000000000000",
    "gitTreeState": "clean",
    "buildDate": "2025-01-01T00:00:00Z",
    "goVersion": "go1.23.0",
    "compiler": "gc",
    "platform": "linux/amd64",
}

_TABLE_ACCEPT = "as=Table"
_PATCH_TYPES = (
    "application/json-patch+json",
    "application/merge-patch+json",
    "application/strategic-merge-patch+json",
)


def _json(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(
        body=_encode(body), status=status, content_type="application/json", headers=headers
    )


def _media(request: web.Request) -> str:
    """The media type to answer ``request`` in (ApiError 406 if it accepts none)."""
    return media.negotiate(request.headers.get("Accept", ""))


def _reply(request: web.Request, body: Obj, status: int = 200) -> web.Response:
    data, ctype = media.encode(body, _media(request))
    return web.Response(body=data, status=status, content_type=ctype)


def _error(request: web.Request, err: ApiError) -> web.Response:
    headers = {"Retry-After": str(err.retry_after)} if err.retry_after is not None else None
    try:
        answer_in = _media(request)
    except ApiError:
        answer_in = media.JSON  # the 406 itself
    data, ctype = media.encode(err.status(), answer_in)
    return web.Response(body=data, status=err.code, content_type=ctype, headers=headers)


def _age(ts: str | None) -> str:
    if not ts:
        return "<unknown>"
    try:
        then = datetime.strptime(ts, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
    except ValueError:
        return "<unknown>"
    secs = max(0, int((datetime.now(UTC) - then).total_seconds()))
    if secs < 120:
        return f"{secs}s"
    if secs < 7200:
        return f"{secs // 60}m"
    if secs < 172800:
        return f"{secs // 3600}h"
    return f"{secs // 86400}d"


def _col(name: str, desc: str = "", fmt: str = "", priority: int = 0) -> Obj:
    return {
        "name": name,
        "type": "string",
        "format": fmt,
        "description": desc,
        "priority": priority,
    }


def _table_columns(rt: ResourceType) -> list[Obj]:
    if rt.key == "pods":
        return [
            _col("Name", fmt="name"),
            _col("Ready"),
            _col("Status"),
            _col("Restarts"),
            _col("Age"),
            _col("IP", priority=1),
            _col("Node", priority=1),
        ]
    if rt.key == "nodes":
        return [
            _col("Name", fmt="name"),
            _col("Status"),
            _col("Roles"),
            _col("Age"),
            _col("Version"),
        ]
    if rt.key == "namespaces":
        return [_col("Name", fmt="name"), _col("Status"), _col("Age")]
    return [_col("Name", fmt="name"), _col("Age")]


def _table_cells(rt: ResourceType, obj: Obj) -> list[Any]:
    meta = obj.get("metadata", {})
    name, age = meta.get("name", ""), _age(meta.get("creationTimestamp"))
    status = obj.get("status") or {}
    if rt.key == "pods":
        cs = status.get("containerStatuses") or []
        total = len((obj.get("spec") or {}).get("containers") or [])
        ready = sum(1 for c in cs if c.get("ready"))
        restarts = sum(int(c.get("restartCount", 0)) for c in cs)
        shown = status.get("reason") or status.get("phase", "")
        for c in cs:
            state = c.get("state") or {}
            if "waiting" in state and state["waiting"].get("reason"):
                shown = state["waiting"]["reason"]
            elif "terminated" in state and state["terminated"].get("reason"):
                shown = state["terminated"]["reason"]
        return [
            name,
            f"{ready}/{total}",
            shown,
            restarts,
            age,
            status.get("podIP") or "<none>",
            (obj.get("spec") or {}).get("nodeName") or "<none>",
        ]
    if rt.key == "nodes":
        conds = {c.get("type"): c.get("status") for c in status.get("conditions") or []}
        shown = "Ready" if conds.get("Ready") == "True" else "NotReady"
        if (obj.get("spec") or {}).get("unschedulable"):
            shown += ",SchedulingDisabled"
        version = (status.get("nodeInfo") or {}).get("kubeletVersion", "")
        return [name, shown, "<none>", age, version]
    if rt.key == "namespaces":
        return [name, status.get("phase", ""), age]
    return [name, age]


def _table(rt: ResourceType, items: list[Obj], rv: str) -> Obj:
    return {
        "kind": "Table",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": {"resourceVersion": rv},
        "columnDefinitions": _table_columns(rt),
        "rows": [
            {
                "cells": _table_cells(rt, o),
                "object": {
                    "kind": "PartialObjectMetadata",
                    "apiVersion": "meta.k8s.io/v1",
                    "metadata": o.get("metadata", {}),
                },
            }
            for o in items
        ],
    }


def _resource_list(group: str, version: str) -> Obj:
    resources: list[Obj] = []
    for rt in RESOURCES:
        if rt.group != group or rt.version != version:
            continue
        entry: Obj = {
            "name": rt.plural,
            "singularName": rt.singular or rt.kind.lower(),
            "namespaced": rt.namespaced,
            "kind": rt.kind,
            "verbs": list(rt.verbs),
        }
        if rt.short_names:
            entry["shortNames"] = list(rt.short_names)
        resources.append(entry)
        for sub in rt.subresources:
            resources.append(
                {
                    "name": f"{rt.plural}/{sub}",
                    "singularName": "",
                    "namespaced": rt.namespaced,
                    "kind": rt.kind if sub == "status" else "Pod",
                    "verbs": ["get", "patch", "update"] if sub == "status" else ["get"],
                }
            )
    return {
        "kind": "APIResourceList",
        "apiVersion": "v1",
        "groupVersion": f"{group}/{version}" if group else version,
        "resources": resources,
    }


def _groups() -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for rt in RESOURCES:
        if rt.group and rt.version not in out.setdefault(rt.group, []):
            out[rt.group].append(rt.version)
    return out


def _api_group(group: str, versions: list[str]) -> Obj:
    gvs = [{"groupVersion": f"{group}/{v}", "version": v} for v in versions]
    return {
        "kind": "APIGroup",
        "apiVersion": "v1",
        "name": group,
        "versions": gvs,
        "preferredVersion": gvs[0],
    }


def _openapi_gvs() -> list[str]:
    return sorted(
        {f"apis/{r.group}/{r.version}" if r.group else f"api/{r.version}" for r in RESOURCES}
    )


def _openapi_doc(gv_path: str) -> Obj:
    """A minimal OpenAPI v3 document: just enough for kubectl to see that the server
    accepts `fieldValidation` (so it validates server-side and needs no schemas)."""
    paths: Obj = {}
    for rt in RESOURCES:
        if (f"apis/{rt.group}/{rt.version}" if rt.group else f"api/{rt.version}") != gv_path:
            continue
        scope = "/namespaces/{namespace}" if rt.namespaced else ""
        gvk = {"group": rt.group, "version": rt.version, "kind": rt.kind}
        paths[f"/{gv_path}{scope}/{rt.plural}/{{name}}"] = {
            "patch": {
                "operationId": f"patch{rt.kind}",
                "x-kubernetes-action": "patch",
                "x-kubernetes-group-version-kind": gvk,
                "parameters": [
                    {"name": "fieldValidation", "in": "query", "schema": {"type": "string"}}
                ],
                "responses": {"200": {"description": "OK"}},
            }
        }
    return {
        "openapi": "3.0.0",
        "info": {"title": "Kubernetes (bjc sim)", "version": SERVER_VERSION["gitVersion"]},
        "paths": paths,
        "components": {"schemas": {}},
    }


class _Target:
    """A parsed Kubernetes API path."""

    __slots__ = ("name", "namespace", "rt", "sub")

    def __init__(self, rt: ResourceType, namespace: str | None, name: str | None, sub: str | None):
        self.rt = rt
        self.namespace = namespace
        self.name = name
        self.sub = sub


def _parse_path(path: str) -> _Target | None:
    parts = [p for p in path.split("/") if p]
    if len(parts) >= 2 and parts[0] == "api":
        group, version, rest = "", parts[1], parts[2:]
    elif len(parts) >= 3 and parts[0] == "apis":
        group, version, rest = parts[1], parts[2], parts[3:]
    else:
        return None
    if not rest:
        return None
    namespace: str | None = None
    if (
        rest[0] == "namespaces"
        and len(rest) >= 3
        and not (len(rest) == 3 and rest[2] in ("status", "finalize"))
    ):
        namespace, rest = rest[1], rest[2:]
    rt = BY_PATH.get((group, version, rest[0]))
    if rt is None or len(rest) > 3:
        return None
    if namespace is not None and not rt.namespaced:
        return None
    name = rest[1] if len(rest) > 1 else None
    sub = rest[2] if len(rest) > 2 else None
    if sub is not None and sub not in rt.subresources:
        return None
    return _Target(rt, namespace, name, sub)


def _verb(method: str, target: _Target, query: Any) -> str:
    watching = query.get("watch") in ("1", "true", "True")
    if method == "GET":
        if target.name is None:
            return "watch" if watching else "list"
        return "get"
    return {
        "POST": "create",
        "PUT": "update",
        "PATCH": "patch",
        "DELETE": "delete" if target.name else "deletecollection",
    }.get(method, method.lower())


class SimCluster:
    """An in-process simulated Kubernetes API server (see the module docstring)."""

    def __init__(
        self, *, history_size: int = 10000, seed: int = 0, bookmark_interval: float = 5.0
    ) -> None:
        self.store = Store(history_size=history_size, seed=seed)
        self.faults = Faults(
            seed=seed, drop=self.store.drop_watches, expire=self.store.expire_history
        )
        self.auth = TokenCheck()
        self.bookmark_interval = bookmark_interval
        #: called with (verb, resource, query) of every API request, for tests to observe
        self.on_request: list[Callable[[str, str, Mapping[str, str]], None]] = []
        self.url = ""
        self.port = 0
        self._runner: web.AppRunner | None = None
        self._stopping = False
        for ns in ("default", "kube-system", "kube-public", "kube-node-lease"):
            self.create({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}})

    # --- lifecycle ---

    def make_app(self) -> web.Application:
        app = web.Application(client_max_size=64 * 1024 * 1024, middlewares=[self.auth.middleware])
        app.router.add_route("*", "/{tail:.*}", self._handle)
        return app

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> None:
        self._runner = web.AppRunner(
            self.make_app(), handler_cancellation=True, shutdown_timeout=2.0, access_log=None
        )
        await self._runner.setup()
        site = web.TCPSite(self._runner, host, port)
        await site.start()
        server = site._server
        assert server is not None
        sockets = getattr(server, "sockets", None) or []
        self.port = sockets[0].getsockname()[1]
        self.url = f"http://{host}:{self.port}"

    async def stop(self) -> None:
        self._stopping = True
        self.store.drop_watches()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    def kubeconfig(self) -> Obj:
        return {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "bjc-sim", "cluster": {"server": self.url}}],
            "users": [{"name": "bjc-sim", "user": {"username": "sim", "password": "sim"}}],
            "contexts": [
                {
                    "name": "bjc-sim",
                    "context": {"cluster": "bjc-sim", "user": "bjc-sim", "namespace": "default"},
                }
            ],
            "current-context": "bjc-sim",
            "preferences": {},
        }

    def write_kubeconfig(self, path: str | Path) -> None:
        if not self.url:
            raise RuntimeError("write_kubeconfig: the sim is not started, it has no URL yet")
        Path(path).write_text(yaml.safe_dump(self.kubeconfig(), sort_keys=False))

    # --- direct store access (fixtures, demo) ---

    def add_node(
        self,
        name: str,
        labels: dict[str, str] | None = None,
        ready: bool = True,
        unschedulable: bool = False,
    ) -> Obj:
        now = now_rfc3339()
        node: Obj = {
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": {
                "name": name,
                "labels": {
                    "kubernetes.io/hostname": name,
                    "kubernetes.io/os": "linux",
                    "kubernetes.io/arch": "amd64",
                    **(labels or {}),
                },
            },
            "spec": {"unschedulable": True} if unschedulable else {},
            "status": {
                "conditions": [
                    {
                        "type": "Ready",
                        "status": "True" if ready else "False",
                        "reason": "KubeletReady" if ready else "KubeletNotReady",
                        "message": "simulated kubelet is posting ready status"
                        if ready
                        else "simulated node is not ready",
                        "lastHeartbeatTime": now,
                        "lastTransitionTime": now,
                    }
                ],
                "addresses": [{"type": "Hostname", "address": name}],
                "nodeInfo": {
                    "architecture": "amd64",
                    "bootID": name,
                    "containerRuntimeVersion": "bjcsim://1",
                    "kernelVersion": "6.0.0",
                    "kubeProxyVersion": "v1.32.0-bjcsim",
                    "kubeletVersion": "v1.32.0-bjcsim",
                    "machineID": name,
                    "operatingSystem": "linux",
                    "osImage": "bjc sim",
                    "systemUUID": name,
                },
            },
        }
        return self.create(node)

    def create(self, obj: Obj) -> Obj:
        rt = BY_KIND.get((obj.get("apiVersion", ""), obj.get("kind", "")))
        if rt is None:
            raise ValueError(
                f"create: unsupported apiVersion/kind {obj.get('apiVersion')!r}/{obj.get('kind')!r}"
            )
        ns = obj.get("metadata", {}).get("namespace") if rt.namespaced else None
        return to_view(rt, self.store.create(rt, ns, obj))

    def _rt(self, kind_plural: str) -> ResourceType:
        plural, _, group = kind_plural.partition(".")
        for rt in RESOURCES:
            if rt.plural == plural and rt.group == group:
                return rt
        if not group and plural in CANONICAL:
            return CANONICAL[plural]
        raise ValueError(f"unsupported resource {kind_plural!r}")

    def get(self, kind_plural: str, namespace: str | None, name: str) -> Obj | None:
        rt = self._rt(kind_plural)
        obj = self.store.collections[rt.key].get((namespace or "" if rt.namespaced else "", name))
        return None if obj is None else to_view(rt, obj)

    def list(self, kind_plural: str, namespace: str | None = None) -> list[Obj]:
        rt = self._rt(kind_plural)
        return [to_view(rt, o) for o in self.store.list(rt, namespace)]

    def set_log(
        self, namespace: str, pod: str, container: str, text: str | bytes, *, append: bool = False
    ) -> None:
        """A container's log (`pods/log` answers it), or more of it with `append`."""
        key = (namespace, pod, container)
        data = text.encode() if isinstance(text, str) else text
        self.store.logs[key] = self.store.logs.get(key, b"") + data if append else data

    # --- HTTP ---

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        try:
            path = request.path
            if path.startswith("/_sim/"):
                return await self._admin(request)
            proxied = serviceproxy.PATH.match(path)
            if proxied is not None:
                return await self._service_proxy(request, *proxied.groups())
            target = _parse_path(path)
            verb = (
                _verb(request.method, target, request.query) if target else request.method.lower()
            )
            resource = ""
            if target is not None:
                resource = target.rt.plural + (f"/{target.sub}" if target.sub else "")
            for observe in self.on_request:
                observe(verb, resource, request.query)
            if target is not None:
                denied = self.auth.forbids(
                    request, verb, target.rt.group, resource, target.namespace
                )
                if denied:
                    raise ApiError(403, "Forbidden", denied)
            await self.faults.apply_delay()
            rule = self.faults.pick_failure(verb, resource)
            if rule is not None:
                if rule.status == 429:
                    raise ApiError(
                        429,
                        "TooManyRequests",
                        "the server has received too many requests and has asked us to try "
                        "again later",
                        retry_after=rule.retry_after,
                    )
                if rule.status == 403:  # as RBAC refuses a request (the sim has no RBAC)
                    group, _, sub = resource.partition("/")
                    raise ApiError(
                        403,
                        "Forbidden",
                        f'{group} is forbidden: User "system:serviceaccount:sim:controller" '
                        f'cannot {verb} resource "{group}"'
                        + (f' with subresource "{sub}"' if sub else "")
                        + ' in API group "" (injected by bjc sim)',
                    )
                raise ApiError(500, "InternalError", "Internal error occurred: injected by bjc sim")
            if target is None:
                return self._discovery(request)
            answer = await self._resource(request, target, verb)
            if self.faults.holds and verb != "watch":
                await self.faults.hold_answer(verb, resource, request.query)
            return answer
        except ApiError as err:
            return _error(request, err)

    def _discovery(self, request: web.Request) -> web.Response:
        path = request.path.rstrip("/") or "/"
        if path == "/version":
            return _json(SERVER_VERSION)
        if path == "/api":
            return _reply(
                request,
                {
                    "kind": "APIVersions",
                    "versions": ["v1"],
                    "serverAddressByClientCIDRs": [
                        {"clientCIDR": "0.0.0.0/0", "serverAddress": f"127.0.0.1:{self.port}"}
                    ],
                },
            )
        if path == "/api/v1":
            return _reply(request, _resource_list("", "v1"))
        groups = _groups()
        if path == "/apis":
            return _reply(
                request,
                {
                    "kind": "APIGroupList",
                    "apiVersion": "v1",
                    "groups": [_api_group(g, vs) for g, vs in groups.items()],
                },
            )
        parts = path.split("/")[1:]
        if len(parts) == 2 and parts[0] == "apis" and parts[1] in groups:
            return _reply(request, _api_group(parts[1], groups[parts[1]]))
        if len(parts) == 3 and parts[0] == "apis" and parts[2] in groups.get(parts[1], []):
            return _reply(request, _resource_list(parts[1], parts[2]))
        if path == "/openapi/v3":
            return _json(
                {
                    "paths": {
                        gv: {"serverRelativeURL": f"/openapi/v3/{gv}?hash=sim"}
                        for gv in _openapi_gvs()
                    }
                }
            )
        if path.startswith("/openapi/v3/") and path[len("/openapi/v3/") :] in _openapi_gvs():
            return _json(_openapi_doc(path[len("/openapi/v3/") :]))
        if path in ("/healthz", "/readyz", "/livez"):
            return web.Response(text="ok")
        raise ApiError(404, "NotFound", "the server could not find the requested resource")

    async def _resource(self, request: web.Request, t: _Target, verb: str) -> web.StreamResponse:
        rt, store, q = t.rt, self.store, request.query
        _media(request)  # a 406 comes before any change
        if verb in ("list", "watch", "deletecollection"):
            try:
                match = combine(
                    parse_label_selector(q.get("labelSelector")),
                    parse_field_selector(q.get("fieldSelector"), rt.key),
                )
            except SelectorError as exc:
                raise bad_request(str(exc)) from None
            if verb == "watch":
                return await self._watch(request, t, match)
            if verb == "list":
                return self._list(request, t, match)
            body = await media.read_body(request, rt.api_version, "DeleteOptions") or {}
            deleted = [
                store.delete(rt, o["metadata"].get("namespace"), o["metadata"]["name"])
                for o in store.list(rt, t.namespace)
                if match is None or match(o)
            ]
            return _reply(request, self._list_body(rt, [to_view(rt, o) for o in deleted], ""))
        if verb == "create":
            body = await media.read_body(request, rt.api_version, rt.kind)
            return _reply(request, to_view(rt, store.create(rt, t.namespace, body)), 201)
        assert t.name is not None
        if t.sub == "log":
            return self._log(request, t)
        status = t.sub == "status"
        if verb == "get":
            return _reply(request, to_view(rt, store.get(rt, t.namespace, t.name)))
        if verb == "update":
            body = await media.read_body(request, rt.api_version, rt.kind)
            updated = store.update(rt, t.namespace, t.name, body, status=status)
            return _reply(request, to_view(rt, updated))
        if verb == "patch":
            return _reply(request, to_view(rt, await self._patch(request, t, status)))
        if verb == "delete":
            body = await media.read_body(request, rt.api_version, "DeleteOptions") or {}
            if not isinstance(body, dict):
                raise bad_request("DeleteOptions must be a JSON object")
            gone = store.delete(rt, t.namespace, t.name, body.get("preconditions"))
            return _reply(request, to_view(rt, gone))
        raise ApiError(
            405, "MethodNotAllowed", f"{request.method} is not supported on {request.path}"
        )

    async def _patch(self, request: web.Request, t: _Target, status: bool) -> Obj:
        ctype = request.content_type
        assert t.name is not None
        if ctype not in _PATCH_TYPES:
            raise ApiError(
                415,
                "UnsupportedMediaType",
                f"the body of the request was in an unknown format - accepted media types include: "
                f"{', '.join(_PATCH_TYPES)} (got {ctype!r}; server-side apply is not simulated)",
            )
        body = media.parse_json(await request.read())
        pre: Obj = {}
        if ctype == "application/json-patch+json":

            def apply(obj: Obj) -> Obj:
                return patches.json_patch(obj, body)
        else:
            if not isinstance(body, dict):
                raise bad_request(f"a {ctype} body must be a JSON object")
            fn = (
                patches.merge_patch
                if ctype == "application/merge-patch+json"
                else patches.strategic_merge_patch
            )
            meta = body.get("metadata") or {}
            pre = {k: v for k, v in meta.items() if k in ("resourceVersion", "uid")}

            def apply(obj: Obj) -> Obj:
                return fn(obj, body)

        try:
            return self.store.patch(t.rt, t.namespace, t.name, apply, pre, status=status)
        except patches.PatchError as exc:
            raise ApiError(422, "Invalid", str(exc)) from None

    def _log(self, request: web.Request, t: _Target) -> web.Response:
        assert t.name is not None
        pod = self.store.get(t.rt, t.namespace, t.name)
        spec = pod.get("spec") or {}
        containers = [c["name"] for c in spec.get("containers", [])]
        every = [c["name"] for c in spec.get("initContainers", [])] + containers
        container = request.query.get("container")
        if not container:
            if len(containers) != 1:
                raise bad_request(
                    f"a container name must be specified for pod {t.name}, "
                    f"choose one of: [{' '.join(containers)}]"
                )
            container = containers[0]
        if container not in every:
            raise bad_request(f"container {container} is not valid for pod {t.name}")
        data = self.store.logs.get((pod["metadata"]["namespace"], t.name, container))
        if data is None:
            if (pod.get("status") or {}).get("phase", "Pending") == "Pending":
                raise bad_request(
                    f'container "{container}" in pod "{t.name}" is waiting to start: '
                    "ContainerCreating"
                )
            data = b""
        tail = request.query.get("tailLines")
        if tail:
            try:
                n = int(tail)
            except ValueError:
                raise bad_request(f"tailLines must be an integer, got {tail!r}") from None
            lines = data.splitlines(keepends=True)
            data = b"".join(lines[-n:]) if n > 0 else b""
        limit = request.query.get("limitBytes")
        if limit is not None:  # after tailLines, as the kubelet applies them
            try:
                n = int(limit)
            except ValueError:
                raise bad_request(f"limitBytes must be an integer, got {limit!r}") from None
            if n < 1:
                raise ApiError(
                    422,
                    "Invalid",
                    f'PodLogOptions "{t.name}" is invalid: limitBytes: Invalid value: {n}: '
                    "must be greater than 0",
                    kind="PodLogOptions",
                    name=t.name,
                )
            data = data[:n]
        return web.Response(body=data, content_type="text/plain")

    def _list_body(
        self, rt: ResourceType, items: builtins.list[Obj], rv: str, cont: str = ""
    ) -> Obj:
        meta: Obj = {"resourceVersion": rv or str(self.store.rv)}
        if cont:
            meta["continue"] = cont
        return {
            "kind": f"{rt.kind}List",
            "apiVersion": rt.api_version,
            "metadata": meta,
            "items": items,
        }

    def _list(self, request: web.Request, t: _Target, match: Any) -> web.Response:
        rt, q = t.rt, request.query
        items = self.store.list(rt, t.namespace)
        if match is not None:
            items = [o for o in items if match(o)]
        cont = ""
        start = q.get("continue")
        if start:
            try:
                after = tuple(msgspec.json.decode(base64.urlsafe_b64decode(start)))
            except (ValueError, msgspec.DecodeError):
                raise ApiError(
                    410, "Expired", "the provided continue parameter is too old"
                ) from None
            items = [
                o
                for o in items
                if (o["metadata"].get("namespace", ""), o["metadata"]["name"]) > after
            ]
        limit = q.get("limit")
        if limit:
            try:
                n = int(limit)
            except ValueError:
                raise bad_request(f"limit must be an integer, got {limit!r}") from None
            if 0 < n < len(items):
                items = items[:n]
                last = items[-1]["metadata"]
                cont = base64.urlsafe_b64encode(
                    _encode([last.get("namespace", ""), last["name"]])
                ).decode()
        rv = str(self.store.rv)
        if _TABLE_ACCEPT in request.headers.get("Accept", ""):
            table = _table(rt, items, rv)
            if cont:
                table["metadata"]["continue"] = cont
            return _json(table)
        if _media(request) == media.JSON and CANONICAL[rt.key] is rt:
            head = self._list_body(rt, [], rv, cont)
            # encode items once, splice into the envelope (large lists stay cheap)
            head_bytes = _encode(head)
            body = head_bytes[:-3] + b"[" + b",".join(_encode(o) for o in items) + b"]}"
            return web.Response(body=body, content_type="application/json")
        return _reply(request, self._list_body(rt, [to_view(rt, o) for o in items], rv, cont))

    async def _watch(self, request: web.Request, t: _Target, match: Any) -> web.StreamResponse:
        rt, store, q = t.rt, self.store, request.query
        table = _TABLE_ACCEPT in request.headers.get("Accept", "")
        bookmarks = q.get("allowWatchBookmarks") in ("1", "true", "True")
        timeout = q.get("timeoutSeconds")
        loop = asyncio.get_running_loop()
        try:
            deadline = loop.time() + (float(timeout) if timeout else 1800.0)
        except ValueError:
            raise bad_request(f"timeoutSeconds must be a number, got {timeout!r}") from None
        rv_param = q.get("resourceVersion") or ""
        initial = rv_param in ("", "0") or q.get("sendInitialEvents") in ("1", "true")
        try:
            cursor = int(rv_param) if rv_param else 0
        except ValueError:
            raise bad_request(f"invalid resource version: {rv_param!r}") from None
        ns = t.namespace

        def visible(obj: Obj) -> bool:
            if ns and obj["metadata"].get("namespace") != ns:
                return False
            return match is None or match(obj)

        # plain events (bookmarks, errors) and object events: JSON lines or protobuf frames
        plain: EventEncoder = json_event
        ctype = media.JSON
        if not table and _media(request) == media.PROTOBUF:
            if kubeproto.message_class(rt.api_version, rt.kind):
                plain, ctype = kubeproto.watch_frame, f"{media.PROTOBUF};stream=watch"

        def line(type_: str, obj: Obj, change: Any = None) -> bytes:
            if table:
                view = to_view(rt, obj)
                return json_event(type_, _table(rt, [view], obj["metadata"]["resourceVersion"]))
            if change is not None:
                return change.event(rt, type_, plain)  # encoded once for all watchers
            return plain(type_, to_view(rt, obj))

        def bookmark(rv: int, end_of_initial: bool = False) -> bytes:
            meta: Obj = {"resourceVersion": str(rv)}
            if end_of_initial:
                meta["annotations"] = {"k8s.io/initial-events-end": "true"}
            return plain(
                "BOOKMARK", {"kind": rt.kind, "apiVersion": rt.api_version, "metadata": meta}
            )

        resp = web.StreamResponse(headers={"Content-Type": ctype, "Cache-Control": "no-cache"})
        resp.enable_chunked_encoding()
        watcher = Watcher(rt.key)
        store.watchers.add(watcher)
        try:
            await resp.prepare(request)
            if initial and rv_param in ("", "0"):
                buf = [line("ADDED", o) for o in store.list(rt, ns) if match is None or match(o)]
                cursor = store.rv
                if q.get("sendInitialEvents") in ("1", "true") and bookmarks:
                    buf.append(bookmark(cursor, True))
                if buf:
                    await resp.write(b"".join(buf))
            elif store.too_old(cursor):
                cursor = -1  # answered with the in-stream 410 below
            next_bookmark = loop.time() + self.bookmark_interval
            while True:
                changed = store.changed()
                if watcher.dropped or self._stopping:
                    break
                if cursor < store.compacted_rv:
                    shown = rv_param if cursor < 0 else cursor
                    err = ApiError(
                        410,
                        "Expired",
                        f"too old resource version: {shown} ({store.compacted_rv + 1})",
                    )
                    await resp.write(plain("ERROR", err.status()))
                    break
                buf = []
                for ch in store.since(cursor):
                    cursor = ch.rv
                    if ch.key != rt.key:
                        continue
                    new_in = visible(ch.obj)
                    if ch.type == "MODIFIED":
                        old_in = ch.old is not None and visible(ch.old)
                        if new_in and old_in:
                            buf.append(line("MODIFIED", ch.obj, ch))
                        elif new_in:
                            buf.append(line("ADDED", ch.obj, ch))
                        elif old_in:
                            buf.append(line("DELETED", ch.obj, ch))
                    elif new_in:
                        buf.append(line(ch.type, ch.obj, ch))
                now = loop.time()
                if bookmarks and now >= next_bookmark:
                    buf.append(bookmark(max(cursor, store.rv)))
                    next_bookmark = now + self.bookmark_interval
                if buf:
                    await resp.write(b"".join(buf))
                cursor = max(cursor, store.rv) if cursor >= store.compacted_rv else cursor
                now = loop.time()
                if now >= deadline:
                    if bookmarks:
                        await resp.write(bookmark(cursor))
                    break
                wait = deadline - now
                if bookmarks:
                    wait = min(wait, max(0.0, next_bookmark - now))
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(changed.wait(), timeout=wait)
        except ConnectionResetError:
            return resp  # the client went away: nothing more to say
        finally:
            store.watchers.discard(watcher)
        with contextlib.suppress(ConnectionResetError):
            await resp.write_eof()
        return resp

    async def _service_proxy(
        self, request: web.Request, namespace: str, service: str, path: str | None
    ) -> web.Response:
        """The API server's service proxy (bjc.sim.serviceproxy), authorized as kube-apiserver
        does: `get` on `services/proxy`."""
        name, _, port = service.removeprefix("http:").partition(":")
        denied = self.auth.forbids(request, "get", "", "services/proxy", namespace)
        if denied:
            raise ApiError(403, "Forbidden", denied)
        found = self.get("services", namespace, name)
        if found is None:
            raise ApiError(404, "NotFound", f'services "{name}" not found')
        pods = self.list("pods", namespace)
        return await serviceproxy.forward(request, found, pods, port, path or "/")

    # --- admin paths (/_sim/...) for out-of-process tests and the agent ---

    async def _admin(self, request: web.Request) -> web.StreamResponse:
        parts = [p for p in request.path.split("/") if p][1:]
        if request.method in ("PUT", "POST") and len(parts) == 4 and parts[0] == "logs":
            data = bytearray()  # read as it comes: a log may be larger than client_max_size
            async for chunk in request.content.iter_chunked(1 << 20):
                data += chunk
            append = request.method == "POST"  # PUT replaces the log, POST adds to it
            self.set_log(parts[1], parts[2], parts[3], bytes(data), append=append)
            return web.Response(status=204)
        if request.method == "POST" and len(parts) == 2 and parts[0] == "faults":
            body = await media.read_body(request) or {}
            if not isinstance(body, dict):
                raise bad_request("fault options must be a JSON object")
            action = parts[1]
            try:
                if action == "drop-watches":
                    return _json({"dropped": self.faults.drop_watches()})
                if action == "delay":
                    self.faults.delay(float(body.get("seconds", 0)))
                elif action == "fail":
                    self.faults.fail(
                        float(body["share"]),
                        int(body.get("status", 500)),
                        int(body.get("retry_after", 1)),
                        body.get("verb"),
                        body.get("resource"),
                        None if body.get("times") is None else int(body["times"]),
                    )
                elif action == "clear":
                    self.faults.clear()
                elif action == "expire-history":
                    self.faults.expire_history()
                else:
                    raise ApiError(404, "NotFound", f"unknown fault action {action!r}")
            except (KeyError, ValueError, TypeError) as exc:
                raise bad_request(f"fault {action}: {exc}") from None
            return _json({"ok": True})
        raise ApiError(404, "NotFound", f"unknown sim admin path {request.path}")
