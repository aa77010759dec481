package monitor

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"os"
	"sync"
	"time"
)

// maxLogLine is where a long line is split into partial ("P") records.
const maxLogLine = 16 << 10

// logFile is a container's CRI log: "<RFC3339Nano> <stream> <F|P> <text>\n"
// lines from stdout and stderr, appended to one file that kubelet rotates
// (and asks to reopen through ReopenContainerLog).
type logFile struct {
	mu   sync.Mutex
	path string
	f    *os.File
	w    *bufio.Writer
	now  func() time.Time
}

func openLog(path string) (*logFile, error) {
	l := &logFile{path: path, now: time.Now}
	if path == "" {
		return l, nil
	}
	return l, l.reopen()
}

func (l *logFile) reopen() error {
	if l.path == "" {
		return nil
	}
	f, err := os.OpenFile(l.path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o640)
	if err != nil {
		return err
	}
	l.mu.Lock()
	old := l.f
	if l.w != nil {
		l.w.Flush()
	}
	l.f, l.w = f, bufio.NewWriterSize(f, 32<<10)
	l.mu.Unlock()
	if old != nil {
		old.Close()
	}
	return nil
}

func (l *logFile) record(stream string, partial bool, text []byte) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.w == nil {
		return
	}
	tag := " F "
	if partial {
		tag = " P "
	}
	l.w.WriteString(l.now().UTC().Format(time.RFC3339Nano))
	l.w.WriteByte(' ')
	l.w.WriteString(stream)
	l.w.WriteString(tag)
	l.w.Write(text)
	l.w.WriteByte('\n')
}

func (l *logFile) flush() {
	l.mu.Lock()
	if l.w != nil {
		l.w.Flush()
	}
	l.mu.Unlock()
}

func (l *logFile) close() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.f == nil {
		return nil
	}
	l.w.Flush()
	err := l.f.Close()
	l.f, l.w = nil, nil
	return err
}

// copyStream reads r until EOF and writes it to the log as stream
// ("stdout" or "stderr"), one record per line, lines longer than
// maxLogLine split into partial records; a last line without a newline is
// written as a full record at EOF. Each read is flushed to the file.
func (l *logFile) copyStream(stream string, r io.Reader) error {
	buf := make([]byte, 32<<10)
	var line []byte // pending text of the current line, < maxLogLine
	for {
		n, err := r.Read(buf)
		data := buf[:n]
		for len(data) > 0 {
			i := bytes.IndexByte(data, '\n')
			if i < 0 {
				line = append(line, data...)
				data = nil
			} else {
				line = append(line, data[:i]...)
				data = data[i+1:]
				l.emit(stream, &line, true)
				continue
			}
			l.emit(stream, &line, false)
		}
		if n > 0 {
			l.flush()
		}
		if err != nil {
			if len(line) > 0 {
				l.record(stream, false, line)
				l.flush()
			}
			if errors.Is(err, io.EOF) || errors.Is(err, os.ErrClosed) {
				return nil
			}
			return err
		}
	}
}

// emit writes the pending line: whole when it ended (complete), and any
// full maxLogLine chunks as partial records.
func (l *logFile) emit(stream string, line *[]byte, complete bool) {
	b := *line
	for len(b) > maxLogLine || (len(b) == maxLogLine && !complete) {
		l.record(stream, true, b[:maxLogLine])
		b = b[maxLogLine:]
	}
	if complete {
		l.record(stream, false, b)
		b = b[:0]
	}
	*line = append((*line)[:0], b...)
}
