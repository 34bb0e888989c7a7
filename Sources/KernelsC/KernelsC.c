// Integer dot products over quantized weights and 8-bit activations: the instructions
// Swift cannot express (vpmaddubsw, vpdpbusd). Every kernel keeps one reduction order:
// eight fp32 lanes accumulate the blocks of a row in block order and are summed pairwise
// at the end, so a row's result does not depend on the batch it is in.
#include "KernelsC.h"
#include "FormatTable.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "x86.h"

static int isa_level = -1;

static int detect_isa(void) {
#if APUS_X86
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx512vnni") && __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512bw")) return 2;
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && __builtin_cpu_supports("f16c")) return 1;
#endif
    return 0;
}

int apus_int8_isa(void) {
    if (isa_level < 0) isa_level = detect_isa();
    return isa_level;
}

int apus_set_int8_isa(int level) {
    int available = detect_isa();
    isa_level = level < available ? level : available;
    return isa_level;
}

static inline float f16_round(float x) { return (float)(_Float16)x; }
static inline float f16_load(const uint8_t *p) {
    _Float16 h;
    memcpy(&h, p, 2);
    return (float)h;
}

#if APUS_X86
// The same rounding as the portable loop below: one multiply, then conversion in the
// default rounding mode (half to even), as nearbyintf does.
__attribute__((target("avx2,fma,f16c"))) static void quantize_q8_avx2(const float *x, int rows, int cols, int with_sum, apus_q8_block *out) {
    int blocks = cols / 32;
    const __m256 sign = _mm256_set1_ps(-0.0f);
    for (int r = 0; r < rows; r++) {
        for (int b = 0; b < blocks; b++) {
            const float *v = x + (size_t)r * cols + 32 * b;
            apus_q8_block *o = out + (size_t)r * blocks + b;
            __m256 x0 = _mm256_loadu_ps(v), x1 = _mm256_loadu_ps(v + 8), x2 = _mm256_loadu_ps(v + 16), x3 = _mm256_loadu_ps(v + 24);
            __m256 m = _mm256_max_ps(_mm256_max_ps(_mm256_andnot_ps(sign, x0), _mm256_andnot_ps(sign, x1)),
                                     _mm256_max_ps(_mm256_andnot_ps(sign, x2), _mm256_andnot_ps(sign, x3)));
            __m128 h = _mm_max_ps(_mm256_castps256_ps128(m), _mm256_extractf128_ps(m, 1));
            h = _mm_max_ps(h, _mm_movehl_ps(h, h));
            h = _mm_max_ss(h, _mm_movehdup_ps(h));
            float amax = _mm_cvtss_f32(h);
            float d = amax / 127.0f;
            float id = amax != 0 ? 127.0f / amax : 0.0f;
            __m256 scale = _mm256_set1_ps(id);
            __m256i q0 = _mm256_cvtps_epi32(_mm256_mul_ps(x0, scale)), q1 = _mm256_cvtps_epi32(_mm256_mul_ps(x1, scale));
            __m256i q2 = _mm256_cvtps_epi32(_mm256_mul_ps(x2, scale)), q3 = _mm256_cvtps_epi32(_mm256_mul_ps(x3, scale));
            __m256i sum = _mm256_add_epi32(_mm256_add_epi32(q0, q1), _mm256_add_epi32(q2, q3));
            // Pack to bytes; the packs interleave 128-bit lanes, which the permute undoes.
            __m256i bytes = _mm256_packs_epi16(_mm256_packs_epi32(q0, q1), _mm256_packs_epi32(q2, q3));
            bytes = _mm256_permutevar8x32_epi32(bytes, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
            _mm256_storeu_si256((__m256i *)o->qs, bytes);
            __m128i s4 = _mm_add_epi32(_mm256_castsi256_si128(sum), _mm256_extracti128_si256(sum, 1));
            s4 = _mm_add_epi32(s4, _mm_unpackhi_epi64(s4, s4));
            s4 = _mm_add_epi32(s4, _mm_shuffle_epi32(s4, 1));
            o->d = f16_round(d);
            o->s = with_sum ? f16_round(d * (float)_mm_cvtsi128_si32(s4)) : 0.0f;
            o->pad[0] = o->pad[1] = 0;
        }
    }
}
#endif

void apus_quantize_q8(const float *x, int rows, int cols, int with_sum, apus_q8_block *out) {
#if APUS_X86
    if (apus_int8_isa() >= 1) {
        quantize_q8_avx2(x, rows, cols, with_sum, out);
        return;
    }
#endif
    int blocks = cols / 32;
    for (int r = 0; r < rows; r++) {
        for (int b = 0; b < blocks; b++) {
            const float *v = x + (size_t)r * cols + 32 * b;
            apus_q8_block *o = out + (size_t)r * blocks + b;
            float amax = 0;
            for (int j = 0; j < 32; j++) amax = fmaxf(amax, fabsf(v[j]));
            float d = amax / 127.0f;
            float id = amax != 0 ? 127.0f / amax : 0.0f;
            int sum = 0;
            for (int j = 0; j < 32; j++) {
                int q = (int)nearbyintf(v[j] * id);  // the default rounding mode: half to even
                o->qs[j] = (int8_t)q;
                sum += q;
            }
            o->d = f16_round(d);
            o->s = with_sum ? f16_round(d * (float)sum) : 0.0f;
            o->pad[0] = o->pad[1] = 0;
        }
    }
}

// Writes an output, or adds it to what is there (the residual connection folded into the
// output projections): the same single float addition a separate pass would make.
#define STORE(slot, value) ((slot) = accumulate ? (slot) + (value) : (value))

#if APUS_X86

// Bit j of the little-endian 32-bit qh as 0x10 in byte j.
static inline AVX2 __m256i unpack_fifth_bits(const uint8_t *p) {
    uint32_t qh;
    memcpy(&qh, p, 4);
    const __m256i spread = _mm256_set_epi64x(0x0303030303030303LL, 0x0202020202020202LL, 0x0101010101010101LL, 0);
    __m256i bytes = _mm256_shuffle_epi8(_mm256_set1_epi32((int)qh), spread);
    const __m256i bit = _mm256_set1_epi64x(0x8040201008040201LL);
    __m256i set = _mm256_cmpeq_epi8(_mm256_and_si256(bytes, bit), bit);
    return _mm256_and_si256(set, _mm256_set1_epi8(0x10));
}

// Σ over 32 bytes of unsigned w × signed a, as 8 int32 lanes.
static inline AVX2 __m256i dot_unsigned_avx2(__m256i w, __m256i a) {
    return _mm256_madd_epi16(_mm256_maddubs_epi16(w, a), _mm256_set1_epi16(1));
}
static inline VNNI __m256i dot_unsigned_vnni(__m256i w, __m256i a) {
    return _mm256_dpbusd_epi32(_mm256_setzero_si256(), w, a);
}

// Signed × signed through |w| and sign(a, w).
static inline AVX2 __m256i dot_signed_avx2(__m256i w, __m256i a) {
    return dot_unsigned_avx2(_mm256_sign_epi8(w, w), _mm256_sign_epi8(a, w));
}
static inline VNNI __m256i dot_signed_vnni(__m256i w, __m256i a) {
    return dot_unsigned_vnni(_mm256_sign_epi8(w, w), _mm256_sign_epi8(a, w));
}

// One kernel per (format, ISA): a row of weights against one activation row.
#define DEFINE_ROW_DOT(NAME, ATTR, DOT_U, DOT_S)                                                          \
    static inline ATTR float NAME(int format, const uint8_t *w, const apus_q8_block *a, int blocks) {      \
        __m256 acc = _mm256_setzero_ps();                                                                  \
        float minimum = 0;                                                                                 \
        switch (format) {                                                                                  \
        case APUS_Q4_0:                                                                                    \
            for (int b = 0; b < blocks; b++, w += 18, a++) {                                               \
                __m256i q = _mm256_sub_epi8(unpack_nibbles(w + 2), _mm256_set1_epi8(8));                   \
                __m256i s = DOT_S(q, _mm256_loadu_si256((const __m256i *)a->qs));                          \
                acc = _mm256_fmadd_ps(_mm256_set1_ps(f16_load(w) * a->d), _mm256_cvtepi32_ps(s), acc);     \
            }                                                                                              \
            break;                                                                                         \
        case APUS_Q4_1:                                                                                    \
            for (int b = 0; b < blocks; b++, w += 20, a++) {                                               \
                __m256i s = DOT_U(unpack_nibbles(w + 4), _mm256_loadu_si256((const __m256i *)a->qs));      \
                acc = _mm256_fmadd_ps(_mm256_set1_ps(f16_load(w) * a->d), _mm256_cvtepi32_ps(s), acc);     \
                minimum = fmaf(f16_load(w + 2), a->s, minimum);                                                         \
            }                                                                                              \
            break;                                                                                         \
        case APUS_Q5_0:                                                                                    \
            for (int b = 0; b < blocks; b++, w += 22, a++) {                                               \
                __m256i q = _mm256_or_si256(unpack_nibbles(w + 6), unpack_fifth_bits(w + 2));              \
                q = _mm256_sub_epi8(q, _mm256_set1_epi8(16));                                              \
                __m256i s = DOT_S(q, _mm256_loadu_si256((const __m256i *)a->qs));                          \
                acc = _mm256_fmadd_ps(_mm256_set1_ps(f16_load(w) * a->d), _mm256_cvtepi32_ps(s), acc);     \
            }                                                                                              \
            break;                                                                                         \
        case APUS_Q5_1:                                                                                    \
            for (int b = 0; b < blocks; b++, w += 24, a++) {                                               \
                __m256i q = _mm256_or_si256(unpack_nibbles(w + 8), unpack_fifth_bits(w + 4));              \
                __m256i s = DOT_U(q, _mm256_loadu_si256((const __m256i *)a->qs));                          \
                acc = _mm256_fmadd_ps(_mm256_set1_ps(f16_load(w) * a->d), _mm256_cvtepi32_ps(s), acc);     \
                minimum = fmaf(f16_load(w + 2), a->s, minimum);                                                         \
            }                                                                                              \
            break;                                                                                         \
        case APUS_Q8_0:                                                                                    \
            for (int b = 0; b < blocks; b++, w += 34, a++) {                                               \
                __m256i q = _mm256_loadu_si256((const __m256i *)(w + 2));                                  \
                __m256i s = DOT_S(q, _mm256_loadu_si256((const __m256i *)a->qs));                          \
                acc = _mm256_fmadd_ps(_mm256_set1_ps(f16_load(w) * a->d), _mm256_cvtepi32_ps(s), acc);     \
            }                                                                                              \
            break;                                                                                         \
        case APUS_IQ4_NL:                                                                                  \
            for (int b = 0; b < blocks; b++, w += 18, a++) {                                               \
                __m256i q = iq4nl_values(unpack_nibbles(w + 2));                                           \
                __m256i s = DOT_S(q, _mm256_loadu_si256((const __m256i *)a->qs));                          \
                acc = _mm256_fmadd_ps(_mm256_set1_ps(f16_load(w) * a->d), _mm256_cvtepi32_ps(s), acc);     \
            }                                                                                              \
            break;                                                                                         \
        }                                                                                                  \
        return hsum8(acc) + minimum;                                                                       \
    }

DEFINE_ROW_DOT(row_dot_avx2, AVX2, dot_unsigned_avx2, dot_signed_avx2)

// A block of weights unpacked once for all the tokens of a tile: integer weights, whether
// they are signed, the scale, and the minimum (0 for the symmetric formats).
typedef struct {
    __m256i q;
    int is_signed;
    float d;
    float m;
} unpacked_block;

static inline __attribute__((always_inline)) AVX2 unpacked_block unpack_block(int format, const uint8_t *w) {
    unpacked_block u;
    u.d = f16_load(w);
    u.m = 0;
    switch (format) {
    case APUS_Q4_0:
        u.q = _mm256_sub_epi8(unpack_nibbles(w + 2), _mm256_set1_epi8(8));
        u.is_signed = 1;
        break;
    case APUS_Q4_1:
        u.q = unpack_nibbles(w + 4);
        u.m = f16_load(w + 2);
        u.is_signed = 0;
        break;
    case APUS_Q5_0:
        u.q = _mm256_sub_epi8(_mm256_or_si256(unpack_nibbles(w + 6), unpack_fifth_bits(w + 2)), _mm256_set1_epi8(16));
        u.is_signed = 1;
        break;
    case APUS_Q5_1:
        u.q = _mm256_or_si256(unpack_nibbles(w + 8), unpack_fifth_bits(w + 4));
        u.m = f16_load(w + 2);
        u.is_signed = 0;
        break;
    case APUS_IQ4_NL:
        u.q = iq4nl_values(unpack_nibbles(w + 2));
        u.is_signed = 1;
        break;
    case APUS_Q8_0:
        u.q = _mm256_loadu_si256((const __m256i *)(w + 2));
        u.is_signed = 1;
        break;
    default: __builtin_unreachable();  // only formats with a row in FormatTable.c get here
    }
    return u;
}

static inline __attribute__((always_inline)) int block_bytes(int format) {
    switch (format) {
    case APUS_Q4_0: return 18;
    case APUS_Q4_1: return 20;
    case APUS_Q5_0: return 22;
    case APUS_Q5_1: return 24;
    case APUS_IQ4_NL: return 18;
    case APUS_Q8_0: return 34;
    default: __builtin_unreachable();
    }
}

#define HAS_MIN(format) ((format) == APUS_Q4_1 || (format) == APUS_Q5_1)

// Up to TILE tokens against one row: each token's accumulator sees exactly the operations
// of the single-token row dot, in the same order, so results are bitwise the same.
#define TILE 4
static inline __attribute__((always_inline)) AVX2 void row_tokens_avx2(int format, const uint8_t *row, int stride, const apus_q8_block *act,
                                                                        int blocks, float *y, int y_stride, int accumulate) {
    __m256 acc[TILE];
    float minimum[TILE];
    for (int k = 0; k < TILE; k++) { acc[k] = _mm256_setzero_ps(); minimum[k] = 0; }
    for (int b = 0; b < blocks; b++) {
        unpacked_block u = unpack_block(format, row + (size_t)b * stride);
        for (int k = 0; k < TILE; k++) {
            const apus_q8_block *a = act + (size_t)k * blocks + b;
            __m256i av = _mm256_loadu_si256((const __m256i *)a->qs);
            __m256i s = u.is_signed ? dot_signed_avx2(u.q, av) : dot_unsigned_avx2(u.q, av);
            acc[k] = _mm256_fmadd_ps(_mm256_set1_ps(u.d * a->d), _mm256_cvtepi32_ps(s), acc[k]);
            if (HAS_MIN(format)) minimum[k] = fmaf(u.m, a->s, minimum[k]);
        }
    }
    for (int k = 0; k < TILE; k++) STORE(y[(size_t)k * y_stride], hsum8(acc[k]) + minimum[k]);
}

// One block of eight rows for many tokens: the rows' values transposed so that register c
// holds bytes 4c..4c+3 of every row (lane r: row r), and their magnitudes for the signed
// formats. One broadcast of a token's bytes 4c..4c+3 against register c gives, through
// `vpmaddubsw` and `vpmaddwd`, lane c of row_dot_avx2's eight int32 partial sums for all
// eight rows at once: the same exact integers, from one activation load per eight rows.
typedef struct {
    __m256i q[8];
    __m256i magnitude[8];
    __m256 d, m;
} block8;

static inline __attribute__((always_inline)) AVX2 void unpack_block8(int format, const uint8_t *w, size_t row_bytes, block8 *out) {
    __m256i q[8];
    float d[8], m[8];
    for (int r = 0; r < 8; r++) {
        const unpacked_block u = unpack_block(format, w + (size_t)r * row_bytes);
        q[r] = u.q;
        d[r] = u.d;
        m[r] = u.m;
    }
    out->d = _mm256_loadu_ps(d);
    out->m = _mm256_loadu_ps(m);
    // An 8 x 8 transpose of 32-bit elements.
    __m256i t[8], s[8];
    for (int k = 0; k < 4; k++) {
        t[2 * k] = _mm256_unpacklo_epi32(q[2 * k], q[2 * k + 1]);
        t[2 * k + 1] = _mm256_unpackhi_epi32(q[2 * k], q[2 * k + 1]);
    }
    for (int k = 0; k < 2; k++) {
        s[4 * k] = _mm256_unpacklo_epi64(t[4 * k], t[4 * k + 2]);
        s[4 * k + 1] = _mm256_unpackhi_epi64(t[4 * k], t[4 * k + 2]);
        s[4 * k + 2] = _mm256_unpacklo_epi64(t[4 * k + 1], t[4 * k + 3]);
        s[4 * k + 3] = _mm256_unpackhi_epi64(t[4 * k + 1], t[4 * k + 3]);
    }
    for (int c = 0; c < 4; c++) {
        out->q[c] = _mm256_permute2x128_si256(s[c], s[4 + c], 0x20);
        out->q[c + 4] = _mm256_permute2x128_si256(s[c], s[4 + c], 0x31);
    }
    for (int c = 0; c < 8; c++) out->magnitude[c] = _mm256_sign_epi8(out->q[c], out->q[c]);
}

// Eight rows from row r on against every token: their blocks unpacked once into `unpacked`,
// then per token one accumulator per partial-sum lane (lane r: row r), taking the row dot's
// float steps in block order, and the row dot's final sum (hsum8's order, then the minimum).
static inline __attribute__((always_inline)) AVX2 void rows8_avx2(int format, const uint8_t *w, size_t row_bytes, int r, const apus_q8_block *act,
                                                                   int tokens, int blocks, float *y, int y_stride, int accumulate, block8 *unpacked) {
    const int stride = block_bytes(format);
    const uint8_t *rows = w + (size_t)r * row_bytes;
    for (int b = 0; b < blocks; b++) unpack_block8(format, rows + (size_t)b * stride, row_bytes, &unpacked[b]);
    const int is_signed = !HAS_MIN(format);
    const __m256i ones = _mm256_set1_epi16(1);
    for (int t = 0; t < tokens; t++) {
        const apus_q8_block *a = act + (size_t)t * blocks;
        __m256 acc[8], minimum = _mm256_setzero_ps();
        for (int c = 0; c < 8; c++) acc[c] = _mm256_setzero_ps();
        for (int b = 0; b < blocks; b++) {
            const block8 *k = &unpacked[b];
            const __m256 scale = _mm256_mul_ps(k->d, _mm256_set1_ps(a[b].d));
            for (int c = 0; c < 8; c++) {
                int32_t chunk;
                memcpy(&chunk, a[b].qs + 4 * c, 4);
                const __m256i x = _mm256_set1_epi32(chunk);
                const __m256i pairs = is_signed ? _mm256_maddubs_epi16(k->magnitude[c], _mm256_sign_epi8(x, k->q[c])) : _mm256_maddubs_epi16(k->q[c], x);
                acc[c] = _mm256_fmadd_ps(scale, _mm256_cvtepi32_ps(_mm256_madd_epi16(pairs, ones)), acc[c]);
            }
            if (HAS_MIN(format)) minimum = _mm256_fmadd_ps(k->m, _mm256_set1_ps(a[b].s), minimum);
        }
        const __m256 sum = _mm256_add_ps(_mm256_add_ps(_mm256_add_ps(acc[0], acc[4]), _mm256_add_ps(acc[2], acc[6])),
                                         _mm256_add_ps(_mm256_add_ps(acc[1], acc[5]), _mm256_add_ps(acc[3], acc[7])));
        const __m256 v = _mm256_add_ps(sum, minimum);
        float *out = y + (size_t)t * y_stride + r;
        _mm256_storeu_ps(out, accumulate ? _mm256_add_ps(_mm256_loadu_ps(out), v) : v);
    }
}

// Four rows against one token, each taking row_dot_avx2's operations in its order: four
// independent chains of multiply-adds (one row's chain alone waits on each block's) and one
// activation load per block for the four.
static inline __attribute__((always_inline)) AVX2 void rows4_dot_avx2(int format, const uint8_t *w, size_t row_bytes, const apus_q8_block *a,
                                                                       int blocks, float *y, int accumulate) {
    const int stride = block_bytes(format);
    __m256 acc[4];
    float minimum[4];
    for (int k = 0; k < 4; k++) { acc[k] = _mm256_setzero_ps(); minimum[k] = 0; }
    // Four rows side by side are four streams the hardware prefetcher follows poorly; the
    // next four rows lie right after these, so each block fetches its share of them.
    const uint8_t *next = w + 4 * row_bytes;
    for (int b = 0; b < blocks; b++) {
        for (int line = 0; line < 4 * stride; line += 64) _mm_prefetch((const char *)next + (size_t)b * 4 * stride + line, _MM_HINT_T0);
        const __m256i av = _mm256_loadu_si256((const __m256i *)a[b].qs);
        for (int k = 0; k < 4; k++) {
            const unpacked_block u = unpack_block(format, w + (size_t)k * row_bytes + (size_t)b * stride);
            const __m256i s = u.is_signed ? dot_signed_avx2(u.q, av) : dot_unsigned_avx2(u.q, av);
            acc[k] = _mm256_fmadd_ps(_mm256_set1_ps(u.d * a[b].d), _mm256_cvtepi32_ps(s), acc[k]);
            if (HAS_MIN(format)) minimum[k] = fmaf(u.m, a[b].s, minimum[k]);
        }
    }
    for (int k = 0; k < 4; k++) STORE(y[k], hsum8(acc[k]) + minimum[k]);
}

// The AVX2 kernel: single tokens and up to three four rows at a time (rows4_dot_avx2); more, eight rows at a
// time through rows8_avx2 and the rows left over TILE tokens at a time.
static inline __attribute__((always_inline)) AVX2 void matmul_avx2(int format, const uint8_t *w, size_t row_bytes, int r0, int r1,
                                                                    const apus_q8_block *act, int tokens, int blocks, float *y, int y_stride, int accumulate) {
    if (tokens < TILE) {
        int r = r0;
        for (; r + 4 <= r1; r += 4)
            for (int t = 0; t < tokens; t++) rows4_dot_avx2(format, w + (size_t)r * row_bytes, row_bytes, act + (size_t)t * blocks, blocks, y + (size_t)t * y_stride + r, accumulate);
        for (; r < r1; r++)
            for (int t = 0; t < tokens; t++)
                STORE(y[(size_t)t * y_stride + r], row_dot_avx2(format, w + (size_t)r * row_bytes, act + (size_t)t * blocks, blocks));
        return;
    }
    const int stride = block_bytes(format);
    int r = r0;
    block8 *unpacked = r1 - r0 >= 8 ? aligned_alloc(32, sizeof(block8) * (size_t)blocks) : 0;
    if (unpacked) {
        for (; r + 8 <= r1; r += 8) rows8_avx2(format, w, row_bytes, r, act, tokens, blocks, y, y_stride, accumulate, unpacked);
        free(unpacked);
    }
    const int tiled = tokens / TILE * TILE;
    for (int row = r; row < r1; row++)
        for (int t = 0; t < tiled; t += TILE)
            row_tokens_avx2(format, w + (size_t)row * row_bytes, stride, act + (size_t)t * blocks, blocks, y + (size_t)t * y_stride + row, y_stride, accumulate);
    for (int t = tiled; t < tokens; t++) {
        const apus_q8_block *a = act + (size_t)t * blocks;
        float *yt = y + (size_t)t * y_stride;
        for (int row = r; row < r1; row++) STORE(yt[row], row_dot_avx2(format, w + (size_t)row * row_bytes, a, blocks));
    }
}

static inline VNNI int32_t hsum_epi32(__m256i v) {
    __m128i s = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
    s = _mm_add_epi32(s, _mm_unpackhi_epi64(s, s));
    s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 1));
    return _mm_cvtsi128_si32(s);
}

// The eight int32 sums of each of v[0..7], as the eight lanes of one vector (exact).
static inline VNNI __m256i sum8_epi32(const __m256i v[8]) {
    __m256i a = _mm256_hadd_epi32(_mm256_hadd_epi32(v[0], v[1]), _mm256_hadd_epi32(v[2], v[3]));
    __m256i b = _mm256_hadd_epi32(_mm256_hadd_epi32(v[4], v[5]), _mm256_hadd_epi32(v[6], v[7]));
    return _mm256_add_epi32(_mm256_permute2x128_si256(a, b, 0x20), _mm256_permute2x128_si256(a, b, 0x31));
}

// The two f16 at byte `offset` of eight rows `row_bytes` apart (a block's scale and
// minimum), as floats, in one gather.
static inline VNNI void f16_pairs(const uint8_t *row, __m256i rows, size_t offset, __m256 *first, __m256 *second) {
    const __m256i pairs = _mm256_i32gather_epi32((const int *)(row + offset), rows, 1);
    *first = _mm256_cvtph_ps(_mm256_cvtepi32_epi16(pairs));
    *second = _mm256_cvtph_ps(_mm256_cvtepi32_epi16(_mm256_srli_epi32(pairs, 16)));
}

// VNNI, fewer than sixteen tokens (decode): a block's integer dot product is exact, and
// each token's blocks go into one float, in block order, then the minimum terms, then their
// sum. Eight rows share a register, lane j for row j; leftover rows take the same steps
// one at a time. The tiled kernel below computes exactly these operations too.
static inline __attribute__((always_inline)) VNNI void rows8_vnni(int format, const uint8_t *w, size_t row_bytes, int r,
                                                                   const apus_q8_block *act, int tokens, int blocks,
                                                                   float *y, int y_stride, int accumulate) {
    const int stride = block_bytes(format);
    const uint8_t *row = w + (size_t)r * row_bytes;
    const __m256i offsets = _mm256_mullo_epi32(_mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7), _mm256_set1_epi32((int)row_bytes));
    __m256 acc[16], minimum[16];
    for (int k = 0; k < tokens; k++) acc[k] = minimum[k] = _mm256_setzero_ps();
    for (int b = 0; b < blocks; b++) {
        __m256i q[8], magnitude[8];
        int is_signed = 0;
        for (int j = 0; j < 8; j++) {
            unpacked_block u = unpack_block(format, row + (size_t)j * row_bytes + (size_t)b * stride);
            q[j] = u.q;
            magnitude[j] = _mm256_sign_epi8(u.q, u.q);
            is_signed = u.is_signed;
        }
        // The next eight rows, a block's share at a time: eight rows are read side by side,
        // which the hardware prefetcher does not follow as it does one row.
        const uint8_t *ahead = row + 16 * row_bytes + (size_t)b * 8 * stride;
        _mm_prefetch((const char *)ahead, _MM_HINT_T0);
        _mm_prefetch((const char *)ahead + 64, _MM_HINT_T0);
        _mm_prefetch((const char *)ahead + 128, _MM_HINT_T0);
        __m256 d, m;
        f16_pairs(row, offsets, (size_t)b * stride, &d, &m);
        for (int k = 0; k < tokens; k++) {
            const apus_q8_block *a = act + (size_t)k * blocks + b;
            const __m256i av = _mm256_loadu_si256((const __m256i *)a->qs);
            __m256i dots[8];
            for (int j = 0; j < 8; j++)
                dots[j] = is_signed ? dot_unsigned_vnni(magnitude[j], _mm256_sign_epi8(av, q[j])) : dot_unsigned_vnni(q[j], av);
            acc[k] = _mm256_fmadd_ps(_mm256_mul_ps(d, _mm256_set1_ps(a->d)), _mm256_cvtepi32_ps(sum8_epi32(dots)), acc[k]);
            if (HAS_MIN(format)) minimum[k] = _mm256_fmadd_ps(m, _mm256_set1_ps(a->s), minimum[k]);
        }
    }
    for (int k = 0; k < tokens; k++) {
        float out[8];
        _mm256_storeu_ps(out, _mm256_add_ps(acc[k], minimum[k]));
        for (int j = 0; j < 8; j++) STORE(y[(size_t)k * y_stride + r + j], out[j]);
    }
}

static inline __attribute__((always_inline)) VNNI void row_vnni(int format, const uint8_t *w, size_t row_bytes, int r,
                                                                 const apus_q8_block *act, int tokens, int blocks,
                                                                 float *y, int y_stride, int accumulate) {
    const int stride = block_bytes(format);
    const uint8_t *row = w + (size_t)r * row_bytes;
    float acc[16], minimum[16];
    for (int k = 0; k < tokens; k++) acc[k] = minimum[k] = 0;
    for (int b = 0; b < blocks; b++) {
        unpacked_block u = unpack_block(format, row + (size_t)b * stride);
        for (int k = 0; k < tokens; k++) {
            const apus_q8_block *a = act + (size_t)k * blocks + b;
            __m256i av = _mm256_loadu_si256((const __m256i *)a->qs);
            __m256i s = u.is_signed ? dot_signed_vnni(u.q, av) : dot_unsigned_vnni(u.q, av);
            acc[k] = fmaf(u.d * a->d, (float)hsum_epi32(s), acc[k]);
            if (HAS_MIN(format)) minimum[k] = fmaf(u.m, a->s, minimum[k]);
        }
    }
    for (int k = 0; k < tokens; k++) STORE(y[(size_t)k * y_stride + r], acc[k] + minimum[k]);
}

static inline __attribute__((always_inline)) VNNI void rows_vnni(int format, const uint8_t *w, size_t row_bytes, int r0, int r1,
                                                                  const apus_q8_block *act, int tokens, int blocks, float *y, int y_stride,
                                                                  int accumulate) {
    for (int t0 = 0; t0 < tokens; t0 += 16) {
        const int n = tokens - t0 < 16 ? tokens - t0 : 16;
        const apus_q8_block *a = act + (size_t)t0 * blocks;
        float *yt = y + (size_t)t0 * y_stride;
        int r = r0;
        for (; r + 8 <= r1; r += 8) rows8_vnni(format, w, row_bytes, r, a, n, blocks, yt, y_stride, accumulate);
        for (; r < r1; r++) row_vnni(format, w, row_bytes, r, a, n, blocks, yt, y_stride, accumulate);
    }
}

#endif

void apus_build_tiles16(const apus_q8_block *act, int blocks, int tokens, int tile_begin, int tile_end, apus_tile16_block *out) {
    for (int tile = tile_begin; tile < tile_end; tile++) {
        for (int b = 0; b < blocks; b++) {
            apus_tile16_block *o = out + (size_t)tile * blocks + b;
            memset(o, 0, sizeof *o);  // lanes past the last token stay zero
            for (int t = 0; t < 16 && 16 * tile + t < tokens; t++) {
                const apus_q8_block *a = act + (size_t)(16 * tile + t) * blocks + b;
                int32_t sum = 0;
                for (int i = 0; i < 8; i++) memcpy(&o->qs[i][t], a->qs + 4 * i, 4);
                for (int j = 0; j < 32; j++) sum += a->qs[j];
                o->d[t] = a->d;
                o->s[t] = a->s;
                o->neg_sum[t] = -sum;
            }
        }
    }
}

#if APUS_X86
// Rows handled together: each activation load serves ROWS dot products.
#define ROWS 4

// A block's quants as unsigned bytes u = q + bias (the stored values, before any offset
// is removed; IQ4_NL's table levels plus 128), and the bias: vpdpbusd then sums u·a, and bias·Σa (per token, not per row)
// turns that into the exact Σ q·a.
static inline __attribute__((always_inline)) AVX2 __m256i unpack_unsigned(int format, const uint8_t *w) {
    switch (format) {
    case APUS_Q4_0: return unpack_nibbles(w + 2);
    case APUS_Q4_1: return unpack_nibbles(w + 4);
    case APUS_Q5_0: return _mm256_or_si256(unpack_nibbles(w + 6), unpack_fifth_bits(w + 2));
    case APUS_Q5_1: return _mm256_or_si256(unpack_nibbles(w + 8), unpack_fifth_bits(w + 4));
    case APUS_IQ4_NL: return _mm256_xor_si256(iq4nl_values(unpack_nibbles(w + 2)), _mm256_set1_epi8((char)0x80));
    case APUS_Q8_0: return _mm256_xor_si256(_mm256_loadu_si256((const __m256i *)(w + 2)), _mm256_set1_epi8((char)0x80));
    default: __builtin_unreachable();
    }
}

// log2 of the bias of unpack_unsigned, or -1 for none.
static inline __attribute__((always_inline)) int bias_shift(int format) {
    switch (format) {
    case APUS_Q4_0: return 3;
    case APUS_Q5_0: return 4;
    case APUS_Q8_0: case APUS_IQ4_NL: return 7;
    default: return -1;
    }
}

// A group of `rows` rows against every tile, sixteen tokens per zmm. The rows' weights are
// unpacked once into unsigned bytes (u = q + bias), broadcast four at a time against the
// tile's signed activations; each block's sum starts from -bias·Σa of each token (the
// tile's, shared by all rows), so it is the exact integer Σ q·a. Lane t then sees the
// operations of `rows_vnni` for token t: one float multiply-add per block in block order,
// then the minimum terms, then their sum.
static inline __attribute__((always_inline)) VNNI void tile16_row_group(int format, const uint8_t *w, size_t row_bytes, int r, int rows,
                                                                         const apus_tile16_block *tiles, int tokens, int blocks,
                                                                         float *y, int y_stride, int accumulate) {
    const int stride = block_bytes(format), shift = bias_shift(format);
    // Weights stream from memory once per call when there are few tiles (decode): fetch the
    // group after next while this one is unpacked.
    const uint8_t *ahead = w + (size_t)(r + 2 * ROWS) * row_bytes;
    for (size_t offset = 0; offset < (size_t)rows * row_bytes; offset += 64) _mm_prefetch((const char *)ahead + offset, _MM_HINT_T0);
    uint8_t weights[ROWS][blocks * 32] __attribute__((aligned(32)));
    float scales[ROWS][blocks], minima[ROWS][blocks];
    for (int k = 0; k < rows; k++) {
        const uint8_t *row = w + (size_t)(r + k) * row_bytes;
        for (int b = 0; b < blocks; b++) {
            const uint8_t *block = row + (size_t)b * stride;
            _mm256_store_si256((__m256i *)(weights[k] + 32 * b), unpack_unsigned(format, block));
            scales[k][b] = f16_load(block);
            minima[k][b] = HAS_MIN(format) ? f16_load(block + 2) : 0;
        }
    }
    for (int tile = 0; 16 * tile < tokens; tile++) {
        const apus_tile16_block *T = tiles + (size_t)tile * blocks;
        __m512 acc[ROWS], minimum[ROWS];
        for (int k = 0; k < rows; k++) acc[k] = minimum[k] = _mm512_setzero_ps();
        for (int b = 0; b < blocks; b++) {
            const __m512i start = shift < 0 ? _mm512_setzero_si512() : _mm512_slli_epi32(_mm512_loadu_si512(T[b].neg_sum), shift);
            __m512i dot[ROWS];
            for (int k = 0; k < rows; k++) dot[k] = start;
            for (int i = 0; i < 8; i++) {
                const __m512i a = _mm512_loadu_si512((const void *)T[b].qs[i]);
                for (int k = 0; k < rows; k++) {
                    int32_t group;
                    memcpy(&group, weights[k] + 32 * b + 4 * i, 4);
                    dot[k] = _mm512_dpbusd_epi32(dot[k], _mm512_set1_epi32(group), a);
                }
            }
            const __m512 d = _mm512_loadu_ps(T[b].d);
            for (int k = 0; k < rows; k++) {
                acc[k] = _mm512_fmadd_ps(_mm512_mul_ps(_mm512_set1_ps(scales[k][b]), d), _mm512_cvtepi32_ps(dot[k]), acc[k]);
                if (HAS_MIN(format)) minimum[k] = _mm512_fmadd_ps(_mm512_set1_ps(minima[k][b]), _mm512_loadu_ps(T[b].s), minimum[k]);
            }
        }
        for (int k = 0; k < rows; k++) {
            float out[16];
            _mm512_storeu_ps(out, _mm512_add_ps(acc[k], minimum[k]));
            for (int t = 0; t < 16 && 16 * tile + t < tokens; t++) STORE(y[(size_t)(16 * tile + t) * y_stride + r + k], out[t]);
        }
    }
}

static inline __attribute__((always_inline)) VNNI void tile16_rows(int format, const uint8_t *w, size_t row_bytes, int r0, int r1,
                                                                    const apus_tile16_block *tiles, int tokens, int blocks,
                                                                    float *y, int y_stride, int accumulate) {
    int r = r0;
    for (; r + ROWS <= r1; r += ROWS) tile16_row_group(format, w, row_bytes, r, ROWS, tiles, tokens, blocks, y, y_stride, accumulate);
    for (; r < r1; r++) tile16_row_group(format, w, row_bytes, r, 1, tiles, tokens, blocks, y, y_stride, accumulate);
}

// Each 32-value format's kernels, specialised (FormatTable.h).
#define FORMAT_KERNELS(name, FORMAT)                                                                                  \
    AVX2 APUS_ROWS_KERNEL(apus_##name##_avx2) {                                                                      \
        matmul_avx2(FORMAT, w, row_bytes, r0, r1, (const apus_q8_block *)activations, tokens, blocks, y, y_stride, accumulate); \
    }                                                                                                                \
    VNNI APUS_ROWS_KERNEL(apus_##name##_vnni) {                                                                      \
        rows_vnni(FORMAT, w, row_bytes, r0, r1, (const apus_q8_block *)activations, tokens, blocks, y, y_stride, accumulate); \
    }                                                                                                                \
    VNNI APUS_ROWS_KERNEL(apus_##name##_tiles16) {                                                                   \
        tile16_rows(FORMAT, w, row_bytes, r0, r1, (const apus_tile16_block *)activations, tokens, blocks, y, y_stride, accumulate); \
    }
FORMAT_KERNELS(q4_0, APUS_Q4_0)
FORMAT_KERNELS(q4_1, APUS_Q4_1)
FORMAT_KERNELS(q5_0, APUS_Q5_0)
FORMAT_KERNELS(q5_1, APUS_Q5_1)
FORMAT_KERNELS(q8_0, APUS_Q8_0)
FORMAT_KERNELS(iq4_nl, APUS_IQ4_NL)
#endif
