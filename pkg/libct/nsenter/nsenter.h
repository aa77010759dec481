/* nsenter.h: what the C stage's files share. */
#ifndef SHIM_NSENTER_H
#define SHIM_NSENTER_H

#include <stddef.h>

/* shim_write_full and shim_read_full write and read all of len bytes
 * (EINTR retried): 0, or -1 with errno (EPIPE: end of file). */
int shim_write_full(int fd, const void *buf, size_t len);
int shim_read_full(int fd, void *buf, size_t len);

/* shim_cinit runs the C init's plan read from the init pipe, with the
 * exec fifo (-1: none); it never returns (cinit.c). */
void shim_cinit(int pipefd, int fifo) __attribute__((noreturn));

#endif
