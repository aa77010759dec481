package daemon

import (
	"context"
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/reflect/protoregistry"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// TestRequestFuzz sends seeded random requests to every unary RPC of
// RuntimeService and ImageService (built by protobuf reflection: hostile
// strings, extreme numbers, unknown enum values, deep messages, half of
// them mutations of a valid request) and checks that none is answered
// with Internal or Unknown, that the daemon never dies, and that once
// every pod is removed nothing is left behind. Image references only ever
// name the test registry on loopback (or fail to parse); host paths stay
// in the test's temp dir; the pod CIDR is the test's own.
//
// SHIM_FUZZ_SEED and SHIM_FUZZ_N change the seed (default 1) and the
// number of requests (default 2000); SHIM_FUZZ_TRACE=<file> appends each
// request and its code to the file (what came before a failure).
func TestRequestFuzz(t *testing.T) {
	if testing.Short() {
		t.Skip("slow: not run with -short")
	}
	seed, n := uint64(1), 2000
	if v, err := strconv.ParseUint(os.Getenv("SHIM_FUZZ_SEED"), 10, 64); err == nil {
		seed = v
	}
	if v, err := strconv.Atoi(os.Getenv("SHIM_FUZZ_N")); err == nil && v > 0 {
		n = v
	}
	const cidr = "10.213.81.0/24"
	e := newTestEnv(t, bridgeConfig("shimtf", cidr)+"[image]\nsandbox_image = \"PAUSE\"\n")
	reg := newRegistry(t)
	img := reg.push(t, "test/busybox:1", busyboxImage(t, nil, []string{"sh"}))
	pause := reg.push(t, "test/pause:1", busyboxImage(t, []string{"sleep", "1000000"}, nil))
	cfg, _ := os.ReadFile(e.config)
	os.WriteFile(e.config, []byte(strings.Replace(string(cfg), "PAUSE", pause, 1)), 0o600)
	d := e.start()
	t.Cleanup(func() {
		// After a failure too: no pod's mounts stay on the host (runs
		// before the daemon is killed).
		if d.cmd.ProcessState == nil {
			d.removeAllPods(t)
		}
	})
	d.pull(t, img)
	d.pull(t, pause)
	baseline := residue(t, e, d)
	before := takeLeakSnapshot(t, e, d, "shimtf", "tf")

	// A running pod and container for requests to name; made again when
	// a request removed them.
	basePod := podConfig("fuzz", e.logs)
	var pod, ctr string
	bases := 0
	ensureBase := func() {
		if pod != "" {
			if _, err := d.rs.ContainerStatus(bg, &runtimeapi.ContainerStatusRequest{ContainerId: ctr}); err == nil {
				return
			}
			d.rs.RemovePodSandbox(bg, &runtimeapi.RemovePodSandboxRequest{PodSandboxId: pod})
		}
		d.pull(t, img)
		d.pull(t, pause)
		bases++
		pod = d.runPod(t, basePod)
		ctr = d.create(t, pod, basePod, ctrConfig(fmt.Sprintf("fuzz%d", bases), img, "sh", "-c", "trap 'exit 0' TERM; while :; do sleep 1; done"))
		d.startCtr(t, ctr)
	}
	ensureBase()

	tmp := t.TempDir()
	f := &reqFuzzer{
		r:        rand.New(rand.NewPCG(seed, seed^0x5eed)),
		ids:      make([]string, 4),
		images:   []string{img, pause, reg.host + "/test/busybox", reg.host + "/nothere:1", reg.host + "/test/busybox@sha256:" + strings.Repeat("0", 64)},
		registry: reg.host,
		tmp:      tmp,
		cidr:     cidr,
	}
	f.strs = hostileStrings(tmp)
	seeds := map[string]func() proto.Message{
		"RunPodSandbox": func() proto.Message {
			c := podConfig(fmt.Sprintf("f%d", f.r.IntN(1000)), e.logs)
			return &runtimeapi.RunPodSandboxRequest{Config: c}
		},
		"CreateContainer": func() proto.Message {
			return &runtimeapi.CreateContainerRequest{PodSandboxId: pod, SandboxConfig: proto.Clone(basePod).(*runtimeapi.PodSandboxConfig),
				Config: ctrConfig(fmt.Sprintf("c%d", f.r.IntN(1000)), img, "true")}
		},
		"PullImage": func() proto.Message {
			return &runtimeapi.PullImageRequest{Image: &runtimeapi.ImageSpec{Image: f.images[f.r.IntN(len(f.images))]}}
		},
		"ExecSync": func() proto.Message {
			return &runtimeapi.ExecSyncRequest{ContainerId: ctr, Cmd: []string{"echo", "x"}, Timeout: 5}
		},
		"UpdateContainerResources": func() proto.Message {
			return &runtimeapi.UpdateContainerResourcesRequest{ContainerId: ctr,
				Linux: &runtimeapi.LinuxContainerResources{CpuShares: 512, MemoryLimitInBytes: 64 << 20}}
		},
	}

	var methods []protoreflect.MethodDescriptor
	svcs := runtimeapi.File_staging_src_k8s_io_cri_api_pkg_apis_runtime_v1_api_proto.Services()
	for i := 0; i < svcs.Len(); i++ {
		ms := svcs.Get(i).Methods()
		for j := 0; j < ms.Len(); j++ {
			if m := ms.Get(j); !m.IsStreamingClient() && !m.IsStreamingServer() {
				methods = append(methods, m)
			}
		}
	}
	if len(methods) < 30 {
		t.Fatalf("only %d unary RPCs found", len(methods))
	}

	codesSeen := map[string]map[codes.Code]int{}
	var bad []string
	for i := 0; i < n; i++ {
		if i%25 == 0 {
			ensureBase()
			f.ids[0], f.ids[1], f.ids[2], f.ids[3] = pod, ctr, pod[:12], ctr[:12]
		}
		m := methods[f.r.IntN(len(methods))]
		in, err := protoregistry.GlobalTypes.FindMessageByName(m.Input().FullName())
		if err != nil {
			t.Fatal(err)
		}
		out, err := protoregistry.GlobalTypes.FindMessageByName(m.Output().FullName())
		if err != nil {
			t.Fatal(err)
		}
		var req protoreflect.Message
		if s := seeds[string(m.Name())]; s != nil && f.r.IntN(2) == 0 {
			req = s().ProtoReflect()
			f.mutate(req, 0)
		} else {
			req = in.New()
			f.fill(req, 0)
		}
		name := "/" + string(m.Parent().FullName()) + "/" + string(m.Name())
		ctx, cancel := context.WithTimeout(bg, 20*time.Second)
		err = d.conn.Invoke(ctx, name, req.Interface(), out.New().Interface())
		cancel()
		code := status.Code(err)
		if tr := os.Getenv("SHIM_FUZZ_TRACE"); tr != "" {
			tf, _ := os.OpenFile(tr, os.O_APPEND|os.O_CREATE|os.O_WRONLY, 0o644)
			fmt.Fprintf(tf, "#%d %s %v: %s\n", i, m.Name(), code, shortText(req.Interface()))
			tf.Close()
		}
		if codesSeen[string(m.Name())] == nil {
			codesSeen[string(m.Name())] = map[codes.Code]int{}
		}
		codesSeen[string(m.Name())][code]++
		switch code {
		case codes.Internal, codes.Unknown, codes.Unavailable:
			bad = append(bad, fmt.Sprintf("#%d %s: %v\n  request: %s", i, m.Name(), err, shortText(req.Interface())))
		}
		if code == codes.Unavailable || !processAlive(d.cmd.Process.Pid) {
			logTail, _ := os.ReadFile(filepath.Join(e.base, "shim.log"))
			if len(logTail) > 8<<10 {
				logTail = logTail[len(logTail)-8<<10:]
			}
			t.Fatalf("the daemon died or stopped answering at request %d (%s, seed %d): %v\n%s\nlog tail:\n%s", i, m.Name(), seed, err, strings.Join(bad, "\n"), logTail)
		}
	}
	var summary []string
	for m, cs := range codesSeen {
		var parts []string
		for c, k := range cs {
			parts = append(parts, fmt.Sprintf("%v=%d", c, k))
		}
		sort.Strings(parts)
		summary = append(summary, m+": "+strings.Join(parts, " "))
	}
	sort.Strings(summary)
	t.Logf("seed %d, %d requests over %d RPCs (the base pod made %d times):\n%s", seed, n, len(methods), bases, strings.Join(summary, "\n"))
	if len(bad) > 0 {
		if len(bad) > 30 {
			bad = append(bad[:30], fmt.Sprintf("... and %d more", len(bad)-30))
		}
		t.Errorf("client input answered with Internal/Unknown/Unavailable (seed %d):\n%s", seed, strings.Join(bad, "\n"))
	}

	if _, err := d.rs.Version(bg, &runtimeapi.VersionRequest{}); err != nil || !processAlive(d.cmd.Process.Pid) {
		t.Fatalf("the daemon does not answer after the fuzzing: %v", err)
	}
	// Nothing left behind once every container and pod is removed.
	if cs, err := d.rs.ListContainers(bg, &runtimeapi.ListContainersRequest{}); err == nil {
		for _, c := range cs.Containers {
			if _, err := d.rs.RemoveContainer(bg, &runtimeapi.RemoveContainerRequest{ContainerId: c.Id}); err != nil {
				t.Errorf("remove container %s: %v", c.Id, err)
			}
		}
	}
	d.removeAllPods(t)
	if after := residue(t, e, d); after != baseline {
		t.Errorf("left behind:\nbefore:\n%s\nafter:\n%s", baseline, after)
	}
	after := takeLeakSnapshot(t, e, d, "shimtf", "tf")
	if after.mounts != before.mounts || after.pins != before.pins || after.veths != 0 || after.monitors != 0 || after.nftRules != before.nftRules {
		t.Errorf("leaked: before %+v\nafter %+v", before, after)
	}
	d.stop(t)
}

// shortText renders a request for an error message, cut.
func shortText(m proto.Message) string {
	s := fmt.Sprint(m)
	if len(s) > 600 {
		s = s[:600] + "..."
	}
	return s
}

// processAlive: pid runs (a process that died and was not waited for is
// a zombie, which still takes signal 0).
func processAlive(pid int) bool {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return false
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	return i >= 0 && i+2 < len(s) && s[i+2] != 'Z' && s[i+2] != 'X'
}

// hostileStrings are the strings the fuzzer picks from: empty, control
// characters, NULs, traversal, huge, long components, shell and format
// metacharacters, Unicode direction overrides. Not invalid UTF-8: the Go
// client cannot send it in a string field, and grpc-go answers a request
// it cannot unmarshal with Internal before any handler runs.
func hostileStrings(tmp string) []string {
	return []string{
		"", "a", "x\ny", "x\x00y", "\r\n", "../../../x", "..", ".", "a/../../b",
		strings.Repeat("a", 70000), strings.Repeat("b", 256), strings.Repeat("c/", 3000),
		"ü\u202eevil", "%s%n%x", "$(id)", "`id`", "-rf", " ", "\t", "a=b", "=", ",",
		"localhost/x", "runtime/default", "unconfined", "0", "-1", "*", "a/b", "a:b:c",
		"127.0.0.1", "::1", "k8s.io", "kube-system", "true", "null", "\u00a0", "\U0001F600",
		tmp + "/x", tmp + "/../x", tmp + "/a\nb",
	}
}

type reqFuzzer struct {
	r        *rand.Rand
	strs     []string
	ids      []string
	images   []string
	registry string
	tmp      string
	cidr     string
}

const fuzzMaxDepth = 5

var hostileInts = []int64{0, 1, -1, 2, 5, 1000, 4096, 65535, 65536, 1<<31 - 1, -1 << 31, 1 << 32, 1 << 40, 1 << 62,
	math.MaxInt64, math.MinInt64}

// fill sets about half of m's fields, recursively.
func (f *reqFuzzer) fill(m protoreflect.Message, depth int) {
	fields := m.Descriptor().Fields()
	for i := 0; i < fields.Len(); i++ {
		if f.r.IntN(2) == 0 {
			continue
		}
		f.setField(m, fields.Get(i), depth)
	}
	f.constrain(m)
}

// mutate changes a few fields of a valid message, descending into the
// messages it has.
func (f *reqFuzzer) mutate(m protoreflect.Message, depth int) {
	fields := m.Descriptor().Fields()
	for i := 0; i < fields.Len(); i++ {
		fd := fields.Get(i)
		if m.Has(fd) && fd.Kind() == protoreflect.MessageKind && !fd.IsList() && !fd.IsMap() && f.r.IntN(2) == 0 {
			f.mutate(m.Mutable(fd).Message(), depth+1)
			continue
		}
		if f.r.IntN(8) == 0 {
			f.setField(m, fd, depth)
		}
	}
	f.constrain(m)
}

func (f *reqFuzzer) setField(m protoreflect.Message, fd protoreflect.FieldDescriptor, depth int) {
	if od := fd.ContainingOneof(); od != nil && m.WhichOneof(od) != nil && m.WhichOneof(od) != fd {
		return
	}
	isMsg := fd.Kind() == protoreflect.MessageKind || fd.Kind() == protoreflect.GroupKind
	switch {
	case fd.IsList():
		l := m.Mutable(fd).List()
		for j, k := 0, f.r.IntN(4); j < k; j++ {
			if fd.Kind() == protoreflect.MessageKind {
				if depth >= fuzzMaxDepth {
					break
				}
				v := l.NewElement()
				f.fill(v.Message(), depth+1)
				l.Append(v)
			} else {
				l.Append(f.scalar(fd))
			}
		}
	case fd.IsMap():
		mp := m.Mutable(fd).Map()
		for j, k := 0, f.r.IntN(4); j < k; j++ {
			key := f.scalar(fd.MapKey()).MapKey()
			if fd.MapValue().Kind() == protoreflect.MessageKind {
				if depth >= fuzzMaxDepth {
					break
				}
				v := mp.NewValue()
				f.fill(v.Message(), depth+1)
				mp.Set(key, v)
			} else {
				mp.Set(key, f.scalar(fd.MapValue()))
			}
		}
	case isMsg:
		if depth < fuzzMaxDepth {
			f.fill(m.Mutable(fd).Message(), depth+1)
		}
	default:
		m.Set(fd, f.scalar(fd))
	}
}

func (f *reqFuzzer) pick(s []string) string { return s[f.r.IntN(len(s))] }

// str is a string for a field, by the field's name where the value could
// reach outside the test (host paths, the pod CIDR).
func (f *reqFuzzer) str(name string) string {
	switch {
	case strings.HasSuffix(name, "_id") || name == "id":
		if f.r.IntN(2) == 0 {
			return f.pick(f.ids)
		}
	case name == "host_path" || name == "location" || name == "log_directory" || name == "path":
		// Under the test's temp dir, or a hostile relative/control value.
		switch f.r.IntN(3) {
		case 0:
			return filepath.Join(f.tmp, f.pick([]string{"a", "b/c", "log", "d"}))
		case 1:
			return f.tmp + "/" + strings.Repeat("p", 200+f.r.IntN(70000))
		}
		s := f.pick(f.strs)
		if filepath.IsAbs(s) && !strings.HasPrefix(s, f.tmp) {
			s = "." + s
		}
		return s
	case name == "pod_cidr":
		return f.pick([]string{"", f.cidr, "x", "10.213.81.0/33", "\n", "::/0"})
	case name == "cgroup_parent":
		return f.pick([]string{"", "/shimfuzz/" + f.pick(f.strs), "../x", "a\x00b"})
	}
	return f.pick(f.strs)
}

func (f *reqFuzzer) scalar(fd protoreflect.FieldDescriptor) protoreflect.Value {
	n := f.pick64()
	switch fd.Kind() {
	case protoreflect.BoolKind:
		return protoreflect.ValueOfBool(f.r.IntN(2) == 0)
	case protoreflect.EnumKind:
		vals := fd.Enum().Values()
		if f.r.IntN(5) == 0 {
			return protoreflect.ValueOfEnum(protoreflect.EnumNumber(f.r.IntN(10) - 2))
		}
		return protoreflect.ValueOfEnum(vals.Get(f.r.IntN(vals.Len())).Number())
	case protoreflect.Int32Kind, protoreflect.Sint32Kind, protoreflect.Sfixed32Kind:
		return protoreflect.ValueOfInt32(int32(n))
	case protoreflect.Int64Kind, protoreflect.Sint64Kind, protoreflect.Sfixed64Kind:
		return protoreflect.ValueOfInt64(n)
	case protoreflect.Uint32Kind, protoreflect.Fixed32Kind:
		return protoreflect.ValueOfUint32(uint32(n))
	case protoreflect.Uint64Kind, protoreflect.Fixed64Kind:
		return protoreflect.ValueOfUint64(uint64(n))
	case protoreflect.FloatKind:
		return protoreflect.ValueOfFloat32(float32(n))
	case protoreflect.DoubleKind:
		return protoreflect.ValueOfFloat64(float64(n))
	case protoreflect.BytesKind:
		return protoreflect.ValueOfBytes([]byte(f.pick(f.strs)))
	case protoreflect.StringKind:
		return protoreflect.ValueOfString(f.str(string(fd.Name())))
	}
	panic("kind " + fd.Kind().String())
}

func (f *reqFuzzer) pick64() int64 {
	if f.r.IntN(4) == 0 {
		return f.r.Int64N(1<<20) - 1<<10
	}
	return hostileInts[f.r.IntN(len(hostileInts))]
}

// constrain keeps what could leave the machine on loopback: every image
// reference names the test registry (or cannot parse at all).
func (f *reqFuzzer) constrain(m protoreflect.Message) {
	if m.Descriptor().FullName() != "runtime.v1.ImageSpec" {
		return
	}
	for _, name := range []protoreflect.Name{"image", "user_specified_image"} {
		fd := m.Descriptor().Fields().ByName(name)
		if fd == nil {
			continue
		}
		var v string
		switch f.r.IntN(4) {
		case 0:
			v = f.pick(f.images)
		case 1:
			v = f.registry + "/" + f.pick(f.strs)
		case 2:
			v = f.registry + "/x:" + f.pick(f.strs)
		default:
			v = f.pick([]string{"", "\n", "UPPER/Case:x", "a\x00b", ":", "@sha256:zz", "x@sha256:"})
		}
		m.Set(fd, protoreflect.ValueOfString(v))
	}
}
