/* crilog.c: the CRI log format, "<RFC3339Nano UTC> <stream> <F|P> <text>\n".
 *
 * A line ends at a newline (the newline is not part of the text). A line
 * longer than CM_MAX_LOG_LINE is written as partial ("P") records of
 * CM_MAX_LOG_LINE bytes followed by a full ("F") record of the rest; a
 * line of exactly CM_MAX_LOG_LINE bytes is one full record, however the
 * reads split it (a full pending line waits for the next byte). At EOF a
 * last line without a newline is written as a partial ("P") record: the
 * output did not end with a newline, and kubelet's reader adds one only
 * after a full record (`echo -n DONE` must read back as "DONE", as
 * containerd and CRI-O write it).
 *
 * Records are gathered into one writev per batch. A record may point into
 * the stream's pending text: such a batch is written before that text
 * changes. */
#include "cmon.h"

#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/uio.h>

#define BATCH 32

struct batch {
	int fd;
	const char *stream;
	char ts[40];
	size_t tslen;
	int n;
	char hdr[BATCH][64];
	struct iovec iov[BATCH * 4];
	int err;
};

static void flush(struct batch *b)
{
	struct iovec *iov = b->iov;
	int cnt = b->n * 4;
	b->n = 0;
	if (b->fd < 0 || cnt == 0)
		return;
	while (cnt > 0) {
		ssize_t w = writev(b->fd, iov, cnt);
		if (w < 0) {
			if (errno == EINTR)
				continue;
			b->err = errno;
			return;
		}
		size_t left = (size_t)w;
		while (cnt > 0 && left >= iov->iov_len) {
			left -= iov->iov_len;
			iov++;
			cnt--;
		}
		if (cnt > 0) {
			iov->iov_base = (char *)iov->iov_base + left;
			iov->iov_len -= left;
		}
	}
}

static void emit(struct batch *b, int partial, const char *a, size_t alen, const char *c, size_t clen)
{
	if (b->n == BATCH)
		flush(b);
	char *h = b->hdr[b->n];
	int hl = snprintf(h, sizeof(b->hdr[0]), "%s %s %c ", b->ts, b->stream, partial ? 'P' : 'F');
	if (hl < 0 || (size_t)hl >= sizeof(b->hdr[0]))
		hl = 0;
	struct iovec *v = &b->iov[b->n * 4];
	v[0] = (struct iovec){h, (size_t)hl};
	v[1] = (struct iovec){(void *)a, alen};
	v[2] = (struct iovec){(void *)c, clen};
	v[3] = (struct iovec){"\n", 1};
	b->n++;
}

static void init(struct batch *b, int fd, const char *stream, const struct timespec *now)
{
	b->fd = fd;
	b->stream = stream;
	b->tslen = cm_rfc3339(now, b->ts);
	b->n = 0;
	b->err = 0;
}

static int finish(struct batch *b)
{
	flush(b);
	if (b->err) {
		errno = b->err;
		return -1;
	}
	return 0;
}

/* segment feeds len bytes of one line; eol when the line ends after them. */
static int segment(struct batch *b, struct cm_linebuf *lb, const char *d, size_t len, int eol)
{
	while (lb->plen + len > CM_MAX_LOG_LINE) {
		size_t take = CM_MAX_LOG_LINE - lb->plen;
		emit(b, 1, lb->pend, lb->plen, d, take);
		if (lb->plen) {
			flush(b);
			lb->plen = 0;
		}
		d += take;
		len -= take;
	}
	if (eol) {
		emit(b, 0, lb->pend, lb->plen, d, len);
		if (lb->plen) {
			flush(b);
			lb->plen = 0;
		}
	} else if (len > 0) {
		if (lb->pend == NULL) {
			lb->pend = malloc(CM_MAX_LOG_LINE);
			if (lb->pend == NULL) {
				/* No memory to hold it: write it now, as partial. */
				emit(b, 1, d, len, NULL, 0);
				return 0;
			}
		}
		memcpy(lb->pend + lb->plen, d, len);
		lb->plen += len;
	}
	if (lb->plen == 0)
		cm_linebuf_free(lb);
	return 0;
}

int cm_crilog_feed(int logfd, const char *stream, struct cm_linebuf *lb, const char *data, size_t n,
		   const struct timespec *now)
{
	struct batch b;
	init(&b, logfd, stream, now);
	while (n > 0) {
		const char *nl = memchr(data, '\n', n);
		size_t seg = nl ? (size_t)(nl - data) : n;
		segment(&b, lb, data, seg, nl != NULL);
		if (nl)
			seg++;
		data += seg;
		n -= seg;
	}
	return finish(&b);
}

int cm_crilog_eof(int logfd, const char *stream, struct cm_linebuf *lb, const struct timespec *now)
{
	if (lb->plen == 0) {
		cm_linebuf_free(lb);
		return 0;
	}
	struct batch b;
	init(&b, logfd, stream, now);
	emit(&b, 1, lb->pend, lb->plen, NULL, 0);
	int r = finish(&b);
	cm_linebuf_free(lb);
	return r;
}

void cm_linebuf_free(struct cm_linebuf *lb)
{
	free(lb->pend);
	lb->pend = NULL;
	lb->plen = 0;
}
