"""The job pod watch: list + watch of bjc's pods, kept as a level-based cache.

It knows nothing of executions. It keeps the current view of every job pod
(by the owner label) and hands each observed pod state to a callback; the
callback looks at the state, not at the event type, so a missed or repeated event
never matters. A resumed watch starts from the last resourceVersion seen; a 410
Gone relists and reports pods that vanished in between as deleted. Relists after 410
and reconnects after any other failure wait a jittered, capped exponential backoff
(`bjc.kube.backoff`) that starts over once the watch delivers an event, so a storm of
410s or errors costs a bounded number of requests per second. `last_contact` tells
a health check when the apiserver last answered.

Deliberately not here: decisions about what a finished pod means (the controller).
"""

from __future__ import annotations

import asyncio
import collections
import logging
from collections.abc import Callable

import aiohttp

from bjc.kube.backoff import Backoff
from bjc.kube.client import ApiError, KubeClient
from bjc.kube.objects import Pod

log = logging.getLogger(__name__)

PodCallback = Callable[[Pod, bool], None]  # (pod, deleted)

_WATCH_TIMEOUT_S = 290
RETRY_FIRST_S = 0.2  # backoff of relists and reconnects: first delay ...
RETRY_MAX_S = 10.0  # ... and cap


class PodWatcher:
    def __init__(
        self,
        kube: KubeClient,
        namespace: str,
        label_selector: str,
        on_pod: PodCallback,
    ) -> None:
        self.kube = kube
        self.path = f"/api/v1/namespaces/{namespace}/pods"
        self.selector = label_selector
        self.on_pod = on_pod
        self.pods: dict[str, Pod] = {}
        self.phases: collections.Counter[str] = collections.Counter()  # pods by phase, kept current
        self.synced = asyncio.Event()
        self.resource_version = ""
        self.relists = 0
        # loop time of the last successful list, watch event or clean end of a watch
        # stream; from run()'s start until the first list, that start
        self.last_contact = 0.0

    @staticmethod
    def _phase(pod: Pod) -> str:
        return pod.status.phase or "Unknown"

    async def relist(self) -> None:
        items, rv = await self.kube.list(self.path, Pod, {"labelSelector": self.selector})
        self.relists += 1
        self.last_contact = asyncio.get_running_loop().time()
        fresh = {p.metadata.name: p for p in items}
        gone = [p for name, p in self.pods.items() if name not in fresh]
        self.pods = fresh
        self.phases = collections.Counter(self._phase(p) for p in items)
        self.resource_version = rv
        self.last_contact = asyncio.get_running_loop().time()
        for pod in gone:
            self.on_pod(pod, True)
        for pod in items:
            self.on_pod(pod, False)
        self.synced.set()

    def apply(self, kind: str, pod: Pod) -> None:
        """One watch event."""
        if pod.metadata.resource_version:
            self.resource_version = pod.metadata.resource_version
        if kind == "BOOKMARK":
            return
        name = pod.metadata.name
        old = self.pods.pop(name, None)
        if old is not None:
            self.phases[self._phase(old)] -= 1
        if kind == "DELETED":
            self.on_pod(pod, True)
        else:
            self.pods[name] = pod
            self.phases[self._phase(pod)] += 1
            self.on_pod(pod, False)

    async def run(self) -> None:
        """List, then watch forever (until cancelled)."""
        loop = asyncio.get_running_loop()
        self.last_contact = loop.time()  # starting counts: silence is measured from here
        backoff = Backoff(RETRY_FIRST_S, RETRY_MAX_S)
        need_list = True
        while True:
            try:
                if need_list:
                    await self.relist()
                    need_list = False
                started, events = loop.time(), 0
                async for event in self.kube.watch(
                    self.path,
                    Pod,
                    resource_version=self.resource_version,
                    params={"labelSelector": self.selector},
                    timeout_seconds=_WATCH_TIMEOUT_S,
                ):
                    self.apply(event.type, event.object)
                    self.last_contact = loop.time()
                    events += 1
                    backoff.reset()
                self.last_contact = loop.time()  # the server ended the stream as asked
                if events == 0 and loop.time() - started < 1.0:
                    # a server that keeps closing empty streams must not make us spin
                    await asyncio.sleep(backoff.next_delay())
            except ApiError as e:
                delay = backoff.next_delay()
                if e.status == 410:
                    need_list = True
                    log.info(
                        "pod watch: resourceVersion %s too old; relisting in %.1fs",
                        self.resource_version,
                        delay,
                    )
                else:
                    log.warning("pod watch failed: %s; retrying in %.1fs", e, delay)
                await asyncio.sleep(delay)
            except (TimeoutError, aiohttp.ClientError, ValueError) as e:
                delay = backoff.next_delay()
                log.warning("pod watch interrupted: %r; retrying in %.1fs", e, delay)
                await asyncio.sleep(delay)
