"""bjc.sim: a simulated Kubernetes cluster (API server + kubelet-like node agent).

Used by the test suite, `bjc sim` and `bjc demo` so that bjc runs against real HTTP
with apiserver semantics and no Kubernetes installation. It is a test bed, not a
Kubernetes: no authorization (authentication only as an optional bearer-token
check), no scheduler, no garbage collector, no graceful deletion.
"""

from bjc.sim.agent import JobBehaviour, NodeAgent, RunningPod
from bjc.sim.containers import ProcessPods
from bjc.sim.faults import Faults
from bjc.sim.server import SimCluster

__all__ = [
    "Faults",
    "JobBehaviour",
    "NodeAgent",
    "ProcessPods",
    "RunningPod",
    "SimCluster",
]
