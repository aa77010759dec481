package specgen

import (
	"bufio"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// DetectHost fills the host facts of Options from this host (call it once
// at daemon start; ContainerSpec never looks at the host's configuration
// itself). Settings (SeccompDefault, PidsLimit, CgroupRoot, ...) and the
// AppArmor default profile (the caller checks it is loaded) are left for
// the caller.
func DetectHost() Options {
	var o Options
	var st unix.Statfs_t
	o.CgroupV2 = unix.Statfs("/sys/fs/cgroup", &st) == nil && st.Type == unix.CGROUP2_SUPER_MAGIC
	o.SwapAccounting = swapAccounting(o.CgroupV2)
	if hugetlbController(o.CgroupV2) {
		o.HugepageSizes = hugepageSizes("/sys/kernel/mm/hugepages")
		if o.HugepageSizes == nil {
			o.HugepageSizes = []string{}
		}
	}
	o.Capabilities = RuntimeCapabilities()
	if !slices.Contains(o.Capabilities, "CAP_SYS_RESOURCE") {
		if b, err := os.ReadFile("/proc/self/oom_score_adj"); err == nil {
			if v, err := strconv.Atoi(strings.TrimSpace(string(b))); err == nil {
				o.OOMScoreAdjFloor = &v
			}
		}
	}
	o.NodeHostname, _ = os.Hostname()
	return o
}

func swapAccounting(v2 bool) bool {
	if !v2 {
		_, err := os.Stat("/sys/fs/cgroup/memory/memory.memsw.limit_in_bytes")
		return err == nil
	}
	// The root cgroup has no memory.swap.max: look at our own cgroup, or
	// at any child of the root.
	if b, err := os.ReadFile("/proc/self/cgroup"); err == nil {
		for _, l := range strings.Split(string(b), "\n") {
			if p, ok := strings.CutPrefix(l, "0::"); ok && p != "/" {
				if _, err := os.Stat(filepath.Join("/sys/fs/cgroup", p, "memory.swap.max")); err == nil {
					return true
				}
			}
		}
	}
	m, _ := filepath.Glob("/sys/fs/cgroup/*/memory.swap.max")
	return len(m) > 0
}

func hugetlbController(v2 bool) bool {
	if !v2 {
		fi, err := os.Stat("/sys/fs/cgroup/hugetlb")
		return err == nil && fi.IsDir()
	}
	b, err := os.ReadFile("/sys/fs/cgroup/cgroup.controllers")
	return err == nil && slices.Contains(strings.Fields(string(b)), "hugetlb")
}

// hugepageSizes lists the page sizes under dir (hugepages-2048kB) in the
// CRI's notation (2MB).
func hugepageSizes(dir string) []string {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return nil
	}
	var out []string
	for _, e := range ents {
		kb, ok := strings.CutPrefix(e.Name(), "hugepages-")
		if !ok {
			continue
		}
		kb, ok = strings.CutSuffix(kb, "kB")
		if !ok {
			continue
		}
		n, err := strconv.ParseUint(kb, 10, 64)
		if err != nil || n == 0 {
			continue
		}
		out = append(out, pageSizeName(n))
	}
	slices.Sort(out)
	return out
}

// pageSizeName writes a size in KiB with the largest exact binary unit.
func pageSizeName(kb uint64) string {
	units := []string{"KB", "MB", "GB", "TB", "PB"}
	i := 0
	for kb%1024 == 0 && i < len(units)-1 {
		kb /= 1024
		i++
	}
	return strconv.FormatUint(kb, 10) + units[i]
}

// RuntimeCapabilities lists the capabilities in this process's effective
// set that the kernel knows: what a container started by this process can
// be given.
func RuntimeCapabilities() []string {
	f, err := os.Open("/proc/self/status")
	if err != nil {
		return nil
	}
	defer f.Close()
	var eff uint64
	found := false
	s := bufio.NewScanner(f)
	for s.Scan() {
		if v, ok := strings.CutPrefix(s.Text(), "CapEff:"); ok {
			eff, err = strconv.ParseUint(strings.TrimSpace(v), 16, 64)
			found = err == nil
		}
	}
	if !found {
		return nil
	}
	last := len(AllCapabilities) - 1
	if b, err := os.ReadFile("/proc/sys/kernel/cap_last_cap"); err == nil {
		if n, err := strconv.Atoi(strings.TrimSpace(string(b))); err == nil && n < last {
			last = n
		}
	}
	out := []string{}
	for i := 0; i <= last; i++ {
		if eff&(1<<uint(i)) != 0 {
			out = append(out, AllCapabilities[i])
		}
	}
	return out
}
