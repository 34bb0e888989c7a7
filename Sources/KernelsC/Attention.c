// Attention over a paged cache of f16 keys and values, or of Q8_0/Q4_0 blocks.
#include "KernelsC.h"
#include "x86.h"

#include <math.h>

// Where position `p`'s key and value start, in halves from `kv->keys` and `kv->values`.
static inline size_t row_index(const apus_kv_rows *kv, int p) {
    return (size_t)kv->table[p / kv->block_size] * (size_t)kv->block_size + (size_t)(p % kv->block_size);
}

// Where position p's key row starts (an f16 cache's value row starts there too).
static inline size_t row_offset(const apus_kv_rows *kv, int p) { return row_index(kv, p) * (size_t)kv->stride; }

#if APUS_X86
// ggml's AVX-512 ggml_vec_dot_f16 order, in 8-lane halves: four 16-lane accumulators over
// steps of 64, combined as (a0 + a2) + (a1 + a3), reduced as a tree; the tail in double.
static inline AVX2 float dot_f16(const float *q, const uint16_t *k, int d) {
    __m256 lo[4], hi[4];
    for (int j = 0; j < 4; j++) lo[j] = hi[j] = _mm256_setzero_ps();
    int i = 0;
    for (; i + 64 <= d; i += 64) {
        for (int j = 0; j < 4; j++) {
            const float *qj = q + i + 16 * j;
            const uint16_t *kj = k + i + 16 * j;
            lo[j] = _mm256_fmadd_ps(_mm256_loadu_ps(qj), _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)kj)), lo[j]);
            hi[j] = _mm256_fmadd_ps(_mm256_loadu_ps(qj + 8), _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(kj + 8))), hi[j]);
        }
    }
    __m256 l = _mm256_add_ps(_mm256_add_ps(lo[0], lo[2]), _mm256_add_ps(lo[1], lo[3]));
    __m256 h = _mm256_add_ps(_mm256_add_ps(hi[0], hi[2]), _mm256_add_ps(hi[1], hi[3]));
    double dot = hsum8(_mm256_add_ps(l, h));
    for (; i < d; i++) dot += (double)(q[i] * _cvtsh_ss(k[i]));
    return (float)dot;
}

// Query heads position by position (head h reads KV head h / group): each head's running
// state sees exactly the operations it would alone, and the heads' chains of dependent
// operations (through `o`) interleave, so the core overlaps them instead of waiting on one.
static AVX2 void attention_avx2(const float *q, int kv_heads, int group, int q_stride, const apus_kv_rows *kv, int begin, int end, int d,
                                float scale, float *out, float *max_io, float *sum_io, int state_stride) {
    const int heads = kv_heads * group;
    float m[APUS_MAX_HEADS], sum[APUS_MAX_HEADS];
    for (int h = 0; h < heads; h++) {
        m[h] = max_io[(size_t)h * state_stride];
        sum[h] = sum_io[(size_t)h * state_stride];
    }
    for (int p = begin; p < end; p++) {
        const size_t row = row_offset(kv, p);
        for (int h = 0; h < heads; h++) {
            const uint16_t *k = kv->keys + row + (size_t)(h / group) * d, *v = kv->values + row + (size_t)(h / group) * d;
            float *o = out + (size_t)h * state_stride;
            float score = dot_f16(q + (size_t)h * q_stride, k, d) * scale;
            float ms = 1, vs = 1;
            if (score > m[h]) {
                ms = m[h] == -INFINITY ? 0 : expf(m[h] - score);
                m[h] = score;
            } else {
                vs = expf(score - m[h]);
            }
            __m256 msv = _mm256_set1_ps(ms), vsv = _mm256_set1_ps(vs);
            int i = 0;
            for (; i + 8 <= d; i += 8) {
                __m256 acc = _mm256_loadu_ps(o + i);
                if (ms != 1) acc = _mm256_mul_ps(acc, msv);
                _mm256_storeu_ps(o + i, _mm256_fmadd_ps(_mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(v + i))), vsv, acc));
            }
            for (; i < d; i++) {
                float acc = o[i];
                if (ms != 1) acc *= ms;
                o[i] = fmaf(_cvtsh_ss(v[i]), vs, acc);
            }
            sum[h] = fmaf(sum[h], ms, vs);
        }
    }
    for (int h = 0; h < heads; h++) {
        max_io[(size_t)h * state_stride] = m[h];
        sum_io[(size_t)h * state_stride] = sum[h];
    }
}

#define INLINE static inline __attribute__((always_inline))

// The scores of one query head (`nv` vectors of 8 floats) against 8 keys (f32 rows `d`
// apart): eight chains of fused multiply-adds side by side, then the eight horizontal sums
// together by a transposing tree of pairwise adds.
INLINE AVX2 __m256 scores8(const int nv, const float *q, const float *k, int d) {
    __m256 v[8];
    const __m256 q0 = _mm256_loadu_ps(q);
    for (int j = 0; j < 8; j++) v[j] = _mm256_mul_ps(q0, _mm256_loadu_ps(k + (size_t)j * d));
    for (int c = 1; c < nv; c++) {
        const __m256 qc = _mm256_loadu_ps(q + 8 * c);
        for (int j = 0; j < 8; j++) v[j] = _mm256_fmadd_ps(qc, _mm256_loadu_ps(k + (size_t)j * d + 8 * c), v[j]);
    }
    const __m256 s0123 = _mm256_hadd_ps(_mm256_hadd_ps(v[0], v[1]), _mm256_hadd_ps(v[2], v[3]));
    const __m256 s4567 = _mm256_hadd_ps(_mm256_hadd_ps(v[4], v[5]), _mm256_hadd_ps(v[6], v[7]));
    return _mm256_add_ps(_mm256_permute2f128_ps(s0123, s4567, 0x20), _mm256_permute2f128_ps(s0123, s4567, 0x31));
}

// `x` moved up by one, two or four lanes, -inf in the lanes vacated.
INLINE AVX2 __m256 shift_up8(__m256 x, int k) {
    const __m256 ninf = _mm256_set1_ps(-INFINITY);
    switch (k) {
    case 1: return _mm256_blend_ps(_mm256_permutevar8x32_ps(x, _mm256_setr_epi32(0, 0, 1, 2, 3, 4, 5, 6)), ninf, 0x01);
    case 2: return _mm256_blend_ps(_mm256_permutevar8x32_ps(x, _mm256_setr_epi32(0, 0, 0, 1, 2, 3, 4, 5)), ninf, 0x03);
    default: return _mm256_blend_ps(_mm256_permutevar8x32_ps(x, _mm256_setr_epi32(0, 0, 0, 0, 0, 1, 2, 3)), ninf, 0x0F);
    }
}

// The softmax and value sums of `group` query heads (one KV head) over eight positions whose
// keys and values are in `kf` and `vf` (f32 rows of `d`), `n` of them valid: attend16's
// steps in eight lanes. Each position's weight and rescaling are attention_avx2's (the
// running maximum before a position is a prefix maximum, so every exponent is known up
// front and one vector exp computes them); the value sums stay in registers, 64 floats of
// a head at a time.
INLINE AVX2 void attend8(const int nv, const float *q, int group, int q_stride, const float *kf, const float *vf, int n, float scale,
                         float *out, float *max_io, float *sum_io, int state_stride) {
    const int d = 8 * nv;
    const __m256 valid = _mm256_cmp_ps(_mm256_setr_ps(0, 1, 2, 3, 4, 5, 6, 7), _mm256_set1_ps((float)n), _CMP_LT_OQ);
    const __m256 one = _mm256_set1_ps(1.0f), ninf = _mm256_set1_ps(-INFINITY);
    for (int h = 0; h < group; h++) {
        float *m = max_io + (size_t)h * state_stride, *sum = sum_io + (size_t)h * state_stride;
        const __m256 s = _mm256_blendv_ps(ninf, _mm256_mul_ps(scores8(nv, q + (size_t)h * q_stride, kf, d), _mm256_set1_ps(scale)), valid);
        __m256 upto = s;  // inclusive prefix maximum of the scores
        upto = _mm256_max_ps(upto, shift_up8(upto, 1));
        upto = _mm256_max_ps(upto, shift_up8(upto, 2));
        upto = _mm256_max_ps(upto, shift_up8(upto, 4));
        const __m256 before = _mm256_max_ps(_mm256_set1_ps(*m), shift_up8(upto, 1));  // the running maximum before each
        const __m256 raises = _mm256_and_ps(_mm256_cmp_ps(s, before, _CMP_GT_OQ), valid);
        const __m256 e = exp8(_mm256_blendv_ps(_mm256_sub_ps(s, before), _mm256_sub_ps(before, s), raises));
        float ms[8], vs[8], prefix[8];
        _mm256_storeu_ps(ms, _mm256_blendv_ps(one, e, raises));
        _mm256_storeu_ps(vs, _mm256_blendv_ps(e, one, raises));
        _mm256_storeu_ps(prefix, upto);
        const unsigned rescale = (unsigned)_mm256_movemask_ps(raises);
        float total = *sum;
        for (int i = 0; i < n; i++) total = fmaf(total, ms[i], vs[i]);
        *sum = total;
        if (prefix[n - 1] > *m) *m = prefix[n - 1];
        float *o = out + (size_t)h * state_stride;
        for (int c0 = 0; c0 < nv; c0 += 8) {
            const int cn = nv - c0 < 8 ? nv - c0 : 8;
            __m256 acc[8];
            for (int c = 0; c < cn; c++) acc[c] = _mm256_loadu_ps(o + 8 * (c0 + c));
            for (int i = 0; i < n; i++) {
                const float *v = vf + (size_t)i * d + 8 * c0;
                if (rescale >> i & 1) {
                    const __m256 r = _mm256_set1_ps(ms[i]);
                    for (int c = 0; c < cn; c++) acc[c] = _mm256_mul_ps(acc[c], r);
                }
                const __m256 w = _mm256_set1_ps(vs[i]);
                for (int c = 0; c < cn; c++) acc[c] = _mm256_fmadd_ps(_mm256_loadu_ps(v + 8 * c), w, acc[c]);
            }
            for (int c = 0; c < cn; c++) _mm256_storeu_ps(o + 8 * (c0 + c), acc[c]);
        }
    }
}

// Two-byte units that one head's `d` values take in a cache row of `format` (f16, or Q8_0
// and Q4_0 blocks are 34 and 18 bytes per 32 values, so every row is whole units).
static inline int head_units(int format, int d) { return format == APUS_Q8_0 ? d / 32 * 17 : format == APUS_Q4_0 ? d / 32 * 9 : d; }

// One head's `d` values of a cache row to f32: f16 converted, Q8_0 and Q4_0 blocks decoded
// as the Swift layouts decode them (the integer times the block's scale).
INLINE AVX2 void decode_head(const int format, const uint16_t *src, int d, float *x) {
    if (format == APUS_Q8_0 || format == APUS_Q4_0) {
        const uint8_t *p = (const uint8_t *)src;
        const int block_bytes = format == APUS_Q8_0 ? 34 : 18;
        for (int b = 0; b < d / 32; b++, p += block_bytes, x += 32) {
            const __m256 scale = _mm256_set1_ps(_cvtsh_ss((unsigned short)(p[0] | p[1] << 8)));
            __m128i q[4];
            if (format == APUS_Q8_0) {
                for (int j = 0; j < 4; j++) q[j] = _mm_loadl_epi64((const __m128i *)(p + 2 + 8 * j));
            } else {
                const __m256i values = _mm256_sub_epi8(unpack_nibbles(p + 2), _mm256_set1_epi8(8));
                const __m128i lo = _mm256_castsi256_si128(values), hi = _mm256_extracti128_si256(values, 1);
                q[0] = lo, q[1] = _mm_srli_si128(lo, 8), q[2] = hi, q[3] = _mm_srli_si128(hi, 8);
            }
            for (int j = 0; j < 4; j++) _mm256_storeu_ps(x + 8 * j, _mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(q[j])), scale));
        }
        return;
    }
    for (int c = 0; c < d / 8; c++) _mm256_storeu_ps(x + 8 * c, _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(src + 8 * c))));
}

// Position p's key of KV head g (`d` channels) from its staged f16 copy.
INLINE AVX2 void decode_staged(const apus_staged_keys *keys, const apus_kv_rows *kv, int p, int g, int d, float *x) {
    const int block = kv->table[p / kv->block_size], slot = p % kv->block_size;
    decode_head(APUS_F16, keys->staged[block] + keys->staged_offset + (size_t)slot * keys->width + keys->first_channel + g * d, d, x);
}

// Position p's key of KV head g (`d` channels) from sealed kivi4 keys: minimum + scale ·
// level by one fused multiply-add, as ChannelKeys decodes.
INLINE AVX2 void decode_kivi4(const apus_kivi4_keys *keys, const apus_kv_rows *kv, int p, int g, int d, float *x) {
    const int block = kv->table[p / kv->block_size], slot = p % kv->block_size, width = keys->staged.width;
    const int channel = keys->staged.first_channel + g * d;
    const uint8_t *base = keys->blocks + (size_t)block * (size_t)(kv->block_size / 2 + 4) * width;
    const uint8_t *levels = base + (size_t)slot * (width / 2) + channel / 2;
    const uint16_t *scales = (const uint16_t *)(base + (size_t)kv->block_size * (width / 2)) + channel, *minima = scales + width;
    for (int b = 0; b < d / 32; b++, levels += 16, scales += 32, minima += 32, x += 32) {
        const __m256i v = unpack_nibbles(levels);
        const __m128i lo = _mm256_castsi256_si128(v), hi = _mm256_extracti128_si256(v, 1);
        const __m128i q[4] = {lo, _mm_srli_si128(lo, 8), hi, _mm_srli_si128(hi, 8)};
        for (int j = 0; j < 4; j++) {
            const __m256 s = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(scales + 8 * j)));
            const __m256 m = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(minima + 8 * j)));
            _mm256_storeu_ps(x + 8 * j, _mm256_fmadd_ps(s, _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(q[j])), m));
        }
    }
}

// attention_avx512's structure in AVX2, eight positions at a time: each KV head's keys and
// values decoded to f32 once for its query heads (each f16, or Q8_0/Q4_0 blocks:
// `key_format`, `value_format`; kivi4 keys from `kivi`), eight scores per head at once,
// their weights from one vector exp, the value sums in registers; the next eight rows
// prefetched.
static AVX2 void attention_avx2_tiled(int key_format, int value_format, const apus_kivi4_keys *kivi, const apus_staged_keys *staged,
                                      const float *q, int kv_heads, int group, int q_stride, const apus_kv_rows *kv, int begin, int end, int d,
                                      float scale, float *out, float *max_io, float *sum_io, int state_stride) {
    const int nv = d / 8, key_units = head_units(key_format, d), value_units = head_units(value_format, d);
    const apus_staged_keys *own = kivi ? &kivi->staged : staged;  // where the query's own block is read
    float kf[8 * 256], vf[8 * 256];
    const int key_bytes = 2 * key_units * kv_heads, value_bytes = 2 * value_units * kv_heads;
    size_t rows[16];  // these eight positions, then the next eight, whose rows are prefetched
    for (int i = 0; i < 8 && begin + i < end; i++) rows[8 + i] = row_index(kv, begin + i);
    for (int p0 = begin; p0 < end; p0 += 8) {
        const int n = end - p0 < 8 ? end - p0 : 8;
        for (int i = 0; i < n; i++) rows[i] = rows[8 + i];
        for (int i = 0; i < 8 && p0 + 8 + i < end; i++) {
            const size_t row = rows[8 + i] = row_index(kv, p0 + 8 + i);
            if (!kivi)
                for (int line = 0; line < key_bytes; line += 64) _mm_prefetch((const char *)(kv->keys + row * kv->stride) + line, _MM_HINT_T0);
            for (int line = 0; line < value_bytes; line += 64)
                _mm_prefetch((const char *)(kv->values + row * kv->value_stride) + line, _MM_HINT_T0);
        }
        for (int g = 0; g < kv_heads; g++) {
            for (int i = 0; i < 8; i++) {
                if (i < n) {
                    const int p = p0 + i;
                    if (own && p / kv->block_size == own->own_block) {
                        decode_staged(own, kv, p, g, d, kf + i * d);
                    } else if (kivi) {
                        decode_kivi4(kivi, kv, p, g, d, kf + i * d);
                    } else {
                        decode_head(key_format, kv->keys + rows[i] * kv->stride + (size_t)g * key_units, d, kf + i * d);
                    }
                    decode_head(value_format, kv->values + rows[i] * kv->value_stride + (size_t)g * value_units, d, vf + i * d);
                } else {
                    for (int c = 0; c < nv; c++) _mm256_storeu_ps(kf + i * d + 8 * c, _mm256_setzero_ps());
                }
            }
            const size_t h = (size_t)g * group;
            attend8(nv, q + h * q_stride, group, q_stride, kf, vf, n, scale, out + h * state_stride, max_io + h * state_stride,
                    sum_io + h * state_stride, state_stride);
        }
    }
}

INLINE VNNI __m512 add_pairs(__m512 a, __m512 b, const int *lo, const int *hi) {
    __m512i l = _mm512_loadu_si512(lo), h = _mm512_loadu_si512(hi);
    return _mm512_add_ps(_mm512_permutex2var_ps(a, l, b), _mm512_permutex2var_ps(a, h, b));
}

// The scores of one query head (`nv` vectors of 16 floats) against 16 keys (f32 rows `d`
// apart): per key, one chain of fused multiply-adds over the vectors, then the sixteen
// horizontal sums together as a transposing tree (lanes i + i+8, then i + i+4, i + i+2,
// i + i+1).
INLINE VNNI __m512 scores16(const int nv, const float *q, const float *k, int d) {
    static const int l1[16] = {0, 1, 2, 3, 4, 5, 6, 7, 16, 17, 18, 19, 20, 21, 22, 23};
    static const int h1[16] = {8, 9, 10, 11, 12, 13, 14, 15, 24, 25, 26, 27, 28, 29, 30, 31};
    static const int l2[16] = {0, 1, 2, 3, 8, 9, 10, 11, 16, 17, 18, 19, 24, 25, 26, 27};
    static const int h2[16] = {4, 5, 6, 7, 12, 13, 14, 15, 20, 21, 22, 23, 28, 29, 30, 31};
    static const int l3[16] = {0, 1, 4, 5, 8, 9, 12, 13, 16, 17, 20, 21, 24, 25, 28, 29};
    static const int h3[16] = {2, 3, 6, 7, 10, 11, 14, 15, 18, 19, 22, 23, 26, 27, 30, 31};
    static const int l4[16] = {0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30};
    static const int h4[16] = {1, 3, 5, 7, 9, 11, 13, 15, 17, 19, 21, 23, 25, 27, 29, 31};
    __m512 qv[16];
    for (int c = 0; c < nv; c++) qv[c] = _mm512_loadu_ps(q + 16 * c);
    __m512 r1[8];
    for (int pair = 0; pair < 8; pair++) {
        __m512 v[2];
        for (int j = 0; j < 2; j++) {
            const float *kj = k + (size_t)(2 * pair + j) * d;
            v[j] = _mm512_mul_ps(qv[0], _mm512_loadu_ps(kj));
            for (int c = 1; c < nv; c++) v[j] = _mm512_fmadd_ps(qv[c], _mm512_loadu_ps(kj + 16 * c), v[j]);
        }
        r1[pair] = add_pairs(v[0], v[1], l1, h1);
    }
    __m512 r2[4], r3[2];
    for (int i = 0; i < 4; i++) r2[i] = add_pairs(r1[2 * i], r1[2 * i + 1], l2, h2);
    for (int i = 0; i < 2; i++) r3[i] = add_pairs(r2[2 * i], r2[2 * i + 1], l3, h3);
    return add_pairs(r3[0], r3[1], l4, h4);
}

// `x` shifted up by `k` lanes, -inf shifted in.
#define SHIFT_UP(x, k) _mm512_castsi512_ps(_mm512_alignr_epi32(_mm512_castps_si512(x), _mm512_castps_si512(_mm512_set1_ps(-INFINITY)), 16 - (k)))

// The value sums of `hb` heads (`nv` vectors each, kept in registers) over `n` positions:
// per position, a new maximum first rescales the sum, then the value enters with its
// weight: attention_avx2's operations, in its order.
INLINE VNNI void accumulate_values(const int hb, const int nv, float *const *o, const float *values, int n, int d,
                                   const float *const *ms, const float *const *vs, const unsigned *rescale) {
    __m512 acc[3][16];
    for (int h = 0; h < hb; h++)
        for (int c = 0; c < nv; c++) acc[h][c] = _mm512_loadu_ps(o[h] + 16 * c);
    for (int i = 0; i < n; i++) {
        const float *v = values + (size_t)i * d;
        for (int h = 0; h < hb; h++) {
            if (rescale[h] >> i & 1) {
                __m512 s = _mm512_set1_ps(ms[h][i]);
                for (int c = 0; c < nv; c++) acc[h][c] = _mm512_mul_ps(acc[h][c], s);
            }
            __m512 w = _mm512_set1_ps(vs[h][i]);
            for (int c = 0; c < nv; c++) acc[h][c] = _mm512_fmadd_ps(_mm512_loadu_ps(v + 16 * c), w, acc[h][c]);
        }
    }
    for (int h = 0; h < hb; h++)
        for (int c = 0; c < nv; c++) _mm512_storeu_ps(o[h] + 16 * c, acc[h][c]);
}

// The softmax and value sums of `group` query heads (one KV head) over sixteen positions
// whose keys and values are in `kf` and `vf` (f32 rows of `d`), `n` of them valid.
INLINE VNNI void attend16(const int nv, const float *q, int group, int q_stride, const float *kf, const float *vf, int n, float scale,
                          float *out, float *max_io, float *sum_io, int state_stride) {
    const int d = 16 * nv;
    float ms[APUS_MAX_GROUP][16], vs[APUS_MAX_GROUP][16];
    unsigned rescale[APUS_MAX_GROUP];
    const __mmask16 valid = (__mmask16)((1u << n) - 1);
    for (int h = 0; h < group; h++) {
        float *m = max_io + (size_t)h * state_stride, *sum = sum_io + (size_t)h * state_stride;
        __m512 s = _mm512_mul_ps(scores16(nv, q + (size_t)h * q_stride, kf, d), _mm512_set1_ps(scale));
        s = _mm512_mask_mov_ps(_mm512_set1_ps(-INFINITY), valid, s);
        __m512 upto = s;  // inclusive prefix maximum of the scores
        upto = _mm512_max_ps(upto, SHIFT_UP(upto, 1));
        upto = _mm512_max_ps(upto, SHIFT_UP(upto, 2));
        upto = _mm512_max_ps(upto, SHIFT_UP(upto, 4));
        upto = _mm512_max_ps(upto, SHIFT_UP(upto, 8));
        const __m512 before = _mm512_max_ps(_mm512_set1_ps(*m), SHIFT_UP(upto, 1));  // the running maximum before each
        const __mmask16 raises = _mm512_cmp_ps_mask(s, before, _CMP_GT_OQ) & valid;
        const __m512 e = exp16(_mm512_mask_blend_ps(raises, _mm512_sub_ps(s, before), _mm512_sub_ps(before, s)));
        const __m512 one = _mm512_set1_ps(1.0f);
        _mm512_storeu_ps(ms[h], _mm512_mask_blend_ps(raises, one, e));
        _mm512_storeu_ps(vs[h], _mm512_mask_blend_ps(raises, e, one));
        rescale[h] = raises;
        float total = *sum;
        for (int i = 0; i < n; i++) total = fmaf(total, ms[h][i], vs[h][i]);
        *sum = total;
        float last = _mm512_cvtss_f32(_mm512_permutexvar_ps(_mm512_set1_epi32(n - 1), upto));
        if (last > *m) *m = last;
    }
    for (int h = 0; h < group;) {
        float *o[3];
        const float *msp[3], *vsp[3];
        const int hb = group - h >= 3 && nv <= 4 ? 3 : group - h >= 2 && nv <= 6 ? 2 : 1;
        for (int j = 0; j < hb; j++) {
            o[j] = out + (size_t)(h + j) * state_stride;
            msp[j] = ms[h + j];
            vsp[j] = vs[h + j];
        }
        switch (hb) {
        case 3: accumulate_values(3, nv, o, vf, n, d, msp, vsp, rescale + h); break;
        case 2: accumulate_values(2, nv, o, vf, n, d, msp, vsp, rescale + h); break;
        default: accumulate_values(1, nv, o, vf, n, d, msp, vsp, rescale + h); break;
        }
        h += hb;
    }
}

// attention_avx2's structure, sixteen positions at a time: each KV head's keys and values
// converted to f32 once for its query heads, sixteen scores per head at once, their softmax
// weights from one vector exp (the running maximum before each position is a prefix
// maximum, so every argument is known up front), the value sums in f32 registers.
INLINE VNNI void attention_avx512(const int nv, const float *q, int kv_heads, int group, int q_stride, const apus_kv_rows *kv, int begin,
                                  int end, float scale, float *out, float *max_io, float *sum_io, int state_stride) {
    const int d = 16 * nv;
    float kf[16 * 256], vf[16 * 256];
    const int row_bytes = 2 * d * kv_heads;
    size_t rows[32];  // this group of sixteen positions, then the next, whose rows are prefetched
    for (int i = 0; i < 16 && begin + i < end; i++) rows[16 + i] = row_offset(kv, begin + i);
    for (int p0 = begin; p0 < end; p0 += 16) {
        const int n = end - p0 < 16 ? end - p0 : 16;
        for (int i = 0; i < n; i++) rows[i] = rows[16 + i];
        // Blocks of a paged cache lie anywhere in memory: the next sixteen rows are fetched
        // while these are computed.
        for (int i = 0; i < 16 && p0 + 16 + i < end; i++) {
            const size_t row = rows[16 + i] = row_offset(kv, p0 + 16 + i);
            for (int line = 0; line < row_bytes; line += 64) {
                _mm_prefetch((const char *)(kv->keys + row) + line, _MM_HINT_T0);
                _mm_prefetch((const char *)(kv->values + row) + line, _MM_HINT_T0);
            }
        }
        for (int g = 0; g < kv_heads; g++) {
            for (int i = 0; i < 16; i++) {
                for (int c = 0; c < nv; c++) {
                    if (i < n) {
                        const size_t at = rows[i] + (size_t)g * d + 16 * c;
                        _mm512_storeu_ps(kf + i * d + 16 * c, _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)(kv->keys + at))));
                        _mm512_storeu_ps(vf + i * d + 16 * c, _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)(kv->values + at))));
                    } else {
                        _mm512_storeu_ps(kf + i * d + 16 * c, _mm512_setzero_ps());
                    }
                }
            }
            const size_t h = (size_t)g * group;
            attend16(nv, q + h * q_stride, group, q_stride, kf, vf, n, scale, out + h * state_stride, max_io + h * state_stride,
                     sum_io + h * state_stride, state_stride);
        }
    }
}

static VNNI void attention_vnni(const float *q, int kv_heads, int group, int q_stride, const apus_kv_rows *kv, int begin, int end, int d,
                                float scale, float *out, float *max_io, float *sum_io, int state_stride) {
    switch (d / 16) {
    case 1: attention_avx512(1, q, kv_heads, group, q_stride, kv, begin, end, scale, out, max_io, sum_io, state_stride); break;
    case 2: attention_avx512(2, q, kv_heads, group, q_stride, kv, begin, end, scale, out, max_io, sum_io, state_stride); break;
    case 3: attention_avx512(3, q, kv_heads, group, q_stride, kv, begin, end, scale, out, max_io, sum_io, state_stride); break;
    case 4: attention_avx512(4, q, kv_heads, group, q_stride, kv, begin, end, scale, out, max_io, sum_io, state_stride); break;
    case 5: attention_avx512(5, q, kv_heads, group, q_stride, kv, begin, end, scale, out, max_io, sum_io, state_stride); break;
    case 6: attention_avx512(6, q, kv_heads, group, q_stride, kv, begin, end, scale, out, max_io, sum_io, state_stride); break;
    case 7: attention_avx512(7, q, kv_heads, group, q_stride, kv, begin, end, scale, out, max_io, sum_io, state_stride); break;
    case 8: attention_avx512(8, q, kv_heads, group, q_stride, kv, begin, end, scale, out, max_io, sum_io, state_stride); break;
    // Gemma's head size of 256.
    default: attention_avx512(16, q, kv_heads, group, q_stride, kv, begin, end, scale, out, max_io, sum_io, state_stride); break;
    }
}

#endif


int apus_attention_f16(const float *q, int kv_heads, int group, int q_stride, const apus_kv_rows *kv, int begin, int end, int d,
                       float scale, float *out, float *max_io, float *sum_io, int state_stride) {
    if (group > APUS_MAX_GROUP || kv_heads * group > APUS_MAX_HEADS) return 0;
#if APUS_X86
    if (apus_int8_isa() >= 2 && d % 16 == 0 && (d <= 128 || d == 256)) {
        attention_vnni(q, kv_heads, group, q_stride, kv, begin, end, d, scale, out, max_io, sum_io, state_stride);
        return 1;
    }
    if (apus_int8_isa() >= 1 && d % 8 == 0 && d <= 256) {
        attention_avx2_tiled(APUS_F16, APUS_F16, 0, 0, q, kv_heads, group, q_stride, kv, begin, end, d, scale, out, max_io, sum_io, state_stride);
        return 1;
    }
    if (apus_int8_isa() >= 1) {
        attention_avx2(q, kv_heads, group, q_stride, kv, begin, end, d, scale, out, max_io, sum_io, state_stride);
        return 1;
    }
#endif
    (void)q; (void)q_stride; (void)kv; (void)begin; (void)end; (void)d; (void)scale; (void)out;
    (void)max_io; (void)sum_io; (void)state_stride;
    return 0;
}

int apus_attention_quantized(int key_format, int value_format, const apus_staged_keys *staged, const float *q, int kv_heads, int group,
                             int q_stride, const apus_kv_rows *kv, int begin, int end, int d, float scale, float *out, float *max_io,
                             float *sum_io, int state_stride) {
    if (group > APUS_MAX_GROUP || kv_heads * group > APUS_MAX_HEADS || d % 32 != 0 || d > 256) return 0;
    for (int k = 0; k < 2; k++) {
        const int format = k ? value_format : key_format;
        if (format != APUS_F16 && format != APUS_Q8_0 && format != APUS_Q4_0) return 0;
    }
#if APUS_X86
    if (apus_int8_isa() >= 1) {
        attention_avx2_tiled(key_format, value_format, 0, staged, q, kv_heads, group, q_stride, kv, begin, end, d, scale, out, max_io,
                             sum_io, state_stride);
        return 1;
    }
#endif
    (void)staged; (void)q; (void)kv_heads; (void)q_stride; (void)kv; (void)begin; (void)end; (void)scale; (void)out;
    (void)max_io; (void)sum_io; (void)state_stride;
    return 0;
}

int apus_attention_kivi4(int value_format, const apus_kivi4_keys *keys, const float *q, int kv_heads, int group, int q_stride,
                         const apus_kv_rows *kv, int begin, int end, int d, float scale, float *out, float *max_io, float *sum_io,
                         int state_stride) {
    if (group > APUS_MAX_GROUP || kv_heads * group > APUS_MAX_HEADS || d % 32 != 0 || d > 256 || kv->block_size != 16) return 0;
    if (value_format != APUS_F16 && value_format != APUS_Q8_0 && value_format != APUS_Q4_0) return 0;
#if APUS_X86
    if (apus_int8_isa() >= 1) {
        attention_avx2_tiled(APUS_F16, value_format, keys, 0, q, kv_heads, group, q_stride, kv, begin, end, d, scale, out, max_io, sum_io,
                             state_stride);
        return 1;
    }
#endif
    (void)keys; (void)q; (void)kv_heads; (void)q_stride; (void)kv; (void)begin; (void)end; (void)scale; (void)out;
    (void)max_io; (void)sum_io; (void)state_stride;
    return 0;
}
