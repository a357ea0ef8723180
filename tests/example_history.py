"""An execution with one node in every state, written by the real store (summary tests)."""

from __future__ import annotations

import json

from bjc.reports.execution import Execution, JobStatus
from bjc.reports.store import ReportStore

EID, OLD = "202401011200", "202401011100"
TIMEOUT = "job did not finish within jobTimeout (60s)"


def result(**gauges: list[tuple[float, dict[str, str]]]) -> bytes:
    return json.dumps(
        {g: [{"value": v, "labels": labels} for v, labels in e] for g, e in gauges.items()}
    ).encode()


async def write_execution(store: ReportStore, eid: str = EID) -> Execution:
    """One node per status, tokens on; some changes only in the journal."""
    await store.create_execution(eid)
    nodes = ["ok", "no-result", "crashed", "slow", "deadline", "gone", "busy", "waiting"]
    execution = Execution.new(eid, nodes, store, tokens=True)
    await execution.flushed()  # the snapshot; what follows lands in the journal
    for node in nodes[:-1]:
        execution.pod_created(node, f"job-{node}")
    execution.finish("ok", JobStatus.SUCCEEDED)
    execution.finish("no-result", JobStatus.SUCCEEDED)
    execution.finish("crashed", JobStatus.FAILED)
    execution.finish("slow", JobStatus.FAILED, TIMEOUT)
    execution.finish("deadline", JobStatus.FAILED, "DeadlineExceeded")
    execution.finish("gone", JobStatus.ABORTED, "replaced by execution 202401011300")
    await execution.flushed()
    values = [(0.5, {"mount": "/"}), (0.75, {"mount": "/var"})]
    await store.write_result(eid, "ok", result(disk=values))
    await store.write_file(eid, store.upload_filename("ok", "report.txt"), b"all good")
    await store.write_log(eid, "ok", "check", b"fine\n")
    await store.write_log(eid, "crashed", "check", b"starting\n/var is read-only\n\n")
    return execution
