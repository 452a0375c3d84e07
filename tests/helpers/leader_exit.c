/* leader_exit MS CODE: the main (leader) thread starts a second thread and calls
 * pthread_exit; the second thread sleeps MS milliseconds, then exits the whole process
 * with exit(CODE). The process is alive, with a zombie leader, for MS milliseconds. */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

static long ms;
static int code;

static void *worker(void *arg) {
    (void)arg;
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) != 0) {
    }
    exit(code);
}

int main(int argc, char **argv) {
    if (argc != 3) {
        fprintf(stderr, "usage: leader_exit MS CODE\n");
        return 2;
    }
    ms = atol(argv[1]);
    code = atoi(argv[2]);
    pthread_t t;
    if (pthread_create(&t, NULL, worker, NULL) != 0) {
        perror("pthread_create");
        return 2;
    }
    pthread_exit(NULL);
}
