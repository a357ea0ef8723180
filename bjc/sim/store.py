"""The simulated cluster's state: typed resources, one resourceVersion, history, watchers.

Exists to give the HTTP layer (server.py) apiserver semantics without HTTP in the
way: create/update/patch/delete with the real server's conflicts and defaults, one
global monotonically increasing resourceVersion, a bounded history of changes that
watches replay (older versions are compacted: 410 Gone), and a cheap wake-up for
watchers. Stored objects are never mutated after commit (every write stores a new
dict), so the history can share them and each change is encoded at most once per
API view and wire encoding. Defaults are the few clients rely on (pod and namespace
status, service ClusterIPs, secret type; a secret's `stringData` is merged into
`data`), and an empty value counts as unset: protobuf clients send empty specs and
statuses where JSON clients send nothing. Deliberately not here: graceful deletion
and finalizers (delete removes at once), garbage collection, admission beyond the
defaults clients rely on, namespace existence checks (objects may live in namespaces
nobody created).
"""

from __future__ import annotations

import asyncio
import base64
import bisect
import copy
import random
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import msgspec

from bjc.sim.selectors import valid_dns_subdomain, valid_label_key, valid_label_value

Obj = dict[str, Any]

_encode = msgspec.json.Encoder().encode


def now_rfc3339() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class ApiError(Exception):
    """An error answered as a `Status` object, exactly shaped like the real server's."""

    def __init__(
        self,
        code: int,
        reason: str,
        message: str,
        *,
        kind: str | None = None,
        name: str | None = None,
        group: str = "",
        causes: list[dict[str, str]] | None = None,
        retry_after: int | None = None,
    ) -> None:
        super().__init__(message)
        self.code = code
        self.reason = reason
        self.message = message
        self.kind = kind
        self.name = name
        self.group = group
        self.causes = causes
        self.retry_after = retry_after

    def status(self) -> Obj:
        body: Obj = {
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
            "code": self.code,
        }
        details: Obj = {}
        if self.name is not None:
            details["name"] = self.name
        if self.group:
            details["group"] = self.group
        if self.kind is not None:
            details["kind"] = self.kind
        if self.causes:
            details["causes"] = self.causes
        if self.retry_after is not None:
            details["retryAfterSeconds"] = self.retry_after
        if details:
            body["details"] = details
        return body


def _gr(rt: ResourceType) -> str:
    return f"{rt.plural}.{rt.group}" if rt.group else rt.plural


def not_found(rt: ResourceType, name: str) -> ApiError:
    return ApiError(
        404, "NotFound", f'{_gr(rt)} "{name}" not found', kind=rt.plural, name=name, group=rt.group
    )


def conflict(rt: ResourceType, name: str) -> ApiError:
    return ApiError(
        409,
        "Conflict",
        f'Operation cannot be fulfilled on {_gr(rt)} "{name}": the object has been modified; '
        "please apply your changes to the latest version and try again",
        kind=rt.plural,
        name=name,
        group=rt.group,
    )


def invalid(rt: ResourceType, name: str, causes: list[tuple[str, str]]) -> ApiError:
    text = ", ".join(f"{f}: {m}" for f, m in causes)
    return ApiError(
        422,
        "Invalid",
        f'{rt.kind} "{name}" is invalid: {text}',
        kind=rt.kind,
        name=name,
        group=rt.group,
        causes=[{"reason": "FieldValueInvalid", "message": m, "field": f} for f, m in causes],
    )


def bad_request(message: str) -> ApiError:
    return ApiError(400, "BadRequest", message)


@dataclass(frozen=True)
class ResourceType:
    group: str
    version: str
    kind: str
    plural: str
    namespaced: bool
    verbs: tuple[str, ...]
    storage: str = ""  # collection key; resources sharing it are views of the same objects
    short_names: tuple[str, ...] = ()
    subresources: tuple[str, ...] = ()
    singular: str = ""

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    @property
    def key(self) -> str:
        return self.storage or self.plural


_RW = ("create", "delete", "deletecollection", "get", "list", "patch", "update", "watch")

RESOURCES: list[ResourceType] = [
    ResourceType(
        "", "v1", "Pod", "pods", True, _RW, short_names=("po",), subresources=("status", "log")
    ),
    ResourceType(
        "", "v1", "Node", "nodes", False, _RW, short_names=("no",), subresources=("status",)
    ),
    ResourceType("", "v1", "ConfigMap", "configmaps", True, _RW, short_names=("cm",)),
    ResourceType("", "v1", "Service", "services", True, _RW, short_names=("svc",)),
    ResourceType(
        "",
        "v1",
        "Namespace",
        "namespaces",
        False,
        _RW,
        short_names=("ns",),
        subresources=("status",),
    ),
    ResourceType("", "v1", "Event", "events", True, _RW, short_names=("ev",)),
    ResourceType("events.k8s.io", "v1", "Event", "events", True, _RW, storage="events"),
    ResourceType("apps", "v1", "ReplicaSet", "replicasets", True, _RW, short_names=("rs",)),
    ResourceType("apps", "v1", "Deployment", "deployments", True, _RW, short_names=("deploy",)),
    ResourceType("coordination.k8s.io", "v1", "Lease", "leases", True, _RW),
    ResourceType("", "v1", "ServiceAccount", "serviceaccounts", True, _RW, short_names=("sa",)),
    ResourceType("", "v1", "Secret", "secrets", True, _RW),
]

BY_PATH: dict[tuple[str, str, str], ResourceType] = {
    (r.group, r.version, r.plural): r for r in RESOURCES
}
BY_KIND: dict[tuple[str, str], ResourceType] = {(r.api_version, r.kind): r for r in RESOURCES}
# The canonical (stored) view of each collection: the first registered type with that key.
CANONICAL: dict[str, ResourceType] = {}
for _r in RESOURCES:
    CANONICAL.setdefault(_r.key, _r)


# --- events.k8s.io/v1 <-> core/v1 Event (same objects, two shapes, as in the real server) ---
_EV_FIELDS = [
    ("regarding", "involvedObject"),
    ("note", "message"),
    ("reportingController", "reportingComponent"),
    ("deprecatedSource", "source"),
    ("deprecatedFirstTimestamp", "firstTimestamp"),
    ("deprecatedLastTimestamp", "lastTimestamp"),
    ("deprecatedCount", "count"),
]


def event_to_core(obj: Obj) -> Obj:
    out = dict(obj)
    for new, old in _EV_FIELDS:
        if new in out:
            out[old] = out.pop(new)
    out["apiVersion"] = "v1"
    out["kind"] = "Event"
    return out


def event_from_core(obj: Obj) -> Obj:
    out = dict(obj)
    for new, old in _EV_FIELDS:
        if old in out:
            out[new] = out.pop(old)
    out["apiVersion"] = "events.k8s.io/v1"
    out["kind"] = "Event"
    return out


def to_view(rt: ResourceType, obj: Obj) -> Obj:
    """The stored object as resource type ``rt`` shows it."""
    if rt.group == "events.k8s.io":
        return event_from_core(obj)
    return obj


def from_view(rt: ResourceType, obj: Obj) -> Obj:
    if rt.group == "events.k8s.io":
        return event_to_core(obj)
    return obj


class Change:
    """One committed write: what a watch event is made of."""

    __slots__ = ("_events", "key", "obj", "old", "rv", "type")

    def __init__(self, rv: int, key: str, type_: str, obj: Obj, old: Obj | None) -> None:
        self.rv = rv
        self.key = key
        self.type = type_
        self.obj = obj
        self.old = old
        self._events: dict[tuple[str, str, EventEncoder], bytes] = {}

    def event(self, rt: ResourceType, type_: str, encode: EventEncoder) -> bytes:
        """The watch event for this change, encoded once per (view, type, encoding)."""
        ck = (rt.api_version, type_, encode)
        data = self._events.get(ck)
        if data is None:
            data = self._events[ck] = encode(type_, to_view(rt, self.obj))
        return data


EventEncoder = Callable[[str, Obj], bytes]


def json_event(type_: str, obj: Obj) -> bytes:
    """One line of a JSON watch stream."""
    return b'{"type":"' + type_.encode() + b'","object":' + _encode(obj) + b"}\n"


_GEN_CHARS = "bcdfghjklmnpqrstvwxz2456789"


@dataclass(eq=False)
class Watcher:
    """An open watch stream; `dropped` ends it at its next wake-up."""

    key: str
    dropped: bool = False


@dataclass
class Store:
    history_size: int = 10000
    seed: int = 0
    rv: int = 1
    compacted_rv: int = 1
    collections: dict[str, dict[tuple[str, str], Obj]] = field(default_factory=dict)
    logs: dict[tuple[str, str, str], bytes] = field(default_factory=dict)
    watchers: set[Watcher] = field(default_factory=set)
    on_commit: list[Callable[[Change], None]] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.history_size < 1:
            raise ValueError(f"history_size must be >= 1, got {self.history_size}")
        self._events: list[Change] = []
        self._first = 0
        self.min_watch_rv = 0
        self._changed: asyncio.Event | None = None
        self._rng = random.Random(self.seed)
        self._next_cluster_ip = 10 * 256 + 1
        for rt in RESOURCES:
            self.collections.setdefault(rt.key, {})

    # --- history and wake-ups ---

    def changed(self) -> asyncio.Event:
        """An event set by the next commit (or drop): what watchers wait on."""
        if self._changed is None:
            self._changed = asyncio.Event()
        return self._changed

    def _wake(self) -> None:
        if self._changed is not None:
            self._changed.set()
            self._changed = None

    def since(self, rv: int) -> list[Change]:
        """Changes after ``rv`` (caller checked ``rv >= compacted_rv``)."""
        idx = bisect.bisect_right(self._events, rv, lo=self._first, key=lambda c: c.rv)
        return self._events[idx:]

    def _commit(self, type_: str, key: str, obj: Obj, old: Obj | None) -> Change:
        change = Change(self.rv, key, type_, obj, old)
        self._events.append(change)
        if len(self._events) - self._first > self.history_size:
            self._first += 1
            self.compacted_rv = self._events[self._first - 1].rv
            if self._first > 1024 and self._first * 2 > len(self._events):
                del self._events[: self._first]
                self._first = 0
        for hook in self.on_commit:
            hook(change)
        self._wake()
        return change

    def expire_history(self) -> None:
        """Compact everything: a new watch from any resourceVersion handed out so far gets
        410 (even the current one: the client must relist). Open watches that are caught
        up keep running, as they do when etcd compacts under a real apiserver."""
        self._events.clear()
        self._first = 0
        self.compacted_rv = self.rv
        self.min_watch_rv = self.rv + 1
        self._wake()

    def too_old(self, rv: int) -> bool:
        """Whether a new watch from ``rv`` must be refused with 410."""
        return rv < self.compacted_rv or rv < self.min_watch_rv

    def drop_watches(self) -> int:
        n = len(self.watchers)
        for w in self.watchers:
            w.dropped = True
        self._wake()
        return n

    def _next_rv(self) -> str:
        self.rv += 1
        return str(self.rv)

    # --- reads ---

    def get(self, rt: ResourceType, namespace: str | None, name: str) -> Obj:
        obj = self.collections[rt.key].get((namespace or "", name))
        if obj is None:
            raise not_found(rt, name)
        return obj

    def list(self, rt: ResourceType, namespace: str | None) -> list[Obj]:
        coll = self.collections[rt.key]
        if namespace:
            items = [o for (ns, _), o in coll.items() if ns == namespace]
        else:
            items = list(coll.values())
        items.sort(key=lambda o: (o["metadata"].get("namespace", ""), o["metadata"]["name"]))
        return items

    # --- writes ---

    def create(self, rt: ResourceType, namespace: str | None, body: Obj) -> Obj:
        if not isinstance(body, dict):
            raise bad_request(f"the body of a {rt.kind} create must be a JSON object")
        obj = copy.deepcopy(from_view(rt, body))
        meta = obj.get("metadata")
        if not isinstance(meta, dict):
            meta = obj["metadata"] = {}
        if rt.namespaced:
            ns = namespace or meta.get("namespace") or "default"
            if meta.get("namespace") and meta["namespace"] != ns:
                raise bad_request(
                    "the namespace of the provided object does not match the namespace "
                    "sent on the request"
                )
            meta["namespace"] = ns
        else:
            ns = ""
            meta.pop("namespace", None)
        if not meta.get("name"):
            gen = meta.get("generateName")
            if not gen:
                raise invalid(
                    rt, "", [("metadata.name", "Required value: name or generateName is required")]
                )
            coll = self.collections[rt.key]
            while True:
                meta["name"] = gen + "".join(self._rng.choice(_GEN_CHARS) for _ in range(5))
                if (ns, meta["name"]) not in coll:
                    break
        name = meta["name"]
        self._validate(rt, obj)
        if (ns, name) in self.collections[rt.key]:
            raise ApiError(
                409,
                "AlreadyExists",
                f'{_gr(rt)} "{name}" already exists',
                kind=rt.plural,
                name=name,
                group=rt.group,
            )
        canon = CANONICAL[rt.key]
        obj["apiVersion"] = canon.api_version
        obj["kind"] = canon.kind
        meta["uid"] = str(uuid.UUID(int=self._rng.getrandbits(128), version=4))
        meta["creationTimestamp"] = now_rfc3339()
        meta["generation"] = 1
        meta.pop("deletionTimestamp", None)
        self._defaults(canon, obj)
        meta["resourceVersion"] = self._next_rv()
        self.collections[rt.key][(ns, name)] = obj
        self._commit("ADDED", rt.key, obj, None)
        return obj

    def update(
        self, rt: ResourceType, namespace: str | None, name: str, body: Obj, *, status: bool = False
    ) -> Obj:
        if not isinstance(body, dict):
            raise bad_request(f"the body of a {rt.kind} update must be a JSON object")
        current = self.get(rt, namespace, name)
        new = copy.deepcopy(from_view(rt, body))
        meta = new.get("metadata")
        if not isinstance(meta, dict):
            meta = new["metadata"] = {}
        if meta.get("name", name) != name:
            raise bad_request(
                f"the name of the object ({meta.get('name')}) does not match "
                f"the name on the URL ({name})"
            )
        if rt.namespaced and meta.get("namespace", namespace) != namespace:
            raise bad_request(
                "the namespace of the provided object does not match "
                "the namespace sent on the request"
            )
        want_rv = meta.get("resourceVersion")
        if want_rv and want_rv != current["metadata"]["resourceVersion"]:
            raise conflict(rt, name)
        if meta.get("uid") and meta["uid"] != current["metadata"]["uid"]:
            raise conflict(rt, name)
        return self._store_update(rt, current, new, status=status)

    def _store_update(self, rt: ResourceType, current: Obj, new: Obj, *, status: bool) -> Obj:
        cmeta = current["metadata"]
        if status:
            # the status subresource changes status only
            merged = dict(current)
            if "status" in new:
                merged["status"] = new["status"]
            else:
                merged.pop("status", None)
            merged["metadata"] = dict(cmeta)
            new = merged
        else:
            if "status" in current:
                new["status"] = current["status"]
            else:
                new.pop("status", None)
            meta = new.setdefault("metadata", {})
            for k in ("uid", "creationTimestamp", "name", "generation"):
                meta[k] = cmeta[k]
            if rt.namespaced:
                meta["namespace"] = cmeta["namespace"]
            canon = CANONICAL[rt.key]
            new["apiVersion"] = canon.api_version
            new["kind"] = canon.kind
            self._validate(rt, new)
            self._defaults(canon, new)
            if new.get("spec") != current.get("spec"):
                meta["generation"] = cmeta["generation"] + 1
        meta = new["metadata"]
        meta["resourceVersion"] = self._next_rv()
        key = (cmeta.get("namespace", ""), cmeta["name"])
        self.collections[rt.key][key] = new
        self._commit("MODIFIED", rt.key, new, current)
        return new

    def patch(
        self,
        rt: ResourceType,
        namespace: str | None,
        name: str,
        apply: Callable[[Obj], Obj],
        preconditions: Obj,
        *,
        status: bool = False,
    ) -> Obj:
        current = self.get(rt, namespace, name)
        cmeta = current["metadata"]
        want_rv = preconditions.get("resourceVersion")
        if want_rv and want_rv != cmeta["resourceVersion"]:
            raise conflict(rt, name)
        if preconditions.get("uid") and preconditions["uid"] != cmeta["uid"]:
            raise conflict(rt, name)
        view = to_view(rt, current)
        patched = apply(view)
        if not isinstance(patched, dict):
            raise bad_request("the patched object is not a JSON object")
        new = copy.deepcopy(from_view(rt, patched))
        new.setdefault("metadata", {})["resourceVersion"] = cmeta["resourceVersion"]
        if new["metadata"].get("name", name) != name:
            raise bad_request("metadata.name cannot be changed by a patch")
        return self._store_update(rt, current, new, status=status)

    def delete(
        self, rt: ResourceType, namespace: str | None, name: str, preconditions: Obj | None = None
    ) -> Obj:
        current = self.get(rt, namespace, name)
        pre = preconditions or {}
        if (
            pre.get("resourceVersion")
            and pre["resourceVersion"] != current["metadata"]["resourceVersion"]
        ):
            raise conflict(rt, name)
        if pre.get("uid") and pre["uid"] != current["metadata"]["uid"]:
            raise ApiError(
                409,
                "Conflict",
                f'Operation cannot be fulfilled on {_gr(rt)} "{name}": Precondition failed: '
                f"UID in precondition: {pre['uid']}, "
                f"UID in object meta: {current['metadata']['uid']}",
                kind=rt.plural,
                name=name,
                group=rt.group,
            )
        gone = dict(current)
        gone["metadata"] = dict(current["metadata"], resourceVersion=self._next_rv())
        del self.collections[rt.key][(current["metadata"].get("namespace", ""), name)]
        self._commit("DELETED", rt.key, gone, current)
        return gone

    # --- validation and defaults ---

    def _validate(self, rt: ResourceType, obj: Obj) -> None:
        meta = obj["metadata"]
        name = meta.get("name", "")
        causes: list[tuple[str, str]] = []
        if not isinstance(name, str) or not valid_dns_subdomain(name):
            causes.append(
                (
                    "metadata.name",
                    f"Invalid value: {name!r}: a lowercase RFC 1123 subdomain must consist of "
                    "lower case alphanumeric characters, '-' or '.', and must start and end "
                    "with an alphanumeric character",
                )
            )
        labels = meta.get("labels") or {}
        if not isinstance(labels, dict):
            causes.append(("metadata.labels", "Invalid value: must be a map of strings"))
        else:
            for k, v in labels.items():
                if not valid_label_key(str(k)):
                    causes.append(("metadata.labels", f"Invalid value: {k!r}: invalid label key"))
                if not isinstance(v, str) or not valid_label_value(v):
                    causes.append(("metadata.labels", f"Invalid value: {v!r}: invalid label value"))
        if rt.key == "pods":
            spec = obj.get("spec")
            containers = spec.get("containers") if isinstance(spec, dict) else None
            if not containers or not isinstance(containers, list):
                causes.append(("spec.containers", "Required value"))
            else:
                for i, c in enumerate(containers):
                    if not isinstance(c, dict) or not c.get("name"):
                        causes.append((f"spec.containers[{i}].name", "Required value"))
                    elif not c.get("image"):
                        causes.append((f"spec.containers[{i}].image", "Required value"))
        if causes:
            raise invalid(rt, str(name), causes)

    def _defaults(self, rt: ResourceType, obj: Obj) -> None:
        if rt.key == "pods":
            spec = obj["spec"]
            spec.setdefault("restartPolicy", "Always")
            spec.setdefault("dnsPolicy", "ClusterFirst")
            spec.setdefault("schedulerName", "default-scheduler")
            spec.setdefault("terminationGracePeriodSeconds", 30)
            spec.setdefault("securityContext", {})
            spec.setdefault("serviceAccountName", spec.get("serviceAccount") or "default")
            spec.setdefault("enableServiceLinks", True)
            spec.setdefault("priority", 0)
            for c in [*spec.get("initContainers", []), *spec["containers"]]:
                c.setdefault("terminationMessagePath", "/dev/termination-log")
                c.setdefault("terminationMessagePolicy", "File")
                c.setdefault("resources", {})
                image = str(c.get("image", ""))
                tagged = ":" in image.rsplit("/", 1)[-1] and not image.endswith(":latest")
                c.setdefault("imagePullPolicy", "IfNotPresent" if tagged else "Always")
            if not obj.get("status"):
                obj["status"] = {"phase": "Pending", "qosClass": "BestEffort"}
        elif rt.key == "services":
            spec = obj.setdefault("spec", {})
            spec.setdefault("type", "ClusterIP")
            spec.setdefault("sessionAffinity", "None")
            if not spec.get("clusterIP"):
                n = self._next_cluster_ip
                self._next_cluster_ip += 1
                spec["clusterIP"] = f"10.96.{n // 256 % 256}.{n % 256}"
                spec["clusterIPs"] = [spec["clusterIP"]]
            for p in spec.get("ports", []):
                p.setdefault("protocol", "TCP")
                if not p.get("targetPort"):  # protobuf clients send 0 for "unset"
                    p["targetPort"] = p.get("port")
            obj.setdefault("status", {"loadBalancer": {}})
        elif rt.key == "namespaces":
            # `or`: protobuf clients send empty spec and status where JSON ones send none
            obj["spec"] = obj.get("spec") or {"finalizers": ["kubernetes"]}
            obj["status"] = obj.get("status") or {"phase": "Active"}
            obj["metadata"].setdefault("labels", {})["kubernetes.io/metadata.name"] = obj[
                "metadata"
            ]["name"]
        elif rt.key == "events":
            obj.setdefault("type", "Normal")
        elif rt.key == "secrets":
            obj.setdefault("type", "Opaque")
            string_data = obj.pop("stringData", None)
            if string_data:  # write-only: merged into data, as the real server does
                data = obj["data"] = dict(obj.get("data") or {})
                for k, v in string_data.items():
                    data[k] = base64.b64encode(str(v).encode()).decode()
        elif rt.key == "nodes":
            obj.setdefault("spec", {})
            obj.setdefault("status", {})
