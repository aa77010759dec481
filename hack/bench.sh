#!/usr/bin/env bash
# hack/bench.sh: measure shim against containerd (the peer) in one run.
#
# Starts the loopback registry (unless it runs) and pushes the test images,
# starts a fresh containerd peer (hack/peer/containerd.sh) and a fresh shim
# (bin/shim serve on temporary root/state, --registry-config hack/certs.d),
# runs every hack/bench mode against both with alternating rounds (shim,
# containerd, shim, ...), writes every record to
# hack/bench/results/<UTC date>.json and prints a markdown table of the
# ratios shim/containerd. Stops what it started.
#
# Modes that need the CRI RuntimeService (start, concurrent, memory) are
# reported as skipped while shim answers them with Unimplemented.
#
# Environment:
#   BENCH_MODES  modes in order (default "idle pull start concurrent memory
#                exec exec-stream stream-throughput"; idle runs first, on
#                freshly started daemons)
#   BENCH_N      rounds per runtime for pull, start and stream-throughput (default 10)
#   BENCH_N_SLOW rounds per runtime for concurrent and memory (default 3)
#   BENCH_N_EXEC rounds per runtime for exec and exec-stream (default 50)
#   BENCH_PODS_CONCURRENT (default 50), BENCH_PODS_MEMORY (default 10)
#   BENCH_PODS_STATS (default 100), BENCH_STATS_WINDOW (default 60s): the
#                stats mode (not in the default list: BENCH_MODES=stats);
#                it runs BENCH_N_SLOW rounds of two windows per runtime
#   BENCH_IMAGE  pull image (default shim-test/bench:8x4m: 8 layers x 4 MiB)
#   BENCH_KEEP=1 keep the work directory
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD

MODES=${BENCH_MODES:-idle pull start concurrent memory exec exec-stream stream-throughput}
N=${BENCH_N:-10}
N_SLOW=${BENCH_N_SLOW:-3}
N_EXEC=${BENCH_N_EXEC:-50}
PODS_CONCURRENT=${BENCH_PODS_CONCURRENT:-50}
PODS_MEMORY=${BENCH_PODS_MEMORY:-10}
IMAGE=${BENCH_IMAGE:-shim-test/bench:8x4m}
REGISTRY_PORT=5000

work=$(mktemp -d /tmp/shim-bench.XXXXXX)
# The peer gets its own directory, bridge and CIDR, so it cannot collide
# with a containerd someone runs from /tmp/peer.
export PEER_DIR=$work/peer
export PEER_BRIDGE=${PEER_BRIDGE:-bpeer0}
export PEER_CIDR=${PEER_CIDR:-10.97.0.0/16}
shim_sock=$work/shim.sock
peer_sock=$PEER_DIR/containerd/containerd.sock
shim_pid=
started_registry=
started_peer=
status=0

# mounts_under prints the mount points below $1, deepest first.
mounts_under() {
	awk -v d="$1/" 'index($5, d) == 1 { print $5 }' /proc/self/mountinfo | sort -r
}

cleanup() {
	status=$?
	set +e
	if [[ -n $shim_pid ]] && kill -0 "$shim_pid" 2>/dev/null; then
		kill -TERM "$shim_pid"
		wait "$shim_pid"
	fi
	[[ -n $started_peer ]] && hack/peer/containerd.sh stop >/dev/null
	[[ -n $started_registry ]] && hack/registry.sh stop "$REGISTRY_PORT" >/dev/null
	for m in $(mounts_under "$work"); do umount -l "$m"; done
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
	hack/registry.sh start "$REGISTRY_PORT"
	started_registry=1
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
: >"$work/shim.toml"

hack/peer/containerd.sh start
started_peer=1
peer_pid=$(<"$PEER_DIR/containerd.pid")

"$work/shim" serve --config "$work/shim.toml" --root "$work/shim-root" --state "$work/shim-state" \
	--listen "unix://$shim_sock" --registry-config "$ROOT/hack/certs.d" --log-level info \
	>"$work/shim.log" 2>&1 &
shim_pid=$!
for _ in $(seq 100); do [[ -S $shim_sock ]] && break; sleep 0.1; done
[[ -S $shim_sock ]] || { echo "bench.sh: shim did not start" >&2; exit 1; }
echo "bench.sh: shim pid $shim_pid on unix://$shim_sock; containerd pid $peer_pid on unix://$peer_sock"

# Monitors run the lean runtime binary the daemon unpacked into its state.
shim_procs="$work/shim,shim"
for f in "$work"/shim-state/bin/shim-runtime-*; do [[ -e $f ]] && shim_procs+=",$f"; done

bench() {
	"$work/bench" -endpoint "unix://$shim_sock" -name shim -daemon-pid "$shim_pid" \
		-runtime-procs "$shim_procs" -proc-match "$work" \
		-compare "unix://$peer_sock" -name-b containerd -daemon-pid-b "$peer_pid" \
		-runtime-procs-b containerd-shim-runc-v2,pause -proc-match-b "$peer_sock" \
		-log-root "$work/pod-logs" "$@"
}

results=$work/results.jsonl
printf '{"type":"host","time":"%s","nproc":%d,"kernel":"%s","git":"%s"}\n' \
	"$(date -u +%Y-%m-%dT%H:%M:%SZ)" "$(nproc)" "$(uname -r)" \
	"$(git describe --tags --always --dirty 2>/dev/null || echo unknown)" >"$results"
skipped=()
for mode in $MODES; do
	args=()
	case $mode in
	idle) sleep 2; args=(-n 5) ;; # both daemons just started, nothing pulled yet
	pull) args=(-n "$N" -image "$IMAGE") ;;
	start) args=(-n "$N") ;;
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
		skipped+=("$mode")
		echo "bench.sh: $mode skipped: $(tail -n 1 "$work/bench-$mode.log")"
		;;
	*)
		cat "$work/bench-$mode.log" >&2
		exit "$rc"
		;;
	esac
done

mkdir -p hack/bench/results
out=hack/bench/results/$(date -u +%Y-%m-%dT%H%M%SZ).json
echo
echo "## shim / containerd, $(date -u +%Y-%m-%d) on $(nproc) CPUs"
echo
"$work/bench" -report "$results" -json "$out"
if [[ ${#skipped[@]} -gt 0 ]]; then
	echo
	for mode in "${skipped[@]}"; do
		echo "- $mode: not measured: shim does not implement the RuntimeService yet (issue 4)"
	done
fi
echo
echo "bench.sh: results written to $out"
