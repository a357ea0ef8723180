"""The `bjc` command: run | demo | sim | mock | check-config | report | trigger.

Each subcommand lives in its own module and is imported only when chosen, so
`bjc run` does not pay for the simulator, `bjc check-config` starts instantly and
`bjc report` (run in job pods) loads nothing but the standard library.
This module also owns the exit codes of `bjc run`; logging and signals are in
`bjc.commands.process`, which `bjc demo` shares.
"""

from __future__ import annotations

import logging
import os
import sys
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from bjc.config.extensions import Extension
    from bjc.config.settings import Environment
    from bjc.kube.client import Credentials

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


def run(argv: list[str]) -> int:
    """`bjc run`: the Go controller's environment, the ConfigMap through the API, then serve."""
    from bjc.commands.process import setup_logging
    from bjc.config.settings import load_environment
    from bjc.config.values import ConfigError
    from bjc.kube.client import KubeConfigError, load_credentials

    if argv and argv[0] in ("-h", "--help"):
        print("usage: bjc run [--extension module:object]...")
        print("               (configured by NAMESPACE, CONFIG_MAP_NAME, ...;")
        print("                see docs/configuration.md; extensions: docs/extensions.md)")
        return 0
    specs, unknown = _extension_specs(argv)
    if unknown:
        print(f"bjc run: unexpected arguments {' '.join(unknown)} (bjc run -h)", file=sys.stderr)
        return 2
    try:
        env = load_environment(os.environ)
    except ConfigError as e:
        print(f"bjc: {e}", file=sys.stderr)
        return 2
    from bjc.config.extensions import ExtensionError, load_all

    try:  # before the cluster is contacted: a broken extension never starts
        extensions = load_all(specs)
    except ExtensionError as e:
        print(f"bjc: {e}", file=sys.stderr)
        return 2
    setup_logging(human=env.dev_mode)
    try:
        creds = load_credentials()
    except KubeConfigError as e:
        print(f"bjc: {e}", file=sys.stderr)
        return 2
    from bjc.commands.process import run_async

    return run_async(_run(env, creds, extensions))


def _extension_specs(argv: list[str]) -> tuple[list[str], list[str]]:
    """`--extension X` / `--extension=X`, repeated; and what else was given."""
    specs: list[str] = []
    unknown: list[str] = []
    args = iter(argv)
    for arg in args:
        if arg == "--extension":
            specs.append(next(args, ""))
        elif arg.startswith("--extension="):
            specs.append(arg.removeprefix("--extension="))
        else:
            unknown.append(arg)
    return specs, unknown


async def _run(env: Environment, creds: Credentials, extensions: list[Extension]) -> int:
    from bjc.commands.process import wait_for_signal
    from bjc.config.configmap import load_config_map
    from bjc.config.values import ConfigError
    from bjc.kube.client import ApiError, KubeClient
    from bjc.kube.objects import ConfigMap
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
            bind_host=env.bind_address,
            extensions=extensions,
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
        from bjc.commands.demo import main as demo_main

        return demo_main(rest)
    if command == "sim":
        from bjc.sim.cli import main as sim_main

        return sim_main(rest)
    if command == "mock":
        from bjc.commands.mock import main as mock_main

        return mock_main(rest)
    if command == "check-config":
        from bjc.commands.checkconfig import main as check_main

        return check_main(rest)
    if command == "report":
        from bjc.commands.report_cli import main as report_main

        return report_main(rest)
    if command == "status":
        from bjc.commands.status import main as status_main

        return status_main(rest)

    if command == "trigger":
        from bjc.commands.trigger import main as trigger_main

        return trigger_main(rest)
    print(f"bjc: unknown command {command!r}\n\n{USAGE}", file=sys.stderr)
    return 2
