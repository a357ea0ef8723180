"""The `bjc` command: run | demo | sim | mock | check-config.

Each subcommand lives in its own module and is imported only when chosen, so
`bjc run` does not pay for the simulator and `bjc check-config` starts instantly.
This module also owns process-level concerns of `bjc run`: logging format,
signals, exit codes.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys
from typing import TYPE_CHECKING

import msgspec

if TYPE_CHECKING:
    from bjc.config import Environment
    from bjc.kube import Credentials

USAGE = """usage: bjc <command> [options]

commands:
  run            run the controller (in a cluster, or with KUBECONFIG)
  demo           run the controller against a built-in simulated cluster
  sim            serve a simulated Kubernetes cluster on 127.0.0.1
  mock           serve the callback API for job authors (stores nothing)
  check-config   validate a ConfigMap, or a config.yaml and pod template
"""


class _JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "ts": self.formatTime(record, "%Y-%m-%dT%H:%M:%S%z"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        if record.exc_info:
            entry["error"] = self.formatException(record.exc_info)
        return msgspec.json.encode(entry).decode()


def setup_logging(human: bool) -> None:
    handler = logging.StreamHandler(sys.stderr)
    if human:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)-7s %(name)s: %(message)s"))
    else:
        handler.setFormatter(_JsonFormatter())
    logging.basicConfig(level=os.environ.get("LOG_LEVEL", "INFO").upper(), handlers=[handler])
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)


async def wait_for_signal() -> None:
    """Return on SIGTERM or SIGINT."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)


def run(argv: list[str]) -> int:
    """`bjc run`: SPEC A1 environment, ConfigMap through the API, then serve."""
    from bjc.config import ConfigError, load_environment
    from bjc.kube import KubeConfigError, load_credentials

    if argv and argv[0] in ("-h", "--help"):
        print("usage: bjc run   (configured by NAMESPACE, CONFIG_MAP_NAME, ... see README)")
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
    return asyncio.run(_run(env, creds))


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
            bind_host=env.bind_address,
        )
        await runtime.start()
        log.info("bjc %s started: ports %s", loaded.config.name, runtime.ports)
        await wait_for_signal()
        log.info("shutting down")
        await runtime.stop()
    return 0


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
    print(f"bjc: unknown command {command!r}\n\n{USAGE}", file=sys.stderr)
    return 2
