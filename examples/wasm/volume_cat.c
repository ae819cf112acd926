/*
 * volume_cat: read an input volume through the "bacalhau" import module (no
 * file needed: works for volumes the node streams in library mode), print its
 * size and FNV-1a 64 checksum, and optionally copy it to a file.
 *
 *   volume_cat TARGET [COPY_TO]
 *
 * Exit 0 on success, 1 when the volume cannot be read, 2 when COPY_TO cannot
 * be written.
 */
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "bacalhau.h"

int main(int argc, char **argv) {
    if (argc < 2) { fprintf(stderr, "usage: volume_cat TARGET [COPY_TO]\n"); return 1; }
    const char *target = argv[1];
    int32_t h = bacalhau_volume_open(target, strlen(target));
    if (h < 0) { fprintf(stderr, "volume_open(%s) failed: errno %d\n", target, -h); return 1; }
    int64_t size = bacalhau_volume_size(h);
    if (size < 0) { fprintf(stderr, "volume_size failed: errno %d\n", (int)-size); return 1; }
    FILE *copy = NULL;
    if (argc > 2 && !(copy = fopen(argv[2], "wb"))) { perror(argv[2]); return 2; }
    static unsigned char buf[65536];
    uint64_t hash = 0xcbf29ce484222325ULL;
    int64_t offset = 0;
    for (;;) {
        int32_t n = bacalhau_volume_read(h, offset, buf, sizeof buf);
        if (n < 0) { fprintf(stderr, "volume_read failed: errno %d\n", -n); return 1; }
        if (n == 0) break;
        for (int32_t i = 0; i < n; i++) { hash ^= buf[i]; hash *= 0x100000001b3ULL; }
        if (copy && fwrite(buf, 1, (size_t)n, copy) != (size_t)n) { perror(argv[2]); return 2; }
        offset += n;
    }
    if (copy && fclose(copy) != 0) { perror(argv[2]); return 2; }
    printf("%s %lld bytes fnv1a64=%016llx\n", target, (long long)offset, (unsigned long long)hash);
    return offset == size ? 0 : 1;
}
