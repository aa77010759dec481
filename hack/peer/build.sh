#!/usr/bin/env bash
# hack/peer/build.sh [DIR]
#
# Builds the newest peer runtime from the Go module proxy into
# DIR (default _output/peer/containerd-$CONTAINERD2_VERSION):
#
#   bin/containerd, bin/containerd-shim-runc-v2, bin/ctr   containerd $CONTAINERD2_VERSION
#   bin/runc                                               runc $RUNC_VERSION (-tags seccomp)
#
# `go install module/cmd@version` builds each from the module's own go.mod, so
# the result is the released dependency set. runc needs cgo and the libseccomp
# headers (hack/install-deps.sh build). A build is skipped when DIR/.stamp
# names the same versions. Heavy: callers hold /tmp/shim-heavy.lock.
#
# Prints the bin directory on its last line.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)

CONTAINERD2_VERSION=${CONTAINERD2_VERSION:-v2.4.2}
RUNC_VERSION=${RUNC_VERSION:-v1.5.3}
dir=${1:-$repo/_output/peer/containerd-$CONTAINERD2_VERSION}
bin=$dir/bin
want="containerd $CONTAINERD2_VERSION runc $RUNC_VERSION"

have_all() {
	local b
	for b in containerd containerd-shim-runc-v2 ctr runc; do
		[[ -x $bin/$b ]] || return 1
	done
	[[ $(cat "$dir/.stamp" 2>/dev/null) == "$want" ]]
}

if ! have_all; then
	"$repo/hack/install-deps.sh" build >/dev/null
	echo "peer: building $want into $bin" >&2
	t0=$SECONDS
	rm -rf "$dir.tmp"
	mkdir -p "$dir.tmp/bin"
	# Outside any module: `go install pkg@version` uses the module's go.mod.
	(
		cd /tmp
		export GOBIN=$dir.tmp/bin GOFLAGS=-trimpath
		cv=${CONTAINERD2_VERSION#v}
		go install -ldflags "-X github.com/containerd/containerd/v2/version.Version=$cv" \
			"github.com/containerd/containerd/v2/cmd/containerd@$CONTAINERD2_VERSION" \
			"github.com/containerd/containerd/v2/cmd/containerd-shim-runc-v2@$CONTAINERD2_VERSION" \
			"github.com/containerd/containerd/v2/cmd/ctr@$CONTAINERD2_VERSION"
		# libpathrs (runc's default Makefile tag) needs a Rust library; runc's
		# Go fallback (pathrs-lite) is what it uses without it.
		CGO_ENABLED=1 go install -tags "seccomp urfave_cli_no_docs" \
			-ldflags "-X main.gitCommit=$RUNC_VERSION" \
			"github.com/opencontainers/runc@$RUNC_VERSION"
	)
	echo "$want" >"$dir.tmp/.stamp"
	rm -rf "$dir"
	mv "$dir.tmp" "$dir"
	echo "peer: built in $((SECONDS - t0))s" >&2
fi
echo "$bin"
