"""Reading a report directory from a test, as an operator would find it on disk."""

from __future__ import annotations

from pathlib import Path

from bjc.reports.execution import ExecutionState, decode_state
from bjc.reports.store import JOURNAL_FILE, STATE_FILE


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
