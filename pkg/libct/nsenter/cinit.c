// cinit.c: a container's init in C, from a plan the daemon resolved.
//
// When the bootstrap carries a T_CINIT record (direct creates of the
// containers the plan covers: pkg/libct/cplan_linux.go), the init cloned
// by nsexec does not start the Go runtime. It reads one frame from the
// init pipe (little-endian length, then the plan), runs the plan's
// operations in order (the mounts, devices, pivot_root, namespace
// settings, masked and read-only paths, rlimits, seccomp, credentials and
// capabilities, exactly as the Go init does them: standardInit), reports
// "ready" as the Go init does, waits on the exec fifo and execs the
// container process. Every failure is an "error" frame with a class and
// a message (errdefs.Wire), then exit 1.
//
// The plan: the magic "SHIMCPLAN1", then records, each a u16 op, two
// bytes of padding, a u32 length and the op's data; numbers little
// endian, a string a u32 length and its bytes (no NUL inside). The op
// numbers and the errno classes are generated (cinit_gen.h).
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <linux/capability.h>
#include <linux/filter.h>
#include <linux/keyctl.h>
#include <linux/mount.h>
#include <linux/openat2.h>
#include <linux/seccomp.h>
#include <sched.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <sys/syscall.h>
#include <sys/sysmacros.h>
#include <sys/types.h>
#include <unistd.h>

#include "cinit_gen.h"
#include "nsenter.h"

#define MAX_PLAN (4u << 20)
#define MAX_LATE 16

static int cpipe = -1;

/* json_str appends s as a JSON string to out (of cap bytes, at *n). */
static void json_str(char *out, size_t cap, size_t *n, const char *s)
{
	static const char hex[] = "0123456789abcdef";
	if (*n + 1 < cap)
		out[(*n)++] = '"';
	for (; *s && *n + 8 < cap; s++) {
		unsigned char c = (unsigned char)*s;
		if (c == '"' || c == '\\') {
			out[(*n)++] = '\\';
			out[(*n)++] = (char)c;
		} else if (c < 0x20) {
			out[(*n)++] = '\\';
			out[(*n)++] = 'u';
			out[(*n)++] = '0';
			out[(*n)++] = '0';
			out[(*n)++] = hex[c >> 4];
			out[(*n)++] = hex[c & 15];
		} else {
			out[(*n)++] = (char)c;
		}
	}
	if (*n + 1 < cap)
		out[(*n)++] = '"';
}

/* send_frame writes a frame of the init protocol (length, JSON). */
static int send_frame(const char *json, size_t len)
{
	uint32_t l = (uint32_t)len;
	char hdr[4];
	memcpy(hdr, &l, 4);
	if (shim_write_full(cpipe, hdr, 4) < 0)
		return -1;
	return shim_write_full(cpipe, json, len);
}

/* fail reports an error of class (the errno's class when err is one the
 * map knows, else fallback) and exits. */
static void fail(int err, const char *fallback, const char *fmt, ...) __attribute__((noreturn, format(printf, 3, 4)));
static void fail(int err, const char *fallback, const char *fmt, ...)
{
	char msg[1536], out[4096];
	va_list ap;
	va_start(ap, fmt);
	int n = vsnprintf(msg, sizeof(msg) - 128, fmt, ap);
	va_end(ap);
	if (n < 0)
		n = 0;
	if ((size_t)n > sizeof(msg) - 128)
		n = (int)(sizeof(msg) - 128);
	if (err)
		snprintf(msg + n, sizeof(msg) - (size_t)n, ": %s", strerror(err));
	const char *class = err ? cp_errno_class(err, fallback) : fallback;
	size_t o = 0;
	o += (size_t)snprintf(out, sizeof(out), "{\"type\":\"error\",\"error\":{\"class\":");
	json_str(out, sizeof(out) - 4, &o, class);
	memcpy(out + o, ",\"message\":", 11);
	o += 11;
	json_str(out, sizeof(out) - 4, &o, msg);
	out[o++] = '}';
	out[o++] = '}';
	if (send_frame(out, o) < 0)
		fprintf(stderr, "shim init: %s\n", msg);
	_exit(1);
}

/* ---- reading the plan ---- */

struct rd {
	const char *p, *end;
	uint16_t op;
};

/* take returns the next n bytes of the record (not copied). */
static const char *take(struct rd *r, size_t n)
{
	if ((size_t)(r->end - r->p) < n)
		fail(0, CP_E_INTERNAL, "plan op %u: truncated", r->op);
	const char *s = r->p;
	r->p += n;
	return s;
}

static uint32_t get_u32(struct rd *r)
{
	uint32_t v;
	memcpy(&v, take(r, sizeof(v)), sizeof(v));
	return v;
}

static uint64_t get_u64(struct rd *r)
{
	uint64_t v;
	memcpy(&v, take(r, sizeof(v)), sizeof(v));
	return v;
}

/* get_bytes returns n bytes of the record (not copied). */
static const char *get_bytes(struct rd *r, uint32_t *n)
{
	*n = get_u32(r);
	return take(r, *n);
}

/* get_str returns a NUL-terminated copy of a string of the record. */
static char *get_str(struct rd *r)
{
	uint32_t n;
	const char *s = get_bytes(r, &n);
	if (memchr(s, 0, n))
		fail(0, CP_E_INTERNAL, "plan op %u: NUL in a string", r->op);
	char *c = malloc(n + 1);
	if (c == NULL)
		fail(ENOMEM, CP_E_INTERNAL, "plan");
	memcpy(c, s, n);
	c[n] = 0;
	return c;
}

/* ---- paths inside the root ---- */

static int rootfd = -1; /* the rootfs, O_PATH, before pivot_root */
static int cur = -1;	/* the mount destination the ops act on */

static const char *fdpath(int fd)
{
	static char buf[64];
	snprintf(buf, sizeof(buf), "/proc/self/fd/%d", fd);
	return buf;
}

static int in_root(const char *path, int flags)
{
	struct open_how how = {.flags = (uint64_t)(flags | O_CLOEXEC), .resolve = RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS};
	while (*path == '/')
		path++;
	if (*path == 0)
		path = ".";
	int fd;
	do
		fd = (int)syscall(SYS_openat2, rootfd, path, &how, sizeof(how));
	while (fd < 0 && errno == EINTR);
	return fd;
}

/* mkdir_all makes dir (inside the root, every component resolved in it)
 * and returns it open (O_PATH), or -1 with errno. */
static int mkdir_all(const char *dir)
{
	int fd = in_root(dir, O_PATH | O_DIRECTORY);
	if (fd >= 0 || errno != ENOENT)
		return fd;
	char *p = strdup(dir), *s;
	if (p == NULL)
		return -1;
	/* Walk down from the root, making what is missing. */
	fd = in_root("/", O_PATH | O_DIRECTORY);
	for (s = p; fd >= 0;) {
		while (*s == '/')
			s++;
		if (*s == 0)
			break;
		char *e = s + strcspn(s, "/"), c = *e;
		*e = 0;
		int saved;
		if (mkdirat(fd, s, 0755) < 0 && errno != EEXIST) {
			saved = errno;
			close(fd);
			fd = -1;
			errno = saved;
			break;
		}
		int next = in_root(p, O_PATH | O_DIRECTORY);
		saved = errno;
		close(fd);
		fd = next;
		errno = saved;
		*e = c;
		s = e;
	}
	free(p);
	return fd;
}

/* split sets *base to the last component of path (in place) and returns
 * its parent, made and opened in the root. */
static int open_parent(char *path, char **base, const char *what)
{
	char *slash = strrchr(path, '/');
	if (slash == NULL || slash[1] == 0)
		fail(0, CP_E_INVALID_ARGUMENT, "%s %s: bad path", what, path);
	*base = slash + 1;
	*slash = 0;
	int fd = mkdir_all(*path ? path : "/");
	int saved = errno;
	*slash = '/';
	if (fd < 0)
		fail(saved, CP_E_INVALID_ARGUMENT, "%s %s: parent", what, path);
	return fd;
}

/* op_dest: openDest (rootfs_linux.go). */
static void op_dest(const char *dest, int isdir)
{
	char *path = strdup(dest), *base;
	if (path == NULL)
		fail(ENOMEM, CP_E_INTERNAL, "mount destination");
	int pfd = open_parent(path, &base, "mount destination");
	struct stat st;
	if (fstatat(pfd, base, &st, AT_SYMLINK_NOFOLLOW) == 0) {
		if (S_ISLNK(st.st_mode))
			fail(0, CP_E_INVALID_ARGUMENT, "mount destination %s is a symlink in the rootfs", dest);
	} else if (errno == ENOENT) {
		int r;
		if (isdir) {
			r = mkdirat(pfd, base, 0755);
		} else {
			r = openat(pfd, base, O_CREAT | O_EXCL | O_NOFOLLOW | O_WRONLY | O_CLOEXEC, 0644);
			if (r >= 0)
				close(r);
		}
		if (r < 0 && errno != EEXIST)
			fail(errno, CP_E_INTERNAL, "create mount destination %s", dest);
	} else {
		fail(errno, CP_E_INTERNAL, "mount destination %s", dest);
	}
	if (cur >= 0)
		close(cur);
	cur = openat(pfd, base, O_PATH | O_NOFOLLOW | O_CLOEXEC);
	if (cur < 0)
		fail(errno, CP_E_INTERNAL, "open mount destination %s", dest);
	if (fstat(cur, &st) < 0 || S_ISLNK(st.st_mode))
		fail(0, CP_E_INVALID_ARGUMENT, "mount destination %s is a symlink in the rootfs", dest);
	close(pfd);
	free(path);
}

static void op_reopen(const char *dest)
{
	if (cur >= 0)
		close(cur);
	cur = in_root(dest, O_PATH);
	if (cur < 0)
		fail(errno, CP_E_INTERNAL, "reopen mount %s", dest);
}

/* bind_remount: bindRemount (rootfs_linux.go). */
static int bind_remount(const char *path, unsigned long flags)
{
	if (mount("", path, NULL, MS_BIND | MS_REMOUNT | flags, NULL) == 0)
		return 0;
	if (errno != EPERM)
		return -1;
	int saved = errno;
	struct statfs st;
	if (statfs(path, &st) < 0) {
		errno = saved;
		return -1;
	}
	unsigned long locked = (unsigned long)st.f_flags &
			       (MS_NOSUID | MS_NODEV | MS_NOEXEC | MS_NOATIME | MS_NODIRATIME | MS_RELATIME | MS_RDONLY);
	return mount("", path, NULL, MS_BIND | MS_REMOUNT | flags | locked, NULL);
}

static void remount_ro(const char *path)
{
	if (bind_remount(path, MS_RDONLY) < 0) {
		int saved = errno;
		if (mount("", path, NULL, MS_REMOUNT | MS_RDONLY, NULL) < 0)
			fail(saved, CP_E_INTERNAL, "remount %s read-only", path);
	}
}

/* op_mknod: createDevice (devices_linux.go), without a user namespace. */
static void op_mknod(const char *dpath, mode_t mode, dev_t dev, uid_t uid, gid_t gid)
{
	char *path = strdup(dpath), *base;
	if (path == NULL)
		fail(ENOMEM, CP_E_INTERNAL, "device");
	int pfd = open_parent(path, &base, "device");
	struct stat st;
	if (fstatat(pfd, base, &st, AT_SYMLINK_NOFOLLOW) == 0) {
		if (S_ISLNK(st.st_mode))
			fail(0, CP_E_INVALID_ARGUMENT, "device %s is a symlink in the rootfs", dpath);
		if ((st.st_mode & S_IFMT) == (mode & S_IFMT) && st.st_rdev == dev)
			goto out;
		if (unlinkat(pfd, base, 0) < 0)
			fail(errno, CP_E_INTERNAL, "replace device %s", dpath);
	}
	if (mknodat(pfd, base, mode, dev) < 0)
		fail(errno, CP_E_INTERNAL, "mknod %s", dpath);
	if (fchownat(pfd, base, uid, gid, AT_SYMLINK_NOFOLLOW) < 0)
		fail(errno, CP_E_INTERNAL, "chown %s", dpath);
	if (fchmodat(pfd, base, mode & 07777, 0) < 0)
		fail(errno, CP_E_INTERNAL, "chmod %s", dpath);
out:
	close(pfd);
	free(path);
}

/* op_devlinks: the symlinks of setupDev. */
static void op_devlinks(void)
{
	int dfd = mkdir_all("/dev");
	if (dfd < 0)
		fail(errno, CP_E_INTERNAL, "open /dev");
	static const char *const links[][2] = {
		{"/proc/self/fd", "fd"}, {"/proc/self/fd/0", "stdin"}, {"/proc/self/fd/1", "stdout"},
		{"/proc/self/fd/2", "stderr"}, {"/proc/kcore", "core"},
	};
	struct stat st;
	int kcore = stat("/proc/kcore", &st) == 0;
	for (size_t i = 0; i < sizeof(links) / sizeof(links[0]); i++) {
		if (strcmp(links[i][1], "core") == 0 && !kcore)
			continue;
		if (symlinkat(links[i][0], dfd, links[i][1]) < 0 && errno != EEXIST)
			fail(errno, CP_E_INTERNAL, "symlink /dev/%s", links[i][1]);
	}
	if (fstatat(dfd, "pts", &st, AT_SYMLINK_NOFOLLOW) == 0) {
		unlinkat(dfd, "ptmx", 0);
		if (symlinkat("pts/ptmx", dfd, "ptmx") < 0)
			fail(errno, CP_E_INTERNAL, "symlink /dev/ptmx");
	}
	close(dfd);
}

/* op_pivot: pivotRoot (rootfs_linux.go). */
static void op_pivot(const char *rootfs)
{
	int oldroot = open("/", O_DIRECTORY | O_RDONLY | O_CLOEXEC);
	if (oldroot < 0)
		fail(errno, CP_E_INTERNAL, "open old root");
	int newroot = open(rootfs, O_DIRECTORY | O_RDONLY | O_CLOEXEC);
	if (newroot < 0)
		fail(errno, CP_E_INTERNAL, "open new root");
	if (fchdir(newroot) < 0)
		fail(errno, CP_E_INTERNAL, "chdir to new root");
	if (syscall(SYS_pivot_root, ".", ".") < 0)
		fail(errno, CP_E_FAILED_PRECONDITION, "pivot_root");
	if (fchdir(oldroot) < 0)
		fail(errno, CP_E_INTERNAL, "chdir to old root");
	if (mount("", ".", NULL, MS_SLAVE | MS_REC, NULL) < 0)
		fail(errno, CP_E_INTERNAL, "make old root slave");
	if (umount2(".", MNT_DETACH) < 0)
		fail(errno, CP_E_INTERNAL, "unmount old root");
	if (chdir("/") < 0)
		fail(errno, CP_E_INTERNAL, "chdir /");
	close(oldroot);
	close(newroot);
	if (cur >= 0)
		close(cur);
	close(rootfd);
	cur = rootfd = -1;
}

/* mkdir_p makes path (after pivot_root: plain paths cannot escape). */
static void mkdir_p(const char *path)
{
	char *p = strdup(path);
	if (p == NULL)
		fail(ENOMEM, CP_E_INTERNAL, "mkdir");
	for (char *s = p + 1;; s++) {
		if (*s == '/' || *s == 0) {
			char c = *s;
			*s = 0;
			if (mkdir(p, 0755) < 0 && errno != EEXIST)
				fail(errno, CP_E_INTERNAL, "create cwd %s", path);
			*s = c;
			if (c == 0)
				break;
		}
	}
	free(p);
}

static void op_sysctl(const char *key, const char *val)
{
	static int procfd = -1;
	if (procfd < 0) {
		procfd = open("/proc/sys", O_PATH | O_DIRECTORY | O_CLOEXEC | O_NOFOLLOW);
		struct statfs st;
		if (procfd < 0)
			fail(errno, CP_E_INTERNAL, "open /proc/sys");
		if (fstatfs(procfd, &st) < 0 || st.f_type != 0x9fa0 /* PROC_SUPER_MAGIC */)
			fail(0, CP_E_PERMISSION_DENIED, "/proc/sys is not on procfs");
	}
	char rel[512];
	if (strlen(key) >= sizeof(rel))
		fail(0, CP_E_INVALID_ARGUMENT, "sysctl %s: too long", key);
	strcpy(rel, key);
	for (char *c = rel; *c; c++)
		if (*c == '.')
			*c = '/';
	struct open_how how = {.flags = O_WRONLY | O_CLOEXEC | O_TRUNC,
			       .resolve = RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS | RESOLVE_NO_XDEV};
	int fd = (int)syscall(SYS_openat2, procfd, rel, &how, sizeof(how));
	if (fd < 0)
		fail(errno, CP_E_INVALID_ARGUMENT, "sysctl \"%s\"", key);
	if (shim_write_full(fd, val, strlen(val)) < 0)
		fail(errno, CP_E_INVALID_ARGUMENT, "sysctl \"%s\"=\"%s\"", key, val);
	close(fd);
}

/* op_readonly: readonlyPath (rootfs_linux.go). */
static void op_readonly(const char *p)
{
	int fd = open(p, O_PATH | O_NOFOLLOW | O_CLOEXEC);
	if (fd < 0) {
		if (errno == ENOENT)
			return;
		fail(errno, CP_E_INTERNAL, "readonly path %s", p);
	}
	if (mount(fdpath(fd), p, NULL, MS_BIND | MS_REC, NULL) < 0)
		fail(errno, CP_E_INTERNAL, "bind readonly path %s", p);
	if (bind_remount(p, MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC) < 0)
		fail(errno, CP_E_INTERNAL, "remount %s read-only", p);
	struct mount_attr attr = {.attr_set = MOUNT_ATTR_RDONLY};
	syscall(SYS_mount_setattr, AT_FDCWD, p, AT_RECURSIVE | AT_SYMLINK_NOFOLLOW, &attr, sizeof(attr));
	close(fd);
}

/* op_mask: maskPath (rootfs_linux.go). */
static void op_mask(const char *p)
{
	struct stat st;
	if (lstat(p, &st) < 0) {
		if (errno == ENOENT)
			return;
		fail(errno, CP_E_INTERNAL, "masked path %s", p);
	}
	if (S_ISDIR(st.st_mode)) {
		if (mount("tmpfs", p, "tmpfs", MS_RDONLY, NULL) < 0)
			fail(errno, CP_E_INTERNAL, "mask %s", p);
		return;
	}
	int null = open("/dev/null", O_PATH | O_NOFOLLOW | O_CLOEXEC);
	if (null < 0)
		fail(errno, CP_E_INTERNAL, "mask %s: open /dev/null", p);
	if (fstat(null, &st) < 0 || !S_ISCHR(st.st_mode) || st.st_rdev != makedev(1, 3))
		fail(0, CP_E_PERMISSION_DENIED, "mask %s: /dev/null is not the 1:3 character device", p);
	if (mount(fdpath(null), p, NULL, MS_BIND, NULL) < 0 && errno != ENOTDIR && errno != ENOENT)
		fail(errno, CP_E_INTERNAL, "mask %s", p);
	close(null);
}

/* ---- the process ---- */

struct late_rlimit {
	int res;
	struct rlimit lim;
};

struct proc {
	char *argv0;
	char **argv, **envp;
	int nnp;
	struct late_rlimit late[MAX_LATE];
	int nlate;
	struct sock_fprog prog; /* loaded last when nnp */
	unsigned int seccomp_flags;
	int have_prog;
};

static int is_exec(const char *p)
{
	struct stat st;
	if (stat(p, &st) < 0)
		return -1;
	if (S_ISDIR(st.st_mode)) {
		errno = EISDIR;
		return -1;
	}
	if ((st.st_mode & 0111) == 0) {
		errno = EACCES;
		return -1;
	}
	return 0;
}

/* look_path: lookPath (init_linux.go). */
static char *look_path(char **argv, char **envp)
{
	const char *name = argv[0];
	if (name == NULL || *name == 0)
		fail(0, CP_E_INVALID_ARGUMENT, "process args are empty");
	if (strchr(name, '/')) {
		if (is_exec(name) < 0)
			fail(errno, CP_E_NOT_FOUND, "exec \"%s\"", name);
		return (char *)name;
	}
	const char *path = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
	for (char **e = envp; *e; e++)
		if (strncmp(*e, "PATH=", 5) == 0)
			path = *e + 5;
	for (const char *d = path;;) {
		const char *c = strchr(d, ':');
		size_t dl = c ? (size_t)(c - d) : strlen(d);
		char *cand = malloc(dl + strlen(name) + 3);
		if (cand == NULL)
			fail(ENOMEM, CP_E_INTERNAL, "exec");
		if (dl == 0)
			sprintf(cand, "./%s", name);
		else
			sprintf(cand, "%.*s/%s", (int)dl, d, name);
		if (is_exec(cand) == 0)
			return cand;
		free(cand);
		if (c == NULL)
			break;
		d = c + 1;
	}
	fail(0, CP_E_NOT_FOUND, "exec \"%s\": executable file not found in $PATH", name);
}

/* home_dir: homeDir (init_linux.go): uid's home in the container's
 * /etc/passwd, or "/". */
static char *home_dir(uint32_t uid)
{
	static char buf[1 << 20];
	int fd = open("/etc/passwd", O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return "/";
	ssize_t n = 0, r;
	while ((size_t)n < sizeof(buf) - 1 && (r = read(fd, buf + n, sizeof(buf) - 1 - (size_t)n)) > 0)
		n += r;
	close(fd);
	buf[n] = 0;
	char want[16];
	snprintf(want, sizeof(want), "%u", uid);
	for (char *line = buf; line && *line;) {
		char *nl = strchr(line, '\n');
		if (nl)
			*nl = 0;
		char *f[7] = {0};
		int k = 0;
		for (char *s = line; k < 7;) {
			f[k++] = s;
			char *c = strchr(s, ':');
			if (c == NULL)
				break;
			*c = 0;
			s = c + 1;
		}
		if (k >= 6 && strcmp(f[2], want) == 0 && *f[5])
			return f[5];
		line = nl ? nl + 1 : NULL;
	}
	return "/";
}

static void op_exec(struct rd *r, struct proc *pr)
{
	pr->nnp = (int)get_u32(r);
	uint32_t uid = get_u32(r);
	uint32_t na = get_u32(r);
	if (na == 0 || na > 1 << 16)
		fail(0, CP_E_INVALID_ARGUMENT, "process args are empty");
	pr->argv = calloc(na + 1, sizeof(char *));
	if (pr->argv == NULL)
		fail(ENOMEM, CP_E_INTERNAL, "process args");
	for (uint32_t i = 0; i < na; i++)
		pr->argv[i] = get_str(r);
	uint32_t ne = get_u32(r);
	if (ne > 1 << 16)
		fail(0, CP_E_INVALID_ARGUMENT, "process env too large");
	pr->envp = calloc(ne + 2, sizeof(char *));
	if (pr->envp == NULL)
		fail(ENOMEM, CP_E_INTERNAL, "process env");
	int home = 0;
	for (uint32_t i = 0; i < ne; i++) {
		pr->envp[i] = get_str(r);
		if (strncmp(pr->envp[i], "HOME=", 5) == 0)
			home = 1;
	}
	if (!home) {
		const char *h = home_dir(uid);
		char *e = malloc(strlen(h) + 6);
		if (e == NULL)
			fail(ENOMEM, CP_E_INTERNAL, "env");
		sprintf(e, "HOME=%s", h);
		pr->envp[ne] = e;
	}
	pr->argv0 = look_path(pr->argv, pr->envp);
}

static void op_seccomp(struct rd *r, struct proc *pr)
{
	pr->seccomp_flags = get_u32(r);
	uint32_t n;
	const char *b = get_bytes(r, &n);
	if (n == 0 || n % sizeof(struct sock_filter) != 0 || n / sizeof(struct sock_filter) > 0xffff)
		fail(0, CP_E_INTERNAL, "seccomp program of %u bytes", n);
	struct sock_filter *f = malloc(n);
	if (f == NULL)
		fail(ENOMEM, CP_E_INTERNAL, "seccomp");
	memcpy(f, b, n);
	pr->prog.len = (unsigned short)(n / sizeof(struct sock_filter));
	pr->prog.filter = f;
	pr->have_prog = 1;
	if (!pr->nnp && syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER, pr->seccomp_flags, &pr->prog) < 0)
		fail(errno, CP_E_PERMISSION_DENIED, "load seccomp filter");
}

static void caps_set(uint64_t eff, uint64_t perm, uint64_t inh)
{
	struct __user_cap_header_struct hdr = {.version = _LINUX_CAPABILITY_VERSION_3};
	struct __user_cap_data_struct d[2] = {
		{.effective = (uint32_t)eff, .permitted = (uint32_t)perm, .inheritable = (uint32_t)inh},
		{.effective = (uint32_t)(eff >> 32), .permitted = (uint32_t)(perm >> 32), .inheritable = (uint32_t)(inh >> 32)},
	};
	if (syscall(SYS_capset, &hdr, d) < 0)
		fail(errno, CP_E_INTERNAL, "capset");
}

static uint64_t held_caps(void)
{
	struct __user_cap_header_struct hdr = {.version = _LINUX_CAPABILITY_VERSION_3};
	struct __user_cap_data_struct d[2];
	if (syscall(SYS_capget, &hdr, d) < 0)
		return ~(uint64_t)0;
	return (uint64_t)d[0].permitted | (uint64_t)d[1].permitted << 32;
}

/* op_creds: finalizeProcess (caps_linux.go) up to the cwd. */
static void op_creds(struct rd *r)
{
	uint32_t lastcap = get_u32(r);
	uint64_t bounding = get_u64(r), eff = get_u64(r), perm = get_u64(r), inh = get_u64(r), amb = get_u64(r);
	uint32_t uid = get_u32(r), gid = get_u32(r), ng = get_u32(r);
	if (ng > 65536)
		fail(0, CP_E_INVALID_ARGUMENT, "too many groups");
	gid_t *groups = calloc(ng + 1, sizeof(gid_t));
	if (groups == NULL)
		fail(ENOMEM, CP_E_INTERNAL, "groups");
	for (uint32_t i = 0; i < ng; i++)
		groups[i] = get_u32(r);
	uint64_t held = held_caps();
	eff &= held, perm &= held, inh &= held, amb &= held;
	for (uint32_t i = 0; i <= lastcap && i < 64; i++)
		if (!(bounding & (1ULL << i)) && prctl(PR_CAPBSET_DROP, i, 0, 0, 0) < 0 && errno != EINVAL)
			fail(errno, CP_E_INTERNAL, "drop bounding capability %u", i);
	if (prctl(PR_SET_KEEPCAPS, 1, 0, 0, 0) < 0)
		fail(errno, CP_E_INTERNAL, "set keepcaps");
	if (syscall(SYS_setgroups, (size_t)ng, groups) < 0 && !(errno == EPERM && ng == 0))
		fail(errno, CP_E_INTERNAL, "setgroups");
	if (syscall(SYS_setresgid, gid, gid, gid) < 0)
		fail(errno, CP_E_INTERNAL, "setgid %u%s", gid, errno == EINVAL ? " (is the id mapped?)" : "");
	if (syscall(SYS_setresuid, uid, uid, uid) < 0)
		fail(errno, CP_E_INTERNAL, "setuid %u%s", uid, errno == EINVAL ? " (is the id mapped?)" : "");
	if (prctl(PR_SET_KEEPCAPS, 0, 0, 0, 0) < 0)
		fail(errno, CP_E_INTERNAL, "clear keepcaps");
	caps_set(eff, perm, inh);
	if (prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0) < 0 && errno != EINVAL)
		fail(errno, CP_E_INTERNAL, "clear ambient capabilities");
	for (uint32_t i = 0; i <= lastcap && i < 64; i++)
		if (amb & (1ULL << i))
			prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_RAISE, i, 0, 0);
	free(groups);
}

static void op_cwd(const char *cwd)
{
	char wd[4096];
	if (chdir(cwd) < 0)
		fail(errno, CP_E_INVALID_ARGUMENT, "chdir to cwd \"%s\"", cwd);
	if (getcwd(wd, sizeof(wd)) == NULL || wd[0] != '/')
		fail(0, CP_E_PERMISSION_DENIED, "cwd \"%s\" is outside the container root", cwd);
}

static void op_rlimit(struct rd *r, struct proc *pr)
{
	int res = (int)get_u32(r);
	struct rlimit lim;
	lim.rlim_cur = get_u64(r);
	lim.rlim_max = get_u64(r);
	int late = (int)get_u32(r);
	char *name = get_str(r);
	if (late) {
		/* planRlimits: raised now, lowered last. */
		struct rlimit c;
		if (getrlimit(res, &c) == 0) {
			struct rlimit raise = {c.rlim_cur > lim.rlim_cur ? c.rlim_cur : lim.rlim_cur,
					       c.rlim_max > lim.rlim_max ? c.rlim_max : lim.rlim_max};
			if (raise.rlim_cur > raise.rlim_max)
				raise.rlim_cur = raise.rlim_max;
			if (setrlimit(res, &raise) < 0)
				fail(errno, CP_E_INVALID_ARGUMENT, "set rlimit %s (soft %llu, hard %llu)", name,
				     (unsigned long long)raise.rlim_cur, (unsigned long long)raise.rlim_max);
		}
		if (pr->nlate >= MAX_LATE)
			fail(0, CP_E_INVALID_ARGUMENT, "too many rlimits");
		pr->late[pr->nlate].res = res;
		pr->late[pr->nlate++].lim = lim;
	} else if (setrlimit(res, &lim) < 0) {
		fail(errno, CP_E_INVALID_ARGUMENT, "set rlimit %s (soft %llu, hard %llu)", name,
		     (unsigned long long)lim.rlim_cur, (unsigned long long)lim.rlim_max);
	}
	free(name);
}

static void wait_start(int fifo)
{
	if (fifo < 0)
		fail(0, CP_E_INTERNAL, "no exec fifo");
	int w = open(fdpath(fifo), O_WRONLY | O_CLOEXEC);
	if (w < 0)
		fail(errno, CP_E_INTERNAL, "open exec fifo");
	if (shim_write_full(w, "0", 1) < 0)
		fail(errno, CP_E_INTERNAL, "write exec fifo");
	close(w);
	close(fifo);
}

void shim_cinit(int pipefd, int fifo)
{
	cpipe = pipefd;
	uint32_t len;
	if (shim_read_full(cpipe, &len, 4) < 0)
		fail(errno, CP_E_INTERNAL, "read init plan");
	if (len > MAX_PLAN || len < sizeof(CP_MAGIC) - 1)
		fail(0, CP_E_INTERNAL, "init plan of %u bytes", len);
	char *buf = malloc(len);
	if (buf == NULL)
		fail(ENOMEM, CP_E_INTERNAL, "init plan");
	if (shim_read_full(cpipe, buf, len) < 0)
		fail(errno, CP_E_INTERNAL, "read init plan");
	if (memcmp(buf, CP_MAGIC, sizeof(CP_MAGIC) - 1) != 0)
		fail(0, CP_E_INTERNAL, "init plan: bad magic");
	struct proc pr;
	memset(&pr, 0, sizeof(pr));
	const char *p = buf + sizeof(CP_MAGIC) - 1, *end = buf + len;
	while (p < end) {
		struct rd r;
		uint32_t n;
		if (end - p < 8)
			fail(0, CP_E_INTERNAL, "init plan: truncated record");
		memcpy(&r.op, p, 2);
		memcpy(&n, p + 4, 4);
		p += 8;
		if ((size_t)(end - p) < n)
			fail(0, CP_E_INTERNAL, "init plan: op %u overflows", r.op);
		r.p = p;
		r.end = p + n;
		p += n;
		switch (r.op) {
		case CP_OP_SETSID:
			if (setsid() < 0)
				fail(errno, CP_E_INTERNAL, "setsid");
			break;
		case CP_OP_KEYRING: {
			char *name = get_str(&r);
			syscall(SYS_keyctl, KEYCTL_JOIN_SESSION_KEYRING, name, 0, 0, 0);
			free(name);
			break;
		}
		case CP_OP_UMASK:
			umask((mode_t)get_u32(&r));
			break;
		case CP_OP_MOUNT_PATH: {
			/* mount on a path, or (empty path) on the current destination */
			uint64_t flags = get_u64(&r);
			char *src = get_str(&r), *dst = get_str(&r), *type = get_str(&r), *data = get_str(&r),
			     *what = get_str(&r), *class = get_str(&r);
			const char *target = *dst ? dst : fdpath(cur);
			if (!*dst && cur < 0)
				fail(0, CP_E_INTERNAL, "init plan: mount without a destination");
			/* as Go's unix.Mount: "" for an empty source or type, no data for "" */
			if (mount(src, target, type, (unsigned long)flags, *data ? data : NULL) < 0)
				fail(errno, *class ? class : CP_E_INTERNAL, "%s", what);
			free(src), free(dst), free(type), free(data), free(what), free(class);
			break;
		}
		case CP_OP_ROOT: {
			char *rootfs = get_str(&r);
			rootfd = open(rootfs, O_PATH | O_DIRECTORY | O_CLOEXEC);
			if (rootfd < 0)
				fail(errno, CP_E_INTERNAL, "open rootfs");
			free(rootfs);
			break;
		}
		case CP_OP_DEST: {
			int isdir = (int)get_u32(&r);
			char *dest = get_str(&r);
			op_dest(dest, isdir);
			free(dest);
			break;
		}
		case CP_OP_REOPEN: {
			char *dest = get_str(&r);
			op_reopen(dest);
			free(dest);
			break;
		}
		case CP_OP_CHECK_FS: {
			uint64_t magic = get_u64(&r);
			char *dest = get_str(&r);
			struct statfs st;
			op_reopen(dest);
			if (fstatfs(cur, &st) < 0 || (uint64_t)st.f_type != magic)
				fail(0, CP_E_PERMISSION_DENIED, "%s is not the filesystem just mounted", dest);
			free(dest);
			break;
		}
		case CP_OP_BIND_REMOUNT: {
			uint64_t flags = get_u64(&r);
			char *dest = get_str(&r);
			if (bind_remount(fdpath(cur), (unsigned long)flags) < 0)
				fail(errno, CP_E_INTERNAL, "remount %s", dest);
			free(dest);
			break;
		}
		case CP_OP_SETATTR: {
			struct mount_attr attr = {.attr_set = get_u64(&r), .attr_clr = get_u64(&r)};
			char *dest = get_str(&r);
			if (syscall(SYS_mount_setattr, cur, "", AT_EMPTY_PATH | AT_RECURSIVE, &attr, sizeof(attr)) < 0)
				fail(errno, CP_E_NOT_IMPLEMENTED, "mount_setattr %s", dest);
			free(dest);
			break;
		}
		case CP_OP_MKNOD: {
			uint32_t mode = get_u32(&r);
			uint64_t dev = get_u64(&r);
			uint32_t uid = get_u32(&r), gid = get_u32(&r);
			char *path = get_str(&r);
			op_mknod(path, (mode_t)mode, (dev_t)dev, uid, gid);
			free(path);
			break;
		}
		case CP_OP_DEVLINKS:
			op_devlinks();
			break;
		case CP_OP_PIVOT: {
			char *rootfs = get_str(&r);
			op_pivot(rootfs);
			free(rootfs);
			break;
		}
		case CP_OP_REMOUNT_RO: {
			/* a path, or (empty) the current destination */
			char *path = get_str(&r);
			if (!*path && cur < 0)
				fail(0, CP_E_INTERNAL, "init plan: remount without a destination");
			remount_ro(*path ? path : fdpath(cur));
			free(path);
			break;
		}
		case CP_OP_MKDIR_ALL: {
			char *path = get_str(&r);
			mkdir_p(path);
			free(path);
			break;
		}
		case CP_OP_HOSTNAME:
		case CP_OP_DOMAINNAME: {
			char *name = get_str(&r);
			int rc = r.op == CP_OP_HOSTNAME ? sethostname(name, strlen(name)) : setdomainname(name, strlen(name));
			if (rc < 0)
				fail(errno, CP_E_INTERNAL, r.op == CP_OP_HOSTNAME ? "sethostname" : "setdomainname");
			free(name);
			break;
		}
		case CP_OP_SYSCTL: {
			char *k = get_str(&r), *v = get_str(&r);
			op_sysctl(k, v);
			free(k), free(v);
			break;
		}
		case CP_OP_READONLY:
		case CP_OP_MASK: {
			char *path = get_str(&r);
			if (r.op == CP_OP_READONLY)
				op_readonly(path);
			else
				op_mask(path);
			free(path);
			break;
		}
		case CP_OP_RLIMIT:
			op_rlimit(&r, &pr);
			break;
		case CP_OP_EXEC:
			op_exec(&r, &pr);
			break;
		case CP_OP_CLOSE_FDS: {
			unsigned int from = get_u32(&r);
			if (syscall(SYS_close_range, from, ~0U, CLOSE_RANGE_CLOEXEC) < 0)
				fail(errno, CP_E_INTERNAL, "close_range");
			break;
		}
		case CP_OP_SECCOMP:
			op_seccomp(&r, &pr);
			break;
		case CP_OP_CREDS:
			op_creds(&r);
			break;
		case CP_OP_CWD: {
			char *cwd = get_str(&r);
			op_cwd(cwd);
			free(cwd);
			break;
		}
		default:
			fail(0, CP_E_INTERNAL, "init plan: unknown op %u", r.op);
		}
		if (r.p != r.end)
			fail(0, CP_E_INTERNAL, "init plan: op %u has %zu bytes left", r.op, (size_t)(r.end - r.p));
	}
	if (pr.argv0 == NULL)
		fail(0, CP_E_INTERNAL, "init plan: no process");
	static const char ready[] = "{\"type\":\"ready\"}";
	if (send_frame(ready, sizeof(ready) - 1) < 0)
		fail(errno, CP_E_INTERNAL, "report ready");
	wait_start(fifo);
	/* execPlan.exec: no_new_privs, the last rlimits, the filter. */
	if (pr.nnp && prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) < 0)
		fail(errno, CP_E_INTERNAL, "set no_new_privs");
	for (int i = 0; i < pr.nlate; i++)
		if (setrlimit(pr.late[i].res, &pr.late[i].lim) < 0)
			fail(errno, CP_E_INVALID_ARGUMENT, "set rlimits");
	if (pr.have_prog && pr.nnp && syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER, pr.seccomp_flags, &pr.prog) < 0)
		fail(errno, CP_E_PERMISSION_DENIED, "load seccomp filter");
	execve(pr.argv0, pr.argv, pr.envp);
	fail(errno, CP_E_FAILED_PRECONDITION, "exec %s", pr.argv[0]);
}
