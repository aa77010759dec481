#!/usr/bin/env bash
# A real kubelet on shim: kubelet v1.37.2 (built from the Go module proxy by
# hack/k8s/build.sh, cached in _output/bin), standalone with static pods,
# on a shim of its own. The checks are the Go test in test/kubelet (see its
# package comment for what it owns on the host: ports 11250/11248, cgroup
# root /shimkl, bridge shimkl0 10.66.0.0/16, nftables table shimkl).
#
#   hack/kubelet-e2e.sh [go test flags, e.g. -run 'TestKubelet/host']
#
# Needs root. Prints the time of each step.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH=/usr/local/go/bin:$PATH
[[ $(id -u) == 0 ]] || { echo "kubelet-e2e: needs root" >&2; exit 1; }

t0=$SECONDS
step() { echo "kubelet-e2e: $* ($((SECONDS - t0))s)"; }

hack/k8s/build.sh kubelet
step "kubelet ready"
[[ -x bin/shim ]] || make build
hack/registry.sh start
go run ./hack/testimages --registry 127.0.0.1:5000 >/dev/null
step "shim and test images ready"

status=0
SHIM_KUBELET_E2E=1 KUBELET_BIN=$PWD/_output/bin/kubelet SHIM_BIN=$PWD/bin/shim \
	go test -count=1 -v -timeout 30m ./test/kubelet "$@" || status=$?
step "done (status $status)"
exit "$status"
