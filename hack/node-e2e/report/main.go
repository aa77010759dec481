// Command report summarises a ginkgo JSON report of hack/node-e2e.sh: the
// counts of the specs that ran (passed, failed, skipped by the spec itself
// with its reason), every failed spec with the first line of its failure,
// every skipped spec with its reason; and, with --tsv, one line per spec
// (state, name, reason) for comparing two runs. Specs the focus left out
// are not counted. Exit status 0 unless the report cannot be read.
//
//	go run ./hack/node-e2e/report [--runtime NAME] [--tsv FILE] report.json
//	go run ./hack/node-e2e/report --compare shim.tsv containerd.tsv
//
// --compare puts two runs' TSV files side by side: the specs that did not
// pass on the first, grouped by how the second did.
package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"
	"sort"
	"strings"
	"time"
)

// Just the fields of ginkgo v2's types.Report this needs.
type suiteReport struct {
	SuiteDescription string
	RunTime          time.Duration
	SpecReports      []specReport
}

type specReport struct {
	ContainerHierarchyTexts []string
	LeafNodeType            string
	LeafNodeText            string
	State                   string
	RunTime                 time.Duration
	Failure                 struct {
		Message  string
		Location struct {
			FileName   string
			LineNumber int
		}
	}
}

func (s specReport) name() string {
	return strings.Join(append(append([]string{}, s.ContainerHierarchyTexts...), s.LeafNodeText), " ")
}

// reason is the first line of the failure or skip message.
func (s specReport) reason() string {
	m := strings.TrimSpace(s.Failure.Message)
	if i := strings.IndexByte(m, '\n'); i >= 0 {
		m = m[:i]
	}
	return m
}

// spec is one selected spec, by outcome.
type spec struct {
	state, name, reason string
}

func main() {
	runtime := flag.String("runtime", "", "runtime name for the heading")
	tsv := flag.String("tsv", "", "also write state<TAB>name<TAB>reason per spec to this file")
	cmp := flag.Bool("compare", false, "compare two TSV files (first run, second run)")
	flag.Parse()
	if *cmp {
		if flag.NArg() != 2 {
			fmt.Fprintln(os.Stderr, "usage: report --compare FIRST.tsv SECOND.tsv")
			os.Exit(2)
		}
		if err := compare(os.Stdout, flag.Arg(0), flag.Arg(1)); err != nil {
			fmt.Fprintln(os.Stderr, "report:", err)
			os.Exit(1)
		}
		return
	}
	if flag.NArg() != 1 {
		fmt.Fprintln(os.Stderr, "usage: report [--runtime NAME] [--tsv FILE] report.json")
		os.Exit(2)
	}
	specs, suiteErrs, err := read(flag.Arg(0))
	if err != nil {
		fmt.Fprintln(os.Stderr, "report:", err)
		os.Exit(1)
	}
	if err := summary(os.Stdout, *runtime, specs, suiteErrs); err != nil {
		fmt.Fprintln(os.Stderr, "report:", err)
		os.Exit(1)
	}
	if *tsv != "" {
		if err := writeTSV(*tsv, specs); err != nil {
			fmt.Fprintln(os.Stderr, "report:", err)
			os.Exit(1)
		}
	}
}

func read(path string) (specs []spec, suiteErrs []string, err error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, nil, err
	}
	var reports []suiteReport
	if err := json.Unmarshal(b, &reports); err != nil {
		return nil, nil, fmt.Errorf("%s: %w", path, err)
	}
	for _, r := range reports {
		for _, s := range r.SpecReports {
			if s.LeafNodeType != "It" {
				// Suite set-up and tear-down: only their failures matter.
				if s.State != "passed" && s.State != "skipped" {
					suiteErrs = append(suiteErrs, fmt.Sprintf("%s %s: %s", s.LeafNodeType, s.State, s.reason()))
				}
				continue
			}
			// A spec the focus left out is "skipped" with no message; a
			// spec that skipped itself says why.
			if s.State == "skipped" && s.Failure.Message == "" {
				continue
			}
			specs = append(specs, spec{state: s.State, name: s.name(), reason: s.reason()})
		}
	}
	sort.Slice(specs, func(i, j int) bool { return specs[i].name < specs[j].name })
	return specs, suiteErrs, nil
}

func summary(w io.Writer, runtime string, specs []spec, suiteErrs []string) error {
	count := map[string]int{}
	for _, s := range specs {
		count[s.state]++
	}
	failed := len(specs) - count["passed"] - count["skipped"]
	head := "node e2e"
	if runtime != "" {
		head += " on " + runtime
	}
	fmt.Fprintf(w, "%s: %d specs ran: %d passed, %d failed, %d skipped\n", head, len(specs), count["passed"], failed, count["skipped"])
	for _, e := range suiteErrs {
		fmt.Fprintf(w, "SUITE   %s\n", e)
	}
	for _, s := range specs {
		switch s.state {
		case "passed":
		case "skipped":
			fmt.Fprintf(w, "SKIPPED %s\n        %s\n", s.name, s.reason)
		default:
			fmt.Fprintf(w, "%-7s %s\n        %s\n", strings.ToUpper(s.state), s.name, s.reason)
		}
	}
	return nil
}

func writeTSV(path string, specs []spec) error {
	var b strings.Builder
	for _, s := range specs {
		fmt.Fprintf(&b, "%s\t%s\t%s\n", s.state, s.name, strings.ReplaceAll(s.reason, "\t", " "))
	}
	return os.WriteFile(path, []byte(b.String()), 0o644)
}

func readTSV(path string) (map[string]spec, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	out := map[string]spec{}
	for _, line := range strings.Split(strings.TrimSuffix(string(b), "\n"), "\n") {
		if line == "" {
			continue
		}
		f := strings.SplitN(line, "\t", 3)
		if len(f) != 3 {
			return nil, fmt.Errorf("%s: bad line %q", path, line)
		}
		out[f[1]] = spec{state: f[0], name: f[1], reason: f[2]}
	}
	return out, nil
}

// compare lists the specs that did not pass in the first run, by their
// outcome in the second: passed there (the first runtime's failures),
// failed there too (this host, the images or the suite), not run there.
func compare(w io.Writer, first, second string) error {
	a, err := readTSV(first)
	if err != nil {
		return err
	}
	b, err := readTSV(second)
	if err != nil {
		return err
	}
	groups := map[string][]string{}
	for name, s := range a {
		if s.state == "passed" {
			continue
		}
		other, ok := b[name]
		key := "not run in " + second
		if ok {
			key = other.state + " in " + second
		}
		groups[key] = append(groups[key], fmt.Sprintf("%-8s %s\n         %s", s.state, name, s.reason))
	}
	keys := make([]string, 0, len(groups))
	for k := range groups {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		sort.Strings(groups[k])
		fmt.Fprintf(w, "== %d not passed in %s, %s\n", len(groups[k]), first, k)
		for _, l := range groups[k] {
			fmt.Fprintln(w, l)
		}
	}
	return nil
}
