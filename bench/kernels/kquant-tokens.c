// A K-quant kernel (AVX2, or with `vnni` the AVX-512 VNNI one) for one and several tokens,
// alone, one thread: cycles per token and per
// eight rows' super-block with the weights in cache (64 rows of 1536 columns), and the time
// of 256 MB of weights streamed from memory (8960 x 1536 matrices, as Qwen2.5-Coder-1.5B's
// feed-forward) against a plain streaming read of the same bytes. Built by kquant-tokens.sh
// against a revision's Sources/KernelsC.
// Usage: kquant-tokens FORMAT(12 Q4_K, 13 Q5_K, 14 Q6_K) GHZ [avx2|vnni] [COLS] (the cached
// matrix's columns, 1536 by default; 8960 makes rows too long for the one-token VNNI kernel's
// four-row passes)
#include <immintrin.h>
#include "KernelsC.h"
#include "FormatTable.h"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec * 1e-9;
}

static size_t block_bytes(int format) { return format == 12 ? 144 : format == 13 ? 176 : 210; }

// Random levels and scales, with d and dmin set to small normal halves.
static uint8_t *weights(int format, size_t bytes) {
    uint8_t *w = aligned_alloc(64, bytes);
    for (size_t i = 0; i < bytes; i++) w[i] = (uint8_t)rand();
    const size_t bb = block_bytes(format);
    const uint16_t half = 0x2000;
    for (size_t b = 0; b < bytes / bb; b++) {
        uint8_t *p = w + b * bb;
        if (format == 14) memcpy(p + 208, &half, 2);
        else { memcpy(p, &half, 2); memcpy(p + 2, &half, 2); }
    }
    return w;
}

int main(int argc, char **argv) {
    const int format = argc > 1 ? atoi(argv[1]) : 12;
    const double ghz = argc > 2 ? atof(argv[2]) : 3.0;
    const apus_format_kernels *k = apus_format_kernels_of(format);
    const apus_rows_kernel kernel = argc > 3 && strcmp(argv[3], "vnni") == 0 ? k->vnni : k->avx2;
    if (!kernel) {
        fprintf(stderr, "no such kernel for format %d\n", format);
        return 1;
    }
    const int cols = argc > 4 ? atoi(argv[4]) : 1536, blocks = cols / 256, max_tokens = 64;
    if (cols < 256 || cols % 256) {
        fprintf(stderr, "columns must be a positive multiple of 256\n");
        return 1;
    }
    const size_t row_bytes = blocks * block_bytes(format);
    float *x = malloc(sizeof(float) * cols * max_tokens);
    srand(1);
    for (int i = 0; i < cols * max_tokens; i++) x[i] = (rand() % 2000 - 1000) / 100.0f;
    apus_q8k_block *a = malloc(sizeof(apus_q8k_block) * blocks * max_tokens);
    apus_quantize_q8k(x, max_tokens, cols, a);
    const int counts[] = {1, 2, 4, 8, 16, 64};

    const int rows = 64;
    uint8_t *w = weights(format, rows * row_bytes);
    float *y = malloc(sizeof(float) * 8960 * max_tokens);
    printf("cached, cycles per token and 8-row super-block:");
    for (int i = 0; i < 6; i++) {
        const int t = counts[i], reps = 2000000 / (rows * t) + 1;
        double best = 1e9;
        for (int rep = 0; rep < 7; rep++) {
            const double t0 = now();
            for (int m = 0; m < reps; m++) kernel(w, row_bytes, 0, rows, a, t, blocks, y, rows, 0);
            const double e = now() - t0;
            if (e < best) best = e;
        }
        printf(" %d: %.1f", t, ghz * 1e9 * best / ((double)reps * t * rows / 8 * blocks));
    }
    printf("\n");

    const int big_rows = 8960;
    const size_t matrix = big_rows * row_bytes;
    const int matrices = (int)(256e6 / matrix);
    uint8_t *big = weights(format, matrix * matrices);
    double stream = 1e9;
    for (int rep = 0; rep < 3; rep++) {
        const double t0 = now();
        __m256i acc = _mm256_setzero_si256();
        for (size_t i = 0; i < matrix * matrices; i += 32) acc = _mm256_xor_si256(acc, _mm256_load_si256((const __m256i *)(big + i)));
        const double e = now() - t0;
        if (e < stream) stream = e;
        volatile int sink = _mm256_extract_epi32(acc, 0);
        (void)sink;
    }
    printf("streamed, ms per 256 MB (streaming read %.1f ms):", stream * 1e3);
    for (int i = 0; i < 4; i++) {
        const int t = counts[i];
        double best = 1e9;
        for (int rep = 0; rep < 3; rep++) {
            const double t0 = now();
            for (int m = 0; m < matrices; m++) kernel(big + m * matrix, row_bytes, 0, big_rows, a, t, blocks, y, big_rows, 0);
            const double e = now() - t0;
            if (e < best) best = e;
        }
        printf(" %d: %.1f", t, best * 1e3 * 256e6 / (matrix * matrices));
    }
    printf("\n");
    return 0;
}
