"""`bjc status`: the current and recent executions in a terminal.

For an operator at a shell: which executions ran, did the newest finish, how far
a running one is (a progress bar), and which nodes failed and why. It reads the
same summaries the file server shows, either from a running controller's file
server (`--url`, the `summary.json` documents) or straight from a report directory
(`--report-dir`, e.g. the mounted volume or a copy of it).

Everything it prints that a job or a server controls (the last log line of a
failed node, reasons, an HTTP error's body) goes through `bjc.terminal.visible`:
control characters show as escapes (`\\x1b`) instead of acting on the terminal.

It prints once and exits: 0 when it could read the summaries, 1 when it could not
(unreachable, HTTP error, no such directory or execution), 2 for bad usage. It does
not watch; run it under `watch -n 10 bjc status` for that.

Deliberately not here: computing summaries (bjc.reports.summary) and anything that writes.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import TypeVar

import msgspec

from bjc.reports.store import LATEST
from bjc.reports.summary import (
    ExecutionOverview,
    ExecutionSummary,
    SummaryCache,
    SummaryIndex,
    filter_nodes,
    problem,
    short_duration,
)
from bjc.terminal import visible

T = TypeVar("T")

DEFAULT_URL = "http://127.0.0.1:8080"
BAR_WIDTH = 30
_TIMEOUT_S = 10.0


class StatusError(Exception):
    """The summaries could not be read; the message says where and why."""


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="bjc status", description=__doc__.split("\n\n")[0])
    source = p.add_mutually_exclusive_group()
    source.add_argument(
        "--url",
        help=f"file server of a running controller (default $BJC_URL, else {DEFAULT_URL})",
    )
    source.add_argument("--report-dir", type=Path, help="read a report directory instead")
    p.add_argument("--execution", default=LATEST, help="execution whose nodes to list (latest)")
    p.add_argument("--limit", type=int, default=10, help="recent executions shown (default 10)")
    p.add_argument("--nodes", type=int, default=20, help="nodes with errors listed (default 20)")
    return p


# --- sources ---------------------------------------------------------------


def _http_get(url: str) -> bytes:
    try:
        with urllib.request.urlopen(url, timeout=_TIMEOUT_S) as response:
            body: bytes = response.read()
            return body
    except urllib.error.HTTPError as e:
        detail = e.read().decode("utf-8", "replace").strip()
        raise StatusError(f"{url}: HTTP {e.code}: {detail or e.reason}") from None
    except (urllib.error.URLError, OSError) as e:
        reason = getattr(e, "reason", e)
        raise StatusError(f"cannot reach {url}: {reason}") from None


class _Server:
    """Summaries from a file server's `/summary/` JSON; `fetch` reads a URL (default:
    plain HTTP; `kubectl bjc status` reads through the API server's service proxy)."""

    def __init__(self, url: str, fetch: Callable[[str], bytes] = _http_get) -> None:
        self.url = url.rstrip("/")
        self.fetch = fetch

    def _get(self, path: str, type_: type[T]) -> T:
        url = f"{self.url}/summary/{path}"
        body = self.fetch(url)
        try:
            return msgspec.json.decode(body, type=type_)
        except msgspec.DecodeError as e:
            raise StatusError(f"{url}: not a bjc summary: {e}") from None

    def index(self, limit: int) -> SummaryIndex:
        index = self._get("summary.json", SummaryIndex)
        index.executions = index.executions[:limit]
        return index

    def errors(self, execution_id: str) -> ExecutionSummary:
        path = f"{urllib.parse.quote(execution_id, safe='')}/summary.json?status=error"
        return self._get(path, ExecutionSummary)


class _Directory:
    """Summaries computed from a report directory (what the file server would show)."""

    def __init__(self, root: Path) -> None:
        if not root.is_dir():
            raise StatusError(f"{root}: no such directory")
        self.root = root

    def index(self, limit: int) -> SummaryIndex:
        index = asyncio.run(SummaryCache(self.root).index())
        index.executions = index.executions[:limit]
        return index

    def errors(self, execution_id: str) -> ExecutionSummary:
        try:
            summary, _ = asyncio.run(SummaryCache(self.root).execution(execution_id))
        except (ValueError, FileNotFoundError) as e:
            raise StatusError(f"{self.root}: {e}") from None
        return filter_nodes(summary, "error")


# --- output ----------------------------------------------------------------


def progress_bar(done: int, total: int, width: int = BAR_WIDTH) -> str:
    """`[##########--------------------]  10/30 finished (33%)`"""
    share = done / total if total else 1.0
    filled = min(width, int(share * width))
    return f"[{'#' * filled}{'-' * (width - filled)}]  {done}/{total} finished ({share:.0%})"


def _when(value: datetime | None) -> str:
    return "-" if value is None else value.astimezone().strftime("%Y-%m-%d %H:%M:%S")


def _took(e: ExecutionOverview, now: datetime) -> str:
    if e.duration_s is not None:
        return short_duration(e.duration_s)
    if e.state == "running" and e.started is not None:
        return short_duration(max(0.0, (now - e.started).total_seconds())) + "+"
    return "-"


COLUMNS = (
    ("EXECUTION", "<", lambda e, now: e.id),
    ("STATE", "<", lambda e, now: e.state),
    ("STARTED", "<", lambda e, now: _when(e.started)),
    ("DURATION", ">", _took),
    ("NODES", ">", lambda e, now: e.counts.nodes),
    ("SUCCEEDED", ">", lambda e, now: e.counts.succeeded),
    ("FAILED", ">", lambda e, now: e.counts.failed),
    ("TIMED OUT", ">", lambda e, now: e.counts.timed_out),
    ("ABORTED", ">", lambda e, now: e.counts.aborted),
    ("ERRORS", ">", lambda e, now: e.counts.errors),
    ("RESULTS", ">", lambda e, now: f"{e.counts.results}/{e.counts.nodes}"),
)


def render_index(index: SummaryIndex, now: datetime) -> list[str]:
    if not index.executions:
        return ["no execution yet"]
    cells: list[list[str]] = [
        [visible(str(get(e, now))) for _, _, get in COLUMNS] for e in index.executions
    ]
    widths = [
        max(len(name), *(len(row[i]) for row in cells)) for i, (name, _, _) in enumerate(COLUMNS)
    ]

    def line(values: list[str]) -> str:
        aligned = (
            f"{v:{align}{w}}" for v, (_, align, _), w in zip(values, COLUMNS, widths, strict=True)
        )
        return "  ".join(aligned).rstrip()

    lines = [line([name for name, _, _ in COLUMNS])]
    for execution, row in zip(index.executions, cells, strict=True):
        lines.append(line(row))
        if execution.state == "running":
            counts = execution.counts
            lines.append(" " * (widths[0] + 2) + progress_bar(counts.finished, counts.nodes))
    return lines


def render_errors(summary: ExecutionSummary, limit: int) -> list[str]:
    nodes = [n for n in summary.nodes if problem(n)]
    eid = visible(summary.id)
    if not nodes:
        return [f"execution {eid}: no node with errors"]
    lines = [f"execution {eid}: {len(nodes)} node(s) with errors"]
    names = {n.node: visible(n.node) for n in nodes[:limit]}
    width = max(map(len, names.values()))
    for node in nodes[:limit]:
        why = visible(problem(node) + (f": {node.log_tail}" if node.log_tail else ""))
        status = visible(node.status.replace("_", " "))
        lines.append(f"  {names[node.node]:<{width}}  {status:<9}  {why}")
    if len(nodes) > limit:
        lines.append(f"  ... and {len(nodes) - limit} more (--nodes N)")
    return lines


def render_changes(summary: ExecutionSummary, limit: int) -> list[str]:
    """What the execution changed against the previous finished one (see bjc.reports.changes)."""
    changes = summary.changes
    if changes is None:
        return []
    since = f"since {visible(changes.previous)}" if changes.previous else "(no earlier execution)"
    if changes.empty:
        return [f"changes {since}: none"]
    lines = [f"changes {since}:"]

    def listed(what: str, names: list[str]) -> None:
        if names:
            more = f" and {len(names) - limit} more" if len(names) > limit else ""
            lines.append(f"  {what} ({len(names)}): {', '.join(map(visible, names[:limit]))}{more}")

    listed("newly failing", [f.node for f in changes.newly_failing])
    listed("still failing", [f"{f.node} ({f.streak} in a row)" for f in changes.still_failing])
    listed("recovered", changes.recovered)
    listed("new nodes", changes.new)
    listed("gone nodes", changes.gone)
    return lines


def run(
    args: argparse.Namespace, out: Callable[[str], None], source: _Server | _Directory | None = None
) -> None:
    if source is None and args.report_dir is not None:
        source = _Directory(args.report_dir)
    elif source is None:
        source = _Server(args.url or os.environ.get("BJC_URL") or DEFAULT_URL)
    index = source.index(args.limit)
    for line in render_index(index, datetime.now(UTC)):
        out(line)
    if index.executions:
        out("")
        errors = source.errors(args.execution)
        for line in render_changes(errors, args.nodes):
            out(line)
        for line in render_errors(errors, args.nodes):
            out(line)


def main(argv: list[str], fetch: tuple[str, Callable[[str], bytes]] | None = None) -> int:
    """`fetch`: the file server's URL and how to read it, unless --url/--report-dir say."""
    args = _parser().parse_args(argv)
    if args.limit < 1 or args.nodes < 0:
        print("bjc status: --limit must be at least 1, --nodes at least 0", file=sys.stderr)
        return 2
    explicit = args.url or args.report_dir is not None
    source = _Server(*fetch) if fetch is not None and not explicit else None
    try:
        run(args, print, source)
    except StatusError as e:
        print(f"bjc status: {visible(str(e))}", file=sys.stderr)
        return 1
    return 0
