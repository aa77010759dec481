/*
 * pgrep: look up processes by name, for shim's busybox test image (Debian's
 * busybox has no pgrep applet). It follows procps pgrep for the options the
 * tests and people use:
 *
 *   pgrep [-flaxvnoc] [-d DELIM] PATTERN
 *
 *   PATTERN  extended regular expression matched against the process name
 *            (comm), or against the full command line with -f
 *   -f       match the full command line
 *   -x       the pattern must match the whole name (or command line)
 *   -l       print the name next to the pid (the command line with -f)
 *   -a       print the full command line next to the pid
 *   -v       select the processes that do not match
 *   -n / -o  print only the newest / oldest match (highest / lowest start time)
 *   -c       print the number of matches instead of the pids
 *   -d DELIM separator between pids (default newline)
 *
 * Exit status: 0 one or more processes matched, 1 none, 2 usage error,
 * 3 fatal error. pgrep never reports itself.
 */
#define _GNU_SOURCE
#include <ctype.h>
#include <dirent.h>
#include <fcntl.h>
#include <regex.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define MAX_CMDLINE 4096

struct proc {
	long pid;
	unsigned long long start;
	char comm[64];
	char cmdline[MAX_CMDLINE];
};

static int usage(void)
{
	fprintf(stderr, "usage: pgrep [-flaxvnoc] [-d DELIM] PATTERN\n");
	return 2;
}

/* read_small reads at most len-1 bytes of path into buf and NUL-terminates. */
static ssize_t read_small(const char *path, char *buf, size_t len)
{
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	ssize_t n, total = 0;

	if (fd < 0)
		return -1;
	while ((size_t)total < len - 1) {
		n = read(fd, buf + total, len - 1 - (size_t)total);
		if (n <= 0)
			break;
		total += n;
	}
	close(fd);
	buf[total] = '\0';
	return total;
}

/* load fills p from /proc/<pid>; it returns 0 when the process is gone. */
static int load(long pid, struct proc *p)
{
	char path[64], stat[1024];
	char *open_paren, *close_paren;
	ssize_t n, i;
	size_t clen;

	p->pid = pid;
	snprintf(path, sizeof(path), "/proc/%ld/stat", pid);
	if (read_small(path, stat, sizeof(stat)) <= 0)
		return 0;
	open_paren = strchr(stat, '(');
	close_paren = strrchr(stat, ')');
	if (open_paren == NULL || close_paren == NULL || close_paren < open_paren)
		return 0;
	clen = (size_t)(close_paren - open_paren - 1);
	if (clen >= sizeof(p->comm))
		clen = sizeof(p->comm) - 1;
	memcpy(p->comm, open_paren + 1, clen);
	p->comm[clen] = '\0';

	/* Field 22 (starttime); fields after ')' start at 3 (state). */
	p->start = 0;
	{
		char *f = close_paren + 2;
		int field;
		for (field = 3; field < 22 && f != NULL; field++) {
			f = strchr(f, ' ');
			if (f != NULL)
				f++;
		}
		if (f != NULL)
			p->start = strtoull(f, NULL, 10);
	}

	snprintf(path, sizeof(path), "/proc/%ld/cmdline", pid);
	n = read_small(path, p->cmdline, sizeof(p->cmdline));
	if (n < 0)
		n = 0;
	while (n > 0 && p->cmdline[n - 1] == '\0')
		n--;
	for (i = 0; i < n; i++)
		if (p->cmdline[i] == '\0')
			p->cmdline[i] = ' ';
	p->cmdline[n] = '\0';
	return 1;
}

int main(int argc, char **argv)
{
	int full = 0, exact = 0, list_name = 0, list_full = 0, invert = 0;
	int newest = 0, oldest = 0, count = 0, opt, rc;
	const char *delim = "\n";
	char *pattern;
	regex_t re;
	DIR *dir;
	struct dirent *de;
	struct proc cur, best;
	int have_best = 0;
	long matches = 0;
	long self = (long)getpid();

	while ((opt = getopt(argc, argv, "flaxvnocd:")) != -1) {
		switch (opt) {
		case 'f': full = 1; break;
		case 'l': list_name = 1; break;
		case 'a': list_full = 1; break;
		case 'x': exact = 1; break;
		case 'v': invert = 1; break;
		case 'n': newest = 1; break;
		case 'o': oldest = 1; break;
		case 'c': count = 1; break;
		case 'd': delim = optarg; break;
		default: return usage();
		}
	}
	if (optind != argc - 1 || (newest && oldest))
		return usage();

	if (exact) {
		size_t len = strlen(argv[optind]) + 5;
		pattern = malloc(len);
		if (pattern == NULL)
			return 3;
		snprintf(pattern, len, "^(%s)$", argv[optind]);
	} else {
		pattern = argv[optind];
	}
	rc = regcomp(&re, pattern, REG_EXTENDED | REG_NOSUB);
	if (rc != 0) {
		char msg[256];
		regerror(rc, &re, msg, sizeof(msg));
		fprintf(stderr, "pgrep: invalid pattern %s: %s\n", argv[optind], msg);
		return 2;
	}

	dir = opendir("/proc");
	if (dir == NULL) {
		perror("pgrep: /proc");
		return 3;
	}
	while ((de = readdir(dir)) != NULL) {
		char *end;
		long pid = strtol(de->d_name, &end, 10);
		int hit;

		if (*end != '\0' || pid <= 0 || pid == self)
			continue;
		if (!load(pid, &cur))
			continue;
		/* Kernel threads have an empty command line; -f matches them by name. */
		hit = regexec(&re, (full && cur.cmdline[0]) ? cur.cmdline : cur.comm, 0, NULL, 0) == 0;
		if (hit == invert)
			continue;
		matches++;
		if (newest || oldest) {
			if (!have_best || (newest && cur.start >= best.start) || (oldest && cur.start < best.start)) {
				best = cur;
				have_best = 1;
			}
			continue;
		}
		if (count)
			continue;
		if (matches > 1)
			fputs(delim, stdout);
		if (list_full)
			printf("%ld %s", cur.pid, cur.cmdline[0] ? cur.cmdline : cur.comm);
		else if (list_name)
			printf("%ld %s", cur.pid, full && cur.cmdline[0] ? cur.cmdline : cur.comm);
		else
			printf("%ld", cur.pid);
	}
	closedir(dir);

	if (count) {
		printf("%ld\n", (newest || oldest) ? (long)have_best : matches);
	} else if (newest || oldest) {
		if (have_best) {
			if (list_full)
				printf("%ld %s\n", best.pid, best.cmdline[0] ? best.cmdline : best.comm);
			else if (list_name)
				printf("%ld %s\n", best.pid, full && best.cmdline[0] ? best.cmdline : best.comm);
			else
				printf("%ld\n", best.pid);
		}
	} else if (matches > 0) {
		fputs("\n", stdout);
	}
	return matches > 0 ? 0 : 1;
}
