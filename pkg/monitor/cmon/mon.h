/* mon.h: what the files of the monitor share (private to the monitor).
 *
 *   main.c    start-up, the epoll loop, timers, signals and exits, shutdown
 *   conn.c    connections: requests, replies, event subscribers
 *   helper.c  monitor-helper processes (pkg/monitor/helper.go)
 *   ctr.c     containers: their stdio, CRI logs, exits; attach and TTY
 *   exitrec.c the exit record of a container (exit.json)
 *   attach.c  connections attached to a container's output
 *   exec.c    processes run in a container: ExecSync and Exec
 *   xexec.c   an exec's or a container's init started from a template
 *   infra.c   the infra process of a pod that shares its PID namespace
 *   crilog.c  the CRI log format;  util.c  buffers, JSON, time, logging
 *
 * Each file keeps its objects (and their list) to itself; the others see
 * them as opaque pointers and call the functions declared here. The names
 * of the protocol come from protocol.h, generated from the Go definitions.
 */
#ifndef SHIM_CMON_MON_H
#define SHIM_CMON_MON_H

#include "cmon.h"
#include "protocol.h"

#define MAX_ID 1024
#define MAX_PATH 4096
#define READ_CHUNK (16 << 10)

/* ---- the loop (main.c) ----
 * Everything epoll reports on starts with a struct watch. Objects are
 * never freed while the events of one epoll_wait are being handled: they
 * are buried (marked dead, their fds closed by their owner) and freed at
 * the end of the round by their file's free function. */
enum kind { K_LISTEN, K_SIGNAL, K_CONN, K_STREAM, K_CAPTURE, K_HELPER, K_CTR, K_EXEC, K_XEXEC };

struct watch {
	enum kind kind;
	int dead;
	struct watch *grave;
};

/* The monitor's flags (`shim monitor --pod P --dir D --runtime-root R
 * [--runtime-binary B] [--init-binary I] [--log-level L]`) and the pod
 * directory's fd. init is the binary a direct create or exec runs as the
 * container init (NULL: the monitor's own). */
struct cm_config {
	char *pod, *dir, *root, *binary, *init, *level;
	int dirfd;
};
extern struct cm_config cm_cfg;

/* The listening socket (main.c makes it, conn.c accepts on it). */
extern int cm_listen_fd;
extern struct watch cm_listen_watch;

/* The memory of the monitor's command line (its arguments, one after
 * the other): /proc/<pid>/cmdline reads it. NULL when unknown. */
extern char *cm_args;
extern size_t cm_args_len;

/* cm_rbuf is scratch space for a read whose bytes are used at once. */
extern char cm_rbuf[READ_CHUNK];

void bury(struct watch *w);
/* closefd removes fd from epoll, closes it and sets it to -1. */
void closefd(int *fd);
int ep_add(int fd, struct watch *w, uint32_t ev);
void ep_del(int fd);
void ep_mod(int fd, struct watch *w, uint32_t ev);
/* earliest of two deadlines (ms, CLOCK_MONOTONIC); 0 is none. */
int64_t earliest(int64_t a, int64_t b);
/* errno_class is the error class (CM_E_*) of an errno value: errdefs's map
 * (cm_errno_class, generated), internal for the errnos it lacks. */
const char *errno_class(int e);
/* close_from closes every fd >= from but keep. */
void close_from(int from, int keep);

int shutting_down(void);
/* shutdown_check ends the monitor once a shutdown has no container left. */
void shutdown_check(void);

/* ---- requests and connections (conn.c) ---- */
struct conn;

/* A request line: the fields the monitor reads (protocol.h names them). */
struct req {
	unsigned seen; /* 1 << CM_REQ_x for each field read */
	char *op, *id, *bundle, *log_path;
	int in, in_once, tty, direct, out, err, all, force;
	int64_t signal, timeout;
	const char *process, *resources; /* raw JSON, inside the request line */
	size_t process_len, resources_len;
};

int req_parse(const char *line, size_t len, struct req *r);
void req_free(struct req *r);
/* op_known reports whether the monitor serves op. */
int op_known(const char *op);

/* Replies: one JSON line, then the connection closes. A NULL conn (the
 * client went away) is fine. */
void reply(struct conn *c, struct cm_buf *b);
void reply_ok(struct conn *c);
void reply_err(struct conn *c, const char *cls, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
/* reply_keep answers with b and the fds (closed here once sent), and
 * keeps the connection as a stream. */
void reply_keep(struct conn *c, struct cm_buf *b, const int *fds, int nfds);
/* conn_send queues bytes on a stream; -1 when the client does not read
 * fast enough (nothing queued) or the stream ends. conn_send_frame sends
 * an attach frame. */
int conn_send(struct conn *c, const void *p, size_t n);
int conn_send_frame(struct conn *c, int stream, const char *p, size_t n);
/* conn_finish closes a stream once what was queued is sent. */
void conn_finish(struct conn *c);
/* conn_drop ends a connection now, as if the client went away. */
void conn_drop(struct conn *c);
/* conn_closed tells whether a connection has ended (it stays readable
 * until the end of the event loop's turn). */
int conn_closed(const struct conn *c);
/* reply_raw_error answers with err, the JSON of an errdefs.Wire. */
void reply_raw_error(struct conn *c, const char *err, size_t len);
/* broadcast sends an event line to every subscriber. */
void broadcast(struct cm_buf *ev);
/* conn_wait_shutdown marks c as waiting for the end of the shutdown;
 * conn_shutdown_answer answers every such connection. */
void conn_wait_shutdown(struct conn *c);
void conn_shutdown_answer(int ok, int waited_ms);

void conn_on_listen(void);
void conn_on_event(struct watch *w, uint32_t ev);
int64_t conn_next_deadline(void);
void conn_timers(int64_t now);
void conn_free(struct watch *w);

/* ---- helpers (helper.c) ---- */
enum hop { H_CREATE, H_START, H_KILL, H_DELETE, H_EXEC, H_UPDATE };

/* A helper's result: {"pid":N,"oomFile":"...","error":{...}}. err is the
 * raw JSON of the error (a made-up internal one when the helper failed
 * without a result); lost is set then. */
struct hres {
	int64_t pid;
	char *oom; /* taken by the callback, or freed after it */
	const char *err;
	size_t errlen;
	int lost;
	int64_t helper_ns; /* from the helper's fork (or resume) to its result */
	int64_t op_ns;     /* the operation's share, as the helper measured it */
	int fd; /* the pty master of a --tty process; -1, or taken by the callback (set to -1), or closed after it */
	/* A direct exec (xexec.c) whose process already exited and was
	 * reaped: its wait status. The pid must not be signalled. */
	int reaped, wstatus;
};

struct helper;
/* helper_done gets the result of a helper, for conn (NULL when the client
 * went away) and the arg given to helper_spawn. */
typedef void (*helper_done)(struct helper *h, struct conn *conn, void *arg, struct hres *r);

/* helper_spawn forks and executes `<exe> monitor-helper` for op on id.
 * data (a raw JSON value) goes to it in a memfd; io are the stdin (read
 * end), stdout and stderr (write ends) of the process it starts, or -1.
 * NULL with errno when it could not start. */
struct helper *helper_spawn(enum hop op, const char *id, const char **extra, const char *data, size_t dlen,
			    const int io[3], struct conn *conn, helper_done done, void *arg);
/* helper_run is helper_spawn for a request: its failure is the answer. */
void helper_run(struct conn *conn, enum hop op, const char *id, const char **extra, const char *data, size_t dlen,
		helper_done done, void *arg);
/* helper_park keeps a create helper waiting (until PARK_MS) to do the
 * start too; *slot points to it meanwhile and is cleared on release. */
void helper_park(struct helper *h, struct helper **slot);
/* helper_resume hands a parked helper the start: 0, or -1 when it is
 * gone (it is released). */
int helper_resume(struct helper *h, struct conn *conn, helper_done done, void *arg);
/* helper_release ends the wait of a parked helper: it exits, and the
 * process it started becomes our child. */
void helper_release(struct helper *h);
/* helper_unanswered: a resumed helper died before it answered anything
 * (for the callback of a lost result: the start never happened there). */
int helper_unanswered(const struct helper *h);
/* helper_id is the container a helper works on. */
const char *helper_id(const struct helper *h);
/* helper_poll_all reads the results helpers wrote before they died. */
void helper_poll_all(void);
void helper_conn_gone(struct conn *c);
int helper_on_exit(pid_t pid, int st);
void helper_on_event(struct watch *w, uint32_t ev);
int64_t helper_next_deadline(void);
void helper_timers(int64_t now);
void helper_free(struct watch *w);

/* ---- containers (ctr.c) ---- */
void op_create(struct conn *conn, struct req *r);
void op_start(struct conn *conn, struct req *r);
void op_kill(struct conn *conn, struct req *r);
void op_delete(struct conn *conn, struct req *r);
void op_update(struct conn *conn, struct req *r);
void op_reopen_log(struct conn *conn, struct req *r);
void op_state(struct conn *conn, struct req *r);
void op_attach(struct conn *conn, struct req *r);
void op_close_stdin(struct conn *conn, struct req *r);
/* ctr_known: container id is in the pod. */
int ctr_known(const char *id);
/* ctr_add_running adds a process the monitor started itself (the infra
 * process, infra.c) as a running container: it has no runtime state, so
 * kill and delete signal it directly. -1 when out of memory. */
int ctr_add_running(const char *id, const char *bundle, pid_t pid);
/* ---- the infra process (infra.c) ---- */
void op_infra(struct conn *conn, struct req *r);

/* ctr_exec_ready answers with an error and returns 0 unless container id
 * can run a new process. */
int ctr_exec_ready(struct conn *conn, const char *id);
/* ctr_gone: container id is not in the pod, or its init has exited or is
 * exiting. */
int ctr_gone(const char *id);
void ctr_shutdown_begin(void);
/* ctr_shutdown_step kills what is left at shutdown; the number left. */
int ctr_shutdown_step(void);
void ctr_conn_gone(struct conn *c);
int ctr_on_exit(pid_t pid, int st);
void ctr_on_stream(struct watch *w, uint32_t ev);
int64_t ctr_next_deadline(void);
void ctr_timers(int64_t now);
void ctr_free(struct watch *w);

/* ---- exit records (exitrec.c) ---- */
/* exitrec_json appends a monitor.ExitRecord. */
void exitrec_json(struct cm_buf *b, pid_t pid, int wstatus, const struct timespec *finished, int oom_killed);
/* exitrec_oom_kills reads the "oom_kill N" line of a memory.oom_control
 * (cgroup v1) or memory.events (v2) file; 0 when unknown. */
long long exitrec_oom_kills(const char *path);
/* exitrec_write writes rec to <bundle>/exit.json (temp file, rename). */
int exitrec_write(const char *bundle, struct cm_buf *rec);

/* ---- attach (attach.c): connections that get a container's output ---- */
struct ctr;
int attach_add(struct conn *conn, struct ctr *c, int out, int err);
/* attach_output sends output of c (CM_FRAME_STDOUT or _STDERR) to its
 * attachers; one that does not keep up is dropped. */
void attach_output(struct ctr *c, int stream, const char *p, size_t n);
/* attach_end ends the attachments of c once their output is sent. */
void attach_end(struct ctr *c);
void attach_conn_gone(struct conn *conn);

/* ---- exec (exec.c): ExecSync, and Exec (stdio held by the client) ---- */
void op_exec_sync(struct conn *conn, struct req *r);
void op_exec(struct conn *conn, struct req *r);
/* exec_container_exited kills what still runs in a container that exited. */
void exec_container_exited(const char *id);
/* exec_kill_all kills every running command; the number killed. */
int exec_kill_all(void);
void exec_conn_gone(struct conn *c);
int exec_on_exit(pid_t pid, int st);
void exec_on_capture(struct watch *w, uint32_t ev);
int64_t exec_next_deadline(void);
void exec_timers(int64_t now);
void exec_free(struct watch *w);

/* ---- direct exec and create (xexec.c): inits started without a helper ---- */
/* xexec_spawn starts the init of a process in container id from the
 * container's exec template (pkg/libct/exectmpl_linux.go), with io as for
 * helper_spawn; done gets the result as from a helper (h NULL). 1: it
 * runs; 0: the container has no template (or this monitor cannot use
 * it): use the helper; -1: it failed, errno set. */
int xexec_spawn(const char *id, const char *process, size_t plen, const int io[3], helper_done done, void *arg);
/* xcreate_spawn starts the init of container id from its create template
 * (pkg/libct/direct_linux.go) as xexec_spawn does; its result's fd is the
 * init pipe, for xstart_spawn. 1: it runs; 0: this monitor cannot start
 * an init itself; -1: it failed, errno set (ENOENT: no template). */
int xcreate_spawn(const char *id, const int io[3], struct conn *conn, helper_done done, void *arg);
/* xstart_spawn releases the init pid of container id created by
 * xcreate_spawn (sock: its init pipe, taken in any case); done gets the
 * result once it exec'd. 1, or -1 with errno. */
int xstart_spawn(const char *id, pid_t pid, int sock, struct conn *conn, helper_done done, void *arg);
void xexec_conn_gone(struct conn *c);
/* xexec_poll_all reads what the inits wrote, before children are reaped. */
void xexec_poll_all(void);
int xexec_on_exit(pid_t pid, int st);
void xexec_on_event(struct watch *w, uint32_t ev);
int64_t xexec_next_deadline(void);
void xexec_timers(int64_t now);
void xexec_free(struct watch *w);

/* ---- the shutdown op (main.c) and the events op (conn.c) ---- */
void op_shutdown(struct conn *conn, struct req *r);
void op_events(struct conn *conn, struct req *r);

#endif
