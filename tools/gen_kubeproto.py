"""Regenerate bjc/sim/kubeproto.binpb, the protobuf descriptors bjc.sim speaks.

Run it through `nox -s kubeproto` (which installs grpcio-tools). It fetches the
`.proto` files of k8s.io/api and k8s.io/apimachinery with `go mod download` (Go and
the Go module proxy are needed), compiles the ones for the kinds the simulator serves
with protoc into one FileDescriptorSet, and checks that the Go structs embedded inline
in JSON are still exactly the ones bjc/sim/kubeproto.py knows about.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from grpc_tools import protoc

VERSION = "v0.36.3"
REPO = Path(__file__).resolve().parents[1]
OUT = REPO / "bjc" / "sim" / "kubeproto.binpb"
# (module, package dir) of every .proto compiled; imports are resolved among these
PROTOS = [
    ("apimachinery", "pkg/runtime"),
    ("apimachinery", "pkg/runtime/schema"),
    ("apimachinery", "pkg/util/intstr"),
    ("apimachinery", "pkg/api/resource"),
    ("apimachinery", "pkg/apis/meta/v1"),
    ("api", "core/v1"),
    ("api", "apps/v1"),
    ("api", "events/v1"),
    ("api", "coordination/v1"),
]
_STRUCT = re.compile(r"^type (\w+) struct")
_INLINE = re.compile(r'json:",inline"\s+protobuf:"[^"]*name=([^,"]+)')


def module_dirs() -> dict[str, Path]:
    mods = [f"k8s.io/{m}@{VERSION}" for m in ("api", "apimachinery")]
    out = subprocess.run(
        ["go", "mod", "download", "-json", *mods], check=True, capture_output=True, text=True
    ).stdout
    dirs: dict[str, Path] = {}
    for doc in re.findall(r"\{.*?\n\}", out, re.S):
        info = json.loads(doc)
        if "Error" in info:
            sys.exit(f"go mod download {info['Path']}: {info['Error']}")
        dirs[info["Path"].removeprefix("k8s.io/")] = Path(info["Dir"])
    return dirs


def inline_fields(dirs: dict[str, Path]) -> set[tuple[str, str]]:
    """(Go struct, proto field) of every struct embedded with `json:",inline"`."""
    found = set()
    for mod, pkg in PROTOS:
        types = dirs[mod] / pkg / "types.go"
        if not types.exists() or pkg.startswith("pkg/runtime"):
            continue  # runtime.Unknown/TypeMeta are handled as the envelope
        struct = ""
        for line in types.read_text().splitlines():
            if m := _STRUCT.match(line):
                struct = m.group(1)
            elif m := _INLINE.search(line):
                found.add((struct, m.group(1)))
    return found


def main() -> None:
    dirs = module_dirs()
    with tempfile.TemporaryDirectory() as tmp:
        files = []
        for mod, pkg in PROTOS:
            rel = f"k8s.io/{mod}/{pkg}/generated.proto"
            (Path(tmp) / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(dirs[mod] / pkg / "generated.proto", Path(tmp) / rel)
            files.append(rel)
        args = ["protoc", f"-I{tmp}", f"--descriptor_set_out={OUT}", "--include_imports", *files]
        if protoc.main(args) != 0:
            sys.exit("protoc failed")
    print(f"wrote {OUT.relative_to(REPO)} ({OUT.stat().st_size} bytes) from k8s.io/api {VERSION}")
    sys.path.insert(0, str(REPO))
    from bjc.sim.kubeproto import INLINE

    known = {(name.rsplit(".", 1)[-1], f) for name, f in INLINE}
    if inline_fields(dirs) != known:
        sys.exit(f"inline fields changed: Go has {sorted(inline_fields(dirs))}, INLINE {known}")


if __name__ == "__main__":
    main()
