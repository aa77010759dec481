package main

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
)

// proc is one process as the memory modes see it.
type proc struct {
	PID     int
	PPID    int
	Exe     string // readlink /proc/PID/exe, " (deleted)" stripped
	Cmdline string // arguments joined by spaces
}

// listProcs reads every process from procRoot (normally /proc). Processes
// that exit while they are read are skipped.
func listProcs(procRoot string) ([]proc, error) {
	ents, err := os.ReadDir(procRoot)
	if err != nil {
		return nil, err
	}
	var out []proc
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid <= 0 {
			continue
		}
		dir := filepath.Join(procRoot, e.Name())
		stat, err := os.ReadFile(filepath.Join(dir, "stat"))
		if err != nil {
			continue
		}
		ppid, err := parseStatPPID(stat)
		if err != nil {
			continue
		}
		exe, _ := os.Readlink(filepath.Join(dir, "exe")) // kernel threads have none
		cmd, _ := os.ReadFile(filepath.Join(dir, "cmdline"))
		out = append(out, proc{
			PID:     pid,
			PPID:    ppid,
			Exe:     strings.TrimSuffix(exe, " (deleted)"),
			Cmdline: strings.TrimSpace(string(bytes.ReplaceAll(cmd, []byte{0}, []byte{' '}))),
		})
	}
	return out, nil
}

// parseStatPPID returns field 4 of /proc/PID/stat. The command name (field
// 2) is in parentheses and may itself hold spaces and parentheses, so the
// fields are counted from the last ')'.
func parseStatPPID(stat []byte) (int, error) {
	i := bytes.LastIndexByte(stat, ')')
	if i < 0 {
		return 0, fmt.Errorf("stat: no command field")
	}
	f := strings.Fields(string(stat[i+1:]))
	if len(f) < 2 {
		return 0, fmt.Errorf("stat: too few fields")
	}
	return strconv.Atoi(f[1])
}

// exeName is the name a process is matched by: the base name of its
// executable, with a memfd copy ("/memfd:shim") named after what it copies.
func exeName(exe string) string {
	b := filepath.Base(exe)
	return strings.TrimPrefix(b, "memfd:")
}

// procSelector picks a runtime's own processes.
//
// A process is selected when its executable matches one of Names (a name
// with a '/' is compared with the whole executable path, otherwise with its
// base name) and either Match is empty, its command line or executable path
// contains Match, or its parent is selected (so the pause processes under a
// selected containerd-shim-runc-v2 count). Exclude (the daemon) never counts.
type procSelector struct {
	Names   []string
	Match   string
	Exclude map[int]bool
}

// name returns the entry of s.Names that p matches, or "".
func (s procSelector) name(p proc) string {
	if p.Exe == "" {
		return ""
	}
	for _, n := range s.Names {
		if strings.Contains(n, "/") {
			if p.Exe == n {
				return n
			}
		} else if exeName(p.Exe) == n {
			return n
		}
	}
	return ""
}

// Select returns the selected processes with the name each matched.
func (s procSelector) Select(procs []proc) map[int]string {
	sel := map[int]string{}
	for _, p := range procs {
		if s.Exclude[p.PID] {
			continue
		}
		n := s.name(p)
		if n == "" {
			continue
		}
		if s.Match == "" || strings.Contains(p.Cmdline, s.Match) || strings.Contains(p.Exe, s.Match) {
			sel[p.PID] = n
		}
	}
	// Children of selected processes, to any depth.
	for changed := true; changed; {
		changed = false
		for _, p := range procs {
			if _, ok := sel[p.PID]; ok || s.Exclude[p.PID] {
				continue
			}
			if _, ok := sel[p.PPID]; !ok {
				continue
			}
			if n := s.name(p); n != "" {
				sel[p.PID] = n
				changed = true
			}
		}
	}
	return sel
}

// memUsage is a process's memory from /proc/PID/smaps_rollup, in KiB.
type memUsage struct {
	RSS int64 `json:"rss_kib"`
	PSS int64 `json:"pss_kib"`
}

// readRollup reads the Rss and Pss lines of procRoot/PID/smaps_rollup.
func readRollup(procRoot string, pid int) (memUsage, error) {
	f, err := os.Open(filepath.Join(procRoot, strconv.Itoa(pid), "smaps_rollup"))
	if err != nil {
		return memUsage{}, err
	}
	defer f.Close()
	var m memUsage
	var seenRSS, seenPSS bool
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) < 2 {
			continue
		}
		var dst *int64
		switch f[0] {
		case "Rss:":
			dst, seenRSS = &m.RSS, true
		case "Pss:":
			dst, seenPSS = &m.PSS, true
		default:
			continue
		}
		v, err := strconv.ParseInt(f[1], 10, 64)
		if err != nil {
			return memUsage{}, fmt.Errorf("smaps_rollup of %d: %q: %w", pid, sc.Text(), err)
		}
		*dst = v
	}
	if err := sc.Err(); err != nil {
		return memUsage{}, err
	}
	if !seenRSS || !seenPSS {
		return memUsage{}, fmt.Errorf("smaps_rollup of %d: no Rss/Pss lines", pid)
	}
	return m, nil
}

// groupUsage is the summed memory of a set of processes, and by name.
type groupUsage struct {
	Procs  int                 `json:"procs"`
	Total  memUsage            `json:"total"`
	ByName map[string]memUsage `json:"by_name"`
	Counts map[string]int      `json:"counts"`
}

// measureGroup sums smaps_rollup over the selected processes. A process
// that exited since it was listed is left out.
func measureGroup(procRoot string, sel map[int]string) (groupUsage, error) {
	g := groupUsage{ByName: map[string]memUsage{}, Counts: map[string]int{}}
	for pid, name := range sel {
		m, err := readRollup(procRoot, pid)
		if err != nil {
			if os.IsNotExist(err) || isESRCH(err) {
				continue
			}
			return groupUsage{}, err
		}
		g.Procs++
		g.Total.RSS += m.RSS
		g.Total.PSS += m.PSS
		b := g.ByName[name]
		b.RSS += m.RSS
		b.PSS += m.PSS
		g.ByName[name] = b
		g.Counts[name]++
	}
	return g, nil
}

func isESRCH(err error) bool { return errors.Is(err, syscall.ESRCH) }
