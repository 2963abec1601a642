/*
 * Set the time slice the scheduler gives some threads (SCHED_OTHER with
 * sched_attr.sched_runtime, Linux 6.12 and later: EEVDF's per-task slice,
 * 0.1 to 100 ms), for an experiment: does our router threads' being
 * preempted, right after they wake a peer, cost the latency probe CPU?
 * (BENCHMARKS.md, eighteenth session.) A woken task whose slice is shorter
 * than the running one's preempts it; one whose slice is not shorter
 * waits while the running one's slice protects it.
 *
 * build: cc -O2 -o set_slice set_slice.c
 * usage: set_slice NS TID...     e.g. for every thread of process PID:
 *        set_slice 100000 $(ls /proc/PID/task)
 * output: per thread, the call's result and the slice read back.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

/* The kernel's struct sched_attr (include/uapi/linux/sched/types.h). */
struct attr {
    uint32_t size, policy;
    uint64_t flags;
    int32_t nice;
    uint32_t priority;
    uint64_t runtime, deadline, period;
    uint32_t util_min, util_max;
};

int main(int argc, char **argv)
{
    if (argc < 3) {
        fprintf(stderr, "usage: %s NS TID...\n", argv[0]);
        return 2;
    }
    uint64_t ns = strtoull(argv[1], NULL, 10);
    int failed = 0;
    for (int i = 2; i < argc; i++) {
        int tid = atoi(argv[i]);
        struct attr a;
        memset(&a, 0, sizeof a);
        a.size = sizeof a;
        a.runtime = ns; /* policy 0: SCHED_OTHER, nice 0 */
        long r = syscall(SYS_sched_setattr, tid, &a, 0);
        int err = errno;
        struct attr b;
        memset(&b, 0, sizeof b);
        syscall(SYS_sched_getattr, tid, &b, sizeof b, 0);
        printf("tid %d: %s, slice %llu ns\n", tid, r ? strerror(err) : "set",
               (unsigned long long)b.runtime);
        failed |= r != 0;
    }
    return failed;
}
