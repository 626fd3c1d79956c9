/* A process that grows: argv[1] MiB in steps of argv[2] MiB, one step every argv[3] ms,
 * then holds it argv[4] ms, checks every byte and prints a checksum. It uses little CPU:
 * only memory makes a balancer move it. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static void sleep_ms(long ms) {
    struct timespec ts = { ms / 1000, (ms % 1000) * 1000000L };
    while (nanosleep(&ts, &ts) != 0) {
    }
}

int main(int argc, char **argv) {
    if (argc != 5) {
        fprintf(stderr, "usage: bal_grow TOTAL_MIB STEP_MIB STEP_MS HOLD_MS\n");
        return 2;
    }
    long total = atol(argv[1]), step = atol(argv[2]), step_ms = atol(argv[3]), hold_ms = atol(argv[4]);
    long chunks = total / step;
    size_t size = (size_t)step << 20;
    unsigned char **mem = calloc(chunks, sizeof *mem);
    for (long c = 0; c < chunks; c++) {
        mem[c] = malloc(size);
        if (!mem[c]) {
            fprintf(stderr, "malloc failed at %ld MiB\n", c * step);
            return 1;
        }
        for (size_t i = 0; i < size; i += 4096)
            memset(mem[c] + i, (int)((c * 131 + i / 4096) & 0xff), 4096);
        sleep_ms(step_ms);
    }
    sleep_ms(hold_ms);
    uint64_t sum = 0;
    for (long c = 0; c < chunks; c++)
        for (size_t i = 0; i < size; i += 4096) {
            unsigned char want = (unsigned char)((c * 131 + i / 4096) & 0xff);
            if (mem[c][i] != want || mem[c][i + 4095] != want) {
                printf("corrupt at chunk %ld offset %zu\n", c, i);
                return 1;
            }
            sum += want;
        }
    printf("grow %ld MiB ok %llu\n", total, (unsigned long long)sum);
    return 0;
}
