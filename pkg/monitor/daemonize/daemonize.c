#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* Runs before the Go runtime: single-threaded, so fork is safe. */
void shim_daemonize(void)
{
	const char *v = getenv("_SHIM_DAEMONIZE");
	pid_t pid;

	if (v == NULL || strcmp(v, "1") != 0)
		return;
	unsetenv("_SHIM_DAEMONIZE");
	pid = fork();
	if (pid < 0)
		_exit(111);
	if (pid > 0)
		_exit(0);
	setsid();
}
