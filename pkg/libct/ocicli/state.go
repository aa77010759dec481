package ocicli

import (
	"encoding/json"
	"fmt"
	"os"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/shim-cri/shim/internal/cmdline"
	"github.com/shim-cri/shim/pkg/libct"
)

type ociStateJSON struct {
	OCIVersion  string            `json:"ociVersion"`
	ID          string            `json:"id"`
	Pid         int               `json:"pid"`
	Status      string            `json:"status"`
	Bundle      string            `json:"bundle"`
	Rootfs      string            `json:"rootfs"`
	Created     time.Time         `json:"created"`
	Owner       string            `json:"owner"`
	Annotations map[string]string `json:"annotations,omitempty"`
}

func toOCIState(s libct.State) ociStateJSON {
	return ociStateJSON{OCIVersion: s.OCIVersion, ID: s.ID, Pid: s.Pid, Status: string(s.Status), Bundle: s.Bundle,
		Rootfs: s.Rootfs, Created: s.Created, Owner: s.Owner, Annotations: s.Annotations}
}

func printJSON(v any) error {
	enc := json.NewEncoder(os.Stdout)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

var ociState = &cmdline.Command{
	Name: "state", Usage: "print a container's state as JSON", ArgsUsage: "<id>",
	Action: func(c *cmdline.Context) error {
		ct, err := loadContainer(c)
		if err != nil {
			return ociFail(err)
		}
		st, err := ct.State()
		if err != nil {
			return ociFail(err)
		}
		return ociFail(printJSON(toOCIState(st)))
	},
}

var ociList = &cmdline.Command{
	Name: "list", Aliases: []string{"ls"}, Usage: "list containers",
	Flags: []cmdline.Flag{
		{Name: "format", Aliases: []string{"f"}, Default: "table"},
		{Name: "quiet", Aliases: []string{"q"}, Kind: cmdline.Bool},
	},
	Action: func(c *cmdline.Context) error {
		ids, err := libct.List(rootOf(c))
		if err != nil {
			return ociFail(err)
		}
		if c.Bool("quiet") {
			for _, id := range ids {
				fmt.Println(id)
			}
			return nil
		}
		states := []ociStateJSON{}
		for _, id := range ids {
			ct, err := libct.Load(rootOf(c), id)
			if err != nil {
				continue
			}
			st, _ := ct.State()
			states = append(states, toOCIState(st))
		}
		if c.String("format") == "json" {
			return ociFail(json.NewEncoder(os.Stdout).Encode(states))
		}
		w := tabwriter.NewWriter(os.Stdout, 12, 1, 3, ' ', 0)
		fmt.Fprint(w, "ID\tPID\tSTATUS\tBUNDLE\tCREATED\tOWNER\n")
		for _, s := range states {
			fmt.Fprintf(w, "%s\t%d\t%s\t%s\t%s\t%s\n", s.ID, s.Pid, s.Status, s.Bundle, s.Created.Format(time.RFC3339Nano), s.Owner)
		}
		return w.Flush()
	},
}

var ociPs = &cmdline.Command{
	Name: "ps", Usage: "list a container's processes", ArgsUsage: "<id> [ps options]",
	Flags: []cmdline.Flag{{Name: "format", Aliases: []string{"f"}, Default: "table"}},
	Action: func(c *cmdline.Context) error {
		ct, err := loadContainer(c)
		if err != nil {
			return ociFail(err)
		}
		pids, err := ct.Processes()
		if err != nil {
			return ociFail(err)
		}
		if c.String("format") == "json" {
			if pids == nil {
				pids = []int{}
			}
			return ociFail(json.NewEncoder(os.Stdout).Encode(pids))
		}
		fmt.Println("PID\tCMD")
		for _, p := range pids {
			cmd, _ := os.ReadFile("/proc/" + strconv.Itoa(p) + "/comm")
			fmt.Printf("%d\t%s\n", p, strings.TrimSpace(string(cmd)))
		}
		return nil
	},
}

var ociFeatures = &cmdline.Command{
	Name: "features", Usage: "print the features this runtime supports (JSON)",
	Action: func(c *cmdline.Context) error { return printJSON(libct.Features()) },
}
