/* exit_stamp: prints `exit_ns <CLOCK_REALTIME in ns>` on stdout and exits 0 at once.
 * A task's last command, so that a benchmark knows when its main container exited
 * on the clock copilot's log lines use (busybox's `date` has no %N). */
#include <stdio.h>
#include <time.h>
#include <unistd.h>

int main(void) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    printf("exit_ns %lld\n", (long long)ts.tv_sec * 1000000000LL + ts.tv_nsec);
    fflush(stdout);
    _exit(0);
}
