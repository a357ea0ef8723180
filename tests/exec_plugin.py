"""A real client.authentication.k8s.io exec plugin for tests.

The plugin is a Python script: its n-th run prints an ExecCredential with token
`tok-<n>` (or, given `cert,key` file pairs as arguments, the n-th client
certificate) that expires `lifetime` seconds later; it counts its runs and keeps the
KUBERNETES_EXEC_INFO it was given, both in files beside it.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

V1BETA1 = "client.authentication.k8s.io/v1beta1"

_SCRIPT = """\
#!{python}
import datetime, json, os, sys
here = os.path.dirname(os.path.abspath(__file__))
def path(name):
    return os.path.join(here, name)
n = int(open(path("runs")).read()) + 1 if os.path.exists(path("runs")) else 1
open(path("runs"), "w").write(str(n))
open(path("exec-info.json"), "w").write(os.environ["KUBERNETES_EXEC_INFO"])
if os.environ.get("PLUGIN_FAIL"):
    print(os.environ["PLUGIN_FAIL"], file=sys.stderr)
    sys.exit(3)
lifetime = float(open(path("lifetime")).read())
expires = datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(seconds=lifetime)
status = {{"expirationTimestamp": expires.isoformat().replace("+00:00", "Z")}}
certs = sys.argv[2:]
if certs:  # pairs cert,key; run n uses pair (n-1) mod len
    cert, key = certs[(n - 1) % len(certs)].split(",")
    status["clientCertificateData"] = open(cert).read()
    status["clientKeyData"] = open(key).read()
else:
    status["token"] = f"tok-{{n}}"
print(json.dumps({{"apiVersion": sys.argv[1], "kind": "ExecCredential", "status": status}}))
"""


class ExecPluginScript:
    def __init__(self, directory: Path, lifetime: float = 3600.0) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self.dir = directory
        self.path = directory / "plugin.py"
        self.path.write_text(_SCRIPT.format(python=sys.executable))
        self.path.chmod(0o755)
        self.lifetime = lifetime

    @property
    def lifetime(self) -> float:
        return float((self.dir / "lifetime").read_text())

    @lifetime.setter
    def lifetime(self, seconds: float) -> None:
        """Lifetime of the credentials the next runs issue."""
        (self.dir / "lifetime").write_text(str(seconds))

    def runs(self) -> int:
        runs = self.dir / "runs"
        return int(runs.read_text()) if runs.exists() else 0

    def exec_info(self) -> dict[str, Any]:
        return json.loads((self.dir / "exec-info.json").read_text())

    def stanza(self, *args: str, **extra: Any) -> dict[str, Any]:
        """The kubeconfig user's `exec` stanza that runs this plugin."""
        return {"apiVersion": V1BETA1, "command": str(self.path), "args": [V1BETA1, *args], **extra}
