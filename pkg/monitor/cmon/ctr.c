/* ctr.c: the containers of the pod.
 *
 * A container is created by a helper, which leaves its init waiting for
 * the start, or, when the daemon asks for a direct create, by the monitor
 * itself from the template libct prepared (xexec.c). The monitor holds
 * the read ends of its stdout and stderr pipes (and the write end of its
 * stdin, for attach), or with a terminal
 * the pty master (its output is the stdout stream), and copies what they
 * carry to the CRI log and to the attachers (attach.c). When the init exits and its output is drained,
 * the exit goes to <bundle>/exit.json (with the OOM kill count of the
 * container's memory cgroup) and to the event subscribers. The pod's
 * infra process (infra.c) is kept here too, as an "own" container: the
 * monitor started it without a runtime, so kill and delete signal it
 * directly and it has no stdio. */
#include "mon.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#define EXIT_DRAIN_MS 2000 /* output still open after an init exited */
#define DELETE_WAIT_MS 10000

/* A stream of a container (stdout or stderr) being copied to its log. */
struct stream {
	struct watch w;
	int fd;
	const char *name;
	struct ctr *c;
	struct cm_linebuf lb;
};

struct ctr {
	struct watch w;
	struct ctr *next;
	char *id, *bundle, *oom_file;
	char *log_name;	   /* the log file, in the directory log_dir */
	int log_dir, log_fd;  /* -1 without a log */
	int log_err_reported;
	int stdin_fd; /* write end, held for attach */
	int tty;      /* out.fd is the pty master */
	pid_t pid;    /* 0 while being created */
	int creating;
	struct stream out, err;
	int reaped, wstatus;
	struct timespec finished;
	int64_t drain_until;
	int exited; /* exit recorded */
	int oom_killed;
	int deleting;
	struct conn *delete_conn;
	int64_t delete_until; /* waiting for the exit after a delete */
	int kill_sent;	       /* shutdown */
	struct helper *parked; /* the create helper, waiting to do the start */
	int own;	       /* started by the monitor itself (infra.c) */
	int direct;	       /* its init started here (xexec.c), not by a helper */
	int init_sock;	       /* direct: the init pipe, until the start */
};

static struct ctr *ctrs;

/* close_plain closes an fd epoll does not watch. */
static void close_plain(int *fd)
{
	if (*fd >= 0)
		close(*fd);
	*fd = -1;
}

static struct ctr *find_ctr(const char *id)
{
	for (struct ctr *c = ctrs; c; c = c->next)
		if (strcmp(c->id, id) == 0)
			return c;
	return NULL;
}

/* alive: c is still a container of the pod (for helper callbacks). */
static int alive(struct ctr *c)
{
	for (struct ctr *k = ctrs; k; k = k->next)
		if (k == c)
			return 1;
	return 0;
}

static struct ctr *get_ctr(struct conn *conn, const char *id)
{
	struct ctr *c = id ? find_ctr(id) : NULL;
	if (c == NULL)
		reply_err(conn, CM_E_NOT_FOUND, "container %s is not in this pod's monitor", id ? id : "");
	return c;
}

static int busy(struct conn *conn, struct ctr *c)
{
	if (c->creating) {
		reply_err(conn, CM_E_FAILED_PRECONDITION, "container %s is being created", c->id);
		return 1;
	}
	if (c->deleting) {
		reply_err(conn, CM_E_FAILED_PRECONDITION, "container %s is being deleted", c->id);
		return 1;
	}
	return 0;
}

static void ctr_unpark(struct ctr *c)
{
	if (c->parked)
		helper_release(c->parked);
}

static void stream_init(struct stream *s, struct ctr *c, const char *name)
{
	s->w.kind = K_STREAM;
	s->fd = -1;
	s->name = name;
	s->c = c;
}

static void stream_close(struct stream *s)
{
	struct timespec now;
	clock_gettime(CLOCK_REALTIME, &now);
	if (s->lb.plen)
		cm_crilog_eof(s->c->log_fd, s->name, &s->lb, &now);
	cm_linebuf_free(&s->lb);
	closefd(&s->fd);
}

static void ctr_remove(struct ctr *c)
{
	ctr_unpark(c);
	for (struct ctr **pp = &ctrs; *pp; pp = &(*pp)->next)
		if (*pp == c) {
			*pp = c->next;
			break;
		}
	attach_end(c);
	stream_close(&c->out);
	stream_close(&c->err);
	close_plain(&c->stdin_fd);
	close_plain(&c->init_sock);
	close_plain(&c->log_fd);
	close_plain(&c->log_dir);
	c->out.w.dead = c->err.w.dead = 1;
	bury(&c->w);
}

static void free_ctr(struct ctr *c)
{
	free(c->id);
	free(c->bundle);
	free(c->log_name);
	free(c->oom_file);
	free(c);
}

void ctr_free(struct watch *w) { free_ctr((struct ctr *)w); }

/* ---- the log file ---- */

/* log_open opens the log file name in the directory dirfd for appending,
 * creating it. The monitor runs as root and the path comes from a pod's
 * config: it never follows a symlink there, never opens anything but a
 * regular file, and never blocks on a FIFO. */
static int log_open(int dirfd, const char *name)
{
	int fd = openat(dirfd, name, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC | O_NOCTTY | O_NOFOLLOW | O_NONBLOCK, 0640);
	if (fd < 0 && errno == ENXIO)
		errno = EINVAL; /* a FIFO nobody reads, or a device */
	if (fd < 0)
		return -1;
	struct stat st;
	if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode)) {
		close(fd);
		errno = EINVAL;
		return -1;
	}
	fcntl(fd, F_SETFL, O_APPEND);
	return fd;
}

/* log_setup opens the directory of path (kept for reopens) and the log. */
static int log_setup(struct ctr *c, const char *path)
{
	const char *slash = strrchr(path, '/');
	const char *name = slash ? slash + 1 : path;
	char dir[MAX_PATH + 1];
	if (*name == '\0' || strcmp(name, ".") == 0 || strcmp(name, "..") == 0) {
		errno = EINVAL;
		return -1;
	}
	if (slash == NULL)
		snprintf(dir, sizeof(dir), ".");
	else
		snprintf(dir, sizeof(dir), "%.*s", slash == path ? 1 : (int)(slash - path), path);
	c->log_name = strdup(name);
	if (c->log_name == NULL)
		return -1;
	c->log_dir = open(dir, O_PATH | O_DIRECTORY | O_CLOEXEC);
	if (c->log_dir < 0)
		return -1;
	c->log_fd = log_open(c->log_dir, c->log_name);
	return c->log_fd < 0 ? -1 : 0;
}

/* ---- exits ---- */

static void exit_json(struct cm_buf *b, struct ctr *c)
{
	exitrec_json(b, c->pid, c->wstatus, &c->finished, c->oom_killed);
}

static void ctr_delete_done(struct ctr *c);

/* ctr_finalize records the exit of a container's init: exit.json, then
 * the event, then whoever waited for it. */
static void ctr_finalize(struct ctr *c)
{
	if (c->exited)
		return;
	c->exited = 1;
	if (c->oom_file && exitrec_oom_kills(c->oom_file) > 0)
		c->oom_killed = 1;
	struct cm_buf rec = {0};
	exit_json(&rec, c);
	if (rec.failed || exitrec_write(c->bundle, &rec) < 0)
		cm_log(CM_ERROR, "container %s: recording the exit: %s", c->id, strerror(errno));
	struct cm_buf ev = {0};
	cm_buf_str(&ev, "{\"" CM_EVENT_ID "\":");
	cm_buf_jstr(&ev, c->id, strlen(c->id));
	cm_buf_str(&ev, ",\"" CM_EVENT_EXIT "\":");
	cm_buf_add(&ev, rec.p, rec.len);
	cm_buf_str(&ev, "}\n");
	if (!ev.failed)
		broadcast(&ev);
	cm_buf_free(&ev);
	cm_buf_free(&rec);
	cm_log(CM_INFO, "container %s exited: status %#x%s", c->id, c->wstatus, c->oom_killed ? " (OOM killed)" : "");
	attach_end(c);
	exec_container_exited(c->id);
	if (c->delete_until)
		ctr_delete_done(c);
	if (shutting_down())
		shutdown_check();
}

static void ctr_maybe_finalize(struct ctr *c)
{
	if (c->reaped && !c->exited && c->out.fd < 0 && c->err.fd < 0)
		ctr_finalize(c);
}

void ctr_on_stream(struct watch *w, uint32_t ev)
{
	struct stream *s = (struct stream *)w;
	(void)ev;
	for (int i = 0; i < 8; i++) {
		ssize_t n = read(s->fd, cm_rbuf, sizeof(cm_rbuf));
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0 && errno == EAGAIN)
			return;
		struct timespec now;
		clock_gettime(CLOCK_REALTIME, &now);
		if (n <= 0) {
			stream_close(s);
			ctr_maybe_finalize(s->c);
			return;
		}
		if (cm_crilog_feed(s->c->log_fd, s->name, &s->lb, cm_rbuf, (size_t)n, &now) < 0 && !s->c->log_err_reported) {
			s->c->log_err_reported = 1;
			cm_log(CM_WARN, "container %s: writing its log: %s", s->c->id, strerror(errno));
		}
		attach_output(s->c, s == &s->c->err ? CM_FRAME_STDERR : CM_FRAME_STDOUT, cm_rbuf, (size_t)n);
	}
}

int ctr_on_exit(pid_t pid, int st)
{
	for (struct ctr *c = ctrs; c; c = c->next)
		if (c->pid == pid && !c->reaped) {
			c->reaped = 1;
			c->wstatus = st;
			clock_gettime(CLOCK_REALTIME, &c->finished);
			c->drain_until = cm_now_ms() + EXIT_DRAIN_MS;
			ctr_maybe_finalize(c);
			return 1;
		}
	return 0;
}

/* ---- create and start ---- */

static void delete_start(struct ctr *c, struct conn *conn, int force);

static void create_done(struct helper *h, struct conn *conn, void *arg, struct hres *r)
{
	struct ctr *c = arg; /* a creating container is not removed */
	c->creating = 0;
	if (r->err) {
		reply_raw_error(conn, r->err, r->errlen);
		ctr_remove(c);
		return;
	}
	c->pid = (pid_t)r->pid;
	if (c->direct) {
		c->init_sock = r->fd;
		r->fd = -1;
	} else if (c->tty) {
		/* The terminal's master: its output is the stdout stream. */
		if (r->fd < 0) {
			reply_err(conn, CM_E_INTERNAL, "container %s: no terminal from the helper", c->id);
			return delete_start(c, NULL, 1);
		}
		c->out.fd = r->fd;
		r->fd = -1;
		fcntl(c->out.fd, F_SETFL, O_RDWR | O_NONBLOCK);
		ep_add(c->out.fd, &c->out.w, EPOLLIN);
	}
	c->pid = (pid_t)r->pid;
	c->oom_file = r->oom;
	r->oom = NULL;
	cm_log(CM_INFO, "container %s created: pid %d", c->id, (int)c->pid);
	if (conn == NULL) {
		/* Nobody will learn of it: the caller gave up. */
		cm_log(CM_WARN, "container %s: the create request went away; deleting it", c->id);
		delete_start(c, NULL, 1);
		return;
	}
	struct cm_buf b = {0};
	cm_buf_printf(&b, "{\"" CM_RESP_PID "\":%d,\"" CM_RESP_HELPER_NS "\":%lld,\"" CM_RESP_OP_NS "\":%lld}",
		      (int)c->pid, (long long)r->helper_ns, (long long)r->op_ns);
	reply(conn, &b);
	/* StartContainer comes next: the helper can do it, which saves
	 * starting another. Meanwhile the init stays its child: not for
	 * long. */
	if (h)
		helper_park(h, &c->parked);
	if (shutting_down())
		shutdown_check();
}

static int mkpipe(int p[2])
{
	if (pipe2(p, O_CLOEXEC) < 0)
		return -1;
	fcntl(p[0], F_SETFL, O_NONBLOCK);
	return 0;
}

static void close_pair(int p[2])
{
	for (int i = 0; i < 2; i++)
		if (p[i] >= 0) {
			close(p[i]);
			p[i] = -1;
		}
}

/* ctr_alloc: a container without stdio or log yet; NULL when out of
 * memory. */
static struct ctr *ctr_alloc(const char *id, const char *bundle)
{
	struct ctr *c = calloc(1, sizeof(*c));
	if (c == NULL)
		return NULL;
	c->w.kind = K_CTR;
	c->log_fd = c->log_dir = c->stdin_fd = c->init_sock = -1;
	stream_init(&c->out, c, "stdout");
	stream_init(&c->err, c, "stderr");
	c->id = strdup(id);
	c->bundle = strdup(bundle);
	if (c->id == NULL || c->bundle == NULL) {
		free_ctr(c);
		return NULL;
	}
	return c;
}

static struct ctr *ctr_new(struct conn *conn, struct req *r)
{
	struct ctr *c = ctr_alloc(r->id, r->bundle);
	if (c == NULL) {
		reply_err(conn, CM_E_RESOURCE_EXHAUSTED, "out of memory");
		return NULL;
	}
	if (r->log_path && *r->log_path && log_setup(c, r->log_path) < 0) {
		reply_err(conn, errno_class(errno), "opening log %s: %s", r->log_path, strerror(errno));
		close_plain(&c->log_dir);
		free_ctr(c);
		return NULL;
	}
	return c;
}

/* create_tty creates a container with a terminal: the helper passes its
 * pty master with the result (create_done). */
static int create_tty(struct conn *conn, struct ctr *c)
{
	const char *extra[] = {"--bundle", c->bundle, "--tty", NULL};
	if (helper_spawn(H_CREATE, c->id, extra, NULL, 0, NULL, conn, create_done, c) == NULL) {
		reply_err(conn, errno_class(errno), "starting the monitor helper: %s", strerror(errno));
		return -1;
	}
	c->tty = 1;
	return 0;
}

/* create_pipes creates a container whose stdio are pipes. */
static int create_pipes(struct conn *conn, struct ctr *c, int in)
{
	int po[2] = {-1, -1}, pe[2] = {-1, -1}, pi[2] = {-1, -1};
	if (mkpipe(po) < 0 || mkpipe(pe) < 0 || (in && pipe2(pi, O_CLOEXEC) < 0)) {
		reply_err(conn, errno_class(errno), "pipes: %s", strerror(errno));
		goto fail;
	}
	int io[3] = {pi[0], po[1], pe[1]};
	const char *extra[] = {"--bundle", c->bundle, NULL};
	if (c->direct) {
		int d = xcreate_spawn(c->id, io, conn, create_done, c);
		if (d == 0) {
			reply_err(conn, CM_E_NOT_IMPLEMENTED, "container %s: this monitor cannot start an init itself", c->id);
			goto fail;
		}
		if (d < 0) {
			reply_err(conn, errno_class(errno), "container %s: direct create: %s", c->id, strerror(errno));
			goto fail;
		}
	} else if (helper_spawn(H_CREATE, c->id, extra, NULL, 0, io, conn, create_done, c) == NULL) {
		reply_err(conn, errno_class(errno), "starting the monitor helper: %s", strerror(errno));
		goto fail;
	}
	close(po[1]);
	close(pe[1]);
	if (pi[0] >= 0)
		close(pi[0]);
	c->out.fd = po[0];
	c->err.fd = pe[0];
	c->stdin_fd = pi[1];
	ep_add(c->out.fd, &c->out.w, EPOLLIN);
	ep_add(c->err.fd, &c->err.w, EPOLLIN);
	return 0;
fail:
	close_pair(po);
	close_pair(pe);
	close_pair(pi);
	return -1;
}

void op_create(struct conn *conn, struct req *r)
{
	if (r->id == NULL || *r->id == '\0' || r->bundle == NULL || *r->bundle == '\0')
		return reply_err(conn, CM_E_INVALID_ARGUMENT, "create needs an id and a bundle");
	if (find_ctr(r->id))
		return reply_err(conn, CM_E_ALREADY_EXISTS, "container %s exists in the monitor", r->id);
	if (r->direct && r->tty)
		return reply_err(conn, CM_E_INVALID_ARGUMENT, "container %s: a direct create has no terminal", r->id);
	struct ctr *c = ctr_new(conn, r);
	if (c == NULL)
		return;
	c->direct = r->direct;
	if ((r->tty ? create_tty(conn, c) : create_pipes(conn, c, r->in)) < 0) {
		close_plain(&c->log_fd);
		close_plain(&c->log_dir);
		free_ctr(c);
		return;
	}
	c->creating = 1;
	c->next = ctrs;
	ctrs = c;
}

static void start_done(struct helper *h, struct conn *conn, void *arg, struct hres *r)
{
	struct ctr *c = arg;
	if (r->lost && helper_unanswered(h)) {
		/* The parked helper died before it answered the start: the
		 * start goes to a new helper. */
		if (!alive(c))
			return reply_err(conn, CM_E_NOT_FOUND, "container %s is gone", helper_id(h));
		return helper_run(conn, H_START, c->id, NULL, NULL, 0, start_done, c);
	}
	if (r->err)
		return reply_raw_error(conn, r->err, r->errlen);
	struct cm_buf b = {0};
	cm_buf_printf(&b, "{\"" CM_RESP_HELPER_NS "\":%lld,\"" CM_RESP_OP_NS "\":%lld}", (long long)r->helper_ns,
		      (long long)r->op_ns);
	reply(conn, &b);
}

void op_start(struct conn *conn, struct req *r)
{
	struct ctr *c = get_ctr(conn, r->id);
	if (c == NULL || busy(conn, c))
		return;
	if (c->own)
		return reply_err(conn, CM_E_FAILED_PRECONDITION, "%s is the pod's infra process: it runs from its start", c->id);
	if (c->direct) {
		if (c->init_sock < 0)
			return reply_err(conn, CM_E_FAILED_PRECONDITION, "container %s is not created: it was started", c->id);
		int sock = c->init_sock;
		c->init_sock = -1;
		if (xstart_spawn(c->id, c->pid, sock, conn, start_done, c) < 0)
			reply_err(conn, errno_class(errno), "container %s: start: %s", c->id, strerror(errno));
		return;
	}
	if (c->parked == NULL || helper_resume(c->parked, conn, start_done, c) < 0)
		helper_run(conn, H_START, c->id, NULL, NULL, 0, start_done, c);
}

/* ---- kill, delete, update ---- */

void op_kill(struct conn *conn, struct req *r)
{
	struct ctr *c = get_ctr(conn, r->id);
	if (c == NULL || busy(conn, c))
		return;
	ctr_unpark(c);
	if (r->signal < 0 || r->signal > 64)
		return reply_err(conn, CM_E_INVALID_ARGUMENT, "bad signal %lld", (long long)r->signal);
	if (!r->all || c->own) {
		/* The infra process is PID 1 of its namespace: the kernel
		 * kills the rest of the namespace when it dies. */
		if (c->reaped)
			return reply_ok(conn); /* already exited: nothing to signal */
		/* The init is our unreaped child: its pid cannot be reused. */
		if (kill(c->pid, (int)r->signal) < 0)
			return reply_err(conn, errno == ESRCH ? CM_E_FAILED_PRECONDITION : errno_class(errno),
					 "signal %lld: %s", (long long)r->signal, strerror(errno));
		return reply_ok(conn);
	}
	char sig[24];
	snprintf(sig, sizeof(sig), "--signal=%lld", (long long)r->signal);
	const char *extra[] = {sig, "--all", NULL};
	helper_run(conn, H_KILL, c->id, extra, NULL, 0, NULL, NULL);
}

static void ctr_delete_done(struct ctr *c)
{
	struct conn *conn = c->delete_conn;
	c->delete_conn = NULL;
	c->delete_until = 0;
	cm_log(CM_DEBUG, "container %s deleted", c->id);
	ctr_remove(c);
	reply_ok(conn);
	if (shutting_down())
		shutdown_check();
}

static void delete_done(struct helper *h, struct conn *conn, void *arg, struct hres *r)
{
	(void)h;
	struct ctr *c = arg;
	if (!alive(c))
		return;
	if (r->err) {
		c->deleting = 0;
		reply_raw_error(conn, r->err, r->errlen);
		return;
	}
	c->delete_conn = conn;
	c->delete_until = cm_now_ms() + DELETE_WAIT_MS;
	if (c->pid == 0 || c->exited)
		ctr_delete_done(c);
}

static void delete_start(struct ctr *c, struct conn *conn, int force)
{
	const char *extra[] = {force ? "--force" : NULL, NULL};
	if (helper_spawn(H_DELETE, c->id, extra, NULL, 0, NULL, conn, delete_done, c) == NULL)
		return reply_err(conn, errno_class(errno), "starting the monitor helper: %s", strerror(errno));
	c->deleting = 1;
}

void op_delete(struct conn *conn, struct req *r)
{
	struct ctr *c = get_ctr(conn, r->id);
	if (c == NULL || busy(conn, c))
		return;
	ctr_unpark(c);
	if (c->own) {
		/* No runtime state to remove: it is killed, and deleted once
		 * its exit is recorded. Its cgroup is the daemon's. */
		if (!c->reaped)
			kill(c->pid, SIGKILL);
		c->deleting = 1;
		c->delete_conn = conn;
		c->delete_until = cm_now_ms() + DELETE_WAIT_MS;
		if (c->exited)
			ctr_delete_done(c);
		return;
	}
	delete_start(c, conn, r->force);
}

void op_update(struct conn *conn, struct req *r)
{
	struct ctr *c = get_ctr(conn, r->id);
	if (c == NULL || busy(conn, c))
		return;
	if (c->own)
		return reply_err(conn, CM_E_FAILED_PRECONDITION, "%s is the pod's infra process: no resources to update", c->id);
	ctr_unpark(c);
	helper_run(conn, H_UPDATE, c->id, NULL, r->resources, r->resources_len, NULL, NULL);
}

/* ---- logs and state ---- */

void op_reopen_log(struct conn *conn, struct req *r)
{
	struct ctr *c = get_ctr(conn, r->id);
	if (c == NULL)
		return;
	if (c->log_name == NULL)
		return reply_ok(conn);
	int fd = log_open(c->log_dir, c->log_name);
	if (fd < 0)
		return reply_err(conn, errno_class(errno), "reopening log %s: %s", c->log_name, strerror(errno));
	close_plain(&c->log_fd);
	c->log_fd = fd;
	c->log_err_reported = 0;
	reply_ok(conn);
}

void op_state(struct conn *conn, struct req *r)
{
	(void)r;
	struct cm_buf b = {0};
	cm_buf_str(&b, "{");
	if (ctrs) {
		cm_buf_str(&b, "\"" CM_RESP_CONTAINERS "\":[");
		for (struct ctr *c = ctrs; c; c = c->next) {
			cm_buf_str(&b, "{\"" CM_STATE_ID "\":");
			cm_buf_jstr(&b, c->id, strlen(c->id));
			cm_buf_printf(&b, ",\"" CM_STATE_PID "\":%d", (int)c->pid);
			if (c->exited) {
				cm_buf_str(&b, ",\"" CM_STATE_EXITED "\":");
				exit_json(&b, c);
			}
			cm_buf_str(&b, c->next ? "}," : "}");
		}
		cm_buf_str(&b, "],");
	}
	/* This monitor serves Request.Direct (it may still answer a create
	 * with not_implemented), and its inits run the C init's plans. */
	cm_buf_printf(&b, "\"" CM_RESP_DIRECT "\":true,\"" CM_RESP_CINIT "\":true,\"" CM_RESP_MONITOR_PID "\":%d}", (int)getpid());
	reply(conn, &b);
}

/* op_attach: the connection gets the container's output until it exits;
 * with stdin, the reply carries an fd for the client's input: a copy of
 * the write end of the container's stdin, or of its terminal's master
 * (for the window size too). */
void op_attach(struct conn *conn, struct req *r)
{
	struct ctr *c = get_ctr(conn, r->id);
	if (c == NULL || busy(conn, c))
		return;
	if (c->reaped || (c->out.fd < 0 && c->err.fd < 0))
		return reply_err(conn, CM_E_FAILED_PRECONDITION, "container %s is not running", c->id);
	int fds[1], n = 0;
	int src = c->tty ? c->out.fd : c->stdin_fd;
	if ((r->in || c->tty) && src >= 0) {
		if ((fds[0] = fcntl(src, F_DUPFD_CLOEXEC, 3)) < 0)
			return reply_err(conn, errno_class(errno), "attach: %s", strerror(errno));
		n = 1;
	}
	if (attach_add(conn, c, r->out, r->err) < 0) {
		if (n)
			close(fds[0]);
		return reply_err(conn, CM_E_RESOURCE_EXHAUSTED, "out of memory");
	}
	struct cm_buf b = {0};
	cm_buf_str(&b, "{}");
	reply_keep(conn, &b, fds, n);
}

/* op_close_stdin closes the container's stdin (after the attach of a
 * stdin_once container); with a terminal there is nothing to close. */
void op_close_stdin(struct conn *conn, struct req *r)
{
	struct ctr *c = get_ctr(conn, r->id);
	if (c == NULL)
		return;
	close_plain(&c->stdin_fd);
	reply_ok(conn);
}

int ctr_exec_ready(struct conn *conn, const char *id)
{
	struct ctr *c = get_ctr(conn, id);
	if (c == NULL || busy(conn, c))
		return 0;
	if (c->own) {
		reply_err(conn, CM_E_FAILED_PRECONDITION, "%s is the pod's infra process: nothing runs in it", c->id);
		return 0;
	}
	ctr_unpark(c);
	if (c->reaped) {
		reply_err(conn, CM_E_FAILED_PRECONDITION, "container %s is not running", c->id);
		return 0;
	}
	return 1;
}

int ctr_known(const char *id) { return find_ctr(id) != NULL; }

int ctr_add_running(const char *id, const char *bundle, pid_t pid)
{
	struct ctr *c = ctr_alloc(id, bundle);
	if (c == NULL)
		return -1;
	c->own = 1;
	c->pid = pid;
	c->next = ctrs;
	ctrs = c;
	return 0;
}

int ctr_gone(const char *id)
{
	struct ctr *c = find_ctr(id);
	if (c == NULL || c->reaped)
		return 1;
	if (c->pid <= 0)
		return 0;
	/* An init that has exited, or is waiting for the rest of its PID
	 * namespace to die, has dropped its namespaces. */
	char path[64], target[128];
	snprintf(path, sizeof(path), "/proc/%d/ns/mnt", (int)c->pid);
	return readlink(path, target, sizeof(target)) < 0 && errno == ENOENT;
}

/* ---- shutdown, timers ---- */

static void shutkill_done(struct helper *h, struct conn *conn, void *arg, struct hres *r)
{
	(void)h;
	(void)conn;
	struct ctr *c = arg;
	if (r->err && alive(c))
		cm_log(CM_WARN, "container %s: kill at shutdown: %.*s", c->id, (int)r->errlen, r->err);
}

void ctr_shutdown_begin(void)
{
	for (struct ctr *c = ctrs; c; c = c->next)
		c->kill_sent = 0;
}

int ctr_shutdown_step(void)
{
	int left = 0;
	for (struct ctr *c = ctrs; c; c = c->next) {
		ctr_unpark(c);
		if (c->creating) {
			left++;
			continue;
		}
		if (c->pid == 0 || c->exited)
			continue;
		left++;
		if (!c->kill_sent && !c->reaped) {
			c->kill_sent = 1;
			const char *extra[] = {"--signal=9", "--all", NULL};
			if (c->own)
				kill(c->pid, SIGKILL);
			else if (helper_spawn(H_KILL, c->id, extra, NULL, 0, NULL, NULL, shutkill_done, c) == NULL)
				kill(c->pid, SIGKILL);
		}
	}
	return left;
}

void ctr_conn_gone(struct conn *conn)
{
	for (struct ctr *c = ctrs; c; c = c->next)
		if (c->delete_conn == conn)
			c->delete_conn = NULL;
}

int64_t ctr_next_deadline(void)
{
	int64_t t = 0;
	for (struct ctr *c = ctrs; c; c = c->next) {
		if (c->reaped && !c->exited)
			t = earliest(t, c->drain_until);
		t = earliest(t, c->delete_until);
	}
	return t;
}

void ctr_timers(int64_t now)
{
	for (struct ctr *c = ctrs, *next; c; c = next) {
		next = c->next;
		if (c->reaped && !c->exited && now >= c->drain_until) {
			cm_log(CM_WARN, "container %s: output still open %dms after its init exited", c->id, EXIT_DRAIN_MS);
			ctr_finalize(c);
		} else if (c->delete_until && now >= c->delete_until) {
			struct conn *conn = c->delete_conn;
			c->delete_conn = NULL;
			c->delete_until = 0;
			c->deleting = 0;
			reply_err(conn, CM_E_UNAVAILABLE, "container %s did not exit after delete", c->id);
		}
	}
}
