/* nsrun CMD [ARG...]: runs CMD the way a container runtime starts a container's
 * process, for tests of copilot without a view of the host: as pid 1 of a new PID
 * namespace, in new mount and cgroup namespaces (the cgroup namespace's root is the
 * cgroup nsrun was started in), with /proc mounted for the new PID namespace and
 * tracefs unmounted. SIGTERM and SIGINT are passed on; nsrun exits as CMD did. */
#define _GNU_SOURCE
#include <errno.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/wait.h>
#include <unistd.h>

static pid_t child;

static void pass_on(int sig) {
    if (child > 0)
        kill(child, sig);
}

static void child_main(char **argv) {
    if (mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) != 0) {
        perror("nsrun: making / private");
        _exit(125);
    }
    if (mount("proc", "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC, NULL) != 0) {
        perror("nsrun: mounting /proc");
        _exit(125);
    }
    /* Not mounted on a fresh machine; never mounted in a pod. */
    umount2("/sys/kernel/tracing", MNT_DETACH);
    umount2("/sys/kernel/debug/tracing", MNT_DETACH);
    execvp(argv[0], argv);
    fprintf(stderr, "nsrun: exec %s: %s\n", argv[0], strerror(errno));
    _exit(127);
}

int main(int argc, char **argv) {
    if (argc < 2) {
        fprintf(stderr, "usage: nsrun CMD [ARG...]\n");
        return 2;
    }
    if (unshare(CLONE_NEWPID | CLONE_NEWNS | CLONE_NEWCGROUP) != 0) {
        perror("nsrun: unshare");
        return 125;
    }
    child = fork();
    if (child < 0) {
        perror("nsrun: fork");
        return 125;
    }
    if (child == 0)
        child_main(argv + 1);
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = pass_on;
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    int status;
    while (waitpid(child, &status, 0) < 0) {
        if (errno != EINTR) {
            perror("nsrun: waitpid");
            return 125;
        }
    }
    if (WIFEXITED(status))
        return WEXITSTATUS(status);
    signal(WTERMSIG(status), SIG_DFL);
    kill(getpid(), WTERMSIG(status));
    return 128 + WTERMSIG(status);
}
