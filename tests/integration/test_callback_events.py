"""The event route's Kubernetes side: `send_event` and the callback app against bjc.sim."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from bjc.config.settings import Config
from bjc.kube.client import KubeClient
from bjc.kube.events import EventRequest, PodNotFound, send_event
from bjc.reports.execution import Stale
from bjc.reports.metrics import Metrics
from bjc.reports.store import ReportStore
from bjc.sim import SimCluster
from bjc.web.callback import make_callback_app
from tests.served import Served

NS = "jobs"
NODE, EID = "node-a", "202401011200"
POD_NAME = f"bjc-job-{NODE}-{EID}"


@pytest.fixture
async def cluster() -> AsyncIterator[SimCluster]:
    sim = SimCluster()
    await sim.start()
    try:
        sim.create({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NS}})
        sim.create(
            {
                "apiVersion": "v1",
                "kind": "Pod",
                "metadata": {"name": POD_NAME, "namespace": NS},
                "spec": {"nodeName": NODE, "containers": [{"name": "job", "image": "busybox"}]},
            }
        )
        yield sim
    finally:
        await sim.stop()


@pytest.fixture
async def kube(cluster: SimCluster) -> AsyncIterator[KubeClient]:
    async with KubeClient.from_url(cluster.url) as client:
        yield client


async def events_of(kube: KubeClient, group_path: str) -> list[dict[str, Any]]:
    listed = await kube.get(f"{group_path}/namespaces/{NS}/events", dict)
    return list(listed["items"])


async def test_send_event_creates_event_regarding_pod(
    cluster: SimCluster, kube: KubeClient
) -> None:
    pod = cluster.get("pods", NS, POD_NAME)
    assert pod is not None
    req = EventRequest(warning=True, reason="TestReason", message="test message: %s", args=["a1"])
    created = await send_event(kube, NS, POD_NAME, "bjc", req, reporting_instance="bjc-0")
    assert created["metadata"]["name"].startswith(f"{POD_NAME}.")

    [event] = await events_of(kube, "/apis/events.k8s.io/v1")
    assert event["type"] == "Warning"
    assert event["reason"] == "TestReason"
    assert event["note"] == "test message: a1"
    assert event["action"] == "n/a"
    assert event["reportingController"] == "bjc"
    assert event["reportingInstance"] == "bjc-0"
    assert event["regarding"]["kind"] == "Pod"
    assert event["regarding"]["name"] == POD_NAME
    assert event["regarding"]["uid"] == pod["metadata"]["uid"]
    # kubectl get events (core/v1) sees the same object.
    [core] = await events_of(kube, "/api/v1")
    assert core["message"] == "test message: a1"
    assert core["involvedObject"]["name"] == POD_NAME


async def test_send_event_for_missing_pod(kube: KubeClient) -> None:
    with pytest.raises(PodNotFound):
        await send_event(kube, NS, "bjc-job-gone-1", "bjc", EventRequest(reason="R", message="m"))
    assert await events_of(kube, "/apis/events.k8s.io/v1") == []


class SimTarget:
    """A controller-like target: job pod names from node and execution, events via the sim."""

    def __init__(self, kube: KubeClient) -> None:
        self.kube = kube

    def execution_allowed(self, node: str, execution_id: str) -> bool:
        return execution_id == EID

    def nodes_of(self, execution_id: str) -> None:
        return None

    def token_valid(self, node: str, execution_id: str, token: str, attempt: int) -> bool:
        return False

    def stale(self, node: str, execution_id: str, attempt: int) -> Stale | None:
        return None

    def result_received(self, node: str, execution_id: str) -> None:
        return None

    async def create_event(self, node: str, execution_id: str, event: EventRequest) -> None:
        await send_event(self.kube, NS, f"bjc-job-{node}-{execution_id}", "bjc", event)


async def test_event_route_end_to_end(
    tmp_path: Path, aiohttp_client: Any, kube: KubeClient
) -> None:
    config = Config(name="bjc", report_directory=str(tmp_path))
    store = ReportStore(tmp_path)
    app = make_callback_app(config, store, Metrics(config), SimTarget(kube), dev_mode=False)
    client = await aiohttp_client(Served(app))

    resp = await client.post(
        f"/report/{NODE}/{EID}/event",
        json={"warning": False, "reason": "TestReason", "message": "test message"},
    )
    assert resp.status == 200
    resp = await client.post(
        f"/report/other-node/{EID}/event", json={"reason": "TestReason", "message": "m"}
    )
    assert resp.status == 404
    assert (await resp.text()).startswith("error finding pod")

    [event] = await events_of(kube, "/apis/events.k8s.io/v1")
    assert (event["type"], event["note"], event["regarding"]["name"]) == (
        "Normal",
        "test message",
        POD_NAME,
    )
