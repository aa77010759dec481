package netdrv

import (
	"strings"
	"testing"

	"github.com/shim-cri/shim/pkg/errdefs"
)

func TestValidateID(t *testing.T) {
	for _, ok := range []string{"a", "0123abcdef", "pod-1.x_y", strings.Repeat("f", 128)} {
		if err := ValidateID(ok); err != nil {
			t.Errorf("ValidateID(%q) = %v", ok, err)
		}
	}
	for _, bad := range []string{"", "-a", ".a", "_a", "a/b", "../x", "a b", "a\nb", "a\x00b", "a;b", "a=b", strings.Repeat("f", 129), "é"} {
		if err := ValidateID(bad); !errdefs.Is(err, errdefs.ErrInvalidArgument) {
			t.Errorf("ValidateID(%q) = %v, want invalid argument", bad, err)
		}
	}
}

func TestHostPorts(t *testing.T) {
	got, err := HostPorts([]PortMapping{
		{Protocol: "TCP", ContainerPort: 80, HostPort: 8080},
		{Protocol: "", ContainerPort: 80, HostPort: 8080, HostIP: "0.0.0.0"}, // duplicate of the first
		{Protocol: "udp", ContainerPort: 53, HostPort: 0},                    // no host port: ignored
		{Protocol: "Sctp", ContainerPort: 9, HostPort: 9, HostIP: "::ffff:127.0.0.1"},
		{Protocol: "udp", ContainerPort: 53, HostPort: 5353, HostIP: "::"},
		{Protocol: "udp", ContainerPort: 53, HostPort: 5353, HostIP: "fd00::0001"},
	})
	if err != nil {
		t.Fatal(err)
	}
	want := []PortMapping{
		{Protocol: "tcp", ContainerPort: 80, HostPort: 8080},
		{Protocol: "sctp", ContainerPort: 9, HostPort: 9, HostIP: "127.0.0.1"},
		{Protocol: "udp", ContainerPort: 53, HostPort: 5353, HostIP: "::"},
		{Protocol: "udp", ContainerPort: 53, HostPort: 5353, HostIP: "fd00::1"},
	}
	if len(got) != len(want) {
		t.Fatalf("HostPorts = %+v, want %+v", got, want)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("HostPorts[%d] = %+v, want %+v", i, got[i], want[i])
		}
	}
	for _, tc := range []struct {
		name string
		pm   []PortMapping
	}{
		{"protocol", []PortMapping{{Protocol: "icmp", ContainerPort: 1, HostPort: 1}}},
		{"host port high", []PortMapping{{ContainerPort: 1, HostPort: 65536}}},
		{"host port negative", []PortMapping{{ContainerPort: 1, HostPort: -5}}},
		{"container port zero", []PortMapping{{ContainerPort: 0, HostPort: 80}}},
		{"container port high", []PortMapping{{ContainerPort: 70000, HostPort: 80}}},
		{"host ip", []PortMapping{{ContainerPort: 1, HostPort: 80, HostIP: "localhost"}}},
		{"host ip zone", []PortMapping{{ContainerPort: 1, HostPort: 80, HostIP: "fe80::1%eth0"}}},
		{"host ip newline", []PortMapping{{ContainerPort: 1, HostPort: 80, HostIP: "1.2.3.4\n"}}},
		{"two container ports", []PortMapping{{ContainerPort: 1, HostPort: 80}, {ContainerPort: 2, HostPort: 80, HostIP: "0.0.0.0"}}},
	} {
		if _, err := HostPorts(tc.pm); !errdefs.Is(err, errdefs.ErrInvalidArgument) {
			t.Errorf("%s: %v, want invalid argument", tc.name, err)
		}
	}
}

func FuzzHostPorts(f *testing.F) {
	f.Add("tcp", int32(80), int32(8080), "")
	f.Add("UDP", int32(53), int32(53), "::1")
	f.Fuzz(func(t *testing.T, proto string, cport, hport int32, ip string) {
		out, err := HostPorts([]PortMapping{{Protocol: proto, ContainerPort: cport, HostPort: hport, HostIP: ip}})
		if err != nil {
			if !errdefs.Is(err, errdefs.ErrInvalidArgument) {
				t.Fatalf("error without a class: %v", err)
			}
			return
		}
		for _, pm := range out {
			if pm.HostPort < 1 || pm.HostPort > 65535 || pm.ContainerPort < 1 || pm.ContainerPort > 65535 {
				t.Fatalf("out of range mapping accepted: %+v", pm)
			}
			if pm.Protocol != "tcp" && pm.Protocol != "udp" && pm.Protocol != "sctp" {
				t.Fatalf("protocol %q accepted", pm.Protocol)
			}
			if strings.ContainsAny(pm.HostIP, " \n\x00%/") {
				t.Fatalf("host IP %q accepted", pm.HostIP)
			}
		}
	})
}
