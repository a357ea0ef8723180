"""The retry transition of a node's job (jobRetries), and its persisted form."""

from __future__ import annotations

import msgspec

from bjc.config.podspec import job_pod_name
from bjc.reports.execution import ExecutionState, JobStatus, decode_state

from .test_execution import EID, new_execution, on_disk


async def test_a_retry_records_the_failed_attempt_and_keeps_the_result(tmp_path):
    ex, store = await new_execution(tmp_path, nodes=("a",))
    ex.job_retries = 1
    assert ex.pod_created("a", "pod-a")
    ex.result_received("a")
    assert ex.may_retry("a")
    assert ex.retry("a", "pod failed")
    job = ex.nodes["a"]
    assert job.status is JobStatus.PENDING and job.pod == "" and job.result
    assert [(a.pod, a.reason) for a in job.attempts] == [("pod-a", "pod failed")]
    assert job.attempts[0].duration_ms is not None
    assert ex.counts() == (0, 1)  # not finished: it runs again
    assert not ex.pod_created("a", "pod-a", 0)  # a late sighting of the first pod
    assert ex.pod_created("a", "pod-a-retry1", 1)
    assert not ex.may_retry("a")  # the one retry is used
    assert ex.finish("a", JobStatus.FAILED, "again")
    assert not ex.retry("a", "after the end")
    assert ex.counts() == (1, 1)
    await ex.flushed()
    persisted = (await on_disk(store)).nodes["a"]
    assert persisted.status is JobStatus.FAILED and persisted.result
    assert [a.pod for a in persisted.attempts] == ["pod-a"]


async def test_nothing_is_retried_by_default(tmp_path):
    ex, _ = await new_execution(tmp_path, nodes=("a",))
    ex.pod_created("a", "pod-a")
    assert not ex.may_retry("a")


def test_a_state_written_before_retries_existed_still_reads() -> None:
    old = b'{"id":"%s","started":1.0,"nodes":{"a":{"status":"failed","pod":"p"}}}' % EID.encode()
    state = decode_state(old)
    assert state.nodes["a"].attempts == []
    assert b"attempts" not in msgspec.json.encode(state)  # and writes nothing new for it
    assert isinstance(state, ExecutionState)


def test_retry_pods_have_names_of_their_own() -> None:
    assert job_pod_name("batch", "node-1.example.com", EID) == f"batch-job-node-1-{EID}"
    assert job_pod_name("batch", "node-1.example.com", EID, 2) == f"batch-job-node-1-{EID}-retry2"
