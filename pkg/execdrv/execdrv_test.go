package execdrv_test

import (
	"os"
	"os/exec"
	"testing"

	"github.com/shim-cri/shim/pkg/execdrv"
	"github.com/shim-cri/shim/pkg/execdrv/execdrvtest"
	"github.com/shim-cri/shim/pkg/libct"
	"golang.org/x/sys/unix"
)

func TestMain(m *testing.M) {
	if len(os.Args) > 1 && os.Args[1] == "init" {
		libct.Init()
		return
	}
	// Containers started through a runtime binary are reparented here.
	unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
	os.Exit(m.Run())
}

func TestNative(t *testing.T) {
	execdrvtest.Run(t, func(t *testing.T) execdrv.Driver { return execdrv.NewNative(t.TempDir()) })
}

func TestOCIBinaryRunc(t *testing.T) {
	runc, err := exec.LookPath("runc")
	if err != nil {
		t.Skip("needs runc (hack/install-deps.sh installs it)")
	}
	execdrvtest.Run(t, func(t *testing.T) execdrv.Driver { return execdrv.NewOCIBinary(runc, t.TempDir()) })
}
