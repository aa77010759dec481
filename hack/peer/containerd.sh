#!/usr/bin/env bash
# hack/peer/containerd.sh [1.6|2.4] start|stop|status
#
# Runs containerd (with its CRI plugin, runc and the overlayfs snapshotter) as
# the peer of shim, in either of two versions (PEER_VERSION, or the first
# argument; default 1.6):
#
#   1.6  Debian's containerd 1.6 and runc 1.1 (/usr/bin), config version 2
#   2.4  containerd 2.4.2 and runc 1.5.3 built from the Go module proxy by
#        hack/peer/build.sh into _output/peer/ (built on first start: several
#        minutes, heavy: hold /tmp/shim-heavy.lock), config version 3
#
# Both can run at once: each lives in its own $PEER_DIR (default /tmp/peer
# for 1.6, /tmp/peer-2.4 for 2.4), with its own bridge and CIDR:
#
#   config.toml                containerd config
#   containerd/root, /state    containerd root and state
#   containerd/containerd.sock the CRI endpoint: unix://$PEER_DIR/containerd/containerd.sock
#   certs.d/<host>/hosts.toml  registry mirrors (a copy of hack/certs.d: registry.k8s.io,
#                              k8s.gcr.io, gcr.io, docker.io -> http://127.0.0.1:5000)
#   cni/net.d, cni/ipam        bridge ($PEER_BRIDGE: peer0 / peer24) + host-local
#                              ($PEER_CIDR: 10.99.0.0/16 / 10.98.0.0/16) + portmap + loopback
#   containerd.pid, .log
#
# containerd itself keeps its shim sockets in /run/containerd/s (hard-coded,
# keyed by the address above) and CNI namespaces in /var/run/netns. The host
# lacks CAP_SYS_RESOURCE, so both configs set restrict_oom_score_adj.
#
#   start   start it unless it already runs; wait until the CRI answers
#   stop    remove every pod it runs, stop it and the runc shims it left
#   status  exit 0 if it runs and answers
#
# Environment: PEER_VERSION, PEER_DIR, PEER_CERTS_D (hosts.toml source dir),
# PEER_CIDR, PEER_BRIDGE, PEER_SANDBOX_IMAGE, CONTAINERD and CTR (binaries),
# PEER_EXTRA_HANDLERS (2.4: more RuntimeClass handler names, each runc like
# the default one; the node e2e suite wants "test-handler").
set -euo pipefail

usage() {
	echo "usage: $0 [1.6|2.4] start|stop|status" >&2
	exit 2
}
version=${PEER_VERSION:-1.6}
if [[ $# -eq 2 ]]; then
	version=$1
	shift
fi
[[ $# -eq 1 ]] || usage

here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
certs_src=${PEER_CERTS_D:-$repo/hack/certs.d}
case $version in
1.6)
	dir=${PEER_DIR:-/tmp/peer}
	cidr=${PEER_CIDR:-10.99.0.0/16}
	bridge=${PEER_BRIDGE:-peer0}
	sandbox_image=${PEER_SANDBOX_IMAGE:-registry.k8s.io/pause:3.9}
	bin=${CONTAINERD:-/usr/bin/containerd}
	ctr_bin=${CTR:-/usr/bin/ctr}
	;;
2.4)
	dir=${PEER_DIR:-/tmp/peer-2.4}
	cidr=${PEER_CIDR:-10.98.0.0/16}
	bridge=${PEER_BRIDGE:-peer24}
	sandbox_image=${PEER_SANDBOX_IMAGE:-registry.k8s.io/pause:3.10.2}
	peer_bin=$repo/_output/peer/containerd-v2.4.2/bin
	bin=${CONTAINERD:-$peer_bin/containerd}
	ctr_bin=${CTR:-$peer_bin/ctr}
	# containerd 2.4's own shim and runc, next to the containerd binary.
	shim_bin=$(dirname "$bin")/containerd-shim-runc-v2
	runc_bin=$(dirname "$bin")/runc
	for h in ${PEER_EXTRA_HANDLERS:-}; do
		[[ $h =~ ^[a-z0-9][a-z0-9.-]*$ ]] || {
			echo "containerd.sh: bad handler name in PEER_EXTRA_HANDLERS: $h" >&2
			exit 2
		}
	done
	;;
*) usage ;;
esac

config=$dir/config.toml
sock=$dir/containerd/containerd.sock
pidfile=$dir/containerd.pid
logfile=$dir/containerd.log

ctr() { "$ctr_bin" --address "$sock" --timeout 5s "$@"; }

# crictl is optional (hack/install-deps.sh builds it into _output/bin); with
# it, stop tears pods down through the CRI so CNI releases their addresses.
crictl_bin() {
	if [[ -x $repo/_output/bin/crictl ]]; then
		echo "$repo/_output/bin/crictl"
	elif command -v crictl >/dev/null 2>&1; then
		command -v crictl
	else
		return 1
	fi
}

# running prints the pid of the containerd started with our config, if alive.
running() {
	local pid
	[[ -f $pidfile ]] || return 1
	pid=$(<"$pidfile")
	[[ $pid =~ ^[0-9]+$ ]] || return 1
	[[ -r /proc/$pid/cmdline ]] || return 1
	# The pid must still be our containerd, not a recycled number.
	[[ $(tr '\0' ' ' <"/proc/$pid/cmdline") == *"$config"* ]] || return 1
	echo "$pid"
}

# answers: the daemon answers and its CRI plugin loaded.
answers() {
	[[ -S $sock ]] || return 1
	ctr version >/dev/null 2>&1 || return 1
	ctr plugins ls 2>/dev/null | awk '$1 == "io.containerd.grpc.v1" && $2 == "cri" { found = ($4 == "ok") } END { exit !found }'
}

config_v2() {
	cat <<EOF
# Written by hack/peer/containerd.sh: containerd 1.6 as shim's benchmark peer.
version = 2
root = "$dir/containerd/root"
state = "$dir/containerd/state"
# Snapshotters this host cannot run only add start-up noise.
disabled_plugins = ["io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.btrfs",
  "io.containerd.snapshotter.v1.devmapper", "io.containerd.snapshotter.v1.zfs"]

[grpc]
  address = "$sock"

[debug]
  level = "warn"

[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "$sandbox_image"
  # The host lacks CAP_SYS_RESOURCE: lowering oom_score_adj fails.
  restrict_oom_score_adj = true
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "$dir/cni/net.d"
    max_conf_num = 1
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
  [plugins."io.containerd.grpc.v1.cri".registry]
    # hosts.toml per registry: registry.k8s.io, k8s.gcr.io, gcr.io, docker.io
    # (and public.ecr.aws) -> http://127.0.0.1:5000.
    config_path = "$dir/certs.d"
EOF
}

# extra_handlers: one more runc runtime per name in PEER_EXTRA_HANDLERS.
extra_handlers() {
	local h
	for h in ${PEER_EXTRA_HANDLERS:-}; do
		cat <<EOF
    [plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.$h]
      runtime_type = "io.containerd.runc.v2"
      runtime_path = "$shim_bin"
      [plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.$h.options]
        BinaryName = "$runc_bin"
EOF
	done
}

# containerd 2.x: config version 3, where the CRI plugin is split into
# io.containerd.cri.v1.images, io.containerd.cri.v1.runtime and
# io.containerd.grpc.v1.cri. The shim and runc are named by path: Debian's
# 1.6 shim and runc 1.1 are on PATH and must not be picked up.
config_v3() {
	cat <<EOF
# Written by hack/peer/containerd.sh: containerd 2.4 as shim's peer.
version = 3
root = "$dir/containerd/root"
state = "$dir/containerd/state"
# Snapshotters this host cannot run only add start-up noise; NRI would
# listen on the host-wide /var/run/nri/nri.sock.
disabled_plugins = ["io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.devmapper",
  "io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.blockfile",
  "io.containerd.snapshotter.v1.erofs", "io.containerd.nri.v1.nri"]

[grpc]
  address = "$sock"

[debug]
  level = "warn"

[plugins.'io.containerd.cri.v1.images']
  snapshotter = "overlayfs"
  [plugins.'io.containerd.cri.v1.images'.pinned_images]
    sandbox = "$sandbox_image"
  [plugins.'io.containerd.cri.v1.images'.registry]
    # hosts.toml per registry: registry.k8s.io, k8s.gcr.io, gcr.io, docker.io
    # (and public.ecr.aws) -> http://127.0.0.1:5000.
    config_path = "$dir/certs.d"

[plugins.'io.containerd.cri.v1.runtime']
  # The host lacks CAP_SYS_RESOURCE: lowering oom_score_adj fails.
  restrict_oom_score_adj = true
  [plugins.'io.containerd.cri.v1.runtime'.containerd]
    default_runtime_name = "runc"
    [plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      runtime_path = "$shim_bin"
      [plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runc.options]
        BinaryName = "$runc_bin"
  [plugins.'io.containerd.cri.v1.runtime'.cni]
    bin_dirs = ["/usr/lib/cni"]
    conf_dir = "$dir/cni/net.d"
    max_conf_num = 1

[plugins.'io.containerd.grpc.v1.cri']
  stream_server_address = "127.0.0.1"
EOF
}

write_config() {
	mkdir -p "$dir/containerd/root" "$dir/containerd/state" "$dir/cni/net.d" "$dir/cni/ipam"
	# A private copy of the mirrors, so the peer runs from one directory.
	rm -rf "$dir/certs.d.tmp"
	cp -r "$certs_src" "$dir/certs.d.tmp"
	rm -rf "$dir/certs.d"
	mv "$dir/certs.d.tmp" "$dir/certs.d"

	cat >"$dir/cni/net.d/10-peer.conflist" <<EOF
{
  "cniVersion": "1.0.0",
  "name": "peer",
  "plugins": [
    {
      "type": "bridge",
      "bridge": "$bridge",
      "isGateway": true,
      "ipMasq": true,
      "hairpinMode": true,
      "ipam": {
        "type": "host-local",
        "dataDir": "$dir/cni/ipam",
        "ranges": [[{ "subnet": "$cidr" }]],
        "routes": [{ "dst": "0.0.0.0/0" }]
      }
    },
    { "type": "portmap", "capabilities": { "portMappings": true } },
    { "type": "loopback" }
  ]
}
EOF

	if [[ $version == 1.6 ]]; then
		config_v2 >"$config.tmp"
	else
		config_v3 >"$config.tmp"
	fi
	mv "$config.tmp" "$config"
}

start() {
	local pid i
	if pid=$(running); then
		for ((i = 0; i < 100; i++)); do
			answers && {
				echo "containerd $version peer already running on unix://$sock (pid $pid)"
				return 0
			}
			sleep 0.1
		done
		echo "containerd.sh: pid $pid runs but unix://$sock does not answer; see $logfile" >&2
		return 1
	fi
	if [[ $version == 2.4 && $bin == "$peer_bin/containerd" ]]; then
		"$here/build.sh" >/dev/null
	fi
	[[ -x $bin ]] || {
		echo "containerd.sh: $bin not found (apt-get install containerd runc)" >&2
		return 1
	}
	if [[ -S $sock ]] && ctr version >/dev/null 2>&1; then
		echo "containerd.sh: something else already serves unix://$sock" >&2
		return 1
	fi
	mkdir -p "$dir"
	write_config
	rm -f "$sock"
	# setsid: the peer must not die with the shell that started it.
	setsid "$bin" --config "$config" </dev/null >>"$logfile" 2>&1 &
	pid=$!
	echo "$pid" >"$pidfile"
	for ((i = 0; i < 300; i++)); do
		if answers; then
			echo "containerd $version peer running on unix://$sock (pid $pid, dir $dir)"
			return 0
		fi
		if ! kill -0 "$pid" 2>/dev/null; then
			rm -f "$pidfile"
			echo "containerd.sh: containerd exited; last log lines:" >&2
			tail -n 20 "$logfile" >&2
			return 1
		fi
		sleep 0.1
	done
	echo "containerd.sh: containerd pid $pid did not answer on unix://$sock within 30s; see $logfile" >&2
	return 1
}

# shim_pids prints the containerd-shim-runc-v2 processes serving our daemon
# (their command line names our socket).
shim_pids() {
	local p
	for p in /proc/[0-9]*; do
		[[ $(readlink "$p/exe" 2>/dev/null) == */containerd-shim-runc-v2 ]] || continue
		[[ $(tr '\0' ' ' <"$p/cmdline" 2>/dev/null) == *"-address $sock "* ]] || continue
		echo "${p#/proc/}"
	done
}

# remove_pods stops and removes every pod and container, through the CRI when
# crictl is at hand, otherwise by killing the tasks.
remove_pods() {
	local c id
	if c=$(crictl_bin); then
		"$c" --runtime-endpoint "unix://$sock" --image-endpoint "unix://$sock" --timeout 30s \
			rmp --force --all >/dev/null 2>&1 || true
	fi
	for id in $(ctr -n k8s.io tasks ls -q 2>/dev/null); do
		ctr -n k8s.io tasks kill --all --signal SIGKILL "$id" >/dev/null 2>&1 || true
		ctr -n k8s.io tasks delete --force "$id" >/dev/null 2>&1 || true
	done
}

stop() {
	local pid i p
	if pid=$(running); then
		remove_pods
		kill -TERM "$pid"
		for ((i = 0; i < 100; i++)); do
			kill -0 "$pid" 2>/dev/null || break
			sleep 0.1
		done
		kill -0 "$pid" 2>/dev/null && kill -KILL "$pid"
		echo "containerd $version peer stopped (pid $pid)"
	else
		echo "containerd $version peer not running"
	fi
	rm -f "$pidfile"
	# Shims outlive containerd by design; ours go with it.
	for p in $(shim_pids); do
		kill -KILL "$p" 2>/dev/null || true
	done
	# Mounts left under the peer dir (sandbox shm, rootfs) by killed shims.
	if [[ -d $dir ]]; then
		awk -v d="$dir/" 'index($5, d) == 1 { print $5 }' /proc/self/mountinfo | sort -r |
			while read -r m; do umount -l "$m" 2>/dev/null || true; done
	fi
	if ip link show "$bridge" >/dev/null 2>&1; then
		ip link delete "$bridge" 2>/dev/null || true
	fi
}

status() {
	local pid
	if pid=$(running) && answers; then
		echo "containerd $version peer running on unix://$sock (pid $pid)"
		return 0
	fi
	echo "containerd $version peer not running"
	return 1
}

case $1 in
start) start ;;
stop) stop ;;
status) status ;;
*) usage ;;
esac
