package hostinfo

import (
	"os"
	"testing"
)

func TestReport(t *testing.T) {
	r := Report()
	if len(r) != 6 {
		t.Fatalf("got %d checks", len(r))
	}
	for _, c := range r {
		if c.Name == "" || c.Detail == "" {
			t.Errorf("empty check %+v", c)
		}
	}
}

func TestMissingCapabilitiesNonRoot(t *testing.T) {
	m := MissingCapabilities()
	if os.Getuid() != 0 && len(m) == 0 {
		t.Fatal("an unprivileged process reports no missing capabilities")
	}
	for _, c := range m {
		if c == "" {
			t.Fatal("empty capability name")
		}
	}
}
