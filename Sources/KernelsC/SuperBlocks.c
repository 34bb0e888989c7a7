// The K-quants and IQ4_XS (256-value super-blocks with 16- or 32-value sub-blocks) against
// Q8_K activations. Each super-block's contribution is two exact integers, so every path here
// and the portable Swift one give bitwise the same floats (see KernelsC.h).
#include "KernelsC.h"
#include "FormatTable.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "x86.h"

static inline int nearest_int(float x) { return (int)nearbyintf(x); }  // half to even, as ggml's nearest_int

static void quantize_block_q8k(const float *v, apus_q8k_block *o) {
    float amax = 0, max = 0;
    for (int j = 0; j < 256; j++) {
        if (fabsf(v[j]) > amax) { amax = fabsf(v[j]); max = v[j]; }
    }
    if (amax == 0) {
        memset(o, 0, sizeof *o);
        return;
    }
    const float iscale = -127.0f / max;
    for (int j = 0; j < 256; j++) {
        int q = nearest_int(iscale * v[j]);
        o->qs[j] = (int8_t)(q < 127 ? q : 127);
    }
    for (int g = 0; g < 16; g++) {
        int sum = 0;
        for (int l = 0; l < 16; l++) sum += o->qs[16 * g + l];
        o->bsums[g] = (int16_t)sum;
    }
    o->d = 1 / iscale;
}

#if APUS_X86
// The same block with AVX-512: the same first value of largest magnitude, the same
// products rounded half to even (vcvtps2dq under the default rounding mode, as
// nearbyintf), so bitwise quantize_block_q8k's.
static VNNI void quantize_block_q8k_avx512(const float *v, apus_q8k_block *o) {
    __m512 amax16 = _mm512_setzero_ps();
    for (int i = 0; i < 16; i++) amax16 = _mm512_max_ps(amax16, _mm512_abs_ps(_mm512_loadu_ps(v + 16 * i)));
    const float amax = _mm512_reduce_max_ps(amax16);
    if (amax == 0) {
        memset(o, 0, sizeof *o);
        return;
    }
    float max = 0;
    for (int i = 0; i < 16; i++) {
        const __mmask16 at = _mm512_cmp_ps_mask(_mm512_abs_ps(_mm512_loadu_ps(v + 16 * i)), _mm512_set1_ps(amax), _CMP_EQ_OQ);
        if (at) { max = v[16 * i + __builtin_ctz(at)]; break; }
    }
    const float iscale = -127.0f / max;
    const __m512 scale = _mm512_set1_ps(iscale);
    for (int i = 0; i < 16; i++) {
        const __m512i q = _mm512_min_epi32(_mm512_cvtps_epi32(_mm512_mul_ps(scale, _mm512_loadu_ps(v + 16 * i))), _mm512_set1_epi32(127));
        _mm_storeu_si128((__m128i *)(o->qs + 16 * i), _mm512_cvtepi32_epi8(q));
        o->bsums[i] = (int16_t)_mm512_reduce_add_epi32(q);
    }
    o->d = 1 / iscale;
}
#endif

void apus_quantize_q8k(const float *x, int rows, int cols, apus_q8k_block *out) {
    const int blocks = cols / 256;
    for (int r = 0; r < rows; r++) {
        for (int b = 0; b < blocks; b++) {
            const float *v = x + (size_t)r * cols + 256 * b;
            apus_q8k_block *o = out + (size_t)r * blocks + b;
#if APUS_X86
            if (apus_int8_isa() >= 2) {
                quantize_block_q8k_avx512(v, o);
                continue;
            }
#endif
            quantize_block_q8k(v, o);
        }
    }
}

static inline float f16_at(const uint8_t *p) {
    _Float16 h;
    memcpy(&h, p, 2);
    return (float)h;
}

// Q4_K/Q5_K's 6-bit scale and minimum of group j (ggml's get_scale_min_k4).
static inline void scale_min_k4(int j, const uint8_t *q, int *d, int *m) {
    if (j < 4) {
        *d = q[j] & 63;
        *m = q[j + 4] & 63;
    } else {
        *d = (q[j + 4] & 0xF) | ((q[j - 4] >> 6) << 4);
        *m = (q[j + 4] >> 4) | ((q[j] >> 6) << 4);
    }
}

static inline int block_bytes_k(int format) {
    switch (format) {
    case APUS_Q2_K: return 84;
    case APUS_Q3_K: return 110;
    case APUS_Q4_K: return 144;
    case APUS_Q5_K: return 176;
    case APUS_Q6_K: return 210;
    case APUS_IQ4_XS: return 136;
    default: __builtin_unreachable();  // only formats with a row in FormatTable.c get here
    }
}

// Where a super-block keeps its f16 `d` and `dmin` (-1: no minimum).
static inline int d_offset_k(int format) {
    switch (format) {
    case APUS_Q2_K: return 80;
    case APUS_Q3_K: return 108;
    case APUS_Q6_K: return 208;
    default: return 0;
    }
}
static inline int dmin_offset_k(int format) {
    switch (format) {
    case APUS_Q2_K: return 82;
    case APUS_Q4_K: case APUS_Q5_K: return 2;
    default: return -1;
    }
}

// Q3_K's sixteen 6-bit scales, offset removed (-32..31): low nibbles in bytes 0..7
// (groups 8.. in the high nibbles), high bit pairs in bytes 8..11.
static inline void q3k_scales(const uint8_t *s, int8_t out[16]) {
    for (int g = 0; g < 16; g++) {
        const int low = g < 8 ? s[g] & 0xF : s[g - 8] >> 4;
        const int high = (s[8 + g % 4] >> (2 * (g / 4))) & 3;
        out[g] = (int8_t)((low | high << 4) - 32);
    }
}

// Rows are contiguous, so the weights stream: each super-block fetches the one this far
// ahead, which arrives while the ones between compute (decoding otherwise waits on memory
// at every row). 8 KiB: paired decode runs of the 1.5B in one process were 3-5% faster than
// with 4 KiB while memory read at ~80 GB/s, the same at ~50; 16 KiB was 3% slower than 8.
#define PREFETCH_DISTANCE 8192
#define PREFETCH_AHEAD_HINT(blk, stride, hint)                                                               \
    do {                                                                                                     \
        for (int line = 0; line < (stride); line += 64) _mm_prefetch((const char *)(blk) + PREFETCH_DISTANCE + line, hint); \
    } while (0)
#define PREFETCH_AHEAD(blk, stride) PREFETCH_AHEAD_HINT(blk, stride, _MM_HINT_T0)

// One finished super-block for one token: the float steps every path shares.
#define FINISH(acc, low, dw, dmin, a, isum, imin)              \
    do {                                                        \
        (acc) = fmaf((dw) * (a)->d, (float)(isum), (acc));      \
        (low) = fmaf((dmin) * (a)->d, (float)(imin), (low));    \
    } while (0)

#define STORE(slot, value) ((slot) = accumulate ? (slot) + (value) : (value))

#if APUS_X86

// Σ over 32 values of unsigned w × signed a, times `scale`, as eight int32 lanes (no
// saturation: w < 64, so a pair of products stays within int16).
static inline AVX2 __m256i scaled_dot32(__m256i w, const int8_t *a, __m256i scale16) {
    return _mm256_madd_epi16(_mm256_maddubs_epi16(w, _mm256_loadu_si256((const __m256i *)a)), scale16);
}

// Row `i` of a table of vpshufb controls, read through a pointer hidden from the optimizer:
// seeing the constant, clang replaces each vpshufb by two or three other shuffles.
static inline const void *opaque(const void *p) {
    __asm__("" : "+r"(p));
    return p;
}
#define OPAQUE_ROW(table, i) ((const void *)((const __typeof__((table)[0]) *)opaque(table))[i])

// vpshufb controls that copy one 16-bit lane to all eight of a 128-bit half: word k in both
// halves (Q4_K, Q5_K: entry k), or word j in the low half and j + 1 in the high one (entry 8 +
// j / 2, j even), read through `OPAQUE_ROW`.
static const uint16_t word_picks[12][16] = {
#define PICK(lo, hi) {0x0100 + 0x0202 * (lo), 0x0100 + 0x0202 * (lo), 0x0100 + 0x0202 * (lo), 0x0100 + 0x0202 * (lo), 0x0100 + 0x0202 * (lo), 0x0100 + 0x0202 * (lo), 0x0100 + 0x0202 * (lo), 0x0100 + 0x0202 * (lo), \
                       0x0100 + 0x0202 * (hi), 0x0100 + 0x0202 * (hi), 0x0100 + 0x0202 * (hi), 0x0100 + 0x0202 * (hi), 0x0100 + 0x0202 * (hi), 0x0100 + 0x0202 * (hi), 0x0100 + 0x0202 * (hi), 0x0100 + 0x0202 * (hi)}
    PICK(0, 0), PICK(1, 1), PICK(2, 2), PICK(3, 3), PICK(4, 4), PICK(5, 5), PICK(6, 6), PICK(7, 7),
    PICK(0, 1), PICK(2, 3), PICK(4, 5), PICK(6, 7),
#undef PICK
};

static inline __attribute__((always_inline)) AVX2 __m256i word_pick(int entry) {
    return _mm256_loadu_si256((const __m256i *)OPAQUE_ROW(word_picks, entry));
}

// Sixteen-bit lanes holding the scale of group g (lanes 0-7) and of group g + 1 (lanes 8-15),
// g even, from `pairs`: the sixteen scales as int16, groups 0-7 (g < 8) or 8-15 repeated in
// both 128-bit halves. One vpshufb with a constant control per 32 values.
static inline __attribute__((always_inline)) AVX2 __m256i pair_scales(__m256i pairs, int g) {
    return _mm256_shuffle_epi8(pairs, word_pick(8 + g % 8 / 2));
}

// Σ_g scale_g · Σ q·a and Σ_g min_g · bsum_g of one super-block and one token, each as eight
// int32 lanes whose totals are the two exact integers (`mins` zero for formats without).
static inline __attribute__((always_inline)) AVX2 void superblock_lanes(int format, const uint8_t *w, const apus_q8k_block *a,
                                                                         __m256i *sums, __m256i *mins) {
    const __m256i low4 = _mm256_set1_epi8(0x0F);
    __m256i acc = _mm256_setzero_si256();
    const __m256i bsums = _mm256_loadu_si256((const __m256i *)a->bsums);
    if (format == APUS_Q2_K) {  // levels 0..3, 4-bit scales (low nibbles) and minima (high nibbles)
        const __m128i packed = _mm_loadu_si128((const __m128i *)w);
        const __m256i scales16 = _mm256_cvtepu8_epi16(_mm_and_si128(packed, _mm_set1_epi8(0x0F)));
        const __m256i lo8 = _mm256_permute2x128_si256(scales16, scales16, 0x00), hi8 = _mm256_permute2x128_si256(scales16, scales16, 0x11);
        for (int n = 0; n < 2; n++) {
            const __m256i bytes = _mm256_loadu_si256((const __m256i *)(w + 16 + 32 * n));
            for (int k = 0; k < 4; k++) {
                const __m256i q = _mm256_and_si256(_mm256_srli_epi16(bytes, 2 * k), _mm256_set1_epi8(3));
                const int g = 8 * n + 2 * k;
                acc = _mm256_add_epi32(acc, scaled_dot32(q, a->qs + 128 * n + 32 * k, pair_scales(n == 0 ? lo8 : hi8, g)));
            }
        }
        const __m256i mins16 = _mm256_cvtepu8_epi16(_mm_and_si128(_mm_srli_epi16(packed, 4), _mm_set1_epi8(0x0F)));
        *sums = acc;
        *mins = _mm256_madd_epi16(mins16, bsums);
    } else if (format == APUS_Q3_K) {  // levels 0..7 stand for q + 4: Σ sc·Σ q·a = Σ sc·Σ level·a - 4 Σ sc·bsum.
        int8_t sc[16];
        q3k_scales(w + 96, sc);
        const __m256i scales16 = _mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i *)sc));
        const __m256i lo8 = _mm256_permute2x128_si256(scales16, scales16, 0x00), hi8 = _mm256_permute2x128_si256(scales16, scales16, 0x11);
        const __m256i hmask = _mm256_loadu_si256((const __m256i *)w);
        for (int n = 0; n < 2; n++) {
            const __m256i bytes = _mm256_loadu_si256((const __m256i *)(w + 32 + 32 * n));
            for (int k = 0; k < 4; k++) {
                const __m256i low = _mm256_and_si256(_mm256_srli_epi16(bytes, 2 * k), _mm256_set1_epi8(3));
                const __m256i high = _mm256_and_si256(_mm256_srli_epi16(hmask, 4 * n + k), _mm256_set1_epi8(1));
                const int g = 8 * n + 2 * k;
                acc = _mm256_add_epi32(acc, scaled_dot32(_mm256_or_si256(low, _mm256_slli_epi16(high, 2)), a->qs + 128 * n + 32 * k,
                                                         pair_scales(n == 0 ? lo8 : hi8, g)));
            }
        }
        *sums = _mm256_sub_epi32(acc, _mm256_slli_epi32(_mm256_madd_epi16(scales16, bsums), 2));
        *mins = _mm256_setzero_si256();
    } else if (format == APUS_IQ4_XS) {  // signed table levels: |q|·sign(a, q), a pair of products within int16
        uint16_t high;
        memcpy(&high, w + 2, 2);
        for (int g = 0; g < 8; g++) {
            const int scale = (((w[4 + g / 2] >> (4 * (g % 2))) & 0xF) | ((high >> (2 * g)) & 3) << 4) - 32;
            const __m256i q = iq4nl_values(unpack_nibbles(w + 8 + 16 * g));
            const __m256i av = _mm256_sign_epi8(_mm256_loadu_si256((const __m256i *)(a->qs + 32 * g)), q);
            const __m256i pairs = _mm256_maddubs_epi16(_mm256_sign_epi8(q, q), av);
            acc = _mm256_add_epi32(acc, _mm256_madd_epi16(pairs, _mm256_set1_epi16((int16_t)scale)));
        }
        *sums = acc;
        *mins = _mm256_setzero_si256();
    } else if (format == APUS_Q4_K || format == APUS_Q5_K) {
        // Bytes 4-15 hold the 6-bit scales and minima. As 32-bit lanes L0 (bytes 4-7), L1, L2:
        // scales 0-3 and minima 0-3 are the low six bits of L0 and L1; scales 4-7 and minima
        // 4-7 the low and high nibbles of L2, with the top two bits of L0 and L1 above them.
        const __m128i x = _mm_loadu_si128((const __m128i *)(w + 4));  // lane 3 (bytes 16-19) unused
        const __m128i low6 = _mm_and_si128(x, _mm_set1_epi8(0x3F));
        const __m128i nibbles = _mm_and_si128(_mm_srlv_epi32(_mm_shuffle_epi32(x, _MM_SHUFFLE(2, 2, 2, 2)), _mm_setr_epi32(0, 4, 0, 0)), _mm_set1_epi8(0x0F));
        const __m128i high6 = _mm_or_si128(nibbles, _mm_and_si128(_mm_srli_epi32(x, 2), _mm_set1_epi8(0x30)));
        const __m128i packed = _mm_unpacklo_epi32(low6, high6);  // bytes: scales 0-7, minima 0-7
        const __m256i scales = _mm256_broadcastsi128_si256(_mm_cvtepu8_epi16(packed));
        const uint8_t *qs = w + (format == APUS_Q4_K ? 16 : 48);
        const __m256i qh = format == APUS_Q5_K ? _mm256_loadu_si256((const __m256i *)(w + 16)) : _mm256_setzero_si256();
        for (int n = 0; n < 4; n++) {
            const __m256i bytes = _mm256_loadu_si256((const __m256i *)(qs + 32 * n));
            __m256i lo = _mm256_and_si256(bytes, low4);
            __m256i hi = _mm256_and_si256(_mm256_srli_epi16(bytes, 4), low4);
            if (format == APUS_Q5_K) {
                const __m256i one = _mm256_set1_epi8(1);
                lo = _mm256_or_si256(lo, _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(qh, 2 * n), one), 4));
                hi = _mm256_or_si256(hi, _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(qh, 2 * n + 1), one), 4));
            }
            // Scale 2n, then 2n + 1, in every 16-bit lane.
            acc = _mm256_add_epi32(acc, scaled_dot32(lo, a->qs + 64 * n, _mm256_shuffle_epi8(scales, word_pick(2 * n))));
            acc = _mm256_add_epi32(acc, scaled_dot32(hi, a->qs + 64 * n + 32, _mm256_shuffle_epi8(scales, word_pick(2 * n + 1))));
        }
        // Σ_j min_j · (bsum_2j + bsum_2j+1), each minimum paired with both of its 16-value sums.
        *sums = acc;
        *mins = _mm256_madd_epi16(_mm256_cvtepu8_epi16(_mm_unpackhi_epi8(packed, packed)), bsums);
    } else {  // Q6_K: levels 0..63 stand for q + 32, so Σ sc·Σ q·a = Σ sc·Σ level·a - 32 Σ sc·bsum.
        const __m256i scales16 = _mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i *)(w + 192)));
        const __m256i lo8 = _mm256_permute2x128_si256(scales16, scales16, 0x00), hi8 = _mm256_permute2x128_si256(scales16, scales16, 0x11);
        for (int n = 0; n < 2; n++) {
            const uint8_t *ql = w + 64 * n, *qhp = w + 128 + 32 * n;
            const __m256i qh = _mm256_loadu_si256((const __m256i *)qhp);
            const __m256i l0 = _mm256_loadu_si256((const __m256i *)ql), l1 = _mm256_loadu_si256((const __m256i *)(ql + 32));
            for (int k = 0; k < 4; k++) {
                const __m256i src = k % 2 == 0 ? l0 : l1;
                const __m256i nib = k < 2 ? _mm256_and_si256(src, low4) : _mm256_and_si256(_mm256_srli_epi16(src, 4), low4);
                const __m256i high = _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(qh, 2 * k), _mm256_set1_epi8(3)), 4);
                const int g = 8 * n + 2 * k;
                acc = _mm256_add_epi32(acc, scaled_dot32(_mm256_or_si256(nib, high), a->qs + 128 * n + 32 * k, pair_scales(n == 0 ? lo8 : hi8, g)));
            }
        }
        *sums = _mm256_sub_epi32(acc, _mm256_slli_epi32(_mm256_madd_epi16(scales16, bsums), 5));
        *mins = _mm256_setzero_si256();
    }
}

// A super-block's f16 `d` in the low and its `dmin` (0 where the format has none) in the high
// sixteen bits.
static inline AVX2 uint32_t scale_words(int format, const uint8_t *blk) {
    const int d_at = d_offset_k(format), dmin_at = dmin_offset_k(format);
    uint32_t word;
    if (dmin_at == d_at + 2) {
        memcpy(&word, blk + d_at, 4);
    } else {
        uint16_t d;
        memcpy(&d, blk + d_at, 2);
        word = d;
    }
    return word;
}

// A super-block's [isum, isum, imin, imin] partial sums in each 128-bit half.
static inline __attribute__((always_inline)) AVX2 __m256i superblock_pair(int format, const uint8_t *w, const apus_q8k_block *a) {
    __m256i sums, mins;
    superblock_lanes(format, w, a, &sums, &mins);
    return _mm256_hadd_epi32(sums, mins);
}

// The AVX2 row kernel. FINISH's two chains (acc and low) run side by side in lanes 0 and 1
// of one vector, two super-blocks per step: their integers reduced together into
// [isum_b, imin_b, isum_b+1, imin_b+1], multiplied by [d_b, dmin_b, d_b+1, dmin_b+1]·d_a, and
// added in block order by two fused multiply-adds. Those are the scalar FINISH's IEEE
// operations, so the result is bitwise the other levels'. (Lanes 2 and 3 carry a discarded
// copy.)
static inline __attribute__((always_inline)) AVX2 void rows_k(int format, const uint8_t *w, size_t row_bytes, int r0, int r1,
                                                               const apus_q8k_block *act, int tokens, int blocks, float *y,
                                                               int y_stride, int accumulate) {
    const int stride = block_bytes_k(format);
    for (int r = r0; r < r1; r++) {
        const uint8_t *row = w + (size_t)r * row_bytes;
        for (int t = 0; t < tokens; t++) {
            const apus_q8k_block *a = act + (size_t)t * blocks;
            __m128 acc = _mm_setzero_ps();
            int b = 0;
            for (; b + 2 <= blocks; b += 2) {
                const uint8_t *blk = row + (size_t)b * stride;
                if (t == 0) PREFETCH_AHEAD(blk, 2 * stride);
                const __m256i h = _mm256_hadd_epi32(superblock_pair(format, blk, a + b), superblock_pair(format, blk + stride, a + b + 1));
                const __m128i sums = _mm_add_epi32(_mm256_castsi256_si128(h), _mm256_extracti128_si256(h, 1));
                const __m128 scales = _mm_cvtph_ps(_mm_setr_epi32((int)scale_words(format, blk), (int)scale_words(format, blk + stride), 0, 0));
                const __m128 da = _mm_unpacklo_ps(_mm_set_ss(a[b].d), _mm_set_ss(a[b + 1].d));
                const __m128 p = _mm_mul_ps(scales, _mm_unpacklo_ps(da, da)), f = _mm_cvtepi32_ps(sums);
                acc = _mm_fmadd_ps(p, f, acc);
                acc = _mm_fmadd_ps(_mm_movehl_ps(p, p), _mm_movehl_ps(f, f), acc);
            }
            if (b < blocks) {
                const uint8_t *blk = row + (size_t)b * stride;
                const __m256i h = superblock_pair(format, blk, a + b);
                __m128i sums = _mm_add_epi32(_mm256_castsi256_si128(h), _mm256_extracti128_si256(h, 1));
                sums = _mm_hadd_epi32(sums, sums);
                const __m128 scales = _mm_cvtph_ps(_mm_cvtsi32_si128((int)scale_words(format, blk)));
                acc = _mm_fmadd_ps(_mm_mul_ps(scales, _mm_set1_ps(a[b].d)), _mm_cvtepi32_ps(sums), acc);
            }
            float lanes[4];
            _mm_storeu_ps(lanes, acc);
            STORE(y[(size_t)t * y_stride + r], lanes[0] - lanes[1]);
        }
    }
}

// vpshufb controls that widen one byte of each 128-bit lane to all its 16-bit lanes: byte 2n
// in the low 256 bits and byte 2n + 1 in the high 256 (entry n), read through `OPAQUE_ROW`;
// with vpermw in their place the one-token kernel ran 6% slower from cache.
static const uint16_t scale_byte_picks[4][32] = {
#define EIGHT(x) 0x8000 | (x), 0x8000 | (x), 0x8000 | (x), 0x8000 | (x), 0x8000 | (x), 0x8000 | (x), 0x8000 | (x), 0x8000 | (x)
#define PICK(lo, hi) {EIGHT(lo), EIGHT(lo), EIGHT(hi), EIGHT(hi)}
    PICK(0, 1), PICK(2, 3), PICK(4, 5), PICK(6, 7),
#undef PICK
#undef EIGHT
};

static inline __attribute__((always_inline)) VNNI __m512i scale_byte_pick(int n) {
    return _mm512_loadu_si512(OPAQUE_ROW(scale_byte_picks, n));
}

// Likewise for sixteen-bit scales: word 4h + L in 128-bit lane L (entry h).
static const uint16_t scale_word_picks[2][32] = {
#define EIGHT(w) 0x0100 + 0x0202 * (w), 0x0100 + 0x0202 * (w), 0x0100 + 0x0202 * (w), 0x0100 + 0x0202 * (w), \
                 0x0100 + 0x0202 * (w), 0x0100 + 0x0202 * (w), 0x0100 + 0x0202 * (w), 0x0100 + 0x0202 * (w)
    {EIGHT(0), EIGHT(1), EIGHT(2), EIGHT(3)},
    {EIGHT(4), EIGHT(5), EIGHT(6), EIGHT(7)},
#undef EIGHT
};

static inline __attribute__((always_inline)) VNNI __m512i scale_word_pick(int h) {
    return _mm512_loadu_si512(OPAQUE_ROW(scale_word_picks, h));
}

// AVX-512 VNNI (decode and small batches): 64 values per instruction. The unsigned levels of
// 64 values fill one zmm, `vpmaddubsw` pairs them with the activations into 16-bit sums, and
// `vpdpwssd` multiplies those by each group's scale and accumulates, so a super-block's sums
// are the same exact integers as the AVX2 superblock_lanes'; FINISH's float steps follow unchanged.
// A super-block is unpacked once and then serves every token of the batch: a verify pass
// of a few drafted tokens (or a few decoding sequences) reads and unpacks the weights once.
typedef struct {
    __m512i q[4], scale16[4];  // 64 levels each, and the scale of each pair of them
    __m128i mins16;            // Q4_K, Q5_K: the eight minima
    __m256i scales16;          // Q6_K: the sixteen scales, for the level offset
} vnni_superblock;

// Q4_K's and Q5_K's levels, and each pair's scale from `scales`: the eight scales in bytes
// 0-7 of every 128-bit lane.
static inline __attribute__((always_inline)) VNNI void unpack_levels_q45_vnni(int format, const uint8_t *w, __m512i scales, vnni_superblock *u) {
    const __m512i low4 = _mm512_set1_epi8(0x0F);
    const uint8_t *qs = w + (format == APUS_Q4_K ? 16 : 48);
    const __m512i qh = format == APUS_Q5_K ? _mm512_broadcast_i64x4(_mm256_loadu_si256((const __m256i *)(w + 16))) : _mm512_setzero_si512();
    // The 32 bytes in both halves, the high half shifted down a nibble: a load and a shift,
    // where inserting a shifted copy cost a shuffle.
    const __m512i nibble_shift = _mm512_inserti64x4(_mm512_setzero_si512(), _mm256_set1_epi16(4), 1);
    for (int n = 0; n < 4; n++) {
        const __m512i both = _mm512_srlv_epi16(_mm512_broadcast_i64x4(_mm256_loadu_si256((const __m256i *)(qs + 32 * n))), nibble_shift);
        __m512i q = _mm512_and_si512(both, low4);
        if (format == APUS_Q5_K) {
            // Low half: bit 2n of qh; high half: bit 2n + 1.
            const __m512i shift = _mm512_inserti64x4(_mm512_set1_epi16((short)(2 * n)), _mm256_set1_epi16((short)(2 * n + 1)), 1);
            q = _mm512_or_si512(q, _mm512_slli_epi16(_mm512_and_si512(_mm512_srlv_epi16(qh, shift), _mm512_set1_epi8(1)), 4));
        }
        u->q[n] = q;
        u->scale16[n] = _mm512_shuffle_epi8(scales, scale_byte_pick(n));
    }
}

static inline __attribute__((always_inline)) VNNI void unpack_superblock_vnni(int format, const uint8_t *w, vnni_superblock *u) {
    const __m512i low4 = _mm512_set1_epi8(0x0F);
    if (format == APUS_Q4_K || format == APUS_Q5_K) {
        uint32_t packed[3];
        memcpy(packed, w + 4, 12);
        const uint32_t scales_lo = packed[0] & 0x3F3F3F3Fu, mins_lo = packed[1] & 0x3F3F3F3Fu;
        const uint32_t scales_hi = (packed[2] & 0x0F0F0F0Fu) | (((packed[0] >> 6) & 0x03030303u) << 4);
        const uint32_t mins_hi = ((packed[2] >> 4) & 0x0F0F0F0Fu) | (((packed[1] >> 6) & 0x03030303u) << 4);
        u->mins16 = _mm_cvtepu8_epi16(_mm_set_epi32(0, 0, (int)mins_hi, (int)mins_lo));
        unpack_levels_q45_vnni(format, w, _mm512_set1_epi64((long long)(scales_lo | (uint64_t)scales_hi << 32)), u);
    } else {  // Q6_K: levels 0..63 stand for q + 32, so Σ sc·Σ q·a = Σ sc·Σ level·a - 32 Σ sc·bsum.
        const int8_t *sc = (const int8_t *)(w + 192);
        u->scales16 = _mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i *)sc));
        for (int n = 0; n < 2; n++) {
            // Scales 8n..8n+7 as sixteen-bit lanes in every 128-bit lane.
            const __m512i scales = _mm512_broadcast_i32x4(n == 0 ? _mm256_castsi256_si128(u->scales16) : _mm256_extracti128_si256(u->scales16, 1));
            const __m512i ql = _mm512_loadu_si512((const void *)(w + 64 * n));
            const __m512i qh = _mm512_broadcast_i64x4(_mm256_loadu_si256((const __m256i *)(w + 128 + 32 * n)));
            for (int h = 0; h < 2; h++) {  // values 128n + 64h .. +63: nibbles k = 2h (low half) and 2h + 1 (high half)
                const __m512i nib = h == 0 ? _mm512_and_si512(ql, low4) : _mm512_and_si512(_mm512_srli_epi16(ql, 4), low4);
                const __m512i shift = _mm512_inserti64x4(_mm512_set1_epi16((short)(4 * h)), _mm256_set1_epi16((short)(4 * h + 2)), 1);
                const __m512i high = _mm512_slli_epi16(_mm512_and_si512(_mm512_srlv_epi16(qh, shift), _mm512_set1_epi8(3)), 4);
                // Sixteen-bit lane i holds values 2i, 2i + 1 of the 64: group 8n + 4h + i / 8,
                // word 4h + i / 8 of `scales`.
                u->q[2 * n + h] = _mm512_or_si512(nib, high);
                u->scale16[2 * n + h] = _mm512_shuffle_epi8(scales, scale_word_pick(h));
            }
        }
    }
}

// Σ_g scale_g · Σ q·a of one unpacked super-block and one token, as eight int32 lanes
// (Q6_K's level offset already taken off).
static inline __attribute__((always_inline)) VNNI __m256i superblock_dot_vnni(int format, const vnni_superblock *u, const apus_q8k_block *a) {
    __m512i acc = _mm512_setzero_si512();
    for (int n = 0; n < 4; n++) {
        const __m512i pairs = _mm512_maddubs_epi16(u->q[n], _mm512_loadu_si512((const void *)(a->qs + 64 * n)));
        acc = _mm512_dpwssd_epi32(acc, pairs, u->scale16[n]);
    }
    __m256i y = _mm256_add_epi32(_mm512_castsi512_si256(acc), _mm512_extracti64x4_epi64(acc, 1));
    if (format == APUS_Q6_K) y = _mm256_sub_epi32(y, _mm256_slli_epi32(_mm256_madd_epi16(u->scales16, _mm256_loadu_si256((const __m256i *)a->bsums)), 5));
    return y;
}

// A token's sixteen-value sums of one super-block added in pairs, one per minimum (Q4_K,
// Q5_K): bsum_2j + bsum_2j+1.
static inline __attribute__((always_inline)) VNNI __m128i bsum_pairs(const apus_q8k_block *a) {
    return _mm_hadd_epi16(_mm_loadu_si128((const __m128i *)a->bsums), _mm_loadu_si128((const __m128i *)(a->bsums + 8)));
}

// Σ_j min_j · (bsum_2j + bsum_2j+1) of one token, as four int32 lanes (Q4_K, Q5_K).
static inline __attribute__((always_inline)) VNNI __m128i superblock_mins_vnni(const vnni_superblock *u, const apus_q8k_block *a) {
    return _mm_madd_epi16(u->mins16, bsum_pairs(a));
}

// One super-block's two exact integers for one token; `pairs` is the token's sixteen-value
// sums added in pairs (Q4_K, Q5_K), taken once per token rather than per row. The two sums
// are reduced together.
static inline __attribute__((always_inline)) VNNI void superblock_sums_vnni(int format, const uint8_t *w, const apus_q8k_block *a, __m128i pairs,
                                                                             int *isum, int *imin) {
    vnni_superblock u;
    unpack_superblock_vnni(format, w, &u);
    const __m256i sums = superblock_dot_vnni(format, &u, a);
    const __m128i minima = format == APUS_Q6_K ? _mm_setzero_si128() : _mm_madd_epi16(u.mins16, pairs);
    __m128i h = _mm_hadd_epi32(_mm_add_epi32(_mm256_castsi256_si128(sums), _mm256_extracti128_si256(sums, 1)), minima);
    h = _mm_hadd_epi32(h, h);  // [isum, imin, isum, imin]
    *isum = _mm_cvtsi128_si32(h);
    *imin = _mm_extract_epi32(h, 1);
}

static inline uint32_t load_u32(const uint8_t *p) {
    uint32_t v;
    memcpy(&v, p, 4);
    return v;
}

// Four rows' 512-bit sums reduced together: lane k of the result is the total of z[k]'s
// sixteen int32 lanes.
static inline __attribute__((always_inline)) VNNI __m128i hsum4_i32x16(const __m512i z[4]) {
    const __m512i a = _mm512_add_epi32(_mm512_unpacklo_epi32(z[0], z[1]), _mm512_unpackhi_epi32(z[0], z[1]));
    const __m512i b = _mm512_add_epi32(_mm512_unpacklo_epi32(z[2], z[3]), _mm512_unpackhi_epi32(z[2], z[3]));
    // Per 128-bit lane: [part of z0, of z1, of z2, of z3].
    const __m512i c = _mm512_add_epi32(_mm512_unpacklo_epi64(a, b), _mm512_unpackhi_epi64(a, b));
    const __m256i h = _mm256_add_epi32(_mm512_castsi512_si256(c), _mm512_extracti64x4_epi64(c, 1));
    return _mm_add_epi32(_mm256_castsi256_si128(h), _mm256_extracti128_si256(h, 1));
}

// One Q6_K super-block of one row against one token, unreduced, for rows4_k_vnni:
// Σ_g scale_g · Σ q·a spread over sixteen int32 lanes, the level offset taken off, and d in
// the low half of lane 0. `av` holds the token's 256 activations, `bsums` its sixteen-value
// sums.
static inline __attribute__((always_inline)) VNNI void superblock_parts_q6k_vnni(const uint8_t *blk, const __m512i av[4], __m256i bsums,
                                                                                  __m512i *dot, __m128i *words) {
    vnni_superblock u;
    unpack_superblock_vnni(APUS_Q6_K, blk, &u);
    __m512i z = _mm512_setzero_si512();
    for (int n = 0; n < 4; n++) z = _mm512_dpwssd_epi32(z, _mm512_maddubs_epi16(u.q[n], av[n]), u.scale16[n]);
    *dot = _mm512_sub_epi32(z, _mm512_zextsi256_si512(_mm256_slli_epi32(_mm256_madd_epi16(u.scales16, bsums), 5)));
    *words = _mm_srli_epi32(_mm_cvtsi32_si128((int)load_u32(blk + d_offset_k(APUS_Q6_K) - 2)), 16);  // d is the block's last two bytes
}

// A token's super-block as the four-row kernel takes it.
typedef struct {
    __m512i av[4];
    __m128i pairs;
    __m256i bsums;
} vnni_activations;

static inline __attribute__((always_inline)) VNNI void load_activations_vnni(const apus_q8k_block *a, vnni_activations *x) {
    for (int n = 0; n < 4; n++) x->av[n] = _mm512_loadu_si512((const void *)(a->qs + 64 * n));
    x->bsums = _mm256_loadu_si256((const __m256i *)a->bsums);
    x->pairs = bsum_pairs(a);
}

// Four super-blocks' [d, dmin] words (f16 d in the low half, dmin in the high one) as floats:
// the four d, then the four dmin.
static inline __attribute__((always_inline)) VNNI __m256 d_dmin4_vnni(__m128i words) {
    return _mm256_permutevar8x32_ps(_mm256_cvtph_ps(words), _mm256_setr_epi32(0, 2, 4, 6, 1, 3, 5, 7));
}

// Decoding reads each weight once per token, so the one-token VNNI kernel here prefetches
// it as non-temporal: in paired decode runs of the 1.5B while memory read at ~50 GB/s, 3-4%
// faster than into every level (_MM_HINT_T0), and 1% at ~80 GB/s. (The other kernels, and the
// first PREFETCH_DISTANCE bytes of a call, keep _MM_HINT_T0: not measured.)
#define ONE_TOKEN_HINT _MM_HINT_NTA

// Q4_K's and Q5_K's six-bit scales and minima, from each 128-bit lane's first sixteen bytes of
// a super-block (d and dmin, then twelve packed bytes, as 32-bit words D, L0, L1, L2) to its
// eight scales in bytes 0-7 and eight minima in bytes 8-15: scales 0-3 and minima 0-3 are the
// low six bits of L0 and L1; scales 4-7 and minima 4-7 the low and high nibbles of L2, with
// the top two bits of L0 and L1 above them (unpack_superblock_vnni's scalar steps).
static inline __attribute__((always_inline)) VNNI __m512i scales_mins_q45(__m512i head) {
    const __m512i four = _mm512_set4_epi32(4, 0, 0, 0);  // [L0, L2, L1, L2 >> 4]
    const __m512i low = _mm512_and_si512(_mm512_srlv_epi32(_mm512_shuffle_epi32(head, _MM_SHUFFLE(3, 2, 3, 1)), four),
                                         _mm512_set4_epi32(0x0F0F0F0F, 0x3F3F3F3F, 0x0F0F0F0F, 0x3F3F3F3F));
    const __m512i high = _mm512_and_si512(_mm512_srli_epi32(_mm512_shuffle_epi32(head, _MM_SHUFFLE(2, 2, 1, 1)), 2),
                                          _mm512_set4_epi32(0x30303030, 0, 0x30303030, 0));
    return _mm512_or_si512(low, high);
}

// 128-bit lane k of x in all four.
static inline __attribute__((always_inline)) VNNI __m512i lane_everywhere(__m512i x, int k) {
    switch (k) {
    case 0: return _mm512_shuffle_i32x4(x, x, 0x00);
    case 1: return _mm512_shuffle_i32x4(x, x, 0x55);
    case 2: return _mm512_shuffle_i32x4(x, x, 0xAA);
    default: return _mm512_shuffle_i32x4(x, x, 0xFF);
    }
}

// vpshufb controls that widen bytes 8-15 of each 128-bit lane (the minima) to 16-bit lanes.
static const uint8_t minima_picks[1][64] = {{
#define LANE 8, 0x80, 9, 0x80, 10, 0x80, 11, 0x80, 12, 0x80, 13, 0x80, 14, 0x80, 15, 0x80
    LANE, LANE, LANE, LANE,
#undef LANE
}};

// One token against four consecutive rows at once: the token's activations loaded once for
// the four, the four rows' sums reduced together, and FINISH's fused multiply-adds run on
// four lanes, one per row, the scalar FINISH's IEEE operations in block order. From cache
// Q4_K computes 1.3× as fast as one row at a time (96-98 cycles per eight rows' super-block
// against 125-133), and one thread streams it at 100-103% of a plain read against 86-90%.
// The weights are prefetched in memory order as if the four rows were one stream: ahead of
// each row separately, the prefetches went back and forth within a page and decoding ran
// 7-11% slower than one row at a time (paired runs).
static inline __attribute__((always_inline)) VNNI void rows4_k_vnni(int format, const uint8_t *w, size_t row_bytes, int r,
                                                                     const apus_q8k_block *a, int blocks, float *y, int accumulate) {
    const int stride = block_bytes_k(format);
    const uint8_t *rows = w + (size_t)r * row_bytes;
    __m128 acc = _mm_setzero_ps(), low = _mm_setzero_ps();
    for (int b = 0; b < blocks; b++, a++) {
        vnni_activations x;
        load_activations_vnni(a, &x);
        __m512i dots[4];
        __m256 scales;
        __m128i imin;
        if (format == APUS_Q4_K || format == APUS_Q5_K) {
            // The four rows' d, dmin, scales and minima unpacked together, a row per 128-bit
            // lane: one at a time, the scalar unpacking was a third of the instructions. From
            // cache 5-10% faster; one thread streamed Q4_K at 100-103% of a plain read against
            // 94-98%, and decoding the 1.5B was 4% faster in paired runs at ~80 GB/s.
            const uint8_t *blk = rows + (size_t)b * stride;
            __m512i head = _mm512_castsi128_si512(_mm_loadu_si128((const __m128i *)blk));
            head = _mm512_inserti32x4(head, _mm_loadu_si128((const __m128i *)(blk + row_bytes)), 1);
            head = _mm512_inserti32x4(head, _mm_loadu_si128((const __m128i *)(blk + 2 * row_bytes)), 2);
            head = _mm512_inserti32x4(head, _mm_loadu_si128((const __m128i *)(blk + 3 * row_bytes)), 3);
            const __m512i unpacked = scales_mins_q45(head);
            for (int k = 0; k < 4; k++) {
                PREFETCH_AHEAD_HINT(rows + (size_t)(4 * b + k) * stride, stride, ONE_TOKEN_HINT);
                vnni_superblock u;
                unpack_levels_q45_vnni(format, blk + (size_t)k * row_bytes, lane_everywhere(unpacked, k), &u);
                __m512i z = _mm512_setzero_si512();
                for (int n = 0; n < 4; n++) z = _mm512_dpwssd_epi32(z, _mm512_maddubs_epi16(u.q[n], x.av[n]), u.scale16[n]);
                dots[k] = z;
            }
            // Each row's minima as sixteen-bit lanes against the token's pairs of sums.
            const __m512i m = _mm512_madd_epi16(_mm512_shuffle_epi8(unpacked, _mm512_loadu_si512(OPAQUE_ROW(minima_picks, 0))), _mm512_broadcast_i32x4(x.pairs));
            const __m512i lanes = _mm512_add_epi32(m, _mm512_shuffle_epi32(m, _MM_SHUFFLE(1, 0, 3, 2)));
            const __m512i sums = _mm512_add_epi32(lanes, _mm512_shuffle_epi32(lanes, _MM_SHUFFLE(2, 3, 0, 1)));
            const __m512i firsts = _mm512_setr_epi32(0, 4, 8, 12, 0, 4, 8, 12, 0, 4, 8, 12, 0, 4, 8, 12);
            imin = _mm512_castsi512_si128(_mm512_permutexvar_epi32(firsts, sums));
            scales = d_dmin4_vnni(_mm512_castsi512_si128(_mm512_permutexvar_epi32(firsts, head)));
        } else {  // Q6_K: no minima, dmin 0
            __m128i words[4];
            for (int k = 0; k < 4; k++) {
                PREFETCH_AHEAD_HINT(rows + (size_t)(4 * b + k) * stride, stride, ONE_TOKEN_HINT);
                superblock_parts_q6k_vnni(rows + (size_t)k * row_bytes + (size_t)b * stride, x.av, x.bsums, &dots[k], &words[k]);
            }
            scales = d_dmin4_vnni(_mm_unpacklo_epi64(_mm_unpacklo_epi32(words[0], words[1]), _mm_unpacklo_epi32(words[2], words[3])));
            imin = _mm_setzero_si128();
        }
        const __m128 da = _mm_set1_ps(a->d);
        acc = _mm_fmadd_ps(_mm_mul_ps(_mm256_castps256_ps128(scales), da), _mm_cvtepi32_ps(hsum4_i32x16(dots)), acc);
        low = _mm_fmadd_ps(_mm_mul_ps(_mm256_extractf128_ps(scales, 1), da), _mm_cvtepi32_ps(imin), low);
    }
    const __m128 v = _mm_sub_ps(acc, low);
    float *out = y + r;
    _mm_storeu_ps(out, accumulate ? _mm_add_ps(_mm_loadu_ps(out), v) : v);
}

// The VNNI kernel for one token: four rows at a time where the prefetch, PREFETCH_DISTANCE
// ahead of the four as one stream, stays ahead of the last of them; longer rows one at a
// time, in memory order. There, taking the token's pairs of sums once and reducing each
// super-block's two integers together made Q4_K 8-12% faster from cache, and one thread
// streamed the 1.5B's down projection at 99-103% of a plain read against 90% (Q6_K 116%
// against 107%); decoding the 1.5B was unchanged within the paired runs' resolution.
// Longer rows four at a time are four streams a row apart, and one thread streamed them at
// 36% of a plain read; four super-blocks of one row at a time, reduced together, computed
// 1.1× as fast from cache and streamed at 84% against 92%.
static inline __attribute__((always_inline)) VNNI void rows_k_vnni(int format, const uint8_t *w, size_t row_bytes, int r0, int r1,
                                                                    const apus_q8k_block *a, int blocks, float *y, int accumulate) {
    const int stride = block_bytes_k(format), d_at = d_offset_k(format), dmin_at = dmin_offset_k(format);
    // The first PREFETCH_DISTANCE bytes of these rows, which no super-block fetches ahead.
    for (int off = 0; off < PREFETCH_DISTANCE; off += 64) _mm_prefetch((const char *)w + (size_t)r0 * row_bytes + off, _MM_HINT_T0);
    if (4 * row_bytes <= PREFETCH_DISTANCE)
        for (; r0 + 4 <= r1; r0 += 4) rows4_k_vnni(format, w, row_bytes, r0, a, blocks, y, accumulate);
    if (r0 == r1) return;
    // The token's pairs of sixteen-value sums, for every row's minima.
    __m128i pairs[blocks];
    for (int b = 0; b < blocks; b++) pairs[b] = bsum_pairs(a + b);
    for (int r = r0; r < r1; r++) {
        const uint8_t *row = w + (size_t)r * row_bytes;
        float acc = 0, low = 0;
        for (int b = 0; b < blocks; b++) {
            const uint8_t *blk = row + (size_t)b * stride;
            PREFETCH_AHEAD_HINT(blk, stride, ONE_TOKEN_HINT);
            int isum, imin;
            superblock_sums_vnni(format, blk, a + b, pairs[b], &isum, &imin);
            const float dw = f16_at(blk + d_at);
            const float dmin = dmin_at < 0 ? 0.0f : f16_at(blk + dmin_at);
            FINISH(acc, low, dw, dmin, a + b, isum, imin);
        }
        STORE(y[r], acc - low);
    }
}


// Up to sixteen tokens at once, in groups of four: each super-block is unpacked once for
// all of them; per group the four tokens' sums are reduced together and FINISH's two
// fused multiply-adds run on four lanes (the same IEEE operations as the scalar ones, so the
// result is bitwise rows_k_vnni's).
static inline __attribute__((always_inline)) VNNI void rows_k_vnni_batch(int format, const uint8_t *w, size_t row_bytes, int r0, int r1,
                                                                          const apus_q8k_block *act, int tokens, int blocks, float *y,
                                                                          int y_stride, int accumulate) {
    const int stride = block_bytes_k(format), d_at = d_offset_k(format), dmin_at = dmin_offset_k(format);
    for (int t0 = 0; t0 < tokens; t0 += 16) {
        const int n = tokens - t0 < 16 ? tokens - t0 : 16, groups = (n + 3) / 4;
        for (int r = r0; r < r1; r++) {
            const uint8_t *row = w + (size_t)r * row_bytes;
            __m128 acc[4], low[4];
            for (int g = 0; g < 4; g++) acc[g] = low[g] = _mm_setzero_ps();
            for (int b = 0; b < blocks; b++) {
                const uint8_t *blk = row + (size_t)b * stride;
                PREFETCH_AHEAD(blk, stride);
                vnni_superblock u;
                unpack_superblock_vnni(format, blk, &u);
                const __m128 dw = _mm_set1_ps(f16_at(blk + d_at));
                const __m128 dmin = _mm_set1_ps(dmin_at < 0 ? 0.0f : f16_at(blk + dmin_at));
                for (int g = 0; g < groups; g++) {
                    __m256i s[4];
                    __m128i m[4];
                    float d[4];
                    for (int k = 0; k < 4; k++) {
                        const int t = t0 + 4 * g + k;
                        if (t < tokens) {
                            const apus_q8k_block *a = act + (size_t)t * blocks + b;
                            s[k] = superblock_dot_vnni(format, &u, a);
                            m[k] = format == APUS_Q6_K ? _mm_setzero_si128() : superblock_mins_vnni(&u, a);
                            d[k] = a->d;
                        } else {
                            s[k] = _mm256_setzero_si256();
                            m[k] = _mm_setzero_si128();
                            d[k] = 0;
                        }
                    }
                    // [Σ s0, Σ s1, Σ s2, Σ s3] and likewise for the minima.
                    const __m256i h = _mm256_hadd_epi32(_mm256_hadd_epi32(s[0], s[1]), _mm256_hadd_epi32(s[2], s[3]));
                    const __m128i isum = _mm_add_epi32(_mm256_castsi256_si128(h), _mm256_extracti128_si256(h, 1));
                    const __m128i imin = _mm_hadd_epi32(_mm_hadd_epi32(m[0], m[1]), _mm_hadd_epi32(m[2], m[3]));
                    const __m128 da = _mm_loadu_ps(d);
                    acc[g] = _mm_fmadd_ps(_mm_mul_ps(dw, da), _mm_cvtepi32_ps(isum), acc[g]);
                    low[g] = _mm_fmadd_ps(_mm_mul_ps(dmin, da), _mm_cvtepi32_ps(imin), low[g]);
                }
            }
            for (int g = 0; g < groups; g++) {
                float out[4];
                _mm_storeu_ps(out, _mm_sub_ps(acc[g], low[g]));
                for (int k = 0; k < 4 && t0 + 4 * g + k < tokens; k++) STORE(y[(size_t)(t0 + 4 * g + k) * y_stride + r], out[k]);
            }
        }
    }
}

static inline __attribute__((always_inline)) VNNI void rows_k_vnni_any(int format, const uint8_t *w, size_t row_bytes, int r0, int r1, const apus_q8k_block *act,
                                 int tokens, int blocks, float *y, int y_stride, int accumulate) {
    if (tokens == 1) rows_k_vnni(format, w, row_bytes, r0, r1, act, blocks, y, accumulate);
    else rows_k_vnni_batch(format, w, row_bytes, r0, r1, act, tokens, blocks, y, y_stride, accumulate);
}

// One row's super-block of Q2_K, Q3_K, Q4_K, Q5_K or Q6_K, as unpack_quad takes it: Q2_K's and
// Q3_K's levels (group j's 32 as unsigned bytes in value order, paired with activations
// 32j..32j+31; the other formats' levels come from quad_levels), the scales as bytes (Q4_K,
// Q5_K: the eight scales in bytes 0-7), and the 16-bit factors the correction term weighs
// the token's sixteen-value sums with (the minima, or the scales for Q3_K's and Q6_K's level
// offsets; Q4_K, Q5_K: the eight minima in the low half). The integers are superblock_lanes'.
typedef struct {
    __m256i q[8];
    __m128i scales;
    __m256i correction;
} unpacked_k;

static inline __attribute__((always_inline)) AVX2 void unpack_k(int format, const uint8_t *w, unpacked_k *u) {
    if (format == APUS_Q2_K) {
        const __m128i packed = _mm_loadu_si128((const __m128i *)w);
        for (int n = 0; n < 2; n++) {
            const __m256i bytes = _mm256_loadu_si256((const __m256i *)(w + 16 + 32 * n));
            for (int k = 0; k < 4; k++) u->q[4 * n + k] = _mm256_and_si256(_mm256_srli_epi16(bytes, 2 * k), _mm256_set1_epi8(3));
        }
        u->scales = _mm_and_si128(packed, _mm_set1_epi8(0x0F));
        u->correction = _mm256_cvtepu8_epi16(_mm_and_si128(_mm_srli_epi16(packed, 4), _mm_set1_epi8(0x0F)));
    } else if (format == APUS_Q3_K) {
        int8_t sc[16];
        q3k_scales(w + 96, sc);
        const __m256i hmask = _mm256_loadu_si256((const __m256i *)w);
        for (int n = 0; n < 2; n++) {
            const __m256i bytes = _mm256_loadu_si256((const __m256i *)(w + 32 + 32 * n));
            for (int k = 0; k < 4; k++) {
                const __m256i low = _mm256_and_si256(_mm256_srli_epi16(bytes, 2 * k), _mm256_set1_epi8(3));
                const __m256i high = _mm256_and_si256(_mm256_srli_epi16(hmask, 4 * n + k), _mm256_set1_epi8(1));
                u->q[4 * n + k] = _mm256_or_si256(low, _mm256_slli_epi16(high, 2));
            }
        }
        u->scales = _mm_loadu_si128((const __m128i *)sc);
        u->correction = _mm256_cvtepi8_epi16(u->scales);
    } else if (format == APUS_Q4_K || format == APUS_Q5_K) {
        const __m128i x = _mm_loadu_si128((const __m128i *)(w + 4));
        const __m128i low6 = _mm_and_si128(x, _mm_set1_epi8(0x3F));
        const __m128i nibbles = _mm_and_si128(_mm_srlv_epi32(_mm_shuffle_epi32(x, _MM_SHUFFLE(2, 2, 2, 2)), _mm_setr_epi32(0, 4, 0, 0)), _mm_set1_epi8(0x0F));
        const __m128i high6 = _mm_or_si128(nibbles, _mm_and_si128(_mm_srli_epi32(x, 2), _mm_set1_epi8(0x30)));
        const __m128i packed = _mm_unpacklo_epi32(low6, high6);  // bytes: scales 0-7, minima 0-7
        u->scales = packed;
        u->correction = _mm256_cvtepu8_epi16(_mm_srli_si128(packed, 8));
    } else {  // Q6_K
        u->scales = _mm_loadu_si128((const __m128i *)(w + 192));
        u->correction = _mm256_cvtepi8_epi16(u->scales);
    }
}

// One super-block of four rows, interleaved so that one `vpmaddubsw` multiplies eight values
// of each of the four rows by the same eight activations of one token (broadcast). Two quads
// and two tokens go together: each load of a quad's values serves both tokens and each
// broadcast both quads, and the 16-bit products of a group's 32 values add up before one
// `vpmaddwd` applies the four rows' scales. The 16-bit sums stay exact: a lane adds at most
// eight products of a level and an activation (|a| <= 128), 8 · 15 · 128 for Q4_K, 8 · 31 ·
// 128 for Q5_K, and two groups of sixteen values are scaled separately where scales cover
// sixteen values (Q6_K: 4 · 63 · 128).
typedef struct {
    __m256i q[8][4];        // group j, values 32j + 8c .. 32j + 8c + 7 of rows 0-3 (c = 0..3)
    __m256i scale[16];      // the scale of each row's values in those lanes: per 32 values (Q4_K, Q5_K: [j]) or 16 ([2j], [2j + 1])
    // The weights of the token's sixteen-value sums in the correction term. Q4_K, Q5_K: the
    // eight minima of rows 0 | 2 in [0] and of rows 1 | 3 in [1], against sums of pairs of
    // sixteen-value sums; the others: sixteen per row, [r].
    __m256i correction[4];
    __m256 d_dmin;          // d of rows 0-3, then dmin (0 where the format has none)
} quad_k;

// vpshufb controls for unpack_quad's scales: per 128-bit half, byte 2g (lanes 0-3) or 2g + 1
// (lanes 4-7) into the high byte of each 16-bit lane, zero below; read through `OPAQUE_ROW`.
static const uint8_t scale_picks[8][32] = {
#define SP(g) {0x80, 2 * (g), 0x80, 2 * (g), 0x80, 2 * (g), 0x80, 2 * (g), 0x80, 2 * (g) + 1, 0x80, 2 * (g) + 1, 0x80, 2 * (g) + 1, 0x80, 2 * (g) + 1, \
               0x80, 2 * (g), 0x80, 2 * (g), 0x80, 2 * (g), 0x80, 2 * (g), 0x80, 2 * (g) + 1, 0x80, 2 * (g) + 1, 0x80, 2 * (g) + 1, 0x80, 2 * (g) + 1}
    SP(0), SP(1), SP(2), SP(3), SP(4), SP(5), SP(6), SP(7),
#undef SP
};

static inline __attribute__((always_inline)) AVX2 __m256i scale_pick(int g) {
    return _mm256_loadu_si256((const __m256i *)OPAQUE_ROW(scale_picks, g));
}

// Four rows' 32 bytes as a 4 x 4 transpose of 64-bit chunks: out[c] holds chunk c (bytes
// 8c..8c+7) of rows 0-3.
static inline __attribute__((always_inline)) AVX2 void transpose_chunks(const __m256i rows[4], __m256i out[4]) {
    const __m256i a = _mm256_unpacklo_epi64(rows[0], rows[1]), b = _mm256_unpackhi_epi64(rows[0], rows[1]);
    const __m256i c = _mm256_unpacklo_epi64(rows[2], rows[3]), e = _mm256_unpackhi_epi64(rows[2], rows[3]);
    out[0] = _mm256_permute2x128_si256(a, c, 0x20);
    out[1] = _mm256_permute2x128_si256(b, e, 0x20);
    out[2] = _mm256_permute2x128_si256(a, c, 0x31);
    out[3] = _mm256_permute2x128_si256(b, e, 0x31);
}

// The 32 bytes at `offset` of four rows, transposed.
static inline __attribute__((always_inline)) AVX2 void load_transposed(const uint8_t *w, size_t row_bytes, int offset, __m256i out[4]) {
    __m256i rows[4];
    for (int r = 0; r < 4; r++) rows[r] = _mm256_loadu_si256((const __m256i *)(w + (size_t)r * row_bytes + offset));
    transpose_chunks(rows, out);
}

// Q4_K's, Q5_K's and Q6_K's levels of four rows in the quad's layout, unpacked from bytes
// transposed while still packed: a byte holds bits of two levels (a Q6_K high-bit byte of
// four, a Q5_K one of eight), all in the same lane of their groups, so one transpose serves
// them all.
static inline __attribute__((always_inline)) AVX2 void quad_levels(int format, const uint8_t *w, size_t row_bytes, quad_k *quad) {
    const __m256i low4 = _mm256_set1_epi8(0x0F);
    if (format == APUS_Q4_K || format == APUS_Q5_K) {
        const int qs = format == APUS_Q4_K ? 16 : 48;
        __m256i qh[4];
        if (format == APUS_Q5_K) load_transposed(w, row_bytes, 16, qh);
        for (int n = 0; n < 4; n++) {
            __m256i bytes[4];
            load_transposed(w, row_bytes, qs + 32 * n, bytes);
            for (int c = 0; c < 4; c++) {
                __m256i lo = _mm256_and_si256(bytes[c], low4), hi = _mm256_and_si256(_mm256_srli_epi16(bytes[c], 4), low4);
                if (format == APUS_Q5_K) {
                    const __m256i one = _mm256_set1_epi8(1);
                    lo = _mm256_or_si256(lo, _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(qh[c], 2 * n), one), 4));
                    hi = _mm256_or_si256(hi, _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(qh[c], 2 * n + 1), one), 4));
                }
                quad->q[2 * n][c] = lo;
                quad->q[2 * n + 1][c] = hi;
            }
        }
    } else {  // Q6_K: group 4n + k from the low (k < 2) or high nibbles of ql bytes 64n + 32(k % 2) .., two bits of qh bytes 128 + 32n .. above them
        const __m256i high2 = _mm256_set1_epi8(0x30);
        for (int n = 0; n < 2; n++) {
            __m256i l0[4], l1[4], qh[4];
            load_transposed(w, row_bytes, 64 * n, l0);
            load_transposed(w, row_bytes, 64 * n + 32, l1);
            load_transposed(w, row_bytes, 128 + 32 * n, qh);
            for (int c = 0; c < 4; c++) {
                // Bits 2k, 2k + 1 of each qh byte moved to bits 4, 5 (the mask drops what a
                // 16-bit shift carries over from the neighbouring byte).
                const __m256i h0 = _mm256_and_si256(_mm256_slli_epi16(qh[c], 4), high2), h1 = _mm256_and_si256(_mm256_slli_epi16(qh[c], 2), high2);
                const __m256i h2 = _mm256_and_si256(qh[c], high2), h3 = _mm256_and_si256(_mm256_srli_epi16(qh[c], 2), high2);
                quad->q[4 * n][c] = _mm256_or_si256(_mm256_and_si256(l0[c], low4), h0);
                quad->q[4 * n + 1][c] = _mm256_or_si256(_mm256_and_si256(l1[c], low4), h1);
                quad->q[4 * n + 2][c] = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(l0[c], 4), low4), h2);
                quad->q[4 * n + 3][c] = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(l1[c], 4), low4), h3);
            }
        }
    }
}

static inline __attribute__((always_inline)) AVX2 void unpack_quad(int format, const uint8_t *w, size_t row_bytes, quad_k *quad) {
    const int d_at = d_offset_k(format), dmin_at = dmin_offset_k(format);
    const int wide = format == APUS_Q4_K || format == APUS_Q5_K;
    unpacked_k u[4];
    float d_dmin[8];
    for (int r = 0; r < 4; r++) {
        const uint8_t *blk = w + (size_t)r * row_bytes;
        unpack_k(format, blk, &u[r]);
        d_dmin[r] = f16_at(blk + d_at);
        d_dmin[4 + r] = dmin_at < 0 ? 0.0f : f16_at(blk + dmin_at);
        if (!wide) quad->correction[r] = u[r].correction;
    }
    quad->d_dmin = _mm256_loadu_ps(d_dmin);
    if (wide) {  // u.correction: the eight minima in the low half
        quad->correction[0] = _mm256_permute2x128_si256(u[0].correction, u[2].correction, 0x20);
        quad->correction[1] = _mm256_permute2x128_si256(u[1].correction, u[3].correction, 0x20);
    }
    if (format == APUS_Q2_K || format == APUS_Q3_K) {
        for (int j = 0; j < 8; j++) {
            const __m256i rows[4] = {u[0].q[j], u[1].q[j], u[2].q[j], u[3].q[j]};
            transpose_chunks(rows, quad->q[j]);
        }
    } else {
        quad_levels(format, w, row_bytes, quad);  // from the packed bytes, transposed first
    }
    // Scale g of rows 0 and 1 side by side in the low half, of rows 2 and 3 in the high one
    // (bytes 2g, 2g + 1 of groups 0-7, then 8-15), then each put in the high byte of four
    // 16-bit lanes and shifted down with its sign.
    const __m256i top = _mm256_set_m128i(u[2].scales, u[0].scales), bottom = _mm256_set_m128i(u[3].scales, u[1].scales);
    const __m256i pairs[2] = {_mm256_unpacklo_epi8(top, bottom), _mm256_unpackhi_epi8(top, bottom)};
    const int groups = wide ? 8 : 16;
    for (int g = 0; g < groups; g++) quad->scale[g] = _mm256_srai_epi16(_mm256_shuffle_epi8(pairs[g / 8], scale_pick(g % 8)), 8);
}

// What a token brings to the correction term: Q4_K and Q5_K sum its sixteen-value sums in
// pairs (bsum 2g + bsum 2g + 1, one per minimum, in both halves), the others take them as
// they are.
static inline __attribute__((always_inline)) AVX2 __m256i correction_sums(int format, const apus_q8k_block *a) {
    const __m256i bsums = _mm256_loadu_si256((const __m256i *)a->bsums);
    if (format != APUS_Q4_K && format != APUS_Q5_K) return bsums;
    return _mm256_permute4x64_epi64(_mm256_hadd_epi16(bsums, bsums), 0x88);
}

// `quads` (1 or 2) quads against `tokens` (1 or 2) tokens: per quad and token the eight int32
// lanes [row 0, row 0, row 1, row 1 | row 2, row 2, row 3, row 3] whose pairs add up to each
// row's Σ scale · Σ level · a.
static inline __attribute__((always_inline)) AVX2 void quads_dot(int format, int quads, int tokens, const quad_k *const *quad,
                                                                  const apus_q8k_block *const *a, __m256i acc[2][2]) {
    const int wide = format == APUS_Q4_K || format == APUS_Q5_K;  // one scale per 32 values
    for (int k = 0; k < quads; k++)
        for (int t = 0; t < tokens; t++) acc[k][t] = _mm256_setzero_si256();
    // Two groups per iteration, measured fastest on Zen 3: at two to eight tokens, one group
    // per iteration ran 10-25% slower, and the loop unrolled whole two to three times slower.
#pragma clang loop unroll_count(2)
    for (int j = 0; j < 8; j++) {
        for (int half = 0; half < (wide ? 1 : 2); half++) {
            const int c0 = wide ? 0 : 2 * half, c1 = wide ? 4 : 2 * half + 2;
            __m256i s[2][2];
            for (int c = c0; c < c1; c++) {
                __m256i x[2];
                for (int t = 0; t < tokens; t++) {
                    int64_t chunk;
                    memcpy(&chunk, a[t]->qs + 32 * j + 8 * c, 8);
                    x[t] = _mm256_set1_epi64x(chunk);
                }
                for (int k = 0; k < quads; k++) {
                    const __m256i v = _mm256_load_si256(&quad[k]->q[j][c]);
                    for (int t = 0; t < tokens; t++) {
                        const __m256i p = _mm256_maddubs_epi16(v, x[t]);
                        s[k][t] = c == c0 ? p : _mm256_add_epi16(s[k][t], p);
                    }
                }
            }
            for (int k = 0; k < quads; k++) {
                const __m256i scale = _mm256_load_si256(&quad[k]->scale[wide ? j : 2 * j + half]);
                for (int t = 0; t < tokens; t++) acc[k][t] = _mm256_add_epi32(acc[k][t], _mm256_madd_epi16(s[k][t], scale));
            }
        }
    }
}

// One quad's and token's two exact integers per row, [isum rows 0-3 | imin rows 0-3] (imin 0
// where the format has no minima), from quads_dot's lanes and the token's correction_sums.
static inline __attribute__((always_inline)) AVX2 __m256i quad_integers(int format, const quad_k *quad, __m256i lanes, __m256i sums) {
    __m256i correction;  // in the lanes' layout
    if (format == APUS_Q4_K || format == APUS_Q5_K) {
        correction = _mm256_hadd_epi32(_mm256_madd_epi16(quad->correction[0], sums), _mm256_madd_epi16(quad->correction[1], sums));
    } else {
        const __m256i c01 = _mm256_hadd_epi32(_mm256_madd_epi16(quad->correction[0], sums), _mm256_madd_epi16(quad->correction[1], sums));
        const __m256i c23 = _mm256_hadd_epi32(_mm256_madd_epi16(quad->correction[2], sums), _mm256_madd_epi16(quad->correction[3], sums));
        correction = _mm256_add_epi32(_mm256_permute2x128_si256(c01, c23, 0x20), _mm256_permute2x128_si256(c01, c23, 0x31));
    }
    // [isum 0, isum 1, corr 0, corr 1 | isum 2, isum 3, corr 2, corr 3], then in row order.
    const __m256i both = _mm256_permutevar8x32_epi32(_mm256_hadd_epi32(lanes, correction), _mm256_setr_epi32(0, 1, 4, 5, 2, 3, 6, 7));
    if (format != APUS_Q3_K && format != APUS_Q6_K) return both;
    // Levels offset by 4 (Q3_K) or 32 (Q6_K): isum less the offset times Σ scale · bsum.
    const __m256i offsets = _mm256_slli_epi32(_mm256_permute2x128_si256(both, both, 0x01), format == APUS_Q3_K ? 2 : 5);
    return _mm256_blend_epi32(_mm256_sub_epi32(both, offsets), _mm256_setzero_si256(), 0xF0);
}

// `quads` (1 or 2) quads of rows from row r on against every token, super-block after
// super-block: each super-block of the rows is unpacked once for all tokens, and each token's
// two chains (`acc` and `low` of FINISH, for four rows at once: [acc rows 0-3 | low rows 0-3])
// advance in block order by the scalar FINISH's IEEE operations, so every result is bitwise
// rows_k's.
static inline __attribute__((always_inline)) AVX2 void quads_pass(int format, int quads, const uint8_t *w, size_t row_bytes, int r,
                                                                   const apus_q8k_block *act, int tokens, int blocks, float *y,
                                                                   int y_stride, int accumulate, __m256 *chains) {
    const int stride = block_bytes_k(format);
    memset(chains, 0, sizeof(__m256) * 2 * (size_t)tokens);
    quad_k quad[2];
    const quad_k *const pointers[2] = {&quad[0], &quad[1]};
    // The pass reads its rows a block apart, several streams the hardware prefetcher follows
    // poorly; the rows of the next pass lie right after these, so each block fetches its share
    // of them.
    const uint8_t *next = w + (size_t)(r + 4 * quads) * row_bytes;
    const int share = 4 * quads * stride;
    for (int b = 0; b < blocks; b++) {
        for (int line = 0; line < share; line += 64) _mm_prefetch((const char *)next + (size_t)b * share + line, _MM_HINT_T0);
        for (int k = 0; k < quads; k++) unpack_quad(format, w + (size_t)(r + 4 * k) * row_bytes + (size_t)b * stride, row_bytes, &quad[k]);
        for (int t = 0; t < tokens; t += 2) {
            const int pair = tokens - t >= 2 ? 2 : 1;
            const apus_q8k_block *a[2] = {act + (size_t)t * blocks + b, act + (size_t)(t + pair - 1) * blocks + b};
            __m256i lanes[2][2];
            if (pair == 2) quads_dot(format, quads, 2, pointers, a, lanes);
            else quads_dot(format, quads, 1, pointers, a, lanes);
            for (int i = 0; i < pair; i++) {
                const __m256i sums = correction_sums(format, a[i]);
                const __m256 da = _mm256_set1_ps(a[i]->d);
                __m256 *chain = chains + 2 * (size_t)(t + i);
                for (int k = 0; k < quads; k++) {
                    const __m256i integers = quad_integers(format, &quad[k], lanes[k][i], sums);
                    chain[k] = _mm256_fmadd_ps(_mm256_mul_ps(quad[k].d_dmin, da), _mm256_cvtepi32_ps(integers), chain[k]);
                }
            }
        }
    }
    for (int t = 0; t < tokens; t++) {
        for (int k = 0; k < quads; k++) {
            float *out = y + (size_t)t * y_stride + r + 4 * k;
            const __m256 chain = chains[2 * (size_t)t + k];
            const __m128 v = _mm_sub_ps(_mm256_castps256_ps128(chain), _mm256_extractf128_ps(chain, 1));
            _mm_storeu_ps(out, accumulate ? _mm_add_ps(_mm_loadu_ps(out), v) : v);
        }
    }
}

// The AVX2 kernel for several tokens: rows eight (then four) at a time through quads_pass,
// the last rows of the range, and IQ4_XS (signed levels) and single tokens, through rows_k.
static inline __attribute__((always_inline)) AVX2 void rows_k_quads(int format, const uint8_t *w, size_t row_bytes, int r0, int r1,
                                                                     const apus_q8k_block *act, int tokens, int blocks, float *y,
                                                                     int y_stride, int accumulate) {
    __m256 *chains = format == APUS_IQ4_XS || tokens < 2 || r1 - r0 < 4 || blocks < 1 ? 0 : aligned_alloc(32, sizeof(__m256) * 2 * (size_t)tokens);
    const int whole = r0 + (r1 - r0) / 4 * 4;
    if (chains) {
        // Tokens in tiles whose activations stay in L2 (256 KiB) while every row passes over them.
        const int fits = (int)(262144 / ((size_t)blocks * sizeof(apus_q8k_block))), tile = fits > 16 ? fits : 16;
        for (int t0 = 0; t0 < tokens; t0 += tile) {
            const int count = tokens - t0 < tile ? tokens - t0 : tile;
            const apus_q8k_block *a = act + (size_t)t0 * blocks;
            float *out = y + (size_t)t0 * y_stride;
            int r = r0;
            for (; r + 8 <= r1; r += 8) quads_pass(format, 2, w, row_bytes, r, a, count, blocks, out, y_stride, accumulate, chains);
            for (; r + 4 <= r1; r += 4) quads_pass(format, 1, w, row_bytes, r, a, count, blocks, out, y_stride, accumulate, chains);
        }
        free(chains);
    }
    const int first = chains ? whole : r0;
    if (first < r1) rows_k(format, w, row_bytes, first, r1, act, tokens, blocks, y, y_stride, accumulate);
}

// Each K-quant format's row kernels, specialised (FormatTable.h); Q2_K, Q3_K and IQ4_XS
// have no 512-bit kernel, and their AVX2 one runs on VNNI machines too.
#define FORMAT_KERNELS_AVX2(name, FORMAT)                                                                             \
    AVX2 APUS_ROWS_KERNEL(apus_##name##_avx2) {                                                                      \
        rows_k_quads(FORMAT, w, row_bytes, r0, r1, (const apus_q8k_block *)activations, tokens, blocks, y, y_stride, accumulate); \
    }
#define FORMAT_KERNELS_VNNI(name, FORMAT)                                                                             \
    VNNI APUS_ROWS_KERNEL(apus_##name##_vnni) {                                                                      \
        rows_k_vnni_any(FORMAT, w, row_bytes, r0, r1, (const apus_q8k_block *)activations, tokens, blocks, y, y_stride, accumulate); \
    }
FORMAT_KERNELS_AVX2(q2_k, APUS_Q2_K)
FORMAT_KERNELS_AVX2(q3_k, APUS_Q3_K)
FORMAT_KERNELS_AVX2(iq4_xs, APUS_IQ4_XS)
FORMAT_KERNELS_AVX2(q4_k, APUS_Q4_K)
FORMAT_KERNELS_AVX2(q5_k, APUS_Q5_K)
FORMAT_KERNELS_AVX2(q6_k, APUS_Q6_K)
FORMAT_KERNELS_VNNI(q4_k, APUS_Q4_K)
FORMAT_KERNELS_VNNI(q5_k, APUS_Q5_K)
FORMAT_KERNELS_VNNI(q6_k, APUS_Q6_K)
#endif
