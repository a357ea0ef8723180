"""The pod as the sim's kubelet stand-in sees it, and what a kubelet derives from it.

Exists because two modules run pods: the node agent (`bjc.sim.agent`, simulated job
pods) and the process runner (`bjc.sim.containers`, controller pods as local
processes). Both read the same slim msgspec views of a pod (msgspec ignores every
field not declared here), resolve a container's env with the downward API the same
way, and report status in the same documents (conditions, container states). Kept
apart from both so that neither has to import the other for them.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import msgspec

# --- slim views of a pod (msgspec ignores the rest) ---


class FieldRef(msgspec.Struct):
    fieldPath: str = ""


class EnvSource(msgspec.Struct):
    fieldRef: FieldRef | None = None


class EnvVar(msgspec.Struct):
    name: str
    value: str | None = None
    valueFrom: EnvSource | None = None


class Container(msgspec.Struct):
    name: str
    image: str = ""
    env: list[EnvVar] = msgspec.field(default_factory=list)
    command: list[str] = msgspec.field(default_factory=list)
    args: list[str] = msgspec.field(default_factory=list)


class PodSpec(msgspec.Struct):
    nodeName: str = ""
    containers: list[Container] = msgspec.field(default_factory=list)
    initContainers: list[Container] = msgspec.field(default_factory=list)
    activeDeadlineSeconds: int | None = None


class PodStatus(msgspec.Struct):
    phase: str = ""
    startTime: str | None = None
    podIP: str | None = None


class ObjectMeta(msgspec.Struct):
    name: str = ""
    namespace: str = ""
    uid: str = ""
    resourceVersion: str = ""
    deletionTimestamp: str | None = None


class Pod(msgspec.Struct):
    metadata: ObjectMeta = msgspec.field(default_factory=ObjectMeta)
    spec: PodSpec = msgspec.field(default_factory=PodSpec)
    status: PodStatus = msgspec.field(default_factory=PodStatus)


class PodGone(Exception):
    """The pod was deleted or replaced while we were updating it."""


def now() -> str:
    """The current time as the API writes timestamps (RFC 3339, seconds, UTC)."""
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def container_env(pod: Pod, container: Container, pod_ip: str) -> dict[str, str]:
    """The container's env, with the downward-API fields a kubelet resolves filled in."""
    fields = {
        "metadata.name": pod.metadata.name,
        "metadata.namespace": pod.metadata.namespace,
        "metadata.uid": pod.metadata.uid,
        "spec.nodeName": pod.spec.nodeName,
        "status.podIP": pod_ip,
        "status.hostIP": "127.0.0.1",
    }
    env: dict[str, str] = {}
    for e in container.env:
        if e.value is not None:
            env[e.name] = e.value
        elif e.valueFrom is not None and e.valueFrom.fieldRef is not None:
            path = e.valueFrom.fieldRef.fieldPath
            if path in fields:
                env[e.name] = fields[path]
        else:
            env[e.name] = ""
    return env


# --- status documents (what a kubelet reports) ---


def conditions(ready: bool, reason: str | None = None) -> list[dict[str, Any]]:
    """The pod's conditions: all True but Ready and ContainersReady, which are ``ready``."""
    at = now()
    flag = "True" if ready else "False"
    out = [
        {"type": "PodReadyToStartContainers", "status": "True", "lastTransitionTime": at},
        {"type": "Initialized", "status": "True", "lastTransitionTime": at},
        {"type": "Ready", "status": flag, "lastTransitionTime": at},
        {"type": "ContainersReady", "status": flag, "lastTransitionTime": at},
        {"type": "PodScheduled", "status": "True", "lastTransitionTime": at},
    ]
    if reason:
        out[2]["reason"] = out[3]["reason"] = reason
    return out


def state(**given: Any) -> dict[str, Any]:
    """A container state with the other states nulled out: the status patch is a
    strategic merge, as the kubelet's, so a state left out would survive."""
    return {k: given.get(k) for k in ("waiting", "running", "terminated")}


def container_status(
    c: Container, current: dict[str, Any], ready: bool, restarts: int = 0
) -> dict[str, Any]:
    """One entry of `status.containerStatuses`, the container in state ``current``."""
    return {
        "name": c.name,
        "image": c.image,
        "imageID": "",
        "ready": ready,
        "started": current.get("running") is not None,
        "restartCount": restarts,
        "state": current,
    }
