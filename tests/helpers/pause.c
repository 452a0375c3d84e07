/* pause: the pod sandbox's process, like Kubernetes' pause container: sleeps until
 * SIGTERM or SIGINT, then exits 0. Its comm is `pause`, which is how copilot's sibling
 * rule tells the sandbox from the main container. */
#include <signal.h>
#include <stdlib.h>
#include <unistd.h>

static void quit(int sig) {
    (void)sig;
    _exit(0);
}

int main(void) {
    signal(SIGTERM, quit);
    signal(SIGINT, quit);
    for (;;) {
        pause();
    }
}
