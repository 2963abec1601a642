/*
 * Open-loop INVITE generator with microsecond latency, in C: the same job
 * and output as async_probe.py, with a floor of its own far lower (the
 * Python one's asyncio loop adds its own scheduling to every measurement;
 * see bench/README.md, "The latency probe's own floor").
 *
 * Sends COUNT INVITEs at RATE/s (no retransmissions; late sends go out at
 * once, in a burst), measures INVITE -> final reply with CLOCK_MONOTONIC,
 * ACKs each final (same branch), waits up to TIMEOUT s for stragglers,
 * and prints one JSON line:
 *   {"sent":..,"answered":..,"lost":..,"codes":{"404":..},"send_s":..,
 *    "elapsed_s":..,"p50_ms":..,"p90_ms":..,"p99_ms":..,"max_ms":..,"mean_ms":..}
 *
 * build: cc -O2 -o probe probe.c
 * usage: probe -r RATE -c COUNT [-p PORT] [-l LOCAL_PORT] [-t TIMEOUT]
 * Targets 127.0.0.1 only.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

static double mono(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec / 1e9;
}

static int cmp_d(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;
	return (x > y) - (x < y);
}

/* The value of header `name` (case-insensitive, at a line start) in the
 * head msg[0..n), trimmed, into out (NUL-terminated); 0 when found. */
static int header(const char *msg, size_t n, const char *name, char *out, size_t cap)
{
	size_t nl = strlen(name);
	for (size_t i = 0; i + nl < n; i++) {
		if (i > 0 && msg[i - 1] != '\n')
			continue;
		if (strncasecmp(msg + i, name, nl) != 0 || msg[i + nl] != ':')
			continue;
		size_t j = i + nl + 1;
		while (j < n && (msg[j] == ' ' || msg[j] == '\t'))
			j++;
		size_t k = j;
		while (k < n && msg[k] != '\r' && msg[k] != '\n')
			k++;
		if (k - j >= cap)
			return -1;
		memcpy(out, msg + j, k - j);
		out[k - j] = 0;
		return 0;
	}
	return -1;
}

int main(int argc, char **argv)
{
	double rate = 0, timeout = 5;
	long count = 0;
	int port = 5060, lport = 0, opt;
	while ((opt = getopt(argc, argv, "r:c:p:l:t:")) != -1) {
		switch (opt) {
		case 'r': rate = atof(optarg); break;
		case 'c': count = atol(optarg); break;
		case 'p': port = atoi(optarg); break;
		case 'l': lport = atoi(optarg); break;
		case 't': timeout = atof(optarg); break;
		default:
			fprintf(stderr, "usage: %s -r RATE -c COUNT [-p PORT] [-l LOCAL_PORT] [-t TIMEOUT]\n", argv[0]);
			return 2;
		}
	}
	if (rate <= 0 || count <= 0) {
		fprintf(stderr, "probe: -r RATE and -c COUNT must be above 0\n");
		return 2;
	}
	int fd = socket(AF_INET, SOCK_DGRAM, 0);
	struct sockaddr_in me = { .sin_family = AF_INET, .sin_port = htons(lport) };
	inet_pton(AF_INET, "127.0.0.1", &me.sin_addr);
	if (bind(fd, (struct sockaddr *)&me, sizeof(me)) < 0) {
		perror("probe: bind");
		return 1;
	}
	socklen_t ml = sizeof(me);
	getsockname(fd, (struct sockaddr *)&me, &ml);
	lport = ntohs(me.sin_port);
	int rcv = 4 << 20;
	setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &rcv, sizeof(rcv));
	struct sockaddr_in dst = { .sin_family = AF_INET, .sin_port = htons(port) };
	inet_pton(AF_INET, "127.0.0.1", &dst.sin_addr);

	double *sent_at = calloc((size_t)count, sizeof(double));
	double *rtt = calloc((size_t)count, sizeof(double));
	if (!sent_at || !rtt)
		return 1;
	int pid = getpid();
	long codes_n[700] = { 0 };
	long sent = 0, answered = 0;
	char msg[2048], in[65536], to[512];
	double interval = 1.0 / rate;
	double t0 = mono(), t_sent = 0;
	double hard_stop = t0 + count / rate * 3 + 30;
	for (;;) {
		double now = mono();
		if (sent < count && now >= hard_stop)
			count = sent;
		/* everything due now goes out (a late loop catches up in a burst) */
		while (sent < count && t0 + sent * interval <= now) {
			int n = snprintf(msg, sizeof(msg),
				"INVITE sip:evapi@127.0.0.1:%d SIP/2.0\r\n"
				"Via: SIP/2.0/UDP 127.0.0.1:%d;branch=z9hG4bK-p%ld-%d\r\n"
				"Max-Forwards: 70\r\n"
				"From: <sip:probe@127.0.0.1>;tag=tp%ld-%d\r\n"
				"To: <sip:evapi@127.0.0.1>\r\n"
				"Call-ID: p%ld-%d\r\nCSeq: 1 INVITE\r\n"
				"Contact: <sip:probe@127.0.0.1:%d>\r\n"
				"Content-Length: 0\r\n\r\n",
				port, lport, sent, pid, sent, pid, sent, pid, lport);
			sent_at[sent] = mono();
			sendto(fd, msg, (size_t)n, 0, (struct sockaddr *)&dst, sizeof(dst));
			sent++;
			now = mono();
		}
		if (sent == count && !t_sent)
			t_sent = now;
		if (t_sent && (answered == sent || now - t_sent >= timeout))
			break;
		/* wait for a reply until the next send is due (ppoll: to the
		 * nanosecond, where poll's milliseconds would make sends late) */
		double wait = t_sent ? timeout - (now - t_sent) : t0 + sent * interval - now;
		if (wait < 0)
			wait = 0;
		struct timespec ts = { .tv_sec = (time_t)wait, .tv_nsec = (long)((wait - (time_t)wait) * 1e9) };
		struct pollfd pfd = { .fd = fd, .events = POLLIN };
		if (ppoll(&pfd, 1, &ts, NULL) <= 0)
			continue;
		for (;;) {
			ssize_t r = recv(fd, in, sizeof(in) - 1, MSG_DONTWAIT);
			if (r <= 0)
				break;
			double at = mono();
			in[r] = 0;
			int code = 0;
			if (sscanf(in, "SIP/2.0 %d", &code) != 1 || code < 200 || code > 699)
				continue;
			char *end = strstr(in, "\r\n\r\n");
			size_t hl = end ? (size_t)(end - in) : (size_t)r;
			char ci[128];
			long i;
			int p;
			if (header(in, hl, "call-id", ci, sizeof(ci)) || sscanf(ci, "p%ld-%d", &i, &p) != 2 ||
			    p != pid || i < 0 || i >= sent || rtt[i] > 0)
				continue;
			rtt[i] = at - sent_at[i];
			answered++;
			codes_n[code]++;
			if (header(in, hl, "to", to, sizeof(to)) && header(in, hl, "t", to, sizeof(to)))
				to[0] = 0;
			int n = snprintf(msg, sizeof(msg),
				"ACK sip:evapi@127.0.0.1:%d SIP/2.0\r\n"
				"Via: SIP/2.0/UDP 127.0.0.1:%d;branch=z9hG4bK-p%ld-%d\r\n"
				"Max-Forwards: 70\r\n"
				"From: <sip:probe@127.0.0.1>;tag=tp%ld-%d\r\n"
				"To: %s\r\n"
				"Call-ID: p%ld-%d\r\nCSeq: 1 ACK\r\nContent-Length: 0\r\n\r\n",
				port, lport, i, pid, i, pid, to, i, pid);
			sendto(fd, msg, (size_t)n, 0, (struct sockaddr *)&dst, sizeof(dst));
		}
	}
	double elapsed = mono() - t0;
	double *v = malloc(sizeof(double) * (size_t)(answered ? answered : 1));
	long k = 0;
	double sum = 0;
	for (long i = 0; i < sent; i++)
		if (rtt[i] > 0) {
			v[k++] = rtt[i] * 1000;
			sum += rtt[i] * 1000;
		}
	qsort(v, (size_t)k, sizeof(double), cmp_d);
#define PCT(p) (k ? v[(long)((p) / 100.0 * k) < k ? (long)((p) / 100.0 * k) : k - 1] : 0)
	printf("{\"sent\": %ld, \"answered\": %ld, \"lost\": %ld, \"codes\": {", sent, answered, sent - answered);
	int first = 1;
	for (int c = 200; c < 700; c++)
		if (codes_n[c]) {
			printf("%s\"%d\": %ld", first ? "" : ", ", c, codes_n[c]);
			first = 0;
		}
	printf("}, \"send_s\": %.3f, \"elapsed_s\": %.3f, \"p50_ms\": %.3f, \"p90_ms\": %.3f, "
	       "\"p99_ms\": %.3f, \"max_ms\": %.3f, \"mean_ms\": %.3f, \"tool\": \"probe.c\"}\n",
	       (t_sent ? t_sent : mono()) - t0, elapsed, PCT(50), PCT(90), PCT(99), k ? v[k - 1] : 0,
	       k ? sum / k : 0);
	return 0;
}
