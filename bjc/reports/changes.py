"""What changed since the previous finished execution: new failures, recoveries, streaks.

The question after "which nodes failed" is always "which of them are new, which keep
failing, which recovered". This module answers it from the executions' verdicts alone
(`Verdicts`, built by bjc.reports.summary from the report directory), so a restarted
or newly elected controller, a standby replica and `bjc status` all give the same
answer: nothing is remembered in memory that the directory does not hold.

What "failed" means (`failure`, the one definition the summary, the changes and the
node conditions share): a node's job *failed* in an execution when it ended and did
not succeed with a result (the Go controller's `<prefix>_processing` = 1). It *passed*
when its job succeeded with a result. A node whose job was aborted (the execution was
replaced, or stopped early by `maxFailures` before the node's pod started) or has not
ended is *not judged*: its standing carries over unchanged from the executions before.

A node's *streak* is the number of judged executions in a row, up to and including
this one, in which it failed (0 when it passed last). It is counted over the kept
history (`reportHistory`), so it is at most that many. Executions are compared only
once they are finished; executions without bjc state (the Go controller's) are not
compared. A node missing from an execution is dropped from the chain: its streak
starts again if it comes back.

Deliberately not here: reading files (bjc.reports.summary), metrics and Kubernetes
(the engine acts on `Standing`).
"""

from __future__ import annotations

from collections.abc import Iterable

import msgspec

from bjc.reports.execution import JobStatus, NodeJob

JUDGED = (JobStatus.SUCCEEDED, JobStatus.FAILED)  # the job statuses a verdict is given for
NO_RESULT = "no result arrived"  # why a job that succeeded without a result failed
POD_FAILED = "pod failed"  # why a failed job without a reason failed


def failure(job: NodeJob, result: bool) -> str | None:
    """Why a node whose job ended (status in JUDGED) failed, in a few words; None: it passed.

    `result`: a result of the node arrived (in any attempt).
    """
    if job.status is JobStatus.SUCCEEDED and result:
        return None
    if job.reason:
        return job.reason
    if job.status is JobStatus.SUCCEEDED:
        return NO_RESULT
    return POD_FAILED


class Verdicts(msgspec.Struct, frozen=True):
    """The judgement of one finished execution, per node.

    Kept for every execution of the history: the node sets are tuples (8 bytes a node,
    a frozenset takes about 50), made sets only while two executions are compared.
    """

    id: str
    nodes: tuple[str, ...]  # every node of the execution
    failed: dict[str, str]  # node -> why (a few words)
    passed: tuple[str, ...]


class Failing(msgspec.Struct, frozen=True):
    node: str
    streak: int  # judged executions in a row, up to this one, in which it failed
    reason: str = ""


class Changes(msgspec.Struct, kw_only=True):
    """One execution compared with the previous finished one (`previous`, None: none)."""

    previous: str | None = None
    newly_failing: list[Failing] = []
    still_failing: list[Failing] = []
    recovered: list[str] = []
    new: list[str] = []  # nodes not in the previous execution
    gone: list[str] = []  # nodes of the previous execution not in this one

    @property
    def empty(self) -> bool:
        return not (
            self.newly_failing or self.still_failing or self.recovered or self.new or self.gone
        )


class Standing(msgspec.Struct, frozen=True):
    """Where each node stands after an execution: its streak and the last reason it failed.

    A node judged at least once is in `streaks` (0: it passed when last judged).
    """

    streaks: dict[str, int]
    reasons: dict[str, str]  # of the nodes with a streak > 0

    def failing(self, node: str) -> bool:
        return self.streaks.get(node, 0) > 0


EMPTY = Standing({}, {})


def advance(before: Standing, verdicts: Verdicts) -> Standing:
    """The standing after `verdicts`, given the standing before them."""
    streaks: dict[str, int] = {}
    reasons: dict[str, str] = {}
    passed = set(verdicts.passed)
    for node in verdicts.nodes:
        if node in verdicts.failed:
            streaks[node] = before.streaks.get(node, 0) + 1
            reasons[node] = verdicts.failed[node]
        elif node in passed:
            streaks[node] = 0
        elif node in before.streaks:  # not judged: carried over
            streaks[node] = before.streaks[node]
            if node in before.reasons:
                reasons[node] = before.reasons[node]
    return Standing(streaks, reasons)


def compare(
    before: Standing, after: Standing, verdicts: Verdicts, previous: Verdicts | None
) -> Changes:
    """What `verdicts` (giving `after`) changed against `before` (and the `previous` nodes)."""
    changes = Changes(previous=None if previous is None else previous.id)
    for node in sorted(verdicts.failed):
        failing = Failing(node, after.streaks[node], verdicts.failed[node])
        if before.failing(node):
            changes.still_failing.append(failing)
        else:
            changes.newly_failing.append(failing)
    changes.recovered = sorted(n for n in verdicts.passed if before.failing(n))
    if previous is not None:
        nodes, before_nodes = set(verdicts.nodes), set(previous.nodes)
        changes.new = sorted(nodes - before_nodes)
        changes.gone = sorted(before_nodes - nodes)
    return changes


def history(chain: Iterable[Verdicts]) -> list[tuple[Verdicts, Changes, Standing]]:
    """Every finished execution (oldest first), what it changed, and the standing after it."""
    out: list[tuple[Verdicts, Changes, Standing]] = []
    standing, previous = EMPTY, None
    for verdicts in chain:
        after = advance(standing, verdicts)
        out.append((verdicts, compare(standing, after, verdicts, previous), after))
        standing, previous = after, verdicts
    return out
