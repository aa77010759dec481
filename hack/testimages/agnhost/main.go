// Command agnhost is shim's stand-in for the Kubernetes e2e test image
// registry.k8s.io/e2e-test-images/agnhost, which cannot be pulled here. It
// implements, with the same flags, output and HTTP/UDP/gRPC behaviour, the
// subcommands the node e2e [NodeConformance] specs of Kubernetes v1.37 run
// (see docs/conformance.md for which spec uses which):
//
//	pause                 wait for SIGINT/SIGTERM, write the signal to the termination log
//	liveness              HTTP :8080, /healthz healthy for 10 s
//	test-webserver        HTTP file server of / on --port (80)
//	netexec               HTTP :8080 and UDP :8081 test server (/echo, /dial, /hostname, ...)
//	grpc-health-checking  gRPC health service on --port (5000), control on --http-port (8080)
//	mounttest             file system checks on volumes (--fs_type, --file_mode, ...)
//	entrypoint-tester     print its argv
//	etc-hosts             print /etc/hosts
//
// Any other subcommand fails loudly: a spec that needs one fails for that
// reason, not by accident. hack/testimages builds it static into the agnhost
// image (/agnhost, with /agnhost-2 as a second name).
package main

import (
	"fmt"
	"os"
	"path/filepath"
	"sort"
)

type subcommand func(args []string) error

var subcommands = map[string]subcommand{
	"pause":                pause,
	"liveness":             liveness,
	"test-webserver":       testWebserver,
	"netexec":              netexec,
	"grpc-health-checking": grpcHealthChecking,
	"mounttest":            mounttest,
	"entrypoint-tester":    entrypointTester,
	"etc-hosts":            etcHosts,
}

func main() {
	if len(os.Args) < 2 {
		usage()
		os.Exit(1)
	}
	run, ok := subcommands[os.Args[1]]
	if !ok {
		fmt.Fprintf(os.Stderr, "%s: unknown subcommand %q (this is shim's agnhost stand-in, see hack/testimages/agnhost)\n",
			filepath.Base(os.Args[0]), os.Args[1])
		usage()
		os.Exit(1)
	}
	if err := run(os.Args[2:]); err != nil {
		fmt.Fprintf(os.Stderr, "%s %s: %v\n", filepath.Base(os.Args[0]), os.Args[1], err)
		os.Exit(1)
	}
}

func usage() {
	names := make([]string, 0, len(subcommands))
	for n := range subcommands {
		names = append(names, n)
	}
	sort.Strings(names)
	fmt.Fprintf(os.Stderr, "usage: %s SUBCOMMAND [FLAGS]\nsubcommands: %v\n", filepath.Base(os.Args[0]), names)
}
