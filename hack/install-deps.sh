#!/usr/bin/env bash
# Installs what shim needs on a fresh Debian machine. `install-deps.sh build`:
# only what building bin/shim needs (cgo: gcc, libseccomp headers,
# pkg-config). With no argument: also the test dependencies (apt packages,
# and crictl + critest v1.37.0 built from the Go module proxy into
# _output/bin). Idempotent: only what is missing is installed.
set -euo pipefail
cd "$(dirname "$0")/.."

CRI_TOOLS_VERSION=v1.37.0
BUILD_PKGS=(gcc libc6-dev libseccomp-dev pkgconf make)
PKGS=("${BUILD_PKGS[@]}" docker-registry containerd runc busybox-static nftables containernetworking-plugins
      zstd bzip2 iproute2 util-linux e2fsprogs procps curl dpkg-dev)
[ "${1:-}" = build ] && PKGS=("${BUILD_PKGS[@]}")

missing=()
for p in "${PKGS[@]}"; do
	[[ $(dpkg-query -W -f='${Status}' "$p" 2>/dev/null) == *"install ok installed"* ]] || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
	echo "install-deps: apt-get install ${missing[*]}"
	export DEBIAN_FRONTEND=noninteractive
	apt-get update -qq
	apt-get install -y -qq "${missing[@]}" >/dev/null
fi
[ "${1:-}" = build ] && exit 0
# Debian starts containerd on install where it can; tests run their own.
pkill -x containerd 2>/dev/null || true

mkdir -p _output/bin
want="cri-tools $CRI_TOOLS_VERSION"
if [ ! -x _output/bin/crictl ] || [ ! -x _output/bin/critest ] || [ "$(cat _output/bin/.cri-tools 2>/dev/null)" != "$want" ]; then
	echo "install-deps: building crictl and critest $CRI_TOOLS_VERSION"
	dir=$(cd /tmp && GOFLAGS=-mod=mod go mod download -json "sigs.k8s.io/cri-tools@$CRI_TOOLS_VERSION" | sed -n 's/.*"Dir": "\(.*\)".*/\1/p')
	out=$PWD/_output/bin
	(cd "$dir" && go build -o "$out/crictl" ./cmd/crictl && go test -c -o "$out/critest" ./cmd/critest)
	echo "$want" > _output/bin/.cri-tools
fi
echo "install-deps: ok"
