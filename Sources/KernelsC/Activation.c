// Element-wise activations with the vector exponential.
#include "KernelsC.h"
#include "x86.h"

#if APUS_X86
static VNNI void swiglu_vnni(float *gate, const float *up, int count) {
    const __m512 one = _mm512_set1_ps(1.0f);
    for (int i = 0; i < count; i += 16) {
        const __mmask16 lanes = count - i >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << (count - i)) - 1);
        const __m512 g = _mm512_maskz_loadu_ps(lanes, gate + i);
        // Large negative gates give e^-g = +inf and so -0, as the scalar formula does.
        const __m512 silu = _mm512_div_ps(g, _mm512_add_ps(one, exp16(_mm512_sub_ps(_mm512_setzero_ps(), g))));
        _mm512_mask_storeu_ps(gate + i, lanes, _mm512_mul_ps(silu, _mm512_maskz_loadu_ps(lanes, up + i)));
    }
}

static VNNI void exp_vnni(float *x, int count) {
    for (int i = 0; i < count; i += 16) {
        const __mmask16 lanes = count - i >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << (count - i)) - 1);
        _mm512_mask_storeu_ps(x + i, lanes, exp16(_mm512_maskz_loadu_ps(lanes, x + i)));
    }
}
#endif

int apus_exp(float *x, int count) {
#if APUS_X86
    if (apus_int8_isa() >= 2) {
        exp_vnni(x, count);
        return 1;
    }
#endif
    (void)x; (void)count;
    return 0;
}

int apus_swiglu(float *gate, const float *up, int count) {
#if APUS_X86
    if (apus_int8_isa() >= 2) {
        swiglu_vnni(gate, up, count);
        return 1;
    }
#endif
    (void)gate; (void)up; (void)count;
    return 0;
}
