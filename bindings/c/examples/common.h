/*
 * Helpers shared by the two examples: reading PEM files and storing the state the
 * library hands out (atomically: a crash leaves the old state or the new, never half).
 */
#ifndef SEALPOST_EXAMPLE_COMMON_H
#define SEALPOST_EXAMPLE_COMMON_H

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <fcntl.h>
#include <stdint.h>
#include <time.h>

/* Reads a whole file; NUL-terminated; *len (if not NULL) gets its length. NULL if the
 * file cannot be read. The caller frees. */
static inline char *read_file(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    if (f == NULL)
        return NULL;
    size_t cap = 4096, n = 0;
    char *buf = malloc(cap + 1);
    size_t got;
    while (buf != NULL && (got = fread(buf + n, 1, cap - n, f)) > 0) {
        n += got;
        if (n == cap) {
            char *bigger = realloc(buf, 2 * cap + 1);
            if (bigger == NULL) {
                free(buf);
                buf = NULL;
                break;
            }
            buf = bigger;
            cap *= 2;
        }
    }
    fclose(f);
    if (buf == NULL)
        return NULL;
    buf[n] = '\0';
    if (len != NULL)
        *len = n;
    return buf;
}

/* The current time in unix milliseconds: the library reads no clock, callers pass it. */
static inline uint64_t now_ms(void)
{
    struct timespec t;
    clock_gettime(CLOCK_REALTIME, &t);
    return (uint64_t)t.tv_sec * 1000 + (uint64_t)t.tv_nsec / 1000000;
}

/* Stores state durably: write a temporary file, fsync it, rename it over the old one. */
static inline int store_state(const char *path, const uint8_t *data, size_t len)
{
    char tmp[4096];
    if (snprintf(tmp, sizeof tmp, "%s.tmp", path) >= (int)sizeof tmp)
        return -1;
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    if (fd < 0)
        return -1;
    size_t done = 0;
    while (done < len) {
        ssize_t w = write(fd, data + done, len - done);
        if (w < 0) {
            close(fd);
            return -1;
        }
        done += (size_t)w;
    }
    if (fsync(fd) != 0 || close(fd) != 0)
        return -1;
    return rename(tmp, path);
}

/* A sealpost_save_callback: stores the publisher state in the file named by ctx. */
static inline int save_to_file(void *path, const uint8_t *state, size_t state_len)
{
    return store_state(path, state, state_len) == 0 ? 0 : -1;
}

#endif
