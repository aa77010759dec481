/* exec.c: processes started in a container.
 *
 * ExecSync: the command's output is captured here (MAX_EXEC_OUTPUT per
 * stream, the rest counted as truncated) and answered with its exit code
 * when it has exited and its output is drained.
 *
 * Exec: the client holds the process's stdio. The monitor makes the pipes
 * (or the helper a terminal) and passes the client's ends with the reply
 * {"pid":N} (SCM_RIGHTS: stdin if asked, stdout, stderr; or the pty
 * master); it stays the process's reaper and sends {"exitCode":N} when
 * it exits. Bytes never go through the monitor.
 *
 * A timeout, a client that goes away, or the exit of the container kills
 * the process. */
#include "mon.h"

#include <errno.h>
#include <fcntl.h>
#include <malloc.h>
#include <stdio.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/wait.h>
#include <unistd.h>

#define MAX_EXEC_OUTPUT (16 << 20) /* per stream */
#define EXEC_DRAIN_MS 1000	   /* output still open after the command exited */

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
	int stream;	 /* an Exec */
	int give[3], ngive; /* the client's ends of the pipes, until the reply */
};

static struct execop *execs;

static void capture_init(struct capture *k, struct execop *ex)
{
	k->w.kind = K_CAPTURE;
	k->fd = -1;
	k->ex = ex;
	k->b.max = MAX_EXEC_OUTPUT;
}

static void exec_remove(struct execop *ex)
{
	for (struct execop **pp = &execs; *pp; pp = &(*pp)->next)
		if (*pp == ex) {
			*pp = ex->next;
			break;
		}
	closefd(&ex->out.fd);
	closefd(&ex->err.fd);
	cm_buf_free(&ex->out.b);
	cm_buf_free(&ex->err.b);
	ex->out.w.dead = ex->err.w.dead = 1;
	bury(&ex->w);
}

static void close_give(struct execop *ex)
{
	for (int i = 0; i < ex->ngive; i++)
		close(ex->give[i]);
	ex->ngive = 0;
}

void exec_free(struct watch *w)
{
	struct execop *ex = (struct execop *)w;
	close_give(ex);
	free(ex->id);
	free(ex);
}

static int exit_code(int st) { return WIFSIGNALED(st) ? 128 + WTERMSIG(st) : WIFEXITED(st) ? WEXITSTATUS(st) : 255; }

static void exec_reply(struct execop *ex)
{
	int code = exit_code(ex->wstatus);
	struct cm_buf b = {0};
	cm_buf_str(&b, "{");
	if (ex->out.b.len) {
		cm_buf_str(&b, "\"" CM_RESP_STDOUT "\":");
		cm_buf_base64(&b, (unsigned char *)ex->out.b.p, ex->out.b.len);
		cm_buf_str(&b, ",");
	}
	cm_buf_free(&ex->out.b);
	if (ex->err.b.len) {
		cm_buf_str(&b, "\"" CM_RESP_STDERR "\":");
		cm_buf_base64(&b, (unsigned char *)ex->err.b.p, ex->err.b.len);
		cm_buf_str(&b, ",");
	}
	cm_buf_free(&ex->err.b);
	if (ex->out.truncated || ex->err.truncated)
		cm_buf_str(&b, "\"" CM_RESP_TRUNCATED "\":true,");
	cm_buf_printf(&b, "\"" CM_RESP_EXIT_CODE "\":%d}", code);
	reply(ex->conn, &b);
}

static void exec_complete(struct execop *ex)
{
	if (ex->stream && ex->conn) {
		char line[64];
		int n = snprintf(line, sizeof(line), "{\"" CM_RESP_EXIT_CODE "\":%d}\n", exit_code(ex->wstatus));
		struct conn *conn = ex->conn;
		ex->conn = NULL;
		conn_send(conn, line, (size_t)n);
		conn_finish(conn);
	} else if (ex->conn && ex->timed_out)
		reply_err(ex->conn, CM_E_DEADLINE_EXCEEDED, "command in container %s timed out after %lldms", ex->id,
			  (long long)ex->timeout_ms);
	else if (ex->conn)
		exec_reply(ex);
	exec_remove(ex);
	/* The output buffers were large: give the memory back. */
	malloc_trim(0);
}

static void exec_maybe_complete(struct execop *ex)
{
	if (ex->reaped && ex->out.fd < 0 && ex->err.fd < 0)
		exec_complete(ex);
}

void exec_on_capture(struct watch *w, uint32_t ev)
{
	struct capture *k = (struct capture *)w;
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
			n = read(k->fd, cm_rbuf, sizeof(cm_rbuf));
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

static void exec_started(struct helper *h, struct conn *conn, void *arg, struct hres *r)
{
	(void)h;
	(void)conn;
	struct execop *ex = arg;
	if (r->err) {
		reply_raw_error(ex->conn, r->err, r->errlen);
		ex->conn = NULL;
		exec_remove(ex);
		return;
	}
	ex->pid = (pid_t)r->pid;
	ex->started = 1;
	/* A direct exec may have ended already (r->reaped): its pid is free
	 * and must not be signalled. */
	if (!r->reaped) {
		if (ex->timeout_ms > 0)
			ex->kill_at = cm_now_ms() + ex->timeout_ms;
		if (ex->conn == NULL) {
			kill(ex->pid, SIGKILL);
			return;
		}
	}
	if (ex->stream && ex->conn) {
		if (ex->ngive == 0 && r->fd >= 0) {
			ex->give[ex->ngive++] = r->fd; /* the terminal */
			r->fd = -1;
		}
		struct cm_buf b = {0};
		cm_buf_printf(&b, "{\"" CM_RESP_PID "\":%d}", (int)ex->pid);
		reply_keep(ex->conn, &b, ex->give, ex->ngive);
		ex->ngive = 0;
	}
	if (r->reaped)
		exec_on_exit(ex->pid, r->wstatus);
}

/* start_process starts the exec's process: by the monitor itself from
 * the container's exec template (xexec.c), or by a helper (a TTY, or a
 * container without a template). 0, or -1 with errno. */
static int start_process(struct req *r, const int *io, struct execop *ex)
{
	if (!r->tty) {
		int d = xexec_spawn(r->id, r->process, r->process_len, io, exec_started, ex);
		if (d != 0)
			return d > 0 ? 0 : -1;
	}
	const char *extra[] = {r->tty ? "--tty" : NULL, NULL};
	return helper_spawn(H_EXEC, r->id, extra, r->process, r->process_len, io, NULL, exec_started, ex) ? 0 : -1;
}

static int mkpipe(int p[2])
{
	if (pipe2(p, O_CLOEXEC) < 0)
		return -1;
	fcntl(p[0], F_SETFL, O_NONBLOCK);
	return 0;
}

void op_exec_sync(struct conn *conn, struct req *r)
{
	if (!ctr_exec_ready(conn, r->id))
		return;
	struct execop *ex = calloc(1, sizeof(*ex));
	if (ex == NULL)
		return reply_err(conn, CM_E_RESOURCE_EXHAUSTED, "out of memory");
	ex->w.kind = K_EXEC;
	capture_init(&ex->out, ex);
	capture_init(&ex->err, ex);
	ex->id = strdup(r->id);
	ex->conn = conn;
	if (r->timeout > 0)
		ex->timeout_ms = r->timeout / 1000000 + (r->timeout % 1000000 != 0);
	int po[2] = {-1, -1}, pe[2] = {-1, -1};
	if (ex->id == NULL || mkpipe(po) < 0 || mkpipe(pe) < 0) {
		reply_err(conn, errno_class(errno), "pipes: %s", strerror(errno));
		goto fail;
	}
	int io[3] = {-1, po[1], pe[1]};
	/* The callback answers the exec's own conn (cleared if it goes). */
	if (start_process(r, io, ex) < 0) {
		reply_err(conn, errno_class(errno), "starting the exec: %s", strerror(errno));
		goto fail;
	}
	close(po[1]);
	close(pe[1]);
	ex->out.fd = po[0];
	ex->err.fd = pe[0];
	ep_add(ex->out.fd, &ex->out.w, EPOLLIN);
	ep_add(ex->err.fd, &ex->err.w, EPOLLIN);
	ex->next = execs;
	execs = ex;
	return;
fail:
	for (int i = 0; i < 2; i++) {
		if (po[i] >= 0)
			close(po[i]);
		if (pe[i] >= 0)
			close(pe[i]);
	}
	free(ex->id);
	free(ex);
}

/* op_exec starts a process whose stdio the client holds (see above). */
void op_exec(struct conn *conn, struct req *r)
{
	if (!ctr_exec_ready(conn, r->id))
		return;
	struct execop *ex = calloc(1, sizeof(*ex));
	if (ex == NULL || (ex->id = strdup(r->id)) == NULL) {
		free(ex);
		return reply_err(conn, CM_E_RESOURCE_EXHAUSTED, "out of memory");
	}
	ex->w.kind = K_EXEC;
	capture_init(&ex->out, ex);
	capture_init(&ex->err, ex);
	ex->conn = conn;
	ex->stream = 1;
	int io[3] = {-1, -1, -1};
	if (!r->tty) {
		int p[3][2] = {{-1, -1}, {-1, -1}, {-1, -1}};
		for (int i = r->in ? 0 : 1; i < 3; i++) {
			if (pipe2(p[i], O_CLOEXEC) < 0) {
				reply_err(conn, errno_class(errno), "pipes: %s", strerror(errno));
				for (int k = 0; k < 3; k++)
					for (int e = 0; e < 2; e++)
						if (p[k][e] >= 0)
							close(p[k][e]);
				return exec_free(&ex->w);
			}
			/* The process reads stdin's read end, writes the others'
			 * write ends; the client gets the other ends. */
			io[i] = p[i][i == 0 ? 0 : 1];
			ex->give[ex->ngive++] = p[i][i == 0 ? 1 : 0];
		}
	}
	int started = start_process(r, r->tty ? NULL : io, ex);
	int e = errno;
	for (int i = 0; i < 3; i++)
		if (io[i] >= 0)
			close(io[i]);
	if (started < 0) {
		reply_err(conn, errno_class(e), "starting the exec: %s", strerror(e));
		return exec_free(&ex->w);
	}
	ex->next = execs;
	execs = ex;
}

void exec_container_exited(const char *id)
{
	for (struct execop *ex = execs; ex; ex = ex->next)
		if (ex->started && !ex->reaped && strcmp(ex->id, id) == 0) {
			cm_log(CM_DEBUG, "container %s exited: killing its process %d", id, (int)ex->pid);
			kill(ex->pid, SIGKILL);
		}
}

int exec_kill_all(void)
{
	int n = 0;
	for (struct execop *ex = execs; ex; ex = ex->next)
		if (ex->started && !ex->reaped) {
			kill(ex->pid, SIGKILL);
			n++;
		}
	return n;
}

/* exec_conn_gone: the client went away; its command is killed. */
void exec_conn_gone(struct conn *c)
{
	for (struct execop *ex = execs; ex; ex = ex->next)
		if (ex->conn == c) {
			ex->conn = NULL;
			if (ex->started && !ex->reaped) {
				cm_log(CM_DEBUG, "exec in %s: the client went away: killing %d", ex->id, (int)ex->pid);
				kill(ex->pid, SIGKILL);
			}
		}
}

int exec_on_exit(pid_t pid, int st)
{
	for (struct execop *ex = execs; ex; ex = ex->next)
		if (ex->started && ex->pid == pid && !ex->reaped) {
			ex->reaped = 1;
			ex->wstatus = st;
			ex->kill_at = 0;
			ex->drain_until = cm_now_ms() + EXEC_DRAIN_MS;
			exec_maybe_complete(ex);
			return 1;
		}
	return 0;
}

int64_t exec_next_deadline(void)
{
	int64_t t = 0;
	for (struct execop *ex = execs; ex; ex = ex->next) {
		t = earliest(t, ex->kill_at);
		if (ex->reaped)
			t = earliest(t, ex->drain_until);
	}
	return t;
}

void exec_timers(int64_t now)
{
	for (struct execop *ex = execs, *next; ex; ex = next) {
		next = ex->next;
		if (ex->kill_at && now >= ex->kill_at) {
			ex->kill_at = 0;
			ex->timed_out = 1;
			kill(ex->pid, SIGKILL);
		}
		if (ex->reaped && now >= ex->drain_until)
			exec_complete(ex);
	}
}
