#!/usr/bin/env bash
# hack/oci-e2e.sh: containerd + `shim oci` end to end.
#
# Starts Debian's containerd 1.6 with its CRI plugin, whose runc v2 shim
# (io.containerd.runc.v2) has BinaryName pointing at a wrapper that execs
# `shim oci "$@"`, then runs a busybox pod and container through crictl and
# checks: the container runs and logs, exec works, the pod and container are
# in shim's state dir (made by `shim oci create`), stop and removal work and
# leave nothing in shim's state. Everything lives under $E2E_DIR (default
# /tmp/shim-oci-e2e) and is torn down at exit.
#
# Needs root, containerd, the loopback registry with the test images
# (hack/registry.sh start; go run ./hack/testimages --registry 127.0.0.1:5000)
# and crictl (hack/install-deps.sh builds it into _output/bin).
# Environment: E2E_DIR, SHIM_BIN (prebuilt shim), EXPECT_LEAN (1: SHIM_BIN
# is `make build`'s, check the hand-over to the lean binary), CONTAINERD, CRICTL,
# BUSYBOX_IMAGE, KEEP=1 (leave the dir for inspection).
set -euo pipefail

repo=$(cd "$(dirname "$0")/.." && pwd)
dir=${E2E_DIR:-/tmp/shim-oci-e2e}
containerd_bin=${CONTAINERD:-/usr/bin/containerd}
image=${BUSYBOX_IMAGE:-registry.k8s.io/e2e-test-images/busybox:1.29-2}
sock=$dir/containerd.sock
bridge=shimoci0
cidr=10.98.0.0/16

[[ $(id -u) == 0 ]] || { echo "oci-e2e: needs root" >&2; exit 2; }
crictl=${CRICTL:-$repo/_output/bin/crictl}
[[ -x $crictl ]] || crictl=$(command -v crictl || true)
[[ -n $crictl && -x $crictl ]] || { echo "oci-e2e: crictl not found (run hack/install-deps.sh)" >&2; exit 2; }
curl -fsS -o /dev/null --max-time 2 http://127.0.0.1:5000/v2/ ||
	{ echo "oci-e2e: no registry on 127.0.0.1:5000 (hack/registry.sh start; go run ./hack/testimages --registry 127.0.0.1:5000)" >&2; exit 2; }

cri() { "$crictl" --runtime-endpoint "unix://$sock" --image-endpoint "unix://$sock" --timeout 60s "$@"; }
fail() {
	echo "oci-e2e: FAIL: $*" >&2
	[[ -f $dir/containerd.log ]] && tail -n 20 "$dir/containerd.log" >&2
	exit 1
}

cdpid=""
cleanup() {
	set +e
	if [[ -n $cdpid ]] && kill -0 "$cdpid" 2>/dev/null; then
		cri rmp --force --all >/dev/null 2>&1
		kill -TERM "$cdpid"
		for _ in $(seq 50); do kill -0 "$cdpid" 2>/dev/null || break; sleep 0.1; done
		kill -KILL "$cdpid" 2>/dev/null
	fi
	# the runc v2 shims serving our containerd (their command line names our socket)
	for p in /proc/[0-9]*; do
		[[ $(readlink "$p/exe" 2>/dev/null) == */containerd-shim-runc-v2 ]] || continue
		[[ $(tr '\0' ' ' <"$p/cmdline" 2>/dev/null) == *"-address $sock "* ]] && kill -KILL "${p#/proc/}"
	done
	awk -v d="$dir/" 'index($5, d) == 1 { print $5 }' /proc/self/mountinfo | sort -r |
		while read -r m; do umount -l "$m" 2>/dev/null; done
	ip link delete "$bridge" 2>/dev/null
	[[ ${KEEP:-0} == 1 ]] || rm -rf "$dir"
}
trap cleanup EXIT

case $dir in /tmp/?*) ;; *) [[ -n ${E2E_DIR:-} ]] || { echo "oci-e2e: refusing dir $dir" >&2; exit 2; } ;; esac
rm -rf "$dir"
mkdir -p "$dir/root" "$dir/state" "$dir/cni/net.d" "$dir/cni/ipam" "$dir/oci-root" "$dir/bin" "$dir/logs"

shim=${SHIM_BIN:-}
if [[ -z $shim ]]; then
	shim=$dir/bin/shim
	if ! (cd "$repo" && go build -o "$shim" ./cmd/shim) 2>"$dir/build.err"; then
		echo "oci-e2e: cmd/shim does not build; using test/oci/shimbin (same oci/init commands)" >&2
		(cd "$repo" && go build -o "$shim" ./test/oci/shimbin)
	fi
fi
# The wrapper containerd's shim runs as its "runc"; it logs every call.
cat >"$dir/bin/shim-runc" <<WRAP
#!/bin/sh
echo "\$*" >>"$dir/calls.log"
exec "$shim" oci "\$@"
WRAP
chmod +x "$dir/bin/shim-runc"
cp -r "$repo/hack/certs.d" "$dir/certs.d"

cat >"$dir/cni/net.d/10-shimoci.conflist" <<CNI
{
  "cniVersion": "1.0.0",
  "name": "shimoci",
  "plugins": [
    { "type": "bridge", "bridge": "$bridge", "isGateway": true, "ipMasq": true,
      "ipam": { "type": "host-local", "dataDir": "$dir/cni/ipam", "ranges": [[{ "subnet": "$cidr" }]] } },
    { "type": "portmap", "capabilities": { "portMappings": true } },
    { "type": "loopback" }
  ]
}
CNI
cat >"$dir/config.toml" <<TOML
version = 2
root = "$dir/root"
state = "$dir/state"
disabled_plugins = ["io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.btrfs",
  "io.containerd.snapshotter.v1.devmapper", "io.containerd.snapshotter.v1.zfs"]
[grpc]
  address = "$sock"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "registry.k8s.io/pause:3.9"
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
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        BinaryName = "$dir/bin/shim-runc"
        Root = "$dir/oci-root"
  [plugins."io.containerd.grpc.v1.cri".registry]
    config_path = "$dir/certs.d"
TOML

setsid "$containerd_bin" --config "$dir/config.toml" </dev/null >"$dir/containerd.log" 2>&1 &
cdpid=$!
for _ in $(seq 300); do
	cri version >/dev/null 2>&1 && break
	kill -0 "$cdpid" 2>/dev/null || fail "containerd exited"
	sleep 0.1
done
cri version >/dev/null 2>&1 || fail "containerd does not answer"

echo "== pulling $image" >&2
cri pull "$image" >/dev/null || fail "pull $image"

cat >"$dir/pod.json" <<JSON
{ "metadata": { "name": "oci-e2e", "namespace": "default", "uid": "oci-e2e-uid", "attempt": 0 },
  "log_directory": "$dir/logs", "linux": {} }
JSON
cat >"$dir/ctr.json" <<JSON
{ "metadata": { "name": "bb" }, "image": { "image": "$image" },
  "command": ["/bin/sh", "-c", "echo hello-from-shim-oci; exec sleep 3600"],
  "log_path": "bb.log", "linux": {} }
JSON
echo "== run pod and container" >&2
pod=$(cri runp "$dir/pod.json") || fail "runp"
ctr=$(cri create "$pod" "$dir/ctr.json" "$dir/pod.json") || fail "create"
cri start "$ctr" >/dev/null || fail "start"

for _ in $(seq 100); do
	grep -q hello-from-shim-oci "$dir/logs/bb.log" 2>/dev/null && break
	sleep 0.1
done
grep -q hello-from-shim-oci "$dir/logs/bb.log" || fail "container log: $(cat "$dir/logs/bb.log" 2>&1)"
state=$(cri inspect -o go-template --template '{{.status.state}}' "$ctr")
[[ $state == CONTAINER_RUNNING ]] || fail "container state $state"

# The pod shares one pid namespace (CRI's default), so look for our sleep.
out=$(cri exec "$ctr" /bin/sh -c 'echo exec-ok; ps -o args | grep "[s]leep 3600"') || fail "exec"
[[ $out == *exec-ok* && $out == *"sleep 3600"* ]] || fail "exec output: $out"

# The sandbox and the container are shim's: `shim oci create` made them
# and they are in its state dir.
grep -q -- "create .*$ctr" "$dir/calls.log" || fail "no 'shim oci create' of $ctr in $dir/calls.log"
list=$("$shim" oci --root "$dir/oci-root/k8s.io" list -q)
[[ $list == *"$ctr"* && $list == *"$pod"* ]] || fail "shim oci list: $list"

# A shim built by `make build` embeds the lean runtime binary
# (EXPECT_LEAN=1): the first `shim oci` command installed it beside the
# init in the state dir, and every later one ran there (the lean binary
# says so at --debug).
if [[ ${EXPECT_LEAN:-} == 1 ]]; then
	ls "$dir/oci-root/k8s.io/.bin/"shim-runtime-* >/dev/null 2>&1 || fail "no lean runtime binary in $dir/oci-root/k8s.io/.bin: $(ls "$dir/oci-root/k8s.io/.bin" 2>&1)"
	dbg=$("$shim" oci --root "$dir/oci-root/k8s.io" --debug list -q 2>&1 >/dev/null)
	[[ $dbg == *"the lean runtime binary"* ]] || fail "shim oci did not run in the lean runtime binary: $dbg"
	# One that someone else could have written is not run.
	lean=$(ls "$dir/oci-root/k8s.io/.bin/"shim-runtime-*)
	chmod g+w "$lean"
	dbg=$("$shim" oci --root "$dir/oci-root/k8s.io" --debug list -q 2>&1 >/dev/null)
	chmod g-w "$lean"
	[[ $dbg != *"the lean runtime binary"* ]] || fail "shim oci ran a group-writable lean runtime binary"
fi

echo "== stop and remove" >&2
cri stop "$ctr" >/dev/null || fail "stop"
state=$(cri inspect -o go-template --template '{{.status.state}}' "$ctr")
[[ $state == CONTAINER_EXITED ]] || fail "state after stop: $state"
cri rm "$ctr" >/dev/null || fail "rm"
cri stopp "$pod" >/dev/null || fail "stopp"
cri rmp "$pod" >/dev/null || fail "rmp"
left=$("$shim" oci --root "$dir/oci-root/k8s.io" list -q)
[[ -z $left ]] || fail "containers left in shim's state: $left"
echo "oci-e2e: PASS: containerd $("$containerd_bin" --version | awk '{print $3}') ran a busybox pod through shim oci ($(wc -l <"$dir/calls.log") runtime calls)"
