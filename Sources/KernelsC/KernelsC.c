// Integer dot products over quantized weights and 8-bit activations: the instructions
// Swift cannot express (vpmaddubsw, vpdpbusd). Every kernel keeps one reduction order:
// eight fp32 lanes accumulate the blocks of a row in block order and are summed pairwise
// at the end, so a row's result does not depend on the batch it is in.
#include "KernelsC.h"

#include <math.h>
#include <string.h>

#if defined(__x86_64__)
#include <immintrin.h>
#define APUS_X86 1
#endif

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

void apus_quantize_q8(const float *x, int rows, int cols, int with_sum, apus_q8_block *out) {
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

#if APUS_X86

#define AVX2 __attribute__((target("avx2,fma,f16c")))
#define VNNI __attribute__((target("avx2,fma,f16c,avx512f,avx512vl,avx512bw,avx512vnni")))

// 32 nibbles (low halves first, then high halves) as bytes 0..15.
static inline AVX2 __m256i unpack_nibbles(const uint8_t *p) {
    __m128i raw = _mm_loadu_si128((const __m128i *)p);
    __m256i both = _mm256_set_m128i(_mm_srli_epi16(raw, 4), raw);
    return _mm256_and_si256(both, _mm256_set1_epi8(0x0F));
}

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

static inline AVX2 float hsum8(__m256 v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
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
                minimum += f16_load(w + 2) * a->s;                                                         \
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
                minimum += f16_load(w + 2) * a->s;                                                         \
            }                                                                                              \
            break;                                                                                         \
        case APUS_Q8_0:                                                                                    \
            for (int b = 0; b < blocks; b++, w += 34, a++) {                                               \
                __m256i q = _mm256_loadu_si256((const __m256i *)(w + 2));                                  \
                __m256i s = DOT_S(q, _mm256_loadu_si256((const __m256i *)a->qs));                          \
                acc = _mm256_fmadd_ps(_mm256_set1_ps(f16_load(w) * a->d), _mm256_cvtepi32_ps(s), acc);     \
            }                                                                                              \
            break;                                                                                         \
        }                                                                                                  \
        return hsum8(acc) + minimum;                                                                       \
    }

DEFINE_ROW_DOT(row_dot_avx2, AVX2, dot_unsigned_avx2, dot_signed_avx2)
DEFINE_ROW_DOT(row_dot_vnni, VNNI, dot_unsigned_vnni, dot_signed_vnni)

static AVX2 void matmul_avx2(int format, const uint8_t *w, size_t row_bytes, int r0, int r1, const apus_q8_block *act,
                             int tokens, int blocks, float *y, int y_stride) {
    for (int r = r0; r < r1; r++) {
        const uint8_t *row = w + (size_t)r * row_bytes;
        for (int t = 0; t < tokens; t++) y[(size_t)t * y_stride + r] = row_dot_avx2(format, row, act + (size_t)t * blocks, blocks);
    }
}

static VNNI void matmul_vnni(int format, const uint8_t *w, size_t row_bytes, int r0, int r1, const apus_q8_block *act,
                             int tokens, int blocks, float *y, int y_stride) {
    for (int r = r0; r < r1; r++) {
        const uint8_t *row = w + (size_t)r * row_bytes;
        for (int t = 0; t < tokens; t++) y[(size_t)t * y_stride + r] = row_dot_vnni(format, row, act + (size_t)t * blocks, blocks);
    }
}

#endif

int apus_matmul_q8(int format, const void *weights, size_t row_bytes, int row_begin, int row_end,
                   const apus_q8_block *activations, int tokens, int blocks, float *y, int y_stride) {
    if (format != APUS_Q4_0 && format != APUS_Q4_1 && format != APUS_Q5_0 && format != APUS_Q5_1 && format != APUS_Q8_0) return 0;
#if APUS_X86
    switch (apus_int8_isa()) {
    case 2:
        matmul_vnni(format, (const uint8_t *)weights, row_bytes, row_begin, row_end, activations, tokens, blocks, y, y_stride);
        return 1;
    case 1:
        matmul_avx2(format, (const uint8_t *)weights, row_bytes, row_begin, row_end, activations, tokens, blocks, y, y_stride);
        return 1;
    }
#endif
    (void)weights; (void)row_bytes; (void)row_begin; (void)row_end; (void)activations; (void)tokens; (void)blocks; (void)y; (void)y_stride;
    return 0;
}
