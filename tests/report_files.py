"""Reading a report directory from a test, as an operator would find it on disk."""

from __future__ import annotations

from pathlib import Path

from bjc.reports import resultlog
from bjc.reports.execution import ExecutionState, decode_state
from bjc.reports.store import JOURNAL_FILE, STATE_FILE


def stored(directory: Path) -> dict[str, bytes]:
    """What an execution directory holds by name, as the file server serves it: its
    files, and the results still in its results log as `<node>.json` (those are newer
    than the files; the log itself is left out)."""
    files = {p.name: p.read_bytes() for p in sorted(directory.iterdir()) if p.is_file()}
    files.pop(resultlog.RESULTS_LOG, None)
    logged = resultlog.read(str(directory / resultlog.RESULTS_LOG))
    return files | {f"{node}.json": body for node, body in logged.items()}


def execution_dirs(reports: Path) -> list[Path]:
    """The execution directories, oldest first."""
    if not reports.is_dir():
        return []
    return sorted(p for p in reports.iterdir() if p.name.isdigit())


def state(directory: Path) -> ExecutionState:
    """An execution's state: its snapshot with the journal applied."""
    journal = directory / JOURNAL_FILE
    return decode_state(
        (directory / STATE_FILE).read_bytes(),
        journal.read_bytes() if journal.exists() else None,
    )
