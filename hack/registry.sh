#!/usr/bin/env bash
# registry.sh start|stop|status [PORT]
#
# Runs Debian's docker-registry (distribution 2.x) on 127.0.0.1:PORT (default
# 5000) in the background, for the test images hack/testimages pushes and
# the hosts.toml mirrors in hack/certs.d point at. Storage, config, pid file
# and log live in $SHIM_REGISTRY_DIR (default /tmp/shim-registry); deletes
# are enabled.
#
#   start   start it unless it already runs, then wait until /v2/ answers
#   stop    stop the registry this script started (the pid in the state dir)
#   status  exit 0 if it runs and /v2/ answers
set -euo pipefail

usage() {
	echo "usage: $0 start|stop|status [PORT]" >&2
	exit 2
}

[[ $# -ge 1 && $# -le 2 ]] || usage
cmd=$1
port=${2:-5000}
[[ $port =~ ^[0-9]+$ ]] && ((port > 0 && port < 65536)) || {
	echo "registry.sh: bad port: $port" >&2
	exit 2
}

state=${SHIM_REGISTRY_DIR:-/tmp/shim-registry}
bin=${SHIM_REGISTRY_BIN:-/usr/bin/docker-registry}
addr=127.0.0.1:$port
config=$state/config-$port.yml
pidfile=$state/registry-$port.pid
logfile=$state/registry-$port.log

# running prints the pid of the registry started for this port, if alive.
running() {
	local pid
	[[ -f $pidfile ]] || return 1
	pid=$(<"$pidfile")
	[[ $pid =~ ^[0-9]+$ ]] || return 1
	# The pid must still be our registry, not a recycled number.
	[[ -r /proc/$pid/cmdline ]] || return 1
	[[ $(tr '\0' ' ' <"/proc/$pid/cmdline") == *"$config"* ]] || return 1
	echo "$pid"
}

answers() {
	curl -fsS -o /dev/null --max-time 2 "http://$addr/v2/"
}

write_config() {
	mkdir -p "$state/data"
	cat >"$config.tmp" <<EOF
version: 0.1
log:
  level: warn
  accesslog:
    disabled: true
  fields:
    service: shim-test-registry
storage:
  filesystem:
    rootdirectory: $state/data
  delete:
    enabled: true
  cache:
    blobdescriptor: inmemory
  maintenance:
    uploadpurging:
      enabled: false
http:
  addr: $addr
  headers:
    X-Content-Type-Options: [nosniff]
EOF
	mv "$config.tmp" "$config"
}

start() {
	local pid i
	if pid=$(running); then
		for ((i = 0; i < 50; i++)); do
			answers && {
				echo "registry already running on $addr (pid $pid)"
				return 0
			}
			sleep 0.1
		done
		echo "registry.sh: pid $pid runs but http://$addr/v2/ does not answer; see $logfile" >&2
		return 1
	fi
	if answers 2>/dev/null; then
		echo "registry.sh: something else already serves http://$addr/v2/" >&2
		return 1
	fi
	[[ -x $bin ]] || {
		echo "registry.sh: $bin not found (apt-get install docker-registry)" >&2
		return 1
	}
	write_config
	# setsid: the registry must not die with the shell that started it.
	# It keeps no fd of ours beyond stdio: an inherited lock (the
	# `flock /tmp/shim-heavy.lock hack/e2e.sh` fd) would be held forever.
	(
		for fd in /proc/$BASHPID/fd/*; do
			fd=${fd##*/}
			if ((fd > 2)); then eval "exec $fd>&-" 2>/dev/null || true; fi
		done
		exec setsid "$bin" serve "$config"
	) </dev/null >>"$logfile" 2>&1 &
	pid=$!
	echo "$pid" >"$pidfile"
	for ((i = 0; i < 100; i++)); do
		if answers 2>/dev/null; then
			echo "registry running on $addr (pid $pid, state $state)"
			return 0
		fi
		if ! kill -0 "$pid" 2>/dev/null; then
			rm -f "$pidfile"
			echo "registry.sh: registry exited; last log lines:" >&2
			tail -n 20 "$logfile" >&2
			return 1
		fi
		sleep 0.1
	done
	echo "registry.sh: registry pid $pid did not answer on http://$addr/v2/ within 10s; see $logfile" >&2
	return 1
}

stop() {
	local pid i
	if ! pid=$(running); then
		rm -f "$pidfile"
		echo "registry not running on $addr"
		return 0
	fi
	kill -TERM "$pid"
	for ((i = 0; i < 100; i++)); do
		kill -0 "$pid" 2>/dev/null || break
		sleep 0.1
	done
	if kill -0 "$pid" 2>/dev/null; then
		kill -KILL "$pid"
	fi
	rm -f "$pidfile"
	echo "registry on $addr stopped (pid $pid)"
}

status() {
	local pid
	if pid=$(running) && answers; then
		echo "registry running on $addr (pid $pid)"
		return 0
	fi
	echo "registry not running on $addr"
	return 1
}

case $cmd in
start) start ;;
stop) stop ;;
status) status ;;
*) usage ;;
esac
