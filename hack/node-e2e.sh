#!/usr/bin/env bash
# hack/node-e2e.sh: Kubernetes' node e2e suite (k8s.io/kubernetes test/e2e_node,
# the version in hack/k8s/go.mod) against shim, or against containerd 2.4 for
# comparison. The suite starts etcd and an API server in-process and a real
# kubelet on this host; pods go through the API. docs/conformance.md has the
# results.
#
#   hack/node-e2e.sh                   every [NodeConformance] spec outside
#                                      [Serial], [Slow], [Flaky], [Disruptive]
#   NODE_E2E_SUBSET=ci hack/node-e2e.sh    the fixed CI subset (hack/node-e2e/ci-focus)
#   NODE_E2E_SUBSET=eviction hack/node-e2e.sh  kubelet evicts pods over their
#                                      ephemeral-storage limits (stats from the runtime)
#   NODE_E2E_RUNTIME=containerd hack/node-e2e.sh   the same against containerd 2.4
#
# Environment:
#   NODE_E2E_RUNTIME   shim (default) or containerd
#   NODE_E2E_SUBSET    empty (all NodeConformance), ci, or eviction (the
#                      [Serial] spec LocalStorageCapacityIsolationEviction:
#                      pods over their ephemeral-storage limit are evicted)
#   NODE_E2E_FOCUS     a ginkgo focus regexp instead (specs still outside the
#                      skips and labelled NodeConformance)
#   NODE_E2E_SKIP      extra ginkgo skip regexp
#   NODE_E2E_PROCS     ginkgo processes (default 3: most specs wait on timers)
#   NODE_E2E_REPORT    where to keep the report (junit, logs); default under
#                      the work dir, which is kept when the run fails
#   NODE_E2E_TIMEOUT   the whole suite's ginkgo timeout (default 4h)
#
# What it does: builds kubelet, e2e_node.test and ginkgo (hack/k8s, cached in
# _output/bin), bin/shim or containerd 2.4 (hack/peer/build.sh); starts the
# loopback registry and pushes the test images (hack/testimages: agnhost is
# our stand-in); then, in a private mount namespace, bind-mounts stand-ins
# over /usr/bin/systemd-run and /usr/bin/systemctl (hack/node-e2e/: systemd
# is installed here but not running, and the suite starts kubelet through
# systemd-run), gives kubelet private /var/lib/kubelet and /var/log/pods,
# starts the runtime on its own directories and network (shim: bridge
# shimne0, 10.77.0.0/16, nft table shimne; containerd: bridge ctrne0,
# 10.78.0.0/16), pulls the images the suite expects on the node, and runs
# the suite with ginkgo. kubelet uses the default ports (10250, 10248, 10255)
# and cgroup root / (kubepods). Heavy: run it under /tmp/shim-heavy.lock.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD

RUNTIME=${NODE_E2E_RUNTIME:-shim}
SUBSET=${NODE_E2E_SUBSET:-}
PROCS=${NODE_E2E_PROCS:-3}
TIMEOUT=${NODE_E2E_TIMEOUT:-4h}
GINKGO_VERSION=v2.32.0 # the one k8s.io/kubernetes v1.37.2 requires
BIN=$ROOT/_output/bin
SKIP_ALWAYS='\[Serial\]|\[Slow\]|\[Flaky\]|\[Disruptive\]'

case $RUNTIME in
shim | containerd) ;;
*) echo "node-e2e: NODE_E2E_RUNTIME must be shim or containerd, not $RUNTIME" >&2; exit 2 ;;
esac

log() { echo "node-e2e: $*"; }

# The images the suite expects on the node before it starts (its own
# prepull list, test/e2e_node/image_list.go and test/e2e/common/util.go),
# as far as this machine can serve them; the rest are listed, with the
# reason, in docs/conformance.md.
PREPULL=(
	registry.k8s.io/e2e-test-images/agnhost:2.55
	registry.k8s.io/e2e-test-images/agnhost:2.66.1
	registry.k8s.io/e2e-test-images/busybox:1.37.0-2
	registry.k8s.io/e2e-test-images/nginx:1.27.0-2
	registry.k8s.io/e2e-test-images/nonewprivs:1.4
	registry.k8s.io/e2e-test-images/nonroot:1.5
	registry.k8s.io/e2e-test-images/ipc-utils:1.4
	registry.k8s.io/e2e-test-images/glibc-dns-testing:2.1.1
	registry.k8s.io/pause:3.10.2
)

# ---------------------------------------------------------------------------
# Inside the private mount namespace (re-executed by the outer part below).
inner() {
	local work=$NODE_E2E_WORK
	local report=$NODE_E2E_REPORT_DIR
	mount --make-rshared /

	# Stand-ins for systemd (hack/node-e2e/systemd-run, systemctl) and sudo.
	export NODE_E2E_UNITS=$work/units
	mkdir -p "$NODE_E2E_UNITS" "$work/bin"
	mount --bind "$ROOT/hack/node-e2e/systemd-run" /usr/bin/systemd-run
	mount --bind "$ROOT/hack/node-e2e/systemctl" /usr/bin/systemctl
	cp "$ROOT/hack/node-e2e/sudo" "$work/bin/sudo"
	export PATH=$work/bin:$PATH

	# kubelet's directories, private to this run. Its root directory is a
	# filesystem of its own on a loop device (a sparse file): kubelet's
	# cAdvisor must map that directory to a block device it finds in
	# mountinfo, and it cannot map this host's root (/dev/vda), so without
	# it /stats/summary fails and the eviction manager does nothing.
	mkdir -p "$work/var-log-pods" "$work/var-log-containers"
	truncate -s 16G "$work/kubelet-fs.img"
	mkfs.ext4 -q -F "$work/kubelet-fs.img"
	mount -o loop "$work/kubelet-fs.img" /var/lib/kubelet
	mount --bind "$work/var-log-pods" /var/log/pods
	mount --bind "$work/var-log-containers" /var/log/containers

	# Globals: the EXIT trap (stop_all) runs after this function returns.
	case $RUNTIME in
	shim)
		sock=$work/shim/shim.sock
		pidfile=$work/shim/shim.pid
		procname=shim
		mkdir -p "$work/shim"
		cat >"$work/shim/config.toml" <<EOF
# hack/node-e2e.sh: shim for the node e2e suite, apart from hack/e2e.sh's.
root = "$work/shim/root"
state = "$work/shim/state"
listen = "unix://$sock"
log_level = "debug"
[image]
registry_config = "$ROOT/hack/certs.d"
sandbox_image = "registry.k8s.io/pause:3.10.2"
[network]
bridge = "shimne0"
pod_cidr = "10.77.0.0/16"
nft_table = "shimne"
veth_prefix = "shne"
# The RuntimeClass handler the suite expects to be configured
# (e2eruntimeclass.PreconfiguredRuntimeClassHandler).
[runtime.handlers.test-handler]
binary = "native"
EOF
		setsid "$ROOT/bin/shim" serve --config "$work/shim/config.toml" </dev/null >"$report/shim.log" 2>&1 &
		echo $! >"$pidfile"
		;;
	containerd)
		export PEER_VERSION=2.4 PEER_DIR=$work/containerd PEER_BRIDGE=ctrne0 PEER_CIDR=10.78.0.0/16
		export PEER_EXTRA_HANDLERS=test-handler
		sock=$PEER_DIR/containerd/containerd.sock
		pidfile=$PEER_DIR/containerd.pid
		procname=containerd
		"$ROOT/hack/peer/containerd.sh" start
		;;
	esac
	crictl() { "$BIN/crictl" --runtime-endpoint "unix://$sock" --image-endpoint "unix://$sock" --timeout 120s "$@"; }
	local i
	for ((i = 0; i < 300; i++)); do
		crictl version >/dev/null 2>&1 && break
		sleep 0.1
	done
	crictl version

	stop_all() {
		set +e
		local u
		for u in "$NODE_E2E_UNITS"/*/; do
			[[ -d $u ]] && /usr/bin/systemctl stop "$(basename "$u")"
		done
		crictl rmp -fa >/dev/null 2>&1
		case $RUNTIME in
		shim)
			kill -TERM "$(<"$pidfile")" 2>/dev/null
			for ((i = 0; i < 300; i++)); do kill -0 "$(<"$pidfile")" 2>/dev/null || break; sleep 0.1; done
			ip link delete shimne0 2>/dev/null
			nft delete table ip shimne 2>/dev/null
			;;
		containerd) "$ROOT/hack/peer/containerd.sh" stop ;;
		esac
		# Anything else still in this mount namespace was started by this
		# run and has outlived it: say so, and end it. What is still mounted
		# (kubelet volumes) goes with the namespace.
		local me p
		me=$(readlink /proc/self/ns/mnt)
		for p in /proc/[0-9]*; do
			p=${p#/proc/}
			[[ $p == "$$" || $p == "$BASHPID" ]] && continue
			[[ $(readlink "/proc/$p/ns/mnt" 2>/dev/null) == "$me" ]] || continue
			log "left running after the run: pid $p: $(tr '\0' ' ' <"/proc/$p/cmdline" 2>/dev/null | cut -c1-200)"
			kill -KILL "$p" 2>/dev/null
		done
	}
	trap stop_all EXIT

	log "pulling the images the suite expects on the node"
	local img
	for img in "${PREPULL[@]}"; do
		crictl pull "$img" >/dev/null
	done

	# The base kubelet configuration; the suite adds its own settings
	# (authentication, static pod dir, ports, feature gates).
	cat >"$work/kubelet-base.yaml" <<EOF
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
cgroupDriver: cgroupfs
cgroupRoot: /
# This host: cgroup v1 (hybrid), swap allowed.
failCgroupV1: false
failSwapOn: false
podCIDR: "10.77.0.0/24"
volumeStatsAggPeriod: 10s
fileCheckFrequency: 10s
evictionPressureTransitionPeriod: 30s
evictionHard:
  memory.available: 250Mi
  nodefs.available: 10%
  nodefs.inodesFree: 5%
evictionMinimumReclaim:
  nodefs.available: 5%
  nodefs.inodesFree: 5%
serializeImagePulls: false
EOF

	local focus skip labels=NodeConformance procs=$PROCS
	skip=$SKIP_ALWAYS
	[[ -n ${NODE_E2E_SKIP:-} ]] && skip="$skip|$NODE_E2E_SKIP"
	if [[ -n ${NODE_E2E_FOCUS:-} ]]; then
		focus=$NODE_E2E_FOCUS
	elif [[ $SUBSET == eviction ]]; then
		# [Serial]: one process; it restarts kubelet with its own
		# eviction thresholds (the systemctl stand-in).
		focus='LocalStorageCapacityIsolationEviction'
		skip='\[Flaky\]'
		labels='Feature:Eviction'
		procs=1
	elif [[ $SUBSET == ci ]]; then
		focus=$(grep -v '^#' "$ROOT/hack/node-e2e/ci-focus" | sed '/^$/d' | paste -sd '|')
	else
		focus='\[NodeConformance\]'
	fi
	log "runtime $RUNTIME, $procs ginkgo processes, focus ${focus:0:120}..."
	# ginkgo runs the suite in the directory of its binary, and the suite
	# writes kubelet's kubeconfig, config and static pod dirs into its
	# working directory, and finds kubelet next to itself: give it its own.
	mkdir -p "$work/k8s"
	ln -sf "$BIN/e2e_node.test" "$BIN/kubelet" "$work/k8s/"
	cd "$work"
	local status=0
	# The label filter keeps a focus (the CI subset's lines, NODE_E2E_FOCUS)
	# to NodeConformance specs: a focus alone would also pick alpha-feature
	# and [Feature:...] specs whose text matches.
	"$BIN/ginkgo" --procs="$procs" --timeout="$TIMEOUT" --no-color --poll-progress-after=10m \
		--focus="$focus" --skip="$skip" --label-filter="$labels" \
		--output-dir="$report" --junit-report=junit.xml --json-report=report.json \
		"$work/k8s/e2e_node.test" -- \
		--container-runtime-endpoint="unix://$sock" --image-service-endpoint="unix://$sock" \
		--container-runtime-process-name="$procname" --container-runtime-pid-file="$pidfile" \
		--kubelet-config-file="$work/kubelet-base.yaml" \
		--kubelet-flags="--cgroup-driver=cgroupfs --fail-swap-on=false --fail-cgroupv1=false" \
		--prepull-images=false \
		--report-dir="$report" \
		>"$report/ginkgo.log" 2>&1 || status=$?
	return "$status"
}

if [[ ${1:-} == --inner ]]; then
	inner
	exit
fi

# ---------------------------------------------------------------------------
# Outside: build, images, then the namespace.
[[ $(id -u) == 0 ]] || { echo "node-e2e: needs root" >&2; exit 1; }
t0=$SECONDS
[[ -x $BIN/crictl ]] || hack/install-deps.sh
hack/k8s/build.sh all
if [[ ! -x $BIN/ginkgo || $(cat "$BIN/.ginkgo" 2>/dev/null) != "$GINKGO_VERSION" ]]; then
	log "building ginkgo $GINKGO_VERSION"
	(cd /tmp && GOBIN=$BIN go install "github.com/onsi/ginkgo/v2/ginkgo@$GINKGO_VERSION")
	echo "$GINKGO_VERSION" >"$BIN/.ginkgo"
fi
case $RUNTIME in
shim) make build >/dev/null ;;
containerd) hack/peer/build.sh >/dev/null ;;
esac
hack/registry.sh start
log "building and pushing the test images"
go run ./hack/testimages --registry 127.0.0.1:5000 >/dev/null
log "builds and images ready after $((SECONDS - t0))s"

work=$(mktemp -d /tmp/shim-node-e2e.XXXXXX)
# Searchable by others, as /var/lib is: the runtimes' dirs are below it, and
# a container's root in a user namespace (hostUsers: false) must reach its
# rootfs there.
chmod 0711 "$work"
report=${NODE_E2E_REPORT:-$work/report}
mkdir -p "$report"
report=$(cd "$report" && pwd)
# Mount points for kubelet's private directories (left empty on the host).
made=()
for d in /var/lib/kubelet /var/log/pods /var/log/containers; do
	if [[ ! -e $d ]]; then
		mkdir -p "$d"
		made+=("$d")
	fi
done
cleanup() {
	local d
	for d in "${made[@]}"; do rmdir "$d" 2>/dev/null || true; done
}
trap cleanup EXIT

t1=$SECONDS
status=0
NODE_E2E_WORK=$work NODE_E2E_REPORT_DIR=$report NODE_E2E_RUNTIME=$RUNTIME NODE_E2E_SUBSET=$SUBSET \
	unshare --mount --propagation private "$0" --inner || status=$?
log "suite ran $((SECONDS - t1))s (total $((SECONDS - t0))s), exit status $status"

# Counts and every failed and skipped spec, from ginkgo's JSON report.
if [[ -f $report/report.json ]]; then
	go run ./hack/node-e2e/report --runtime "$RUNTIME" --tsv "$report/specs.tsv" "$report/report.json" |
		tee "$report/summary.txt"
else
	log "no ginkgo report; last lines of $report/ginkgo.log:"
	tail -n 40 "$report/ginkgo.log" 2>/dev/null || true
	status=1
fi
if [[ $status -eq 0 ]]; then
	# Keep the report, drop the rest (kubelet's and the runtime's dirs).
	find "$work" -mindepth 1 -maxdepth 1 ! -path "$report" -exec rm -rf {} +
	rmdir "$work" 2>/dev/null || true
	log "ok: report in $report"
else
	log "FAILED: report and logs in $report (work dir $work)"
fi
exit "$status"
