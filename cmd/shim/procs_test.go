package main

import (
	"os"
	"runtime"
	"testing"
)

func TestRaiseProcs(t *testing.T) {
	defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(0))

	// Set in the environment: left alone, however few.
	t.Setenv("GOMAXPROCS", "1")
	runtime.GOMAXPROCS(1)
	if n := raiseProcs(); n != 0 || runtime.GOMAXPROCS(0) != 1 {
		t.Errorf("with GOMAXPROCS=1 set: raiseProcs() = %d, GOMAXPROCS %d; want 0, 1", n, runtime.GOMAXPROCS(0))
	}

	os.Unsetenv("GOMAXPROCS") // t.Setenv restores it
	runtime.GOMAXPROCS(2)
	if n := raiseProcs(); n != minProcs || runtime.GOMAXPROCS(0) != minProcs {
		t.Errorf("from 2: raiseProcs() = %d, GOMAXPROCS %d; want %d", n, runtime.GOMAXPROCS(0), minProcs)
	}
	runtime.GOMAXPROCS(minProcs + 2)
	if n := raiseProcs(); n != 0 || runtime.GOMAXPROCS(0) != minProcs+2 {
		t.Errorf("from %d: raiseProcs() = %d, GOMAXPROCS %d; want 0, unchanged", minProcs+2, n, runtime.GOMAXPROCS(0))
	}
}
