package engine

import (
	"bytes"
	"fmt"
	"os"
	"strconv"

	"github.com/shim-cri/shim/pkg/errdefs"
	"github.com/shim-cri/shim/pkg/nspin"
)

// podInterface is the pod's interface in its network namespace (the
// bridge driver's and the CNI convention's name).
const podInterface = "eth0"

// ifaceStats are one interface's counters from /proc/net/dev.
type ifaceStats struct {
	Name                                    string
	RxBytes, RxPackets, RxErrors, RxDropped uint64
	TxBytes, TxPackets, TxErrors, TxDropped uint64
}

// netnsStats reads the interface counters of the network namespace pinned
// at path: on a thread moved into it for the read (nspin.Do), from
// /proc/thread-self/net/dev, which shows the reading thread's namespace.
// The loopback interface is left out.
func netnsStats(path string) ([]ifaceStats, error) {
	var data []byte
	err := nspin.Do(nspin.Net, path, func() error {
		var err error
		data, err = os.ReadFile("/proc/thread-self/net/dev")
		return err
	})
	if err != nil {
		return nil, err
	}
	return parseNetDev(data)
}

// parseNetDev parses /proc/net/dev:
//
//	Inter-|   Receive                            ...|  Transmit
//	 face |bytes packets errs drop fifo frame compressed multicast|bytes packets errs drop fifo colls carrier compressed
//	  eth0: 1296 16 0 0 0 0 0 0 1102 13 0 0 0 0 0 0
func parseNetDev(data []byte) ([]ifaceStats, error) {
	var out []ifaceStats
	for i, line := range bytes.Split(data, []byte("\n")) {
		if i < 2 || len(bytes.TrimSpace(line)) == 0 {
			continue
		}
		name, rest, ok := bytes.Cut(line, []byte(":"))
		if !ok {
			return nil, fmt.Errorf("/proc/net/dev line %q: %w", line, errdefs.ErrDataLoss)
		}
		f := bytes.Fields(rest)
		if len(f) < 16 {
			return nil, fmt.Errorf("/proc/net/dev line %q: %w", line, errdefs.ErrDataLoss)
		}
		var n [16]uint64
		for k := range n {
			v, err := strconv.ParseUint(string(f[k]), 10, 64)
			if err != nil {
				return nil, fmt.Errorf("/proc/net/dev line %q: %w", line, errdefs.ErrDataLoss)
			}
			n[k] = v
		}
		s := ifaceStats{Name: string(bytes.TrimSpace(name)),
			RxBytes: n[0], RxPackets: n[1], RxErrors: n[2], RxDropped: n[3],
			TxBytes: n[8], TxPackets: n[9], TxErrors: n[10], TxDropped: n[11]}
		if s.Name != "lo" {
			out = append(out, s)
		}
	}
	return out, nil
}
