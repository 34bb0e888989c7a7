// K-quant weights against sixteen tokens at a time (prefill), with AVX-512 VNNI: each
// row's super-blocks are unpacked once into unsigned levels and integer scales, then
// broadcast four bytes at a time against a tile of transposed activations (`vpdpbusd`),
// sixteen tokens per zmm. Per super-block and token the two integers equal those of
// SuperBlocks.c, and the float steps are the same, so results are bitwise those of
// `apus_matmul_q8k`.
#include "KernelsC.h"
#include "FormatTable.h"

#include <string.h>

#include "x86.h"

void apus_build_tiles16k(const apus_q8k_block *act, int blocks, int tokens, int tile_begin, int tile_end, apus_tile16k_block *out) {
    for (int tile = tile_begin; tile < tile_end; tile++) {
        for (int b = 0; b < blocks; b++) {
            apus_tile16k_block *o = out + (size_t)tile * blocks + b;
            memset(o, 0, sizeof *o);  // lanes past the last token stay zero
            for (int t = 0; t < 16 && 16 * tile + t < tokens; t++) {
                const apus_q8k_block *a = act + (size_t)(16 * tile + t) * blocks + b;
                for (int i = 0; i < 64; i++) memcpy(&o->qs[i][t], a->qs + 4 * i, 4);
                for (int j = 0; j < 8; j++) o->bsum_pairs[j][t] = (int32_t)((uint32_t)(uint16_t)a->bsums[2 * j] | (uint32_t)(uint16_t)a->bsums[2 * j + 1] << 16);
                o->d[t] = a->d;
            }
        }
    }
}

#if APUS_X86

static inline float f16_value(const uint8_t *p) {
    _Float16 h;
    memcpy(&h, p, 2);
    return (float)h;
}

static inline void scale_min(int j, const uint8_t *q, int *d, int *m) {
    if (j < 4) {
        *d = q[j] & 63;
        *m = q[j + 4] & 63;
    } else {
        *d = (q[j + 4] & 0xF) | ((q[j - 4] >> 6) << 4);
        *m = (q[j + 4] >> 4) | ((q[j] >> 6) << 4);
    }
}

// One super-block unpacked: unsigned levels in value order, per sixteen values the scale,
// per pair of sixteen-value groups the weights of their activation sums as two int16
// (Q4_K/Q5_K: the minimum, against dmin; Q6_K: 32 · scale, subtracted from the scaled
// sum), d and dmin.
typedef struct {
    uint8_t levels[256] __attribute__((aligned(64)));
    int32_t scales[16];
    int32_t offset_pairs[8];
    float d, dmin;
} unpacked_superblock;

static inline int32_t int16_pair(int low, int high) { return (int32_t)((uint32_t)(uint16_t)low | (uint32_t)(uint16_t)high << 16); }

static inline __attribute__((always_inline)) AVX2 void unpack_superblock(int format, const uint8_t *w, unpacked_superblock *u) {
    const __m256i low4 = _mm256_set1_epi8(0x0F);
    if (format == APUS_Q4_K || format == APUS_Q5_K) {
        const uint8_t *qs = w + (format == APUS_Q4_K ? 16 : 48);
        const __m256i qh = format == APUS_Q5_K ? _mm256_loadu_si256((const __m256i *)(w + 16)) : _mm256_setzero_si256();
        for (int n = 0; n < 4; n++) {
            const __m256i bytes = _mm256_loadu_si256((const __m256i *)(qs + 32 * n));
            __m256i lo = _mm256_and_si256(bytes, low4), hi = _mm256_and_si256(_mm256_srli_epi16(bytes, 4), low4);
            if (format == APUS_Q5_K) {
                const __m256i one = _mm256_set1_epi8(1);
                lo = _mm256_or_si256(lo, _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(qh, 2 * n), one), 4));
                hi = _mm256_or_si256(hi, _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(qh, 2 * n + 1), one), 4));
            }
            _mm256_store_si256((__m256i *)(u->levels + 64 * n), lo);
            _mm256_store_si256((__m256i *)(u->levels + 64 * n + 32), hi);
        }
        for (int j = 0; j < 8; j++) {
            int sc, m;
            scale_min(j, w + 4, &sc, &m);
            u->scales[2 * j] = u->scales[2 * j + 1] = sc;
            u->offset_pairs[j] = int16_pair(m, m);
        }
        u->d = f16_value(w);
        u->dmin = f16_value(w + 2);
    } else {  // Q6_K
        for (int n = 0; n < 2; n++) {
            const uint8_t *ql = w + 64 * n;
            const __m256i qh = _mm256_loadu_si256((const __m256i *)(w + 128 + 32 * n));
            const __m256i l0 = _mm256_loadu_si256((const __m256i *)ql), l1 = _mm256_loadu_si256((const __m256i *)(ql + 32));
            for (int k = 0; k < 4; k++) {
                const __m256i src = k % 2 == 0 ? l0 : l1;
                const __m256i nib = k < 2 ? _mm256_and_si256(src, low4) : _mm256_and_si256(_mm256_srli_epi16(src, 4), low4);
                const __m256i high = _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(qh, 2 * k), _mm256_set1_epi8(3)), 4);
                _mm256_store_si256((__m256i *)(u->levels + 128 * n + 32 * k), _mm256_or_si256(nib, high));
            }
        }
        const int8_t *sc = (const int8_t *)(w + 192);
        for (int g = 0; g < 16; g++) u->scales[g] = sc[g];
        for (int j = 0; j < 8; j++) u->offset_pairs[j] = int16_pair(32 * sc[2 * j], 32 * sc[2 * j + 1]);
        u->d = f16_value(w + 208);
        u->dmin = 0;
    }
}

#define ROWS 4

static inline __attribute__((always_inline)) VNNI void tile_row_group(int format, const uint8_t *w, size_t row_bytes, int r, int rows,
                                                                       const apus_tile16k_block *tiles, int tokens, int blocks,
                                                                       float *y, int y_stride, int accumulate) {
    const int stride = format == APUS_Q4_K ? 144 : format == APUS_Q5_K ? 176 : 210;
    unpacked_superblock u[ROWS][blocks];
    for (int k = 0; k < rows; k++)
        for (int b = 0; b < blocks; b++) unpack_superblock(format, w + (size_t)(r + k) * row_bytes + (size_t)b * stride, &u[k][b]);
    // The next group's weights are fetched while this group computes: unpacking stalled on
    // memory when the weights arrived only as they were unpacked.
    const uint8_t *next = w + (size_t)(r + rows) * row_bytes;
    for (size_t offset = 0; offset < (size_t)rows * row_bytes; offset += 64) _mm_prefetch((const char *)(next + offset), _MM_HINT_T0);
    const int separate_min = format != APUS_Q6_K;
    for (int tile = 0; 16 * tile < tokens; tile++) {
        const apus_tile16k_block *T = tiles + (size_t)tile * blocks;
        __m512 acc[ROWS], low[ROWS];
        for (int k = 0; k < rows; k++) acc[k] = low[k] = _mm512_setzero_ps();
        for (int b = 0; b < blocks; b++) {
            __m512i isum[ROWS], ioff[ROWS];
            for (int k = 0; k < rows; k++) isum[k] = ioff[k] = _mm512_setzero_si512();
            // Q4_K and Q5_K scale 32 values at a time, Q6_K 16: one multiply per scale.
            const int per_scale = separate_min ? 8 : 4;
            for (int g = 0; g < 64 / per_scale; g++) {
                __m512i dot[ROWS];
                for (int k = 0; k < rows; k++) dot[k] = _mm512_setzero_si512();
                for (int i = per_scale * g; i < per_scale * g + per_scale; i++) {
                    const __m512i a = _mm512_loadu_si512((const void *)T[b].qs[i]);
                    for (int k = 0; k < rows; k++) {
                        int32_t four;
                        memcpy(&four, u[k][b].levels + 4 * i, 4);
                        dot[k] = _mm512_dpbusd_epi32(dot[k], _mm512_set1_epi32(four), a);
                    }
                }
                for (int k = 0; k < rows; k++)
                    isum[k] = _mm512_add_epi32(isum[k], _mm512_mullo_epi32(dot[k], _mm512_set1_epi32(u[k][b].scales[per_scale * g / 4])));
            }
            for (int j = 0; j < 8; j++) {
                const __m512i pairs = _mm512_loadu_si512((const void *)T[b].bsum_pairs[j]);
                for (int k = 0; k < rows; k++) ioff[k] = _mm512_dpwssd_epi32(ioff[k], pairs, _mm512_set1_epi32(u[k][b].offset_pairs[j]));
            }
            const __m512 da = _mm512_loadu_ps(T[b].d);
            for (int k = 0; k < rows; k++) {
                // The float steps of SuperBlocks.c's FINISH, lane by lane.
                if (separate_min) {
                    acc[k] = _mm512_fmadd_ps(_mm512_mul_ps(_mm512_set1_ps(u[k][b].d), da), _mm512_cvtepi32_ps(isum[k]), acc[k]);
                    low[k] = _mm512_fmadd_ps(_mm512_mul_ps(_mm512_set1_ps(u[k][b].dmin), da), _mm512_cvtepi32_ps(ioff[k]), low[k]);
                } else {
                    acc[k] = _mm512_fmadd_ps(_mm512_mul_ps(_mm512_set1_ps(u[k][b].d), da), _mm512_cvtepi32_ps(_mm512_sub_epi32(isum[k], ioff[k])), acc[k]);
                    low[k] = _mm512_fmadd_ps(_mm512_mul_ps(_mm512_set1_ps(0.0f), da), _mm512_setzero_ps(), low[k]);
                }
            }
        }
        for (int k = 0; k < rows; k++) {
            float out[16];
            _mm512_storeu_ps(out, _mm512_sub_ps(acc[k], low[k]));
            for (int t = 0; t < 16 && 16 * tile + t < tokens; t++) {
                float *slot = y + (size_t)(16 * tile + t) * y_stride + r + k;
                *slot = accumulate ? *slot + out[t] : out[t];
            }
        }
    }
}

static inline __attribute__((always_inline)) VNNI void tile_rows(int format, const uint8_t *w, size_t row_bytes, int r0, int r1,
                                                                  const apus_tile16k_block *tiles, int tokens, int blocks,
                                                                  float *y, int y_stride, int accumulate) {
    int r = r0;
    for (; r + ROWS <= r1; r += ROWS) tile_row_group(format, w, row_bytes, r, ROWS, tiles, tokens, blocks, y, y_stride, accumulate);
    for (; r < r1; r++) tile_row_group(format, w, row_bytes, r, 1, tiles, tokens, blocks, y, y_stride, accumulate);
}

// Each format's tile kernel, specialised (FormatTable.h).
#define FORMAT_TILES(name, FORMAT)                                                                                    \
    VNNI APUS_ROWS_KERNEL(apus_##name##_tiles16) {                                                                   \
        tile_rows(FORMAT, w, row_bytes, r0, r1, (const apus_tile16k_block *)activations, tokens, blocks, y, y_stride, accumulate); \
    }
FORMAT_TILES(q4_k, APUS_Q4_K)
FORMAT_TILES(q5_k, APUS_Q5_K)
FORMAT_TILES(q6_k, APUS_Q6_K)
#endif
