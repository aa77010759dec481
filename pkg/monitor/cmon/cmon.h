/* cmon.h: the C per-pod monitor's utilities: buffers, JSON, time, logging
 * and the CRI log format (util.c, crilog.c). See cmon.go and mon.h. */
#ifndef SHIM_CMON_H
#define SHIM_CMON_H

#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>
#include <time.h>

/* ---- growable byte buffers (util.c) ----
 * Every append is a no-op once an allocation failed or max was hit; the
 * caller checks failed once, at the end. */
struct cm_buf {
	char *p;
	size_t len, cap;
	size_t max; /* 0: no limit */
	int failed;
};

int cm_buf_reserve(struct cm_buf *b, size_t extra);
void cm_buf_add(struct cm_buf *b, const void *p, size_t n);
void cm_buf_str(struct cm_buf *b, const char *s);
void cm_buf_printf(struct cm_buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* cm_buf_jstr appends s as a quoted JSON string. */
void cm_buf_jstr(struct cm_buf *b, const char *s, size_t n);
/* cm_buf_base64 appends p as a quoted standard-base64 JSON string (Go's
 * encoding of a []byte). */
void cm_buf_base64(struct cm_buf *b, const unsigned char *p, size_t n);
void cm_buf_free(struct cm_buf *b);

/* ---- JSON scanning (util.c) ----
 * Enough JSON to read the top-level fields of one object, validating the
 * whole text, and to skip (or take the span of) any nested value. */
struct cm_json {
	const char *p, *end;
};

#define CM_JSON_MAXKEY 64
#define CM_JSON_MAXDEPTH 512

/* cm_json_object calls field for every member of the object that is the
 * whole text (whitespace aside). key is NUL-terminated ("" when longer
 * than CM_JSON_MAXKEY: no known key is). field must consume exactly one
 * value with the cm_json_* readers and return 0, or -1 to stop. */
typedef int (*cm_json_field)(void *arg, const char *key, struct cm_json *j);
int cm_json_object(const char *s, size_t n, cm_json_field field, void *arg);

/* Value readers. Each consumes one value and returns 0, or -1 on a syntax
 * error or a value of another type. A null leaves *out unchanged. */
int cm_json_skip(struct cm_json *j);
/* cm_json_string: a malloc'd NUL-terminated copy (freed and replaced when
 * *out was set), at most max bytes; strings holding a NUL are refused. */
int cm_json_string(struct cm_json *j, char **out, size_t max);
int cm_json_int64(struct cm_json *j, int64_t *out);
int cm_json_bool(struct cm_json *j, int *out);
/* cm_json_raw: the span of the value in the text (NULL for null). */
int cm_json_raw(struct cm_json *j, const char **start, size_t *len);

/* ---- time and logging (util.c) ---- */
int64_t cm_now_ms(void); /* CLOCK_MONOTONIC */
int64_t cm_now_ns(void); /* CLOCK_MONOTONIC */
/* cm_rfc3339 formats ts (UTC) like Go's time.RFC3339Nano; out holds >= 40. */
size_t cm_rfc3339(const struct timespec *ts, char *out);

enum { CM_DEBUG, CM_INFO, CM_WARN, CM_ERROR };
extern int cm_log_level;
extern const char *cm_log_pod;
void cm_log(int level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

int cm_write_full(int fd, const void *p, size_t n);

/* ---- CRI log files (crilog.c) ---- */
#define CM_MAX_LOG_LINE (16 << 10)

/* A stream of a container (stdout or stderr) being copied to its log: the
 * text of the current line not yet written (shorter than a full record)
 * is kept in pend, allocated only while there is some. */
struct cm_linebuf {
	char *pend;
	size_t plen;
};

/* cm_crilog_feed writes the records of n bytes of stream ("stdout" or
 * "stderr") to logfd (-1: discard). cm_crilog_eof writes a pending
 * unterminated line as a full record. Both return -1 with errno when a
 * write failed (the records are lost), else 0. */
int cm_crilog_feed(int logfd, const char *stream, struct cm_linebuf *lb, const char *data, size_t n,
		   const struct timespec *now);
int cm_crilog_eof(int logfd, const char *stream, struct cm_linebuf *lb, const struct timespec *now);
void cm_linebuf_free(struct cm_linebuf *lb);

#endif
