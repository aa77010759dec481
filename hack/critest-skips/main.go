// Command critest-skips compares the specs critest skipped (its JUnit
// report) with the list of expected skips kept in the repository, so a
// spec that starts being skipped fails CI instead of hiding.
//
//	go run ./hack/critest-skips -junit critest.xml -list hack/critest-skips.txt
//
// The list has one spec name per line (as the report names it), each
// under a "reason:" line that says why it is skipped; '#' starts a
// comment line. Exit status 1 when critest skipped a spec the list does
// not have; a listed spec that ran is reported (the list should lose it)
// but is not an error. -print writes the report's skips in the list's
// format, grouped by critest's skip message, to start or refresh a list.
package main

import (
	"bufio"
	"encoding/xml"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"sort"
	"strings"
)

func main() {
	junit := flag.String("junit", "", "critest JUnit report (-ginkgo.junit-report)")
	list := flag.String("list", "hack/critest-skips.txt", "expected skips")
	print := flag.Bool("print", false, "print the report's skips in the list format and exit")
	flag.Parse()
	if err := run(*junit, *list, *print, os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "critest-skips:", err)
		os.Exit(1)
	}
}

func run(junitPath, listPath string, printOnly bool, out io.Writer) error {
	f, err := os.Open(junitPath)
	if err != nil {
		return err
	}
	defer f.Close()
	skipped, ran, err := readReport(f)
	if err != nil {
		return fmt.Errorf("%s: %w", junitPath, err)
	}
	if printOnly {
		printList(out, skipped)
		return nil
	}
	lf, err := os.Open(listPath)
	if err != nil {
		return err
	}
	defer lf.Close()
	want, err := readList(lf)
	if err != nil {
		return fmt.Errorf("%s: %w", listPath, err)
	}
	unlisted, nowRun := compare(skipped, ran, want)
	for _, n := range nowRun {
		fmt.Fprintf(out, "critest-skips: listed as skipped but ran (drop it from %s): %s\n", listPath, n)
	}
	for _, n := range unlisted {
		fmt.Fprintf(out, "critest-skips: NEW SKIP, not in %s: %s (%s)\n", listPath, n, skipped[n])
	}
	fmt.Fprintf(out, "critest-skips: %d specs skipped, %d listed, %d new\n", len(skipped), len(want), len(unlisted))
	if len(unlisted) > 0 {
		return fmt.Errorf("%d specs skipped that %s does not list", len(unlisted), listPath)
	}
	return nil
}

type testcase struct {
	Name    string `xml:"name,attr"`
	Status  string `xml:"status,attr"`
	Skipped *struct {
		Message string `xml:"message,attr"`
	} `xml:"skipped"`
}

// readReport returns the skipped specs (name → skip message) and the
// names of those that ran.
func readReport(r io.Reader) (map[string]string, map[string]bool, error) {
	var doc struct {
		Suites []struct {
			Cases []testcase `xml:"testcase"`
		} `xml:"testsuite"`
	}
	if err := xml.NewDecoder(r).Decode(&doc); err != nil {
		return nil, nil, err
	}
	skipped, ran := map[string]string{}, map[string]bool{}
	n := 0
	for _, s := range doc.Suites {
		for _, c := range s.Cases {
			n++
			if c.Skipped != nil || c.Status == "skipped" {
				msg := ""
				if c.Skipped != nil {
					msg = c.Skipped.Message
				}
				skipped[c.Name] = msg
			} else {
				ran[c.Name] = true
			}
		}
	}
	if n == 0 {
		return nil, nil, errors.New("no test cases in the report")
	}
	return skipped, ran, nil
}

// readList returns the listed specs with their reasons.
func readList(r io.Reader) (map[string]string, error) {
	want := map[string]string{}
	reason := ""
	s := bufio.NewScanner(r)
	s.Buffer(make([]byte, 64<<10), 1<<20)
	for ln := 1; s.Scan(); ln++ {
		l := strings.TrimSpace(s.Text())
		switch {
		case l == "" || strings.HasPrefix(l, "#"):
		case strings.HasPrefix(l, "reason:"):
			reason = strings.TrimSpace(strings.TrimPrefix(l, "reason:"))
			if reason == "" {
				return nil, fmt.Errorf("line %d: empty reason", ln)
			}
		case reason == "":
			return nil, fmt.Errorf("line %d: spec without a reason line before it: %s", ln, l)
		default:
			if _, dup := want[l]; dup {
				return nil, fmt.Errorf("line %d: listed twice: %s", ln, l)
			}
			want[l] = reason
		}
	}
	return want, s.Err()
}

// compare returns the skipped specs the list lacks and the listed specs
// that ran (a listed spec the report does not name at all is neither:
// critest registers some groups only where the host has them).
func compare(skipped map[string]string, ran map[string]bool, want map[string]string) (unlisted, nowRun []string) {
	for n := range skipped {
		if _, ok := want[n]; !ok {
			unlisted = append(unlisted, n)
		}
	}
	for n := range want {
		if ran[n] {
			nowRun = append(nowRun, n)
		}
	}
	sort.Strings(unlisted)
	sort.Strings(nowRun)
	return unlisted, nowRun
}

func printList(w io.Writer, skipped map[string]string) {
	byMsg := map[string][]string{}
	for n, m := range skipped {
		byMsg[m] = append(byMsg[m], n)
	}
	msgs := make([]string, 0, len(byMsg))
	for m := range byMsg {
		msgs = append(msgs, m)
	}
	sort.Strings(msgs)
	for i, m := range msgs {
		if i > 0 {
			fmt.Fprintln(w)
		}
		fmt.Fprintf(w, "reason: %s\n", m)
		sort.Strings(byMsg[m])
		for _, n := range byMsg[m] {
			fmt.Fprintln(w, n)
		}
	}
}
