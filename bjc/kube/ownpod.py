"""The controller's own pod: whom job pods belong to, and where callbacks go.

Two facts about the pod a controller runs in matter to the rest of bjc:

- Its top-level owner (Pod -> ReplicaSet -> Deployment). Job pods carry an owner
  reference to it, so deleting the Deployment garbage-collects them.
- Whether it leads. The leader labels its own pod
  `batch-job-controller.bakito.github.com/leader: <name>` once it has reloaded the
  history and is ready for callbacks, and removes that label from every other pod;
  the callback Service selects it, so callbacks reach the leader and only the
  leader, while every healthy replica stays Ready (a Deployment can roll). A
  process removes the label from its own pod when it starts and when it stops
  leading, so a restarted ex-leader does not keep attracting callbacks.

Outside a cluster (no pod of that name) both are no-ops.

Deliberately not here: when to lead (bjc.kube.leader) or what leading means (bjc.runtime).
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import aiohttp

from bjc.kube.client import ApiError, KubeClient
from bjc.kube.objects import GenericObject, Pod
from bjc.kube.rights import LEADER_LABEL as LEADER_LABEL_FEATURE
from bjc.kube.rights import Rights, forbidden

log = logging.getLogger(__name__)

LEADER_LABEL = "batch-job-controller.bakito.github.com/leader"

# where an owner of each kind lives in the API
_OWNER_PATHS = {
    "ReplicaSet": "/apis/apps/v1/namespaces/{ns}/replicasets/{name}",
    "Deployment": "/apis/apps/v1/namespaces/{ns}/deployments/{name}",
    "StatefulSet": "/apis/apps/v1/namespaces/{ns}/statefulsets/{name}",
    "DaemonSet": "/apis/apps/v1/namespaces/{ns}/daemonsets/{name}",
    "Job": "/apis/batch/v1/namespaces/{ns}/jobs/{name}",
    "CronJob": "/apis/batch/v1/namespaces/{ns}/cronjobs/{name}",
}


async def find_top_owner(kube: KubeClient, namespace: str, pod_name: str) -> dict[str, Any] | None:
    """The controller pod's top-level owner (Pod → ReplicaSet → Deployment), if any."""
    if not pod_name:
        return None
    path = f"/api/v1/namespaces/{namespace}/pods/{pod_name}"
    top: dict[str, Any] | None = None
    for _ in range(8):  # owner chains are short; never loop on a cycle
        try:
            obj = await kube.get_or_none(path, GenericObject)
        except (ApiError, aiohttp.ClientError) as e:
            log.warning("cannot read owner %s: %s", path, e)
            return top
        if obj is None or not obj.metadata.owner_references:
            return top
        refs = obj.metadata.owner_references
        ref = next((r for r in refs if r.controller), refs[0])
        top = {"apiVersion": ref.api_version, "kind": ref.kind, "name": ref.name, "uid": ref.uid}
        template = _OWNER_PATHS.get(ref.kind)
        if template is None:
            return top
        path = template.format(ns=namespace, name=ref.name)
    return top


async def set_leader_label(
    kube: KubeClient,
    namespace: str,
    pod_name: str,
    name: str,
    leading: bool,
    *,
    rights: Rights | None = None,
) -> None:
    """Label our pod as the leader of controller `name` (or remove the label).

    Taking the label also removes it from every other pod that carries it for the
    same controller (a crashed leader's pod keeps its labels). Transient API errors
    are retried until this succeeds or is cancelled; a refusal is logged and given
    up, since the controller works without it when job pods reach it by pod IP or
    through a Service selecting every replica. Without the right to patch pods
    (`rights`), the first refusal is reported once and the label is never tried again.
    """
    if not pod_name or (rights is not None and rights.missing(LEADER_LABEL_FEATURE)):
        return
    pods = f"/api/v1/namespaces/{namespace}/pods"
    delay = 0.2
    while True:
        try:
            if leading:
                others, _ = await kube.list(pods, Pod, {"labelSelector": f"{LEADER_LABEL}={name}"})
                for other in others:
                    if other.metadata.name != pod_name:
                        await _patch_label(kube, f"{pods}/{other.metadata.name}", None)
            await _patch_label(kube, f"{pods}/{pod_name}", name if leading else None)
            return
        except ApiError as e:
            if e.status == 404:
                log.debug("no pod %s: not labelling it", pod_name)
                return
            if rights is not None and forbidden(e):
                instead = "callbacks reach the pods the callback Service selects"
                await rights.refuse(LEADER_LABEL_FEATURE, e, instead)
                return
            if not e.retryable:
                log.warning("cannot set the leader label on pod %s: %s", pod_name, e)
                return
            error: Exception = e
        except (aiohttp.ClientError, TimeoutError) as e:
            error = e
        log.warning("cannot set the leader label on pod %s: %s; retrying", pod_name, error)
        await asyncio.sleep(delay)
        delay = min(delay * 2, 5.0)


async def _patch_label(kube: KubeClient, path: str, value: str | None) -> None:
    patch: dict[str, Any] = {"metadata": {"labels": {LEADER_LABEL: value}}}
    try:
        await kube.patch(path, patch)
    except ApiError as e:
        if e.status != 404 or value is not None:  # a pod that is gone needs no unlabelling
            raise
