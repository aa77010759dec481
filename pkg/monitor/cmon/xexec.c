/* xexec.c: an exec's init started by the monitor, without a helper.
 *
 * At create, libct writes the container's exec template (the C stage's
 * bootstrap, the cgroup.procs files, the init config without the process:
 * pkg/libct/exectmpl_linux.go). With it, an exec needs no Go helper: the
 * monitor executes the runtime binary's init itself, from a detached
 * read-only overlay of it (nothing in the container can reach the binary
 * on the host through /proc/<pid>/exe), puts stage 0 in the container's
 * cgroup, and has the init-pipe exchange that libct's setnsProcess has:
 * bootstrap, sync bytes up to the init's pid (forked with CLONE_PARENT:
 * our child), the config, then frames ("ready", or "error" with an
 * errdefs.Wire) until EOF, which means the exec happened. The exchange
 * runs on the event loop; it never blocks the monitor.
 *
 * Containers without a template (user namespaces, another OCI runtime)
 * and TTY execs go through the helper.
 *
 * A container's own init starts the same way when the daemon asks for a
 * direct create: libct's PrepareCreate wrote a create template (the
 * bootstrap, the cgroup files, the memory cgroup's OOM count file,
 * oom_score_adj, the whole init config, or the C init's plan when the
 * spec allows one: pkg/libct/direct_linux.go, cplan_linux.go), and
 * stage 0 gets the exec fifo as fd 5 too. The create ends at the init's
 * "ready" (it waits on the fifo); the monitor keeps its end of the init
 * pipe, and the start opens the fifo for reading, which releases the
 * init: EOF on the pipe means the exec happened, an "error" frame that it
 * failed. */
#include "mon.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <linux/mount.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#define MAX_TEMPLATE (1 << 20)
#define MAX_INIT_FRAME (1 << 20)
#define XEXEC_HANDSHAKE_MS 60000

enum xmode {
	X_EXEC,	  /* a process exec'd into a container */
	X_CREATE, /* a container's init, up to its wait on the exec fifo */
	X_START,  /* that init released, until its exec */
};

static const char *const xmode_names[] = {[X_EXEC] = CM_OP_EXEC, [X_CREATE] = CM_OP_CREATE, [X_START] = CM_OP_START};

struct xexec {
	struct watch w;
	struct xexec *next;
	enum xmode mode;
	char *id;
	struct conn *conn; /* X_CREATE, X_START: the request's (NULL: it went away) */
	char *oom;	   /* X_CREATE: the OOM count file, for the result */
	int fifo;   /* X_START: the exec fifo's read end */
	int sock;     /* our end of the init pipe */
	pid_t stage0; /* exits once it has forked the init */
	pid_t pid;    /* the init, then the process; 0 until known */
	int framing;  /* the sync bytes are done: frames follow */
	int ready;
	/* pid exited (and was reaped) before the init pipe said how its
	 * start ended: stage 0 may hold the pipe a moment longer. */
	int pid_reaped, pid_status;
	int stage0_reaped; /* its pid is free: not to be signalled */
	struct cm_buf in;   /* read, not used yet */
	struct cm_buf cfg;  /* the config frame, sent once the pid is known */
	int64_t t0_ns, cg_ns, pid_ns, ready_ns, deadline; /* cg_ns: stage 0 put in the cgroup */
	helper_done cb;
	void *arg;
};

static struct xexec *xexecs;

/* ---- the template ---- */

struct tmpl {
	char *buf;
	const char *bs, *cfg, *oom, *oomadj; /* oom, oomadj: create only, NUL-terminated */
	size_t bslen, cfglen;
	const char *procs[64];
	size_t nprocs;
};

/* section reads "<n>\n" at *p and returns n, or -1. */
static long section(const char **p, const char *end)
{
	long n = 0;
	const char *q = *p;
	if (q >= end || *q < '0' || *q > '9')
		return -1;
	while (q < end && *q >= '0' && *q <= '9' && n <= MAX_TEMPLATE)
		n = n * 10 + (*q++ - '0');
	if (q >= end || *q != '\n' || n > MAX_TEMPLATE)
		return -1;
	*p = q + 1;
	return n;
}

/* short_section reads a section of at most max bytes that holds no NUL
 * or newline, and returns it as a string ("" when empty); NULL when bad. */
static char *short_section(const char **p, const char *end, long max)
{
	long n = section(p, end);
	if (n < 0 || n > max || n > end - *p || memchr(*p, 0, (size_t)n) || memchr(*p, '\n', (size_t)n))
		return NULL;
	char *s = strndup(*p, (size_t)n);
	*p += n;
	return s;
}

/* tmpl_parse checks the template's shape (an exec's, or with create a
 * create's); the lines of cgroup files are NUL-terminated in place. */
static int tmpl_parse(struct tmpl *t, size_t len, int create)
{
	const char *p = t->buf, *end = t->buf + len;
	const char *magic = create ? CM_XT_CREATE_MAGIC : CM_XT_MAGIC;
	size_t ml = strlen(magic);
	if (len < ml + 1 || memcmp(p, magic, ml) != 0 || p[ml] != '\n')
		return -1;
	p += ml + 1;
	long n = section(&p, end);
	if (n < 8 || n > end - p)
		return -1;
	t->bs = p;
	t->bslen = (size_t)n;
	p += n;
	long k = section(&p, end);
	if (k < 1 || k > (long)(sizeof(t->procs) / sizeof(t->procs[0])))
		return -1;
	for (long i = 0; i < k; i++) {
		char *nl = memchr(p, '\n', (size_t)(end - p));
		if (nl == NULL || nl == p || *p != '/')
			return -1;
		*nl = 0;
		t->procs[t->nprocs++] = p;
		p = nl + 1;
	}
	if (create) {
		if ((t->oom = short_section(&p, end, MAX_PATH)) == NULL ||
		    (t->oomadj = short_section(&p, end, 5)) == NULL)
			return -1;
		if (*t->oomadj) {
			char *e;
			long v = strtol(t->oomadj, &e, 10);
			if (*e || v < -1000 || v > 1000)
				return -1;
		}
	}
	long m = section(&p, end);
	/* The config: the Go init's JSON, or (create) the C init's plan. */
	size_t pl = strlen(CM_XT_PLAN_MAGIC);
	int plan = create && m > (long)pl && m == end - p && memcmp(p, CM_XT_PLAN_MAGIC, pl) == 0;
	if (!plan && (m < 3 || m != end - p || p[0] != '{' || p[1] == '}'))
		return -1;
	t->cfg = p;
	t->cfglen = (size_t)m;
	return 0;
}

static void tmpl_free(struct tmpl *t)
{
	free(t->buf);
	free((char *)t->oom);
	free((char *)t->oomadj);
	memset(t, 0, sizeof(*t));
}

/* state_path is the path of file name in container id's libct state dir: 0, or -1
 * with errno. */
static int state_path(char path[MAX_PATH], const char *id, const char *name)
{
	if (snprintf(path, MAX_PATH, "%s/%s/%s", cm_cfg.root, id, name) >= MAX_PATH) {
		errno = ENAMETOOLONG;
		return -1;
	}
	return 0;
}

static int open_in_state(const char *id, const char *name, int flags)
{
	char path[MAX_PATH];
	return state_path(path, id, name) < 0 ? -1 : open(path, flags | O_CLOEXEC | O_NOFOLLOW);
}

/* tmpl_load reads container id's exec template (with create, its create
 * template): 0, or -1 with errno (ENOENT: the container has none). */
static int tmpl_load(const char *id, struct tmpl *t, int create)
{
	memset(t, 0, sizeof(*t));
	int fd = open_in_state(id, create ? CM_XT_CREATE_FILE : CM_XT_FILE, O_RDONLY);
	if (fd < 0)
		return -1;
	struct cm_buf b = {0};
	b.max = MAX_TEMPLATE;
	for (;;) {
		if (cm_buf_reserve(&b, 16 << 10) < 0) {
			errno = EFBIG;
			break;
		}
		ssize_t r = read(fd, b.p + b.len, b.cap - b.len);
		if (r < 0 && errno == EINTR)
			continue;
		if (r <= 0) {
			if (r == 0)
				errno = 0;
			break;
		}
		b.len += (size_t)r;
	}
	int e = errno;
	close(fd);
	t->buf = b.p;
	if (e != 0 || tmpl_parse(t, b.len, create) < 0) {
		tmpl_free(t);
		errno = e ? e : EINVAL;
		return -1;
	}
	return 0;
}

/* ---- the binary: a detached read-only overlay of our own ---- */

static int fsmount_ro(int fsfd)
{
	if (syscall(SYS_fsconfig, fsfd, FSCONFIG_CMD_CREATE, NULL, NULL, 0) < 0)
		return -1;
	return (int)syscall(SYS_fsmount, fsfd, FSMOUNT_CLOEXEC, MOUNT_ATTR_RDONLY | MOUNT_ATTR_NODEV | MOUNT_ATTR_NOSUID);
}

/* overlay_exe opens the init binary (--init-binary, else /proc/self/exe)
 * through a private overlay mount of its directory (over an empty tmpfs)
 * that is in no mount table: writes through it fail, and no copy is made.
 * The same as libct's overlayExe. */
static int overlay_exe(void)
{
	char exe[MAX_PATH];
	const char *self = cm_cfg.init ? cm_cfg.init : "/proc/self/exe";
	if (cm_cfg.init) {
		if (snprintf(exe, sizeof(exe), "%s", cm_cfg.init) >= (int)sizeof(exe))
			return errno = ENAMETOOLONG, -1;
	} else {
		ssize_t n = readlink("/proc/self/exe", exe, sizeof(exe) - 1);
		if (n <= 0)
			return -1;
		exe[n] = 0;
	}
	char *slash = strrchr(exe, '/');
	if (slash == NULL || slash == exe)
		return errno = EINVAL, -1;
	*slash = 0;
	const char *name = slash + 1;
	int fd = -1, dirfd = -1, tfs = -1, empty = -1, ofs = -1, mnt = -1;
	dirfd = open(exe, O_PATH | O_DIRECTORY | O_CLOEXEC);
	tfs = (int)syscall(SYS_fsopen, "tmpfs", FSOPEN_CLOEXEC);
	if (dirfd < 0 || tfs < 0 || syscall(SYS_fsconfig, tfs, FSCONFIG_SET_STRING, "size", "4k", 0) < 0 ||
	    (empty = fsmount_ro(tfs)) < 0)
		goto out;
	ofs = (int)syscall(SYS_fsopen, "overlay", FSOPEN_CLOEXEC);
	if (ofs < 0 || syscall(SYS_fsconfig, ofs, FSCONFIG_SET_FD, "lowerdir+", NULL, dirfd) < 0 ||
	    syscall(SYS_fsconfig, ofs, FSCONFIG_SET_FD, "lowerdir+", NULL, empty) < 0 || (mnt = fsmount_ro(ofs)) < 0)
		goto out;
	fd = openat(mnt, name, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
	struct stat a, b;
	if (fd >= 0 && (fstat(fd, &a) < 0 || stat(self, &b) < 0 || a.st_size != b.st_size)) {
		close(fd);
		fd = -1;
		errno = ESTALE;
	}
out: {
	int e = errno;
	int fds[] = {dirfd, tfs, empty, ofs, mnt};
	for (size_t i = 0; i < sizeof(fds) / sizeof(fds[0]); i++)
		if (fds[i] >= 0)
			close(fds[i]);
	errno = e;
	return fd;
}
}

static int sealed_exe(void)
{
	static int fd = -2;
	if (fd == -2) {
		fd = overlay_exe();
		if (fd < 0)
			cm_log(CM_INFO, "execs go through the helper: no detached overlay of the init binary %s: %s",
			       cm_cfg.init ? cm_cfg.init : "(the monitor's own)", strerror(errno));
		else
			cm_log(CM_DEBUG, "container inits run %s", cm_cfg.init ? cm_cfg.init : "the monitor's own binary");
	}
	return fd;
}

/* ---- results ---- */

static void xexec_remove(struct xexec *x)
{
	for (struct xexec **pp = &xexecs; *pp; pp = &(*pp)->next)
		if (*pp == x) {
			*pp = x->next;
			break;
		}
	closefd(&x->sock);
	closefd(&x->fifo);
	cm_buf_free(&x->in);
	cm_buf_free(&x->cfg);
	bury(&x->w);
}

void xexec_free(struct watch *w)
{
	struct xexec *x = (struct xexec *)w;
	free(x->id);
	free(x->oom);
	free(x);
}

static void finish(struct xexec *x, const char *err, size_t errlen)
{
	struct hres r = {0};
	r.fd = -1;
	r.helper_ns = cm_now_ns() - x->t0_ns;
	if (err) {
		r.err = err;
		r.errlen = errlen;
		/* A started init is the container's: reaped by ctr.c. */
		if (x->pid > 0 && (x->mode == X_START ? !ctr_gone(x->id) : !x->pid_reaped))
			kill(x->pid, SIGKILL);
	} else {
		r.pid = x->pid;
		r.reaped = x->pid_reaped;
		r.wstatus = x->pid_status;
		if (x->mode != X_EXEC)
			r.op_ns = r.helper_ns; /* no helper: all of it is the operation */
		if (x->mode == X_CREATE) {
			/* The init pipe goes with the container, for its start. */
			ep_del(x->sock);
			r.fd = x->sock;
			x->sock = -1;
			r.oom = x->oom;
			x->oom = NULL;
		}
	}
	/* err may point into x->in: x goes after the callback. */
	x->cb(NULL, x->conn, x->arg, &r);
	if (r.fd >= 0)
		close(r.fd);
	free(r.oom);
	xexec_remove(x);
}

/* fail ends x with an error of class cls; a container that exited
 * meanwhile is the cause of any failure (as libct's Exec says it). */
static void __attribute__((format(printf, 3, 4))) fail(struct xexec *x, const char *cls, const char *fmt, ...)
{
	char msg[1024];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	int gone = ctr_gone(x->id);
	if (gone)
		cls = CM_E_FAILED_PRECONDITION;
	struct cm_buf b = {0};
	cm_buf_str(&b, "{\"" CM_WIRE_CLASS "\":\"");
	cm_buf_str(&b, cls);
	cm_buf_str(&b, "\",\"" CM_WIRE_MESSAGE "\":");
	if (gone) {
		char m2[1200];
		snprintf(m2, sizeof(m2), "container %s exited during the %s (%s)", x->id, xmode_names[x->mode], msg);
		cm_buf_jstr(&b, m2, strlen(m2));
	} else
		cm_buf_jstr(&b, msg, strlen(msg));
	cm_buf_str(&b, "}");
	if (b.failed) {
		static const char oom[] = "{\"" CM_WIRE_CLASS "\":\"" CM_E_RESOURCE_EXHAUSTED "\",\"" CM_WIRE_MESSAGE
					  "\":\"out of memory\"}";
		finish(x, oom, strlen(oom));
	} else
		finish(x, b.p, b.len);
	cm_buf_free(&b);
}

/* fail_raw ends x with the init's own error (the JSON of an errdefs.Wire).
 * A failed exec of a container's init is the start's answer as it is. */
static void fail_raw(struct xexec *x, const char *err, size_t len)
{
	if (x->mode != X_START && ctr_gone(x->id))
		return fail(x, CM_E_FAILED_PRECONDITION, "%.*s", (int)(len > 900 ? 900 : len), err);
	finish(x, err, len);
}

/* ---- the exchange ---- */

static void consume(struct cm_buf *b, size_t n)
{
	memmove(b->p, b->p + n, b->len - n);
	b->len -= n;
}

static uint32_t le32(const char *p)
{
	const unsigned char *u = (const unsigned char *)p;
	return (uint32_t)u[0] | (uint32_t)u[1] << 8 | (uint32_t)u[2] << 16 | (uint32_t)u[3] << 24;
}

/* sync_step handles the C stage's sync bytes: 1 to go on, 0 for more
 * bytes, -1 when x is finished. */
static int sync_step(struct xexec *x)
{
	struct cm_buf *b = &x->in;
	if (b->len < 1)
		return 0;
	if (b->p[0] == CM_XT_SYNC_PID[0]) {
		if (b->len < 5)
			return 0;
		int32_t pid = (int32_t)le32(b->p + 1);
		consume(b, 5);
		if (pid == 0)
			return 1;
		x->pid = pid;
		x->pid_ns = cm_now_ns();
		x->framing = 1;
		if (cm_write_full(x->sock, x->cfg.p, x->cfg.len) < 0) {
			fail(x, CM_E_INTERNAL, "%s %s: send the init config: %s", xmode_names[x->mode], x->id,
			     strerror(errno));
			return -1;
		}
		cm_buf_free(&x->cfg);
		return 1;
	}
	if (b->p[0] == CM_XT_SYNC_ERR[0]) {
		if (b->len < 9)
			return 0;
		uint32_t e = le32(b->p + 1), n = le32(b->p + 5);
		if (n > 4096)
			n = 4096;
		if (b->len < 9 + (size_t)n)
			return 0;
		fail(x, e ? errno_class((int)e) : CM_E_INTERNAL, "nsexec: %.*s%s%s", (int)n, b->p + 9, e ? ": " : "",
		     e ? strerror((int)e) : "");
		return -1;
	}
	fail(x, CM_E_INTERNAL, "nsexec: unexpected sync byte %#x", (unsigned char)b->p[0]);
	return -1;
}

struct initmsg {
	char *type;
	const char *err;
	size_t errlen;
};

static int initmsg_field(void *arg, const char *key, struct cm_json *j)
{
	struct initmsg *m = arg;
	if (strcmp(key, CM_XT_MSG_TYPE) == 0)
		return cm_json_string(j, &m->type, 64);
	if (strcmp(key, CM_XT_MSG_ERROR) == 0)
		return cm_json_raw(j, &m->err, &m->errlen);
	return cm_json_skip(j);
}

/* frame_step handles one of the init's frames, as sync_step. */
static int frame_step(struct xexec *x)
{
	struct cm_buf *b = &x->in;
	if (b->len < 4)
		return 0;
	uint32_t n = le32(b->p);
	if (n > MAX_INIT_FRAME) {
		fail(x, CM_E_INTERNAL, "%s %s: init frame of %u bytes", xmode_names[x->mode], x->id, n);
		return -1;
	}
	if (b->len < 4 + (size_t)n)
		return 0;
	struct initmsg m = {0};
	int ok = cm_json_object(b->p + 4, n, initmsg_field, &m) == 0 && m.type;
	if (ok && strcmp(m.type, CM_XT_TYPE_READY) == 0 && !x->ready) {
		x->ready = 1;
		x->ready_ns = cm_now_ns();
		free(m.type);
		consume(b, 4 + (size_t)n);
		if (x->mode != X_CREATE)
			return 1;
		/* The init waits on the exec fifo: created. */
		if (x->pid_reaped || b->len > 0) {
			fail(x, CM_E_INTERNAL, "create %s: container init exited while it got ready", x->id);
			return -1;
		}
		cm_log(CM_DEBUG, "create %s: pid %d, direct: fork and cgroup %.1f ms, C stage %.1f ms, init %.1f ms", x->id,
		       (int)x->pid, (double)(x->cg_ns - x->t0_ns) / 1e6, (double)(x->pid_ns - x->cg_ns) / 1e6,
		       (double)(x->ready_ns - x->pid_ns) / 1e6);
		finish(x, NULL, 0);
		return -1;
	}
	if (ok && strcmp(m.type, CM_XT_TYPE_ERROR) == 0 && m.err)
		fail_raw(x, m.err, m.errlen);
	else
		fail(x, CM_E_INTERNAL, "%s %s: unexpected message from the init: %.*s", xmode_names[x->mode], x->id,
		     (int)(n > 200 ? 200 : n), b->p + 4);
	free(m.type);
	return -1;
}

/* start_eof: the init pipe of a released init closed: it exec'd, or it
 * died; the byte it writes to the exec fifo first tells which. */
static void start_eof(struct xexec *x)
{
	char c;
	if (read(x->fifo, &c, 1) != 1)
		return fail(x, CM_E_FAILED_PRECONDITION, "container %s: its init exited before the start", x->id);
	char path[MAX_PATH];
	if (state_path(path, x->id, CM_XT_FIFO) == 0)
		unlink(path); /* libct: no fifo, not "created" */
	cm_log(CM_DEBUG, "start %s: pid %d, direct: exec %.1f ms", x->id, (int)x->pid,
	       (double)(cm_now_ns() - x->t0_ns) / 1e6);
	finish(x, NULL, 0);
}

/* on_eof: the init pipe closed. After "ready" that is the execve. */
static void on_eof(struct xexec *x)
{
	if (x->mode == X_START && x->in.len == 0)
		start_eof(x);
	else if (x->ready && x->in.len == 0) {
		int64_t now = cm_now_ns();
		cm_log(CM_DEBUG, "exec %s: pid %d, direct: fork and cgroup %.1f ms, C stage %.1f ms, Go init %.1f ms, execve %.1f ms",
		       x->id, (int)x->pid, (double)(x->cg_ns - x->t0_ns) / 1e6, (double)(x->pid_ns - x->cg_ns) / 1e6,
		       (double)(x->ready_ns - x->pid_ns) / 1e6, (double)(now - x->ready_ns) / 1e6);
		finish(x, NULL, 0);
	} else if (!x->framing)
		fail(x, CM_E_INTERNAL, "%s %s: stage 0 exited before the init started (see monitor.log)",
		     xmode_names[x->mode], x->id);
	else
		fail(x, CM_E_INTERNAL, "%s %s: container init exited before it was ready", xmode_names[x->mode], x->id);
}

static void xexec_read(struct xexec *x)
{
	for (;;) {
		if (cm_buf_reserve(&x->in, 4096) < 0)
			return fail(x, CM_E_INTERNAL, "%s %s: init pipe: out of memory", xmode_names[x->mode], x->id);
		ssize_t n = read(x->sock, x->in.p + x->in.len, x->in.cap - x->in.len);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0 && errno == EAGAIN)
			return;
		if (n < 0 && errno != ECONNRESET)
			return fail(x, CM_E_INTERNAL, "%s %s: init pipe: %s", xmode_names[x->mode], x->id, strerror(errno));
		if (n <= 0)
			return on_eof(x);
		x->in.len += (size_t)n;
		int r;
		while ((r = x->framing ? frame_step(x) : sync_step(x)) > 0)
			;
		if (r < 0)
			return;
	}
}

void xexec_on_event(struct watch *w, uint32_t ev)
{
	(void)ev;
	xexec_read((struct xexec *)w);
}

void xexec_poll_all(void)
{
	for (struct xexec *x = xexecs, *next; x; x = next) {
		next = x->next;
		xexec_read(x);
	}
}

int xexec_on_exit(pid_t pid, int st)
{
	for (struct xexec *x = xexecs; x; x = x->next) {
		if (pid == x->pid && x->mode != X_START) {
			x->pid_reaped = 1;
			x->pid_status = st;
			return 1;
		}
		if (pid == x->stage0) {
			x->stage0_reaped = 1;
			return 1; /* its end shows on the init pipe */
		}
	}
	return 0;
}

void xexec_conn_gone(struct conn *c)
{
	for (struct xexec *x = xexecs; x; x = x->next)
		if (x->conn == c)
			x->conn = NULL;
}

int64_t xexec_next_deadline(void)
{
	int64_t t = 0;
	for (struct xexec *x = xexecs; x; x = x->next)
		t = earliest(t, x->deadline);
	return t;
}

void xexec_timers(int64_t now)
{
	for (struct xexec *x = xexecs, *next; x; x = next) {
		next = x->next;
		if (now >= x->deadline) {
			if (!x->stage0_reaped)
				kill(x->stage0, SIGKILL);
			fail(x, CM_E_DEADLINE_EXCEEDED, "%s %s: the init did not get ready in %d s", xmode_names[x->mode],
			     x->id, XEXEC_HANDSHAKE_MS / 1000);
		}
	}
}

/* ---- the start ---- */

/* exec_stage0 runs in the child: default signals, nothing blocked, fds
 * 0-2 the process's stdio (/dev/null for -1), 3 the init pipe, 4 the
 * binary, 5 the exec fifo of a create (fifo >= 0); nothing else. */
static void __attribute__((noreturn)) exec_stage0(const int io[3], int pipefd, int exe, int fifo)
{
	sigset_t none;
	sigemptyset(&none);
	sigprocmask(SIG_SETMASK, &none, NULL);
	for (int s = 1; s < NSIG; s++)
		signal(s, SIG_DFL);
	int src[6] = {io[0], io[1], io[2], pipefd, exe, fifo}, tmp[6];
	int n = fifo >= 0 ? 6 : 5;
	for (int i = 0; i < n; i++) {
		tmp[i] = src[i] >= 0 ? fcntl(src[i], F_DUPFD_CLOEXEC, 16) : open("/dev/null", O_RDWR | O_CLOEXEC);
		if (tmp[i] < 0)
			_exit(126);
	}
	for (int i = 0; i < n; i++)
		if (dup2(tmp[i], i) < 0)
			_exit(126);
	close_from(n, -1);
	char *argv[] = {"shim", "init", NULL};
	char *envp[] = {CM_XT_ENV_INIT_PIPE "=3", fifo >= 0 ? CM_XT_ENV_FIFO_FD "=5" : NULL, NULL};
	execve("/proc/self/fd/4", argv, envp);
	dprintf(2, "shim monitor: exec the container init: %s\n", strerror(errno));
	_exit(127);
}

/* config_frame is the init config, with the process of an exec added: a
 * length-prefixed JSON object. */
static int config_frame(struct cm_buf *f, const struct tmpl *t, const char *process, size_t plen)
{
	size_t n = process ? strlen("{\"process\":") + plen + 1 + (t->cfglen - 1) : t->cfglen;
	if (n > MAX_INIT_FRAME)
		return -1;
	unsigned char h[4] = {(unsigned char)n, (unsigned char)(n >> 8), (unsigned char)(n >> 16), (unsigned char)(n >> 24)};
	cm_buf_add(f, h, 4);
	if (process == NULL) {
		cm_buf_add(f, t->cfg, t->cfglen);
		return f->failed ? -1 : 0;
	}
	cm_buf_str(f, "{\"process\":");
	cm_buf_add(f, process, plen);
	cm_buf_str(f, ",");
	cm_buf_add(f, t->cfg + 1, t->cfglen - 1);
	return f->failed ? -1 : 0;
}

/* join_cgroup puts pid in the container's cgroup. */
static int join_cgroup(const struct tmpl *t, pid_t pid)
{
	char s[16];
	int n = snprintf(s, sizeof(s), "%d", (int)pid);
	for (size_t i = 0; i < t->nprocs; i++) {
		int fd = open(t->procs[i], O_WRONLY | O_CLOEXEC);
		if (fd < 0)
			return -1;
		int r = cm_write_full(fd, s, (size_t)n);
		int e = errno;
		close(fd);
		if (r < 0) {
			errno = e;
			return -1;
		}
	}
	return 0;
}

/* set_oom_adj writes oom_score_adj v of pid. Below the current value it
 * needs CAP_SYS_RESOURCE: without it the value stays (logged once), as
 * libct does. */
static int set_oom_adj(pid_t pid, const char *v)
{
	static int warned;
	char path[64], cur[16] = {0};
	snprintf(path, sizeof(path), "/proc/%d/oom_score_adj", (int)pid);
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return -1;
	ssize_t n = read(fd, cur, sizeof(cur) - 1);
	close(fd);
	if (n <= 0)
		return -1;
	long have = strtol(cur, NULL, 10), want = strtol(v, NULL, 10);
	if (have == want)
		return 0;
	if ((fd = open(path, O_WRONLY | O_CLOEXEC)) < 0)
		return -1;
	int r = cm_write_full(fd, v, strlen(v)), e = errno;
	close(fd);
	if (r == 0)
		return 0;
	if ((e == EACCES || e == EPERM) && want < have) {
		if (!warned++)
			cm_log(CM_WARN, "oom_score_adj %ld below the current %ld needs CAP_SYS_RESOURCE: clamped to %ld",
			       want, have, have);
		return 0;
	}
	errno = e;
	return -1;
}

static struct xexec *xexec_new(enum xmode mode, const char *id, struct conn *conn, helper_done done, void *arg)
{
	struct xexec *x = calloc(1, sizeof(*x));
	if (x == NULL)
		return NULL;
	x->w.kind = K_XEXEC;
	x->mode = mode;
	x->sock = x->fifo = -1;
	x->conn = conn;
	x->cb = done;
	x->arg = arg;
	x->t0_ns = cm_now_ns();
	x->in.max = MAX_INIT_FRAME + 8;
	x->deadline = cm_now_ms() + XEXEC_HANDSHAKE_MS;
	if ((x->id = strdup(id)) == NULL) {
		free(x);
		return NULL;
	}
	return x;
}

/* xexec_watch starts watching x's init pipe; on failure x is freed (its
 * pipe closed) and errno set. */
static int xexec_watch(struct xexec *x)
{
	fcntl(x->sock, F_SETFL, O_NONBLOCK);
	if (ep_add(x->sock, &x->w, EPOLLIN) < 0) {
		int e = errno;
		closefd(&x->sock);
		closefd(&x->fifo);
		cm_buf_free(&x->cfg);
		xexec_free(&x->w);
		errno = e;
		return -1;
	}
	x->next = xexecs;
	xexecs = x;
	return 0;
}

/* spawn starts an exec's or a create's init from the template: 1, 0 (the
 * exec has no template or this monitor cannot use one: the helper does
 * it), -1 with errno. */
static int spawn(enum xmode mode, const char *id, const char *process, size_t plen, const int io[3], struct conn *conn,
		 helper_done done, void *arg)
{
	struct tmpl t;
	int create = mode == X_CREATE;
	if (cm_cfg.binary)
		return 0;
	if (tmpl_load(id, &t, create) < 0) {
		if (create)
			return -1;
		if (errno != ENOENT)
			cm_log(CM_WARN, "exec %s: exec template: %s: the helper starts it", id, strerror(errno));
		return 0;
	}
	int exe = sealed_exe(), fifo = -1, sp[2] = {-1, -1}, e = 0;
	struct xexec *x = exe < 0 ? NULL : xexec_new(mode, id, conn, done, arg);
	if (x == NULL) {
		tmpl_free(&t);
		return 0;
	}
	if ((create && ((fifo = open_in_state(id, CM_XT_FIFO, O_PATH)) < 0 || (*t.oom && !(x->oom = strdup(t.oom))))) ||
	    config_frame(&x->cfg, &t, process, plen) < 0 || socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sp) < 0) {
		e = errno ? errno : ENOMEM;
		goto fail;
	}
	x->stage0 = fork();
	if (x->stage0 < 0) {
		e = errno;
		goto fail;
	}
	if (x->stage0 == 0)
		exec_stage0(io, sp[1], exe, fifo);
	close(sp[1]);
	sp[1] = -1;
	if (fifo >= 0)
		close(fifo);
	fifo = -1;
	x->sock = sp[0];
	sp[0] = -1;
	if ((create && *t.oomadj && set_oom_adj(x->stage0, t.oomadj) < 0) || join_cgroup(&t, x->stage0) < 0 ||
	    cm_write_full(x->sock, t.bs, t.bslen) < 0) {
		e = errno;
		kill(x->stage0, SIGKILL); /* stage 0 is reaped as an orphan */
		goto fail;
	}
	x->cg_ns = cm_now_ns();
	tmpl_free(&t);
	if (xexec_watch(x) < 0) {
		kill(x->stage0, SIGKILL);
		return -1;
	}
	cm_log(CM_DEBUG, "%s %s: stage 0 %d, direct", xmode_names[mode], id, (int)x->stage0);
	return 1;
fail:
	for (int i = 0; i < 2; i++)
		if (sp[i] >= 0)
			close(sp[i]);
	if (fifo >= 0)
		close(fifo);
	closefd(&x->sock);
	cm_buf_free(&x->cfg);
	tmpl_free(&t);
	xexec_free(&x->w);
	errno = e;
	return -1;
}

int xexec_spawn(const char *id, const char *process, size_t plen, const int io[3], helper_done done, void *arg)
{
	return process ? spawn(X_EXEC, id, process, plen, io, NULL, done, arg) : 0;
}

int xcreate_spawn(const char *id, const int io[3], struct conn *conn, helper_done done, void *arg)
{
	return spawn(X_CREATE, id, NULL, 0, io, conn, done, arg);
}

int xstart_spawn(const char *id, pid_t pid, int sock, struct conn *conn, helper_done done, void *arg)
{
	struct xexec *x = xexec_new(X_START, id, conn, done, arg);
	if (x == NULL) {
		close(sock);
		errno = ENOMEM;
		return -1;
	}
	x->sock = sock;
	/* Opening the fifo for reading releases the init blocked opening it
	 * for writing. */
	if ((x->fifo = open_in_state(id, CM_XT_FIFO, O_RDONLY | O_NONBLOCK)) < 0) {
		int e = errno;
		closefd(&x->sock);
		xexec_free(&x->w);
		errno = e;
		return -1;
	}
	x->pid = pid;
	x->framing = x->ready = 1;
	x->stage0_reaped = 1; /* there is none */
	return xexec_watch(x) < 0 ? -1 : 1;
}
