/* Hostile WASI program for the adversarial suite: one attack per mode.
 *
 *   attack cat PATH         print a file (through whatever links the input holds)
 *   attack fill PATH        write 1 MiB chunks to PATH until the write fails
 *   attack deep DIR N       N folders nested inside DIR (openat/mkdirat, no long paths)
 *   attack wide DIR N       N empty folders in DIR
 *   attack deep-spin DIR N  deep, then spin forever (so the node is stopped mid-job)
 */
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static char chunk[1 << 20];

static int deep(const char *dir, int n) {
    int fd = open(dir, O_RDONLY | O_DIRECTORY);
    if (fd < 0) { perror("open"); return 2; }
    for (int i = 0; i < n; i++) {
        if (mkdirat(fd, "d", 0755) != 0) { perror("mkdirat"); return 3; }
        int next = openat(fd, "d", O_RDONLY | O_DIRECTORY);
        if (next < 0) { perror("openat"); return 4; }
        close(fd);
        fd = next;
    }
    close(fd);
    printf("made %d nested folders\n", n);
    fflush(stdout);
    return 0;
}

int main(int argc, char **argv) {
    if (argc < 3) { fprintf(stderr, "usage: attack MODE ARG...\n"); return 64; }
    const char *mode = argv[1];
    if (strcmp(mode, "cat") == 0) {
        FILE *f = fopen(argv[2], "rb");
        if (!f) { perror(argv[2]); return 1; }
        size_t n;
        while ((n = fread(chunk, 1, sizeof chunk, f)) > 0) fwrite(chunk, 1, n, stdout);
        return 0;
    }
    if (strcmp(mode, "fill") == 0) {
        FILE *f = fopen(argv[2], "wb");
        if (!f) { perror(argv[2]); return 1; }
        memset(chunk, 'x', sizeof chunk);
        for (;;) {
            if (fwrite(chunk, 1, sizeof chunk, f) != sizeof chunk) { perror("write"); return 1; }
            fflush(f);
        }
    }
    if (argc < 4) { fprintf(stderr, "%s needs DIR N\n", mode); return 64; }
    int n = atoi(argv[3]);
    if (strcmp(mode, "deep") == 0) return deep(argv[2], n);
    if (strcmp(mode, "deep-spin") == 0) {
        int rc = deep(argv[2], n);
        if (rc) return rc;
        volatile unsigned long spin = 0;
        for (;;) spin++;
    }
    if (strcmp(mode, "wide") == 0) {
        char name[32];
        int fd = open(argv[2], O_RDONLY | O_DIRECTORY);
        for (int i = 0; i < n; i++) {
            snprintf(name, sizeof name, "w%d", i);
            if (mkdirat(fd, name, 0755) != 0) { perror("mkdirat"); return 3; }
        }
        printf("made %d folders\n", n);
        return 0;
    }
    fprintf(stderr, "unknown mode %s\n", mode);
    return 64;
}
