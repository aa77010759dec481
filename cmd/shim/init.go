package main

import "github.com/shim-cri/shim/pkg/libct/ocicli"

// initCommand is the hidden container init that pkg/libct re-executes.
var initCommand = ocicli.InitCommand()
