#!/usr/bin/env bash
# Build (or find) the binaries of the e2e control plane.
#
# envtest convention: when KUBEBUILDER_ASSETS names a directory holding them,
# nothing is built.  Otherwise each is built from Go modules at the versions
# pinned in versions.env into a cache outside the repository, keyed by version,
# and reused on later runs:
#   ${BJC_E2E_CACHE:-~/.cache/bjc-e2e}/k8s-<v>/{kube-apiserver,kube-controller-manager,kube-scheduler,kubectl}
#   ${BJC_E2E_CACHE:-~/.cache/bjc-e2e}/k8s-<v>/{kubelet,kube-proxy}          (the real node: `node`)
#   ${BJC_E2E_CACHE:-~/.cache/bjc-e2e}/etcd-<v>/etcd
#   ${BJC_E2E_CACHE:-~/.cache/bjc-e2e}/kwok-<v>/{kwok,stages/}  (the scale benchmark's fake nodes)
#   ${BJC_E2E_CACHE:-~/.cache/bjc-e2e}/helm-<v>/helm          (the Helm chart's tests: `helm`)
# The Kubernetes binaries come from one module pinned to k8s.io/kubernetes, so they
# share a version and most compiled packages.  The build modules (go.mod
# files, a tiny etcd main.go) live only in ${BJC_E2E_CACHE}/build; none of this is
# bjc code.  Exit status: 0 all built or found, 1 a build failed or go is missing.
set -euo pipefail

HERE="$(cd "$(dirname "$0")" && pwd)"
# shellcheck source=versions.env
source "$HERE/versions.env"
K8S_VERSION="${BJC_E2E_K8S_VERSION:-$K8S_VERSION}"
ETCD_VERSION="${BJC_E2E_ETCD_VERSION:-$ETCD_VERSION}"
KWOK_VERSION="${BJC_E2E_KWOK_VERSION:-$KWOK_VERSION}"
HELM_VERSION="${BJC_E2E_HELM_VERSION:-$HELM_VERSION}"
CACHE="${BJC_E2E_CACHE:-$HOME/.cache/bjc-e2e}"
BUILD="$CACHE/build"
K8S_BIN="$CACHE/k8s-$K8S_VERSION"
K8S_CMDS=(kube-apiserver kube-controller-manager kube-scheduler kubectl)
NODE_CMDS=(kubelet kube-proxy)

if [[ -n "${KUBEBUILDER_ASSETS:-}" ]]; then
    missing=()
    wanted=(etcd "${K8S_CMDS[@]}")
    [[ "${1:-}" == node ]] && wanted=("${NODE_CMDS[@]}")
    for b in "${wanted[@]}"; do
        [[ -x "$KUBEBUILDER_ASSETS/$b" ]] || missing+=("$b")
    done
    if ((${#missing[@]})); then
        echo "build_binaries: KUBEBUILDER_ASSETS=$KUBEBUILDER_ASSETS lacks ${missing[*]}" >&2
        exit 1
    fi
    echo "build_binaries: using KUBEBUILDER_ASSETS=$KUBEBUILDER_ASSETS"
    exit 0
fi

[[ -x /usr/local/go/bin/go ]] && PATH="$PATH:/usr/local/go/bin"  # the Go tarball's place
if ! command -v go >/dev/null; then
    echo "build_binaries: go not found; set KUBEBUILDER_ASSETS" >&2
    exit 1
fi

mkdir -p "$BUILD"
export CGO_ENABLED=0 GOFLAGS="${GOFLAGS:--buildvcs=false}"

build_kubernetes() {  # the commands to build, default K8S_CMDS
    local cmds=("$@") missing=()
    ((${#cmds[@]})) || cmds=("${K8S_CMDS[@]}")
    for cmd in "${cmds[@]}"; do
        if [[ -x "$K8S_BIN/$cmd" ]]; then
            echo "build_binaries: reusing $K8S_BIN/$cmd"
        else
            missing+=("k8s.io/kubernetes/cmd/$cmd")
        fi
    done
    ((${#missing[@]})) || return 0
    local dir="$BUILD/k8s-$K8S_VERSION"
    mkdir -p "$dir" "$K8S_BIN"
    cd "$dir"
    # k8s.io/kubernetes lists its staging modules at v0.0.0; point each at the
    # published v0.X.Y that matches v1.X.Y.
    local staging="v0${K8S_VERSION#v1}"
    cat > go.mod <<MOD
module bjc.local/e2e/kubernetes

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
    {
        printf '//go:build tools\n\npackage tools\n\nimport (\n'
        for cmd in "${K8S_CMDS[@]}" "${NODE_CMDS[@]}"; do
            printf '\t_ "k8s.io/kubernetes/cmd/%s"\n' "$cmd"
        done
        printf ')\n'
    } > tools.go
    go mod tidy -e >/dev/null 2>&1 || true
    # stamp the version (kubectl and discovery report it; unstamped it is v0.0.0-master)
    local ldflags="-s -w"
    ldflags+=" -X k8s.io/component-base/version.gitVersion=$K8S_VERSION"
    ldflags+=" -X k8s.io/component-base/version.gitMajor=1"
    ldflags+=" -X k8s.io/component-base/version.gitMinor=$(cut -d. -f2 <<<"$K8S_VERSION")"
    ldflags+=" -X k8s.io/client-go/pkg/version.gitVersion=$K8S_VERSION"
    ldflags+=" -X k8s.io/client-go/pkg/version.gitMajor=1"
    ldflags+=" -X k8s.io/client-go/pkg/version.gitMinor=$(cut -d. -f2 <<<"$K8S_VERSION")"
    local out="$dir/out"
    rm -rf "$out" && mkdir -p "$out"
    go build -trimpath -ldflags "$ldflags" -o "$out/" "${missing[@]}"
    for pkg in "${missing[@]}"; do
        mv "$out/${pkg##*/}" "$K8S_BIN/${pkg##*/}"
        echo "build_binaries: built $K8S_BIN/${pkg##*/}"
    done
}

build_etcd() {
    local out="$CACHE/etcd-$ETCD_VERSION/etcd"
    if [[ -x "$out" ]]; then
        echo "build_binaries: reusing $out"
        return
    fi
    # `go install go.etcd.io/etcd/v3@...` refuses modules with replace
    # directives, so a two-line main calls etcdmain.Main instead.
    local dir="$BUILD/etcd-$ETCD_VERSION"
    mkdir -p "$dir" "${out%/*}"
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

build_kwok() {
    local out="$CACHE/kwok-$KWOK_VERSION/kwok"
    if [[ -x "$out" ]]; then
        echo "build_binaries: reusing $out"
        return
    fi
    # kwok's own go.mod has no replace directives; its k8s.io client libraries are
    # raised to the pinned Kubernetes release so the Go build cache is shared.
    local dir="$BUILD/kwok-$KWOK_VERSION"
    local staging="v0${K8S_VERSION#v1}"
    mkdir -p "$dir" "${out%/*}"
    cd "$dir"
    cat > go.mod <<MOD
module bjc.local/e2e/kwok

go 1.26

require sigs.k8s.io/kwok $KWOK_VERSION
MOD
    cat > tools.go <<'GO'
//go:build tools

package tools

import _ "sigs.k8s.io/kwok/cmd/kwok"
GO
    go mod tidy
    go get "k8s.io/api@$staging" "k8s.io/apimachinery@$staging" "k8s.io/client-go@$staging"
    go mod tidy
    go build -trimpath -ldflags "-s -w" -o "$out.tmp" sigs.k8s.io/kwok/cmd/kwok
    # plain `kwok` (unlike kwokctl) has no default stages: keep kwok's own beside it
    local src stages="${out%/*}/stages"
    src="$(go list -m -f '{{.Dir}}' sigs.k8s.io/kwok)/kustomize/stage"
    mkdir -p "$stages"
    cp "$src/node/fast/node-initialize.yaml" "$src/pod/fast/pod-ready.yaml" \
        "$src/pod/fast/pod-complete.yaml" "$src/pod/fast/pod-delete.yaml" "$stages/"
    mv "$out.tmp" "$out"
    echo "build_binaries: built $out"
}

build_helm() {
    local out="$CACHE/helm-$HELM_VERSION/helm"
    if [[ -x "$out" ]]; then
        echo "build_binaries: reusing $out"
        return
    fi
    # helm.sh/helm/v4 has no replace directives: `go install` builds it as released
    local tmp="$BUILD/helm-$HELM_VERSION"
    mkdir -p "$tmp" "${out%/*}"
    GOBIN="$tmp" go install -trimpath -ldflags "-s -w" "helm.sh/helm/v4/cmd/helm@$HELM_VERSION"
    mv "$tmp/helm" "$out"
    echo "build_binaries: built $out"
}

case "${1:-all}" in
    kubernetes) build_kubernetes ;;
    etcd) build_etcd ;;
    kwok) build_kwok ;;
    node) build_kubernetes "${NODE_CMDS[@]}" ;;
    control-plane) build_etcd; build_kubernetes ;;
    helm) build_helm ;;
    all) build_etcd; build_kubernetes; build_kubernetes "${NODE_CMDS[@]}"; build_kwok; build_helm ;;
    *) echo "usage: $0 [all|control-plane|etcd|kubernetes|kwok|node|helm]" >&2; exit 2 ;;
esac
