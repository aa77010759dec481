/* helper.c: the monitor-helper processes.
 *
 * The container operations that need pkg/libct or an OCI runtime run in a
 * short-lived Go helper (`<exe> monitor-helper`, pkg/monitor/helper.go)
 * forked and executed from here. It writes one JSON result line on its
 * control socket. The helper is a subreaper and does not exit before the
 * monitor has read its result (the pid of a new init or exec'd process)
 * and closed the control socket, so those processes can only become the
 * monitor's children (and be reaped) once their pids are known here.
 *
 * A create helper may be parked: it waits (PARK_MS) with its control
 * socket open, and the StartContainer that follows is handed to it,
 * which saves starting another helper. */
#include "mon.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <unistd.h>

#define MAX_HELPERS 32
#define MAX_HELPER_REPLY (64 << 10)
#define PARK_MS 1000

static const char *const hop_names[] = {
	[H_CREATE] = CM_HOP_CREATE, [H_START] = CM_HOP_START,   [H_KILL] = CM_HOP_KILL,
	[H_DELETE] = CM_HOP_DELETE, [H_EXEC] = CM_HOP_EXEC,	  [H_UPDATE] = CM_HOP_UPDATE,
};

struct helper {
	struct watch w;
	struct helper *next;
	enum hop op;
	pid_t pid;
	int ctl;
	int reaped, done;
	struct conn *conn;
	char *id;
	helper_done cb;
	void *arg;
	int parked, resumed;
	struct helper **park_slot;
	int64_t park_until;
	struct cm_buf in;
	int fd;        /* received with the result (a pty master), -1 */
	int64_t t0_ns; /* its fork, or its resume from parking */
};

static struct helper *helpers;
static int nhelpers;

extern char **environ;

/* A helper is freed once its control socket is closed (done) and its
 * process reaped. */
static void helper_maybe_free(struct helper *h)
{
	if (!h->done || !h->reaped || h->w.dead)
		return;
	for (struct helper **pp = &helpers; *pp; pp = &(*pp)->next)
		if (*pp == h) {
			*pp = h->next;
			break;
		}
	nhelpers--;
	bury(&h->w);
}

/* helper_close closes the control socket: the helper may exit now. */
static void helper_close(struct helper *h)
{
	closefd(&h->ctl);
	if (h->fd >= 0)
		close(h->fd);
	h->fd = -1;
	cm_buf_free(&h->in);
	h->done = 1;
	helper_maybe_free(h);
}

void helper_free(struct watch *w)
{
	struct helper *h = (struct helper *)w;
	free(h->id);
	free(h);
}

/* exec_helper runs in the child: it starts with default signals, nothing
 * blocked, and only fds 0-2 and the ones it is told about (3 control, 4
 * data, 5-7 the stdio of the process it starts). */
static void __attribute__((noreturn)) exec_helper(const char **argv, const int src[5])
{
	sigset_t none;
	sigemptyset(&none);
	sigprocmask(SIG_SETMASK, &none, NULL);
	for (int s = 1; s < NSIG; s++)
		signal(s, SIG_DFL);
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

/* helper_argv fills argv (room for 40) for op on id. */
static void helper_argv(const char **argv, enum hop op, const char *id, const char **extra, int data, const int io[3])
{
	int a = 0;
	argv[a++] = "shim";
	argv[a++] = "monitor-helper";
	argv[a++] = "--op";
	argv[a++] = hop_names[op];
	argv[a++] = "--id";
	argv[a++] = id;
	argv[a++] = "--pod";
	argv[a++] = cm_cfg.pod;
	argv[a++] = "--runtime-root";
	argv[a++] = cm_cfg.root;
	if (cm_cfg.binary) {
		argv[a++] = "--runtime-binary";
		argv[a++] = cm_cfg.binary;
	}
	if (cm_cfg.init) {
		argv[a++] = "--init-binary";
		argv[a++] = cm_cfg.init;
	}
	argv[a++] = "--log-level";
	argv[a++] = cm_cfg.level;
	argv[a++] = "--ctl-fd=3";
	if (data)
		argv[a++] = "--data-fd=4";
	static const char *iofl[3] = {"--stdin-fd=5", "--stdout-fd=6", "--stderr-fd=7"};
	for (int i = 0; i < 3; i++)
		if (io && io[i] >= 0)
			argv[a++] = iofl[i];
	for (; extra && *extra && a < 38; extra++)
		argv[a++] = *extra;
	argv[a] = NULL;
}

struct helper *helper_spawn(enum hop op, const char *id, const char **extra, const char *data, size_t dlen,
			    const int io[3], struct conn *conn, helper_done done, void *arg)
{
	if (nhelpers >= MAX_HELPERS) {
		errno = EAGAIN;
		return NULL;
	}
	struct helper *h = calloc(1, sizeof(*h));
	if (h == NULL)
		return NULL;
	h->w.kind = K_HELPER;
	h->op = op;
	h->ctl = h->fd = -1;
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
	helper_argv(argv, op, id, extra, datafd >= 0, io);
	h->t0_ns = cm_now_ns();
	pid_t pid = fork();
	if (pid < 0)
		goto fail;
	if (pid == 0) {
		int src[5] = {sp[1], datafd, io ? io[0] : -1, io ? io[1] : -1, io ? io[2] : -1};
		exec_helper(argv, src);
	}
	close(sp[1]);
	if (datafd >= 0)
		close(datafd);
	h->pid = pid;
	h->ctl = sp[0];
	h->conn = conn;
	h->cb = done;
	h->arg = arg;
	fcntl(h->ctl, F_SETFL, O_NONBLOCK);
	if (ep_add(h->ctl, &h->w, EPOLLIN) < 0) {
		/* The helper runs; without its result nothing it started is
		 * registered: end it (its control socket closes with it). */
		kill(pid, SIGKILL);
		close(h->ctl);
		h->ctl = -1;
		h->done = 1;
	}
	h->next = helpers;
	helpers = h;
	nhelpers++;
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

void helper_run(struct conn *conn, enum hop op, const char *id, const char **extra, const char *data, size_t dlen,
		helper_done done, void *arg)
{
	if (helper_spawn(op, id, extra, data, dlen, NULL, conn, done, arg) == NULL)
		reply_err(conn, errno_class(errno), "starting the monitor helper: %s", strerror(errno));
}

static int hres_field(void *arg, const char *key, struct cm_json *j)
{
	struct hres *r = arg;
	if (strcmp(key, CM_HRES_PID) == 0)
		return cm_json_int64(j, &r->pid);
	if (strcmp(key, CM_HRES_OOM_FILE) == 0)
		return cm_json_string(j, &r->oom, MAX_PATH);
	if (strcmp(key, CM_HRES_ERROR) == 0)
		return cm_json_raw(j, &r->err, &r->errlen);
	if (strcmp(key, CM_HRES_OP_NS) == 0)
		return cm_json_int64(j, &r->op_ns);
	return cm_json_skip(j);
}

/* helper_result hands a result line to the helper's callback; without
 * one, the result is the answer. */
static void helper_result(struct helper *h, const char *line, size_t len, int lost)
{
	struct hres r = {0};
	static const char bad[] = "{\"" CM_WIRE_CLASS "\":\"" CM_E_INTERNAL "\",\"" CM_WIRE_MESSAGE
				  "\":\"monitor helper: bad reply\"}";
	int need_pid = h->op == H_CREATE || h->op == H_EXEC;
	if (cm_json_object(line, len, hres_field, &r) < 0 || r.pid < 0 || r.pid > INT_MAX ||
	    (r.err == NULL && need_pid && r.pid == 0)) {
		r.err = bad;
		r.errlen = strlen(bad);
	}
	r.lost = lost;
	r.helper_ns = cm_now_ns() - h->t0_ns;
	r.fd = h->fd;
	h->fd = -1;
	if (h->cb)
		h->cb(h, h->conn, h->arg, &r);
	else if (r.err)
		reply_raw_error(h->conn, r.err, r.errlen);
	else
		reply_ok(h->conn);
	free(r.oom);
	if (r.fd >= 0)
		close(r.fd);
}

/* helper_failed: the helper ended without a result. */
static void helper_failed(struct helper *h)
{
	char msg[256];
	snprintf(msg, sizeof(msg),
		 "{\"" CM_HRES_ERROR "\":{\"" CM_WIRE_CLASS "\":\"" CM_E_INTERNAL "\",\"" CM_WIRE_MESSAGE
		 "\":\"monitor helper for %s failed without a result (see monitor.log)\"}}",
		 hop_names[h->op]);
	helper_result(h, msg, strlen(msg), 1);
}

void helper_park(struct helper *h, struct helper **slot)
{
	h->conn = NULL;
	h->parked = 1;
	h->park_until = cm_now_ms() + PARK_MS;
	h->park_slot = slot;
	*slot = h;
}

static void unpark(struct helper *h)
{
	if (h->park_slot)
		*h->park_slot = NULL;
	h->park_slot = NULL;
	h->parked = 0;
}

void helper_release(struct helper *h)
{
	unpark(h);
	helper_close(h);
}

int helper_resume(struct helper *h, struct conn *conn, helper_done done, void *arg)
{
	int64_t t0 = cm_now_ns(); /* before the helper can run */
	ssize_t n = send(h->ctl, "start\n", 6, MSG_NOSIGNAL | MSG_DONTWAIT);
	if (n != 6) {
		helper_release(h);
		return -1;
	}
	unpark(h);
	h->resumed = 1;
	h->t0_ns = t0;
	h->op = H_START;
	h->conn = conn;
	h->cb = done;
	h->arg = arg;
	h->in.len = 0;
	cm_log(CM_DEBUG, "helper %d: start %s", (int)h->pid, h->id);
	return 0;
}

/* helper_ended: its control socket reached EOF (or an error). */
static void helper_ended(struct helper *h)
{
	if (h->parked) {
		helper_release(h);
		return;
	}
	/* A resumed helper that died before it answered the start: its
	 * callback gets a lost result with nothing read, and may retry. */
	helper_failed(h);
	helper_close(h);
}

/* ctl_read reads the control socket, keeping an fd that comes along. */
static ssize_t ctl_read(struct helper *h, char *p, size_t n)
{
	struct iovec iov = {p, n};
	union {
		char buf[CMSG_SPACE(sizeof(int) * 4)];
		struct cmsghdr align;
	} u;
	struct msghdr m = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = u.buf, .msg_controllen = sizeof(u.buf)};
	ssize_t r = recvmsg(h->ctl, &m, MSG_CMSG_CLOEXEC);
	for (struct cmsghdr *cm = r >= 0 ? CMSG_FIRSTHDR(&m) : NULL; cm; cm = CMSG_NXTHDR(&m, cm)) {
		if (cm->cmsg_level != SOL_SOCKET || cm->cmsg_type != SCM_RIGHTS)
			continue;
		size_t k = (cm->cmsg_len - CMSG_LEN(0)) / sizeof(int);
		for (size_t i = 0; i < k; i++) {
			int fd;
			memcpy(&fd, CMSG_DATA(cm) + i * sizeof(int), sizeof(int));
			if (h->fd < 0 && !h->parked)
				h->fd = fd;
			else
				close(fd);
		}
	}
	return r;
}

static void helper_read(struct helper *h)
{
	/* An event fetched in the same epoll batch as the one that closed
	 * the control socket (reap reads results first) finds it gone: the
	 * result was delivered already. */
	if (h->done || h->ctl < 0)
		return;
	for (;;) {
		if (cm_buf_reserve(&h->in, 4096) < 0) {
			cm_log(CM_ERROR, "helper %d: reply too large", (int)h->pid);
			kill(h->pid, SIGKILL);
			helper_failed(h);
			helper_close(h);
			return;
		}
		ssize_t n = ctl_read(h, h->in.p + h->in.len, h->in.cap - h->in.len);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0 && errno == EAGAIN)
			return;
		if (n <= 0) {
			if (!h->parked)
				cm_log(CM_DEBUG, "helper %d: control socket %s with %zu bytes of a partial result", (int)h->pid,
				       n == 0 ? "closed" : strerror(errno), h->in.len);
			return helper_ended(h);
		}
		if (h->parked) {
			h->in.len = 0; /* nothing is expected from a parked helper */
			continue;
		}
		char *nl = memchr(h->in.p + h->in.len, '\n', (size_t)n);
		h->in.len += (size_t)n;
		if (nl) {
			helper_result(h, h->in.p, (size_t)(nl - h->in.p), 0);
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

/* helper_unanswered tells a start callback that its resumed helper died
 * before it read anything: the start never happened there. */
int helper_unanswered(const struct helper *h) { return h->resumed && h->in.len == 0; }

const char *helper_id(const struct helper *h) { return h->id; }

void helper_on_event(struct watch *w, uint32_t ev)
{
	(void)ev;
	helper_read((struct helper *)w);
}

void helper_poll_all(void)
{
	for (struct helper *h = helpers; h; h = h->next)
		if (!h->done && h->ctl >= 0)
			helper_read(h);
}

void helper_conn_gone(struct conn *c)
{
	for (struct helper *h = helpers; h; h = h->next)
		if (h->conn == c)
			h->conn = NULL;
}

int helper_on_exit(pid_t pid, int st)
{
	for (struct helper *h = helpers; h; h = h->next)
		if (h->pid == pid && !h->reaped) {
			h->reaped = 1;
			if (st != 0)
				cm_log(CM_DEBUG, "helper %d: status %#x", (int)pid, st);
			helper_maybe_free(h);
			return 1;
		}
	return 0;
}

int64_t helper_next_deadline(void)
{
	int64_t t = 0;
	for (struct helper *h = helpers; h; h = h->next)
		if (h->parked)
			t = earliest(t, h->park_until);
	return t;
}

void helper_timers(int64_t now)
{
	for (struct helper *h = helpers, *next; h; h = next) {
		next = h->next;
		if (h->parked && now >= h->park_until)
			helper_release(h);
	}
}
