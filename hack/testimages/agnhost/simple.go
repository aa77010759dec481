package main

import (
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
)

// newFlags is a flag set for one subcommand: both -flag and --flag, and
// --flag=value or --flag value, as agnhost's (cobra) flags accept.
func newFlags(name string) *flag.FlagSet {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(os.Stderr)
	return fs
}

func parseFlags(fs *flag.FlagSet, args []string) error {
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	return nil
}

// pause waits for SIGINT or SIGTERM, then writes "exiting because of signal
// ..." to the termination message path ($TERMINATION_MESSAGE_PATH, default
// /dev/termination-log) and to stdout, and exits 1 (SIGINT) or 2 (SIGTERM).
func pause(args []string) error {
	if err := parseFlags(newFlags("pause"), args); err != nil {
		return err
	}
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM)
	fmt.Println("Paused")
	fmt.Println("Signals registered")
	sig := <-sigs
	msg := fmt.Sprintf("exiting because of signal %q\n", sig)
	path := os.Getenv("TERMINATION_MESSAGE_PATH")
	if path == "" {
		path = "/dev/termination-log"
	}
	_ = os.WriteFile(path, []byte(msg), 0o644)
	_, _ = io.WriteString(os.Stdout, msg)
	if sig == syscall.SIGINT {
		os.Exit(1)
	}
	os.Exit(2)
	return nil
}

// entrypointTester prints its whole argv as Go prints a []string: the specs
// check which binary name and arguments the runtime started it with.
func entrypointTester(args []string) error {
	fmt.Printf("%v\n", os.Args)
	return nil
}

// etcHosts prints /etc/hosts (and a newline, as agnhost does).
func etcHosts(args []string) error {
	if err := parseFlags(newFlags("etc-hosts"), args); err != nil {
		return err
	}
	b, err := os.ReadFile("/etc/hosts")
	if err != nil {
		return err
	}
	fmt.Println(string(b))
	return nil
}
