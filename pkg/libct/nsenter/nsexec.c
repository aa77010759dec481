// nsexec.c: the pre-Go-runtime stage of a shim container init or exec.
//
// It runs as an ELF constructor in every invocation of the shim binary and
// does nothing unless _SHIM_INITPIPE names an inherited fd. When it does, the
// process is "stage 0", freshly exec'd (single-threaded, no Go runtime yet):
//
//  1. read a bootstrap message from the init pipe (clone flags, namespace
//     paths to join, whether the parent writes id maps, time offsets);
//  2. setns() into every namespace given by path (user first), which for the
//     mount and user namespaces is only possible while single-threaded;
//  3. unshare(CLONE_NEWUSER) and ask the parent to write the id maps;
//  4. unshare() the remaining new namespaces;
//  5. clone(CLONE_PARENT) the real init, so it is a child of our parent
//     (and pid 1 of a new pid namespace), report its pid, and _exit.
//
// In hold mode (a T_HOLD record) step 5 is replaced: stage 0 reports
// SYNC_HELD and blocks until the parent closes the pipe, so the parent can
// pin the new namespaces through /proc/<pid>/ns (a user namespace with its
// id maps, and namespaces owned by it). Nothing of a container runs in it.
//
// The clone child returns from the constructor into the Go runtime, which
// runs `shim init` and reads the rest of its configuration from the pipe;
// with a T_CINIT record it runs the daemon's plan in C instead (cinit.c)
// and never starts the Go runtime.
//
// Wire format (little endian, host order): see bootstrap.go.

#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/types.h>
#include <unistd.h>

#include "nsenter.h"

#ifndef CLONE_NEWTIME
#define CLONE_NEWTIME 0x00000080
#endif
#ifndef CLONE_NEWCGROUP
#define CLONE_NEWCGROUP 0x02000000
#endif

#define SHIM_MAGIC 0x4d494853u /* "SHIM" */
#define MAX_BOOTSTRAP (1u << 20)
#define MAX_NS 16

enum {
	T_CLONEFLAGS = 1,
	T_NSPATH = 2,
	T_USERMAP = 3,
	T_TIMEOFFSETS = 4,
	T_HOLD = 5,
	T_CINIT = 6,
};

/* sync bytes, stage0 -> parent */
#define SYNC_USERMAP 'U'
#define SYNC_PID 'P'
#define SYNC_ERR 'E'
#define SYNC_HELD 'H'
/* parent -> stage0 */
#define SYNC_USERMAP_ACK 'u'

static int pipefd = -1;


/* 1 in the cloned init once stage 0 is done; read by Go (nsenter.Stage). */
int shim_nsexec_stage = 0;

int shim_write_full(int fd, const void *buf, size_t len)
{
	const char *p = buf;
	while (len > 0) {
		ssize_t n = write(fd, p, len);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			return -1;
		}
		p += n;
		len -= (size_t)n;
	}
	return 0;
}

int shim_read_full(int fd, void *buf, size_t len)
{
	char *p = buf;
	while (len > 0) {
		ssize_t n = read(fd, p, len);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			return -1;
		}
		if (n == 0) {
			errno = EPIPE;
			return -1;
		}
		p += n;
		len -= (size_t)n;
	}
	return 0;
}

/* bail reports a typed error to the parent and exits. The class is always
 * "internal" except for a few errnos the Go side maps. */
static void bail(const char *fmt, ...) __attribute__((noreturn, format(printf, 1, 2)));
static void bail(const char *fmt, ...)
{
	char msg[1024];
	int saved = errno;
	va_list ap;
	va_start(ap, fmt);
	int n = vsnprintf(msg, sizeof(msg) - 64, fmt, ap);
	va_end(ap);
	if (n < 0)
		n = 0;
	if ((size_t)n > sizeof(msg) - 64)
		n = sizeof(msg) - 64;
	if (saved)
		n += snprintf(msg + n, sizeof(msg) - (size_t)n, ": %s", strerror(saved));
	if (pipefd >= 0) {
		char hdr[1 + 4 + 4];
		uint32_t e = (uint32_t)saved, l = (uint32_t)n;
		hdr[0] = SYNC_ERR;
		memcpy(hdr + 1, &e, 4);
		memcpy(hdr + 5, &l, 4);
		if (shim_write_full(pipefd, hdr, sizeof(hdr)) == 0)
			shim_write_full(pipefd, msg, (size_t)n);
	} else {
		fprintf(stderr, "shim nsexec: %.*s\n", n, msg);
	}
	_exit(1);
}

struct nsjoin {
	char *path;
	int type; /* CLONE_NEW* */
	int fd;
};

static int ns_type(const char *name, size_t len)
{
	static const struct {
		const char *n;
		int t;
	} tab[] = {
		{"user", CLONE_NEWUSER}, {"mnt", CLONE_NEWNS},	   {"mount", CLONE_NEWNS},
		{"pid", CLONE_NEWPID},	 {"net", CLONE_NEWNET},	   {"network", CLONE_NEWNET},
		{"ipc", CLONE_NEWIPC},	 {"uts", CLONE_NEWUTS},	   {"cgroup", CLONE_NEWCGROUP},
		{"time", CLONE_NEWTIME},
	};
	for (size_t i = 0; i < sizeof(tab) / sizeof(tab[0]); i++)
		if (strlen(tab[i].n) == len && memcmp(tab[i].n, name, len) == 0)
			return tab[i].t;
	return 0;
}

static void write_file(const char *path, const char *data, size_t len)
{
	int fd = open(path, O_WRONLY | O_CLOEXEC);
	if (fd < 0)
		bail("open %s", path);
	if (shim_write_full(fd, data, len) < 0)
		bail("write %s", path);
	close(fd);
}

__attribute__((constructor)) static void shim_nsexec(void)
{
	const char *env = getenv("_SHIM_INITPIPE");
	if (env == NULL || *env == '\0')
		return;
	char *end = NULL;
	long fdl = strtol(env, &end, 10);
	if (*end != '\0' || fdl < 3 || fdl > 1 << 20)
		return;
	pipefd = (int)fdl;

	/* Never leave the parent's signal dispositions or a dumpable state to
	 * the container before the Go init takes over. */
	prctl(PR_SET_DUMPABLE, 0, 0, 0, 0);

	uint32_t hdr[2];
	if (shim_read_full(pipefd, hdr, sizeof(hdr)) < 0)
		bail("read bootstrap header");
	if (hdr[0] != SHIM_MAGIC)
		bail("bad bootstrap magic %#x", hdr[0]);
	if (hdr[1] > MAX_BOOTSTRAP)
		bail("bootstrap too large (%u bytes)", hdr[1]);
	char *buf = malloc(hdr[1] + 1);
	if (buf == NULL)
		bail("malloc");
	if (shim_read_full(pipefd, buf, hdr[1]) < 0)
		bail("read bootstrap");

	uint32_t cloneflags = 0;
	int usermap = 0;
	int hold = 0;
	int cinit = 0;
	char *timeoffsets = NULL;
	size_t timeoffsets_len = 0;
	struct nsjoin joins[MAX_NS];
	int njoins = 0;

	for (size_t off = 0; off + 8 <= hdr[1];) {
		uint16_t type;
		uint32_t len;
		memcpy(&type, buf + off, 2);
		memcpy(&len, buf + off + 4, 4);
		off += 8;
		if (len > hdr[1] - off)
			bail("bootstrap record %u overflows", type);
		char *data = buf + off;
		off += len;
		switch (type) {
		case T_CLONEFLAGS:
			if (len != 4)
				bail("bad cloneflags record");
			memcpy(&cloneflags, data, 4);
			break;
		case T_NSPATH: {
			char *colon = memchr(data, ':', len);
			if (colon == NULL)
				bail("bad namespace record");
			if (njoins >= MAX_NS)
				bail("too many namespaces to join");
			int t = ns_type(data, (size_t)(colon - data));
			if (t == 0)
				bail("unknown namespace type %.*s", (int)(colon - data), data);
			size_t plen = len - (size_t)(colon - data) - 1;
			char *p = malloc(plen + 1);
			if (p == NULL)
				bail("malloc");
			memcpy(p, colon + 1, plen);
			p[plen] = '\0';
			joins[njoins].path = p;
			joins[njoins].type = t;
			joins[njoins].fd = -1;
			njoins++;
			break;
		}
		case T_USERMAP:
			usermap = 1;
			break;
		case T_TIMEOFFSETS:
			timeoffsets = data;
			timeoffsets_len = len;
			break;
		case T_HOLD:
			hold = 1;
			break;
		case T_CINIT:
			cinit = 1;
			break;
		default:
			bail("unknown bootstrap record %u", type);
		}
	}

	/* Open every namespace first: once we are in another mount
	 * namespace the paths may no longer resolve. */
	for (int i = 0; i < njoins; i++) {
		joins[i].fd = open(joins[i].path, O_RDONLY | O_CLOEXEC);
		if (joins[i].fd < 0)
			bail("open namespace %s", joins[i].path);
	}
	/* The user namespace goes first: it grants the rights to join the
	 * others. Then the rest, in the order given (the parent puts mnt
	 * last so the other paths were already opened). */
	for (int pass = 0; pass < 2; pass++) {
		for (int i = 0; i < njoins; i++) {
			int isuser = joins[i].type == CLONE_NEWUSER;
			if ((pass == 0) != isuser)
				continue;
			if (setns(joins[i].fd, joins[i].type) < 0)
				bail("setns %s", joins[i].path);
			close(joins[i].fd);
			if (isuser) {
				/* become root of the joined namespace */
				if (setresgid(0, 0, 0) < 0 || setresuid(0, 0, 0) < 0)
					bail("setresuid in joined user namespace");
			}
		}
	}

	if (cloneflags & CLONE_NEWUSER) {
		if (unshare(CLONE_NEWUSER) < 0)
			bail("unshare user namespace");
		if (usermap) {
			char c = SYNC_USERMAP;
			/* the parent must be able to open /proc/<pid>/uid_map */
			prctl(PR_SET_DUMPABLE, 1, 0, 0, 0);
			if (shim_write_full(pipefd, &c, 1) < 0)
				bail("sync usermap");
			if (shim_read_full(pipefd, &c, 1) < 0)
				bail("sync usermap ack");
			prctl(PR_SET_DUMPABLE, 0, 0, 0, 0);
			if (c != SYNC_USERMAP_ACK)
				bail("bad usermap ack %#x", c);
		}
		/* A holder keeps the full capabilities a new user namespace
		 * grants its creator, whatever ids it maps. */
		if (!hold && setresgid(0, 0, 0) < 0)
			bail("setresgid(0) in new user namespace (is container gid 0 mapped?)");
		if (!hold && setresuid(0, 0, 0) < 0)
			bail("setresuid(0) in new user namespace (is container uid 0 mapped?)");
	}
	uint32_t rest = cloneflags & ~(uint32_t)CLONE_NEWUSER;
	if (rest != 0 && unshare((int)rest) < 0)
		bail("unshare namespaces %#x", rest);
	if (timeoffsets != NULL && (cloneflags & CLONE_NEWTIME))
		write_file("/proc/self/timens_offsets", timeoffsets, timeoffsets_len);

	if (hold) {
		char c = SYNC_HELD;
		if (shim_write_full(pipefd, &c, 1) < 0)
			_exit(1);
		for (;;) {
			ssize_t n = read(pipefd, &c, 1);
			if (n > 0 || (n < 0 && errno == EINTR))
				continue;
			_exit(0);
		}
	}

	pid_t child = (pid_t)syscall(SYS_clone, CLONE_PARENT | SIGCHLD, NULL, NULL, NULL, NULL);
	if (child < 0)
		bail("clone init");
	if (child == 0) {
		/* The init: continue into the Go runtime. */
		prctl(PR_SET_DUMPABLE, 0, 0, 0, 0);
		shim_nsexec_stage = 1;
		if (cinit) {
			/* The whole init in C, from the daemon's plan: no Go
			 * runtime starts (cinit.c). */
			const char *f = getenv("_SHIM_FIFOFD");
			shim_cinit(pipefd, f && *f ? atoi(f) : -1);
		}
		return;
	}
	char msg[5];
	int32_t p = (int32_t)child;
	msg[0] = SYNC_PID;
	memcpy(msg + 1, &p, 4);
	if (shim_write_full(pipefd, msg, sizeof(msg)) < 0) {
		kill(child, SIGKILL);
		_exit(1);
	}
	_exit(0);
}
