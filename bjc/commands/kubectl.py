"""`kubectl bjc ...`: bjc as a kubectl plugin (the `kubectl-bjc` executable).

kubectl runs an executable named `kubectl-bjc` on PATH for `kubectl bjc ...` and
passes it the arguments; `pip install` puts one there (pyproject.toml's
`[project.scripts]`). Like kubectl, the plugin acts on the current kubeconfig
context and its namespace (else `default`), or on `--kubeconfig`, `--context` and
`-n/--namespace` given after the command:

- `kubectl bjc status`: `bjc status`, with the summaries read from the controller's
  file server through the API server's service proxy (`get services/proxy`), so no
  port-forward is needed: the Service `--service` (default `bjc`, the manifests'; the
  Go controller's Helm chart names it after the controller), port `--port` (default
  8080, the file server's in both). `--url` or `--report-dir` read there instead.
- `kubectl bjc trigger`: `bjc trigger`, which reads the kubeconfig the same way.
- any other command: as `bjc <command>`.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import urllib.parse
from collections.abc import Callable

from bjc.kube.client import (
    ApiError,
    Credentials,
    KubeClient,
    KubeConfigError,
    kubeconfig_credentials,
)

USAGE = """usage: kubectl bjc <command> [-n NAMESPACE] [--context CONTEXT] [--kubeconfig FILE] ...

  status   [--service bjc] [--port 8080] [bjc status options]
  trigger  [bjc trigger options]
  ...      any other bjc command (kubectl bjc help: bjc's commands)
"""


def _cluster_flags() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(add_help=False)
    p.add_argument("-n", "--namespace")
    p.add_argument("--context")
    p.add_argument("--kubeconfig")
    p.add_argument("--service", default="bjc")
    p.add_argument("--port", default="8080")
    return p


def _fetch(creds: Credentials) -> Callable[[str], bytes]:
    """Reads a URL of the API server (the service proxy) with the kubeconfig's credentials."""
    from bjc.commands.status import StatusError

    async def get(path: str, params: dict[str, str]) -> bytes:
        async with KubeClient(creds) as kube:
            return await kube.request("GET", path, params=params or None, accept="*/*")

    def fetch(url: str) -> bytes:
        parts = urllib.parse.urlsplit(url.removeprefix(creds.server))
        params = dict(urllib.parse.parse_qsl(parts.query))
        try:
            return asyncio.run(get(parts.path, params))
        except ApiError as e:
            raise StatusError(f"{url}: {e}") from None
        except Exception as e:  # the connection: what kubectl would say
            raise StatusError(f"cannot reach {creds.server}: {e}") from None

    return fetch


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if not args or args[0] in ("-h", "--help"):
        print(USAGE)
        return 0 if args else 2
    command, rest = args[0], args[1:]
    if command == "status":
        flags, status_args = _cluster_flags().parse_known_args(rest)
        try:
            creds = kubeconfig_credentials(flags.kubeconfig, flags.context)
        except KubeConfigError as e:
            print(f"kubectl bjc: {e}", file=sys.stderr)
            return 2
        namespace = flags.namespace or creds.namespace or "default"
        service = f"{flags.service}:{flags.port}"
        path = f"/api/v1/namespaces/{namespace}/services/{service}/proxy"
        from bjc.commands.status import main as status_main

        return status_main(status_args, fetch=(creds.server + path, _fetch(creds)))
    from bjc.commands.cli import main as bjc_main

    return bjc_main([command, *rest])
