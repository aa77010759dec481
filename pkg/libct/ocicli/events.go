package ocicli

import (
	"encoding/json"
	"fmt"
	"os"
	"time"

	"github.com/shim-cri/shim/internal/cmdline"
	"github.com/shim-cri/shim/pkg/errdefs"
	"github.com/shim-cri/shim/pkg/libct"
)

// runc's `events --stats` shape (the subset libct measures).
type ociEvent struct {
	Type string    `json:"type"`
	ID   string    `json:"id"`
	Data *ociStats `json:"data,omitempty"`
}

type ociStats struct {
	CPU struct {
		Usage struct {
			Total  uint64   `json:"total"`
			Percpu []uint64 `json:"percpu,omitempty"`
			Kernel uint64   `json:"kernel"`
			User   uint64   `json:"user"`
		} `json:"usage"`
		Throttling struct {
			Periods          uint64 `json:"periods,omitempty"`
			ThrottledPeriods uint64 `json:"throttledPeriods,omitempty"`
			ThrottledTime    uint64 `json:"throttledTime,omitempty"`
		} `json:"throttling"`
	} `json:"cpu"`
	Memory struct {
		Cache uint64 `json:"cache,omitempty"`
		Usage struct {
			Limit   uint64 `json:"limit"`
			Usage   uint64 `json:"usage,omitempty"`
			Max     uint64 `json:"max,omitempty"`
			Failcnt uint64 `json:"failcnt"`
		} `json:"usage"`
		Swap struct {
			Usage uint64 `json:"usage,omitempty"`
		} `json:"swap"`
		Raw map[string]uint64 `json:"raw,omitempty"`
	} `json:"memory"`
	Pids struct {
		Current uint64 `json:"current,omitempty"`
		Limit   uint64 `json:"limit,omitempty"`
	} `json:"pids"`
}

func toOCIStats(s *libct.Stats) *ociStats {
	var o ociStats
	o.CPU.Usage.Total, o.CPU.Usage.Percpu, o.CPU.Usage.Kernel, o.CPU.Usage.User = s.CPU.UsageNanos, s.CPU.PerCPU, s.CPU.KernelNanos, s.CPU.UserNanos
	o.CPU.Throttling.Periods, o.CPU.Throttling.ThrottledPeriods, o.CPU.Throttling.ThrottledTime = s.CPU.Periods, s.CPU.Throttled, s.CPU.ThrottledNs
	o.Memory.Cache = s.Memory.Cache
	o.Memory.Usage.Limit, o.Memory.Usage.Usage, o.Memory.Usage.Max, o.Memory.Usage.Failcnt = s.Memory.Limit, s.Memory.Usage, s.Memory.MaxUsage, s.Memory.Failcnt
	o.Memory.Swap.Usage = s.Memory.SwapUsage
	o.Memory.Raw = s.Memory.Raw
	o.Pids.Current, o.Pids.Limit = s.Pids.Current, s.Pids.Limit
	return &o
}

var ociEvents = &cmdline.Command{
	Name: "events", Usage: "print container statistics", ArgsUsage: "<id>",
	Flags: []cmdline.Flag{
		{Name: "stats", Kind: cmdline.Bool, Usage: "print one stats event and exit"},
		{Name: "interval", Kind: cmdline.Duration, Default: "5s"},
	},
	Action: func(c *cmdline.Context) error {
		ct, err := loadContainer(c)
		if err != nil {
			return ociFail(err)
		}
		enc := json.NewEncoder(os.Stdout)
		for {
			st, _ := ct.State()
			if st.Status == libct.StatusStopped {
				return ociFail(fmt.Errorf("container %q is stopped: %w", st.ID, errdefs.ErrFailedPrecondition))
			}
			s, err := ct.Stats()
			if err != nil {
				return ociFail(err)
			}
			if err := enc.Encode(ociEvent{Type: "stats", ID: st.ID, Data: toOCIStats(s)}); err != nil {
				return ociFail(err)
			}
			if c.Bool("stats") {
				return nil
			}
			time.Sleep(c.Duration("interval"))
		}
	},
}
