"""`python -m tests.reliability`: run the scenarios, print the table, write it to the docs.

Full counts by default (what `nox -s reliability` runs); `--quick` uses the small
counts of the default test run. The table replaces the section "## Faults and
failover" of docs/reliability.md (`--no-write` leaves the file alone). Exits 1
when any row lost, duplicated or leaked something, or acknowledged nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import os
import platform
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from .cluster import REPO
from .counts import Row
from .scenarios import BY_NAME, SCENARIOS, run_scenario

DOC = REPO / "docs" / "reliability.md"
SECTION = "## Faults and failover"

COLUMNS = (
    "scenario", "faults injected", "executions", "acknowledged", "not acked", "lost",
    "pods created twice", "nodes run twice", "leaked fds", "RSS growth MB", "peak RSS MB",
    "seconds",
)  # fmt: skip


def table(rows: list[Row]) -> str:
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    for r in rows:
        cells = (
            r.scenario, r.faults, r.runs, r.acknowledged, r.not_acked, r.lost, r.pods_twice,
            r.runs_twice, r.leaked_fds, f"{r.rss_growth_mb:.1f}", f"{r.peak_rss_mb:.0f}",
            f"{r.seconds:.0f}",
        )  # fmt: skip
        lines.append("| " + " | ".join(str(c) for c in cells) + " |")
    notes = [f"- {r.scenario}: {note}" for r in rows for note in r.notes]
    if notes:
        lines += ["", "Notes:", "", *notes]
    return "\n".join(lines)


def revision() -> str:
    """The commit measured (`+changes` when the tree differs from it)."""
    try:
        out = subprocess.run(
            ["git", "describe", "--always", "--dirty=+changes"],
            cwd=REPO, capture_output=True, text=True, check=True, timeout=10,
        )  # fmt: skip
    except (OSError, subprocess.SubprocessError):
        return "an unknown commit"
    return f"commit {out.stdout.strip()}"


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    return (
        f"{platform.system()} {platform.release()}, {os.cpu_count()} CPUs ({cpu}), "
        f"Python {platform.python_version()}"
    )


def section(rows: list[Row], args: argparse.Namespace) -> str:
    service = "the leader label" if args.service == "leader" else "readiness only"
    how = "python -m tests.reliability" + (" --quick" if args.quick else "")
    if args.service != "leader":
        how += f" --service {args.service}"
    checks = "\n".join(
        f"- **{s.name}** (n = {s.quick if args.quick else s.full}): {s.checks}."
        for s in SCENARIOS
        if s.name in {r.scenario for r in rows}
    )
    return f"""{SECTION}

Measured {dt.date.today().isoformat()} at {revision()} on {machine()}, with the
callback Service selecting {service}. Rerun with `nox -s reliability` (or `{how}`;
`--only NAME` for one scenario).

{table(rows)}

What each scenario does:

{checks}
"""


def replace_section(doc: str, text: str) -> str:
    """`doc` with its SECTION (up to the next `## ` heading) replaced by `text`, or added."""
    head, found, rest = doc.partition(SECTION)
    if not found:
        return doc.rstrip("\n") + "\n\n" + text
    after = rest.find("\n## ")
    return head + text + ("\n" + rest[after + 1 :] if after >= 0 else "")


def write_doc(text: str) -> None:
    DOC.parent.mkdir(exist_ok=True)
    DOC.write_text(replace_section(DOC.read_text() if DOC.exists() else "# Reliability\n", text))


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m tests.reliability", description=__doc__)
    p.add_argument("--quick", action="store_true", help="small counts (the default test run's)")
    p.add_argument("--only", nargs="+", choices=sorted(BY_NAME), help="run these scenarios")
    p.add_argument(
        "--service",
        choices=("leader", "ready"),
        default="leader",
        help="the callback Service selects the leader label (default) or every ready "
        "controller pod (bjc versions that do not label the leader)",
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-write", action="store_true", help=f"do not update {DOC.name}")
    p.add_argument("--keep", action="store_true", help="keep logs, reports and records")
    return p


async def _run(args: argparse.Namespace, tmp: Path) -> list[Row]:
    rows = []
    for scenario in SCENARIOS:
        n = scenario.quick if args.quick else scenario.full
        if (args.only and scenario.name not in args.only) or n == 0:
            continue
        print(f"{scenario.name}: n = {n} ...", flush=True)
        row = await run_scenario(
            scenario,
            n,
            tmp / scenario.name,
            select_leader=args.service == "leader",
            seed=args.seed,
        )
        print(table([row]).splitlines()[-1] if not row.notes else table([row]), flush=True)
        rows.append(row)
    return rows


def main(argv: list[str]) -> int:
    args = _parser().parse_args(argv)
    tmp = Path(tempfile.mkdtemp(prefix="bjc-reliability-"))
    try:
        rows = asyncio.run(_run(args, tmp))
    finally:
        if args.keep:
            print(f"logs, reports and records kept in {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    text = section(rows, args)
    print("\n" + text)
    if not args.no_write:
        write_doc(text)
        print(f"written to {DOC.relative_to(REPO)}")
    return 0 if all(r.clean for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
