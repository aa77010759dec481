// Package hostinfo reports what the host offers a container runtime:
// cgroup version and controllers, overlayfs, nftables, seccomp, user
// namespaces and the capabilities the runtime lacks.
package hostinfo

import (
	"bufio"
	"fmt"
	"os"
	"strconv"
	"strings"

	"github.com/google/nftables"
	"golang.org/x/sys/unix"

	"github.com/shim-cri/shim/pkg/libct"
)

// Check is one line of the report.
type Check struct {
	Name   string `json:"name"`
	OK     bool   `json:"ok"`
	Detail string `json:"detail"`
}

// CgroupMode is how cgroups are mounted.
type CgroupMode string

const (
	CgroupV1      CgroupMode = "v1"
	CgroupHybrid  CgroupMode = "hybrid" // v1 controllers, v2 mounted alongside
	CgroupUnified CgroupMode = "v2"
)

// Cgroups returns the cgroup mode and the available controllers.
func Cgroups() (CgroupMode, []string) {
	var st unix.Statfs_t
	if unix.Statfs("/sys/fs/cgroup", &st) == nil && st.Type == unix.CGROUP2_SUPER_MAGIC {
		b, _ := os.ReadFile("/sys/fs/cgroup/cgroup.controllers")
		return CgroupUnified, strings.Fields(string(b))
	}
	var ctrls []string
	if f, err := os.Open("/proc/cgroups"); err == nil {
		s := bufio.NewScanner(f)
		for s.Scan() {
			fl := strings.Fields(s.Text())
			if len(fl) == 4 && !strings.HasPrefix(fl[0], "#") && fl[3] == "1" {
				ctrls = append(ctrls, fl[0])
			}
		}
		f.Close()
	}
	if unix.Statfs("/sys/fs/cgroup/unified", &st) == nil && st.Type == unix.CGROUP2_SUPER_MAGIC {
		return CgroupHybrid, ctrls
	}
	return CgroupV1, ctrls
}

func fileHas(path, word string) bool {
	b, err := os.ReadFile(path)
	if err != nil {
		return false
	}
	for _, l := range strings.Split(string(b), "\n") {
		for _, f := range strings.Fields(l) {
			if f == word {
				return true
			}
		}
	}
	return false
}

// MissingCapabilities lists the capabilities this process does not have
// in its effective set, out of those the kernel knows.
func MissingCapabilities() []string {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return nil
	}
	var eff uint64
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, "CapEff:"); ok {
			eff, _ = strconv.ParseUint(strings.TrimSpace(v), 16, 64)
		}
	}
	capNames := libct.CapabilityNames()
	last := len(capNames) - 1
	if lb, err := os.ReadFile("/proc/sys/kernel/cap_last_cap"); err == nil {
		if n, err := strconv.Atoi(strings.TrimSpace(string(lb))); err == nil && n < last {
			last = n
		}
	}
	var out []string
	for i := 0; i <= last; i++ {
		if eff&(1<<uint(i)) == 0 {
			out = append(out, capNames[i])
		}
	}
	return out
}

// Report runs every check.
func Report() []Check {
	var out []Check
	mode, ctrls := Cgroups()
	out = append(out, Check{"cgroups", len(ctrls) > 0, fmt.Sprintf("%s; controllers: %s", mode, strings.Join(ctrls, " "))})
	out = append(out, Check{"overlayfs", fileHas("/proc/filesystems", "overlay"), "overlay in /proc/filesystems (modprobe overlay if missing)"})
	_, err := os.Stat("/proc/sys/kernel/seccomp/actions_avail")
	out = append(out, Check{"seccomp", err == nil, "seccomp filters (/proc/sys/kernel/seccomp)"})
	n := readInt("/proc/sys/user/max_user_namespaces")
	out = append(out, Check{"user namespaces", n > 0, fmt.Sprintf("max_user_namespaces=%d", n)})
	out = append(out, nftCheck())
	missing := MissingCapabilities()
	detail := "all capabilities present"
	if len(missing) > 0 {
		detail = "missing: " + strings.Join(missing, " ")
		for _, m := range missing {
			if m == "CAP_SYS_RESOURCE" {
				detail += " (oom_score_adj below the current value and hard rlimits above the current ones are clamped)"
			}
		}
	}
	out = append(out, Check{"capabilities", len(missing) == 0, detail})
	return out
}

func readInt(path string) int {
	b, err := os.ReadFile(path)
	if err != nil {
		return -1
	}
	n, _ := strconv.Atoi(strings.TrimSpace(string(b)))
	return n
}

// nftCheck lists nftables tables over netlink.
func nftCheck() Check {
	conn, err := nftables.New()
	if err != nil {
		return Check{"nftables", false, "netlink: " + err.Error()}
	}
	defer conn.CloseLasting()
	tables, err := conn.ListTables()
	if err != nil {
		return Check{"nftables", false, "listing tables: " + err.Error()}
	}
	return Check{"nftables", true, fmt.Sprintf("nf_tables answers over netlink (%d tables)", len(tables))}
}
