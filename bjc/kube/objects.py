"""Slim msgspec views of the Kubernetes objects bjc reads.

The generated kubernetes_asyncio models cost ~64 MB of imports and decode a pod
watch event at ~1,600 events/s; these structs hold only the fields bjc looks at
and decode at hundreds of thousands per second. Unknown fields are ignored, every
field has a default, so a newer apiserver never breaks decoding.

Deliberately not here: anything bjc writes. Objects bjc creates (job pods, events,
leases) are built as plain dicts close to where they are sent.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any, Generic, TypeVar

import msgspec

T = TypeVar("T")


def micro_time(when: datetime | None = None) -> str:
    """A Kubernetes MicroTime (`2006-01-02T15:04:05.000000Z`): UTC, microseconds; now by default."""
    return (when or datetime.now(UTC)).astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class OwnerReference(msgspec.Struct, rename="camel", omit_defaults=True):
    """A metadata.ownerReferences entry (a job pod's is the controller pod's top owner)."""

    api_version: str = ""
    kind: str = ""
    name: str = ""
    uid: str = ""
    controller: bool | None = None
    block_owner_deletion: bool | None = None

    @classmethod
    def from_object(cls, obj: Mapping[str, Any]) -> OwnerReference:
        """From an owner-reference dict or a whole Kubernetes object (camelCase or snake_case)."""
        meta = obj.get("metadata")
        if isinstance(meta, Mapping):
            return cls(
                api_version=str(obj.get("apiVersion") or obj.get("api_version") or ""),
                kind=str(obj.get("kind") or ""),
                name=str(meta.get("name") or ""),
                uid=str(meta.get("uid") or ""),
            )
        ctrl = obj.get("controller")
        block = obj.get("blockOwnerDeletion", obj.get("block_owner_deletion"))
        return cls(
            api_version=str(obj.get("apiVersion") or obj.get("api_version") or ""),
            kind=str(obj.get("kind") or ""),
            name=str(obj.get("name") or ""),
            uid=str(obj.get("uid") or ""),
            controller=ctrl if isinstance(ctrl, bool) else None,
            block_owner_deletion=block if isinstance(block, bool) else None,
        )


class ObjectMeta(msgspec.Struct, rename="camel", omit_defaults=True):
    name: str = ""
    namespace: str = ""
    uid: str = ""
    resource_version: str = ""
    creation_timestamp: str | None = None
    deletion_timestamp: str | None = None
    labels: dict[str, str] = msgspec.field(default_factory=dict)
    annotations: dict[str, str] = msgspec.field(default_factory=dict)
    owner_references: list[OwnerReference] = msgspec.field(default_factory=list)


class ListMeta(msgspec.Struct, rename="camel"):
    resource_version: str = ""


class Container(msgspec.Struct):
    name: str = ""


class PodSpec(msgspec.Struct, rename="camel"):
    node_name: str = ""
    containers: list[Container] = msgspec.field(default_factory=list)
    init_containers: list[Container] = msgspec.field(default_factory=list)


class ContainerStateTerminated(msgspec.Struct, rename="camel"):
    exit_code: int = 0
    reason: str = ""
    message: str = ""
    finished_at: str | None = None


class ContainerState(msgspec.Struct):
    terminated: ContainerStateTerminated | None = None


class ContainerStatus(msgspec.Struct):
    name: str = ""
    state: ContainerState = msgspec.field(default_factory=ContainerState)


class PodStatus(msgspec.Struct, rename="camel"):
    phase: str = ""
    reason: str = ""
    message: str = ""
    start_time: str | None = None
    container_statuses: list[ContainerStatus] = msgspec.field(default_factory=list)


class Pod(msgspec.Struct):
    metadata: ObjectMeta = msgspec.field(default_factory=ObjectMeta)
    spec: PodSpec = msgspec.field(default_factory=PodSpec)
    status: PodStatus = msgspec.field(default_factory=PodStatus)

    @property
    def finished(self) -> bool:
        return self.status.phase in ("Succeeded", "Failed")

    @property
    def failure(self) -> str:
        """Why the pod failed, in words: the pod's own reason (an eviction, a deadline),
        then each container that ended with a non-zero exit code (`OOMKilled`, `Error`)."""
        own = ": ".join(part for part in (self.status.reason, self.status.message) if part)
        said = [own] if own else []
        for status in self.status.container_statuses:
            ended = status.state.terminated
            if ended is not None and ended.exit_code != 0:
                why = ": ".join(part for part in (ended.reason, ended.message) if part)
                said.append(
                    f"container {status.name} exited {ended.exit_code} ({why or 'no reason'})"
                )
        return "; ".join(said)


class NodeCondition(msgspec.Struct):
    type: str = ""
    status: str = ""


class NodeSpec(msgspec.Struct):
    unschedulable: bool = False


class NodeStatus(msgspec.Struct):
    conditions: list[NodeCondition] = msgspec.field(default_factory=list)


class Node(msgspec.Struct):
    metadata: ObjectMeta = msgspec.field(default_factory=ObjectMeta)
    spec: NodeSpec = msgspec.field(default_factory=NodeSpec)
    status: NodeStatus = msgspec.field(default_factory=NodeStatus)

    @property
    def ready(self) -> bool:
        return any(c.type == "Ready" and c.status == "True" for c in self.status.conditions)


class ConfigMap(msgspec.Struct):
    metadata: ObjectMeta = msgspec.field(default_factory=ObjectMeta)
    data: dict[str, str] = msgspec.field(default_factory=dict)


class GenericObject(msgspec.Struct):
    """Any object, when only its metadata matters (owner look-ups)."""

    kind: str = ""
    api_version: str = msgspec.field(default="", name="apiVersion")
    metadata: ObjectMeta = msgspec.field(default_factory=ObjectMeta)


class Status(msgspec.Struct):
    """The apiserver's error object (also sent as a watch ERROR event)."""

    status: str = ""
    message: str = ""
    reason: str = ""
    code: int = 0


class ObjectList(msgspec.Struct, Generic[T]):
    metadata: ListMeta = msgspec.field(default_factory=ListMeta)
    items: list[T] = msgspec.field(default_factory=list)


class RawWatchEvent(msgspec.Struct):
    type: str
    object: msgspec.Raw


class WatchEvent(msgspec.Struct, Generic[T]):
    type: str
    object: T
