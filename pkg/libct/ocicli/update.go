package ocicli

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	"github.com/shim-cri/shim/internal/cmdline"
	"github.com/shim-cri/shim/pkg/errdefs"
)

var ociUpdate = &cmdline.Command{
	Name: "update", Usage: "update a container's resources", ArgsUsage: "<id>",
	Flags: []cmdline.Flag{
		{Name: "resources", Aliases: []string{"r"}, Usage: "LinuxResources JSON file, - for stdin"},
		{Name: "memory"}, {Name: "memory-reservation"}, {Name: "memory-swap"},
		{Name: "cpu-shares", Kind: cmdline.Uint64}, {Name: "cpu-quota", Kind: cmdline.Int64}, {Name: "cpu-period", Kind: cmdline.Uint64},
		{Name: "cpuset-cpus"}, {Name: "cpuset-mems"},
		{Name: "pids-limit", Kind: cmdline.Int64}, {Name: "blkio-weight", Kind: cmdline.Uint64},
	},
	Action: func(c *cmdline.Context) error { return ociFail(doUpdate(c)) },
}

func parseBytes(s string) (int64, error) {
	if s == "-1" {
		return -1, nil
	}
	mult := int64(1)
	u := strings.ToLower(s)
	for suf, m := range map[string]int64{"k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "kb": 1 << 10, "mb": 1 << 20, "gb": 1 << 30} {
		if strings.HasSuffix(u, suf) {
			if n, err := strconv.ParseInt(strings.TrimSuffix(u, suf), 10, 64); err == nil {
				return n * m, nil
			}
		}
	}
	n, err := strconv.ParseInt(u, 10, 64)
	if err != nil {
		return 0, fmt.Errorf("bad size %q: %w", s, errdefs.ErrInvalidArgument)
	}
	return n * mult, nil
}

func doUpdate(c *cmdline.Context) error {
	ct, err := loadContainer(c)
	if err != nil {
		return err
	}
	r := &specs.LinuxResources{}
	if p := c.String("resources"); p != "" {
		var in io.Reader = os.Stdin
		if p != "-" {
			f, err := os.Open(p)
			if err != nil {
				return fmt.Errorf("resources: %w: %w", err, errdefs.ErrInvalidArgument)
			}
			defer f.Close()
			in = f
		}
		if err := json.NewDecoder(io.LimitReader(in, 4<<20)).Decode(r); err != nil {
			return fmt.Errorf("parse resources: %w: %w", err, errdefs.ErrInvalidArgument)
		}
	}
	mem := func() *specs.LinuxMemory {
		if r.Memory == nil {
			r.Memory = &specs.LinuxMemory{}
		}
		return r.Memory
	}
	cpu := func() *specs.LinuxCPU {
		if r.CPU == nil {
			r.CPU = &specs.LinuxCPU{}
		}
		return r.CPU
	}
	for name, dst := range map[string]func(int64){
		"memory": func(v int64) { mem().Limit = &v }, "memory-reservation": func(v int64) { mem().Reservation = &v },
		"memory-swap": func(v int64) { mem().Swap = &v },
	} {
		if c.IsSet(name) {
			v, err := parseBytes(c.String(name))
			if err != nil {
				return err
			}
			dst(v)
		}
	}
	if c.IsSet("cpu-shares") {
		v := c.Uint64("cpu-shares")
		cpu().Shares = &v
	}
	if c.IsSet("cpu-quota") {
		v := c.Int64("cpu-quota")
		cpu().Quota = &v
	}
	if c.IsSet("cpu-period") {
		v := c.Uint64("cpu-period")
		cpu().Period = &v
	}
	if c.IsSet("cpuset-cpus") {
		cpu().Cpus = c.String("cpuset-cpus")
	}
	if c.IsSet("cpuset-mems") {
		cpu().Mems = c.String("cpuset-mems")
	}
	if c.IsSet("pids-limit") {
		v := c.Int64("pids-limit")
		r.Pids = &specs.LinuxPids{Limit: &v}
	}
	if c.IsSet("blkio-weight") {
		v := uint16(c.Uint64("blkio-weight"))
		r.BlockIO = &specs.LinuxBlockIO{Weight: &v}
	}
	return ct.Update(r)
}
