#!/usr/bin/env bash
# hack/k8s/build.sh kubelet|e2e_node|all
#
# Builds kubelet and the node e2e suite (e2e_node.test) from k8s.io/kubernetes
# (the version in hack/k8s/go.mod, with every k8s.io staging module pinned to
# the same release by its replace lines) through the Go module proxy, into
# _output/bin. A build is skipped when the cached binary was built from the
# same go.mod/go.sum (recorded in _output/bin/.<name>.stamp).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
out=$repo/_output/bin
mkdir -p "$out"
stamp=$(cat "$here/go.mod" "$here/go.sum" "$0" | sha256sum | cut -c1-16)
version=$(sed -n 's/^require k8s.io\/kubernetes \(v[0-9.]*\)$/\1/p' "$here/go.mod")
ldflags="-X k8s.io/component-base/version.gitVersion=$version -X k8s.io/component-base/version.gitTreeState=clean"

build() {
	local name=$1
	if [[ -x $out/$name && $(cat "$out/.$name.stamp" 2>/dev/null) == "$stamp" ]]; then
		return 0
	fi
	echo "k8s: building $name (several minutes)"
	local t0=$SECONDS
	case $name in
	kubelet) (cd "$here" && GOFLAGS=-mod=mod go build -ldflags "$ldflags" -o "$out/kubelet.tmp" k8s.io/kubernetes/cmd/kubelet) ;;
	e2e_node.test) (cd "$here" && GOFLAGS=-mod=mod go test -c -ldflags "$ldflags" -o "$out/e2e_node.test.tmp" k8s.io/kubernetes/test/e2e_node) ;;
	esac
	mv "$out/$name.tmp" "$out/$name"
	echo "$stamp" >"$out/.$name.stamp"
	echo "k8s: $name built in $((SECONDS - t0))s"
}

case ${1:-all} in
kubelet) build kubelet ;;
e2e_node) build e2e_node.test ;;
all) build kubelet && build e2e_node.test ;;
*) echo "usage: $0 kubelet|e2e_node|all" >&2; exit 2 ;;
esac
