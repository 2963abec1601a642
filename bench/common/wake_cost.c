/*
 * What one thread wake-up costs on this machine, in CPU time, after the
 * thread (and its CPU) sat idle for GAP microseconds: the floor under
 * every row where a request or call wakes a sleeping thread (the latency
 * probe at 100 calls/s, the basic script at low rates).
 *
 * A "waker" thread sleeps GAP us (nanosleep), then writes an eventfd; a
 * "sleeper" thread blocks reading it, does a few hundred nanoseconds of
 * work, and blocks again. Each thread's CPU time comes from
 * /proc/self/task/TID/schedstat (the scheduler's own runtime, in ns), so
 * it counts what the kernel charges a thread for being woken and run,
 * which is what `compare.py` counts for a server.
 *
 * build: cc -O2 -pthread -o wake_cost wake_cost.c
 * usage: wake_cost GAP_US COUNT         e.g. wake_cost 10000 300
 *        taskset -c 0 wake_cost 10000 300   (both threads on one CPU)
 * output: CPU us per wake-up of the sleeper, and per round of the waker
 *         (its own wake-up from nanosleep plus the eventfd write).
 */
#define _GNU_SOURCE
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/eventfd.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

static int efd;
static volatile int sleeper_tid;
static volatile int spin_sink;

static long long runtime_ns(int tid) {
    char p[64];
    snprintf(p, sizeof p, "/proc/self/task/%d/schedstat", tid);
    FILE *f = fopen(p, "r");
    long long ns = -1;
    if (!f || fscanf(f, "%lld", &ns) != 1) {
        fprintf(stderr, "cannot read %s\n", p);
        exit(1);
    }
    fclose(f);
    return ns;
}

static void *sleeper(void *arg) {
    (void)arg;
    sleeper_tid = (int)syscall(SYS_gettid);
    uint64_t v;
    while (read(efd, &v, sizeof v) == sizeof v) {
        int s = 0;
        for (int i = 0; i < 1000; i++)
            s += i;
        spin_sink = s;
    }
    return NULL;
}

int main(int argc, char **argv) {
    if (argc < 3 || atoi(argv[2]) < 1 || atoi(argv[1]) < 0) {
        fprintf(stderr, "usage: wake_cost GAP_US COUNT\n");
        return 2;
    }
    int gap = atoi(argv[1]), n = atoi(argv[2]);
    efd = eventfd(0, 0);
    pthread_t t;
    pthread_create(&t, NULL, sleeper, NULL);
    usleep(100000);
    int me = (int)syscall(SYS_gettid);
    long long s0 = runtime_ns(sleeper_tid), w0 = runtime_ns(me);
    for (int i = 0; i < n; i++) {
        struct timespec ts = {gap / 1000000, (gap % 1000000) * 1000L};
        if (gap)
            nanosleep(&ts, NULL);
        uint64_t one = 1;
        if (write(efd, &one, sizeof one) != sizeof one) {
            perror("write");
            return 1;
        }
    }
    usleep(100000);
    long long s1 = runtime_ns(sleeper_tid), w1 = runtime_ns(me);
    printf("gap %d us: %.1f us CPU per wake-up of the sleeper; %.1f us CPU per round of the waker\n", gap,
           (s1 - s0) / 1e3 / n, (w1 - w0) / 1e3 / n);
    return 0;
}
