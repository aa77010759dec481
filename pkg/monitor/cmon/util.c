/* util.c: buffers, JSON, time and logging for the C monitor. */
#include "cmon.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* ---- buffers ---- */

int cm_buf_reserve(struct cm_buf *b, size_t extra)
{
	if (b->failed)
		return -1;
	if (extra <= b->cap - b->len)
		return 0;
	if (extra > SIZE_MAX / 2 - b->len || (b->max && b->len + extra > b->max)) {
		b->failed = 1;
		return -1;
	}
	size_t need = b->len + extra, cap = b->cap ? b->cap : 256;
	while (cap < need)
		cap *= 2;
	if (b->max && cap > b->max)
		cap = b->max;
	char *p = realloc(b->p, cap);
	if (p == NULL) {
		b->failed = 1;
		return -1;
	}
	b->p = p;
	b->cap = cap;
	return 0;
}

void cm_buf_add(struct cm_buf *b, const void *p, size_t n)
{
	if (n == 0 || cm_buf_reserve(b, n) < 0)
		return;
	memcpy(b->p + b->len, p, n);
	b->len += n;
}

void cm_buf_str(struct cm_buf *b, const char *s) { cm_buf_add(b, s, strlen(s)); }

void cm_buf_printf(struct cm_buf *b, const char *fmt, ...)
{
	char tmp[512];
	va_list ap;
	va_start(ap, fmt);
	int n = vsnprintf(tmp, sizeof(tmp), fmt, ap);
	va_end(ap);
	if (n < 0) {
		b->failed = 1;
		return;
	}
	if ((size_t)n < sizeof(tmp)) {
		cm_buf_add(b, tmp, (size_t)n);
		return;
	}
	if (cm_buf_reserve(b, (size_t)n + 1) < 0)
		return;
	va_start(ap, fmt);
	vsnprintf(b->p + b->len, (size_t)n + 1, fmt, ap);
	va_end(ap);
	b->len += (size_t)n;
}

void cm_buf_jstr(struct cm_buf *b, const char *s, size_t n)
{
	static const char hex[] = "0123456789abcdef";
	if (cm_buf_reserve(b, n + 2) < 0)
		return;
	b->p[b->len++] = '"';
	size_t run = 0; /* bytes copied as they are, pending */
	for (size_t i = 0; i < n; i++) {
		unsigned char ch = (unsigned char)s[i];
		char esc[6];
		size_t elen = 0;
		switch (ch) {
		case '"': esc[0] = '\\', esc[1] = '"', elen = 2; break;
		case '\\': esc[0] = '\\', esc[1] = '\\', elen = 2; break;
		case '\n': esc[0] = '\\', esc[1] = 'n', elen = 2; break;
		case '\r': esc[0] = '\\', esc[1] = 'r', elen = 2; break;
		case '\t': esc[0] = '\\', esc[1] = 't', elen = 2; break;
		default:
			if (ch < 0x20 || ch == 0x7f) {
				memcpy(esc, "\\u00", 4);
				esc[4] = hex[ch >> 4];
				esc[5] = hex[ch & 15];
				elen = 6;
			}
		}
		if (elen == 0) {
			run++;
			continue;
		}
		cm_buf_add(b, s + i - run, run);
		run = 0;
		cm_buf_add(b, esc, elen);
	}
	cm_buf_add(b, s + n - run, run);
	cm_buf_add(b, "\"", 1);
}

void cm_buf_base64(struct cm_buf *b, const unsigned char *p, size_t n)
{
	static const char tab[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
	size_t out = (n + 2) / 3 * 4;
	if (cm_buf_reserve(b, out + 2) < 0)
		return;
	char *d = b->p + b->len;
	*d++ = '"';
	size_t i = 0;
	for (; i + 3 <= n; i += 3) {
		uint32_t v = (uint32_t)p[i] << 16 | (uint32_t)p[i + 1] << 8 | p[i + 2];
		*d++ = tab[v >> 18];
		*d++ = tab[(v >> 12) & 63];
		*d++ = tab[(v >> 6) & 63];
		*d++ = tab[v & 63];
	}
	if (n - i == 1) {
		uint32_t v = (uint32_t)p[i] << 16;
		*d++ = tab[v >> 18];
		*d++ = tab[(v >> 12) & 63];
		*d++ = '=';
		*d++ = '=';
	} else if (n - i == 2) {
		uint32_t v = (uint32_t)p[i] << 16 | (uint32_t)p[i + 1] << 8;
		*d++ = tab[v >> 18];
		*d++ = tab[(v >> 12) & 63];
		*d++ = tab[(v >> 6) & 63];
		*d++ = '=';
	}
	*d++ = '"';
	b->len = (size_t)(d - b->p);
}

void cm_buf_free(struct cm_buf *b)
{
	free(b->p);
	b->p = NULL;
	b->len = b->cap = 0;
	b->failed = 0;
}

/* ---- JSON ---- */

static void ws(struct cm_json *j)
{
	while (j->p < j->end && (*j->p == ' ' || *j->p == '\t' || *j->p == '\n' || *j->p == '\r'))
		j->p++;
}

static int peek(struct cm_json *j) { return j->p < j->end ? (unsigned char)*j->p : -1; }

static int hexval(int c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

static int hex4(const char *p, const char *end, uint32_t *v)
{
	if (end - p < 4)
		return -1;
	*v = 0;
	for (int i = 0; i < 4; i++) {
		int h = hexval((unsigned char)p[i]);
		if (h < 0)
			return -1;
		*v = *v << 4 | (uint32_t)h;
	}
	return 0;
}

static size_t utf8(uint32_t r, char *out)
{
	if (r < 0x80) {
		out[0] = (char)r;
		return 1;
	}
	if (r < 0x800) {
		out[0] = (char)(0xc0 | r >> 6);
		out[1] = (char)(0x80 | (r & 0x3f));
		return 2;
	}
	if (r < 0x10000) {
		out[0] = (char)(0xe0 | r >> 12);
		out[1] = (char)(0x80 | ((r >> 6) & 0x3f));
		out[2] = (char)(0x80 | (r & 0x3f));
		return 3;
	}
	out[0] = (char)(0xf0 | r >> 18);
	out[1] = (char)(0x80 | ((r >> 12) & 0x3f));
	out[2] = (char)(0x80 | ((r >> 6) & 0x3f));
	out[3] = (char)(0x80 | (r & 0x3f));
	return 4;
}

/* scan_string reads the string at j->p (at its opening quote). With dst,
 * it writes the decoded bytes (at most cap of them); it always sets *len
 * to the decoded length and *nul when the text holds a NUL. Decoding is
 * Go's: a lone surrogate becomes U+FFFD. */
static int scan_string(struct cm_json *j, char *dst, size_t cap, size_t *len, int *nul)
{
	if (peek(j) != '"')
		return -1;
	j->p++;
	size_t n = 0;
	*nul = 0;
	for (;;) {
		if (j->p >= j->end)
			return -1;
		unsigned char c = (unsigned char)*j->p;
		if (c == '"') {
			j->p++;
			*len = n;
			return 0;
		}
		if (c < 0x20)
			return -1;
		if (c != '\\') {
			if (dst && n < cap)
				dst[n] = (char)c;
			n++;
			j->p++;
			continue;
		}
		if (j->end - j->p < 2)
			return -1;
		char e = j->p[1];
		char out[4];
		size_t olen = 1;
		j->p += 2;
		switch (e) {
		case '"': out[0] = '"'; break;
		case '\\': out[0] = '\\'; break;
		case '/': out[0] = '/'; break;
		case 'b': out[0] = '\b'; break;
		case 'f': out[0] = '\f'; break;
		case 'n': out[0] = '\n'; break;
		case 'r': out[0] = '\r'; break;
		case 't': out[0] = '\t'; break;
		case 'u': {
			uint32_t r;
			if (hex4(j->p, j->end, &r) < 0)
				return -1;
			j->p += 4;
			if (r >= 0xd800 && r < 0xdc00) {
				uint32_t lo;
				if (j->end - j->p >= 6 && j->p[0] == '\\' && j->p[1] == 'u' &&
				    hex4(j->p + 2, j->end, &lo) == 0 && lo >= 0xdc00 && lo < 0xe000) {
					j->p += 6;
					r = 0x10000 + ((r - 0xd800) << 10) + (lo - 0xdc00);
				} else {
					r = 0xfffd;
				}
			} else if (r >= 0xdc00 && r < 0xe000) {
				r = 0xfffd;
			}
			if (r == 0)
				*nul = 1;
			olen = utf8(r, out);
			break;
		}
		default:
			return -1;
		}
		for (size_t i = 0; i < olen; i++, n++)
			if (dst && n < cap)
				dst[n] = out[i];
	}
}

static int skip_literal(struct cm_json *j, const char *lit)
{
	size_t n = strlen(lit);
	if ((size_t)(j->end - j->p) < n || memcmp(j->p, lit, n) != 0)
		return -1;
	j->p += n;
	return 0;
}

static int isdig(int c) { return c >= '0' && c <= '9'; }

static int skip_number(struct cm_json *j)
{
	if (peek(j) == '-')
		j->p++;
	if (peek(j) == '0') {
		j->p++;
	} else if (isdig(peek(j))) {
		while (isdig(peek(j)))
			j->p++;
	} else {
		return -1;
	}
	if (peek(j) == '.') {
		j->p++;
		if (!isdig(peek(j)))
			return -1;
		while (isdig(peek(j)))
			j->p++;
	}
	if (peek(j) == 'e' || peek(j) == 'E') {
		j->p++;
		if (peek(j) == '+' || peek(j) == '-')
			j->p++;
		if (!isdig(peek(j)))
			return -1;
		while (isdig(peek(j)))
			j->p++;
	}
	return 0;
}

/* cm_json_skip validates and skips one value, iteratively (the nesting
 * depth is bounded by a small bit of state, not by the C stack). */
int cm_json_skip(struct cm_json *j)
{
	char stack[CM_JSON_MAXDEPTH];
	int depth = 0;
	size_t len;
	int nul;
value:
	ws(j);
	switch (peek(j)) {
	case '{':
		if (depth == CM_JSON_MAXDEPTH)
			return -1;
		stack[depth++] = '}';
		j->p++;
		ws(j);
		if (peek(j) == '}') {
			j->p++;
			depth--;
			goto after;
		}
		goto key;
	case '[':
		if (depth == CM_JSON_MAXDEPTH)
			return -1;
		stack[depth++] = ']';
		j->p++;
		ws(j);
		if (peek(j) == ']') {
			j->p++;
			depth--;
			goto after;
		}
		goto value;
	case '"':
		if (scan_string(j, NULL, 0, &len, &nul) < 0)
			return -1;
		goto after;
	case 't':
		if (skip_literal(j, "true") < 0)
			return -1;
		goto after;
	case 'f':
		if (skip_literal(j, "false") < 0)
			return -1;
		goto after;
	case 'n':
		if (skip_literal(j, "null") < 0)
			return -1;
		goto after;
	default:
		if (skip_number(j) < 0)
			return -1;
		goto after;
	}
key:
	ws(j);
	if (scan_string(j, NULL, 0, &len, &nul) < 0)
		return -1;
	ws(j);
	if (peek(j) != ':')
		return -1;
	j->p++;
	goto value;
after:
	if (depth == 0)
		return 0;
	ws(j);
	if (peek(j) == ',') {
		j->p++;
		if (stack[depth - 1] == '}')
			goto key;
		goto value;
	}
	if (peek(j) == stack[depth - 1]) {
		j->p++;
		depth--;
		goto after;
	}
	return -1;
}

static int is_null(struct cm_json *j)
{
	ws(j);
	if (j->end - j->p >= 4 && memcmp(j->p, "null", 4) == 0) {
		j->p += 4;
		return 1;
	}
	return 0;
}

int cm_json_string(struct cm_json *j, char **out, size_t max)
{
	if (is_null(j))
		return 0;
	struct cm_json probe = *j;
	size_t len;
	int nul;
	if (scan_string(&probe, NULL, 0, &len, &nul) < 0 || nul || len > max)
		return -1;
	char *s = malloc(len + 1);
	if (s == NULL)
		return -1;
	scan_string(j, s, len, &len, &nul);
	s[len] = '\0';
	free(*out);
	*out = s;
	return 0;
}

int cm_json_int64(struct cm_json *j, int64_t *out)
{
	if (is_null(j))
		return 0;
	const char *start = j->p;
	if (skip_number(j) < 0)
		return -1;
	int neg = *start == '-';
	uint64_t v = 0;
	for (const char *p = start + neg; p < j->p; p++) {
		if (!isdig((unsigned char)*p))
			return -1; /* a fraction or an exponent: not an integer */
		if (v > (UINT64_MAX - 9) / 10)
			return -1;
		v = v * 10 + (uint64_t)(*p - '0');
	}
	if (v > (uint64_t)INT64_MAX + (uint64_t)neg)
		return -1;
	*out = neg ? (int64_t)(0 - v) : (int64_t)v;
	return 0;
}

int cm_json_bool(struct cm_json *j, int *out)
{
	if (is_null(j))
		return 0;
	if (skip_literal(j, "true") == 0) {
		*out = 1;
		return 0;
	}
	if (skip_literal(j, "false") == 0) {
		*out = 0;
		return 0;
	}
	return -1;
}

int cm_json_raw(struct cm_json *j, const char **start, size_t *len)
{
	ws(j);
	if (is_null(j)) {
		*start = NULL;
		*len = 0;
		return 0;
	}
	const char *s = j->p;
	if (cm_json_skip(j) < 0)
		return -1;
	*start = s;
	*len = (size_t)(j->p - s);
	return 0;
}

int cm_json_object(const char *s, size_t n, cm_json_field field, void *arg)
{
	struct cm_json j = {s, s + n};
	ws(&j);
	if (peek(&j) != '{')
		return -1;
	j.p++;
	ws(&j);
	if (peek(&j) == '}') {
		j.p++;
		goto end;
	}
	for (;;) {
		char key[CM_JSON_MAXKEY + 1];
		size_t klen;
		int nul;
		ws(&j);
		if (scan_string(&j, key, CM_JSON_MAXKEY, &klen, &nul) < 0)
			return -1;
		if (klen > CM_JSON_MAXKEY || nul)
			klen = 0;
		key[klen] = '\0';
		ws(&j);
		if (peek(&j) != ':')
			return -1;
		j.p++;
		ws(&j);
		if (field(arg, key, &j) < 0)
			return -1;
		ws(&j);
		if (peek(&j) == ',') {
			j.p++;
			continue;
		}
		if (peek(&j) == '}') {
			j.p++;
			break;
		}
		return -1;
	}
end:
	ws(&j);
	return j.p == j.end ? 0 : -1;
}

/* ---- time ---- */

int64_t cm_now_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

int64_t cm_now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

size_t cm_rfc3339(const struct timespec *ts, char *out)
{
	struct tm tm;
	time_t t = ts->tv_sec;
	if (gmtime_r(&t, &tm) == NULL)
		memset(&tm, 0, sizeof(tm));
	int n = snprintf(out, 40, "%04d-%02d-%02dT%02d:%02d:%02d", tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday,
			 tm.tm_hour, tm.tm_min, tm.tm_sec);
	if (n < 0)
		n = 0;
	long ns = ts->tv_nsec;
	if (ns > 0 && ns < 1000000000) {
		char frac[10];
		snprintf(frac, sizeof(frac), "%09ld", ns);
		int k = 9;
		while (k > 0 && frac[k - 1] == '0')
			k--;
		out[n++] = '.';
		memcpy(out + n, frac, (size_t)k);
		n += k;
	}
	out[n++] = 'Z';
	out[n] = '\0';
	return (size_t)n;
}

/* ---- logging (to the monitor's stderr, the pod's monitor.log) ---- */

int cm_log_level = CM_INFO;
const char *cm_log_pod = "";

void cm_log(int level, const char *fmt, ...)
{
	static const char *names[] = {"debug", "info", "warning", "error"};
	if (level < cm_log_level)
		return;
	char msg[768], line[1024];
	va_list ap;
	va_start(ap, fmt);
	int n = vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	if (n < 0)
		return;
	for (char *p = msg; *p; p++)
		if (*p == '"' || *p == '\n')
			*p = '\'';
	struct timespec ts;
	char tbuf[40];
	clock_gettime(CLOCK_REALTIME, &ts);
	ts.tv_nsec -= ts.tv_nsec % 1000000;
	cm_rfc3339(&ts, tbuf);
	n = snprintf(line, sizeof(line), "time=\"%s\" level=%s msg=\"%s\" monitor=c pod_id=%s\n", tbuf, names[level], msg,
		     cm_log_pod);
	if (n < 0)
		return;
	if ((size_t)n >= sizeof(line)) {
		n = sizeof(line) - 1;
		line[n - 1] = '\n';
	}
	cm_write_full(2, line, (size_t)n);
}

int cm_write_full(int fd, const void *p, size_t n)
{
	const char *c = p;
	while (n > 0) {
		ssize_t w = write(fd, c, n);
		if (w < 0) {
			if (errno == EINTR)
				continue;
			return -1;
		}
		c += w;
		n -= (size_t)w;
	}
	return 0;
}
