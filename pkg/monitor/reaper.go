package monitor

import (
	"os"
	"os/signal"
	"strconv"
	"strings"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

// Exit is how a process ended.
type Exit struct {
	Pid      int  `json:"pid"`
	Code     int  `json:"code"` // exit code, or 128+signal
	Signaled bool `json:"signaled,omitempty"`
	Signal   int  `json:"signal,omitempty"`
}

func exitOf(pid int, ws unix.WaitStatus) Exit {
	if ws.Signaled() {
		return Exit{Pid: pid, Code: 128 + int(ws.Signal()), Signaled: true, Signal: int(ws.Signal())}
	}
	return Exit{Pid: pid, Code: ws.ExitStatus()}
}

// reaper collects the exits of the monitor's children. Processes the
// monitor watches (container inits, exec'd processes) are waited for by
// pid; other zombies (orphans handed to the monitor as subreaper) are
// reaped when they are still zombies a sweep later, so a child that some
// library code waits for itself is left to it.
type reaper struct {
	mu      sync.Mutex
	watched map[int]chan Exit
	zombies map[int]bool // unwatched zombies seen at the last sweep
	kick    chan struct{}
}

func newReaper() *reaper {
	r := &reaper{watched: map[int]chan Exit{}, zombies: map[int]bool{}, kick: make(chan struct{}, 1)}
	sigs := make(chan os.Signal, 16)
	signal.Notify(sigs, unix.SIGCHLD)
	go func() {
		tick := time.NewTicker(time.Second)
		for {
			select {
			case <-sigs:
			case <-r.kick:
			case <-tick.C:
				r.sweep()
			}
			r.reapWatched()
		}
	}()
	return r
}

// watch returns a channel that receives pid's exit. Call it right after the
// process starts; an exit that happened already is found at once.
func (r *reaper) watch(pid int) <-chan Exit {
	ch := make(chan Exit, 1)
	r.mu.Lock()
	r.watched[pid] = ch
	r.mu.Unlock()
	select {
	case r.kick <- struct{}{}:
	default:
	}
	return ch
}

func (r *reaper) reapWatched() {
	r.mu.Lock()
	defer r.mu.Unlock()
	for pid, ch := range r.watched {
		var ws unix.WaitStatus
		n, err := unix.Wait4(pid, &ws, unix.WNOHANG, nil)
		if n == pid {
			ch <- exitOf(pid, ws)
			delete(r.watched, pid)
		} else if err == unix.ECHILD {
			// Not our child (any more): reaped elsewhere; report unknown.
			ch <- Exit{Pid: pid, Code: 255}
			delete(r.watched, pid)
		}
	}
}

// sweep reaps unwatched zombie children seen as zombies at the previous sweep.
func (r *reaper) sweep() {
	children := childPids()
	r.mu.Lock()
	defer r.mu.Unlock()
	seen := map[int]bool{}
	for _, pid := range children {
		if _, ok := r.watched[pid]; ok || !isZombie(pid) {
			continue
		}
		if r.zombies[pid] {
			var ws unix.WaitStatus
			unix.Wait4(pid, &ws, unix.WNOHANG, nil)
			continue
		}
		seen[pid] = true
	}
	r.zombies = seen
}

func childPids() []int {
	tasks, _ := os.ReadDir("/proc/self/task")
	var out []int
	for _, t := range tasks {
		b, err := os.ReadFile("/proc/self/task/" + t.Name() + "/children")
		if err != nil {
			continue
		}
		for _, f := range strings.Fields(string(b)) {
			if pid, err := strconv.Atoi(f); err == nil {
				out = append(out, pid)
			}
		}
	}
	return out
}

func isZombie(pid int) bool {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return false
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	return i > 0 && i+2 < len(s) && s[i+2] == 'Z'
}
