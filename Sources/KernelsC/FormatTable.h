// Each weight format's kernels: one row of the table in FormatTable.c per format. A format
// is its unpacking code beside the generic kernels that use it (KernelsC.c for the 32-value
// formats, SuperBlocks.c and SuperBlockTiles.c for the 256-value ones), one line there that
// specialises those kernels for it, and its row. The entry points (`apus_matmul_*`) find a
// format only through the table: a format without a row, or without the kernel asked for,
// computes nothing and the call returns 0.
#ifndef APUS_FORMAT_TABLE_H
#define APUS_FORMAT_TABLE_H

#include "KernelsC.h"

// Rows `r0 ..< r1` of `w` (`row_bytes` apart) against `tokens` activation rows of `blocks`
// blocks each (`apus_q8_block`, `apus_q8k_block`, or their sixteen-token tiles), into
// `y[t · y_stride + r]`, added to it with `accumulate`.
#define APUS_ROWS_KERNEL(name)                                                                                     \
    void name(const uint8_t *w, size_t row_bytes, int r0, int r1, const void *activations, int tokens, int blocks, \
              float *y, int y_stride, int accumulate)
typedef void (*apus_rows_kernel)(const uint8_t *w, size_t row_bytes, int r0, int r1, const void *activations, int tokens,
                                 int blocks, float *y, int y_stride, int accumulate);

// The activation blocks a format is paired with.
enum { APUS_PARTNER_Q8 = 1, APUS_PARTNER_Q8K = 2 };

typedef struct {
    int partner;               // APUS_PARTNER_Q8 (Q8_0 and Q8_1 blocks) or APUS_PARTNER_Q8K
    apus_rows_kernel avx2;     // AVX2: one token's activation row at a time
    apus_rows_kernel vnni;     // AVX-512 VNNI, up to sixteen tokens together; without one, `avx2` runs there too
    apus_rows_kernel tiles16;  // AVX-512 VNNI over sixteen-token tiles (`apus_tile16_block`, `apus_tile16k_block`)
} apus_format_kernels;

// The row of ggml format number `format`, or NULL.
const apus_format_kernels *apus_format_kernels_of(int format);

#define APUS_FORMAT_KERNELS(name) \
    APUS_ROWS_KERNEL(apus_##name##_avx2); APUS_ROWS_KERNEL(apus_##name##_vnni); APUS_ROWS_KERNEL(apus_##name##_tiles16)
APUS_FORMAT_KERNELS(q4_0);
APUS_FORMAT_KERNELS(q4_1);
APUS_FORMAT_KERNELS(q5_0);
APUS_FORMAT_KERNELS(q5_1);
APUS_FORMAT_KERNELS(q8_0);
APUS_FORMAT_KERNELS(iq4_nl);
APUS_FORMAT_KERNELS(q2_k);
APUS_FORMAT_KERNELS(q3_k);
APUS_FORMAT_KERNELS(q4_k);
APUS_FORMAT_KERNELS(q5_k);
APUS_FORMAT_KERNELS(q6_k);
APUS_FORMAT_KERNELS(iq4_xs);

#endif
