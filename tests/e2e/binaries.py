"""Where the e2e control plane's binaries are, as build_binaries.sh lays them out.

One place for the layout, shared by the e2e fixtures and the real-apiserver
benchmark: `KUBEBUILDER_ASSETS` (envtest convention: one directory with every
binary) wins; otherwise the version-keyed cache that build_binaries.sh fills from
the versions pinned in versions.env.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
BUILD_SCRIPT = HERE / "build_binaries.sh"
CONTROL_PLANE = ("etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "kubectl")
NODE = ("kubelet", "kube-proxy")  # the real node's (build_binaries.sh node)


def versions() -> dict[str, str]:
    """versions.env, each value overridable by BJC_E2E_<NAME>."""
    out: dict[str, str] = {}
    for line in (HERE / "versions.env").read_text().splitlines():
        if "=" in line and not line.lstrip().startswith("#"):
            key, value = line.split("=", 1)
            out[key] = os.environ.get(f"BJC_E2E_{key}", value.strip())
    return out


@dataclass(frozen=True)
class Binaries:
    """Paths of the binaries; `missing` names those not there."""

    paths: dict[str, Path]

    def __getitem__(self, name: str) -> str:
        return str(self.paths[name])

    def missing(self, names: tuple[str, ...] = CONTROL_PLANE) -> list[str]:
        return [n for n in names if not self.paths[n].is_file()]


def cache() -> Path:
    return Path(os.environ.get("BJC_E2E_CACHE", Path.home() / ".cache" / "bjc-e2e"))


def image_archives() -> Path:
    """Where realnode/build_images.sh leaves the images' OCI archives (`nox -s e2e`)."""
    return cache() / "images" / "out"


def locate() -> Binaries:
    names = (*CONTROL_PLANE, *NODE, "kwok", "helm")
    assets = os.environ.get("KUBEBUILDER_ASSETS")
    if assets:
        return Binaries({n: Path(assets) / n for n in names})
    v = versions()
    k8s = cache() / f"k8s-{v['K8S_VERSION']}"
    paths = {n: k8s / n for n in (*CONTROL_PLANE, *NODE)}
    paths["etcd"] = cache() / f"etcd-{v['ETCD_VERSION']}" / "etcd"
    paths["kwok"] = cache() / f"kwok-{v['KWOK_VERSION']}" / "kwok"
    paths["helm"] = cache() / f"helm-{v['HELM_VERSION']}" / "helm"
    return Binaries(paths)


def helm() -> str | None:
    """The helm binary: the one build_binaries.sh built (`helm` target), else on PATH."""
    built = locate().paths["helm"]
    return str(built) if built.is_file() else shutil.which("helm")


def build(target: str = "all") -> tuple[bool, str]:
    """Run build_binaries.sh; (succeeded, the tail of its output)."""
    done = subprocess.run(["bash", str(BUILD_SCRIPT), target], capture_output=True, text=True)
    tail = "\n".join((done.stdout + done.stderr).splitlines()[-15:])
    return done.returncode == 0, tail
