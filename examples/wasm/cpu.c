/*
 * cpu: a CPU-bound loop for benchmarks (integer only, no I/O until the end).
 *
 *   cpu [ITERATIONS]     (default 100000000)
 *
 * Prints one checksum line; the same ITERATIONS always print the same line.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

int main(int argc, char **argv) {
    unsigned long long n = argc > 1 ? strtoull(argv[1], NULL, 10) : 100000000ULL;
    uint64_t x = 0x9E3779B97F4A7C15ULL, acc = 0;
    for (unsigned long long i = 0; i < n; i++) {
        x ^= x << 13; x ^= x >> 7; x ^= x << 17;
        acc += (x % 1000003) ^ (acc >> 3);
    }
    printf("%llu %llu\n", n, (unsigned long long)acc);
    return 0;
}
