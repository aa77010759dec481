package timeline

import (
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"
)

type marks struct{ tl *Timeline }

func (m marks) Mark(name string) { m.tl.Mark(name) }

func TestMarksAreContiguous(t *testing.T) {
	var tl Timeline
	tl.Mark("before") // not begun: ignored
	if tl.Len() != 0 {
		t.Fatalf("a mark before Begin was kept: %d", tl.Len())
	}
	start := time.Now()
	tl.Begin(start)
	ctx := With(context.Background(), marks{&tl})
	names := []string{"a", "b", "c"}
	for _, n := range names {
		Mark(ctx, n)
	}
	Mark(context.Background(), "nowhere") // no timeline in ctx: nothing
	if tl.Len() != len(names) {
		t.Fatalf("%d phases, want %d", tl.Len(), len(names))
	}
	var sum time.Duration
	for i, want := range names {
		name, d := tl.Phase(i)
		if name != want || d < 0 {
			t.Errorf("phase %d: %s %v", i, name, d)
		}
		sum += d
	}
	if sum != tl.End() || tl.End() > time.Since(start) {
		t.Errorf("phases sum to %v, end %v, elapsed %v", sum, tl.End(), time.Since(start))
	}
	if s := tl.String(); !strings.HasPrefix(s, "a=") || !strings.Contains(s, " b=") || !strings.Contains(s, " c=") {
		t.Errorf("String: %q", s)
	}
	b, err := json.Marshal(tl.Report("job"))
	if err != nil {
		t.Fatal(err)
	}
	var r Report
	if err := json.Unmarshal(b, &r); err != nil || r.Job != "job" || len(r.Phases) != 3 || r.Phases[2].Name != "c" {
		t.Errorf("report %s: %+v %v", b, r, err)
	}
}

// TestAdd: a phase measured elsewhere follows the previous one, and ends
// no later than now even when it claims more.
func TestAdd(t *testing.T) {
	var tl Timeline
	start := time.Now()
	tl.Begin(start)
	tl.Mark("a")
	tl.Add("other", 0)
	tl.Add("bogus", time.Hour)
	tl.Add("negative", -time.Second)
	tl.Mark("b")
	if tl.Len() != 4 {
		t.Fatalf("%d phases, want 4 (a negative one is dropped)", tl.Len())
	}
	if name, d := tl.Phase(1); name != "other" || d != 0 {
		t.Errorf("phase 1: %s %v", name, d)
	}
	if name, d := tl.Phase(2); name != "bogus" || d < 0 || tl.End() > time.Since(start) {
		t.Errorf("phase 2: %s %v, end %v", name, d, tl.End())
	}
	if name, d := tl.Phase(3); name != "b" || d < 0 {
		t.Errorf("phase 3: %s %v", name, d)
	}
}

func TestFullTimelineExtendsLastPhase(t *testing.T) {
	var tl Timeline
	tl.Begin(time.Now())
	for i := 0; i < Max+3; i++ {
		tl.Mark("p")
	}
	tl.Mark("last")
	if tl.Len() != Max {
		t.Fatalf("%d phases, want %d", tl.Len(), Max)
	}
	if name, _ := tl.Phase(Max - 1); name != "p" {
		t.Errorf("last phase %q", name)
	}
}

func TestMarkAllocatesNothing(t *testing.T) {
	var tl Timeline
	ctx := With(context.Background(), marks{&tl})
	if n := testing.AllocsPerRun(100, func() {
		tl.Begin(time.Now())
		for i := 0; i < 8; i++ {
			Mark(ctx, "phase")
		}
	}); n != 0 {
		t.Errorf("%v allocations per request", n)
	}
}
