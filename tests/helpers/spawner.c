/* spawner N CODE: forks and execs /bin/true N times, waiting for each, then exits with
 * CODE. Fails (exit 2) if any child fails. */
#include <stdio.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

int main(int argc, char **argv) {
    if (argc != 3) {
        fprintf(stderr, "usage: spawner N CODE\n");
        return 2;
    }
    long n = atol(argv[1]);
    int code = atoi(argv[2]);
    for (long i = 0; i < n; i++) {
        pid_t pid = fork();
        if (pid < 0) {
            perror("fork");
            return 2;
        }
        if (pid == 0) {
            execl("/bin/true", "true", (char *)NULL);
            _exit(127);
        }
        int status;
        if (waitpid(pid, &status, 0) < 0 || !WIFEXITED(status) || WEXITSTATUS(status) != 0) {
            fprintf(stderr, "spawner: child %ld failed (status %#x)\n", i, status);
            return 2;
        }
    }
    return code;
}
