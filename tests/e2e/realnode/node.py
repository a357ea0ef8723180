"""A real Kubernetes node on this machine: containerd, the kubelet and kube-proxy.

Why this exists: the image built from `Dockerfile` is what users deploy, and only a
real kubelet runs it as they do: image, entry point, user, read-only root file
system, capabilities, fsGroup on the report volume, probes, the ServiceAccount token
as the kubelet projects it, a Service reached through kube-proxy. The simulated node
agent (bjc.sim) and kwok stay for the fast suite and for scale.

What it sets up, as root, and undoes in `stop()` (by PID, then the state it left):
- containerd with its own root, state and socket in the work directory, the CRI
  plugin on the cgroupfs driver, `restrict_oom_score_adj` (these VMs drop
  CAP_SYS_RESOURCE, and runc then fails every sandbox), and the locally built pause
  image as the sandbox image; the images of build_images.sh imported into it;
- a CNI bridge with host-local addresses in POD_RANGE and routes to the pod and
  Service ranges only (no default route, no masquerade): a pod reaches Services
  through kube-proxy, and nothing leaves the machine;
- the kubelet (cgroupfs, cgroup v1 accepted, anonymous read access for the
  apiserver's `logs` and `exec`, image garbage collection off: the images cannot be
  pulled again) and kube-proxy in iptables mode, both as the admin user;
- the sysctls it needs (`ip_forward`, `bridge-nf-call-iptables`).
Teardown: the processes, containerd's shims, the mounts under the work directory,
kube-proxy's chains (`--cleanup`) and the kubelet's, the bridge, the kubepods
cgroups, and the sysctls the node and the kubelet changed.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from tests.e2e.controlplane import ControlPlane, free_port, tail, terminate

NODE_NAME = "e2e-real-node"
POD_RANGE = "10.244.0.0/24"
SERVICE_RANGE = "10.96.0.0/16"
BRIDGE = "bjce2e0"
SANDBOX_IMAGE = "localhost/bjc-e2e/pause:1"
CNI_BIN = "/usr/lib/cni"
# set here (1) for the bridge and kube-proxy
SYSCTLS = ("net/ipv4/ip_forward", "net/bridge/bridge-nf-call-iptables")
# set by the kubelet itself (its "kernel defaults"): saved before, restored after
KUBELET_SYSCTLS = (
    "vm/overcommit_memory",
    "vm/panic_on_oom",
    "kernel/panic",
    "kernel/panic_on_oops",
    "kernel/keys/root_maxkeys",
    "kernel/keys/root_maxbytes",
)
CONTAINERD_CONFIG = """\
version = 2
root = "{root}"
state = "{state}"

[grpc]
address = "{socket}"

[ttrpc]
address = "{socket}.ttrpc"

[plugins."io.containerd.grpc.v1.cri"]
sandbox_image = "{sandbox}"
# these VMs drop CAP_SYS_RESOURCE: without this runc fails every sandbox
restrict_oom_score_adj = true

[plugins."io.containerd.grpc.v1.cri".containerd]
snapshotter = "overlayfs"
default_runtime_name = "runc"

[plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
runtime_type = "io.containerd.runc.v2"

[plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
SystemdCgroup = false

[plugins."io.containerd.grpc.v1.cri".cni]
bin_dir = "{cni_bin}"
conf_dir = "{cni_conf}"
"""
START_BOUND = 120.0  # seconds: a hang bound for each component's start-up
NEEDS = ("containerd", "ctr", "runc", "iptables", "conntrack", "buildah", "mmdebstrap", "gcc")


def machine_address() -> str | None:
    """The address of the interface with the default route: the node's InternalIP
    (the kubelet refuses a loopback one). No packet is sent."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.connect(("203.0.113.1", 9))  # TEST-NET-3: only a route lookup
        except OSError:
            return None
        address = str(s.getsockname()[0])
    return None if address.startswith("127.") else address


def why_not_here() -> str | None:
    """Why a real node cannot start on this machine, or None."""
    if os.geteuid() != 0:
        return "a real node needs root (containerd, iptables, cgroups)"
    missing = [t for t in NEEDS if shutil.which(t) is None]
    if missing:
        return f"a real node needs {', '.join(missing)} (Debian packages: see .ci/run)"
    if "overlay" not in Path("/proc/filesystems").read_text():
        return "no overlayfs for containerd's snapshotter"
    if not Path("/proc/sys/net/bridge").is_dir():
        return "no br_netfilter (pods could not reach Services on their own bridge)"
    if not Path(CNI_BIN, "bridge").is_file():
        return f"no CNI plugins in {CNI_BIN}"
    if machine_address() is None:
        return "no non-loopback address for the node"
    return None


@dataclass
class RealNode:
    """Start with `start()`, stop with `stop()`; joins `plane` as NODE_NAME."""

    plane: ControlPlane
    kubelet: str
    kube_proxy: str
    images: list[Path]
    workdir: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="bjc-node-")))
    _procs: list[tuple[str, subprocess.Popen[bytes]]] = field(default_factory=list)
    _sysctls: dict[str, str] = field(default_factory=dict)

    @property
    def socket(self) -> Path:
        return self.workdir / "containerd" / "containerd.sock"

    @property
    def address(self) -> str:
        return self.plane.address

    def ctr(self, *args: str) -> str:
        argv = ["ctr", "--address", str(self.socket), "--namespace", "k8s.io", *args]
        return subprocess.run(argv, check=True, capture_output=True, text=True).stdout

    def logs(self) -> str:
        """The tail of each component's log, for a failure message."""
        return "\n".join(
            f"--- {name}:\n{tail(self.workdir / f'{name}.log', 15)}" for name, _ in self._procs
        )

    # --- lifecycle ---

    def start(self) -> None:
        try:
            self._start()
        except BaseException:
            self.stop()
            raise

    def _start(self) -> None:
        for key in (*SYSCTLS, *KUBELET_SYSCTLS):
            self._sysctls[key] = Path("/proc/sys", key).read_text().strip()
        for key in SYSCTLS:
            Path("/proc/sys", key).write_text("1")
        self._write_cni()
        self._start_containerd()
        for archive in self.images:
            self.ctr("images", "import", "--no-unpack", str(archive))
        kubeconfig = self.plane.write_kubeconfig(self.workdir / "node.kubeconfig", self.plane.token)
        self._start_kubelet(kubeconfig)
        self._start_kube_proxy(kubeconfig)

    def _start_containerd(self) -> None:
        base = self.workdir / "containerd"
        base.mkdir()
        (base / "config.toml").write_text(
            CONTAINERD_CONFIG.format(
                root=base / "root",
                state=base / "state",
                socket=self.socket,
                sandbox=SANDBOX_IMAGE,
                cni_bin=CNI_BIN,
                cni_conf=self.workdir / "cni",
            )
        )
        self._spawn("containerd", ["containerd", "--config", str(base / "config.toml")])
        self._until("containerd", lambda: self.socket.exists() and self._ctr_ok())

    def _ctr_ok(self) -> bool:
        try:
            self.ctr("version")
        except subprocess.CalledProcessError:
            return False
        return True

    def _write_cni(self) -> None:
        conf = self.workdir / "cni"
        conf.mkdir()
        bridge = {
            "type": "bridge",
            "bridge": BRIDGE,
            "isGateway": True,
            "ipMasq": False,
            "hairpinMode": True,  # a job pod reaching its own Service's endpoint
            "ipam": {
                "type": "host-local",
                "ranges": [[{"subnet": POD_RANGE}]],
                "routes": [{"dst": POD_RANGE}, {"dst": SERVICE_RANGE}],
                "dataDir": str(self.workdir / "ipam"),
            },
        }
        doc = {"cniVersion": "0.4.0", "name": "bjc-e2e", "plugins": [bridge]}
        (conf / "10-bjc-e2e.conflist").write_text(json.dumps(doc, indent=2))

    def _start_kubelet(self, kubeconfig: Path) -> None:
        healthz = free_port()
        config = {
            "apiVersion": "kubelet.config.k8s.io/v1beta1",
            "kind": "KubeletConfiguration",
            "address": self.address,
            "port": free_port(),
            "readOnlyPort": 0,
            "healthzBindAddress": "127.0.0.1",
            "healthzPort": healthz,
            "cgroupDriver": "cgroupfs",
            "failCgroupV1": False,
            "failSwapOn": False,
            "containerRuntimeEndpoint": f"unix://{self.socket}",
            "authentication": {"anonymous": {"enabled": True}, "webhook": {"enabled": False}},
            "authorization": {"mode": "AlwaysAllow"},
            "resolvConf": "/etc/resolv.conf",
            # images come from build_images.sh and cannot be pulled again
            "imageGCHighThresholdPercent": 100,
            "imageGCLowThresholdPercent": 99,
            "evictionHard": {
                "memory.available": "50Mi",
                "nodefs.available": "1%",
                "imagefs.available": "1%",
                "nodefs.inodesFree": "1%",
            },
            "rotateCertificates": False,
            "serializeImagePulls": False,
            "maxPods": 30,
        }
        path = self.workdir / "kubelet.yaml"
        path.write_text(yaml.safe_dump(config))
        argv = [
            self.kubelet,
            f"--config={path}",
            f"--kubeconfig={kubeconfig}",
            f"--hostname-override={NODE_NAME}",
            f"--node-ip={self.address}",
            f"--root-dir={self.workdir / 'kubelet'}",
            f"--cert-dir={self.workdir / 'kubelet-pki'}",
        ]
        self._spawn("kubelet", argv)
        self._until("kubelet", lambda: _http_ok(f"http://127.0.0.1:{healthz}/healthz"))

    def _start_kube_proxy(self, kubeconfig: Path) -> None:
        healthz = free_port()
        config = {
            "apiVersion": "kubeproxy.config.k8s.io/v1alpha1",
            "kind": "KubeProxyConfiguration",
            "mode": "iptables",
            "clientConnection": {"kubeconfig": str(kubeconfig)},
            "hostnameOverride": NODE_NAME,
            "clusterCIDR": POD_RANGE,
            "bindAddress": self.address,
            "healthzBindAddress": f"127.0.0.1:{healthz}",
            "metricsBindAddress": f"127.0.0.1:{free_port()}",
            "iptables": {"localhostNodePorts": False},
            # leave the machine's conntrack table size alone
            "conntrack": {"maxPerCore": 0, "min": 0},
        }
        path = self.workdir / "kube-proxy.yaml"
        path.write_text(yaml.safe_dump(config))
        self._spawn("kube-proxy", [self.kube_proxy, f"--config={path}"])
        self._until("kube-proxy", lambda: _http_ok(f"http://127.0.0.1:{healthz}/healthz"))

    def _spawn(self, name: str, argv: list[str]) -> None:
        with (self.workdir / f"{name}.log").open("ab") as out:
            proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT)
        self._procs.append((name, proc))

    def _until(self, name: str, ready: object) -> None:
        proc = dict(self._procs)[name]
        deadline = time.monotonic() + START_BOUND
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise RuntimeError(f"{name} exited {proc.returncode}:\n{self.logs()}")
            if ready():  # type: ignore[operator]
                return
            time.sleep(0.25)
        raise RuntimeError(f"{name} not ready after {START_BOUND}s:\n{self.logs()}")

    def stop(self) -> None:
        for name, proc in reversed(self._procs):
            terminate(proc)
            if name == "containerd":
                self._kill_shims()
        self._procs.clear()
        subprocess.run([self.kube_proxy, "--cleanup"], capture_output=True)
        _drop_chains()  # the kubelet's own (KUBE-FIREWALL, canaries)
        subprocess.run(["ip", "link", "delete", BRIDGE], capture_output=True)
        self._unmount()
        _remove_cgroups("kubepods")
        for key, value in self._sysctls.items():
            Path("/proc/sys", key).write_text(value)
        if os.environ.get("BJC_E2E_KEEP") != "1":
            shutil.rmtree(self.workdir, ignore_errors=True)

    def _kill_shims(self) -> None:
        """containerd's shims (and their containers) outlive containerd: end those
        started for this node's socket."""
        for proc in Path("/proc").iterdir():
            if not proc.name.isdigit():
                continue
            try:
                argv = (proc / "cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            if (
                argv
                and argv[0].endswith(b"containerd-shim-runc-v2")
                and (str(self.socket).encode() in argv)
            ):
                _kill_tree(int(proc.name))

    def _unmount(self) -> None:
        prefix = str(self.workdir) + "/"
        mounts = [line.split()[1] for line in Path("/proc/self/mounts").read_text().splitlines()]
        for point in sorted((m for m in mounts if m.startswith(prefix)), reverse=True):
            subprocess.run(["umount", "-l", point], capture_output=True)


def _drop_chains(prefixes: tuple[str, ...] = ("KUBE-", "CNI-")) -> None:
    """Remove the chains named `prefixes` and every rule that jumps to them, in
    each table of iptables and ip6tables; everything else is restored as it was."""
    for save, restore in (
        ("iptables-save", "iptables-restore"),
        ("ip6tables-save", "ip6tables-restore"),
    ):
        dump = subprocess.run([save], capture_output=True, text=True)
        if dump.returncode != 0:
            continue
        kept = [
            line
            for line in dump.stdout.splitlines()
            if not any(f":{p}" in line or f" {p}" in line for p in prefixes)
        ]
        subprocess.run([restore], input="\n".join(kept) + "\n", capture_output=True, text=True)


def _http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as resp:
            return resp.status == 200
    except OSError:
        return False


def _kill_tree(pid: int) -> None:
    children = Path(f"/proc/{pid}/task/{pid}/children")
    try:
        kids = [int(c) for c in children.read_text().split()]
    except OSError:
        kids = []
    for kid in kids:
        _kill_tree(kid)
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def _remove_cgroups(name: str) -> None:
    """rmdir the cgroup `name` in every v1 hierarchy, children first."""
    for hierarchy in Path("/sys/fs/cgroup").iterdir():
        top = hierarchy / name
        if not top.is_dir():
            continue
        for path in sorted(top.rglob("*"), key=lambda p: len(p.parts), reverse=True):
            if path.is_dir():
                try:
                    path.rmdir()
                except OSError:
                    pass
        try:
            top.rmdir()
        except OSError:
            pass
