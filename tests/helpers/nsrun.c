/* nsrun [--cgroup DIR] CMD [ARG...]: runs CMD the way a container runtime starts a
 * container's process, for tests of copilot without a view of the host: as pid 1 of
 * a new PID namespace, in new mount and cgroup namespaces, with /proc mounted for the
 * new PID namespace and tracefs unmounted. With --cgroup, CMD is moved into the
 * cgroup v2 directory DIR first (so its exec is that container's first), and the
 * cgroup namespace's root is DIR; the container's own cgroupfs is then mounted at
 * /mnt/cgroup, as a runtime mounts one at /sys/fs/cgroup (the host's stays where it
 * was). SIGTERM and SIGINT are passed on; nsrun exits as CMD did. */
#define _GNU_SOURCE
#include <errno.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

static pid_t child;

static void pass_on(int sig) {
    if (child > 0)
        kill(child, sig);
}

static void join(const char *dir) {
    char path[4096];
    snprintf(path, sizeof path, "%s/cgroup.procs", dir);
    FILE *f = fopen(path, "w");
    if (!f || fputs("0\n", f) < 0 || fclose(f) != 0) {
        fprintf(stderr, "nsrun: joining %s: %s\n", dir, strerror(errno));
        _exit(125);
    }
}

static void child_main(const char *cgroup, char **argv) {
    if (cgroup) {
        join(cgroup);
    }
    if (unshare(CLONE_NEWCGROUP) != 0) {
        perror("nsrun: unshare cgroup");
        _exit(125);
    }
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
    if (cgroup) {
        /* The VM's initramfs has no /mnt. */
        if (mkdir("/mnt", 0755) != 0 && errno != EEXIST) {
            perror("nsrun: mkdir /mnt");
            _exit(125);
        }
        if (mount("tmpfs", "/mnt", "tmpfs", 0, "mode=755") != 0 || mkdir("/mnt/cgroup", 0755) != 0 ||
            mount("cgroup2", "/mnt/cgroup", "cgroup2", MS_RDONLY, NULL) != 0) {
            perror("nsrun: mounting the container's cgroupfs at /mnt/cgroup");
            _exit(125);
        }
    }
    execvp(argv[0], argv);
    fprintf(stderr, "nsrun: exec %s: %s\n", argv[0], strerror(errno));
    _exit(127);
}

int main(int argc, char **argv) {
    const char *cgroup = NULL;
    int first = 1;
    if (argc > 2 && strcmp(argv[1], "--cgroup") == 0) {
        cgroup = argv[2];
        first = 3;
    }
    if (argc <= first) {
        fprintf(stderr, "usage: nsrun [--cgroup DIR] CMD [ARG...]\n");
        return 2;
    }
    if (unshare(CLONE_NEWPID | CLONE_NEWNS) != 0) {
        perror("nsrun: unshare");
        return 125;
    }
    child = fork();
    if (child < 0) {
        perror("nsrun: fork");
        return 125;
    }
    if (child == 0)
        child_main(cgroup, argv + first);
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
