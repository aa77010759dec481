package libct_test

import (
	"os"
	"testing"

	"github.com/shim-cri/shim/pkg/libct"
	_ "github.com/shim-cri/shim/pkg/libct/nsenter"
)

// TestMain dispatches to the container init when libct re-executes the
// test binary as "init".
func TestMain(m *testing.M) {
	if len(os.Args) > 1 && os.Args[1] == "init" {
		libct.Init()
		return
	}
	os.Exit(m.Run())
}
