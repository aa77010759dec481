package cmon

import (
	"bufio"
	"os"
	"strconv"
	"strings"
	"testing"
)

// textRSS is the resident KiB of this executable's code mapping.
func textRSS(t *testing.T) int {
	t.Helper()
	exe, err := os.Readlink("/proc/self/exe")
	if err != nil {
		t.Fatal(err)
	}
	f, err := os.Open("/proc/self/smaps")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	in := false
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) >= 6 && strings.Contains(fields[0], "-") && !strings.HasSuffix(fields[0], ":") {
			in = strings.HasPrefix(fields[1], "r-x") && fields[5] == exe
			continue
		}
		if in && len(fields) == 3 && fields[0] == "Rss:" {
			kib, _ := strconv.Atoi(fields[1])
			return kib
		}
	}
	t.Fatalf("no code mapping of %s in smaps", exe)
	return 0
}

// TestDropText: the binary's code pages leave the process's resident
// memory, and what runs after maps back only what it touches.
func TestDropText(t *testing.T) {
	before := textRSS(t)
	if n := DropText(); n < 2 {
		t.Errorf("dropped %d segments, want code and read-only data at least", n)
	}
	after := textRSS(t)
	t.Logf("code mapping resident: %d KiB before, %d KiB after", before, after)
	// Without the drop nothing leaves: after >= before. How much stays
	// away depends on the page cache: a refault maps the whole large
	// folio it hits (up to 2 MB of the file here), and this test binary's
	// code is about two of them, both of which the test's own code
	// touches again (the daemon's binary is 44 MB: most of it stays
	// away, README's idle RSS).
	if before < 512 || after >= before {
		t.Errorf("code mapping resident: %d KiB before, %d KiB after: want less after", before, after)
	}
}
