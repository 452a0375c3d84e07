/* memhog: allocates and touches memory 1 MiB at a time, forever. Under a memory limit
 * the OOM killer ends it with SIGKILL; without one it would take the machine down, so
 * it gives up (exit 3) after 4 GiB. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int main(void) {
    const size_t step = 1 << 20;
    for (int i = 0; i < 4096; i++) {
        char *p = malloc(step);
        if (p == NULL) {
            perror("malloc");
            return 2;
        }
        memset(p, 0xa5, step);
    }
    fprintf(stderr, "memhog: 4 GiB allocated and not killed\n");
    return 3;
}
