// Package timeline records where one request's time goes: its phases, as
// contiguous marks (a phase ends at its mark and began at the previous
// one, or at the start), kept in a fixed array so that marking allocates
// nothing and costs one clock read.
//
// The engine gives each timed job one Timeline and puts the job in the
// context as a Marker, so drivers deeper down (the bridge's veth and
// nftables steps) mark their own phases with Mark(ctx, ...) without
// knowing about jobs.
package timeline

import (
	"context"
	"strconv"
	"strings"
	"time"
)

// Max is the number of phases a timeline keeps; later marks extend the
// last phase.
const Max = 18

// Timeline is the phases of one request. The zero value is empty; Begin
// starts it. It is a value (no pointers but the phase names, which are
// constants): copying it keeps a record.
type Timeline struct {
	start time.Time
	n     int
	names [Max]string
	ends  [Max]time.Duration // since start
}

// Begin starts the timeline at t, dropping earlier marks.
func (t *Timeline) Begin(start time.Time) { *t = Timeline{start: start} }

// Mark ends the phase name now. Names are constants of the caller (a
// reader understands them: "namespaces", "network"); they are not copied.
func (t *Timeline) Mark(name string) {
	if t.start.IsZero() {
		return
	}
	d := time.Since(t.start)
	if t.n == Max {
		t.ends[Max-1] = d
		return
	}
	t.names[t.n], t.ends[t.n] = name, d
	t.n++
}

// Add appends a phase measured elsewhere (by another process): it lasts
// d from the end of the previous phase, but ends no later than now.
func (t *Timeline) Add(name string, d time.Duration) {
	if t.start.IsZero() || d < 0 {
		return
	}
	end := min(t.End()+d, time.Since(t.start))
	if t.n == Max {
		t.ends[Max-1] = end
		return
	}
	t.names[t.n], t.ends[t.n] = name, end
	t.n++
}

// Len is the number of phases.
func (t *Timeline) Len() int { return t.n }

// Start is when the timeline began; zero when it did not.
func (t *Timeline) Start() time.Time { return t.start }

// Phase returns the name and the duration of phase i.
func (t *Timeline) Phase(i int) (string, time.Duration) {
	begin := time.Duration(0)
	if i > 0 {
		begin = t.ends[i-1]
	}
	return t.names[i], t.ends[i] - begin
}

// End is the time from the start to the end of the last phase.
func (t *Timeline) End() time.Duration {
	if t.n == 0 {
		return 0
	}
	return t.ends[t.n-1]
}

// Phase is one phase in a report.
type Phase struct {
	Name string  `json:"phase"`
	MS   float64 `json:"ms"`
}

// Report is a timeline as JSON shows it (verbose status, the job list).
type Report struct {
	Job     string    `json:"job,omitempty"`
	Start   time.Time `json:"start"`
	Phases  []Phase   `json:"phases"`
	TotalMS float64   `json:"totalMs"` // the start to the last phase's end
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

// Phases lists the phases (allocates: for reports, not the request path).
func (t *Timeline) Phases() []Phase {
	if t.n == 0 {
		return nil
	}
	out := make([]Phase, t.n)
	for i := range out {
		name, d := t.Phase(i)
		out[i] = Phase{Name: name, MS: ms(d)}
	}
	return out
}

// Report renders the timeline of job.
func (t *Timeline) Report(job string) Report {
	return Report{Job: job, Start: t.start, Phases: t.Phases(), TotalMS: ms(t.End())}
}

// String is "name=1.234ms name=0.5ms ...", for a log line.
func (t *Timeline) String() string {
	var b strings.Builder
	for i := 0; i < t.n; i++ {
		name, d := t.Phase(i)
		if i > 0 {
			b.WriteByte(' ')
		}
		b.WriteString(name)
		b.WriteByte('=')
		b.WriteString(strconv.FormatFloat(ms(d), 'f', 3, 64))
		b.WriteString("ms")
	}
	return b.String()
}

// Marker records phases: the engine's job is one.
type Marker interface{ Mark(phase string) }

type markerKey struct{}

// With returns a context whose Mark calls go to m.
func With(ctx context.Context, m Marker) context.Context {
	return context.WithValue(ctx, markerKey{}, m)
}

// Mark ends phase name of the timeline ctx carries; without one it does
// nothing.
func Mark(ctx context.Context, name string) {
	if m, ok := ctx.Value(markerKey{}).(Marker); ok {
		m.Mark(name)
	}
}
