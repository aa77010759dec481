#!/usr/bin/env bash
# End-to-end run: a loopback registry with the test images, a shim on
# temporary directories, crictl smoke checks and critest.
#
# CRITEST_FOCUS / CRITEST_SKIP override the critest selection; CRICTL /
# CRITEST name other binaries than _output/bin's.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
CRICTL=${CRICTL:-$ROOT/_output/bin/crictl}
CRITEST=${CRITEST:-$ROOT/_output/bin/critest}
# Every group. critest itself skips AppArmor where the host has none and
# registers SELinux only where the host has it. The digest-pinned image
# spec cannot pass offline: its digest is that of an image on gcr.io.
# Every skipped spec must be listed, with its reason, in
# hack/critest-skips.txt: a new skip fails the run.
CRITEST_FOCUS=${CRITEST_FOCUS:-''}
DEFAULT_SKIP='public image with digest should be pulled'
CRITEST_SKIP=${CRITEST_SKIP:-$DEFAULT_SKIP}

[ -x "$CRICTL" ] && [ -x "$CRITEST" ] || hack/install-deps.sh
[ -x bin/shim ] || make build

work=$(mktemp -d /tmp/shim-e2e.XXXXXX)
# The root of a container in a user namespace reaches its rootfs through
# the state dir like any other process (0711, as /run/shim).
chmod 0711 "$work"
sock=$work/shim.sock
shim_pid=
cleanup() {
	status=$?
	if [ -n "$shim_pid" ] && kill -0 "$shim_pid" 2>/dev/null; then
		"$CRICTL" --config "$work/crictl.yaml" rmp -fa >/dev/null 2>&1 || true
		kill -TERM "$shim_pid"; wait "$shim_pid" || true
	fi
	umount -l "$work/state/ns" 2>/dev/null || true
	if [ $status -ne 0 ]; then
		echo "e2e: FAILED; last lines of the shim log ($work/shim.log):"
		tail -n 60 "$work/shim.log" || true
	else
		rm -rf "$work"
	fi
	exit $status
}
trap cleanup EXIT

hack/registry.sh start
echo "e2e: building and pushing test images"
go run ./hack/testimages --registry 127.0.0.1:5000 >"$work/images.log"

bin/shim serve --root "$work/root" --state "$work/state" --listen "unix://$sock" \
	--registry-config "$ROOT/hack/certs.d" --log-level debug >"$work/shim.log" 2>&1 &
shim_pid=$!
for _ in $(seq 100); do [ -S "$sock" ] && break; sleep 0.1; done
[ -S "$sock" ] || { echo "e2e: shim did not start"; exit 1; }

cat >"$work/crictl.yaml" <<EOC
runtime-endpoint: unix://$sock
image-endpoint: unix://$sock
timeout: 60
EOC
crictl() { "$CRICTL" --config "$work/crictl.yaml" "$@"; }
# shows PATTERN CMD...: CMD succeeds and its output matches PATTERN. The
# output is read whole first: piping CMD into a quiet grep under pipefail fails when
# grep exits before CMD has written everything (SIGPIPE, status 141).
shows() {
	local pat=$1 out
	shift
	out=$("$@") || return
	grep -q -- "$pat" <<<"$out" || { echo "e2e: '$*' does not show '$pat'"; return 1; }
}

echo "e2e: crictl smoke"
shows 'RuntimeName:  shim' crictl version
crictl pull registry.k8s.io/e2e-test-images/busybox:1.29-2
crictl pull busybox
shows 'registry.k8s.io/e2e-test-images/busybox *1.29-2' crictl images
shows 'docker.io/library/busybox *latest' crictl images
shows '"chainID"' crictl inspecti busybox
[ "$(crictl images -q | sort -u | wc -l)" = 1 ] || { echo "two tags of one image are two images"; exit 1; }
crictl rmi busybox
[ -z "$(crictl images -q)" ] || { echo "rmi left images behind"; exit 1; }
crictl pull shim-test/zstd:1
shows succeeded bin/shim jobs --state "$work/state" --name pull

echo "e2e: a pod with a container"
cat >"$work/pod.json" <<EOC
{"metadata": {"name": "e2e", "namespace": "default", "uid": "e2e-uid"}, "hostname": "e2e-pod", "log_directory": "$work/logs",
 "linux": {"security_context": {"namespace_options": {"pid": 1}}}}
EOC
cat >"$work/ctr.json" <<EOC
{"metadata": {"name": "hello"}, "image": {"image": "busybox"}, "command": ["sh", "-c", "echo hello from shim; sleep 1000"], "log_path": "hello.log"}
EOC
crictl pull busybox
pod=$(crictl runp "$work/pod.json")
ctr=$(crictl create "$pod" "$work/ctr.json" "$work/pod.json")
crictl start "$ctr"
for _ in $(seq 50); do grep -q "hello from shim" "$work/logs/hello.log" 2>/dev/null && break; sleep 0.1; done
grep -q " stdout F hello from shim" "$work/logs/hello.log"
[ "$(crictl exec -s "$ctr" hostname)" = e2e-pod ] || { echo "pod hostname not set"; exit 1; }
crictl stop "$ctr"
crictl rm "$ctr"
crictl stopp "$pod"
crictl rmp "$pod"

echo "e2e: critest focus='$CRITEST_FOCUS' skip='$CRITEST_SKIP'"
"$CRITEST" --runtime-endpoint "unix://$sock" --image-endpoint "unix://$sock" \
	-ginkgo.focus="$CRITEST_FOCUS" -ginkgo.skip="$CRITEST_SKIP" -ginkgo.no-color \
	-ginkgo.junit-report="$work/critest.xml" 2>&1 | tee "$work/critest.log" | tail -n 30
grep -q '^SUCCESS!' "$work/critest.log" || { echo "e2e: critest failed"; exit 1; }

echo "e2e: critest skipped only the specs hack/critest-skips.txt lists"
if [ -z "$CRITEST_FOCUS" ] && [ "$CRITEST_SKIP" = "$DEFAULT_SKIP" ]; then
	go run ./hack/critest-skips -junit "$work/critest.xml" -list hack/critest-skips.txt
else
	echo "e2e: (not checked: CRITEST_FOCUS or CRITEST_SKIP is set)"
fi

echo "e2e: no pod or container left by critest"
left_pods=$(crictl pods -q) left_ctrs=$(crictl ps -aq)
if [ -n "$left_pods$left_ctrs" ]; then
	echo "e2e: critest left pods [$left_pods] and containers [$left_ctrs] behind:"
	crictl pods || true
	crictl ps -a || true
	exit 1
fi

echo "e2e: SIGTERM shuts shim down cleanly"
kill -TERM "$shim_pid"
wait "$shim_pid"
shim_pid=
grep -q 'shim stopped' "$work/shim.log"
[ ! -S "$sock" ]

echo "e2e: containerd runs a pod through shim oci"
SHIM_BIN="$ROOT/bin/shim" EXPECT_LEAN=1 CRICTL="$CRICTL" hack/oci-e2e.sh
echo "e2e: ok"
