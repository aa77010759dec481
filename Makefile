# shim: see README.md.
GO        ?= go
# The CRI asks for a semver RuntimeVersion (kubelet shows "Unknown" otherwise):
# the release, then the commit as build metadata.
RELEASE   := 0.1.0-dev
VERSION   ?= $(RELEASE)$(shell c=$$(git rev-parse --short=12 HEAD 2>/dev/null) && echo "+$$c$$(git diff --quiet HEAD 2>/dev/null || echo .dirty)")
LDFLAGS   := -X main.Version=$(VERSION)
PREFIX    ?= /usr/local
BIN       := bin/shim

.PHONY: all build runtime run test unit race monitor-asan e2e kubelet-e2e node-e2e node-e2e-ci node-e2e-eviction bench lint install deps clean

all: build

# bin/shim embeds the lean monitor binary (cmd/shim-runtime) and the
# container init (cmd/shim-init). It is linked statically like them: it
# needs no libseccomp.so on the node, and each `shim oci` command, which
# its C constructor hands to the lean binary, does not wait for ld.so
# (0.6-0.9 ms of each here). netgo and osusergo as below.
build: runtime
	$(GO) build -trimpath -tags shim_embed,urfave_cli_no_docs,$(RUNTIME_TAGS) -ldflags '$(LDFLAGS) $(STATIC_LDFLAGS)' -o $(BIN) ./cmd/shim

# The lean binaries start often (the monitor once per pod, the init once
# per container create and per exec): they are linked statically (glibc's
# and libseccomp's .a), so no start pays for ld.so loading libc and
# libseccomp. netgo and osusergo keep glibc's NSS (getpwnam, getaddrinfo),
# which a static binary cannot load, out of them. cgo needs gcc and the
# libseccomp headers and archive (libseccomp-dev): installed first if
# missing. shim-init.sum and shim-runtime.sum name the binaries `shim oci`
# installs in its state directory; embedded.h gives their names and sizes
# to the C constructor that hands `shim oci` to the lean one
# (internal/ocilean). No urfave/cli in them (internal/cmdline parses
# `shim oci`), so no urfave_cli_no_docs.
RUNTIME_TAGS    := netgo,osusergo
STATIC_LDFLAGS  := -linkmode external -extldflags "-static"
RUNTIME_LDFLAGS := -s -w $(STATIC_LDFLAGS)
runtime:
	@hack/install-deps.sh build >/dev/null
	$(GO) build -trimpath -tags $(RUNTIME_TAGS) -ldflags '$(RUNTIME_LDFLAGS)' -o cmd/shim/shim-runtime.bin ./cmd/shim-runtime
	$(GO) build -trimpath -tags $(RUNTIME_TAGS),shim_init -ldflags '$(RUNTIME_LDFLAGS)' -o cmd/shim/shim-init.bin ./cmd/shim-init
	sha256sum cmd/shim/shim-init.bin | cut -c1-16 > cmd/shim/shim-init.sum
	sha256sum cmd/shim/shim-runtime.bin | cut -c1-16 > cmd/shim/shim-runtime.sum
	printf '#define SHIM_RUNTIME_SUM "%s"\n#define SHIM_RUNTIME_SIZE %sLL\n#define SHIM_INIT_SUM "%s"\n#define SHIM_INIT_SIZE %sLL\n' \
		$$(cat cmd/shim/shim-runtime.sum) $$(stat -c %s cmd/shim/shim-runtime.bin) \
		$$(cat cmd/shim/shim-init.sum) $$(stat -c %s cmd/shim/shim-init.bin) > internal/ocilean/embedded.h

# Run shim on its embedded defaults (root; /var/lib/shim, /run/shim/shim.sock).
run: build
	./$(BIN) serve

deps:
	hack/install-deps.sh

# Everything: dependencies, unit and root integration tests, then the
# end-to-end runs (registry, test images, shim, crictl, critest; a real
# kubelet with static pods), the CI subset of Kubernetes' node e2e suite and
# its ephemeral-storage eviction spec.
test: deps build
	$(MAKE) lint
	$(MAKE) unit
	$(MAKE) race
	$(MAKE) monitor-asan
	$(MAKE) e2e
	$(MAKE) kubelet-e2e
	$(MAKE) node-e2e-ci
	$(MAKE) node-e2e-eviction

# Packages one at a time (-p 1): many tests are root tests that change the
# host (mounts, links, nftables, cgroups) and check that nothing else did.
unit:
	$(GO) test -count=1 -p 1 -timeout 45m ./...

# The race detector over the packages that run goroutines; the daemon the
# pkg/daemon tests start is built with -race too, and a race it reports
# fails the test.
RACE_PKGS := ./pkg/engine ./pkg/imagestore ./pkg/daemon ./pkg/cri ./pkg/monitor
race:
	$(GO) test -race -count=1 -p 1 -timeout 45m $(RACE_PKGS)

# The C monitor's tests on a monitor built with AddressSanitizer: a
# use-after-free or overflow aborts it and fails the test with the report.
monitor-asan:
	SHIM_MONITOR_BUILDFLAGS=-asan $(GO) test -count=1 -timeout 20m ./pkg/monitor

e2e: build
	hack/e2e.sh

# A real kubelet (v1.37.2, built once into _output/bin) runs static pods on shim.
kubelet-e2e: build
	hack/kubelet-e2e.sh

# Kubernetes' node e2e suite ([NodeConformance]) against shim: a real kubelet,
# API server and etcd (docs/conformance.md). NODE_E2E_RUNTIME=containerd runs
# it against containerd 2.4 instead.
node-e2e: build
	hack/node-e2e.sh

# Its fixed CI subset (hack/node-e2e/ci-focus).
node-e2e-ci: build
	NODE_E2E_SUBSET=ci hack/node-e2e.sh

# Its eviction spec: kubelet evicts the pods over their ephemeral-storage
# limits, reading each container's writable layer from shim's stats.
node-e2e-eviction: build
	NODE_E2E_SUBSET=eviction hack/node-e2e.sh

bench: build
	$(GO) build -o bin/bench ./hack/bench
	hack/bench.sh

lint:
	hack/lint-scripts.sh
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...

install: build
	install -D -m 0755 $(BIN) $(DESTDIR)$(PREFIX)/bin/shim
	install -d -m 0755 $(DESTDIR)/etc/shim/config.d $(DESTDIR)/etc/shim/certs.d
	test -e $(DESTDIR)/etc/shim/config.toml || ./$(BIN) config default > $(DESTDIR)/etc/shim/config.toml

clean:
	rm -rf bin _output
