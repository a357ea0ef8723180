"""Fixtures for tests that run against the simulated cluster (bjc.sim).

`sim` is a started in-process SimCluster on a free loopback port; `start_agent` starts
NodeAgents (kubelet stand-ins) that are stopped after the test; `sim_with_agent` is a
sim with nodes node-1 and node-2 and one agent for both; `kube_api_client` is a
kubernetes_asyncio ApiClient configured from the sim's kubeconfig (real HTTP).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from kubernetes_asyncio import client, config

from bjc.sim import NodeAgent, SimCluster

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
