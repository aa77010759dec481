package monitor

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	"github.com/sirupsen/logrus"
	"golang.org/x/sys/unix"

	"github.com/shim-cri/shim/internal/capread"
	"github.com/shim-cri/shim/pkg/errdefs"
	"github.com/shim-cri/shim/pkg/execdrv"
	"github.com/shim-cri/shim/pkg/libct"
	"github.com/shim-cri/shim/pkg/log"
)

// helperTimeout bounds one helper operation: nothing it does should take
// long, and a helper stuck for good would hold its request forever.
const helperTimeout = 5 * time.Minute

// consoleWait bounds the wait for a pty master once the runtime returned.
const consoleWait = 10 * time.Second

// maxHelperData caps the JSON value (process or resources) a helper reads.
const maxHelperData = 8 << 20

// helperResult is what a helper tells the C monitor, as one JSON line on
// its control socket.
type helperResult struct {
	Pid     int           `json:"pid,omitempty"`
	OOMFile string        `json:"oomFile,omitempty"`
	Error   *errdefs.Wire `json:"error,omitempty"`
	// OpNs is how long the operation itself (libct, or the OCI runtime
	// binary) took in the helper: the monitor passes it on (Response).
	OpNs int64 `json:"opNs,omitempty"`
	// console is the pty master of a process with a terminal (--tty):
	// it goes to the monitor with the result line (SCM_RIGHTS).
	console *os.File
}

// helperArgs is one helper invocation, parsed from its command line.
type helperArgs struct {
	op, id, bundle, pod   string
	root, binary, level   string
	init                  string
	signal                int
	all, force, tty       bool
	ctl, data             int
	stdin, stdout, stderr int
}

// HelperMain runs one container operation for the C monitor (pkg/monitor/cmon):
//
//	monitor-helper --op create|start|kill|delete|exec|update --id ID --pod POD
//	    --runtime-root ROOT [--runtime-binary B] [--init-binary I]
//	    [--log-level L] --ctl-fd 3
//	    [--data-fd 4] [--stdin-fd 5] [--stdout-fd 6] [--stderr-fd 7]
//	    [--bundle DIR] [--signal N] [--all] [--force] [--tty]
//
// The data fd holds the JSON of the process (exec) or the resources
// (update). With --tty (create, exec) the process gets a terminal: the
// helper receives the pty master on a console socket and passes it to
// the monitor with its result. The result goes to the control socket as one JSON line; then
// the helper waits until the monitor closes the socket: the processes it
// started (it is their subreaper meanwhile) become the monitor's children
// only when it exits, after the monitor has learnt their pids. A create
// helper may get "start" on the socket meanwhile, and then starts the
// container too.
func HelperMain(args []string) int {
	a, err := parseHelperArgs(args)
	if err != nil {
		fmt.Fprintln(os.Stderr, "shim monitor-helper:", err)
		return 2
	}
	ctl := os.NewFile(uintptr(a.ctl), "ctl")
	res := timedHelper(a)
	if !report(ctl, a, res) {
		return 1
	}
	// After a create the monitor may hand over the start (StartContainer
	// follows CreateContainer): one line, "start"; EOF ends the wait.
	if a.op == OpCreate && res.Error == nil {
		line, err := bufio.NewReaderSize(ctl, 64).ReadString('\n')
		if err == nil && line == "start\n" {
			a.op = OpStart
			if !report(ctl, a, timedHelper(a)) {
				return 1
			}
		}
	}
	io.Copy(io.Discard, ctl)
	return 0
}

// timedHelper runs the operation and says how long it took.
func timedHelper(a *helperArgs) helperResult {
	start := time.Now()
	res := runHelper(a)
	res.OpNs = time.Since(start).Nanoseconds()
	return res
}

// report writes a result line to the monitor.
func report(ctl *os.File, a *helperArgs, res helperResult) bool {
	if res.Error != nil {
		logrus.WithField(log.FieldPodID, a.pod).WithField(log.FieldContainerID, a.id).
			Debugf("monitor helper %s: %s: %s", a.op, res.Error.Class, res.Error.Message)
	}
	line, err := json.Marshal(res)
	if err == nil {
		line = append(line, '\n')
		err = sendLine(ctl, line, res.console)
	}
	if res.console != nil {
		res.console.Close()
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "shim monitor-helper: reporting the result:", err)
		return false
	}
	return true
}

// sendLine writes line to the control socket, with f's fd (SCM_RIGHTS)
// on its first byte when f is set.
func sendLine(ctl *os.File, line []byte, f *os.File) error {
	if f == nil {
		_, err := ctl.Write(line)
		return err
	}
	n, err := unix.SendmsgN(int(ctl.Fd()), line, unix.UnixRights(int(f.Fd())), nil, 0)
	if err != nil {
		return err
	}
	_, err = ctl.Write(line[n:])
	return err
}

func parseHelperArgs(args []string) (*helperArgs, error) {
	a := &helperArgs{}
	fs := flag.NewFlagSet("monitor-helper", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	fs.StringVar(&a.op, "op", "", "operation")
	fs.StringVar(&a.id, "id", "", "container id")
	fs.StringVar(&a.bundle, "bundle", "", "bundle (create)")
	fs.StringVar(&a.pod, "pod", "", "pod id (for logs)")
	fs.StringVar(&a.root, "runtime-root", "", "state root of the execution driver")
	fs.StringVar(&a.binary, "runtime-binary", "", "external OCI runtime; empty: the native driver")
	fs.StringVar(&a.init, "init-binary", "", "the native driver's container init binary; empty: this one")
	fs.StringVar(&a.level, "log-level", "info", "log level")
	fs.IntVar(&a.signal, "signal", 0, "signal (kill)")
	fs.BoolVar(&a.all, "all", false, "every process (kill)")
	fs.BoolVar(&a.force, "force", false, "force (delete)")
	fs.BoolVar(&a.tty, "tty", false, "the process has a terminal (create, exec)")
	fs.IntVar(&a.ctl, "ctl-fd", -1, "control socket")
	fs.IntVar(&a.data, "data-fd", -1, "request data")
	fs.IntVar(&a.stdin, "stdin-fd", -1, "stdin of the new process")
	fs.IntVar(&a.stdout, "stdout-fd", -1, "stdout of the new process")
	fs.IntVar(&a.stderr, "stderr-fd", -1, "stderr of the new process")
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	if a.ctl < 3 {
		return nil, errors.New("--ctl-fd is required")
	}
	// Inherited descriptors are not close-on-exec: nothing the helper
	// runs may inherit them by accident.
	for _, fd := range []int{a.ctl, a.data, a.stdin, a.stdout, a.stderr} {
		if fd >= 0 {
			unix.CloseOnExec(fd)
		}
	}
	if lvl, err := logrus.ParseLevel(a.level); err == nil {
		logrus.SetLevel(lvl)
	}
	return a, nil
}

func runHelper(a *helperArgs) helperResult {
	// Processes a runtime leaves behind (runc's init once `runc create`
	// exits) stay ours until the monitor has their pid.
	if err := unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0); err != nil {
		return failed(fmt.Errorf("becoming a subreaper: %w", err))
	}
	ctx, cancel := context.WithTimeout(context.Background(), helperTimeout)
	defer cancel()
	ctx = log.WithLogger(ctx, logrus.WithField(log.FieldPodID, a.pod).WithField(log.FieldContainerID, a.id))
	var drv execdrv.Driver = execdrv.NewNative(a.root)
	if a.init != "" {
		libct.SetInitBinary(a.init)
	}
	if a.binary != "" {
		drv = execdrv.NewOCIBinary(a.binary, a.root)
	}
	file := func(fd int, name string) *os.File {
		if fd < 0 {
			return nil
		}
		return os.NewFile(uintptr(fd), name)
	}
	stdio := execdrv.IO{Stdin: file(a.stdin, "stdin"), Stdout: file(a.stdout, "stdout"), Stderr: file(a.stderr, "stderr")}
	// The new process has its stdio; ours must not keep its pipes open.
	defer func() {
		for _, f := range []*os.File{stdio.Stdin, stdio.Stdout, stdio.Stderr} {
			if f != nil {
				f.Close()
			}
		}
		a.stdin, a.stdout, a.stderr = -1, -1, -1
	}()
	var console *consoleSocket
	if a.tty {
		var err error
		if console, err = newConsoleSocket(); err != nil {
			return failed(fmt.Errorf("console socket: %w", err))
		}
		defer console.Close()
		stdio.ConsoleSocket = console.path
	}
	switch a.op {
	case OpCreate:
		pid, err := drv.Create(ctx, a.id, a.bundle, execdrv.CreateOpts{IO: stdio})
		if err != nil {
			return failed(err)
		}
		res := withConsole(ctx, console, helperResult{Pid: pid, OOMFile: oomFile(pid)})
		if res.Error != nil {
			drv.Delete(ctx, a.id, true)
		}
		return res
	case OpStart:
		return failed(drv.Start(ctx, a.id))
	case OpKill:
		return failed(drv.Kill(ctx, a.id, unix.Signal(a.signal), a.all))
	case OpDelete:
		if err := drv.Delete(ctx, a.id, a.force); err != nil && !errdefs.IsNotFound(err) {
			return failed(err)
		}
		return helperResult{}
	case helperOpExec:
		var p *specs.Process
		if err := readData(a.data, &p); err != nil {
			return failed(err)
		}
		if p == nil || len(p.Args) == 0 {
			return failed(fmt.Errorf("exec needs a command: %w", errdefs.ErrInvalidArgument))
		}
		p.Terminal = a.tty
		pid, err := drv.Exec(ctx, a.id, p, stdio)
		if err != nil {
			return failed(err)
		}
		res := withConsole(ctx, console, helperResult{Pid: pid})
		if res.Error != nil {
			unix.Kill(pid, unix.SIGKILL)
		}
		return res
	case OpUpdate:
		var r *specs.LinuxResources
		if err := readData(a.data, &r); err != nil {
			return failed(err)
		}
		if r == nil {
			return failed(fmt.Errorf("update without resources: %w", errdefs.ErrInvalidArgument))
		}
		return failed(drv.Update(ctx, a.id, r))
	}
	return failed(fmt.Errorf("unknown monitor helper op %q: %w", a.op, errdefs.ErrInvalidArgument))
}

// withConsole adds the pty master to the result of a process started
// with a terminal.
func withConsole(ctx context.Context, console *consoleSocket, res helperResult) helperResult {
	if console == nil {
		return res
	}
	// The runtime sends the master before it returns: what has not come
	// soon after never will (a spec without process.terminal).
	ctx, cancel := context.WithTimeout(ctx, consoleWait)
	defer cancel()
	f, err := console.Master(ctx)
	if err != nil {
		return failed(err)
	}
	res.console = f
	return res
}

func failed(err error) helperResult {
	if err == nil {
		return helperResult{}
	}
	w := errdefs.ToWire(err)
	return helperResult{Error: &w}
}

// readData decodes the one JSON value of the data fd into v; no fd is null.
func readData(fd int, v any) error {
	if fd < 0 {
		return nil
	}
	f := os.NewFile(uintptr(fd), "data")
	defer f.Close()
	b, err := capread.Read(f, maxHelperData)
	if err != nil {
		return fmt.Errorf("request data: %w", err)
	}
	if err := json.Unmarshal(b, v); err != nil {
		return fmt.Errorf("request data: %w: %w", err, errdefs.ErrInvalidArgument)
	}
	return nil
}

// oomFile is the file of pid's memory cgroup whose "oom_kill N" line counts
// the OOM kills in it: memory.oom_control on cgroup v1, memory.events on
// v2. It is read from /proc, so it is right for any driver; empty when
// unknown.
func oomFile(pid int) string {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/cgroup")
	if err != nil {
		return ""
	}
	var v1, v2 string
	for _, l := range strings.Split(string(b), "\n") {
		parts := strings.SplitN(l, ":", 3)
		if len(parts) != 3 {
			continue
		}
		if parts[0] == "0" && parts[1] == "" {
			v2 = parts[2]
			continue
		}
		for _, c := range strings.Split(parts[1], ",") {
			if c == "memory" {
				v1 = parts[2]
			}
		}
	}
	switch {
	case v1 != "":
		if mnt := cgroupMount("cgroup", "memory"); mnt != "" {
			return filepath.Join(mnt, v1, "memory.oom_control")
		}
	case v2 != "":
		if mnt := cgroupMount("cgroup2", ""); mnt != "" {
			return filepath.Join(mnt, v2, "memory.events")
		}
	}
	return ""
}

// cgroupMount finds the mount point of a cgroup filesystem (with the
// controller among its options, for v1) in /proc/self/mountinfo.
func cgroupMount(fstype, controller string) string {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return ""
	}
	defer f.Close()
	s := bufio.NewScanner(f)
	s.Buffer(make([]byte, 64<<10), 1<<20)
	for s.Scan() {
		// id parent maj:min root mountpoint opts [optional...] - fstype source superopts
		pre, post, ok := strings.Cut(s.Text(), " - ")
		if !ok {
			continue
		}
		pf, sf := strings.Fields(pre), strings.Fields(post)
		if len(pf) < 5 || len(sf) < 3 || sf[0] != fstype || pf[3] != "/" {
			continue
		}
		if controller == "" {
			return pf[4]
		}
		for _, o := range strings.Split(sf[2], ",") {
			if o == controller {
				return pf[4]
			}
		}
	}
	return ""
}
