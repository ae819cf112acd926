/*
 * sandbox_probe: report what a module can see and do, one "key: value" line
 * each, for the executor's tests.
 *
 *   sandbox_probe INPUT_DIR OUTPUT_DIR
 *
 * Tries to write into INPUT_DIR (must fail), to read host files (must fail),
 * reads the clocks and random bytes (deterministic per job), sleeps (takes no
 * real time), lists INPUT_DIR with inode numbers and times, and writes
 * OUTPUT_DIR/probe.txt.
 */
#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

int main(int argc, char **argv) {
    if (argc < 3) { fprintf(stderr, "usage: sandbox_probe INPUT_DIR OUTPUT_DIR\n"); return 64; }
    char path[4096];

    snprintf(path, sizeof path, "%s/written-by-module", argv[1]);
    FILE *f = fopen(path, "w");
    printf("write-input: %s\n", f ? "ok" : strerror(errno));
    if (f) fclose(f);

    f = fopen("/etc/passwd", "r");
    printf("read-host: %s\n", f ? "ok" : strerror(errno));
    if (f) fclose(f);

    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    printf("realtime: %lld.%09ld\n", (long long)ts.tv_sec, ts.tv_nsec);
    clock_gettime(CLOCK_MONOTONIC, &ts);
    printf("monotonic-before-sleep: %lld.%09ld\n", (long long)ts.tv_sec, ts.tv_nsec);
    sleep(5);
    clock_gettime(CLOCK_MONOTONIC, &ts);
    printf("monotonic-after-sleep: %lld.%09ld\n", (long long)ts.tv_sec, ts.tv_nsec);
    unsigned char r[16];
    if (getentropy(r, sizeof r) == 0) {
        printf("random:");
        for (int i = 0; i < 16; i++) printf(" %02x", r[i]);
        printf("\n");
    }
    printf("time: %lld\n", (long long)time(NULL));

    DIR *d = opendir(argv[1]);
    if (!d) { printf("list-input: %s\n", strerror(errno)); }
    else {
        struct dirent *e;
        while ((e = readdir(d))) {
            struct stat st;
            snprintf(path, sizeof path, "%s/%s", argv[1], e->d_name);
            if (stat(path, &st) == 0)
                printf("entry: %s ino=%llu dino=%llu size=%lld mtime=%lld nlink=%llu\n", e->d_name,
                       (unsigned long long)st.st_ino, (unsigned long long)e->d_ino,
                       (long long)(S_ISDIR(st.st_mode) ? 0 : st.st_size), (long long)st.st_mtime,
                       (unsigned long long)st.st_nlink);
        }
        closedir(d);
    }

    snprintf(path, sizeof path, "%s/probe.txt", argv[2]);
    f = fopen(path, "w");
    printf("write-output: %s\n", f ? "ok" : strerror(errno));
    if (f) { fprintf(f, "written by sandbox_probe\n"); fclose(f); }
    fprintf(stderr, "probe done\n");
    return 7;
}
