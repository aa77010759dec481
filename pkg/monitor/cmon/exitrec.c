/* exitrec.c: the exit record of a container's init, <bundle>/exit.json
 * (monitor.ExitRecord), and the OOM kill count it carries. */
#include "mon.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#define EXIT_FILE "exit.json"

void exitrec_json(struct cm_buf *b, pid_t pid, int wstatus, const struct timespec *finished, int oom_killed)
{
	char ts[40];
	cm_rfc3339(finished, ts);
	if (WIFSIGNALED(wstatus)) {
		int sig = WTERMSIG(wstatus);
		cm_buf_printf(b, "{\"" CM_EXIT_PID "\":%d,\"" CM_EXIT_CODE "\":%d,\"" CM_EXIT_SIGNALED "\":true,\"" CM_EXIT_SIGNAL "\":%d",
			      (int)pid, 128 + sig, sig);
	} else {
		cm_buf_printf(b, "{\"" CM_EXIT_PID "\":%d,\"" CM_EXIT_CODE "\":%d", (int)pid,
			      WIFEXITED(wstatus) ? WEXITSTATUS(wstatus) : 255);
	}
	if (oom_killed)
		cm_buf_str(b, ",\"" CM_EXIT_OOM_KILLED "\":true");
	cm_buf_printf(b, ",\"" CM_EXIT_FINISHED_AT "\":\"%s\"}", ts);
}

long long exitrec_oom_kills(const char *path)
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

int exitrec_write(const char *bundle, struct cm_buf *rec)
{
	char tmp[MAX_PATH + 32], dst[MAX_PATH + 32];
	snprintf(tmp, sizeof(tmp), "%s/" EXIT_FILE ".tmp", bundle);
	snprintf(dst, sizeof(dst), "%s/" EXIT_FILE, bundle);
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
