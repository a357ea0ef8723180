"""Fixtures for tests that run against the simulated cluster (bjc.sim).

`sim` is a started in-process SimCluster on a free loopback port; `start_agent` starts
NodeAgents (kubelet stand-ins) that are stopped after the test; `sim_with_agent` is a
sim with nodes node-1 and node-2 and one agent for both; `kube_api_client` is a
kubernetes_asyncio ApiClient configured from the sim's kubeconfig (real HTTP).
`plane` runs a scenario on both bjc.sim and the real control plane (see below).
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from kubernetes_asyncio import client, config

from bjc.sim import NodeAgent, SimCluster
from tests.e2e.controlplane import ControlPlane

AgentFactory = Callable[..., Awaitable[NodeAgent]]


@pytest.fixture
async def sim() -> AsyncIterator[SimCluster]:
    cluster = SimCluster(seed=0, bookmark_interval=0.2)
    await cluster.start()
    try:
        yield cluster
    finally:
        await cluster.stop()


@pytest.fixture
async def start_agent(sim: SimCluster) -> AsyncIterator[AgentFactory]:
    agents: list[NodeAgent] = []

    async def factory(node_names: list[str] | None = None, **kwargs: Any) -> NodeAgent:
        agent = NodeAgent(sim.url, node_names, **kwargs)
        await agent.start()
        agents.append(agent)
        await agent.synced.wait()
        return agent

    try:
        yield factory
    finally:
        for agent in agents:
            await agent.stop()


@pytest.fixture
async def sim_with_agent(sim: SimCluster, start_agent: AgentFactory) -> SimCluster:
    sim.add_node("node-1", labels={"pool": "a"})
    sim.add_node("node-2", labels={"pool": "b"})
    await start_agent()
    return sim


@pytest.fixture
def sim_kubeconfig(sim: SimCluster, tmp_path: Path) -> Path:
    path = tmp_path / "kubeconfig"
    sim.write_kubeconfig(path)
    return path


@pytest.fixture
async def kube_api_client(sim_kubeconfig: Path) -> AsyncIterator[client.ApiClient]:
    configuration = client.Configuration()
    await config.load_kube_config(
        config_file=str(sim_kubeconfig), client_configuration=configuration
    )
    api = client.ApiClient(configuration=configuration)
    try:
        yield api
    finally:
        await api.close()


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """A test that takes `plane` runs on bjc.sim, and with BJC_E2E=1 also on the real
    control plane (marked e2e: `nox -s e2e` selects those)."""
    if "plane" in metafunc.fixturenames:
        params = [pytest.param("sim", id="sim")]
        if os.environ.get("BJC_E2E") == "1":
            params.append(pytest.param("real", id="real", marks=pytest.mark.e2e))
        metafunc.parametrize("plane", params, indirect=True)


@pytest.fixture
def plane(request: pytest.FixtureRequest) -> ControlPlane | None:
    """None: the scenario runs on bjc.sim; else the real control plane it runs on."""
    if request.param == "sim":
        return None
    return request.getfixturevalue("control_plane")
