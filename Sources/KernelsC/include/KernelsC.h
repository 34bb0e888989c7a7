#ifndef APUS_KERNELS_C_H
#define APUS_KERNELS_C_H

#include <stddef.h>
#include <stdint.h>

/// One block of 32 activations quantized to 8 bits as llama.cpp's x86 path does
/// (`../shared/formats.md`): q = round-half-even(x * 127 / amax), d = f16(amax / 127),
/// s = f16(d * Σq) (used against Q4_1/Q5_1 weights).
typedef struct {
    int8_t qs[32];
    float d;
    float s;
    int32_t pad[2];
} apus_q8_block;

/// Weight and KV cache formats, numbered as ggml numbers them.
enum {
    APUS_F16 = 1,
    APUS_Q4_0 = 2,
    APUS_Q4_1 = 3,
    APUS_Q5_0 = 6,
    APUS_Q5_1 = 7,
    APUS_Q8_0 = 8,
    APUS_Q2_K = 10,
    APUS_Q3_K = 11,
    APUS_Q4_K = 12,
    APUS_Q5_K = 13,
    APUS_Q6_K = 14,
    APUS_IQ4_NL = 20,
    APUS_IQ4_XS = 23,
};

/// 256 activations quantized to 8 bits as llama.cpp's `quantize_row_q8_K_ref` does (the
/// K-quants' partner, ggml's `block_q8_K`): the value of largest magnitude `max` maps to
/// -127, `q = round-half-even(-127 / max · x)` (at most 127), `d = max / -127` in f32, and
/// the sum of each sixteen `q`. An all-zero block has `d = 0` and zero sums.
typedef struct {
    float d;
    int8_t qs[256];
    int16_t bsums[16];
} apus_q8k_block;

/// Quantizes `rows` rows of `cols` floats (cols a multiple of 256, row stride `cols`) into
/// `rows * cols / 256` blocks, row after row.
void apus_quantize_q8k(const float *x, int rows, int cols, apus_q8k_block *out);

/// y[t * y_stride + r] for rows [row_begin, row_end) of K-quant weights (`format` APUS_Q2_K,
/// APUS_Q3_K, APUS_Q4_K, APUS_Q5_K, APUS_Q6_K or APUS_IQ4_XS, rows `row_bytes` apart) against `tokens` rows of `blocks` Q8_K
/// blocks. Per super-block the sums Σ_g scale_g Σ q·a and Σ_g min_g Σ a are exact
/// integers; then, one super-block after another, `acc = fma(d_w · d_a, Σ, acc)` and
/// `low = fma(dmin_w · d_a, Σmin, low)`, and the result is `acc - low`: the same float
/// operations on every instruction set and for every batch. With `accumulate`, adds to
/// `y`. Returns 0 if the format or instruction set is not supported here.
/// Sixteen tokens' Q8_K activations for one super-block, transposed for 512-bit VNNI:
/// `qs[i][t]` holds bytes 4i..4i+3 of token t's block; `bsum_pairs[j][t]` its sums of
/// values 32j..32j+15 (low half) and 32j+16..32j+31 (high half) as two int16, so that one
/// `vpdpwssd` weighs two groups' sums for sixteen tokens.
typedef struct {
    uint32_t qs[64][16];
    float d[16];
    int32_t bsum_pairs[8][16];
} apus_tile16k_block;

/// Fills tiles [tile_begin, tile_end) from the first `tokens` Q8_K rows of `blocks` blocks
/// each, lanes past the last token with zeros; tile k's blocks start at `out + k * blocks`.
void apus_build_tiles16k(const apus_q8k_block *activations, int blocks, int tokens, int tile_begin, int tile_end, apus_tile16k_block *out);

/// Like `apus_matmul_q8k` for `tokens` tokens in tiles of sixteen (the last may be partial),
/// with AVX-512 VNNI: bitwise the results of `apus_matmul_q8k` for every token. Returns 0
/// without AVX-512 VNNI or for a format it does not tile (the caller then uses the rows).
int apus_matmul_q8k_tiles16(int format, const void *weights, size_t row_bytes, int row_begin, int row_end,
                            const apus_tile16k_block *tiles, int tokens, int blocks, float *y, int y_stride, int accumulate);

int apus_matmul_q8k(int format, const void *weights, size_t row_bytes, int row_begin, int row_end,
                    const apus_q8k_block *activations, int tokens, int blocks, float *y, int y_stride, int accumulate);

/// Which instruction set the fast kernels use on this CPU: 2 = AVX-512 VNNI, 1 = AVX2, 0 = none.
int apus_int8_isa(void);

/// Runs `iterations` rounds of ten independent fused multiply-add chains at the widest
/// vectors the CPU has (their sum goes to `sink`); returns the flops done.
double apus_fma_probe(long iterations, float *sink);

/// Forces a lower instruction set (for tests); returns the level in force.
int apus_set_int8_isa(int level);

/// Quantizes `rows` rows of `cols` floats (cols a multiple of 32, row stride `cols`) into
/// `rows * cols / 32` blocks, row after row.
void apus_quantize_q8(const float *x, int rows, int cols, int with_sum, apus_q8_block *out);

/// y[t * y_stride + r] = Σ_b (d_w d_a Σ q_w q_a + m_w s_a) for rows [row_begin, row_end) of a
/// weight matrix stored `row_bytes` apart, against `tokens` activation rows of `blocks`
/// blocks each. Every output element is reduced in the same order whatever `tokens` is.
/// With AVX-512 VNNI each block's integer Σ q_w q_a is exact and the blocks are summed
/// one after another in one float (then the m_w s_a terms, then the two added); with AVX2,
/// as in llama.cpp's AVX2 kernel, eight lanes of a block keep separate float sums.
/// With `accumulate`, adds to `y` instead of overwriting it. Returns 0 if the format or
/// instruction set is not supported here.
int apus_matmul_q8(int format, const void *weights, size_t row_bytes, int row_begin, int row_end,
                   const apus_q8_block *activations, int tokens, int blocks, float *y, int y_stride, int accumulate);

/// Sixteen tokens' activations for one block, transposed for 512-bit VNNI: `qs[i][t]` holds
/// bytes 4i..4i+3 of token t's block (signed), `neg_sum[t]` minus the sum of its 32 bytes.
typedef struct {
    uint32_t qs[8][16];
    float d[16];
    float s[16];
    int32_t neg_sum[16];
} apus_tile16_block;

/// Fills tiles [tile_begin, tile_end) (tokens 16·tile ..< 16·tile + 16) from the first
/// `tokens` quantized activation rows of `blocks` blocks each, lanes past the last token
/// with zeros; tile k's blocks start at `out + k * blocks`.
void apus_build_tiles16(const apus_q8_block *activations, int blocks, int tokens, int tile_begin, int tile_end, apus_tile16_block *out);

/// Like `apus_matmul_q8` for `tokens` tokens in tiles of sixteen (the last one may be
/// partial: its empty lanes are computed and not stored), with AVX-512 VNNI; gives bitwise
/// the results of `apus_matmul_q8` for every token. Returns 0 without AVX-512 VNNI.
int apus_matmul_tiles16(int format, const void *weights, size_t row_bytes, int row_begin, int row_end,
                        const apus_tile16_block *tiles, int tokens, int blocks, float *y, int y_stride, int accumulate);

/// The most query heads per KV head, and in all, that one `apus_attention_f16` call takes.
#define APUS_MAX_GROUP 16
#define APUS_MAX_HEADS 64

/// Positions of one sequence in one layer of a paged KV cache, for one KV head: position
/// `p` is row `table[p / block_size] · block_size + p % block_size`, its key at
/// `keys + row · stride` and its value at `values + row · value_stride` (both pointers
/// already at the KV head's first dimension; an f16 cache has one stride for both).
typedef struct {
    const uint16_t *keys;
    const uint16_t *values;
    const int32_t *table;
    int block_size;
    int stride;
    int value_stride;
} apus_kv_rows;

/// `kv_heads · group` query heads (`q_stride` floats apart; head h reads KV head h / group,
/// `d` halves after the previous one in each row of `kv`) against positions [begin, end) of
/// `kv`: an online softmax with llama.cpp's flash-attention operations per position (`q` holds f16-rounded
/// values, f16 keys and values), except that the weighted sum of values is kept in f32
/// (llama.cpp rounds it to f16 after every position). With AVX-512 (head sizes a multiple of
/// 16, up to 128, or 256) and with AVX2 (a multiple of 8 up to 256) the softmax weights come
/// from a vector exponential instead of libm's `expf`. Continues the state it is given for
/// each head h (the unnormalised `d` sums at `out + h * state_stride`, the maximum score and
/// the softmax denominator at `h * state_stride` of `max_io` and `sum_io`; start from zeros
/// and -inf), so consecutive ranges of positions give bitwise the result of one call over
/// all of them, and each head gets bitwise what it gets alone or with any other heads. Returns 0 when this CPU lacks
/// AVX2/F16C or the heads exceed APUS_MAX_GROUP or APUS_MAX_HEADS (the caller then uses its
/// portable path).
int apus_attention_f16(const float *q, int kv_heads, int group, int q_stride, const apus_kv_rows *kv, int begin, int end, int d,
                       float scale, float *out, float *max_io, float *sum_io, int state_stride);

/// `apus_attention_f16` over a cache whose keys are rows of `key_format` and whose values
/// are rows of `value_format` (each APUS_F16, APUS_Q8_0 or APUS_Q4_0): `kv->keys` and
/// `kv->values` point at the first KV head's first block and the strides count two-byte
/// units (every such row is a whole number of them); each head's blocks follow the previous
/// head's. Keys and values are decoded to f32 (the integer times the block's scale) and
/// scored against `q` as given (f16-rounded floats, not quantized). With `staged` (Q4_0
/// keys), the keys of the query's own block, `staged->own_block` of its table, are read from
/// their f16 copy instead (`staged[block] + staged_offset`, rows of `width`, from channel
/// `first_channel`). Returns 0 without AVX2, for head sizes that are not a multiple of 32 up
/// to 256, or heads past the limits above.
typedef struct {
    const uint16_t *const *staged;
    size_t staged_offset;
    int width;
    int first_channel;
    int own_block;
} apus_staged_keys;

int apus_attention_quantized(int key_format, int value_format, const apus_staged_keys *staged, const float *q, int kv_heads, int group,
                             int q_stride, const apus_kv_rows *kv, int begin, int end, int d, float scale, float *out, float *max_io,
                             float *sum_io, int state_stride);

/// `kivi4` keys of one layer (`ChannelKeys` in Swift): blocks of `block_size` (16)
/// positions, each `12 · staged.width` bytes (a row of `width / 2` bytes of levels per
/// position, then `width` f16 scales and `width` f16 minima), and their open blocks' f16 keys
/// (`staged`, as `apus_attention_quantized` reads them). A query reads its own block staged
/// and every other block from its levels.
typedef struct {
    const uint8_t *blocks;
    apus_staged_keys staged;
} apus_kivi4_keys;

/// `apus_attention_quantized` with `kivi4` keys (`keys`; `kv->keys` and `kv->stride` are
/// unused) from channel `keys->staged.first_channel` on, values as there.
int apus_attention_kivi4(int value_format, const apus_kivi4_keys *keys, const float *q, int kv_heads, int group, int q_stride,
                         const apus_kv_rows *kv, int begin, int end, int d, float scale, float *out, float *max_io, float *sum_io,
                         int state_stride);

/// `x[i] = e^x[i]` in place with the vector exponential of the AVX-512 attention kernel
/// (within 2 ulp; +inf above 88.7, 0 below -86). Returns 0 when this CPU lacks AVX-512 (the
/// caller then uses its portable path).
int apus_exp(float *x, int count);

/// SwiGLU in place, `gate[i] = gate[i] / (1 + e^-gate[i]) · up[i]`, with the vector
/// exponential of the AVX-512 attention kernel (within 2 ulp of e^x). Returns 0 when this
/// CPU lacks AVX-512 (the caller then uses its portable path).
int apus_swiglu(float *gate, const float *up, int count);

/// 1 when this CPU has SSE4.2's crc32 instruction, which `apus_crc32c_update` needs.
int apus_has_crc32c(void);

/// CRC-32C (Castagnoli) of `count` bytes, continuing `crc` (0 to start). Call only when
/// `apus_has_crc32c()` is 1.
uint32_t apus_crc32c_update(uint32_t crc, const void *bytes, size_t count);

/// A hint to the CPU that the caller is spinning (x86 `pause`).
static inline void apus_spin_pause(void) {
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#elif defined(__aarch64__)
    __asm__ __volatile__("yield");
#endif
}

#endif
