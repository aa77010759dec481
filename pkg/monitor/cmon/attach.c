/* attach.c: connections attached to a container's output.
 *
 * An attach (op_attach in ctr.c) keeps its connection; what the container
 * writes goes to its CRI log and, in frames (CM_FRAME_*), to every
 * attacher that asked for that stream. An attacher that falls more than
 * a few MB behind is dropped rather than slowing the container or its
 * log. The attachments end when the container's output does (it exited).
 * Stdin and the terminal size go from the client to the container
 * directly, through an fd passed at the attach. */
#include "mon.h"

#include <stdlib.h>

struct attacher {
	struct attacher *next;
	struct conn *conn;
	struct ctr *c;
	int out, err; /* the streams it wants */
};

static struct attacher *attachers;

int attach_add(struct conn *conn, struct ctr *c, int out, int err)
{
	struct attacher *a = calloc(1, sizeof(*a));
	if (a == NULL)
		return -1;
	a->conn = conn;
	a->c = c;
	a->out = out;
	a->err = err;
	a->next = attachers;
	attachers = a;
	return 0;
}

static void unlink_attacher(struct attacher *a)
{
	for (struct attacher **pp = &attachers; *pp; pp = &(*pp)->next)
		if (*pp == a) {
			*pp = a->next;
			break;
		}
	free(a);
}

void attach_output(struct ctr *c, int stream, const char *p, size_t n)
{
	for (struct attacher *a = attachers, *next; a; a = next) {
		next = a->next;
		if (a->c != c || !(stream == CM_FRAME_STDOUT ? a->out : a->err))
			continue;
		/* A failed send may close the connection, which frees a
		 * (attach_conn_gone); the conn itself lives on until the end
		 * of the loop's turn (bury). */
		struct conn *conn = a->conn;
		if (conn_send_frame(conn, stream, p, n) < 0 && !conn_closed(conn)) {
			cm_log(CM_WARN, "dropping an attach that does not read the container's output");
			conn_drop(conn);
		}
	}
}

void attach_end(struct ctr *c)
{
	for (struct attacher *a = attachers, *next; a; a = next) {
		next = a->next;
		if (a->c != c)
			continue;
		struct conn *conn = a->conn;
		unlink_attacher(a);
		conn_finish(conn);
	}
}

void attach_conn_gone(struct conn *conn)
{
	for (struct attacher *a = attachers, *next; a; a = next) {
		next = a->next;
		if (a->conn == conn)
			unlink_attacher(a);
	}
}
