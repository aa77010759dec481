/* infra.c: the infra process of a pod that shares one PID namespace.
 *
 * It is PID 1 of the pod's PID namespace and does what the pause image
 * does: it reaps the orphans of the namespace and exits on SIGTERM or
 * SIGINT. The monitor starts it itself, with no image, helper or Go
 * start: it clones it into new PID and mount namespaces, and the child
 * follows the plan the daemon wrote (<bundle>/infra.plan, see
 * pkg/monitor/infra.go): it joins its cgroup and the pod's namespaces,
 * mounts an empty read-only tmpfs as its root, drops every capability,
 * changes to its user and installs a seccomp filter that allows only what
 * its loop calls. It reports its set-up on a pipe: "ok", or the error's
 * class and message. The monitor waits for that (the infra is the first
 * thing a pod's monitor starts, and its set-up makes only local system
 * calls), then keeps it as one of its containers (ctr.c). */
#include "mon.h"

#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <linux/audit.h>
#include <linux/capability.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#define INFRA_SETUP_MS 10000
#define MAX_PLAN (64 << 10)
#define MAX_LIST 32
#define MAX_GROUPS 1024

struct plan {
	char *root;
	char *join[MAX_LIST];
	int njoin;
	char *cgroup[MAX_LIST];
	int ncgroup;
	int newflags; /* beyond CLONE_NEWPID | CLONE_NEWNS */
	int have_uid, have_gid, have_oom;
	uid_t uid;
	gid_t gid;
	gid_t groups[MAX_GROUPS];
	int ngroups;
	int oom;
};

static const struct {
	const char *name;
	int flag;
} ns_flags[] = {
	{"pid", CLONE_NEWPID},	   {"mount", CLONE_NEWNS}, {"cgroup", CLONE_NEWCGROUP},
	{"network", CLONE_NEWNET}, {"uts", CLONE_NEWUTS},  {"ipc", CLONE_NEWIPC},
};

static int parse_uint(const char *s, unsigned long long max, unsigned long long *out)
{
	if (*s < '0' || *s > '9')
		return -1;
	char *end;
	errno = 0;
	unsigned long long v = strtoull(s, &end, 10);
	if (errno || (*end != '\0' && *end != ' ') || v > max)
		return -1;
	*out = v;
	return (int)(end - s);
}

/* parse_whole: s is one number no larger than max. */
static int parse_whole(const char *s, unsigned long long max, unsigned long long *out)
{
	int k = parse_uint(s, max, out);
	return k > 0 && s[k] == '\0' ? 0 : -1;
}

/* plan_parse reads the plan in buf (NUL-terminated, changed in place):
 * 0, or -1 with what is wrong in err. */
static int plan_parse(char *buf, struct plan *p, char *err, size_t errlen)
{
	memset(p, 0, sizeof(*p));
	int newpid = 0, newmnt = 0;
	char *save = NULL;
	char *line = strtok_r(buf, "\n", &save);
	if (line == NULL || strcmp(line, CM_IP_MAGIC) != 0) {
		snprintf(err, errlen, "not an infra plan (want first line %s)", CM_IP_MAGIC);
		return -1;
	}
	while ((line = strtok_r(NULL, "\n", &save)) != NULL) {
		char *v = strchr(line, ' ');
		if (v == NULL)
			v = line + strlen(line);
		else
			*v++ = '\0';
		unsigned long long n;
		if (strcmp(line, CM_IP_ROOT) == 0 && *v == '/') {
			p->root = v;
		} else if (strcmp(line, CM_IP_JOIN) == 0 && *v == '/' && p->njoin < MAX_LIST) {
			p->join[p->njoin++] = v;
		} else if (strcmp(line, CM_IP_CGROUP) == 0 && *v == '/' && p->ncgroup < MAX_LIST) {
			p->cgroup[p->ncgroup++] = v;
		} else if (strcmp(line, CM_IP_NEW) == 0) {
			size_t i;
			for (i = 0; i < sizeof(ns_flags) / sizeof(ns_flags[0]); i++)
				if (strcmp(v, ns_flags[i].name) == 0)
					break;
			if (i == sizeof(ns_flags) / sizeof(ns_flags[0]))
				goto bad;
			if (ns_flags[i].flag == CLONE_NEWPID)
				newpid = 1;
			else if (ns_flags[i].flag == CLONE_NEWNS)
				newmnt = 1;
			else
				p->newflags |= ns_flags[i].flag;
		} else if (strcmp(line, CM_IP_UID) == 0 && parse_whole(v, 0xfffffffeULL, &n) == 0) {
			p->uid = (uid_t)n;
			p->have_uid = 1;
		} else if (strcmp(line, CM_IP_GID) == 0 && parse_whole(v, 0xfffffffeULL, &n) == 0) {
			p->gid = (gid_t)n;
			p->have_gid = 1;
		} else if (strcmp(line, CM_IP_GROUPS) == 0) {
			for (char *s = v; *s;) {
				int k = parse_uint(s, 0xfffffffeULL, &n);
				if (k <= 0 || p->ngroups == MAX_GROUPS)
					goto bad;
				p->groups[p->ngroups++] = (gid_t)n;
				s += k;
				if (*s == ' ')
					s++;
			}
		} else if (strcmp(line, CM_IP_OOM) == 0) {
			int neg = *v == '-';
			if (parse_whole(v + neg, 1000, &n) < 0)
				goto bad;
			p->oom = neg ? -(int)n : (int)n;
			p->have_oom = 1;
		} else {
			goto bad;
		}
		continue;
	bad:
		snprintf(err, errlen, "bad infra plan line %.64s %.200s", line, v);
		return -1;
	}
	if (p->root == NULL || !p->have_uid || !p->have_gid || !newpid || !newmnt) {
		snprintf(err, errlen, "the infra plan lacks its root, uid, gid, or new pid and mount namespaces");
		return -1;
	}
	return 0;
}

/* ---- the infra process ---- */

/* child_exit ends the infra process with the exit_group system call
 * itself: libc's _exit may be wrapped (a sanitizer's leak check at exit
 * would fail under the process's seccomp filter). */
static void __attribute__((noreturn)) child_exit(int code)
{
	for (;;)
		syscall(SYS_exit_group, code);
}

static void __attribute__((noreturn, format(printf, 3, 4))) child_fail(int fd, int e, const char *fmt, ...)
{
	char msg[1024];
	int n = snprintf(msg, sizeof(msg), "%s\n", errno_class(e));
	va_list ap;
	va_start(ap, fmt);
	n += vsnprintf(msg + n, sizeof(msg) - (size_t)n, fmt, ap);
	va_end(ap);
	if (n > (int)sizeof(msg) - 1)
		n = (int)sizeof(msg) - 1;
	n += snprintf(msg + n, sizeof(msg) - (size_t)n, ": %s", strerror(e));
	if (n > (int)sizeof(msg) - 1)
		n = (int)sizeof(msg) - 1;
	cm_write_full(fd, msg, (size_t)n);
	child_exit(127);
}

static int write_file(const char *path, const char *s)
{
	int fd = open(path, O_WRONLY | O_CLOEXEC);
	if (fd < 0)
		return -1;
	int r = cm_write_full(fd, s, strlen(s));
	int e = errno;
	close(fd);
	errno = e;
	return r;
}

#if defined(__x86_64__)
#define INFRA_AUDIT_ARCH AUDIT_ARCH_X86_64
#elif defined(__aarch64__)
#define INFRA_AUDIT_ARCH AUDIT_ARCH_AARCH64
#endif

#define ALLOW(nr) BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, (nr), 0, 1), BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW)

/* seccomp_loop allows what the loop and the report call, and nothing
 * else (EPERM; another architecture's calls: the process is killed). */
static int seccomp_loop(void)
{
#ifdef INFRA_AUDIT_ARCH
	struct sock_filter f[] = {
		BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, arch)),
		BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, INFRA_AUDIT_ARCH, 1, 0),
		BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_KILL_PROCESS),
		BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, nr)),
		ALLOW(SYS_rt_sigtimedwait),
		ALLOW(SYS_wait4),
		ALLOW(SYS_waitid),
		ALLOW(SYS_write),
		ALLOW(SYS_close),
		ALLOW(SYS_exit),
		ALLOW(SYS_exit_group),
		ALLOW(SYS_rt_sigreturn),
		ALLOW(SYS_restart_syscall),
		BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | (EPERM & SECCOMP_RET_DATA)),
	};
	struct sock_fprog prog = {.len = sizeof(f) / sizeof(f[0]), .filter = f};
	return prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &prog, 0, 0);
#else
	errno = ENOSYS;
	return -1;
#endif
}

/* loop_signals: the signals the loop waits for, blocked all along. */
static void loop_signals(sigset_t *set)
{
	sigemptyset(set);
	sigaddset(set, SIGCHLD);
	sigaddset(set, SIGTERM);
	sigaddset(set, SIGINT);
}

static void __attribute__((noreturn)) infra_loop(void)
{
	sigset_t set;
	loop_signals(&set);
	for (;;) {
		int sig = sigwaitinfo(&set, NULL);
		if (sig == SIGTERM || sig == SIGINT)
			child_exit(0);
		while (waitpid(-1, NULL, WNOHANG) > 0)
			;
	}
}

/* look_like_pause names the process as the pause image's (what tools and
 * people expect PID 1 of a shared PID namespace to be): "pause" in
 * /proc/<pid>/comm, "/pause" in its cmdline. The monitor's arguments (its
 * pod's directory) are overwritten: they are not the pod's to read. The
 * last byte stays non-NUL, so the kernel reads the command line up to the
 * first NUL (the setproctitle convention). */
static void look_like_pause(void)
{
	prctl(PR_SET_NAME, "pause", 0, 0, 0);
	static const char name[] = "/pause";
	if (cm_args == NULL || cm_args_len < sizeof(name) + 1)
		return;
	memset(cm_args, 0, cm_args_len);
	memcpy(cm_args, name, sizeof(name));
	cm_args[cm_args_len - 1] = ' ';
}

/* infra_child sets the process up as the plan says and runs the loop;
 * fd is the write end of the report pipe. */
static void __attribute__((noreturn)) infra_child(const struct plan *p, int fd)
{
	close_from(3, fd);
	look_like_pause();
	signal(SIGPIPE, SIG_DFL);
	signal(SIGHUP, SIG_DFL);
	signal(SIGINT, SIG_DFL);
	sigset_t set;
	loop_signals(&set);
	sigprocmask(SIG_SETMASK, &set, NULL);

	for (int i = 0; i < p->ncgroup; i++)
		if (write_file(p->cgroup[i], "0") < 0)
			child_fail(fd, errno, "joining cgroup %s", p->cgroup[i]);
	if (p->have_oom) {
		char v[16];
		snprintf(v, sizeof(v), "%d", p->oom);
		if (write_file("/proc/self/oom_score_adj", v) < 0)
			child_fail(fd, errno, "oom_score_adj %d", p->oom);
	}
	for (int i = 0; i < p->njoin; i++) {
		int nfd = open(p->join[i], O_RDONLY | O_CLOEXEC);
		if (nfd < 0 || setns(nfd, 0) < 0)
			child_fail(fd, errno, "joining namespace %s", p->join[i]);
		close(nfd);
	}
	if (p->newflags && unshare(p->newflags) < 0)
		child_fail(fd, errno, "new namespaces %#x", (unsigned)p->newflags);

	/* Its root: an empty read-only tmpfs, so that /proc/1/root shows the
	 * pod's containers nothing. */
	if (mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) < 0)
		child_fail(fd, errno, "making its mounts private");
	if (mount("tmpfs", p->root, "tmpfs", MS_NOSUID | MS_NODEV | MS_NOEXEC, "size=4k,nr_inodes=2,mode=0555") < 0)
		child_fail(fd, errno, "mounting its root on %s", p->root);
	if (chdir(p->root) < 0 || syscall(SYS_pivot_root, ".", ".") < 0 || umount2(".", MNT_DETACH) < 0 || chdir("/") < 0)
		child_fail(fd, errno, "pivot_root to %s", p->root);
	if (mount(NULL, "/", NULL, MS_REMOUNT | MS_BIND | MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC, NULL) < 0)
		child_fail(fd, errno, "making its root read-only");

	/* Privileges: the bounding set first (that needs CAP_SETPCAP), then
	 * the ids, then whatever capability is left. */
	for (int c = 0; c <= 63; c++)
		if (prctl(PR_CAPBSET_DROP, c, 0, 0, 0) < 0) {
			if (errno == EINVAL)
				break; /* past the last capability */
			child_fail(fd, errno, "dropping capability %d", c);
		}
	if (setgroups((size_t)p->ngroups, p->groups) < 0)
		child_fail(fd, errno, "setgroups");
	if (setresgid(p->gid, p->gid, p->gid) < 0)
		child_fail(fd, errno, "setresgid %u", (unsigned)p->gid);
	if (setresuid(p->uid, p->uid, p->uid) < 0)
		child_fail(fd, errno, "setresuid %u", (unsigned)p->uid);
	if (prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0) < 0 && errno != EINVAL)
		child_fail(fd, errno, "clearing the ambient capabilities");
	struct __user_cap_header_struct hdr = {.version = _LINUX_CAPABILITY_VERSION_3};
	struct __user_cap_data_struct data[2];
	memset(data, 0, sizeof(data));
	if (syscall(SYS_capset, &hdr, data) < 0)
		child_fail(fd, errno, "clearing the capabilities");
	if (prctl(PR_SET_DUMPABLE, 0, 0, 0, 0) < 0 || prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) < 0)
		child_fail(fd, errno, "no_new_privs");
	if (seccomp_loop() < 0)
		child_fail(fd, errno, "installing its seccomp filter");
	if (cm_write_full(fd, "ok", 2) < 0)
		child_exit(127);
	close(fd);
	infra_loop();
}

/* ---- the monitor's side ---- */

static char *read_plan(const char *bundle, char *err, size_t errlen)
{
	char path[MAX_PATH];
	if (snprintf(path, sizeof(path), "%s/%s", bundle, CM_IP_FILE) >= (int)sizeof(path)) {
		errno = ENAMETOOLONG;
		snprintf(err, errlen, "the bundle's path is too long");
		return NULL;
	}
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0) {
		snprintf(err, errlen, "opening its %s: %s", CM_IP_FILE, strerror(errno));
		return NULL;
	}
	char *buf = malloc(MAX_PLAN + 1);
	size_t len = 0;
	while (buf && len < MAX_PLAN) {
		ssize_t n = read(fd, buf + len, MAX_PLAN - len);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			break;
		len += (size_t)n;
	}
	close(fd);
	if (buf == NULL || len == MAX_PLAN) {
		errno = buf ? EFBIG : ENOMEM;
		snprintf(err, errlen, "its %s is too large, or out of memory", CM_IP_FILE);
		free(buf);
		return NULL;
	}
	buf[len] = '\0';
	return buf;
}

/* wait_report reads the child's report into out (NUL-terminated): the
 * bytes it wrote before it closed the pipe, or what came within the
 * set-up time. */
static void wait_report(int rfd, char *out, size_t cap)
{
	size_t len = 0;
	int64_t until = cm_now_ms() + INFRA_SETUP_MS;
	while (len + 1 < cap) {
		int64_t left = until - cm_now_ms();
		if (left <= 0)
			break;
		struct pollfd pf = {.fd = rfd, .events = POLLIN};
		int r = poll(&pf, 1, (int)left);
		if (r < 0 && errno == EINTR)
			continue;
		if (r <= 0)
			break;
		ssize_t n = read(rfd, out + len, cap - 1 - len);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			break;
		len += (size_t)n;
	}
	out[len] = '\0';
}

void op_infra(struct conn *conn, struct req *r)
{
	if (r->id == NULL || *r->id == '\0' || r->bundle == NULL || *r->bundle != '/')
		return reply_err(conn, CM_E_INVALID_ARGUMENT, "infra needs an id and an absolute bundle");
	if (ctr_known(r->id))
		return reply_err(conn, CM_E_ALREADY_EXISTS, "container %s exists in the monitor", r->id);
	char err[512];
	char *buf = read_plan(r->bundle, err, sizeof(err));
	if (buf == NULL)
		return reply_err(conn, errno_class(errno), "infra %s: %s", r->id, err);
	struct plan *p = malloc(sizeof(*p));
	if (p == NULL) {
		free(buf);
		return reply_err(conn, CM_E_RESOURCE_EXHAUSTED, "out of memory");
	}
	if (plan_parse(buf, p, err, sizeof(err)) < 0) {
		free(p);
		free(buf);
		return reply_err(conn, CM_E_INVALID_ARGUMENT, "infra %s: %s", r->id, err);
	}
	int pfd[2];
	if (pipe2(pfd, O_CLOEXEC) < 0) {
		free(p);
		free(buf);
		return reply_err(conn, errno_class(errno), "pipe: %s", strerror(errno));
	}
	int64_t t0 = cm_now_ns();
	pid_t pid = (pid_t)syscall(SYS_clone, CLONE_NEWPID | CLONE_NEWNS | SIGCHLD, NULL, NULL, NULL, NULL);
	if (pid == 0) {
		close(pfd[0]);
		infra_child(p, pfd[1]);
	}
	int e = errno;
	close(pfd[1]);
	free(p);
	free(buf);
	if (pid < 0) {
		close(pfd[0]);
		return reply_err(conn, errno_class(e), "infra %s: clone: %s", r->id, strerror(e));
	}
	char rep[1100];
	wait_report(pfd[0], rep, sizeof(rep));
	close(pfd[0]);
	if (strcmp(rep, "ok") != 0) {
		/* It exits by itself after a report; otherwise it is stuck
		 * in its set-up. The loop reaps it. */
		kill(pid, SIGKILL);
		char *msg = strchr(rep, '\n');
		if (msg == NULL)
			return reply_err(conn, CM_E_INTERNAL, "infra %s: the process died or hung in its set-up", r->id);
		*msg++ = '\0';
		return reply_err(conn, rep, "infra %s: %s", r->id, msg);
	}
	if (ctr_add_running(r->id, r->bundle, pid) < 0) {
		kill(pid, SIGKILL);
		return reply_err(conn, CM_E_RESOURCE_EXHAUSTED, "out of memory");
	}
	cm_log(CM_INFO, "infra %s started: pid %d in %lld us", r->id, (int)pid, (long long)((cm_now_ns() - t0) / 1000));
	struct cm_buf b = {0};
	cm_buf_printf(&b, "{\"" CM_RESP_PID "\":%d}", (int)pid);
	reply(conn, &b);
}
