"""The `bjc` command: run | demo | sim | mock | check-config | report | trigger.

Each subcommand lives in its own module and is imported only when chosen, so
`bjc run` does not pay for the simulator, `bjc check-config` starts instantly and
`bjc report` (run in job pods) loads nothing but the standard library.
This module also owns process-level concerns of `bjc run`: logging format,
signals, exit codes, and the event loop (uvloop where installed).
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys
from collections.abc import Callable, Coroutine
from datetime import datetime
from typing import TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:
    from bjc.config import Environment
    from bjc.kube import Credentials

T = TypeVar("T")

USAGE = """usage: bjc <command> [options]

commands:
  run            run the controller (in a cluster, or with KUBECONFIG)
  demo           run the controller against a built-in simulated cluster
  sim            serve a simulated Kubernetes cluster on 127.0.0.1
  mock           serve the callback API for job authors (stores nothing)
  check-config   validate a ConfigMap, or a config.yaml and pod template
  report         post a result, file or event from a job pod (bjc report -h)
  status         the current and recent executions, and which nodes failed
  trigger        start an execution now through the ConfigMap annotation (bjc trigger -h)
"""


class _HumanFormatter(logging.Formatter):
    """`2024-01-01 12:00:00.123 INFO    bjc.controller: ...` (local time, milliseconds)."""

    default_msec_format = "%s.%03d"

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)-7s %(name)s: %(message)s")


class _JsonFormatter(logging.Formatter):
    """One JSON object per line; `ts` is RFC 3339 local time with milliseconds."""

    def format(self, record: logging.LogRecord) -> str:
        import msgspec  # here, not at the top: `bjc report` must not load it

        when = datetime.fromtimestamp(record.created).astimezone()
        entry = {
            "ts": when.isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        if record.exc_info:
            entry["error"] = self.formatException(record.exc_info)
        return msgspec.json.encode(entry).decode()


def log_formatter(human: bool) -> logging.Formatter:
    """Timestamps carry milliseconds: pod events and callbacks are often that close."""
    return _HumanFormatter() if human else _JsonFormatter()


def setup_logging(human: bool) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(log_formatter(human))
    logging.basicConfig(level=os.environ.get("LOG_LEVEL", "INFO").upper(), handlers=[handler])
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)


async def wait_for_signal(failed: asyncio.Event | None = None) -> bool:
    """Return on SIGTERM or SIGINT (True), or once `failed` is set (False)."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    waits = [asyncio.ensure_future(stop.wait())]
    if failed is not None:
        waits.append(asyncio.ensure_future(failed.wait()))
    try:
        await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
        return stop.is_set()
    finally:
        for wait in waits:
            wait.cancel()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)


def event_loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    """uvloop's loop where uvloop is installed, else None: asyncio's own loop.

    uvloop serves the callback API faster (see docs/benchmarks.md); a platform
    without its wheels runs on asyncio's loop, which does everything just as well.
    """
    try:
        import uvloop
    except ImportError:
        return None
    return uvloop.new_event_loop


def run_async(main: Coroutine[Any, Any, T]) -> T:
    """`asyncio.run` on the loop of `event_loop_factory` (`bjc run`, `bjc demo`)."""
    with asyncio.Runner(loop_factory=event_loop_factory()) as runner:
        return runner.run(main)


def run(argv: list[str]) -> int:
    """`bjc run`: the Go controller's environment, the ConfigMap through the API, then serve."""
    from bjc.config import ConfigError, load_environment
    from bjc.kube import KubeConfigError, load_credentials

    if argv and argv[0] in ("-h", "--help"):
        print("usage: bjc run   (configured by NAMESPACE, CONFIG_MAP_NAME, ...;")
        print("                  see docs/configuration.md)")
        return 0
    try:
        env = load_environment(os.environ)
    except ConfigError as e:
        print(f"bjc: {e}", file=sys.stderr)
        return 2
    setup_logging(human=env.dev_mode)
    try:
        creds = load_credentials()
    except KubeConfigError as e:
        print(f"bjc: {e}", file=sys.stderr)
        return 2
    return run_async(_run(env, creds))


async def _run(env: Environment, creds: Credentials) -> int:
    from bjc.config import ConfigError, load_config_map
    from bjc.kube import ApiError, KubeClient
    from bjc.kubetypes import ConfigMap
    from bjc.runtime import Runtime

    log = logging.getLogger("bjc")
    async with KubeClient(creds) as kube:
        path = f"/api/v1/namespaces/{env.namespace}/configmaps/{env.config_map_name}"
        try:
            cm = await kube.get(path, ConfigMap)
        except ApiError as e:
            log.error("cannot read ConfigMap %s/%s: %s", env.namespace, env.config_map_name, e)
            return 1
        try:
            loaded = load_config_map(cm.data, env)
        except ConfigError as e:
            for problem in e.problems:
                log.error("invalid configuration: %s", problem)
            return 1
        for warning in loaded.warnings:
            log.warning("configuration: %s", warning)
        runtime = Runtime(
            config=loaded.config,
            template=loaded.template,
            env=env,
            kube=kube,
            config_data=cm.data,
        )
        await runtime.start()
        log.info("bjc %s started: ports %s", loaded.config.name, runtime.ports)
        signalled = await wait_for_signal(runtime.failed)
        log.info("shutting down" if signalled else f"exiting: {runtime.supervisor.reason}")
        await runtime.stop()
    return 0 if signalled else 1


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if not args or args[0] in ("-h", "--help", "help"):
        print(USAGE)
        return 0 if args else 2
    command, rest = args[0], args[1:]
    if command == "run":
        return run(rest)
    if command == "demo":
        from bjc.demo import main as demo_main

        return demo_main(rest)
    if command == "sim":
        from bjc.sim.cli import main as sim_main

        return sim_main(rest)
    if command == "mock":
        from bjc.mock import main as mock_main

        return mock_main(rest)
    if command == "check-config":
        from bjc.checkconfig import main as check_main

        return check_main(rest)
    if command == "report":
        from bjc.report_cli import main as report_main

        return report_main(rest)
    if command == "status":
        from bjc.status import main as status_main

        return status_main(rest)

    if command == "trigger":
        from bjc.trigger import main as trigger_main

        return trigger_main(rest)
    print(f"bjc: unknown command {command!r}\n\n{USAGE}", file=sys.stderr)
    return 2
