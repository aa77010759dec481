// The hand-over of `shim oci` to the lean runtime binary; see doc.go.
#define _GNU_SOURCE
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "ocilean.h"

#if __has_include("embedded.h")
#include "embedded.h" // made by `make runtime`
#endif

const char *shim_oci_default_root(void) { return SHIM_OCI_DEFAULT_ROOT; }

// Global flags of `shim oci` (pkg/libct/ocicli) that take a value.
static const char *const value_flags[] = {"root", "log", "log-format", "criu", "rootless", NULL};
// And those that do not.
static const char *const bool_flags[] = {"debug", "systemd-cgroup", NULL};

static int in(const char *const *set, const char *name, size_t n) {
	for (; *set; set++)
		if (strlen(*set) == n && strncmp(*set, name, n) == 0)
			return 1;
	return 0;
}

const char *shim_oci_lean_root(int argc, char **argv) {
	if (argc < 3 || strcmp(argv[1], "oci") != 0)
		return NULL;
	const char *root = SHIM_OCI_DEFAULT_ROOT;
	for (int i = 2; i < argc; i++) {
		const char *a = argv[i];
		if (a[0] != '-')
			return *root ? root : NULL; // the subcommand
		const char *name = a + (a[1] == '-' ? 2 : 1);
		const char *eq = strchr(name, '=');
		size_t n = eq ? (size_t)(eq - name) : strlen(name);
		if (in(value_flags, name, n)) {
			const char *v = eq ? eq + 1 : (i + 1 < argc ? argv[++i] : NULL);
			if (!v)
				return NULL;
			if (n == 4 && strncmp(name, "root", 4) == 0)
				root = v;
		} else if (!in(bool_flags, name, n)) {
			return NULL; // --help, --, anything new: the Go command decides
		}
	}
	return NULL; // no subcommand
}

#ifdef SHIM_RUNTIME_SUM
// owned: st is this user's and writable by no one else.
static int owned(const struct stat *st) { return st->st_uid == geteuid() && !(st->st_mode & 022); }

// open_trusted opens dirfd/name (a regular file of size bytes, owned) for
// execveat, or returns -1. The checks and the exec are of one inode.
static int open_trusted(int dirfd, const char *name, long long size) {
	int fd = openat(dirfd, name, O_PATH | O_NOFOLLOW | O_CLOEXEC);
	if (fd < 0)
		return -1;
	struct stat st;
	if (fstat(fd, &st) < 0 || !owned(&st) || !S_ISREG(st.st_mode) || st.st_size != size) {
		close(fd);
		return -1;
	}
	return fd;
}

__attribute__((constructor)) static void shim_oci_lean(int argc, char **argv, char **envp) {
	const char *root = shim_oci_lean_root(argc, argv);
	if (!root)
		return;
	char dir[4096], init[4200];
	if (snprintf(dir, sizeof(dir), "%s/.bin", root) >= (int)sizeof(dir))
		return;
	int dirfd = open(dir, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	if (dirfd < 0)
		return; // not installed yet: the Go command installs it
	struct stat st;
	int runtime = -1;
	if (fstat(dirfd, &st) == 0 && owned(&st) && S_ISDIR(st.st_mode)) {
		int initfd = open_trusted(dirfd, "shim-init-" SHIM_INIT_SUM, SHIM_INIT_SIZE);
		if (initfd >= 0) {
			close(initfd);
			runtime = open_trusted(dirfd, "shim-runtime-" SHIM_RUNTIME_SUM, SHIM_RUNTIME_SIZE);
		}
	}
	close(dirfd);
	if (runtime < 0)
		return;
	snprintf(init, sizeof(init), "%s=%s/shim-init-%s", SHIM_OCI_INIT_ENV, dir, SHIM_INIT_SUM);
	size_t n = 0;
	while (envp[n])
		n++;
	char **env = calloc(n + 2, sizeof(char *));
	if (!env) {
		close(runtime);
		return;
	}
	size_t k = 0;
	for (size_t i = 0; i < n; i++)
		if (strncmp(envp[i], SHIM_OCI_INIT_ENV "=", sizeof(SHIM_OCI_INIT_ENV)) != 0)
			env[k++] = envp[i];
	env[k++] = init;
	env[k] = NULL;
	syscall(SYS_execveat, runtime, "", argv, env, AT_EMPTY_PATH);
	// It could not be run: the Go command runs it itself.
	close(runtime);
	free(env);
}
#endif
