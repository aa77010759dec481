package cmon

import (
	"bytes"
	"encoding/json"
	"math/rand"
	"os"
	"strings"
	"testing"
	"time"
	"unicode/utf8"
)

// The C parsers against encoding/json.

func depth(b []byte) int { return bytes.Count(b, []byte("[")) + bytes.Count(b, []byte("{")) }

func FuzzJSONValid(f *testing.F) {
	for _, s := range []string{`{}`, `{"op":"state"}`, `[1,2,{"a":[true,false,null]}]`, `"\u00e9\ud83d\ude00"`, `-0.5e+3`,
		`{"a":}`, `[1,]`, `01`, `"\x"`, "\"a\nb\"", ` { "a" : "b" } `, `{"a":1}x`, `1.`, `-`, `tru`, `"\ud800"`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		if depth(b) >= 500 {
			return // the C scanner stops at 512 levels, Go at 10000
		}
		if got, want := jsonValid(b), json.Valid(b); got != want {
			t.Errorf("valid(%q) = %v, encoding/json says %v", b, got, want)
		}
	})
}

func FuzzJSONString(f *testing.F) {
	for _, s := range []string{`"abc"`, `""`, `"a\"b\\c\/d\b\f\n\r\t"`, `"\u0041\u00e9\u20ac\ud83d\ude00"`, `"\ud800x"`,
		`"\udc00"`, `"\ud800\u0041"`, `"\u0000"`, `"x\u0000y"`, `"\u12"`, `"<&>"`, `"\u2028"`, `5`, `"unterminated`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		if !utf8.Valid(b) {
			return // Go replaces invalid UTF-8, the monitor keeps the bytes
		}
		var want string
		err := json.Unmarshal(b, &want)
		if bytes.HasPrefix(bytes.TrimSpace(b), []byte("null")) || len(bytes.TrimSpace(b)) != len(b) {
			return
		}
		got, ok, nul := jsonString(b)
		switch {
		case err != nil:
			if ok || nul {
				t.Errorf("string(%q) accepted (%q), encoding/json: %v", b, got, err)
			}
		case strings.IndexByte(want, 0) >= 0:
			if !nul {
				t.Errorf("string(%q) with a NUL not refused: ok %v %q", b, ok, got)
			}
		case !ok || string(got) != want:
			t.Errorf("string(%q) = %q (ok %v), encoding/json: %q", b, got, ok, want)
		}
	})
}

func FuzzJSONInt64(f *testing.F) {
	for _, s := range []string{`0`, `-0`, `42`, `-9223372036854775808`, `9223372036854775807`, `9223372036854775808`,
		`-9223372036854775809`, `1.0`, `1e3`, `01`, `-`, `+1`, `99999999999999999999999`, `null`, `"1"`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		b = bytes.TrimSpace(b)
		var want int64
		err := json.Unmarshal(b, &want)
		got, ok := jsonInt64(b)
		if (err == nil) != ok || (ok && got != want) {
			t.Errorf("int64(%q) = %d (ok %v), encoding/json: %d, %v", b, got, ok, want, err)
		}
	})
}

func FuzzRFC3339(f *testing.F) {
	for _, v := range [][2]int64{{0, 0}, {1767323045, 6}, {1767323045, 100000000}, {1767323045, 999999999}, {951782400, 120}, {253402300799, 1}} {
		f.Add(v[0], v[1])
	}
	f.Fuzz(func(t *testing.T, sec, nsec int64) {
		sec, nsec = sec%253402300800, nsec%1000000000 // years 1970-9999
		if sec < 0 {
			sec = -sec
		}
		if nsec < 0 {
			nsec = -nsec
		}
		want := time.Unix(sec, nsec).UTC().Format(time.RFC3339Nano)
		if got := rfc3339(sec, int32(nsec)); got != want {
			t.Errorf("%d.%09d: %s, want %s", sec, nsec, got, want)
		}
	})
}

// The CRI log writer.

const maxLine = 16 << 10

func criRecords(t testing.TB, chunks [][]byte, eof bool) []string {
	t.Helper()
	f, err := os.CreateTemp(t.TempDir(), "log")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := criLog(int(f.Fd()), "stdout", chunks, eof); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(f.Name())
	if err != nil {
		t.Fatal(err)
	}
	if len(b) == 0 {
		return nil
	}
	if b[len(b)-1] != '\n' {
		t.Fatalf("log does not end with a newline: %.80q", b)
	}
	return strings.Split(string(b[:len(b)-1]), "\n")
}

const ts = "2026-01-02T03:04:05.000000006Z"

func TestCRILogFormat(t *testing.T) {
	long := strings.Repeat("x", maxLine*2+10)
	exact := strings.Repeat("y", maxLine)
	in := "hello\n\nworld\n" + long + "\n" + exact + "\n" + exact + "tail-no-newline"
	want := []string{
		ts + " stdout F hello",
		ts + " stdout F ",
		ts + " stdout F world",
		ts + " stdout P " + long[:maxLine],
		ts + " stdout P " + long[maxLine:2*maxLine],
		ts + " stdout F " + long[2*maxLine:],
		ts + " stdout F " + exact,
		ts + " stdout P " + exact,
		ts + " stdout P tail-no-newline",
	}
	// However the reads split the stream, the records are the same.
	for _, size := range []int{1, 7, 777, maxLine - 1, maxLine, maxLine + 1, len(in)} {
		var chunks [][]byte
		for i := 0; i < len(in); i += size {
			chunks = append(chunks, []byte(in[i:min(i+size, len(in))]))
		}
		got := criRecords(t, chunks, true)
		if len(got) != len(want) {
			t.Fatalf("reads of %d: %d records, want %d", size, len(got), len(want))
		}
		for i := range want {
			if got[i] != want[i] {
				t.Errorf("reads of %d: record %d: got %.60q (%d bytes), want %.60q (%d bytes)", size, i, got[i], len(got[i]), want[i], len(want[i]))
			}
		}
	}
	// Without EOF the unterminated line is held back.
	if got := criRecords(t, [][]byte{[]byte("a\nb")}, false); len(got) != 1 || got[0] != ts+" stdout F a" {
		t.Errorf("before EOF: %q", got)
	}
	if got := criRecords(t, nil, true); got != nil {
		t.Errorf("nothing: %q", got)
	}
	// `echo -n DONE`: kubelet must read back "DONE", not "DONE\n".
	if got := criRecords(t, [][]byte{[]byte("DONE")}, true); len(got) != 1 || got[0] != ts+" stdout P DONE" {
		t.Errorf("unterminated output: %q", got)
	}
	// A pending line of exactly the maximum is one partial record at EOF.
	exactOnly := strings.Repeat("z", maxLine)
	if got := criRecords(t, [][]byte{[]byte(exactOnly)}, true); len(got) != 1 || got[0] != ts+" stdout P "+exactOnly {
		t.Errorf("unterminated line of %d bytes: %d records", maxLine, len(got))
	}
}

// FuzzCRILog checks, for any output split into any reads, that the records
// are well formed, the same as for one read, and give the output back.
func FuzzCRILog(f *testing.F) {
	f.Add([]byte("a\nbb\n\nccc"), int64(1))
	f.Add(bytes.Repeat([]byte("z"), maxLine*3+5), int64(2))
	f.Add(append(bytes.Repeat([]byte("q"), maxLine), '\n'), int64(3))
	f.Fuzz(func(t *testing.T, in []byte, seed int64) {
		r := rand.New(rand.NewSource(seed))
		var chunks [][]byte
		for rest := in; len(rest) > 0; {
			n := 1 + r.Intn(min(len(rest), 2*maxLine))
			chunks = append(chunks, rest[:n])
			rest = rest[n:]
		}
		got := criRecords(t, chunks, true)
		if whole := criRecords(t, [][]byte{in}, true); strings.Join(got, "\n") != strings.Join(whole, "\n") {
			t.Fatalf("records depend on how the output was read")
		}
		var back []byte
		for i, rec := range got {
			text, ok := strings.CutPrefix(rec, ts+" stdout ")
			if !ok || len(text) < 2 || text[1] != ' ' {
				t.Fatalf("bad record %.80q", rec)
			}
			tag, text := text[0], text[2:]
			// A short partial record only ends output without a newline.
			last := i == len(got)-1
			if len(text) > maxLine || (tag == 'P' && len(text) != maxLine && !last) || (tag != 'P' && tag != 'F') {
				t.Fatalf("bad record: %c with %d bytes", tag, len(text))
			}
			back = append(back, text...)
			if tag == 'F' {
				back = append(back, '\n')
			}
		}
		if !bytes.Equal(back, in) {
			t.Fatalf("records give %d bytes back, want %d", len(back), len(in))
		}
	})
}
