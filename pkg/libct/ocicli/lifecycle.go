package ocicli

import (
	"context"
	"fmt"
	"strconv"
	"strings"

	"github.com/shim-cri/shim/internal/cmdline"
	"github.com/shim-cri/shim/pkg/errdefs"
	"github.com/shim-cri/shim/pkg/libct"
	"golang.org/x/sys/unix"
)

// parseSignal accepts "KILL", "SIGKILL", "kill" and "9".
func parseSignal(s string) (unix.Signal, error) {
	if s == "" {
		return unix.SIGTERM, nil
	}
	if n, err := strconv.Atoi(s); err == nil {
		if n <= 0 || n > 64 {
			return 0, fmt.Errorf("signal %d out of range: %w", n, errdefs.ErrInvalidArgument)
		}
		return unix.Signal(n), nil
	}
	name := strings.ToUpper(s)
	if !strings.HasPrefix(name, "SIG") {
		name = "SIG" + name
	}
	if sig := unix.SignalNum(name); sig != 0 {
		return sig, nil
	}
	return 0, fmt.Errorf("unknown signal %q: %w", s, errdefs.ErrInvalidArgument)
}

var ociKill = &cmdline.Command{
	Name: "kill", Usage: "signal a container", ArgsUsage: "<id> [signal]",
	Flags: []cmdline.Flag{{Name: "all", Aliases: []string{"a"}, Kind: cmdline.Bool, Usage: "signal every process in the container"}},
	Action: func(c *cmdline.Context) error {
		ct, err := loadContainer(c)
		if err != nil {
			return ociFail(err)
		}
		sig, err := parseSignal(c.Arg(1))
		if err != nil {
			return ociFail(err)
		}
		return ociFail(ct.Signal(sig, c.Bool("all")))
	},
}

var ociDelete = &cmdline.Command{
	Name: "delete", Usage: "delete a container", ArgsUsage: "<id>",
	Flags: []cmdline.Flag{{Name: "force", Aliases: []string{"f"}, Kind: cmdline.Bool, Usage: "kill a running container first"}},
	Action: func(c *cmdline.Context) error {
		ct, err := loadContainer(c)
		if err != nil {
			if c.Bool("force") && errdefs.IsNotFound(err) {
				return nil
			}
			return ociFail(err)
		}
		if err := ct.Delete(context.Background(), c.Bool("force")); err != nil {
			return ociFail(err)
		}
		if sp := ct.Spec(); sp != nil && sp.Hooks != nil {
			st, _ := ct.State()
			st.Status = libct.StatusStopped
			libct.RunHooks(context.Background(), sp.Hooks.Poststop, st, true)
		}
		return nil
	},
}

var ociPause = &cmdline.Command{
	Name: "pause", Usage: "freeze a container", ArgsUsage: "<id>",
	Action: func(c *cmdline.Context) error {
		ct, err := loadContainer(c)
		if err != nil {
			return ociFail(err)
		}
		return ociFail(ct.Pause())
	},
}

var ociResume = &cmdline.Command{
	Name: "resume", Usage: "thaw a paused container", ArgsUsage: "<id>",
	Action: func(c *cmdline.Context) error {
		ct, err := loadContainer(c)
		if err != nil {
			return ociFail(err)
		}
		return ociFail(ct.Resume())
	},
}
