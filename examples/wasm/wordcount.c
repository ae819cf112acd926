/*
 * wordcount: count lines, words and bytes of every file in an input volume and
 * write the table to an output volume.
 *
 *   wordcount [INPUT] [OUTPUT_DIR]     (defaults: /inputs /outputs)
 *
 * INPUT is a file or a directory (its regular files, in name order). Writes
 * OUTPUT_DIR/counts.txt ("name lines words bytes" per file) and prints the
 * totals to stdout. Exit 0 on success, 1 when the input cannot be read, 2
 * when the output cannot be written.
 */
#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

struct counts { unsigned long long lines, words, bytes; };

static int count_file(const char *path, struct counts *c) {
    FILE *f = fopen(path, "rb");
    if (!f) return -1;
    int ch, in_word = 0;
    while ((ch = fgetc(f)) != EOF) {
        c->bytes++;
        if (ch == '\n') c->lines++;
        if (isspace(ch)) in_word = 0;
        else if (!in_word) { in_word = 1; c->words++; }
    }
    fclose(f);
    return 0;
}

static int by_name(const void *a, const void *b) {
    return strcmp(*(char *const *)a, *(char *const *)b);
}

int main(int argc, char **argv) {
    const char *input = argc > 1 ? argv[1] : "/inputs";
    const char *outdir = argc > 2 ? argv[2] : "/outputs";
    char path[4096];
    snprintf(path, sizeof path, "%s/counts.txt", outdir);
    FILE *out = fopen(path, "w");
    if (!out) { fprintf(stderr, "cannot write %s: %s\n", path, strerror(errno)); return 2; }

    struct stat st;
    if (stat(input, &st) != 0) { fprintf(stderr, "cannot read %s: %s\n", input, strerror(errno)); return 1; }
    struct counts total = {0, 0, 0};
    int files = 0;
    if (S_ISDIR(st.st_mode)) {
        DIR *d = opendir(input);
        if (!d) { fprintf(stderr, "cannot list %s: %s\n", input, strerror(errno)); return 1; }
        char **names = NULL; size_t n = 0;
        struct dirent *e;
        while ((e = readdir(d))) {
            if (e->d_name[0] == '.') continue;
            names = realloc(names, (n + 1) * sizeof *names);
            names[n++] = strdup(e->d_name);
        }
        closedir(d);
        qsort(names, n, sizeof *names, by_name);
        for (size_t i = 0; i < n; i++) {
            struct counts c = {0, 0, 0};
            snprintf(path, sizeof path, "%s/%s", input, names[i]);
            if (stat(path, &st) == 0 && S_ISREG(st.st_mode) && count_file(path, &c) == 0) {
                fprintf(out, "%s %llu %llu %llu\n", names[i], c.lines, c.words, c.bytes);
                total.lines += c.lines; total.words += c.words; total.bytes += c.bytes; files++;
            }
            free(names[i]);
        }
        free(names);
    } else {
        struct counts c = {0, 0, 0};
        if (count_file(input, &c) != 0) { fprintf(stderr, "cannot read %s: %s\n", input, strerror(errno)); return 1; }
        const char *slash = strrchr(input, '/');
        fprintf(out, "%s %llu %llu %llu\n", slash ? slash + 1 : input, c.lines, c.words, c.bytes);
        total = c; files = 1;
    }
    if (fclose(out) != 0) { fprintf(stderr, "cannot write counts: %s\n", strerror(errno)); return 2; }
    printf("%d files, %llu lines, %llu words, %llu bytes\n", files, total.lines, total.words, total.bytes);
    return 0;
}
