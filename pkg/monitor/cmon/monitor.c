/* monitor.c: the per-pod monitor, in C, before the Go runtime starts.
 *
 * The constructor below runs in every start of the binary and returns at
 * once unless _SHIM_CMONITOR=1 (set by monitor.Spawn). Then it becomes the
 * pod's monitor and never returns into Go: it daemonizes (fork, the parent
 * exits, setsid), becomes a child subreaper, listens on <dir>/monitor.sock,
 * reports readiness on the ready fd, and serves one epoll loop:
 *
 *  - requests, one JSON line per connection (pkg/monitor/protocol.go), and
 *    "events" subscribers that get one JSON line per container exit;
 *  - the container operations that need pkg/libct or an OCI runtime run in
 *    a short-lived Go helper (`<exe> monitor-helper`, pkg/monitor/helper.go)
 *    forked and executed from here. The helper is a subreaper and does not
 *    exit before the monitor has read its result (the pid of a new init or
 *    exec'd process) and closed the control socket, so those processes can
 *    only become the monitor's children (and be reaped) once their pids
 *    are known here;
 *  - the stdout and stderr pipes of containers, copied to their CRI logs;
 *  - exits: waitpid, then <bundle>/exit.json (with the OOM kill count of
 *    the container's memory cgroup) and an event;
 *  - ExecSync output (16 MiB per stream), its timeout, kill(2) of its own
 *    unreaped children.
 */
#include "cmon.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <link.h>
#include <malloc.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#define ENV_SELECT "_SHIM_CMONITOR"
#define ENV_READY "_SHIM_MONITOR_READY_FD"
#define SOCKET_NAME "monitor.sock"
#define EXIT_FILE "exit.json"

#define MAX_REQUEST (8 << 20)     /* one request line */
#define MAX_HELPER_REPLY (64 << 10)
#define MAX_EXEC_OUTPUT (16 << 20) /* per stream, like the Go monitor */
#define MAX_EVENT_BACKLOG (1 << 20)
#define MAX_CONNS 256
#define MAX_HELPERS 32
#define MAX_ID 1024
#define MAX_PATH 4096
#define REQUEST_TIMEOUT_MS 60000
#define EXIT_DRAIN_MS 2000 /* output still open after an init exited */
#define EXEC_DRAIN_MS 1000 /* output still open after an exec'd process exited */
#define DELETE_WAIT_MS 10000
#define SHUTDOWN_WAIT_MS 10000
#define PARK_MS 1000 /* a create helper waits this long to do the start */
#define READ_CHUNK (16 << 10)

/* ---- objects ----
 * Everything epoll reports on starts with a struct watch. Objects are
 * never freed while the events of one epoll_wait are being handled: they
 * are marked dead, their fds closed, and freed at the end of the round. */
enum kind { K_LISTEN, K_SIGNAL, K_CONN, K_STREAM, K_CAPTURE, K_HELPER, K_CTR, K_EXEC };

struct watch {
	enum kind kind;
	int dead;
	struct watch *grave;
};

enum cstate { C_READ, C_BUSY, C_WRITE, C_EVENTS };

struct conn {
	struct watch w;
	struct conn *next;
	int fd;
	enum cstate st;
	struct cm_buf in, out;
	size_t outoff;
	int64_t deadline; /* C_READ */
	int shutdown_wait;
	uint32_t events; /* registered */
};

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
	char *id, *bundle, *log_path, *oom_file;
	int log_fd, log_err_reported;
	int stdin_fd; /* write end, held for attach */
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
	int kill_sent;        /* shutdown */
	struct helper *parked; /* the create helper, waiting to do the start */
};

struct capture {
	struct watch w;
	int fd;
	struct cm_buf b;
	int truncated;
	struct execop *ex;
};

struct execop {
	struct watch w;
	struct execop *next;
	struct conn *conn;
	char *id;
	pid_t pid;
	int started, reaped, wstatus;
	int64_t timeout_ms, kill_at, drain_until;
	int timed_out;
	struct capture out, err;
};

enum hop { H_CREATE, H_START, H_KILL, H_DELETE, H_EXEC, H_UPDATE, H_SHUTKILL };
static const char *hop_names[] = {"create", "start", "kill", "delete", "exec", "update", "kill"};

struct helper {
	struct watch w;
	struct helper *next;
	enum hop op;
	pid_t pid;
	int ctl;
	int reaped, done;
	struct conn *conn;
	char *id;
	struct execop *ex;
	int force;
	int parked, resumed;
	int64_t park_until;
	struct cm_buf in;
};

static struct {
	char *pod, *dir, *root, *binary, *level;
	int dirfd, lfd, epfd, sigfd;
	struct watch lw, sw;
	int64_t listen_paused_until;
	struct ctr *ctrs;
	struct conn *conns;
	int nconns;
	struct helper *helpers;
	int nhelpers;
	struct execop *execs;
	int shutting_down;
	int64_t shutdown_until;
	struct watch *graveyard;
} M;

static char rbuf[READ_CHUNK];

static void bury(struct watch *w)
{
	if (w->dead)
		return;
	w->dead = 1;
	w->grave = M.graveyard;
	M.graveyard = w;
}

static void closefd(int *fd)
{
	if (*fd >= 0) {
		epoll_ctl(M.epfd, EPOLL_CTL_DEL, *fd, NULL);
		close(*fd);
		*fd = -1;
	}
}

static int ep_add(int fd, struct watch *w, uint32_t ev)
{
	struct epoll_event e = {.events = ev, .data.ptr = w};
	return epoll_ctl(M.epfd, EPOLL_CTL_ADD, fd, &e);
}

static void ep_mod(int fd, struct watch *w, uint32_t ev)
{
	struct epoll_event e = {.events = ev, .data.ptr = w};
	epoll_ctl(M.epfd, EPOLL_CTL_MOD, fd, &e);
}

static const char *errno_class(int e)
{
	switch (e) {
	case ENOENT:
	case ENOTDIR:
		return "not_found";
	case EACCES:
	case EPERM:
	case EROFS:
		return "permission_denied";
	case EINVAL:
	case ENAMETOOLONG:
	case ELOOP:
		return "invalid_argument";
	case ENOMEM:
	case ENOSPC:
	case EMFILE:
	case ENFILE:
	case EAGAIN:
		return "resource_exhausted";
	case EEXIST:
		return "already_exists";
	}
	return "internal";
}

/* ---- replies ---- */

static void conn_close(struct conn *c);
static void conn_flush(struct conn *c);

static void conn_set_events(struct conn *c, uint32_t ev)
{
	if (c->events != ev) {
		ep_mod(c->fd, &c->w, ev);
		c->events = ev;
	}
}

/* reply sends b (a JSON object without its newline) and closes after. */
static void reply(struct conn *c, struct cm_buf *b)
{
	if (c == NULL || c->w.dead) {
		cm_buf_free(b);
		return;
	}
	cm_buf_add(b, "\n", 1);
	if (b->failed) {
		cm_buf_free(b);
		cm_buf_str(b, "{\"error\":{\"class\":\"resource_exhausted\",\"message\":\"monitor: out of memory\"}}\n");
	}
	cm_buf_free(&c->in);
	cm_buf_free(&c->out);
	c->out = *b;
	c->outoff = 0;
	c->st = C_WRITE;
	conn_flush(c);
}

static void reply_ok(struct conn *c)
{
	struct cm_buf b = {0};
	cm_buf_str(&b, "{}");
	reply(c, &b);
}

static void reply_err(struct conn *c, const char *cls, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static void reply_err(struct conn *c, const char *cls, const char *fmt, ...)
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
	cm_buf_str(&b, "{\"error\":{\"class\":");
	cm_buf_jstr(&b, cls, strlen(cls));
	cm_buf_str(&b, ",\"message\":");
	cm_buf_jstr(&b, msg, (size_t)n);
	cm_buf_str(&b, "}}");
	reply(c, &b);
}

/* ---- containers ---- */

static struct ctr *find_ctr(const char *id)
{
	for (struct ctr *c = M.ctrs; c; c = c->next)
		if (strcmp(c->id, id) == 0)
			return c;
	return NULL;
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

static void ctr_unpark(struct ctr *c);

static void ctr_remove(struct ctr *c)
{
	ctr_unpark(c);
	for (struct ctr **pp = &M.ctrs; *pp; pp = &(*pp)->next)
		if (*pp == c) {
			*pp = c->next;
			break;
		}
	stream_close(&c->out);
	stream_close(&c->err);
	closefd(&c->stdin_fd);
	if (c->log_fd >= 0) {
		close(c->log_fd);
		c->log_fd = -1;
	}
	c->out.w.dead = c->err.w.dead = 1;
	bury(&c->w);
}

static void free_ctr(struct ctr *c)
{
	free(c->id);
	free(c->bundle);
	free(c->log_path);
	free(c->oom_file);
	free(c);
}

static int open_log(const char *path)
{
	return open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC | O_NOCTTY, 0640);
}

static void exit_json(struct cm_buf *b, struct ctr *c)
{
	int st = c->wstatus;
	char ts[40];
	cm_rfc3339(&c->finished, ts);
	if (WIFSIGNALED(st)) {
		int sig = WTERMSIG(st);
		cm_buf_printf(b, "{\"pid\":%d,\"code\":%d,\"signaled\":true,\"signal\":%d", (int)c->pid, 128 + sig, sig);
	} else {
		cm_buf_printf(b, "{\"pid\":%d,\"code\":%d", (int)c->pid, WIFEXITED(st) ? WEXITSTATUS(st) : 255);
	}
	if (c->oom_killed)
		cm_buf_str(b, ",\"oomKilled\":true");
	cm_buf_printf(b, ",\"finishedAt\":\"%s\"}", ts);
}

/* read_oom_kills reads the "oom_kill N" line of a memory.oom_control (v1)
 * or memory.events (v2) file. */
static long long read_oom_kills(const char *path)
{
	char buf[4096];
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return 0;
	ssize_t n;
	do
		n = read(fd, buf, sizeof(buf) - 1);
	while (n < 0 && errno == EINTR);
	close(fd);
	if (n <= 0)
		return 0;
	buf[n] = '\0';
	for (char *l = buf; l != NULL && *l != '\0';) {
		if (strncmp(l, "oom_kill ", 9) == 0)
			return strtoll(l + 9, NULL, 10);
		l = strchr(l, '\n');
		if (l != NULL)
			l++;
	}
	return 0;
}

static int write_exit_record(struct ctr *c, struct cm_buf *rec)
{
	char tmp[MAX_PATH + 32], dst[MAX_PATH + 32];
	snprintf(tmp, sizeof(tmp), "%s/" EXIT_FILE ".tmp", c->bundle);
	snprintf(dst, sizeof(dst), "%s/" EXIT_FILE, c->bundle);
	int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, 0600);
	if (fd < 0)
		return -1;
	if (cm_write_full(fd, rec->p, rec->len) < 0) {
		int e = errno;
		close(fd);
		unlink(tmp);
		errno = e;
		return -1;
	}
	if (close(fd) < 0 || rename(tmp, dst) < 0) {
		int e = errno;
		unlink(tmp);
		errno = e;
		return -1;
	}
	return 0;
}

static void broadcast(struct cm_buf *ev)
{
	for (struct conn *s = M.conns; s; s = s->next) {
		if (s->w.dead || s->st != C_EVENTS)
			continue;
		if (s->out.len - s->outoff + ev->len > MAX_EVENT_BACKLOG) {
			cm_log(CM_WARN, "dropping an event for a subscriber that does not read (it reads exit.json later)");
			continue;
		}
		if (s->outoff > 0 && s->outoff == s->out.len)
			s->out.len = s->outoff = 0;
		cm_buf_add(&s->out, ev->p, ev->len);
		if (s->out.failed) {
			conn_close(s);
			continue;
		}
		conn_flush(s);
	}
}

static void ctr_delete_done(struct ctr *c);
static void shutdown_check(void);

/* ctr_finalize records the exit of a container's init: exit.json, then
 * the event, then whoever waited for it. */
static void ctr_finalize(struct ctr *c)
{
	if (c->exited)
		return;
	c->exited = 1;
	if (c->oom_file && read_oom_kills(c->oom_file) > 0)
		c->oom_killed = 1;
	struct cm_buf rec = {0};
	exit_json(&rec, c);
	if (rec.failed || write_exit_record(c, &rec) < 0)
		cm_log(CM_ERROR, "container %s: recording the exit: %s", c->id, strerror(errno));
	struct cm_buf ev = {0};
	cm_buf_str(&ev, "{\"id\":");
	cm_buf_jstr(&ev, c->id, strlen(c->id));
	cm_buf_str(&ev, ",\"exit\":");
	cm_buf_add(&ev, rec.p, rec.len);
	cm_buf_str(&ev, "}\n");
	if (!ev.failed)
		broadcast(&ev);
	cm_buf_free(&ev);
	cm_buf_free(&rec);
	cm_log(CM_INFO, "container %s exited: status %#x%s", c->id, c->wstatus, c->oom_killed ? " (OOM killed)" : "");
	if (c->delete_until)
		ctr_delete_done(c);
	if (M.shutting_down)
		shutdown_check();
}

static void ctr_maybe_finalize(struct ctr *c)
{
	if (c->reaped && !c->exited && c->out.fd < 0 && c->err.fd < 0)
		ctr_finalize(c);
}

static void on_stream(struct stream *s, uint32_t ev)
{
	(void)ev;
	for (int i = 0; i < 8; i++) {
		ssize_t n = read(s->fd, rbuf, sizeof(rbuf));
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
		if (cm_crilog_feed(s->c->log_fd, s->name, &s->lb, rbuf, (size_t)n, &now) < 0 && !s->c->log_err_reported) {
			s->c->log_err_reported = 1;
			cm_log(CM_WARN, "container %s: writing its log: %s", s->c->id, strerror(errno));
		}
	}
}

/* ---- exec ---- */

static void capture_init(struct capture *k, struct execop *ex)
{
	k->w.kind = K_CAPTURE;
	k->fd = -1;
	k->ex = ex;
	k->b.max = MAX_EXEC_OUTPUT;
}

static void exec_free_io(struct execop *ex)
{
	closefd(&ex->out.fd);
	closefd(&ex->err.fd);
	cm_buf_free(&ex->out.b);
	cm_buf_free(&ex->err.b);
}

static void exec_remove(struct execop *ex)
{
	for (struct execop **pp = &M.execs; *pp; pp = &(*pp)->next)
		if (*pp == ex) {
			*pp = ex->next;
			break;
		}
	exec_free_io(ex);
	ex->out.w.dead = ex->err.w.dead = 1;
	bury(&ex->w);
}

static void exec_complete(struct execop *ex)
{
	if (ex->conn) {
		if (ex->timed_out) {
			reply_err(ex->conn, "deadline_exceeded", "command in container %s timed out after %lldms", ex->id,
				  (long long)ex->timeout_ms);
		} else {
			int st = ex->wstatus;
			int code = WIFSIGNALED(st) ? 128 + WTERMSIG(st) : WIFEXITED(st) ? WEXITSTATUS(st) : 255;
			struct cm_buf b = {0};
			cm_buf_str(&b, "{");
			if (ex->out.b.len) {
				cm_buf_str(&b, "\"stdout\":");
				cm_buf_base64(&b, (unsigned char *)ex->out.b.p, ex->out.b.len);
				cm_buf_str(&b, ",");
			}
			cm_buf_free(&ex->out.b);
			if (ex->err.b.len) {
				cm_buf_str(&b, "\"stderr\":");
				cm_buf_base64(&b, (unsigned char *)ex->err.b.p, ex->err.b.len);
				cm_buf_str(&b, ",");
			}
			cm_buf_free(&ex->err.b);
			if (ex->out.truncated || ex->err.truncated)
				cm_buf_str(&b, "\"truncated\":true,");
			cm_buf_printf(&b, "\"exitCode\":%d}", code);
			reply(ex->conn, &b);
		}
	}
	exec_remove(ex);
	malloc_trim(0);
}

static void exec_maybe_complete(struct execop *ex)
{
	if (ex->reaped && ex->out.fd < 0 && ex->err.fd < 0)
		exec_complete(ex);
}

static void on_capture(struct capture *k, uint32_t ev)
{
	(void)ev;
	for (int i = 0; i < 64; i++) {
		size_t room = k->b.max - k->b.len;
		ssize_t n;
		if (room > 0 && cm_buf_reserve(&k->b, room < READ_CHUNK ? room : READ_CHUNK) == 0) {
			size_t want = k->b.cap - k->b.len;
			if (want > room)
				want = room;
			n = read(k->fd, k->b.p + k->b.len, want);
			if (n > 0)
				k->b.len += (size_t)n;
		} else {
			n = read(k->fd, rbuf, sizeof(rbuf));
			if (n > 0)
				k->truncated = 1;
		}
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0 && errno == EAGAIN)
			return;
		if (n <= 0) {
			closefd(&k->fd);
			exec_maybe_complete(k->ex);
			return;
		}
	}
}

/* ---- helpers ---- */

/* A helper is freed once its control socket is closed (done) and its
 * process reaped. */
static void helper_maybe_free(struct helper *h)
{
	if (!h->done || !h->reaped || h->w.dead)
		return;
	for (struct helper **pp = &M.helpers; *pp; pp = &(*pp)->next)
		if (*pp == h) {
			*pp = h->next;
			break;
		}
	M.nhelpers--;
	bury(&h->w);
}

static void helper_close(struct helper *h)
{
	closefd(&h->ctl);
	cm_buf_free(&h->in);
	h->done = 1;
	helper_maybe_free(h);
}

static void free_helper(struct helper *h)
{
	free(h->id);
	free(h);
}

extern char **environ;

/* close_from closes every fd >= from but keep. */
static void close_from(int from, int keep)
{
	if (keep >= from) {
		if (keep > from && syscall(SYS_close_range, (unsigned)from, (unsigned)keep - 1, 0) < 0)
			goto slow;
		if (syscall(SYS_close_range, (unsigned)keep + 1, ~0U, 0) < 0)
			goto slow;
		return;
	}
	if (syscall(SYS_close_range, (unsigned)from, ~0U, 0) == 0)
		return;
slow:
	for (int fd = from; fd < 65536; fd++)
		if (fd != keep)
			close(fd);
}

/* spawn_helper forks and executes `<exe> monitor-helper` for op on id.
 * data (a raw JSON value) goes to it in a memfd; io are the stdin (read
 * end), stdout and stderr (write ends) of the process it starts, or -1. */
static struct helper *spawn_helper(enum hop op, const char *id, const char **extra, const char *data, size_t dlen,
				   const int io[3])
{
	if (M.nhelpers >= MAX_HELPERS) {
		errno = EAGAIN;
		return NULL;
	}
	struct helper *h = calloc(1, sizeof(*h));
	if (h == NULL)
		return NULL;
	h->w.kind = K_HELPER;
	h->op = op;
	h->ctl = -1;
	h->in.max = MAX_HELPER_REPLY;
	h->id = strdup(id);
	int sp[2] = {-1, -1}, datafd = -1;
	if (h->id == NULL || socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sp) < 0)
		goto fail;
	if (data) {
		datafd = (int)syscall(SYS_memfd_create, "shim-monitor-request", MFD_CLOEXEC);
		if (datafd < 0 || cm_write_full(datafd, data, dlen) < 0 || lseek(datafd, 0, SEEK_SET) < 0)
			goto fail;
	}
	const char *argv[40];
	int a = 0;
	argv[a++] = "shim";
	argv[a++] = "monitor-helper";
	argv[a++] = "--op";
	argv[a++] = hop_names[op];
	argv[a++] = "--id";
	argv[a++] = id;
	argv[a++] = "--pod";
	argv[a++] = M.pod;
	argv[a++] = "--runtime-root";
	argv[a++] = M.root;
	if (M.binary) {
		argv[a++] = "--runtime-binary";
		argv[a++] = M.binary;
	}
	argv[a++] = "--log-level";
	argv[a++] = M.level;
	argv[a++] = "--ctl-fd=3";
	if (datafd >= 0)
		argv[a++] = "--data-fd=4";
	static const char *iofl[3] = {"--stdin-fd=5", "--stdout-fd=6", "--stderr-fd=7"};
	for (int i = 0; i < 3; i++)
		if (io && io[i] >= 0)
			argv[a++] = iofl[i];
	for (; extra && *extra && a < 38; extra++)
		argv[a++] = *extra;
	argv[a] = NULL;

	pid_t pid = fork();
	if (pid < 0)
		goto fail;
	if (pid == 0) {
		/* The helper starts with default signals, nothing blocked,
		 * and only fds 0-2 and the ones it is told about. */
		sigset_t none;
		sigemptyset(&none);
		sigprocmask(SIG_SETMASK, &none, NULL);
		for (int s = 1; s < NSIG; s++)
			signal(s, SIG_DFL);
		int src[5] = {sp[1], datafd, io ? io[0] : -1, io ? io[1] : -1, io ? io[2] : -1};
		int tmp[5];
		for (int i = 0; i < 5; i++) {
			tmp[i] = -1;
			if (src[i] >= 0 && (tmp[i] = fcntl(src[i], F_DUPFD_CLOEXEC, 16)) < 0)
				_exit(126);
		}
		for (int i = 0; i < 5; i++)
			if (tmp[i] >= 0 && dup2(tmp[i], 3 + i) < 0)
				_exit(126);
		close_from(8, -1);
		execve("/proc/self/exe", (char *const *)argv, environ);
		dprintf(2, "shim monitor: exec monitor-helper: %s\n", strerror(errno));
		_exit(127);
	}
	close(sp[1]);
	if (datafd >= 0)
		close(datafd);
	h->pid = pid;
	h->ctl = sp[0];
	fcntl(h->ctl, F_SETFL, O_NONBLOCK);
	if (ep_add(h->ctl, &h->w, EPOLLIN) < 0) {
		/* The helper runs; without its result nothing it started is
		 * registered: end it (its control socket closes with it). */
		kill(pid, SIGKILL);
		close(h->ctl);
		h->ctl = -1;
		h->done = 1;
	}
	h->next = M.helpers;
	M.helpers = h;
	M.nhelpers++;
	if (h->done) {
		errno = ENOMEM;
		return NULL; /* freed once reaped */
	}
	cm_log(CM_DEBUG, "helper %d: %s %s", (int)pid, hop_names[op], id);
	return h;
fail: {
	int e = errno;
	if (sp[0] >= 0) {
		close(sp[0]);
		close(sp[1]);
	}
	if (datafd >= 0)
		close(datafd);
	free(h->id);
	free(h);
	errno = e ? e : ENOMEM;
	return NULL;
}
}

/* The helper's result: {"pid":N,"oomFile":"...","error":{...}}. */
struct hres {
	int64_t pid;
	char *oom;
	const char *err;
	size_t errlen;
};

static int hres_field(void *arg, const char *key, struct cm_json *j)
{
	struct hres *r = arg;
	if (strcmp(key, "pid") == 0)
		return cm_json_int64(j, &r->pid);
	if (strcmp(key, "oomFile") == 0)
		return cm_json_string(j, &r->oom, MAX_PATH);
	if (strcmp(key, "error") == 0)
		return cm_json_raw(j, &r->err, &r->errlen);
	return cm_json_skip(j);
}

static void reply_raw_error(struct conn *c, const char *err, size_t len)
{
	cm_log(CM_DEBUG, "request failed: %.*s", (int)(len > 300 ? 300 : len), err);
	if (c == NULL)
		return;
	struct cm_buf b = {0};
	cm_buf_str(&b, "{\"error\":");
	cm_buf_add(&b, err, len);
	cm_buf_str(&b, "}");
	reply(c, &b);
}

static void delete_start(struct ctr *c, struct conn *conn, int force);
static void op_helper(struct conn *conn, enum hop op, struct ctr *c, const char **extra, const char *data, size_t dlen);

static void helper_result(struct helper *h, const char *line, size_t len)
{
	struct hres r = {0};
	const char *bad = "{\"class\":\"internal\",\"message\":\"monitor helper: bad reply\"}";
	int need_pid = h->op == H_CREATE || h->op == H_EXEC;
	if (cm_json_object(line, len, hres_field, &r) < 0 || r.pid < 0 || r.pid > INT_MAX ||
	    (r.err == NULL && need_pid && r.pid == 0)) {
		r.err = bad;
		r.errlen = strlen(bad);
	}
	struct ctr *c = find_ctr(h->id);
	switch (h->op) {
	case H_CREATE:
		if (c == NULL || !c->creating)
			break; /* cannot happen: a creating container is not removed */
		c->creating = 0;
		if (r.err) {
			reply_raw_error(h->conn, r.err, r.errlen);
			ctr_remove(c);
			break;
		}
		c->pid = (pid_t)r.pid;
		c->oom_file = r.oom;
		r.oom = NULL;
		cm_log(CM_INFO, "container %s created: pid %d", c->id, (int)c->pid);
		if (h->conn == NULL) {
			/* Nobody will learn of it: the caller gave up. */
			cm_log(CM_WARN, "container %s: the create request went away; deleting it", c->id);
			delete_start(c, NULL, 1);
			break;
		}
		struct cm_buf b = {0};
		cm_buf_printf(&b, "{\"pid\":%d}", (int)c->pid);
		reply(h->conn, &b);
		/* StartContainer comes next: the helper can do it, which
		 * saves starting another. Meanwhile the init stays its child:
		 * not for long. */
		h->conn = NULL;
		h->parked = 1;
		h->park_until = cm_now_ms() + PARK_MS;
		c->parked = h;
		if (M.shutting_down)
			shutdown_check();
		break;
	case H_DELETE:
		if (c == NULL)
			break;
		if (r.err) {
			c->deleting = 0;
			reply_raw_error(h->conn, r.err, r.errlen);
			break;
		}
		c->delete_conn = h->conn;
		c->delete_until = cm_now_ms() + DELETE_WAIT_MS;
		if (c->pid == 0 || c->exited)
			ctr_delete_done(c);
		break;
	case H_EXEC: {
		struct execop *ex = h->ex;
		h->ex = NULL;
		if (ex == NULL)
			break;
		if (r.err) {
			reply_raw_error(ex->conn, r.err, r.errlen);
			ex->conn = NULL;
			exec_remove(ex);
			break;
		}
		ex->pid = (pid_t)r.pid;
		ex->started = 1;
		if (ex->timeout_ms > 0)
			ex->kill_at = cm_now_ms() + ex->timeout_ms;
		if (ex->conn == NULL)
			kill(ex->pid, SIGKILL);
		break;
	}
	case H_SHUTKILL:
		if (r.err)
			cm_log(CM_WARN, "container %s: kill at shutdown: %.*s", h->id, (int)r.errlen, r.err);
		break;
	default:
		if (r.err)
			reply_raw_error(h->conn, r.err, r.errlen);
		else
			reply_ok(h->conn);
	}
	free(r.oom);
}

/* helper_release ends the wait of a parked helper: it exits, and the
 * container's init becomes our child. */
static void helper_release(struct helper *h)
{
	for (struct ctr *c = M.ctrs; c; c = c->next)
		if (c->parked == h)
			c->parked = NULL;
	h->parked = 0;
	helper_close(h);
}

static void ctr_unpark(struct ctr *c)
{
	if (c->parked)
		helper_release(c->parked);
}

/* helper_resume hands a parked helper the start of its container. */
static int helper_resume(struct helper *h, struct conn *conn)
{
	ssize_t n = send(h->ctl, "start\n", 6, MSG_NOSIGNAL | MSG_DONTWAIT);
	if (n != 6) {
		helper_release(h);
		return -1;
	}
	for (struct ctr *c = M.ctrs; c; c = c->next)
		if (c->parked == h)
			c->parked = NULL;
	h->parked = 0;
	h->resumed = 1;
	h->op = H_START;
	h->conn = conn;
	h->in.len = 0;
	cm_log(CM_DEBUG, "helper %d: start %s", (int)h->pid, h->id);
	return 0;
}

/* helper_failed: the helper ended without a result. */
static void helper_failed(struct helper *h)
{
	char msg[256];
	snprintf(msg, sizeof(msg),
		 "{\"error\":{\"class\":\"internal\",\"message\":\"monitor helper for %s failed without a result (see "
		 "monitor.log)\"}}",
		 hop_names[h->op]);
	helper_result(h, msg, strlen(msg));
}

static void on_helper(struct helper *h, uint32_t ev)
{
	(void)ev;
	for (;;) {
		if (cm_buf_reserve(&h->in, 4096) < 0) {
			cm_log(CM_ERROR, "helper %d: reply too large", (int)h->pid);
			kill(h->pid, SIGKILL);
			helper_failed(h);
			helper_close(h);
			return;
		}
		ssize_t n = read(h->ctl, h->in.p + h->in.len, h->in.cap - h->in.len);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0 && errno == EAGAIN)
			return;
		if (n <= 0) {
			if (h->parked) {
				helper_release(h);
				return;
			}
			if (h->resumed && h->in.len == 0) {
				/* It died before it answered the start: the
				 * start goes to a new helper. */
				struct conn *conn = h->conn;
				struct ctr *c = find_ctr(h->id);
				h->conn = NULL;
				helper_close(h);
				if (c == NULL)
					return reply_err(conn, "not_found", "container %s is gone", h->id);
				op_helper(conn, H_START, c, NULL, NULL, 0);
				return;
			}
			helper_failed(h);
			helper_close(h);
			return;
		}
		if (h->parked) {
			h->in.len = 0; /* nothing is expected from a parked helper */
			continue;
		}
		char *nl = memchr(h->in.p + h->in.len, '\n', (size_t)n);
		h->in.len += (size_t)n;
		if (nl) {
			helper_result(h, h->in.p, (size_t)(nl - h->in.p));
			if (h->parked) {
				h->in.len = 0;
				return;
			}
			/* Closing the control socket lets the helper exit: its
			 * children are reparented to us only now. */
			helper_close(h);
			return;
		}
	}
}

/* ---- exits ---- */

static void on_exit_status(pid_t pid, int st)
{
	for (struct helper *h = M.helpers; h; h = h->next)
		if (h->pid == pid && !h->reaped) {
			h->reaped = 1;
			if (st != 0)
				cm_log(CM_DEBUG, "helper %d: status %#x", (int)pid, st);
			helper_maybe_free(h);
			return;
		}
	for (struct ctr *c = M.ctrs; c; c = c->next)
		if (c->pid == pid && !c->reaped) {
			c->reaped = 1;
			c->wstatus = st;
			clock_gettime(CLOCK_REALTIME, &c->finished);
			c->drain_until = cm_now_ms() + EXIT_DRAIN_MS;
			ctr_maybe_finalize(c);
			return;
		}
	for (struct execop *ex = M.execs; ex; ex = ex->next)
		if (ex->started && ex->pid == pid && !ex->reaped) {
			ex->reaped = 1;
			ex->wstatus = st;
			ex->kill_at = 0;
			ex->drain_until = cm_now_ms() + EXEC_DRAIN_MS;
			exec_maybe_complete(ex);
			return;
		}
	cm_log(CM_DEBUG, "reaped orphan %d", (int)pid);
}

static void reap(void)
{
	/* Results written before a helper died are read first, so that
	 * what it started is known before it can be reaped. */
	for (struct helper *h = M.helpers; h; h = h->next)
		if (!h->done && h->ctl >= 0)
			on_helper(h, EPOLLIN);
	for (;;) {
		int st;
		pid_t pid = waitpid(-1, &st, WNOHANG);
		if (pid < 0 && errno == EINTR)
			continue;
		if (pid <= 0)
			return;
		on_exit_status(pid, st);
	}
}

/* ---- requests ---- */

struct req {
	char *op, *id, *bundle, *log_path;
	int in, in_once, tty, all, force;
	int64_t signal, timeout;
	const char *process, *resources;
	size_t process_len, resources_len;
};

static int req_field(void *arg, const char *key, struct cm_json *j)
{
	struct req *r = arg;
	if (strcmp(key, "op") == 0)
		return cm_json_string(j, &r->op, 64);
	if (strcmp(key, "id") == 0)
		return cm_json_string(j, &r->id, MAX_ID);
	if (strcmp(key, "bundle") == 0)
		return cm_json_string(j, &r->bundle, MAX_PATH);
	if (strcmp(key, "logPath") == 0)
		return cm_json_string(j, &r->log_path, MAX_PATH);
	if (strcmp(key, "stdin") == 0)
		return cm_json_bool(j, &r->in);
	if (strcmp(key, "stdinOnce") == 0)
		return cm_json_bool(j, &r->in_once);
	if (strcmp(key, "tty") == 0)
		return cm_json_bool(j, &r->tty);
	if (strcmp(key, "all") == 0)
		return cm_json_bool(j, &r->all);
	if (strcmp(key, "force") == 0)
		return cm_json_bool(j, &r->force);
	if (strcmp(key, "signal") == 0)
		return cm_json_int64(j, &r->signal);
	if (strcmp(key, "timeout") == 0)
		return cm_json_int64(j, &r->timeout);
	if (strcmp(key, "process") == 0)
		return cm_json_raw(j, &r->process, &r->process_len);
	if (strcmp(key, "resources") == 0)
		return cm_json_raw(j, &r->resources, &r->resources_len);
	return cm_json_skip(j);
}

static void req_free(struct req *r)
{
	free(r->op);
	free(r->id);
	free(r->bundle);
	free(r->log_path);
}

static struct ctr *get_ctr(struct conn *conn, const char *id)
{
	struct ctr *c = id ? find_ctr(id) : NULL;
	if (c == NULL)
		reply_err(conn, "not_found", "container %s is not in this pod's monitor", id ? id : "");
	return c;
}

static int busy(struct conn *conn, struct ctr *c)
{
	if (c->creating) {
		reply_err(conn, "failed_precondition", "container %s is being created", c->id);
		return 1;
	}
	if (c->deleting) {
		reply_err(conn, "failed_precondition", "container %s is being deleted", c->id);
		return 1;
	}
	return 0;
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

static void op_create(struct conn *conn, struct req *r)
{
	if (r->id == NULL || *r->id == '\0' || r->bundle == NULL || *r->bundle == '\0')
		return reply_err(conn, "invalid_argument", "create needs an id and a bundle");
	if (find_ctr(r->id))
		return reply_err(conn, "already_exists", "container %s exists in the monitor", r->id);
	if (r->tty)
		return reply_err(conn, "not_implemented", "tty containers");
	struct ctr *c = calloc(1, sizeof(*c));
	if (c == NULL)
		return reply_err(conn, "resource_exhausted", "out of memory");
	c->w.kind = K_CTR;
	c->log_fd = c->stdin_fd = -1;
	stream_init(&c->out, c, "stdout");
	stream_init(&c->err, c, "stderr");
	int po[2] = {-1, -1}, pe[2] = {-1, -1}, pi[2] = {-1, -1};
	c->id = strdup(r->id);
	c->bundle = strdup(r->bundle);
	if (c->id == NULL || c->bundle == NULL) {
		reply_err(conn, "resource_exhausted", "out of memory");
		goto fail;
	}
	if (r->log_path && *r->log_path) {
		c->log_path = strdup(r->log_path);
		if (c->log_path == NULL) {
			reply_err(conn, "resource_exhausted", "out of memory");
			goto fail;
		}
		if ((c->log_fd = open_log(c->log_path)) < 0) {
			reply_err(conn, errno_class(errno), "opening log %s: %s", c->log_path, strerror(errno));
			goto fail;
		}
	}
	if (mkpipe(po) < 0 || mkpipe(pe) < 0 || (r->in && pipe2(pi, O_CLOEXEC) < 0)) {
		reply_err(conn, errno_class(errno), "pipes: %s", strerror(errno));
		goto fail;
	}
	int io[3] = {pi[0], po[1], pe[1]};
	const char *extra[] = {"--bundle", c->bundle, NULL};
	struct helper *h = spawn_helper(H_CREATE, c->id, extra, NULL, 0, io);
	if (h == NULL) {
		reply_err(conn, errno_class(errno), "starting the monitor helper: %s", strerror(errno));
		goto fail;
	}
	h->conn = conn;
	close(po[1]);
	close(pe[1]);
	if (pi[0] >= 0)
		close(pi[0]);
	c->out.fd = po[0];
	c->err.fd = pe[0];
	c->stdin_fd = pi[1];
	ep_add(c->out.fd, &c->out.w, EPOLLIN);
	ep_add(c->err.fd, &c->err.w, EPOLLIN);
	c->creating = 1;
	c->next = M.ctrs;
	M.ctrs = c;
	return;
fail:
	close_pair(po);
	close_pair(pe);
	close_pair(pi);
	if (c->log_fd >= 0)
		close(c->log_fd);
	free_ctr(c);
}

static void op_helper(struct conn *conn, enum hop op, struct ctr *c, const char **extra, const char *data, size_t dlen)
{
	struct helper *h = spawn_helper(op, c->id, extra, data, dlen, NULL);
	if (h == NULL)
		return reply_err(conn, errno_class(errno), "starting the monitor helper: %s", strerror(errno));
	h->conn = conn;
}

static void op_kill(struct conn *conn, struct req *r)
{
	struct ctr *c = get_ctr(conn, r->id);
	if (c == NULL || busy(conn, c))
		return;
	ctr_unpark(c);
	if (r->signal < 0 || r->signal > 64)
		return reply_err(conn, "invalid_argument", "bad signal %lld", (long long)r->signal);
	if (!r->all) {
		if (c->reaped)
			return reply_ok(conn); /* already exited: nothing to signal */
		/* The init is our unreaped child: its pid cannot be reused. */
		if (kill(c->pid, (int)r->signal) < 0)
			return reply_err(conn, errno == ESRCH ? "failed_precondition" : errno_class(errno), "signal %lld: %s",
					 (long long)r->signal, strerror(errno));
		return reply_ok(conn);
	}
	char sig[24];
	snprintf(sig, sizeof(sig), "--signal=%lld", (long long)r->signal);
	const char *extra[] = {sig, "--all", NULL};
	op_helper(conn, H_KILL, c, extra, NULL, 0);
}

static void ctr_delete_done(struct ctr *c)
{
	struct conn *conn = c->delete_conn;
	c->delete_conn = NULL;
	c->delete_until = 0;
	cm_log(CM_DEBUG, "container %s deleted", c->id);
	ctr_remove(c);
	reply_ok(conn);
	if (M.shutting_down)
		shutdown_check();
}

static void delete_start(struct ctr *c, struct conn *conn, int force)
{
	const char *extra[] = {force ? "--force" : NULL, NULL};
	struct helper *h = spawn_helper(H_DELETE, c->id, extra, NULL, 0, NULL);
	if (h == NULL)
		return reply_err(conn, errno_class(errno), "starting the monitor helper: %s", strerror(errno));
	c->deleting = 1;
	h->conn = conn;
}

static void op_delete(struct conn *conn, struct req *r)
{
	struct ctr *c = get_ctr(conn, r->id);
	if (c == NULL || busy(conn, c))
		return;
	ctr_unpark(c);
	delete_start(c, conn, r->force);
}

static void op_exec(struct conn *conn, struct req *r)
{
	struct ctr *c = get_ctr(conn, r->id);
	if (c == NULL || busy(conn, c))
		return;
	ctr_unpark(c);
	if (c->reaped)
		return reply_err(conn, "failed_precondition", "container %s is not running", c->id);
	struct execop *ex = calloc(1, sizeof(*ex));
	if (ex == NULL)
		return reply_err(conn, "resource_exhausted", "out of memory");
	ex->w.kind = K_EXEC;
	capture_init(&ex->out, ex);
	capture_init(&ex->err, ex);
	ex->id = strdup(c->id);
	ex->conn = conn;
	if (r->timeout > 0)
		ex->timeout_ms = r->timeout / 1000000 + (r->timeout % 1000000 != 0);
	int po[2] = {-1, -1}, pe[2] = {-1, -1};
	if (ex->id == NULL || mkpipe(po) < 0 || mkpipe(pe) < 0) {
		reply_err(conn, errno_class(errno), "pipes: %s", strerror(errno));
		goto fail;
	}
	int io[3] = {-1, po[1], pe[1]};
	struct helper *h = spawn_helper(H_EXEC, c->id, NULL, r->process, r->process_len, io);
	if (h == NULL) {
		reply_err(conn, errno_class(errno), "starting the monitor helper: %s", strerror(errno));
		goto fail;
	}
	h->ex = ex;
	close(po[1]);
	close(pe[1]);
	ex->out.fd = po[0];
	ex->err.fd = pe[0];
	ep_add(ex->out.fd, &ex->out.w, EPOLLIN);
	ep_add(ex->err.fd, &ex->err.w, EPOLLIN);
	ex->next = M.execs;
	M.execs = ex;
	return;
fail:
	close_pair(po);
	close_pair(pe);
	free(ex->id);
	free(ex);
}

static void op_reopen(struct conn *conn, struct req *r)
{
	struct ctr *c = get_ctr(conn, r->id);
	if (c == NULL)
		return;
	if (c->log_path == NULL)
		return reply_ok(conn);
	int fd = open_log(c->log_path);
	if (fd < 0)
		return reply_err(conn, errno_class(errno), "reopening log %s: %s", c->log_path, strerror(errno));
	if (c->log_fd >= 0)
		close(c->log_fd);
	c->log_fd = fd;
	c->log_err_reported = 0;
	reply_ok(conn);
}

static void op_state(struct conn *conn)
{
	struct cm_buf b = {0};
	cm_buf_str(&b, "{");
	if (M.ctrs) {
		cm_buf_str(&b, "\"containers\":[");
		for (struct ctr *c = M.ctrs; c; c = c->next) {
			cm_buf_str(&b, "{\"id\":");
			cm_buf_jstr(&b, c->id, strlen(c->id));
			cm_buf_printf(&b, ",\"pid\":%d", (int)c->pid);
			if (c->exited) {
				cm_buf_str(&b, ",\"exited\":");
				exit_json(&b, c);
			}
			cm_buf_str(&b, c->next ? "}," : "}");
		}
		cm_buf_str(&b, "],");
	}
	cm_buf_printf(&b, "\"monitorPid\":%d}", (int)getpid());
	reply(conn, &b);
}

static void die_cleanly(int status)
{
	unlinkat(M.dirfd, SOCKET_NAME, 0);
	_exit(status);
}

static void shutdown_check(void)
{
	if (!M.shutting_down)
		return;
	int left = 0;
	for (struct ctr *c = M.ctrs; c; c = c->next) {
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
			if (spawn_helper(H_SHUTKILL, c->id, extra, NULL, 0, NULL) == NULL)
				kill(c->pid, SIGKILL);
		}
	}
	for (struct execop *ex = M.execs; ex; ex = ex->next)
		if (ex->started && !ex->reaped) {
			kill(ex->pid, SIGKILL);
			left++;
		}
	if (left)
		return;
	cm_log(CM_INFO, "shutdown");
	/* Gone before anyone hears it is: a caller may check at once. */
	unlinkat(M.dirfd, SOCKET_NAME, 0);
	for (struct conn *c = M.conns; c; c = c->next)
		if (!c->w.dead && c->shutdown_wait) {
			int fl = fcntl(c->fd, F_GETFL);
			fcntl(c->fd, F_SETFL, fl & ~O_NONBLOCK);
			cm_write_full(c->fd, "{}\n", 3);
		}
	die_cleanly(0);
}

static void op_shutdown(struct conn *conn)
{
	conn->shutdown_wait = 1;
	if (!M.shutting_down) {
		M.shutting_down = 1;
		M.shutdown_until = cm_now_ms() + SHUTDOWN_WAIT_MS;
		for (struct ctr *c = M.ctrs; c; c = c->next)
			c->kill_sent = 0;
	}
	shutdown_check();
}

static void handle_request(struct conn *conn, const char *line, size_t len)
{
	struct req r = {0};
	conn->st = C_BUSY;
	conn_set_events(conn, 0); /* EPOLLHUP still tells a client that went away */
	if (cm_json_object(line, len, req_field, &r) < 0 || r.op == NULL) {
		req_free(&r);
		return reply_err(conn, "invalid_argument", "monitor: malformed request");
	}
	const char *op = r.op;
	cm_log(CM_DEBUG, "request %s %s", op, r.id ? r.id : "");
	if (strcmp(op, "events") == 0) {
		conn->st = C_EVENTS;
		cm_buf_free(&conn->in);
		conn_set_events(conn, EPOLLIN);
	} else if (strcmp(op, "create") == 0) {
		op_create(conn, &r);
	} else if (strcmp(op, "start") == 0) {
		struct ctr *c = get_ctr(conn, r.id);
		if (c && !busy(conn, c) && (c->parked == NULL || helper_resume(c->parked, conn) < 0))
			op_helper(conn, H_START, c, NULL, NULL, 0);
	} else if (strcmp(op, "kill") == 0) {
		op_kill(conn, &r);
	} else if (strcmp(op, "delete") == 0) {
		op_delete(conn, &r);
	} else if (strcmp(op, "exec_sync") == 0) {
		op_exec(conn, &r);
	} else if (strcmp(op, "reopen_log") == 0) {
		op_reopen(conn, &r);
	} else if (strcmp(op, "state") == 0) {
		op_state(conn);
	} else if (strcmp(op, "update") == 0) {
		struct ctr *c = get_ctr(conn, r.id);
		if (c && !busy(conn, c)) {
			ctr_unpark(c);
			op_helper(conn, H_UPDATE, c, NULL, r.resources, r.resources_len);
		}
	} else if (strcmp(op, "shutdown") == 0) {
		op_shutdown(conn);
	} else {
		reply_err(conn, "invalid_argument", "unknown monitor op %.64s", op);
	}
	req_free(&r);
	if (!conn->w.dead && conn->st == C_BUSY)
		cm_buf_free(&conn->in); /* the raw values were handed on */
}

/* ---- connections ---- */

static void conn_close(struct conn *c)
{
	if (c->w.dead)
		return;
	for (struct conn **pp = &M.conns; *pp; pp = &(*pp)->next)
		if (*pp == c) {
			*pp = c->next;
			break;
		}
	M.nconns--;
	closefd(&c->fd);
	cm_buf_free(&c->in);
	cm_buf_free(&c->out);
	bury(&c->w);
}

/* conn_gone: the client went away before its answer. What it asked for
 * goes on, unanswered; an ExecSync command is killed. */
static void conn_gone(struct conn *c)
{
	for (struct helper *h = M.helpers; h; h = h->next)
		if (h->conn == c)
			h->conn = NULL;
	for (struct execop *ex = M.execs; ex; ex = ex->next)
		if (ex->conn == c) {
			ex->conn = NULL;
			if (ex->started && !ex->reaped)
				kill(ex->pid, SIGKILL);
		}
	for (struct ctr *k = M.ctrs; k; k = k->next)
		if (k->delete_conn == c)
			k->delete_conn = NULL;
	conn_close(c);
}

static void conn_flush(struct conn *c)
{
	while (c->outoff < c->out.len) {
		ssize_t n = send(c->fd, c->out.p + c->outoff, c->out.len - c->outoff, MSG_NOSIGNAL);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0 && errno == EAGAIN) {
			conn_set_events(c, c->st == C_EVENTS ? EPOLLIN | EPOLLOUT : EPOLLOUT);
			return;
		}
		if (n < 0) {
			conn_gone(c);
			return;
		}
		c->outoff += (size_t)n;
	}
	if (c->st == C_WRITE) {
		conn_close(c);
		return;
	}
	/* An events stream: keep the buffer small. */
	if (c->out.cap > 64 << 10)
		cm_buf_free(&c->out);
	c->out.len = c->outoff = 0;
	conn_set_events(c, EPOLLIN);
}

static void on_conn(struct conn *c, uint32_t ev)
{
	switch (c->st) {
	case C_READ:
		for (;;) {
			if (cm_buf_reserve(&c->in, c->in.cap - c->in.len > 0 ? 1 : 4096) < 0) {
				c->in.failed = 0;
				return reply_err(c, "invalid_argument", "monitor: request larger than %d bytes", MAX_REQUEST);
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
	case C_BUSY:
		if (ev & (EPOLLHUP | EPOLLERR))
			conn_gone(c);
		return;
	case C_WRITE:
		if (ev & EPOLLERR) {
			conn_gone(c);
			return;
		}
		conn_flush(c);
		return;
	case C_EVENTS:
		if (ev & EPOLLIN) {
			/* Nothing is expected from a subscriber: drain it and
			 * notice when it goes away. */
			ssize_t n = read(c->fd, rbuf, sizeof(rbuf));
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

static void on_listen(void)
{
	for (;;) {
		int fd = accept4(M.lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
		if (fd < 0) {
			if (errno == EINTR || errno == ECONNABORTED)
				continue;
			if (errno != EAGAIN) {
				cm_log(CM_WARN, "accept: %s", strerror(errno));
				ep_mod(M.lfd, &M.lw, 0);
				M.listen_paused_until = cm_now_ms() + 100;
			}
			return;
		}
		struct conn *c = M.nconns < MAX_CONNS ? calloc(1, sizeof(*c)) : NULL;
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
		c->next = M.conns;
		M.conns = c;
		M.nconns++;
	}
}

/* ---- timers ---- */

static int64_t earliest(int64_t a, int64_t b) { return a == 0 || (b != 0 && b < a) ? b : a; }

static int next_timeout(void)
{
	int64_t t = M.listen_paused_until;
	for (struct conn *c = M.conns; c; c = c->next)
		if (c->st == C_READ)
			t = earliest(t, c->deadline);
	for (struct ctr *c = M.ctrs; c; c = c->next) {
		if (c->reaped && !c->exited)
			t = earliest(t, c->drain_until);
		t = earliest(t, c->delete_until);
	}
	for (struct execop *ex = M.execs; ex; ex = ex->next) {
		t = earliest(t, ex->kill_at);
		if (ex->reaped)
			t = earliest(t, ex->drain_until);
	}
	for (struct helper *h = M.helpers; h; h = h->next)
		if (h->parked)
			t = earliest(t, h->park_until);
	if (M.shutting_down)
		t = earliest(t, M.shutdown_until);
	if (t == 0)
		return -1;
	int64_t d = t - cm_now_ms();
	return d < 0 ? 0 : d > 60000 ? 60000 : (int)d + 1;
}

static void timers(void)
{
	int64_t now = cm_now_ms();
	if (M.listen_paused_until && now >= M.listen_paused_until) {
		M.listen_paused_until = 0;
		ep_mod(M.lfd, &M.lw, EPOLLIN);
	}
	for (struct conn *c = M.conns, *next; c; c = next) {
		next = c->next;
		if (c->st == C_READ && now >= c->deadline)
			conn_close(c);
	}
	for (struct ctr *c = M.ctrs, *next; c; c = next) {
		next = c->next;
		if (c->reaped && !c->exited && now >= c->drain_until) {
			cm_log(CM_WARN, "container %s: output still open %dms after its init exited", c->id, EXIT_DRAIN_MS);
			ctr_finalize(c);
		} else if (c->delete_until && now >= c->delete_until) {
			struct conn *conn = c->delete_conn;
			c->delete_conn = NULL;
			c->delete_until = 0;
			c->deleting = 0;
			reply_err(conn, "unavailable", "container %s did not exit after delete", c->id);
		}
	}
	for (struct execop *ex = M.execs, *next; ex; ex = next) {
		next = ex->next;
		if (ex->kill_at && now >= ex->kill_at) {
			ex->kill_at = 0;
			ex->timed_out = 1;
			kill(ex->pid, SIGKILL);
		}
		if (ex->reaped && now >= ex->drain_until)
			exec_complete(ex);
	}
	for (struct helper *h = M.helpers, *next; h; h = next) {
		next = h->next;
		if (h->parked && now >= h->park_until)
			helper_release(h);
	}
	if (M.shutting_down && now >= M.shutdown_until) {
		M.shutting_down = 0;
		for (struct conn *c = M.conns; c; c = c->next)
			if (c->shutdown_wait && !c->w.dead) {
				c->shutdown_wait = 0;
				reply_err(c, "unavailable", "containers did not die within %dms", SHUTDOWN_WAIT_MS);
			}
	}
}

static void bury_all(void)
{
	while (M.graveyard) {
		struct watch *w = M.graveyard;
		M.graveyard = w->grave;
		switch (w->kind) {
		case K_CONN:
			free(w);
			break;
		case K_CTR:
			free_ctr((struct ctr *)w);
			break;
		case K_HELPER:
			free_helper((struct helper *)w);
			break;
		case K_EXEC:
			free(((struct execop *)w)->id);
			free(w);
			break;
		default:
			break;
		}
	}
}

static void on_signal(void)
{
	struct signalfd_siginfo si;
	int chld = 0;
	for (;;) {
		ssize_t n = read(M.sigfd, &si, sizeof(si));
		if (n < 0 && errno == EINTR)
			continue;
		if (n != (ssize_t)sizeof(si))
			break;
		if (si.ssi_signo == SIGCHLD)
			chld = 1;
		else if (si.ssi_signo == SIGTERM) {
			cm_log(CM_INFO, "SIGTERM: leaving the containers running");
			die_cleanly(0);
		}
	}
	if (chld)
		reap();
}

static void serve(void)
{
	struct epoll_event evs[64];
	for (;;) {
		int n = epoll_wait(M.epfd, evs, 64, next_timeout());
		if (n < 0 && errno != EINTR) {
			cm_log(CM_ERROR, "epoll_wait: %s", strerror(errno));
			die_cleanly(1);
		}
		for (int i = 0; i < n; i++) {
			struct watch *w = evs[i].data.ptr;
			uint32_t ev = evs[i].events;
			if (w->dead)
				continue;
			switch (w->kind) {
			case K_LISTEN:
				on_listen();
				break;
			case K_SIGNAL:
				on_signal();
				break;
			case K_CONN:
				on_conn((struct conn *)w, ev);
				break;
			case K_STREAM:
				on_stream((struct stream *)w, ev);
				break;
			case K_CAPTURE:
				on_capture((struct capture *)w, ev);
				break;
			case K_HELPER:
				on_helper((struct helper *)w, ev);
				break;
			default:
				break;
			}
		}
		timers();
		bury_all();
	}
}

/* ---- start-up ---- */

static int ready_fd = -1;

static void ready_error(const char *cls, const char *fmt, ...) __attribute__((format(printf, 2, 3), noreturn));
static void ready_error(const char *cls, const char *fmt, ...)
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
	cm_log(CM_ERROR, "%s", msg);
	if (ready_fd >= 0) {
		struct cm_buf b = {0};
		cm_buf_str(&b, "{\"class\":");
		cm_buf_jstr(&b, cls, strlen(cls));
		cm_buf_str(&b, ",\"message\":");
		cm_buf_jstr(&b, msg, (size_t)n);
		cm_buf_str(&b, "}");
		if (!b.failed)
			cm_write_full(ready_fd, b.p, b.len);
	}
	_exit(1);
}

/* read_args reads /proc/self/cmdline: `<argv0> monitor --flag value ...`. */
static void read_args(void)
{
	static char buf[64 << 10];
	int fd = open("/proc/self/cmdline", O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		ready_error("internal", "monitor: /proc/self/cmdline: %s", strerror(errno));
	size_t len = 0;
	for (;;) {
		ssize_t n = read(fd, buf + len, sizeof(buf) - 1 - len);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			break;
		len += (size_t)n;
		if (len == sizeof(buf) - 1)
			ready_error("invalid_argument", "monitor: command line too long");
	}
	close(fd);
	buf[len] = '\0';
	char *args[64];
	int argc = 0;
	for (char *p = buf; p < buf + len && argc < 64; p += strlen(p) + 1)
		args[argc++] = p;
	M.level = "info";
	for (int i = 2; i < argc; i++) {
		char *name = args[i], *val = NULL;
		if (strncmp(name, "--", 2) == 0)
			name += 2;
		else if (name[0] == '-')
			name += 1;
		else
			ready_error("invalid_argument", "monitor: unexpected argument %.64s", args[i]);
		char *eq = strchr(name, '=');
		if (eq) {
			*eq = '\0';
			val = eq + 1;
		} else if (i + 1 < argc) {
			val = args[++i];
		} else {
			ready_error("invalid_argument", "monitor: flag %.64s needs a value", name);
		}
		if (strcmp(name, "pod") == 0)
			M.pod = val;
		else if (strcmp(name, "dir") == 0)
			M.dir = val;
		else if (strcmp(name, "runtime-root") == 0)
			M.root = val;
		else if (strcmp(name, "runtime-binary") == 0)
			M.binary = *val ? val : NULL;
		else if (strcmp(name, "log-level") == 0)
			M.level = val;
		else
			ready_error("invalid_argument", "monitor: unknown flag %.64s", name);
	}
	if (M.pod == NULL || M.dir == NULL || M.root == NULL || !*M.pod || !*M.dir || !*M.root)
		ready_error("invalid_argument", "monitor: --pod, --dir and --runtime-root are required");
	cm_log_pod = M.pod;
	if (strcmp(M.level, "debug") == 0 || strcmp(M.level, "trace") == 0)
		cm_log_level = CM_DEBUG;
	else if (strncmp(M.level, "warn", 4) == 0)
		cm_log_level = CM_WARN;
	else if (strcmp(M.level, "error") == 0 || strcmp(M.level, "fatal") == 0 || strcmp(M.level, "panic") == 0)
		cm_log_level = CM_ERROR;
}

static void listen_socket(void)
{
	M.dirfd = open(M.dir, O_PATH | O_DIRECTORY | O_CLOEXEC);
	if (M.dirfd < 0)
		ready_error(errno_class(errno), "monitor: pod directory %s: %s", M.dir, strerror(errno));
	/* The socket path may not fit in sun_path: bind through the
	 * directory's fd instead. */
	struct sockaddr_un sa = {.sun_family = AF_UNIX};
	snprintf(sa.sun_path, sizeof(sa.sun_path), "/proc/self/fd/%d/" SOCKET_NAME, M.dirfd);
	M.lfd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (M.lfd < 0)
		ready_error(errno_class(errno), "monitor: socket: %s", strerror(errno));
	unlinkat(M.dirfd, SOCKET_NAME, 0);
	mode_t old = umask(077);
	int r = bind(M.lfd, (struct sockaddr *)&sa, sizeof(sa));
	umask(old);
	if (r < 0)
		ready_error(errno_class(errno), "monitor: bind %s/" SOCKET_NAME ": %s", M.dir, strerror(errno));
	fchmodat(M.dirfd, SOCKET_NAME, 0600, 0);
	if (listen(M.lfd, 128) < 0)
		ready_error(errno_class(errno), "monitor: listen: %s", strerror(errno));
}

/* small_text_cb: for the read-only segments of the executable (the first
 * object dl_iterate_phdr reports), no huge mappings, and drop the ones made
 * so far. The binary is mostly Go the monitor never runs, but its page
 * cache may hold 2 MB folios: one read of a string constant then maps (and
 * charges) 2 MB. Refaults map 4 KB pages (and their fault-around). Pages
 * shared with a writable segment are left alone. */
static int small_text_cb(struct dl_phdr_info *info, size_t size, void *data)
{
	(void)size;
	(void)data;
	uintptr_t pg = (uintptr_t)sysconf(_SC_PAGESIZE);
	for (int i = 0; i < info->dlpi_phnum; i++) {
		const ElfW(Phdr) *ph = &info->dlpi_phdr[i];
		if (ph->p_type != PT_LOAD || (ph->p_flags & PF_W))
			continue;
		uintptr_t start = (info->dlpi_addr + ph->p_vaddr + pg - 1) & ~(pg - 1);
		uintptr_t end = (info->dlpi_addr + ph->p_vaddr + ph->p_memsz) & ~(pg - 1);
		if (end <= start)
			continue;
		madvise((void *)start, end - start, MADV_NOHUGEPAGE);
		madvise((void *)start, end - start, MADV_DONTNEED);
	}
	return 1;
}

static void monitor_main(void)
{
	dl_iterate_phdr(small_text_cb, NULL);
	read_args();
	/* Big buffers (ExecSync output) are mapped and unmapped, never kept
	 * in the heap: a monitor lives as long as its pod. */
	mallopt(M_MMAP_THRESHOLD, 64 << 10);
	mallopt(M_TRIM_THRESHOLD, 64 << 10);
	mallopt(M_TOP_PAD, 0);

	signal(SIGPIPE, SIG_IGN);
	signal(SIGHUP, SIG_IGN);
	signal(SIGINT, SIG_IGN);
	sigset_t set;
	sigemptyset(&set);
	sigaddset(&set, SIGCHLD);
	sigaddset(&set, SIGTERM);
	if (sigprocmask(SIG_BLOCK, &set, NULL) < 0)
		ready_error("internal", "monitor: sigprocmask: %s", strerror(errno));
	if (prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) < 0)
		ready_error("internal", "monitor: becoming a subreaper: %s", strerror(errno));
	M.sigfd = signalfd(-1, &set, SFD_NONBLOCK | SFD_CLOEXEC);
	M.epfd = epoll_create1(EPOLL_CLOEXEC);
	if (M.sigfd < 0 || M.epfd < 0)
		ready_error("internal", "monitor: signalfd/epoll: %s", strerror(errno));
	listen_socket();
	M.lw.kind = K_LISTEN;
	M.sw.kind = K_SIGNAL;
	if (ep_add(M.lfd, &M.lw, EPOLLIN) < 0 || ep_add(M.sigfd, &M.sw, EPOLLIN) < 0)
		ready_error("internal", "monitor: epoll: %s", strerror(errno));
	if (ready_fd >= 0) {
		cm_write_full(ready_fd, "ok\n", 3);
		close(ready_fd);
		ready_fd = -1;
	}
	cm_log(CM_INFO, "monitor %d serving %s", (int)getpid(), M.dir);
	serve();
}

/* Runs before the Go runtime: the process is single-threaded, so fork is
 * safe, and it never returns when it is a monitor. */
__attribute__((constructor)) static void shim_cmonitor(void)
{
	const char *v = getenv(ENV_SELECT);
	if (v == NULL || strcmp(v, "1") != 0)
		return;
	const char *r = getenv(ENV_READY);
	if (r && *r) {
		char *end;
		long fd = strtol(r, &end, 10);
		if (*end == '\0' && fd >= 3 && fd < 1 << 20) {
			ready_fd = (int)fd;
			fcntl(ready_fd, F_SETFD, FD_CLOEXEC);
		}
	}
	/* Helpers started from here must not become monitors. */
	unsetenv(ENV_SELECT);
	unsetenv(ENV_READY);
	/* Nothing the spawner left open (without close-on-exec) stays in
	 * the monitor, nor reaches its helpers and containers. */
	close_from(3, ready_fd);
	pid_t pid = fork();
	if (pid < 0)
		ready_error("internal", "monitor: fork: %s", strerror(errno));
	if (pid > 0)
		_exit(0);
	setsid();
	if (chdir("/") < 0)
		_exit(1);
	monitor_main();
	_exit(0);
}
