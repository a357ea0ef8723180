"""What bjc does when the RBAC it runs under refuses a call it would like to make.

bjc's manifests grant every right bjc uses. A deployment made for the Go controller
(its Helm chart's Role, kept when a team swaps only the image) grants fewer: no
single pod delete, no pod patch, no ConfigMap patch. Such a refusal (403 Forbidden)
is not an error to retry or to log on every call: the feature that needed the right
falls back to a call the Go rules do allow, or is switched off, and bjc says so once
per feature (a warning in the log and a Warning Event regarding the controller's own
pod, `kubectl describe pod` shows it). docs/security.md lists the rights each feature
needs. The fallbacks:

- deleting one job pod (`jobTimeout`): `deletecollection` with the field selector
  `metadata.name=<pod>`, which the Go rules grant;
- annotating the ConfigMap (trigger answers, last schedule time): read it and `update`
  it with the annotations merged (optimistic concurrency: a conflict reads again);
- labelling the leader's pod for the callback Service: no fallback (the Go rules grant
  no pod write); the label is left alone and callbacks reach whichever pods the
  Service selects (the Go chart's selects every replica, of which it runs one).

Deliberately not here: what a feature does with the fallback's outcome (its caller).
"""

from __future__ import annotations

import logging
from typing import Any

import aiohttp

from bjc.kube.client import ApiError, KubeClient, delete_options
from bjc.kube.events import EventRequest, PodNotFound, send_event

log = logging.getLogger(__name__)

FORBIDDEN = 403
_CONFLICT_ATTEMPTS = 5

# features, as the log and the Event name them
LEADER_LABEL = "leader label"
DELETE_POD = "deleting a timed-out job pod"
ANNOTATE_CONFIG_MAP = "annotating the ConfigMap"


def forbidden(error: BaseException) -> bool:
    return isinstance(error, ApiError) and error.status == FORBIDDEN


class Rights:
    """The features refused so far (each reported once) and the fallbacks that avoid them."""

    def __init__(
        self, kube: KubeClient, namespace: str, pod_name: str, controller_name: str
    ) -> None:
        self.kube = kube
        self.namespace = namespace
        self.pod_name = pod_name  # the Event regards it ("" outside a cluster: log only)
        self.controller_name = controller_name
        self.refused: dict[str, str] = {}  # feature -> what bjc does instead

    def missing(self, feature: str) -> bool:
        return feature in self.refused

    async def refuse(self, feature: str, error: ApiError, instead: str) -> None:
        """Note that `feature` lacks a right: the first time, log and post an Event."""
        if feature in self.refused:
            return
        self.refused[feature] = instead
        message = (
            f"{feature}: the API refused ({error}); {instead}. "
            "Grant the right to enable it (see docs/security.md)"
        )
        log.warning("%s", message)
        if not self.pod_name:
            return
        request = EventRequest(
            warning=True, reason="MissingRight", message="%s", args=[message], action="Authorize"
        )
        try:
            await send_event(
                self.kube, self.namespace, self.pod_name, self.controller_name, request
            )
        except (ApiError, PodNotFound, aiohttp.ClientError, TimeoutError) as e:
            log.debug("cannot post the MissingRight event: %s", e)

    # --- the fallbacks ---

    async def delete_pod(self, pods_path: str, name: str) -> None:
        """Delete one pod; without the right, through a deletecollection of that name."""
        if not self.missing(DELETE_POD):
            try:
                await self.kube.delete(f"{pods_path}/{name}")
                return
            except ApiError as e:
                if not forbidden(e):
                    raise
                await self.refuse(DELETE_POD, e, "deleting it by a name field selector instead")
        params = {"fieldSelector": f"metadata.name={name}"}
        await self.kube.request(
            "DELETE", pods_path, params=params, body=delete_options("Background")
        )

    async def annotate(self, path: str, annotations: dict[str, str]) -> None:
        """Merge annotations onto an object; without the patch right, by read and update."""
        if not self.missing(ANNOTATE_CONFIG_MAP):
            try:
                await self.kube.patch(path, {"metadata": {"annotations": annotations}})
                return
            except ApiError as e:
                if not forbidden(e):
                    raise
                await self.refuse(ANNOTATE_CONFIG_MAP, e, "reading and updating it instead")
        for attempt in range(_CONFLICT_ATTEMPTS):
            obj: dict[str, Any] = await self.kube.get(path, dict)
            meta = obj.setdefault("metadata", {})
            merged = {**(meta.get("annotations") or {}), **annotations}
            meta["annotations"] = {k: v for k, v in merged.items() if v is not None}
            try:
                await self.kube.replace(path, obj)
                return
            except ApiError as e:
                if e.status != 409 or attempt == _CONFLICT_ATTEMPTS - 1:
                    raise
