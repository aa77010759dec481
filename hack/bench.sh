#!/usr/bin/env bash
# hack/bench.sh: measure shim against containerd 1.6 and 2.4 (the peers) in
# one run.
#
# Starts the loopback registry (unless it runs) and pushes the test images,
# starts a fresh containerd peer per BENCH_PEERS (hack/peer/containerd.sh)
# and a fresh shim (bin/shim serve), all on temporary directories and
# networks of their own, runs every hack/bench mode against all of them with
# alternating rounds (shim, containerd 1.6, containerd 2.4, shim, ...),
# writes every record to hack/bench/results/<UTC date>.json and prints a
# markdown table: each runtime's median, the ratios of shim to each peer and
# to the better peer, and the goal. Stops and removes what it started
# (daemons, pods, monitors, bridges, shim's nftables table, mounts), also on
# failure. A mode that fails is reported and the others still run; the exit
# status is then 1.
#
# Networks: shim bridge shimb0 10.94.0.0/16 (nft table shimbench, veths
# shb*); containerd 1.6 bpeer0 10.97.0.0/16; containerd 2.4 bpeer24
# 10.95.0.0/16. Both peers use pause:3.9 as their sandbox image.
#
# Environment:
#   BENCH_PEERS  containerd versions to compare with (default "1.6 2.4";
#                2.4 is built into _output/peer by hack/peer/build.sh on
#                first use: several minutes)
#   BENCH_MODES  modes in order (default "idle pull start start-shared-pid
#                concurrent memory exec exec-stream stream-throughput
#                rss-after"; idle runs first, on freshly started daemons,
#                rss-after last, after the others)
#   BENCH_N      rounds per runtime for pull, start, start-shared-pid and
#                stream-throughput (default 10)
#   BENCH_N_SLOW rounds per runtime for concurrent and memory (default 3)
#   BENCH_N_EXEC rounds per runtime for exec and exec-stream (default 50)
#   BENCH_PODS_CONCURRENT (default 20), BENCH_PODS_MEMORY (default 10)
#   BENCH_PODS_STATS (default 100), BENCH_STATS_WINDOW (default 60s): the
#                stats mode (not in the default list: BENCH_MODES=stats);
#                it runs BENCH_N_SLOW rounds of two windows per runtime
#   BENCH_IMAGE  pull image (default shim-test/bench:8x4m: 8 layers x 4 MiB)
#   BENCH_KEEP=1 keep the work directory
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD

PEERS=${BENCH_PEERS:-1.6 2.4}
MODES=${BENCH_MODES:-idle pull start start-shared-pid concurrent memory exec exec-stream stream-throughput rss-after}
N=${BENCH_N:-10}
N_SLOW=${BENCH_N_SLOW:-3}
N_EXEC=${BENCH_N_EXEC:-50}
PODS_CONCURRENT=${BENCH_PODS_CONCURRENT:-20}
PODS_MEMORY=${BENCH_PODS_MEMORY:-10}
IMAGE=${BENCH_IMAGE:-shim-test/bench:8x4m}
PAUSE_IMAGE=registry.k8s.io/pause:3.9
REGISTRY_PORT=5000

# Each peer's directory (under the work dir), bridge and CIDR: apart from
# each other, from shim's below, from hack/peer's defaults (peer0, peer24)
# and from the node e2e ones (shimne0, ctrne0; 10.77, 10.78).
declare -A peer_bridge=([1.6]=bpeer0 [2.4]=bpeer24)
declare -A peer_cidr=([1.6]=10.97.0.0/16 [2.4]=10.95.0.0/16)
declare -A peer_sub=([1.6]=peer16 [2.4]=peer24)
declare -A peer_pid=()
peers=()
for v in $PEERS; do
	[[ -n ${peer_bridge[$v]:-} ]] || {
		echo "bench.sh: BENCH_PEERS: unknown containerd version $v (want 1.6, 2.4)" >&2
		exit 2
	}
	for p in "${peers[@]}"; do
		[[ $p != "$v" ]] || { echo "bench.sh: BENCH_PEERS: $v twice" >&2; exit 2; }
	done
	peers+=("$v")
done
[[ ${#peers[@]} -gt 0 ]] || { echo "bench.sh: BENCH_PEERS is empty" >&2; exit 2; }
SHIM_BRIDGE=shimb0
SHIM_CIDR=10.94.0.0/16
SHIM_TABLE=shimbench

# Names that exist already belong to another run (or a crashed one): never
# share or delete them.
needed_bridges=("$SHIM_BRIDGE")
for v in "${peers[@]}"; do needed_bridges+=("${peer_bridge[$v]}"); done
for br in "${needed_bridges[@]}"; do
	if ip link show "$br" >/dev/null 2>&1; then
		echo "bench.sh: bridge $br exists: another hack/bench.sh runs, or a crashed one left it (ip link delete $br)" >&2
		exit 1
	fi
done
if nft list table ip "$SHIM_TABLE" >/dev/null 2>&1; then
	echo "bench.sh: nft table ip $SHIM_TABLE exists: another hack/bench.sh runs, or a crashed one left it (nft delete table ip $SHIM_TABLE)" >&2
	exit 1
fi

work=$(mktemp -d /tmp/shim-bench.XXXXXX)
shim_sock=$work/shim.sock
shim_pid=
started_registry=
started_peers=()
started_shim=
status=0

peer_dir() { echo "$work/${peer_sub[$1]}"; }
peer_sock() { echo "$(peer_dir "$1")/containerd/containerd.sock"; }

# peer VERSION start|stop: hack/peer/containerd.sh with this run's settings.
peer() {
	PEER_VERSION=$1 PEER_DIR=$(peer_dir "$1") PEER_BRIDGE=${peer_bridge[$1]} PEER_CIDR=${peer_cidr[$1]} \
		PEER_SANDBOX_IMAGE=$PAUSE_IMAGE PEER_EXTRA_HANDLERS='' hack/peer/containerd.sh "$1" "$2"
}

crictl_bin() {
	if [[ -x $ROOT/_output/bin/crictl ]]; then
		echo "$ROOT/_output/bin/crictl"
	else
		command -v crictl
	fi
}

# mounts_under prints the mount points below $1, deepest first.
mounts_under() {
	awk -v d="$1/" 'index($5, d) == 1 { print $5 }' /proc/self/mountinfo | sort -r
}

# kill_our_shim_procs kills what still runs our private copies of shim
# (monitors a stopped daemon left behind).
kill_our_shim_procs() {
	local p exe
	for p in /proc/[0-9]*; do
		exe=$(readlink "$p/exe" 2>/dev/null) || continue
		case $exe in
		"$work/shim" | "$work/shim (deleted)" | "$work/shim-state/"*) kill -KILL "${p#/proc/}" 2>/dev/null ;;
		esac
	done
}

cleanup() {
	status=$?
	set +e
	if [[ -n $shim_pid ]] && kill -0 "$shim_pid" 2>/dev/null; then
		# Pods a failed or interrupted run left, removed through the CRI.
		if c=$(crictl_bin); then
			"$c" --runtime-endpoint "unix://$shim_sock" --image-endpoint "unix://$shim_sock" --timeout 60s \
				rmp --force --all >/dev/null 2>&1
		fi
		kill -TERM "$shim_pid"
		wait "$shim_pid"
	fi
	[[ -n $started_shim ]] && kill_our_shim_procs
	# containerd.sh stop removes the peer's pods, stops it and its runc
	# shims, unmounts what is under its directory and deletes its bridge.
	for v in "${started_peers[@]}"; do
		peer "$v" stop >/dev/null
	done
	[[ -n $started_registry ]] && hack/registry.sh stop "$REGISTRY_PORT" >/dev/null
	for m in $(mounts_under "$work"); do umount -l "$m"; done
	if [[ -n $started_shim ]]; then
		ip link delete "$SHIM_BRIDGE" 2>/dev/null
		nft delete table ip "$SHIM_TABLE" 2>/dev/null
	fi
	if [[ $status -ne 0 ]]; then
		echo "bench.sh: FAILED (status $status); logs kept in $work" >&2
		tail -n 20 "$work/shim.log" 2>/dev/null >&2
	elif [[ -n ${BENCH_KEEP:-} ]]; then
		echo "bench.sh: work directory kept: $work"
	elif [[ -n $(mounts_under "$work") ]]; then
		# Never rm -rf through a mount.
		echo "bench.sh: mounts remain under $work; not removing it" >&2
	else
		rm -rf "$work"
	fi
	exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

if ! hack/registry.sh status "$REGISTRY_PORT" >/dev/null 2>&1; then
	started_registry=1
	hack/registry.sh start "$REGISTRY_PORT"
fi
echo "bench.sh: building and pushing test images"
go run ./hack/testimages --registry "127.0.0.1:$REGISTRY_PORT" >"$work/images.log"

echo "bench.sh: building shim and bench"
if ! make build >"$work/build.log" 2>&1; then
	# Others may be mid-change; an earlier bin/shim still measures.
	[[ -x bin/shim ]] || { cat "$work/build.log" >&2; exit 1; }
	echo "bench.sh: warning: make build failed (see $work/build.log); measuring the existing bin/shim" >&2
fi
go build -o "$work/bench" ./hack/bench
# A private copy: another build of bin/shim cannot change it under the run,
# and its path tells our shim's processes from anyone else's.
cp bin/shim "$work/shim"
printf '%s\n' "# hack/bench.sh: a network of its own, removed at the end." "[network]" \
	"bridge = \"$SHIM_BRIDGE\"" "pod_cidr = \"$SHIM_CIDR\"" "nft_table = \"$SHIM_TABLE\"" \
	'veth_prefix = "shb"' >"$work/shim.toml"

peer_args=()
for v in "${peers[@]}"; do
	started_peers+=("$v") # stopped (its leftovers removed) even if start fails half-way
	peer "$v" start
	peer_pid[$v]=$(<"$(peer_dir "$v")/containerd.pid")
	# memory: containerd's own processes are the runc shims whose command
	# line names this peer's socket (-address, in 1.6 and 2.4 alike) and
	# the pause processes under them.
	peer_args+=(-compare "unix://$(peer_sock "$v")" -name-b "containerd $v" -daemon-pid-b "${peer_pid[$v]}"
		-runtime-procs-b containerd-shim-runc-v2,pause -proc-match-b "$(peer_sock "$v")")
done

started_shim=1
"$work/shim" serve --config "$work/shim.toml" --root "$work/shim-root" --state "$work/shim-state" \
	--listen "unix://$shim_sock" --registry-config "$ROOT/hack/certs.d" --log-level info \
	>"$work/shim.log" 2>&1 &
shim_pid=$!
for _ in $(seq 100); do [[ -S $shim_sock ]] && break; sleep 0.1; done
[[ -S $shim_sock ]] || { echo "bench.sh: shim did not start" >&2; exit 1; }
echo "bench.sh: shim pid $shim_pid on unix://$shim_sock"
for v in "${peers[@]}"; do
	echo "bench.sh: containerd $v pid ${peer_pid[$v]} on unix://$(peer_sock "$v")"
done

# Monitors run the lean runtime binary the daemon unpacked into its state.
shim_procs="$work/shim,shim"
for f in "$work"/shim-state/bin/shim-runtime-*; do [[ -e $f ]] && shim_procs+=",$f"; done

bench() {
	"$work/bench" -endpoint "unix://$shim_sock" -name shim -daemon-pid "$shim_pid" \
		-runtime-procs "$shim_procs" -proc-match "$work" \
		"${peer_args[@]}" -pause-image "$PAUSE_IMAGE" -log-root "$work/pod-logs" "$@"
}

results=$work/results.jsonl
printf '{"type":"host","time":"%s","nproc":%d,"kernel":"%s","git":"%s","peers":"%s"}\n' \
	"$(date -u +%Y-%m-%dT%H:%M:%SZ)" "$(nproc)" "$(uname -r)" \
	"$(git describe --tags --always --dirty 2>/dev/null || echo unknown)" "${peers[*]}" >"$results"
skipped=()
failed=()
for mode in $MODES; do
	args=()
	case $mode in
	idle) sleep 2; args=(-n 5) ;; # the daemons just started, nothing pulled yet
	rss-after) sleep 2; args=(-n 5) ;; # after every other mode, their pods removed
	pull) args=(-n "$N" -image "$IMAGE") ;;
	start | start-shared-pid) args=(-n "$N") ;;
	concurrent) args=(-n "$N_SLOW" -pods "$PODS_CONCURRENT") ;;
	memory) args=(-n "$N_SLOW" -pods "$PODS_MEMORY") ;;
	stats) args=(-n "$N_SLOW" -pods "${BENCH_PODS_STATS:-100}" -window "${BENCH_STATS_WINDOW:-60s}") ;;
	exec | exec-stream) args=(-n "$N_EXEC") ;;
	stream-throughput) args=(-n "$N") ;;
	*) echo "bench.sh: unknown mode $mode" >&2; exit 2 ;;
	esac
	echo "bench.sh: mode $mode"
	rc=0
	bench -mode "$mode" "${args[@]}" >>"$results" 2>"$work/bench-$mode.log" || rc=$?
	case $rc in
	0) ;;
	3)
		skipped+=("$mode: $(tail -n 1 "$work/bench-$mode.log")")
		echo "bench.sh: $mode skipped: $(tail -n 1 "$work/bench-$mode.log")"
		;;
	*)
		# The other modes still run; the run fails at the end.
		failed+=("$mode")
		echo "bench.sh: $mode FAILED (exit $rc):" >&2
		tail -n 20 "$work/bench-$mode.log" >&2
		;;
	esac
done

mkdir -p hack/bench/results
out=hack/bench/results/$(date -u +%Y-%m-%dT%H%M%SZ).json
names=
for v in "${peers[@]}"; do names+="${names:+, }containerd $v"; done
echo
echo "## shim / $names, $(date -u +%Y-%m-%d) on $(nproc) CPUs"
echo
# With every mode failed there is nothing to tabulate.
"$work/bench" -report "$results" -json "$out" || [[ ${#failed[@]} -gt 0 ]]
if [[ ${#skipped[@]} -gt 0 ]]; then
	echo
	for s in "${skipped[@]}"; do
		echo "- not measured (Unimplemented): $s"
	done
fi
echo
echo "bench.sh: results written to $out"
if [[ ${#failed[@]} -gt 0 ]]; then
	echo "bench.sh: modes that failed: ${failed[*]} (logs in $work)" >&2
	exit 1
fi
