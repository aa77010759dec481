/*
 * pause: the infra process of a pod, for shim's test images.
 *
 * It does nothing but wait: as PID 1 of a pod it reaps every child that is
 * re-parented to it, and it exits 0 on SIGTERM or SIGINT. The signals are
 * blocked and taken with sigwaitinfo, so there is no handler to race with and
 * the PID-namespace rule that drops default-action signals sent to init does
 * not apply (blocked signals are never discarded).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#define PAUSE_VERSION "3.9-shim"

static void reap(void)
{
	while (waitpid(-1, NULL, WNOHANG) > 0)
		;
}

int main(int argc, char **argv)
{
	sigset_t set;
	siginfo_t info;

	if (argc > 1 && (strcmp(argv[1], "-v") == 0 || strcmp(argv[1], "--version") == 0)) {
		printf("pause version %s\n", PAUSE_VERSION);
		return 0;
	}
	if (getpid() != 1)
		fprintf(stderr, "pause: warning: not running as PID 1\n");

	sigemptyset(&set);
	sigaddset(&set, SIGTERM);
	sigaddset(&set, SIGINT);
	sigaddset(&set, SIGCHLD);
	if (sigprocmask(SIG_BLOCK, &set, NULL) != 0) {
		perror("pause: sigprocmask");
		return 1;
	}
	/* Children that exited before the mask was set. */
	reap();

	for (;;) {
		int sig = sigwaitinfo(&set, &info);
		if (sig < 0) {
			if (errno == EINTR)
				continue;
			perror("pause: sigwaitinfo");
			return 1;
		}
		switch (sig) {
		case SIGCHLD:
			reap();
			break;
		case SIGTERM:
		case SIGINT:
			fprintf(stderr, "pause: shutting down on signal %d\n", sig);
			return 0;
		}
	}
}
