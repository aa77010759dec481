//go:build race

package daemon

// Under `go test -race` the daemon the tests start is built with -race
// too, and a race it reports fails the test (see daemonProc).
func init() { raceBuild = true }
