"""`bjc demo`: the whole controller against an in-process simulated cluster.

The demo is the README's "run it" command: no Kubernetes, no image, no config
needed. It starts `bjc.sim` with N Ready nodes and a kubelet-like agent, stores
the ConfigMap in it and runs exactly the code of `bjc run` (`bjc.runtime`,
leader election included) against it over HTTP. Without `--job-command` each
simulated job is a small Python coroutine that behaves like a real job script:
it posts a result for every configured gauge, uploads a file, sends an event,
takes a realistic while, and now and then fails.

Deliberately not here: anything `bjc run` does not do as well.
"""

from __future__ import annotations

import argparse
import asyncio
import errno
import logging
import random
import socket
import sys
from pathlib import Path
from typing import Any

import aiohttp
import msgspec

from bjc.commands.process import run_async, setup_logging, wait_for_signal
from bjc.config.configmap import load_config_map
from bjc.config.settings import Environment
from bjc.config.values import ConfigError
from bjc.engine.configwatch import TRIGGER_ANNOTATION
from bjc.kube.client import KubeClient
from bjc.runtime import Runtime
from bjc.sim import JobBehaviour, NodeAgent, RunningPod, SimCluster

log = logging.getLogger("bjc.commands.demo")

NAMESPACE = "bjc-demo"

DEMO_CONFIG = """\
name: demo
cronExpression: "@every 30s"
runOnStartup: true
startupDelay: 1s
podPoolSize: 5
reportHistory: 10
reportDirectory: ./demo-reports
savePodLog: true
jobTimeout: 2m
metrics:
  prefix: bjc_demo
  gauges:
    disk_used_ratio:
      help: Share of the file system that is used
      labels: [mount]
    failed_checks:
      help: Node checks that failed, by check
      labels: [check]
"""

DEMO_POD_TEMPLATE = """\
apiVersion: v1
kind: Pod
metadata:
  labels:
    app: bjc-demo-job
spec:
  containers:
    - name: check
      image: busybox:1.36
      command: ["sh", "/scripts/job.sh"]
      env:
        - name: CHECK_NODE
          value: "{{ .NodeName }}"
"""


async def demo_job(pod: RunningPod) -> int:
    """What a typical node-check job does, over real HTTP to the callback API."""
    env = pod.env
    rnd = random.Random(f"{pod.node}/{env.get('EXECUTION_ID')}")
    await asyncio.sleep(rnd.uniform(0.3, 2.0))
    if rnd.random() < 0.05:
        return 1  # crashed before reporting
    result = {
        "disk_used_ratio": [
            {"value": round(rnd.uniform(0.1, 0.95), 3), "labels": {"mount": m}}
            for m in ("/", "/var")
        ],
        "failed_checks": [
            {"value": float(rnd.random() < 0.1), "labels": {"check": c}}
            for c in ("ntp", "kernel", "dns")
        ],
    }
    async with aiohttp.ClientSession() as http:
        async with http.post(env["CALLBACK_SERVICE_RESULT_URL"], json=result) as resp:
            resp.raise_for_status()
        report = f"node {pod.node}: all checks done\n".encode()
        url = env["CALLBACK_SERVICE_FILE_URL"]
        sep = "&" if "?" in url else "?"
        async with http.post(f"{url}{sep}name=report.txt", data=report) as resp:
            resp.raise_for_status()
        event = {
            "warning": False,
            "reason": "ChecksDone",
            "message": "node %s checked",
            "args": [pod.node],
        }
        async with http.post(env["CALLBACK_SERVICE_EVENT_URL"], json=event) as resp:
            resp.raise_for_status()
    return 0


def _free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError as e:
            if e.errno == errno.EADDRINUSE:
                return False
            raise
    return True


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="bjc demo", description=__doc__.split("\n\n")[0])
    p.add_argument("--nodes", type=int, default=10, help="simulated nodes (default 10)")
    p.add_argument("--config", help="config.yaml to use instead of the built-in example")
    p.add_argument("--pod-template", help="pod-template.yaml to use instead of the example")
    p.add_argument("--report-dir", help="report directory (overrides reportDirectory)")
    p.add_argument("--job-command", help="run each job pod as this local shell command")
    p.add_argument("--executions", type=int, help="exit 0 after this many executions")
    p.add_argument("--kubeconfig-out", help="write a kubeconfig for the simulated cluster")
    return p


async def run_demo(args: argparse.Namespace, config_text: str, template_text: str) -> int:
    env = Environment(
        namespace=NAMESPACE,
        config_map_name="bjc-demo",
        pod_ip="127.0.0.1",
        hostname="bjc-demo-controller",
        report_directory=args.report_dir,
    )
    data = {"config.yaml": config_text, "pod-template.yaml": template_text}
    try:
        loaded = load_config_map(data, env)
    except ConfigError as e:
        for problem in e.problems:
            print(f"bjc demo: invalid configuration: {problem}", file=sys.stderr)
        return 1
    ports = ("callback_service_port", "health_probe_port", "file_server_port")
    busy: dict[str, Any] = {k: 0 for k in ports if not _free(getattr(loaded.config, k))}
    if not _free(loaded.config.metrics.port):
        busy["metrics"] = msgspec.structs.replace(loaded.config.metrics, port=0)
    config = msgspec.structs.replace(loaded.config, **busy)  # a busy port: any free one

    sim = SimCluster()
    await sim.start()
    sim.create({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NAMESPACE}})
    sim.create(
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": env.config_map_name, "namespace": NAMESPACE},
            "data": data,
        }
    )
    for i in range(args.nodes):
        sim.add_node(f"demo-node-{i + 1:03d}", {"kubernetes.io/os": "linux"})
    if args.kubeconfig_out:
        sim.write_kubeconfig(args.kubeconfig_out)
    behaviour = None if args.job_command else JobBehaviour(pending_seconds=0.2, run=demo_job)
    agent = NodeAgent(sim.url, behaviour=behaviour, job_command=args.job_command)
    await agent.start()
    kube = KubeClient.from_url(sim.url)
    runtime = Runtime(
        config=config,
        template=loaded.template,
        env=env,
        kube=kube,
        bind_host="127.0.0.1",
        config_data=data,
    )
    try:
        await runtime.start()
        _announce(runtime, sim, args)
        if args.executions:
            await _run_executions(runtime, args.executions)
        else:
            await wait_for_signal()
    finally:
        await runtime.stop()
        await kube.close()
        await agent.stop()
        await sim.stop()
    return 0


async def _run_executions(runtime: Runtime, count: int) -> None:
    """Run `count` executions back to back (the first is the start-up run, if configured)."""
    controller = runtime.controller
    if runtime.elector is not None:
        await runtime.elector.wait_leading()
    if not runtime.config.run_on_startup:
        await controller.trigger("demo")
    await controller.wait_completed(1)
    while controller.completed < count:
        await controller.trigger("demo")
        await controller.wait_completed(controller.completed + 1)


def _announce(runtime: Runtime, sim: SimCluster, args: argparse.Namespace) -> None:
    p = runtime.ports
    lines = [
        f"bjc demo: {args.nodes} simulated nodes, Kubernetes API at {sim.url}",
        f"  reports      {runtime.store.root}  (browse: http://127.0.0.1:{p['files']}/)",
        f"  metrics      http://127.0.0.1:{p['metrics']}/metrics",
        f"  callbacks    http://127.0.0.1:{p['callback']}/report/<node>/<executionID>/...",
        f"  health       http://127.0.0.1:{p['health']}/readyz",
    ]
    if args.kubeconfig_out:
        kubectl = f"KUBECONFIG={args.kubeconfig_out} kubectl -n {NAMESPACE}"
        cm = f"configmap/{runtime.env.config_map_name}"
        lines += [
            f"  kubectl      {kubectl} get pods",
            f"  trigger      {kubectl} annotate --overwrite {cm} {TRIGGER_ANNOTATION}=$(date +%s)",
            f"               bjc trigger --kubeconfig {args.kubeconfig_out} -n {NAMESPACE} "
            f"{runtime.env.config_map_name}",
            f"  reload       {kubectl} edit {cm}   (e.g. podPoolSize; applies without a restart)",
        ]
    print("\n".join(lines), flush=True)


def main(argv: list[str]) -> int:
    args = _parser().parse_args(argv)
    setup_logging(human=True)
    config_text = Path(args.config).read_text() if args.config else DEMO_CONFIG
    template_text = Path(args.pod_template).read_text() if args.pod_template else DEMO_POD_TEMPLATE
    try:
        return run_async(run_demo(args, config_text, template_text))
    except KeyboardInterrupt:
        return 0


__all__ = ["DEMO_CONFIG", "DEMO_POD_TEMPLATE", "demo_job", "main", "run_demo"]
