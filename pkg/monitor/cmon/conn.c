/* conn.c: the monitor's connections.
 *
 * A client sends one JSON request line (pkg/monitor/protocol.go) and gets
 * one JSON reply line, then the connection closes. While a request is
 * being served (C_BUSY) only a hangup is watched for: a client that goes
 * away gets no answer, and what it asked for goes on (an ExecSync command
 * is killed).
 *
 * Some requests keep their connection (C_STREAM) after the reply: an
 * events subscriber gets one line per container exit, an attach gets the
 * container's output in frames, an exec gets its exit code. The monitor
 * only writes to those; a read tells when the client goes away. A reply
 * may carry fds (SCM_RIGHTS) on its first byte. */
#include "mon.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

#define MAX_REQUEST (8 << 20) /* one request line */
#define MAX_EVENT_BACKLOG (1 << 20)
#define MAX_STREAM_BACKLOG (4 << 20) /* an attach that does not read is dropped */
#define MAX_FDS 4
#define MAX_CONNS 256
#define REQUEST_TIMEOUT_MS 60000

enum cstate { C_READ, C_BUSY, C_WRITE, C_STREAM };

struct conn {
	struct watch w;
	struct conn *next;
	int fd;
	enum cstate st;
	struct cm_buf in, out;
	size_t outoff;
	int64_t deadline; /* C_READ */
	int shutdown_wait;
	int subscriber;	      /* an events stream */
	int finishing;	      /* C_STREAM: close once the output is out */
	int fds[MAX_FDS], nfds; /* sent with the first byte of out, then closed */
	uint32_t events;      /* registered */
};

static struct conn *conns;
static int nconns;
static int64_t listen_paused_until;

static void conn_flush(struct conn *c);

static void conn_set_events(struct conn *c, uint32_t ev)
{
	if (c->events != ev) {
		ep_mod(c->fd, &c->w, ev);
		c->events = ev;
	}
}

static void close_fds(struct conn *c)
{
	for (int i = 0; i < c->nfds; i++)
		close(c->fds[i]);
	c->nfds = 0;
}

/* conn_close ends a connection; the other files forget it (a request
 * still running goes on unanswered, an ExecSync command or an Exec is
 * killed, an attach ends). */
static void conn_close(struct conn *c)
{
	if (c->w.dead)
		return;
	helper_conn_gone(c);
	exec_conn_gone(c);
	xexec_conn_gone(c);
	ctr_conn_gone(c);
	attach_conn_gone(c);
	for (struct conn **pp = &conns; *pp; pp = &(*pp)->next)
		if (*pp == c) {
			*pp = c->next;
			break;
		}
	nconns--;
	closefd(&c->fd);
	cm_buf_free(&c->in);
	cm_buf_free(&c->out);
	close_fds(c);
	bury(&c->w);
}

void conn_free(struct watch *w) { free(w); }

void conn_drop(struct conn *c) { conn_close(c); }

int conn_closed(const struct conn *c) { return c->w.dead; }

/* ---- replies ---- */

void reply(struct conn *c, struct cm_buf *b)
{
	if (c == NULL || c->w.dead) {
		cm_buf_free(b);
		return;
	}
	cm_buf_add(b, "\n", 1);
	if (b->failed) {
		cm_buf_free(b);
		cm_buf_str(b, "{\"" CM_RESP_ERROR "\":{\"" CM_WIRE_CLASS "\":\"" CM_E_RESOURCE_EXHAUSTED
			      "\",\"" CM_WIRE_MESSAGE "\":\"monitor: out of memory\"}}\n");
	}
	cm_buf_free(&c->in);
	cm_buf_free(&c->out);
	c->out = *b;
	c->outoff = 0;
	c->st = C_WRITE;
	conn_flush(c);
}

void reply_keep(struct conn *c, struct cm_buf *b, const int *fds, int nfds)
{
	if (c == NULL || c->w.dead) {
		cm_buf_free(b);
		for (int i = 0; i < nfds; i++)
			close(fds[i]);
		return;
	}
	cm_buf_add(b, "\n", 1);
	if (b->failed || nfds > MAX_FDS) {
		for (int i = 0; i < nfds; i++)
			close(fds[i]);
		cm_buf_free(b);
		return reply_err(c, CM_E_RESOURCE_EXHAUSTED, "monitor: out of memory");
	}
	cm_buf_free(&c->in);
	cm_buf_free(&c->out);
	c->out = *b;
	c->outoff = 0;
	for (int i = 0; i < nfds; i++)
		c->fds[i] = fds[i];
	c->nfds = nfds;
	c->st = C_STREAM;
	conn_set_events(c, EPOLLIN);
	conn_flush(c);
}

int conn_send(struct conn *c, const void *p, size_t n)
{
	if (c->w.dead || c->st != C_STREAM || c->finishing)
		return -1;
	if (c->out.len - c->outoff + n > (c->subscriber ? MAX_EVENT_BACKLOG : MAX_STREAM_BACKLOG))
		return -1;
	if (c->outoff > 0 && c->outoff == c->out.len)
		c->out.len = c->outoff = 0;
	cm_buf_add(&c->out, p, n);
	if (c->out.failed) {
		conn_close(c);
		return -1;
	}
	conn_flush(c);
	return 0;
}

int conn_send_frame(struct conn *c, int stream, const char *p, size_t n)
{
	unsigned char h[CM_FRAME_HEADER] = {(unsigned char)stream, (unsigned char)(n >> 24), (unsigned char)(n >> 16),
					    (unsigned char)(n >> 8), (unsigned char)n};
	if (c->w.dead || c->out.len - c->outoff + sizeof(h) + n > MAX_STREAM_BACKLOG)
		return -1;
	if (conn_send(c, h, sizeof(h)) < 0)
		return -1;
	return conn_send(c, p, n);
}

void conn_finish(struct conn *c)
{
	if (c == NULL || c->w.dead)
		return;
	c->finishing = 1;
	conn_flush(c);
}

void reply_ok(struct conn *c)
{
	struct cm_buf b = {0};
	cm_buf_str(&b, "{}");
	reply(c, &b);
}

void reply_err(struct conn *c, const char *cls, const char *fmt, ...)
{
	char msg[1024];
	va_list ap;
	va_start(ap, fmt);
	int n = vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	if (n < 0)
		n = 0;
	if ((size_t)n >= sizeof(msg))
		n = sizeof(msg) - 1;
	cm_log(CM_DEBUG, "request failed: %s: %s", cls, msg);
	if (c == NULL)
		return;
	struct cm_buf b = {0};
	cm_buf_str(&b, "{\"" CM_RESP_ERROR "\":{\"" CM_WIRE_CLASS "\":");
	cm_buf_jstr(&b, cls, strlen(cls));
	cm_buf_str(&b, ",\"" CM_WIRE_MESSAGE "\":");
	cm_buf_jstr(&b, msg, (size_t)n);
	cm_buf_str(&b, "}}");
	reply(c, &b);
}

void reply_raw_error(struct conn *c, const char *err, size_t len)
{
	cm_log(CM_DEBUG, "request failed: %.*s", (int)(len > 300 ? 300 : len), err);
	if (c == NULL)
		return;
	struct cm_buf b = {0};
	cm_buf_str(&b, "{\"" CM_RESP_ERROR "\":");
	cm_buf_add(&b, err, len);
	cm_buf_str(&b, "}");
	reply(c, &b);
}

void broadcast(struct cm_buf *ev)
{
	for (struct conn *s = conns, *next; s; s = next) {
		next = s->next;
		if (s->w.dead || !s->subscriber)
			continue;
		if (conn_send(s, ev->p, ev->len) < 0 && !s->w.dead)
			cm_log(CM_WARN, "dropping an event for a subscriber that does not read (it reads exit.json later)");
	}
}

void conn_wait_shutdown(struct conn *c) { c->shutdown_wait = 1; }

/* conn_shutdown_answer: ok is written at once (blocking: the monitor
 * exits next); a failure is an ordinary reply. */
void conn_shutdown_answer(int ok, int waited_ms)
{
	for (struct conn *c = conns; c; c = c->next) {
		if (c->w.dead || !c->shutdown_wait)
			continue;
		c->shutdown_wait = 0;
		if (ok) {
			int fl = fcntl(c->fd, F_GETFL);
			fcntl(c->fd, F_SETFL, fl & ~O_NONBLOCK);
			cm_write_full(c->fd, "{}\n", 3);
		} else {
			reply_err(c, CM_E_UNAVAILABLE, "containers did not die within %dms", waited_ms);
		}
	}
}

/* conn_sendmsg sends the start of the output, with the fds to pass. */
static ssize_t conn_sendmsg(struct conn *c)
{
	struct iovec iov = {c->out.p + c->outoff, c->out.len - c->outoff};
	struct msghdr m = {.msg_iov = &iov, .msg_iovlen = 1};
	union {
		char buf[CMSG_SPACE(sizeof(int) * MAX_FDS)];
		struct cmsghdr align;
	} u;
	if (c->nfds > 0) {
		memset(&u, 0, sizeof(u));
		m.msg_control = u.buf;
		m.msg_controllen = CMSG_SPACE(sizeof(int) * (size_t)c->nfds);
		struct cmsghdr *cm = CMSG_FIRSTHDR(&m);
		cm->cmsg_level = SOL_SOCKET;
		cm->cmsg_type = SCM_RIGHTS;
		cm->cmsg_len = CMSG_LEN(sizeof(int) * (size_t)c->nfds);
		memcpy(CMSG_DATA(cm), c->fds, sizeof(int) * (size_t)c->nfds);
	}
	ssize_t n = sendmsg(c->fd, &m, MSG_NOSIGNAL);
	if (n > 0)
		close_fds(c); /* they went with the first byte: ours go */
	return n;
}

static void conn_flush(struct conn *c)
{
	while (c->outoff < c->out.len) {
		ssize_t n = conn_sendmsg(c);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0 && errno == EAGAIN) {
			conn_set_events(c, c->st == C_STREAM ? EPOLLIN | EPOLLOUT : EPOLLOUT);
			return;
		}
		if (n < 0) {
			conn_close(c);
			return;
		}
		c->outoff += (size_t)n;
	}
	if (c->st == C_WRITE || (c->st == C_STREAM && c->finishing)) {
		conn_close(c);
		return;
	}
	/* A stream: keep the buffer small. */
	if (c->out.cap > 64 << 10)
		cm_buf_free(&c->out);
	c->out.len = c->outoff = 0;
	conn_set_events(c, EPOLLIN);
}

/* ---- requests ---- */

static int req_field(void *arg, const char *key, struct cm_json *j)
{
	struct req *r = arg;
	int id = cm_req_field_id(key);
	int rc;
	switch (id) {
	case CM_REQ_OP:
		rc = cm_json_string(j, &r->op, 64);
		break;
	case CM_REQ_ID:
		rc = cm_json_string(j, &r->id, MAX_ID);
		break;
	case CM_REQ_BUNDLE:
		rc = cm_json_string(j, &r->bundle, MAX_PATH);
		break;
	case CM_REQ_LOG_PATH:
		rc = cm_json_string(j, &r->log_path, MAX_PATH);
		break;
	case CM_REQ_STDIN:
		rc = cm_json_bool(j, &r->in);
		break;
	case CM_REQ_STDIN_ONCE:
		rc = cm_json_bool(j, &r->in_once);
		break;
	case CM_REQ_TTY:
		rc = cm_json_bool(j, &r->tty);
		break;
	case CM_REQ_DIRECT:
		rc = cm_json_bool(j, &r->direct);
		break;
	case CM_REQ_STDOUT:
		rc = cm_json_bool(j, &r->out);
		break;
	case CM_REQ_STDERR:
		rc = cm_json_bool(j, &r->err);
		break;
	case CM_REQ_ALL:
		rc = cm_json_bool(j, &r->all);
		break;
	case CM_REQ_FORCE:
		rc = cm_json_bool(j, &r->force);
		break;
	case CM_REQ_SIGNAL:
		rc = cm_json_int64(j, &r->signal);
		break;
	case CM_REQ_TIMEOUT:
		rc = cm_json_int64(j, &r->timeout);
		break;
	case CM_REQ_PROCESS:
		rc = cm_json_raw(j, &r->process, &r->process_len);
		break;
	case CM_REQ_RESOURCES:
		rc = cm_json_raw(j, &r->resources, &r->resources_len);
		break;
	default:
		return cm_json_skip(j);
	}
	if (rc == 0)
		r->seen |= 1u << id;
	return rc;
}

int req_parse(const char *line, size_t len, struct req *r)
{
	memset(r, 0, sizeof(*r));
	if (cm_json_object(line, len, req_field, r) < 0 || r->op == NULL)
		return -1;
	return 0;
}

void req_free(struct req *r)
{
	free(r->op);
	free(r->id);
	free(r->bundle);
	free(r->log_path);
}

static const struct {
	const char *name;
	void (*fn)(struct conn *, struct req *);
} ops[] = {
	{CM_OP_CREATE, op_create},	   {CM_OP_START, op_start},	       {CM_OP_KILL, op_kill},
	{CM_OP_DELETE, op_delete},	   {CM_OP_EXEC_SYNC, op_exec_sync},   {CM_OP_REOPEN_LOG, op_reopen_log},
	{CM_OP_STATE, op_state},	   {CM_OP_EVENTS, op_events},	       {CM_OP_SHUTDOWN, op_shutdown},
	{CM_OP_UPDATE, op_update},	   {CM_OP_EXEC, op_exec},	       {CM_OP_ATTACH, op_attach},
	{CM_OP_CLOSE_STDIN, op_close_stdin}, {CM_OP_INFRA, op_infra},
};

int op_known(const char *op)
{
	for (size_t i = 0; i < sizeof(ops) / sizeof(ops[0]); i++)
		if (strcmp(op, ops[i].name) == 0)
			return 1;
	return 0;
}

void op_events(struct conn *conn, struct req *r)
{
	(void)r;
	conn->st = C_STREAM;
	conn->subscriber = 1;
	cm_buf_free(&conn->in);
	conn_set_events(conn, EPOLLIN);
}

static void handle_request(struct conn *conn, const char *line, size_t len)
{
	struct req r;
	conn->st = C_BUSY;
	conn_set_events(conn, 0); /* EPOLLHUP still tells a client that went away */
	if (req_parse(line, len, &r) < 0) {
		req_free(&r);
		return reply_err(conn, CM_E_INVALID_ARGUMENT, "monitor: malformed request");
	}
	cm_log(CM_DEBUG, "request %s %s", r.op, r.id ? r.id : "");
	size_t i;
	for (i = 0; i < sizeof(ops) / sizeof(ops[0]); i++)
		if (strcmp(r.op, ops[i].name) == 0)
			break;
	if (i < sizeof(ops) / sizeof(ops[0]))
		ops[i].fn(conn, &r);
	else
		reply_err(conn, CM_E_INVALID_ARGUMENT, "unknown monitor op %.64s", r.op);
	req_free(&r);
	if (!conn->w.dead && conn->st == C_BUSY)
		cm_buf_free(&conn->in); /* the raw values were handed on */
}

/* ---- events of a connection ---- */

static void conn_read(struct conn *c)
{
	for (;;) {
		if (cm_buf_reserve(&c->in, c->in.cap - c->in.len > 0 ? 1 : 4096) < 0) {
			c->in.failed = 0;
			return reply_err(c, CM_E_INVALID_ARGUMENT, "monitor: request larger than %d bytes", MAX_REQUEST);
		}
		ssize_t n = read(c->fd, c->in.p + c->in.len, c->in.cap - c->in.len);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0 && errno == EAGAIN)
			return;
		if (n < 0) {
			conn_close(c);
			return;
		}
		if (n == 0) {
			/* A request without its newline ends at EOF. */
			if (c->in.len == 0) {
				conn_close(c);
				return;
			}
			return handle_request(c, c->in.p, c->in.len);
		}
		char *nl = memchr(c->in.p + c->in.len, '\n', (size_t)n);
		c->in.len += (size_t)n;
		if (nl)
			return handle_request(c, c->in.p, (size_t)(nl - c->in.p));
	}
}

void conn_on_event(struct watch *w, uint32_t ev)
{
	struct conn *c = (struct conn *)w;
	switch (c->st) {
	case C_READ:
		conn_read(c);
		return;
	case C_BUSY:
		if (ev & (EPOLLHUP | EPOLLERR))
			conn_close(c);
		return;
	case C_WRITE:
		if (ev & EPOLLERR) {
			conn_close(c);
			return;
		}
		conn_flush(c);
		return;
	case C_STREAM:
		if (ev & EPOLLIN) {
			/* Nothing is expected on a stream: drain it and notice
			 * when the client goes away. */
			ssize_t n = read(c->fd, cm_rbuf, sizeof(cm_rbuf));
			if (n == 0 || (n < 0 && errno != EAGAIN && errno != EINTR)) {
				conn_close(c);
				return;
			}
		}
		if (ev & EPOLLERR) {
			conn_close(c);
			return;
		}
		if (ev & EPOLLOUT)
			conn_flush(c);
		return;
	}
}

void conn_on_listen(void)
{
	for (;;) {
		int fd = accept4(cm_listen_fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
		if (fd < 0) {
			if (errno == EINTR || errno == ECONNABORTED)
				continue;
			if (errno != EAGAIN) {
				cm_log(CM_WARN, "accept: %s", strerror(errno));
				ep_mod(cm_listen_fd, &cm_listen_watch, 0);
				listen_paused_until = cm_now_ms() + 100;
			}
			return;
		}
		struct conn *c = nconns < MAX_CONNS ? calloc(1, sizeof(*c)) : NULL;
		if (c == NULL) {
			cm_log(CM_WARN, "too many connections; refusing one");
			close(fd);
			continue;
		}
		c->w.kind = K_CONN;
		c->fd = fd;
		c->st = C_READ;
		c->in.max = MAX_REQUEST;
		c->deadline = cm_now_ms() + REQUEST_TIMEOUT_MS;
		c->events = EPOLLIN;
		if (ep_add(fd, &c->w, EPOLLIN) < 0) {
			close(fd);
			free(c);
			continue;
		}
		c->next = conns;
		conns = c;
		nconns++;
	}
}

int64_t conn_next_deadline(void)
{
	int64_t t = listen_paused_until;
	for (struct conn *c = conns; c; c = c->next)
		if (c->st == C_READ)
			t = earliest(t, c->deadline);
	return t;
}

void conn_timers(int64_t now)
{
	if (listen_paused_until && now >= listen_paused_until) {
		listen_paused_until = 0;
		ep_mod(cm_listen_fd, &cm_listen_watch, EPOLLIN);
	}
	for (struct conn *c = conns, *next; c; c = next) {
		next = c->next;
		if (c->st == C_READ && now >= c->deadline)
			conn_close(c);
	}
}
