package cmon

// Entry points into the C parsers for this package's tests (cgo cannot be
// used in _test.go files).

/*
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include "cmon.h"
#include "mon.h"

// hook_req_seen parses a request line as the monitor does: -1 when it is
// refused, else the mask of the fields it read (1 << CM_REQ_x).
static long long hook_req_seen(const char *p, size_t n)
{
	struct req r;
	int rc = req_parse(p, n, &r);
	unsigned seen = r.seen;
	req_free(&r);
	return rc < 0 ? -1 : (long long)seen;
}

static int hook_field_id(const char *name) { return cm_req_field_id(name); }

static int hook_json_valid(const char *p, size_t n)
{
	struct cm_json j = {p, p + n};
	if (cm_json_skip(&j) < 0)
		return 0;
	while (j.p < j.end && (*j.p == ' ' || *j.p == '\t' || *j.p == '\n' || *j.p == '\r'))
		j.p++;
	return j.p == j.end;
}

// hook_json_string decodes the JSON string value in p: 1 and the bytes
// (malloc'd) on success, 0 when it is not one, -1 when it holds a NUL.
static int hook_json_string(const char *p, size_t n, char **out, size_t *outlen)
{
	struct cm_json j = {p, p + n};
	char *s = NULL;
	if (cm_json_string(&j, &s, 1 << 20) < 0 || j.p != j.end) {
		free(s);
		struct cm_json k = {p, p + n};
		return n > 0 && *p == '"' && cm_json_skip(&k) == 0 && k.p == k.end ? -1 : 0;
	}
	*out = s;
	*outlen = s ? strlen(s) : 0;
	return 1;
}

static int hook_json_int64(const char *p, size_t n, long long *v)
{
	struct cm_json j = {p, p + n};
	int64_t x = 0;
	if (cm_json_int64(&j, &x) < 0 || j.p != j.end)
		return 0;
	*v = x;
	return 1;
}

static size_t hook_rfc3339(long long sec, long nsec, char *out)
{
	struct timespec ts = {sec, nsec};
	return cm_rfc3339(&ts, out);
}

static int hook_crilog(int fd, const char *stream, const char **chunks, const size_t *lens, int n, int eof, struct cm_linebuf *lb)
{
	struct timespec ts = {1767323045, 6};
	for (int i = 0; i < n; i++)
		if (cm_crilog_feed(fd, stream, lb, chunks[i], lens[i], &ts) < 0)
			return -1;
	if (eof && cm_crilog_eof(fd, stream, lb, &ts) < 0)
		return -1;
	return 0;
}
*/
import "C"

import (
	"runtime"
	"unsafe"
)

func jsonValid(b []byte) bool {
	p := C.CBytes(b)
	defer C.free(p)
	return C.hook_json_valid((*C.char)(p), C.size_t(len(b))) == 1
}

// jsonString decodes a JSON string with the C scanner: ok false when b is
// not a string, nul true when it is one holding a NUL.
func jsonString(b []byte) (s []byte, ok, nul bool) {
	p := C.CBytes(b)
	defer C.free(p)
	var out *C.char
	var n C.size_t
	switch C.hook_json_string((*C.char)(p), C.size_t(len(b)), &out, &n) {
	case 1:
		defer C.free(unsafe.Pointer(out))
		return C.GoBytes(unsafe.Pointer(out), C.int(n)), true, false
	case -1:
		return nil, false, true
	}
	return nil, false, false
}

func jsonInt64(b []byte) (int64, bool) {
	p := C.CBytes(b)
	defer C.free(p)
	var v C.longlong
	ok := C.hook_json_int64((*C.char)(p), C.size_t(len(b)), &v) == 1
	return int64(v), ok
}

// requestFields parses a request line with the monitor's parser and
// returns the JSON names of the fields it read; ok is false when it
// refuses the line.
func requestFields(line []byte) (names []string, ok bool) {
	p := C.CBytes(line)
	defer C.free(p)
	seen := C.hook_req_seen((*C.char)(p), C.size_t(len(line)))
	if seen < 0 {
		return nil, false
	}
	for id := 0; id < 64; id++ {
		if seen&(1<<id) != 0 {
			names = append(names, C.GoString(C.cm_req_field_name(C.int(id))))
		}
	}
	return names, true
}

// fieldID is the id protocol.h gives a request field, or -1.
func fieldID(name string) int {
	cs := C.CString(name)
	defer C.free(unsafe.Pointer(cs))
	return int(C.hook_field_id(cs))
}

// opKnown reports whether the monitor's dispatcher serves op.
func opKnown(op string) bool {
	cs := C.CString(op)
	defer C.free(unsafe.Pointer(cs))
	return C.op_known(cs) == 1
}

// rfc3339 formats a time with the C formatter.
func rfc3339(sec int64, nsec int32) string {
	var buf [64]C.char
	n := C.hook_rfc3339(C.longlong(sec), C.long(nsec), &buf[0])
	return C.GoStringN(&buf[0], C.int(n))
}

// criLog feeds chunks of one stream to the CRI log writer, with the time
// fixed at 2026-01-02T03:04:05.000000006Z, writing to fd.
func criLog(fd int, stream string, chunks [][]byte, eof bool) error {
	cs := C.CString(stream)
	defer C.free(unsafe.Pointer(cs))
	n, c := len(chunks), max(len(chunks), 1)
	ptrs := (*[1 << 20]*C.char)(C.malloc(C.size_t(c) * C.size_t(unsafe.Sizeof(uintptr(0)))))[:n:c]
	lens := (*[1 << 20]C.size_t)(C.malloc(C.size_t(c) * C.size_t(unsafe.Sizeof(C.size_t(0)))))[:n:c]
	defer C.free(unsafe.Pointer(&ptrs[:1][0]))
	defer C.free(unsafe.Pointer(&lens[:1][0]))
	for i, c := range chunks {
		ptrs[i] = (*C.char)(C.CBytes(c))
		lens[i] = C.size_t(len(c))
	}
	defer func() {
		for _, p := range ptrs {
			C.free(unsafe.Pointer(p))
		}
	}()
	var lb C.struct_cm_linebuf
	e := 0
	if eof {
		e = 1
	}
	r, err := C.hook_crilog(C.int(fd), cs, &ptrs[:1][0], &lens[:1][0], C.int(n), C.int(e), &lb)
	C.cm_linebuf_free(&lb)
	runtime.KeepAlive(chunks)
	if r < 0 {
		return err
	}
	return nil
}
