#!/usr/bin/env bash
# Build (or find) the kube-apiserver and etcd binaries for the e2e tests.
#
# envtest convention: when KUBEBUILDER_ASSETS names a directory holding
# kube-apiserver and etcd, nothing is built.  Otherwise both are built from Go
# modules into a cache outside the repository and reused on later runs:
#   ${BJC_E2E_CACHE:-~/.cache/bjc-e2e}/bin/{kube-apiserver,etcd}
# The build modules (go.mod files, a tiny etcd main.go) live only in
# ${BJC_E2E_CACHE}/build; nothing here is bjc code.
set -euo pipefail

K8S_VERSION="${BJC_E2E_K8S_VERSION:-v1.36.3}"
ETCD_VERSION="${BJC_E2E_ETCD_VERSION:-v3.5.35}"
CACHE="${BJC_E2E_CACHE:-$HOME/.cache/bjc-e2e}"
BIN="$CACHE/bin"
BUILD="$CACHE/build"

if [[ -n "${KUBEBUILDER_ASSETS:-}" ]]; then
    if [[ -x "$KUBEBUILDER_ASSETS/kube-apiserver" && -x "$KUBEBUILDER_ASSETS/etcd" ]]; then
        echo "build_binaries: using KUBEBUILDER_ASSETS=$KUBEBUILDER_ASSETS"
        exit 0
    fi
    echo "build_binaries: KUBEBUILDER_ASSETS=$KUBEBUILDER_ASSETS lacks kube-apiserver or etcd" >&2
    exit 1
fi

if ! command -v go >/dev/null; then
    echo "build_binaries: go not found; set KUBEBUILDER_ASSETS" >&2
    exit 1
fi

mkdir -p "$BIN" "$BUILD"
export CGO_ENABLED=0 GOFLAGS="${GOFLAGS:--buildvcs=false}"

build_apiserver() {
    local out="$BIN/kube-apiserver"
    if [[ -x "$out" ]]; then
        echo "build_binaries: reusing $out"
        return
    fi
    local dir="$BUILD/kube-apiserver-$K8S_VERSION"
    mkdir -p "$dir"
    cd "$dir"
    # k8s.io/kubernetes lists its staging modules at v0.0.0; point each at the
    # published v0.X.Y that matches v1.X.Y.
    local staging="v0${K8S_VERSION#v1}"
    cat > go.mod <<MOD
module bjc.local/e2e/kubeapiserver

go 1.26
MOD
    local gomod
    gomod="$(go mod download -json "k8s.io/kubernetes@$K8S_VERSION" | sed -n 's/^\s*"GoMod": "\(.*\)",\?$/\1/p')"
    {
        echo "require k8s.io/kubernetes $K8S_VERSION"
        echo "replace ("
        grep -oE '^\s*k8s\.io/[A-Za-z0-9._/-]+ => \./staging/src/k8s\.io/[A-Za-z0-9._/-]+' "$gomod" \
            | awk -v v="$staging" '{print "\t" $1 " => " $1 " " v}'
        echo ")"
    } >> go.mod
    cat > tools.go <<'GO'
//go:build tools

package tools

import _ "k8s.io/kubernetes/cmd/kube-apiserver"
GO
    go mod tidy -e >/dev/null 2>&1 || true
    go get "k8s.io/kubernetes/cmd/kube-apiserver@$K8S_VERSION" 2>&1 | tail -3 || true
    # stamp the version (kubectl and discovery report it; unstamped it is v0.0.0-master)
    local ldflags="-s -w"
    ldflags+=" -X k8s.io/component-base/version.gitVersion=$K8S_VERSION"
    ldflags+=" -X k8s.io/component-base/version.gitMajor=1"
    ldflags+=" -X k8s.io/component-base/version.gitMinor=$(cut -d. -f2 <<<"$K8S_VERSION")"
    ldflags+=" -X k8s.io/client-go/pkg/version.gitVersion=$K8S_VERSION"
    go build -trimpath -ldflags "$ldflags" -o "$out.tmp" k8s.io/kubernetes/cmd/kube-apiserver
    mv "$out.tmp" "$out"
    echo "build_binaries: built $out"
}

build_etcd() {
    local out="$BIN/etcd"
    if [[ -x "$out" ]]; then
        echo "build_binaries: reusing $out"
        return
    fi
    # `go install go.etcd.io/etcd/v3@...` refuses modules with replace
    # directives, so a two-line main calls etcdmain.Main instead.
    local dir="$BUILD/etcd-$ETCD_VERSION"
    mkdir -p "$dir"
    cd "$dir"
    cat > go.mod <<MOD
module bjc.local/e2e/etcd

go 1.26

require go.etcd.io/etcd/server/v3 $ETCD_VERSION
MOD
    cat > main.go <<'GO'
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() { etcdmain.Main(os.Args) }
GO
    go mod tidy
    go build -trimpath -ldflags "-s -w" -o "$out.tmp" .
    mv "$out.tmp" "$out"
    echo "build_binaries: built $out"
}

case "${1:-all}" in
    kube-apiserver) build_apiserver ;;
    etcd) build_etcd ;;
    all) build_etcd; build_apiserver ;;
    *) echo "usage: $0 [all|etcd|kube-apiserver]" >&2; exit 2 ;;
esac
