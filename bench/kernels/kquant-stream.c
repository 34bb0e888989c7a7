// A K-quant kernel for one token streamed from memory against a plain read of the same
// bytes, on 2 MiB pages, with one thread or two (each its own half of the matrices): the
// kernel's time as a share of the read's, per round and on average. One thread stands for
// the fast state of this VM's memory, where two threads read at about twice one thread's
// rate and each core's own bandwidth is the limit. Built by kquant-stream.sh against a
// revision's Sources/KernelsC.
// Usage: kquant-stream FORMAT(12 Q4_K, 13 Q5_K, 14 Q6_K) THREADS [COLS ROWS] (default 1536 x 8960,
// the 1.5B's gate and up; 8960 x 1536 is its down projection)
#include <immintrin.h>
#include "KernelsC.h"
#include "FormatTable.h"
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec * 1e-9;
}

static int cols = 1536, rows = 8960, threads = 1, reading;
static size_t row_bytes, matrix, matrices;
static uint8_t *weights;
static apus_q8k_block *act;
static float *outputs[2];
static apus_rows_kernel kernel;

static void *work(void *arg) {
    const int t = (int)(long)arg;
    if (reading) {
        const size_t part = matrix * matrices / threads;
        __m256i acc = _mm256_setzero_si256();
        for (size_t i = t * part; i < (t + 1) * part; i += 32) acc = _mm256_xor_si256(acc, _mm256_loadu_si256((const __m256i *)(weights + i)));
        volatile int sink = _mm256_extract_epi32(acc, 0);
        (void)sink;
    } else {
        for (size_t m = t; m < matrices; m += threads) kernel(weights + m * matrix, row_bytes, 0, rows, act, 1, cols / 256, outputs[t], rows, 0);
    }
    return 0;
}

static double timed(int read) {
    reading = read;
    pthread_t thread[2];
    const double start = now();
    for (int t = 0; t < threads; t++) pthread_create(&thread[t], 0, work, (void *)(long)t);
    for (int t = 0; t < threads; t++) pthread_join(thread[t], 0);
    return now() - start;
}

int main(int argc, char **argv) {
    const int format = argc > 1 ? atoi(argv[1]) : 12;
    threads = argc > 2 && atoi(argv[2]) == 2 ? 2 : 1;
    if (argc > 4) { cols = atoi(argv[3]); rows = atoi(argv[4]); }
    const apus_format_kernels *k = format >= 12 && format <= 14 ? apus_format_kernels_of(format) : 0;
    if (!k || !k->vnni || cols < 256 || cols % 256 || rows < 1) {
        fprintf(stderr, "formats 12-14 only (with a VNNI kernel here), and columns a positive multiple of 256\n");
        return 1;
    }
    kernel = k->vnni;
    const size_t block = format == 12 ? 144 : format == 13 ? 176 : 210;
    row_bytes = (size_t)(cols / 256) * block;
    matrix = (size_t)rows * row_bytes;
    matrices = (size_t)(512e6 / matrix) / 2 * 2;
    const size_t bytes = matrix * matrices;
    weights = mmap(0, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    madvise(weights, bytes, MADV_HUGEPAGE);
    for (size_t i = 0; i < bytes; i++) weights[i] = (uint8_t)(i * 2654435761u >> 13);
    const uint16_t half = 0x2000;  // d and dmin small normal halves
    for (size_t b = 0; b < bytes / block; b++) {
        uint8_t *p = weights + b * block;
        if (format == 14) memcpy(p + 208, &half, 2);
        else { memcpy(p, &half, 2); memcpy(p + 2, &half, 2); }
    }
    float *x = malloc(sizeof(float) * cols);
    srand(1);
    for (int i = 0; i < cols; i++) x[i] = (rand() % 2000 - 1000) / 100.0f;
    act = malloc(sizeof(apus_q8k_block) * cols / 256);
    apus_quantize_q8k(x, 1, cols, act);
    outputs[0] = malloc(sizeof(float) * rows);
    outputs[1] = malloc(sizeof(float) * rows);
    double total = 0;
    const int rounds = 9;
    for (int round = 0; round < rounds; round++) {
        const double read = timed(1), kernel_time = timed(0);
        printf("read %.1f GB/s, kernel %.0f%% of it\n", bytes / read / 1e9, 100 * read / kernel_time);
        total += read / kernel_time;
    }
    printf("format %d, %d x %d, %d thread(s): kernel at %.1f%% of a plain read (mean of %d rounds)\n", format, cols, rows, threads, 100 * total / rounds, rounds);
    return 0;
}
