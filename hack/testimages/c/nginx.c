/*
 * nginx: a stand-in for the nginx master process in shim's test images.
 *
 * The CRI validation tests look at the nginx image from the outside only:
 *   - /proc/<pid>/cmdline of the master contains "master process";
 *   - its comm is "nginx", so `pidof nginx` finds it;
 *   - /var/run/nginx.pid holds the master's pid;
 *   - GET / answers 200 on the port of the first "listen N;" line of
 *     /etc/nginx/conf.d/default.conf (80 when there is none).
 * The HTTP work is done by busybox httpd, run as a foreground child.
 *
 * To get the title into /proc/self/cmdline the program re-executes itself
 * once with argv[0] = "nginx: master process <original argv>" (the executed
 * path keeps comm "nginx"). SIGTERM, SIGINT and SIGQUIT stop the child and
 * exit 0; if the child dies on its own the master exits with its status.
 * As PID 1 it also reaps every orphan re-parented to it.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

#define TITLE_PREFIX "nginx: master process "
#define CONF_PATH "/etc/nginx/conf.d/default.conf"
#define PID_PATH "/var/run/nginx.pid"
#define DOC_ROOT "/usr/share/nginx/html"
#define DEFAULT_PORT 80
#define MAX_CONF (64 * 1024)

/* retitle re-executes the program with the master-process title as argv[0]. */
static void retitle(int argc, char **argv)
{
	char self[4096];
	ssize_t n = readlink("/proc/self/exe", self, sizeof(self) - 1);
	size_t len = sizeof(TITLE_PREFIX);
	char *title;
	int i;

	if (n <= 0 || (size_t)n >= sizeof(self) - 1)
		strcpy(self, "/usr/sbin/nginx");
	else
		self[n] = '\0';

	for (i = 0; i < argc; i++)
		len += strlen(argv[i]) + 1;
	title = malloc(len);
	if (title == NULL)
		return;
	strcpy(title, TITLE_PREFIX);
	for (i = 0; i < argc; i++) {
		if (i > 0)
			strcat(title, " ");
		strcat(title, argv[i]);
	}
	char *nargv[] = {title, NULL};
	execv(self, nargv);
	perror("nginx: re-exec with title");
	free(title);
	/* Carry on untitled: serving still works. */
}

/* listen_port returns the port of the first "listen" directive in CONF_PATH. */
static int listen_port(void)
{
	static char buf[MAX_CONF + 1];
	FILE *f = fopen(CONF_PATH, "r");
	size_t n;
	char *p;

	if (f == NULL)
		return DEFAULT_PORT;
	n = fread(buf, 1, MAX_CONF, f);
	fclose(f);
	buf[n] = '\0';

	for (p = strstr(buf, "listen"); p != NULL; p = strstr(p + 1, "listen")) {
		char tok[128];
		size_t t = 0;
		char *colon;
		long port;

		if (p != buf && p[-1] != ' ' && p[-1] != '\t' && p[-1] != '\n')
			continue;
		p += strlen("listen");
		if (*p != ' ' && *p != '\t')
			continue;
		while (*p == ' ' || *p == '\t')
			p++;
		while (*p && *p != ';' && *p != ' ' && *p != '\t' && *p != '\n' && t < sizeof(tok) - 1)
			tok[t++] = *p++;
		tok[t] = '\0';
		colon = strrchr(tok, ':');
		port = strtol(colon ? colon + 1 : tok, NULL, 10);
		if (port > 0 && port < 65536)
			return (int)port;
	}
	return DEFAULT_PORT;
}

static void write_pidfile(void)
{
	FILE *f;

	if (mkdir("/var/run", 0755) != 0 && errno != EEXIST)
		perror("nginx: mkdir /var/run");
	f = fopen(PID_PATH, "w");
	if (f == NULL) {
		perror("nginx: " PID_PATH);
		return;
	}
	fprintf(f, "%d\n", (int)getpid());
	fclose(f);
}

int main(int argc, char **argv)
{
	sigset_t set;
	char port[16];
	pid_t child;
	int stopping = 0;

	if (argc < 1 || strncmp(argv[0], TITLE_PREFIX, strlen(TITLE_PREFIX)) != 0)
		retitle(argc, argv);

	snprintf(port, sizeof(port), "%d", listen_port());

	sigemptyset(&set);
	sigaddset(&set, SIGTERM);
	sigaddset(&set, SIGINT);
	sigaddset(&set, SIGQUIT);
	sigaddset(&set, SIGHUP);
	sigaddset(&set, SIGCHLD);
	if (sigprocmask(SIG_BLOCK, &set, NULL) != 0) {
		perror("nginx: sigprocmask");
		return 1;
	}

	write_pidfile();

	child = fork();
	if (child < 0) {
		perror("nginx: fork");
		return 1;
	}
	if (child == 0) {
		sigprocmask(SIG_UNBLOCK, &set, NULL);
		execl("/bin/httpd", "httpd", "-f", "-p", port, "-h", DOC_ROOT, (char *)NULL);
		execlp("httpd", "httpd", "-f", "-p", port, "-h", DOC_ROOT, (char *)NULL);
		perror("nginx: exec httpd");
		_exit(127);
	}
	printf("nginx: master process %d started, worker %d serving %s on port %s\n",
	       (int)getpid(), (int)child, DOC_ROOT, port);
	fflush(stdout);

	for (;;) {
		siginfo_t info;
		int sig = sigwaitinfo(&set, &info);
		int status;
		pid_t pid;

		if (sig < 0) {
			if (errno == EINTR)
				continue;
			perror("nginx: sigwaitinfo");
			kill(child, SIGKILL);
			return 1;
		}
		switch (sig) {
		case SIGTERM:
		case SIGINT:
		case SIGQUIT:
			if (!stopping) {
				stopping = 1;
				printf("nginx: signal %d received, stopping worker %d\n", sig, (int)child);
				fflush(stdout);
				kill(child, SIGTERM);
			}
			break;
		case SIGCHLD:
			while ((pid = waitpid(-1, &status, WNOHANG)) > 0) {
				if (pid != child)
					continue;
				unlink(PID_PATH);
				if (stopping)
					return 0;
				if (WIFEXITED(status)) {
					fprintf(stderr, "nginx: worker %d exited with status %d\n", (int)pid, WEXITSTATUS(status));
					return WEXITSTATUS(status);
				}
				fprintf(stderr, "nginx: worker %d killed by signal %d\n", (int)pid, WTERMSIG(status));
				return 128 + WTERMSIG(status);
			}
			break;
		default:
			/* SIGHUP: nginx reloads its configuration; nothing to reload here. */
			break;
		}
	}
}
