/*
 * What batching UDP system calls would save per datagram on this machine:
 * the cost of recvfrom() against recvmmsg() and of sendto() against
 * sendmmsg(), over loopback, with datagrams of a stateless OPTIONS's size.
 *
 * Issue #15 named recvmmsg/sendmmsg as a lead. A router thread that reads
 * a burst with one recvmmsg() instead of one recvfrom() per datagram
 * saves only the system call's entry and exit; the kernel's work per
 * datagram (socket lock, skb, copy) stays. This measures both, in one
 * thread, wall clock (nothing else runs in the loops):
 *   - getppid(): the bare cost of entering and leaving the kernel;
 *   - BATCH datagrams sent one sendto() each, then one sendmmsg() of BATCH;
 *   - the receiver's queue read one recvfrom() each (and one more that
 *     finds it empty), or one recvmmsg() of BATCH.
 *
 * build: cc -O2 -o mmsg_cost mmsg_cost.c
 * usage: mmsg_cost [ROUNDS]        (default 20000 rounds of 32 datagrams)
 * output: one line per figure, ns per datagram (or per call).
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#define BATCH 32
#define LEN 300
#define BUF 2048

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec * 1e-9;
}

static int udp_on_loopback(struct sockaddr_in *a) {
    int s = socket(AF_INET, SOCK_DGRAM, 0);
    if (s < 0) {
        perror("socket");
        exit(1);
    }
    int big = 8 << 20;
    setsockopt(s, SOL_SOCKET, SO_RCVBUFFORCE, &big, sizeof big);
    setsockopt(s, SOL_SOCKET, SO_RCVBUF, &big, sizeof big);
    memset(a, 0, sizeof *a);
    a->sin_family = AF_INET;
    a->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t l = sizeof *a;
    if (bind(s, (struct sockaddr *)a, sizeof *a) < 0 || getsockname(s, (struct sockaddr *)a, &l) < 0) {
        perror("bind");
        exit(1);
    }
    return s;
}

int main(int argc, char **argv) {
    int rounds = argc > 1 ? atoi(argv[1]) : 20000;
    if (rounds < 2) {
        fprintf(stderr, "usage: mmsg_cost [ROUNDS >= 2]\n");
        return 2;
    }
    static char msg[LEN], bufs[BATCH][BUF];
    memset(msg, 'x', sizeof msg);

    int calls = 1000000;
    double t0 = now();
    for (int i = 0; i < calls; i++)
        syscall(SYS_getppid);
    printf("getppid (enter and leave the kernel): %.0f ns per call\n", (now() - t0) / calls * 1e9);

    struct sockaddr_in to, me;
    int r = udp_on_loopback(&to), s = udp_on_loopback(&me);
    struct mmsghdr in[BATCH], out[BATCH];
    struct iovec iin[BATCH], iout[BATCH];
    struct sockaddr_in from[BATCH];
    for (int i = 0; i < BATCH; i++) {
        iin[i] = (struct iovec){.iov_base = bufs[i], .iov_len = BUF};
        memset(&in[i], 0, sizeof in[i]);
        in[i].msg_hdr.msg_iov = &iin[i];
        in[i].msg_hdr.msg_iovlen = 1;
        in[i].msg_hdr.msg_name = &from[i];
        in[i].msg_hdr.msg_namelen = sizeof from[i];
        iout[i] = (struct iovec){.iov_base = msg, .iov_len = LEN};
        memset(&out[i], 0, sizeof out[i]);
        out[i].msg_hdr.msg_iov = &iout[i];
        out[i].msg_hdr.msg_iovlen = 1;
        out[i].msg_hdr.msg_name = &to;
        out[i].msg_hdr.msg_namelen = sizeof to;
    }

    double send1 = 0, sendm = 0, recv1 = 0, recvm = 0, empty = 0;
    for (int k = 0; k < rounds; k++) {
        /* Even rounds: one call per datagram; odd rounds: one call per batch. */
        double x = now();
        if (k % 2 == 0) {
            for (int i = 0; i < BATCH; i++)
                if (sendto(s, msg, LEN, 0, (struct sockaddr *)&to, sizeof to) != LEN) {
                    perror("sendto");
                    return 1;
                }
            send1 += now() - x;
            x = now();
            for (int i = 0; i < BATCH; i++) {
                socklen_t fl = sizeof from[0];
                if (recvfrom(r, bufs[0], BUF, MSG_DONTWAIT, (struct sockaddr *)&from[0], &fl) != LEN) {
                    perror("recvfrom");
                    return 1;
                }
            }
            recv1 += now() - x;
            x = now();
            socklen_t fl = sizeof from[0];
            if (recvfrom(r, bufs[0], BUF, MSG_DONTWAIT, (struct sockaddr *)&from[0], &fl) >= 0) {
                fprintf(stderr, "the queue should be empty\n");
                return 1;
            }
            empty += now() - x;
        } else {
            if (sendmmsg(s, out, BATCH, 0) != BATCH) {
                perror("sendmmsg");
                return 1;
            }
            sendm += now() - x;
            x = now();
            for (int i = 0; i < BATCH; i++)
                in[i].msg_hdr.msg_namelen = sizeof from[i];
            if (recvmmsg(r, in, BATCH, MSG_DONTWAIT, NULL) != BATCH) {
                perror("recvmmsg");
                return 1;
            }
            recvm += now() - x;
        }
    }
    double per = (double)(rounds / 2) * BATCH;
    printf("sendto: %.0f ns per datagram; sendmmsg of %d: %.0f ns per datagram\n", send1 / per * 1e9, BATCH,
           sendm / per * 1e9);
    printf("recvfrom: %.0f ns per datagram; recvmmsg of %d: %.0f ns per datagram\n", recv1 / per * 1e9, BATCH,
           recvm / per * 1e9);
    printf("recvfrom on an empty queue: %.0f ns per call\n", empty / (rounds / 2) * 1e9);
    return 0;
}
