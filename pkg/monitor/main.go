package monitor

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"

	"github.com/sirupsen/logrus"
	"golang.org/x/sys/unix"

	"github.com/shim-cri/shim/pkg/execdrv"
)

// Main runs a monitor process: `monitor --pod ID --dir DIR --runtime-root
// ROOT [--runtime-binary runc] [--log-level L]`. The daemon starts it with
// Spawn; it reports readiness on the ready fd and serves until a shutdown
// request or SIGTERM.
func Main(args []string) error {
	fs := flag.NewFlagSet("monitor", flag.ContinueOnError)
	pod := fs.String("pod", "", "pod id")
	dir := fs.String("dir", "", "pod state directory")
	root := fs.String("runtime-root", "", "state root of the execution driver")
	binary := fs.String("runtime-binary", "", "external OCI runtime (runc); empty: the native driver")
	level := fs.String("log-level", "info", "log level")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *pod == "" || *dir == "" || *root == "" {
		err := fmt.Errorf("monitor: --pod, --dir and --runtime-root are required")
		Ready(err)
		return err
	}
	// A monitor holds little and waits on I/O: Spawn runs it with
	// GOMAXPROCS=1 and GOGC=25.
	if lvl, err := logrus.ParseLevel(*level); err == nil {
		logrus.SetLevel(lvl)
	}
	var drv execdrv.Driver = execdrv.NewNative(*root)
	if *binary != "" {
		drv = execdrv.NewOCIBinary(*binary, *root)
	}
	s, err := Listen(Config{PodID: *pod, Dir: filepath.Clean(*dir), Driver: drv, Log: logrus.WithField("monitor", *pod)})
	Ready(err)
	if err != nil {
		return err
	}
	// The daemon ends a monitor with a shutdown request; terminal and
	// service-manager signals are ignored.
	signal.Ignore(unix.SIGHUP, unix.SIGINT, unix.SIGPIPE)
	ctx, stop := signal.NotifyContext(context.Background(), unix.SIGTERM)
	defer stop()
	err = s.Serve(ctx)
	os.Remove(filepath.Join(*dir, SocketName))
	return err
}
