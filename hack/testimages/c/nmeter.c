/*
 * nmeter: the part of busybox's nmeter applet the Kubernetes node e2e suite
 * uses (Debian's busybox is built without it). The container lifecycle
 * specs time-stamp their log lines with
 *
 *   date -u +%FT$(nmeter -d0 '%3t' | head -n1)Z
 *
 *   nmeter [-d MSEC] FORMAT
 *
 * prints FORMAT, then a newline, every MSEC milliseconds (default 1000; 0:
 * with no pause) until its output is closed. In FORMAT, %[N]t is the local
 * time as HH:MM:SS with N (0-6) digits of the second's fraction, %% is a
 * percent sign, other text is copied. busybox's system counters (%c, %m,
 * %n, ...) are not implemented: they are refused (exit 1).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static void usage(void)
{
	fprintf(stderr, "usage: nmeter [-d MSEC] FORMAT (only %%[N]t and %%%% are supported)\n");
	exit(1);
}

/* check refuses a format with anything but %[N]t and %%. */
static void check(const char *f)
{
	for (; *f; f++) {
		if (*f != '%')
			continue;
		f++;
		if (*f == '%')
			continue;
		if (*f >= '0' && *f <= '6')
			f++;
		if (*f != 't') {
			fprintf(stderr, "nmeter: %%%c is not supported by this nmeter (only %%[N]t)\n", *f ? *f : ' ');
			exit(1);
		}
	}
}

static int put(const char *f)
{
	struct timespec ts;
	struct tm tm;
	char line[4096];
	size_t n = 0;
	clock_gettime(CLOCK_REALTIME, &ts);
	localtime_r(&ts.tv_sec, &tm);
	for (; *f && n < sizeof(line) - 32; f++) {
		if (*f != '%') {
			line[n++] = *f;
			continue;
		}
		f++;
		if (*f == '%') {
			line[n++] = '%';
			continue;
		}
		int prec = 0;
		if (*f >= '0' && *f <= '6')
			prec = *f++ - '0';
		n += sprintf(line + n, "%02d:%02d:%02d", tm.tm_hour, tm.tm_min, tm.tm_sec);
		if (prec > 0) {
			long frac = ts.tv_nsec;
			for (int i = prec; i < 9; i++)
				frac /= 10;
			n += sprintf(line + n, ".%0*ld", prec, frac);
		}
	}
	line[n++] = '\n';
	for (size_t off = 0; off < n;) {
		ssize_t w = write(1, line + off, n - off);
		if (w < 0) {
			if (errno == EINTR)
				continue;
			return -1;
		}
		off += (size_t)w;
	}
	return 0;
}

int main(int argc, char **argv)
{
	long delay = 1000;
	int opt;
	while ((opt = getopt(argc, argv, "d:")) != -1) {
		char *end;
		switch (opt) {
		case 'd':
			delay = strtol(optarg, &end, 10);
			if (*optarg == '\0' || *end != '\0' || delay < 0)
				usage();
			break;
		default:
			usage();
		}
	}
	if (optind != argc - 1)
		usage();
	check(argv[optind]);
	/* A closed reader ends us quietly, as with busybox (SIGPIPE). */
	signal(SIGPIPE, SIG_DFL);
	for (;;) {
		if (put(argv[optind]) < 0)
			return errno == EPIPE ? 0 : 1;
		if (delay > 0) {
			struct timespec d = {delay / 1000, (delay % 1000) * 1000000L};
			while (nanosleep(&d, &d) < 0 && errno == EINTR)
				;
		}
	}
}
