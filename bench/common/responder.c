/*
 * evapi responder in C, for the async round trip and the latency probe:
 * the same job as responder.py with less of its own CPU and latency (the
 * Python one's asyncio loop adds tens of microseconds per event, which the
 * latency probe would count against the server).
 *
 * For every netstring event {"event":"invite","tindex":N,"tlabel":N,...}
 * (N bare or quoted) it sends back {"tindex":N,"tlabel":N,"action":"reply"}
 * as a netstring, each N as it came;
 * the replies to the events of one read go out in one write.
 *
 * build: cc -O2 -o responder responder.c
 * usage: responder [-h 127.0.0.1] [-p 8448] [-t MAXSEC] [-i IDLE] [-n NAME]
 * output (one line at exit, as responder.py's):
 *   NAME events=N replies=N bad=N first_s=.. last_s=.. eof=0|1
 * Exits after IDLE seconds without events (once one arrived), MAXSEC
 * seconds, EOF or SIGTERM/SIGINT.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define BUFSZ (1 << 20)

static volatile sig_atomic_t stop_flag = 0;
static void on_sig(int s) { (void)s; stop_flag = 1; }

static double now_s(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	return ts.tv_sec + ts.tv_nsec / 1e9;
}

/* The value after `"key":` in p[0..n) when it is a whole number, bare
 * or quoted (the bench scripts quote theirs), copied as written into out
 * (so the answer carries it back in the same form); its length, or -1. */
static int field(const char *p, size_t n, const char *key, char *out, size_t cap)
{
	size_t kl = strlen(key);
	for (size_t i = 0; i + kl < n; i++) {
		if (memcmp(p + i, key, kl) != 0)
			continue;
		size_t j = i + kl;
		while (j < n && p[j] == ' ')
			j++;
		size_t start = j;
		int quoted = j < n && p[j] == '"';
		j += quoted;
		size_t d = j;
		while (j < n && p[j] >= '0' && p[j] <= '9')
			j++;
		if (j == d || (quoted && (j >= n || p[j++] != '"')) || j - start >= cap)
			return -1;
		memcpy(out, p + start, j - start);
		out[j - start] = 0;
		return (int)(j - start);
	}
	return -1;
}

static int write_all(int fd, const char *p, size_t n)
{
	while (n > 0) {
		ssize_t w = write(fd, p, n);
		if (w < 0) {
			if (errno == EINTR)
				continue;
			return -1;
		}
		p += w;
		n -= (size_t)w;
	}
	return 0;
}

int main(int argc, char **argv)
{
	const char *host = "127.0.0.1";
	int port = 8448;
	double maxsec = 120, idle = 3.0;
	const char *name = "responder";
	int opt;
	while ((opt = getopt(argc, argv, "h:p:t:i:n:")) != -1) {
		switch (opt) {
		case 'h': host = optarg; break;
		case 'p': port = atoi(optarg); break;
		case 't': maxsec = atof(optarg); break;
		case 'i': idle = atof(optarg); break;
		case 'n': name = optarg; break;
		default:
			fprintf(stderr, "usage: %s [-h host] [-p port] [-t maxsec] [-i idle] [-n name]\n", argv[0]);
			return 2;
		}
	}
	signal(SIGTERM, on_sig);
	signal(SIGINT, on_sig);

	int fd = socket(AF_INET, SOCK_STREAM, 0);
	struct sockaddr_in sa;
	memset(&sa, 0, sizeof(sa));
	sa.sin_family = AF_INET;
	sa.sin_port = htons(port);
	if (inet_pton(AF_INET, host, &sa.sin_addr) != 1) {
		fprintf(stderr, "bad host\n");
		return 2;
	}
	if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
		perror("connect");
		return 1;
	}
	int one = 1;
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	fprintf(stderr, "%s connected\n", name);

	char *buf = malloc(BUFSZ);
	char *out = malloc(BUFSZ);
	if (!buf || !out)
		return 1;
	size_t have = 0;
	unsigned long long events = 0, replies = 0, bad = 0;
	double t_start = now_s(), t_first = 0, t_last = 0;
	int eof = 0;
	while (!stop_flag) {
		double t = now_s();
		if (t - t_start > maxsec)
			break;
		if (t_last && t - t_last > idle)
			break;
		struct pollfd pfd = { .fd = fd, .events = POLLIN };
		int pr = poll(&pfd, 1, 100);
		if (pr < 0 && errno != EINTR)
			break;
		if (pr <= 0)
			continue;
		ssize_t r = read(fd, buf + have, BUFSZ - have);
		if (r < 0) {
			if (errno == EINTR)
				continue;
			break;
		}
		if (r == 0) {
			eof = 1;
			break;
		}
		t = now_s();
		have += (size_t)r;
		size_t pos = 0, olen = 0;
		unsigned long long nrep = 0;
		for (;;) {
			size_t i = pos, len = 0;
			while (i < have && i - pos < 12 && buf[i] >= '0' && buf[i] <= '9')
				len = len * 10 + (size_t)(buf[i++] - '0');
			if (i >= have)
				break; /* the length is not all here yet */
			if (i == pos || buf[i] != ':' || len > BUFSZ / 2) {
				bad++;
				pos = have; /* not a netstring: drop what we have */
				break;
			}
			size_t end = i + 1 + len;
			if (end >= have)
				break; /* the payload or its comma is not all here yet */
			if (buf[end] != ',') {
				bad++;
				pos = have;
				break;
			}
			char ti[32], tl[32];
			if (field(buf + i + 1, len, "\"tindex\":", ti, sizeof(ti)) < 0 ||
			    field(buf + i + 1, len, "\"tlabel\":", tl, sizeof(tl)) < 0) {
				bad++;
			} else {
				char rep[128];
				int rl = snprintf(rep, sizeof(rep), "{\"tindex\":%s,\"tlabel\":%s,\"action\":\"reply\"}", ti, tl);
				if (olen + (size_t)rl + 16 < BUFSZ) {
					olen += (size_t)sprintf(out + olen, "%d:%s,", rl, rep);
					nrep++;
				}
				events++;
			}
			pos = end + 1;
		}
		memmove(buf, buf + pos, have - pos);
		have -= pos;
		if (olen) {
			if (write_all(fd, out, olen) < 0)
				break;
			replies += nrep;
			if (!t_first)
				t_first = t;
			t_last = t;
		}
	}
	close(fd);
	printf("%s events=%llu replies=%llu bad=%llu first_s=%.6f last_s=%.6f eof=%d\n",
	       name, events, replies, bad, t_first, t_last, eof);
	return 0;
}
