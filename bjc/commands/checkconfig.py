"""`bjc check-config`: validate a ConfigMap (or config.yaml + pod template) offline.

Operators run this before `kubectl apply` or in CI. It applies exactly the
checks the controller applies at start-up (bjc.config.settings, bjc.config.podspec) and prints
either a short summary (exit 0) or every problem, one per line (exit 1).
Usage errors exit 2, as argparse does. Values quoted from the files show control
characters as escapes (`bjc.terminal`).

Deliberately offline: it never contacts a cluster, so it cannot check that the
service account, pull secrets or nodes exist. `REPORT_DIRECTORY` from the
environment is applied like the controller would.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
from datetime import datetime
from typing import TextIO

from bjc.config.configmap import LoadedConfig, load_config_map_manifest, load_pair
from bjc.config.settings import cron_schedule
from bjc.config.values import ConfigError, format_duration
from bjc.terminal import visible

USAGE = """\
bjc check-config CONFIGMAP_FILE
bjc check-config --config CONFIG_YAML --pod-template POD_TEMPLATE_YAML"""


def _read(path: str) -> str:
    try:
        with open(path, encoding="utf-8") as fh:
            return fh.read()
    except OSError as exc:
        raise ConfigError([f"{path}: cannot read: {exc.strerror or exc}"]) from None
    except UnicodeDecodeError:
        raise ConfigError([f"{path}: not a UTF-8 text file"]) from None


def summary(loaded: LoadedConfig, now: datetime | None = None) -> list[str]:
    """Human-readable lines describing a valid configuration."""
    cfg = loaded.config
    schedule = cron_schedule(cfg)
    now = now or datetime.now().astimezone()
    next_run = schedule.next_after(now)
    selector = ", ".join(f"{k}={v}" for k, v in cfg.job_node_selector.items()) or "(all nodes)"
    if cfg.run_on_unscheduled_nodes:
        selector += ", including unschedulable nodes"
    lines = [
        "configuration is valid",
        f"  name:            {cfg.name}",
        f"  cron:            {schedule.describe()}",
        f"  next run:        {next_run.isoformat(sep=' ')}",
        "  run on startup:  "
        + (f"yes, after {format_duration(cfg.startup_delay)}" if cfg.run_on_startup else "no"),
        f"  pod pool size:   {cfg.pod_pool_size}"
        + (" of the selected nodes (at least 1)" if isinstance(cfg.pod_pool_size, str) else ""),
        f"  nodes selector:  {selector}",
        f"  report dir:      {cfg.report_directory} (keeps {cfg.kept_executions} executions)",
        f"  ports:           callback {cfg.callback_service_port}, metrics {cfg.metrics.port}, "
        f"health {cfg.health_probe_port}, files {cfg.file_server_port}",
        f"  concurrency:     {cfg.concurrency_policy}, job timeout "
        + (format_duration(cfg.job_timeout) if cfg.job_timeout is not None else "none")
        + f", callback auth {cfg.callback_auth}",
        f"  callback limits: {cfg.max_series_per_node} series per node, "
        f"{cfg.max_series_per_execution} per execution, label values up to "
        f"{cfg.max_label_value_length} characters, uploads up to {cfg.max_upload_size} bytes",
        f"  operating:       {'suspended' if cfg.suspend else 'not suspended'}, "
        f"job retries {cfg.job_retries}, max failures "
        + (str(cfg.max_failures) if cfg.max_failures is not None else "none")
        + ", missed runs "
        + (
            f"caught up within {format_duration(cfg.starting_deadline)}"
            if cfg.starting_deadline is not None
            else "skipped"
        ),
    ]
    prefix = cfg.metrics.prefix
    if cfg.metrics.gauges:
        lines.append("  gauges:")
        for suffix, gauge in cfg.metrics.gauges.items():
            labels = ", ".join([*gauge.labels, "node", "executionID"])
            lines.append(f"    {prefix}_{suffix}{{{labels}}}")
    else:
        lines.append("  gauges:          (none)")
    fields = sorted(loaded.template.fields_used)
    lines.append(
        "  pod template:    "
        + (("uses " + ", ".join("." + f for f in fields)) if fields else "no field references")
    )
    if loaded.warnings:
        lines.append("warnings:")
        lines.extend(f"  - {w}" for w in loaded.warnings)
    return lines


def main(argv: list[str], stdout: TextIO | None = None, stderr: TextIO | None = None) -> int:
    """Run `bjc check-config` with `argv` (the arguments after `check-config`)."""
    out = stdout or sys.stdout
    err = stderr or sys.stderr
    parser = argparse.ArgumentParser(
        prog="bjc check-config",
        usage=USAGE,
        description="Validate a batch job controller configuration offline.",
    )
    parser.add_argument(
        "configmap", nargs="?", help="ConfigMap manifest with config.yaml and pod-template.yaml"
    )
    parser.add_argument("--config", help="config.yaml file")
    parser.add_argument("--pod-template", help="pod-template.yaml file")
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            args = parser.parse_args(argv)
    except SystemExit as exc:  # --help (0) or a usage error (2)
        return int(exc.code or 0)

    if args.configmap and (args.config or args.pod_template):
        print("error: give either a ConfigMap file or --config and --pod-template", file=err)
        print(f"usage: {USAGE}", file=err)
        return 2
    if not args.configmap and not (args.config and args.pod_template):
        print("error: give a ConfigMap file, or both --config and --pod-template", file=err)
        print(f"usage: {USAGE}", file=err)
        return 2

    report_directory = os.environ.get("REPORT_DIRECTORY") or None
    try:
        if args.configmap:
            from bjc.config.settings import Environment

            env = Environment(namespace="", config_map_name="", report_directory=report_directory)
            loaded = load_config_map_manifest(_read(args.configmap), env)
        else:
            problems: list[str] = []
            texts: list[str | None] = []
            for path in (args.config, args.pod_template):
                try:
                    texts.append(_read(path))
                except ConfigError as exc:
                    problems.extend(exc.problems)
                    texts.append(None)
            loaded = load_pair(
                texts[0],
                texts[1],
                report_directory=report_directory,
                config_source=args.config,
                template_source=args.pod_template,
                problems=problems,
            )
    except ConfigError as exc:
        for problem in exc.problems:
            print(visible(problem), file=err)
        noun = "problem" if len(exc.problems) == 1 else "problems"
        print(f"configuration is invalid: {len(exc.problems)} {noun}", file=err)
        return 1
    for line in summary(loaded):
        print(visible(line), file=out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
