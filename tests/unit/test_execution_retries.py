"""The retry transition of a node's job (jobRetries), and its persisted form."""

from __future__ import annotations

import errno

import msgspec

from bjc.config.podspec import job_pod_name
from bjc.reports.execution import (
    Execution,
    ExecutionState,
    JobStatus,
    RetiredExecution,
    decode_state,
)

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


async def test_each_attempt_has_a_token_of_its_own_and_only_the_current_one_is_heard(tmp_path):
    ex, store = await new_execution(tmp_path, nodes=("a", "b"), tokens=True)
    ex.job_retries = 2
    first = ex.token_of("a")
    assert ex.stale("a", 0) is None
    assert ex.stale("a", 1) == ("not_started", ex.stale("a", 1).reason)
    ex.pod_created("a", "pod-a")
    assert ex.retry("a", "job did not finish within jobTimeout (3s)")
    second = ex.token_of("a")
    assert first and second and first != second
    assert (ex.token_of("a", 0), ex.token_of("a", 1), ex.token_of("a", 2)) == (first, second, "")
    assert ex.stale("a", 1) is None
    retried = ex.stale("a", 0)
    assert retried.kind == "retried"
    assert retried.reason == (
        "the first attempt of node a's job was retried; retry 1 is the current attempt"
    )
    ex.finish("a", JobStatus.FAILED, "deleted")  # the retry is given up too
    assert ex.stale("a", 1) == (
        "given_up",
        "the controller gave up on node a's job (failed: deleted)",
    )
    assert ex.stale("b", 0) is None  # the other node is untouched
    ex.finish("b", JobStatus.SUCCEEDED)
    assert ex.stale("b", 0) is None  # a finished job's own late call (e.g. a sidecar)

    # the same answers from disk: a new leader, and the slim retired form
    await ex.flushed()
    state = await on_disk(store)
    assert [a.token for a in state.nodes["a"].attempts] == [first]
    for again in (Execution(state, store), RetiredExecution(state)):
        assert again.token_of("a", 0) == first and again.token_of("a", 1) == second
        assert again.token_of("a", 5) == "" and again.token_of("b") == ex.token_of("b")
        assert [getattr(again.stale("a", n), "kind", None) for n in range(3)] == [
            "retried",
            "given_up",
            "not_started",
        ]
        assert again.stale("b", 0) is None


async def test_recorded_waits_until_a_failed_write_is_made_good(tmp_path):
    ex, store = await new_execution(tmp_path, nodes=("a",))
    refused: list[str] = []

    class Full:  # the report store while the disk is full: two more snapshots fail
        async def write_state(self, execution_id: str, data: bytes) -> None:
            if refused.count("snapshot") < 2:
                refused.append("snapshot")
                raise OSError(errno.ENOSPC, "No space left on device")
            await store.write_state(execution_id, data)

        async def append_journal(self, execution_id: str, data: bytes) -> None:
            refused.append("journal")
            raise OSError(errno.ENOSPC, "No space left on device")

    ex._files = Full()
    ex.job_retries = 1
    ex.retry("a", "pod failed")
    await ex.recorded()
    assert refused == ["journal", "snapshot", "snapshot"]
    assert len((await on_disk(store)).nodes["a"].attempts) == 1
