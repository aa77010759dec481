package main

// The C constructor that joins namespaces before the Go runtime starts; it
// is a no-op unless pkg/libct started this process as a container init.
import _ "github.com/shim-cri/shim/pkg/libct/nsenter"
