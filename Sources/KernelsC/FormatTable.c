// The table of each weight format's kernels, and the matrix entry points that run them.
#include "FormatTable.h"

#include "x86.h"

#if APUS_X86
#define ROW(partner, avx2, vnni, tiles16) {partner, avx2, vnni, tiles16}
#else
#define ROW(partner, avx2, vnni, tiles16) {partner, 0, 0, 0}
#endif

static const apus_format_kernels table[] = {
    [APUS_Q4_0] = ROW(APUS_PARTNER_Q8, apus_q4_0_avx2, apus_q4_0_vnni, apus_q4_0_tiles16),
    [APUS_Q4_1] = ROW(APUS_PARTNER_Q8, apus_q4_1_avx2, apus_q4_1_vnni, apus_q4_1_tiles16),
    [APUS_Q5_0] = ROW(APUS_PARTNER_Q8, apus_q5_0_avx2, apus_q5_0_vnni, apus_q5_0_tiles16),
    [APUS_Q5_1] = ROW(APUS_PARTNER_Q8, apus_q5_1_avx2, apus_q5_1_vnni, apus_q5_1_tiles16),
    [APUS_Q8_0] = ROW(APUS_PARTNER_Q8, apus_q8_0_avx2, apus_q8_0_vnni, apus_q8_0_tiles16),
    [APUS_IQ4_NL] = ROW(APUS_PARTNER_Q8, apus_iq4_nl_avx2, apus_iq4_nl_vnni, apus_iq4_nl_tiles16),
    // The K-quants pair with Q8_K; Q2_K, Q3_K and IQ4_XS have no 512-bit kernels (yet).
    [APUS_Q2_K] = ROW(APUS_PARTNER_Q8K, apus_q2_k_avx2, 0, 0),
    [APUS_Q3_K] = ROW(APUS_PARTNER_Q8K, apus_q3_k_avx2, 0, 0),
    [APUS_Q4_K] = ROW(APUS_PARTNER_Q8K, apus_q4_k_avx2, apus_q4_k_vnni, apus_q4_k_tiles16),
    [APUS_Q5_K] = ROW(APUS_PARTNER_Q8K, apus_q5_k_avx2, apus_q5_k_vnni, apus_q5_k_tiles16),
    [APUS_Q6_K] = ROW(APUS_PARTNER_Q8K, apus_q6_k_avx2, apus_q6_k_vnni, apus_q6_k_tiles16),
    [APUS_IQ4_XS] = ROW(APUS_PARTNER_Q8K, apus_iq4_xs_avx2, 0, 0),
};

const apus_format_kernels *apus_format_kernels_of(int format) {
    if (format < 0 || format >= (int)(sizeof table / sizeof table[0]) || table[format].partner == 0) return 0;
    return &table[format];
}

// The row kernel for this CPU: VNNI where the format has one, else AVX2.
static int run_rows(int format, int partner, const void *weights, size_t row_bytes, int row_begin, int row_end,
                    const void *activations, int tokens, int blocks, float *y, int y_stride, int accumulate) {
    const apus_format_kernels *k = apus_format_kernels_of(format);
    if (!k || k->partner != partner) return 0;
    const int isa = apus_int8_isa();
    const apus_rows_kernel kernel = isa >= 2 && k->vnni ? k->vnni : isa >= 1 ? k->avx2 : 0;
    if (!kernel) return 0;
    kernel((const uint8_t *)weights, row_bytes, row_begin, row_end, activations, tokens, blocks, y, y_stride, accumulate);
    return 1;
}

static int run_tiles(int format, int partner, const void *weights, size_t row_bytes, int row_begin, int row_end,
                     const void *tiles, int tokens, int blocks, float *y, int y_stride, int accumulate) {
    const apus_format_kernels *k = apus_format_kernels_of(format);
    if (!k || k->partner != partner || !k->tiles16 || apus_int8_isa() < 2) return 0;
    k->tiles16((const uint8_t *)weights, row_bytes, row_begin, row_end, tiles, tokens, blocks, y, y_stride, accumulate);
    return 1;
}

int apus_matmul_q8(int format, const void *weights, size_t row_bytes, int row_begin, int row_end,
                   const apus_q8_block *activations, int tokens, int blocks, float *y, int y_stride, int accumulate) {
    return run_rows(format, APUS_PARTNER_Q8, weights, row_bytes, row_begin, row_end, activations, tokens, blocks, y, y_stride, accumulate);
}

int apus_matmul_tiles16(int format, const void *weights, size_t row_bytes, int row_begin, int row_end,
                        const apus_tile16_block *tiles, int tokens, int blocks, float *y, int y_stride, int accumulate) {
    return run_tiles(format, APUS_PARTNER_Q8, weights, row_bytes, row_begin, row_end, tiles, tokens, blocks, y, y_stride, accumulate);
}

int apus_matmul_q8k(int format, const void *weights, size_t row_bytes, int row_begin, int row_end,
                    const apus_q8k_block *activations, int tokens, int blocks, float *y, int y_stride, int accumulate) {
    return run_rows(format, APUS_PARTNER_Q8K, weights, row_bytes, row_begin, row_end, activations, tokens, blocks, y, y_stride, accumulate);
}

int apus_matmul_q8k_tiles16(int format, const void *weights, size_t row_bytes, int row_begin, int row_end,
                            const apus_tile16k_block *tiles, int tokens, int blocks, float *y, int y_stride, int accumulate) {
    return run_tiles(format, APUS_PARTNER_Q8K, weights, row_bytes, row_begin, row_end, tiles, tokens, blocks, y, y_stride, accumulate);
}
