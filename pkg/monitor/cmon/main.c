/* main.c: the per-pod monitor, in C, before the Go runtime starts.
 *
 * The constructor below runs in every start of the binary and returns at
 * once unless _SHIM_CMONITOR=1 (set by monitor.Spawn). Then it becomes the
 * pod's monitor and never returns into Go: it daemonizes (fork, the parent
 * exits, setsid), becomes a child subreaper, listens on <dir>/monitor.sock,
 * reports readiness on the ready fd, and serves one epoll loop in one
 * thread: connections (conn.c), helpers (helper.c), the containers' output
 * (ctr.c), ExecSync output (exec.c), SIGCHLD and SIGTERM, and timers.
 * mon.h says which file holds what. */
#include "mon.h"

#include <errno.h>
#include <fcntl.h>
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
#define SHUTDOWN_WAIT_MS 10000

struct cm_config cm_cfg = {.dirfd = -1};
char cm_rbuf[READ_CHUNK];
int cm_listen_fd = -1;
struct watch cm_listen_watch = {.kind = K_LISTEN};
char *cm_args;
size_t cm_args_len;

static int epfd = -1, sigfd = -1, ready_fd = -1;
static struct watch sig_watch = {.kind = K_SIGNAL};
static struct watch *graveyard;
static int shutdown_active;
static int64_t shutdown_until;

/* ---- objects and fds ---- */

void bury(struct watch *w)
{
	if (w->dead)
		return;
	w->dead = 1;
	w->grave = graveyard;
	graveyard = w;
}

static void bury_all(void)
{
	while (graveyard) {
		struct watch *w = graveyard;
		graveyard = w->grave;
		switch (w->kind) {
		case K_CONN:
			conn_free(w);
			break;
		case K_CTR:
			ctr_free(w);
			break;
		case K_HELPER:
			helper_free(w);
			break;
		case K_EXEC:
			exec_free(w);
			break;
		case K_XEXEC:
			xexec_free(w);
			break;
		default:
			break;
		}
	}
}

void closefd(int *fd)
{
	if (*fd >= 0) {
		epoll_ctl(epfd, EPOLL_CTL_DEL, *fd, NULL);
		close(*fd);
		*fd = -1;
	}
}

int ep_add(int fd, struct watch *w, uint32_t ev)
{
	struct epoll_event e = {.events = ev, .data.ptr = w};
	return epoll_ctl(epfd, EPOLL_CTL_ADD, fd, &e);
}

void ep_del(int fd) { epoll_ctl(epfd, EPOLL_CTL_DEL, fd, NULL); }

void ep_mod(int fd, struct watch *w, uint32_t ev)
{
	struct epoll_event e = {.events = ev, .data.ptr = w};
	epoll_ctl(epfd, EPOLL_CTL_MOD, fd, &e);
}

int64_t earliest(int64_t a, int64_t b) { return a == 0 || (b != 0 && b < a) ? b : a; }

const char *errno_class(int e) { return cm_errno_class(e, CM_E_INTERNAL); }

void close_from(int from, int keep)
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

/* ---- shutdown ---- */

static void __attribute__((noreturn)) die_cleanly(int status)
{
	unlinkat(cm_cfg.dirfd, SOCKET_NAME, 0);
	_exit(status);
}

int shutting_down(void) { return shutdown_active; }

void shutdown_check(void)
{
	if (!shutdown_active)
		return;
	int left = ctr_shutdown_step() + exec_kill_all();
	if (left)
		return;
	cm_log(CM_INFO, "shut down: no container left");
	/* Gone before anyone hears it is: a caller may check at once. */
	unlinkat(cm_cfg.dirfd, SOCKET_NAME, 0);
	conn_shutdown_answer(1, 0);
	die_cleanly(0);
}

void op_shutdown(struct conn *conn, struct req *r)
{
	(void)r;
	conn_wait_shutdown(conn);
	if (!shutdown_active) {
		shutdown_active = 1;
		shutdown_until = cm_now_ms() + SHUTDOWN_WAIT_MS;
		ctr_shutdown_begin();
	}
	shutdown_check();
}

/* ---- exits and signals ---- */

static void reap(void)
{
	/* Results written before a helper died are read first, so that
	 * what it started is known before it can be reaped. */
	helper_poll_all();
	xexec_poll_all();
	for (;;) {
		int st;
		pid_t pid = waitpid(-1, &st, WNOHANG);
		if (pid < 0 && errno == EINTR)
			continue;
		if (pid <= 0)
			return;
		if (!helper_on_exit(pid, st) && !ctr_on_exit(pid, st) && !exec_on_exit(pid, st) && !xexec_on_exit(pid, st))
			cm_log(CM_DEBUG, "reaped orphan %d", (int)pid);
	}
}

static void on_signal(void)
{
	struct signalfd_siginfo si;
	int chld = 0;
	for (;;) {
		ssize_t n = read(sigfd, &si, sizeof(si));
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

/* ---- the loop ---- */

static int next_timeout(void)
{
	int64_t t = conn_next_deadline();
	t = earliest(t, ctr_next_deadline());
	t = earliest(t, exec_next_deadline());
	t = earliest(t, helper_next_deadline());
	t = earliest(t, xexec_next_deadline());
	if (shutdown_active)
		t = earliest(t, shutdown_until);
	if (t == 0)
		return -1;
	int64_t d = t - cm_now_ms();
	return d < 0 ? 0 : d > 60000 ? 60000 : (int)d + 1;
}

static void timers(void)
{
	int64_t now = cm_now_ms();
	conn_timers(now);
	ctr_timers(now);
	exec_timers(now);
	helper_timers(now);
	xexec_timers(now);
	if (shutdown_active && now >= shutdown_until) {
		shutdown_active = 0;
		conn_shutdown_answer(0, SHUTDOWN_WAIT_MS);
	}
}

static void dispatch(struct watch *w, uint32_t ev)
{
	switch (w->kind) {
	case K_LISTEN:
		conn_on_listen();
		break;
	case K_SIGNAL:
		on_signal();
		break;
	case K_CONN:
		conn_on_event(w, ev);
		break;
	case K_STREAM:
		ctr_on_stream(w, ev);
		break;
	case K_CAPTURE:
		exec_on_capture(w, ev);
		break;
	case K_HELPER:
		helper_on_event(w, ev);
		break;
	case K_XEXEC:
		xexec_on_event(w, ev);
		break;
	default:
		break;
	}
}

static void __attribute__((noreturn)) serve(void)
{
	struct epoll_event evs[64];
	for (;;) {
		int n = epoll_wait(epfd, evs, 64, next_timeout());
		if (n < 0 && errno != EINTR) {
			cm_log(CM_ERROR, "epoll_wait: %s", strerror(errno));
			die_cleanly(1);
		}
		for (int i = 0; i < n; i++) {
			struct watch *w = evs[i].data.ptr;
			if (!w->dead)
				dispatch(w, evs[i].events);
		}
		timers();
		bury_all();
	}
}

/* ---- start-up ---- */

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
		cm_buf_str(&b, "{\"" CM_WIRE_CLASS "\":");
		cm_buf_jstr(&b, cls, strlen(cls));
		cm_buf_str(&b, ",\"" CM_WIRE_MESSAGE "\":");
		cm_buf_jstr(&b, msg, (size_t)n);
		cm_buf_str(&b, "}");
		if (!b.failed)
			cm_write_full(ready_fd, b.p, b.len);
	}
	_exit(1);
}

/* set_flag stores one `--name value` of the command line. */
static void set_flag(const char *name, char *val)
{
	if (strcmp(name, "pod") == 0)
		cm_cfg.pod = val;
	else if (strcmp(name, "dir") == 0)
		cm_cfg.dir = val;
	else if (strcmp(name, "runtime-root") == 0)
		cm_cfg.root = val;
	else if (strcmp(name, "runtime-binary") == 0)
		cm_cfg.binary = *val ? val : NULL;
	else if (strcmp(name, "init-binary") == 0)
		cm_cfg.init = *val ? val : NULL;
	else if (strcmp(name, "log-level") == 0)
		cm_cfg.level = val;
	else
		ready_error(CM_E_INVALID_ARGUMENT, "monitor: unknown flag %.64s", name);
}

/* read_args reads /proc/self/cmdline: `<argv0> monitor --flag value ...`. */
static void read_args(void)
{
	static char buf[64 << 10];
	int fd = open("/proc/self/cmdline", O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		ready_error(CM_E_INTERNAL, "monitor: /proc/self/cmdline: %s", strerror(errno));
	size_t len = 0;
	for (;;) {
		ssize_t n = read(fd, buf + len, sizeof(buf) - 1 - len);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			break;
		len += (size_t)n;
		if (len == sizeof(buf) - 1)
			ready_error(CM_E_INVALID_ARGUMENT, "monitor: command line too long");
	}
	close(fd);
	buf[len] = '\0';
	char *args[64];
	int argc = 0;
	for (char *p = buf; p < buf + len && argc < 64; p += strlen(p) + 1)
		args[argc++] = p;
	cm_cfg.level = "info";
	for (int i = 2; i < argc; i++) {
		char *name = args[i], *val = NULL;
		if (strncmp(name, "--", 2) == 0)
			name += 2;
		else if (name[0] == '-')
			name += 1;
		else
			ready_error(CM_E_INVALID_ARGUMENT, "monitor: unexpected argument %.64s", args[i]);
		char *eq = strchr(name, '=');
		if (eq) {
			*eq = '\0';
			val = eq + 1;
		} else if (i + 1 < argc) {
			val = args[++i];
		} else {
			ready_error(CM_E_INVALID_ARGUMENT, "monitor: flag %.64s needs a value", name);
		}
		set_flag(name, val);
	}
	if (cm_cfg.pod == NULL || cm_cfg.dir == NULL || cm_cfg.root == NULL || !*cm_cfg.pod || !*cm_cfg.dir || !*cm_cfg.root)
		ready_error(CM_E_INVALID_ARGUMENT, "monitor: --pod, --dir and --runtime-root are required");
	cm_log_pod = cm_cfg.pod;
	const char *lv = cm_cfg.level;
	if (strcmp(lv, "debug") == 0 || strcmp(lv, "trace") == 0)
		cm_log_level = CM_DEBUG;
	else if (strncmp(lv, "warn", 4) == 0)
		cm_log_level = CM_WARN;
	else if (strcmp(lv, "error") == 0 || strcmp(lv, "fatal") == 0 || strcmp(lv, "panic") == 0)
		cm_log_level = CM_ERROR;
}

static void listen_socket(void)
{
	cm_cfg.dirfd = open(cm_cfg.dir, O_PATH | O_DIRECTORY | O_CLOEXEC);
	if (cm_cfg.dirfd < 0)
		ready_error(errno_class(errno), "monitor: pod directory %s: %s", cm_cfg.dir, strerror(errno));
	/* The socket path may not fit in sun_path: bind through the
	 * directory's fd instead. */
	struct sockaddr_un sa = {.sun_family = AF_UNIX};
	snprintf(sa.sun_path, sizeof(sa.sun_path), "/proc/self/fd/%d/" SOCKET_NAME, cm_cfg.dirfd);
	cm_listen_fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (cm_listen_fd < 0)
		ready_error(errno_class(errno), "monitor: socket: %s", strerror(errno));
	unlinkat(cm_cfg.dirfd, SOCKET_NAME, 0);
	mode_t old = umask(077);
	int r = bind(cm_listen_fd, (struct sockaddr *)&sa, sizeof(sa));
	umask(old);
	if (r < 0)
		ready_error(errno_class(errno), "monitor: bind %s/" SOCKET_NAME ": %s", cm_cfg.dir, strerror(errno));
	fchmodat(cm_cfg.dirfd, SOCKET_NAME, 0600, 0);
	if (listen(cm_listen_fd, 128) < 0)
		ready_error(errno_class(errno), "monitor: listen: %s", strerror(errno));
}

/* small_text_cb: for the read-only segments of the executable (the first
 * object dl_iterate_phdr reports), no huge mappings, and drop the ones made
 * so far. The binary is mostly code the process never runs (the monitor
 * runs no Go; the daemon's start-up code runs once), and its page cache
 * may hold 2 MB folios: one read of a string constant then maps (and
 * charges) 2 MB. Refaults map 4 KB pages (and their fault-around). Pages
 * shared with a writable segment are left alone; *data counts the
 * segments dropped. */
static int small_text_cb(struct dl_phdr_info *info, size_t size, void *data)
{
	(void)size;
	int *n = data;
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
		if (madvise((void *)start, end - start, MADV_DONTNEED) == 0)
			(*n)++;
	}
	return 1;
}

/* cm_drop_text unmaps the executable's code and read-only data from this
 * process (clean file pages, mapped again as they are used): the monitor
 * when it starts, the daemon once it has started (cmon.DropText). It
 * returns how many segments it dropped. */
int cm_drop_text(void)
{
	int n = 0;
	dl_iterate_phdr(small_text_cb, &n);
	return n;
}

static void __attribute__((noreturn)) monitor_main(void)
{
	cm_drop_text();
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
		ready_error(CM_E_INTERNAL, "monitor: sigprocmask: %s", strerror(errno));
	if (prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) < 0)
		ready_error(CM_E_INTERNAL, "monitor: becoming a subreaper: %s", strerror(errno));
	sigfd = signalfd(-1, &set, SFD_NONBLOCK | SFD_CLOEXEC);
	epfd = epoll_create1(EPOLL_CLOEXEC);
	if (sigfd < 0 || epfd < 0)
		ready_error(CM_E_INTERNAL, "monitor: signalfd/epoll: %s", strerror(errno));
	listen_socket();
	if (ep_add(cm_listen_fd, &cm_listen_watch, EPOLLIN) < 0 || ep_add(sigfd, &sig_watch, EPOLLIN) < 0)
		ready_error(CM_E_INTERNAL, "monitor: epoll: %s", strerror(errno));
	if (ready_fd >= 0) {
		cm_write_full(ready_fd, "ok\n", 3);
		close(ready_fd);
		ready_fd = -1;
	}
	cm_log(CM_INFO, "monitor %d serving %s", (int)getpid(), cm_cfg.dir);
	serve();
}

/* Runs before the Go runtime: the process is single-threaded, so fork is
 * safe, and it never returns when it is a monitor. */
__attribute__((constructor)) static void shim_cmonitor(int argc, char **argv)
{
	const char *v = getenv(ENV_SELECT);
	if (v == NULL || strcmp(v, "1") != 0)
		return;
	/* glibc passes the constructors main's arguments: their memory is
	 * what /proc/<pid>/cmdline shows (infra.c rewrites it). */
	if (argc > 0 && argv && argv[0]) {
		cm_args = argv[0];
		cm_args_len = (size_t)(argv[argc - 1] + strlen(argv[argc - 1]) + 1 - argv[0]);
	}
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
		ready_error(CM_E_INTERNAL, "monitor: fork: %s", strerror(errno));
	if (pid > 0)
		_exit(0);
	setsid();
	if (chdir("/") < 0)
		_exit(1);
	monitor_main();
}
