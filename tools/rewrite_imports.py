"""Rewrite references to bjc's old flat modules (bjc.controller, ...) to their packages.

The modules moved into layer packages (docs/architecture.md). Run on the files of
a branch started before the move: `python tools/rewrite_imports.py $(git ls-files '*.py')`.
It rewrites `bjc.<old>` wherever it appears (imports, strings, docstrings) and
`from bjc import <old>`; run `ruff check --fix` afterwards to sort the imports.
Run it once: a bare `bjc.config` or `bjc.kube` (the old modules, now packages)
is always taken for the old module.
"""

import pathlib
import re
import sys

MOVES = {
    "values": "config.values",
    "cron": "config.cron",
    "config": "config.settings",
    "podspec": "config.podspec",
    "configmap": "config.configmap",
    "kube": "kube.client",
    "kubeauth": "kube.auth",
    "kubetypes": "kube.objects",
    "backoff": "kube.backoff",
    "events": "kube.events",
    "leader": "kube.leader",
    "ownpod": "kube.ownpod",
    "reconciler": "kube.podwatch",
    "controller": "engine.controller",
    "history": "engine.history",
    "jobs": "engine.jobs",
    "callbacktarget": "engine.callbacktarget",
    "dispatcher": "engine.dispatcher",
    "schedule": "engine.schedule",
    "configwatch": "engine.configwatch",
    "supervisor": "engine.supervisor",
    "execution": "reports.execution",
    "store": "reports.store",
    "summary": "reports.summary",
    "results": "reports.results",
    "metrics": "reports.metrics",
    "cli": "commands.cli",
    "demo": "commands.demo",
    "mock": "commands.mock",
    "checkconfig": "commands.checkconfig",
    "report_cli": "commands.report_cli",
    "status": "commands.status",
    "trigger": "commands.trigger",
    "process": "commands.process",
}
names = "|".join(sorted(MOVES, key=len, reverse=True))
# bjc.config and bjc.kube are packages now: leave their new submodules alone, so
# running this again changes nothing
subs = "|".join(sorted({new.split(".")[1] for new in MOVES.values()}))
pat = re.compile(r"\bbjc\.(" + names + r")\b(?!\.(?:" + subs + r")\b| import (?:" + subs + r")\b)")
imp = re.compile(r"^(\s*)from bjc import (" + names + r")\b", re.M)
for f in sys.argv[1:]:
    s = pathlib.Path(f).read_text()

    def sub_import(m):
        pkg, _, mod = MOVES[m.group(2)].rpartition(".")
        return f"{m.group(1)}from bjc.{pkg} import {mod}" + (
            "" if mod == m.group(2) else f" as {m.group(2)}"
        )

    t = imp.sub(sub_import, s)
    t = pat.sub(lambda m: "bjc." + MOVES[m.group(1)], t)
    if t != s:
        pathlib.Path(f).write_text(t)
        print("rewrote", f)
