// The fp32 vector roof: independent fused multiply-add chains in registers, at the widest
// vectors the CPU has (the kernels' own instruction levels), for `HardwareProbe`.
#include "KernelsC.h"
#include "x86.h"

#if APUS_X86
static VNNI float fma_chains_512(long iterations) {
    __m512 a0 = _mm512_set1_ps(1), a1 = a0, a2 = a0, a3 = a0, a4 = a0, a5 = a0, a6 = a0, a7 = a0, a8 = a0, a9 = a0;
    const __m512 m = _mm512_set1_ps(0.999999f), c = _mm512_set1_ps(1e-7f);
    for (long i = 0; i < iterations; i++) {
        a0 = _mm512_fmadd_ps(a0, m, c); a1 = _mm512_fmadd_ps(a1, m, c); a2 = _mm512_fmadd_ps(a2, m, c); a3 = _mm512_fmadd_ps(a3, m, c);
        a4 = _mm512_fmadd_ps(a4, m, c); a5 = _mm512_fmadd_ps(a5, m, c); a6 = _mm512_fmadd_ps(a6, m, c); a7 = _mm512_fmadd_ps(a7, m, c);
        a8 = _mm512_fmadd_ps(a8, m, c); a9 = _mm512_fmadd_ps(a9, m, c);
    }
    __m512 s = _mm512_add_ps(_mm512_add_ps(_mm512_add_ps(a0, a1), _mm512_add_ps(a2, a3)), _mm512_add_ps(_mm512_add_ps(a4, a5), _mm512_add_ps(a6, a7)));
    return _mm512_reduce_add_ps(_mm512_add_ps(s, _mm512_add_ps(a8, a9)));
}

static AVX2 float fma_chains_256(long iterations) {
    __m256 a0 = _mm256_set1_ps(1), a1 = a0, a2 = a0, a3 = a0, a4 = a0, a5 = a0, a6 = a0, a7 = a0, a8 = a0, a9 = a0;
    const __m256 m = _mm256_set1_ps(0.999999f), c = _mm256_set1_ps(1e-7f);
    for (long i = 0; i < iterations; i++) {
        a0 = _mm256_fmadd_ps(a0, m, c); a1 = _mm256_fmadd_ps(a1, m, c); a2 = _mm256_fmadd_ps(a2, m, c); a3 = _mm256_fmadd_ps(a3, m, c);
        a4 = _mm256_fmadd_ps(a4, m, c); a5 = _mm256_fmadd_ps(a5, m, c); a6 = _mm256_fmadd_ps(a6, m, c); a7 = _mm256_fmadd_ps(a7, m, c);
        a8 = _mm256_fmadd_ps(a8, m, c); a9 = _mm256_fmadd_ps(a9, m, c);
    }
    __m256 s = _mm256_add_ps(_mm256_add_ps(_mm256_add_ps(a0, a1), _mm256_add_ps(a2, a3)), _mm256_add_ps(_mm256_add_ps(a4, a5), _mm256_add_ps(a6, a7)));
    return hsum8(_mm256_add_ps(s, _mm256_add_ps(a8, a9)));
}
#endif

double apus_fma_probe(long iterations, float *sink) {
#if APUS_X86
    if (apus_int8_isa() >= 2) {
        *sink = fma_chains_512(iterations);
        return (double)iterations * 10 * 16 * 2;
    }
    if (apus_int8_isa() >= 1) {
        *sink = fma_chains_256(iterations);
        return (double)iterations * 10 * 8 * 2;
    }
#endif
    float a[10] = {1, 1, 1, 1, 1, 1, 1, 1, 1, 1};
    for (long i = 0; i < iterations; i++)
        for (int k = 0; k < 10; k++) a[k] = a[k] * 0.999999f + 1e-7f;
    *sink = a[0] + a[9];
    return (double)iterations * 10 * 2;
}
