// CRC-32C with SSE4.2's crc32 instruction, which Swift cannot express: eight bytes a
// cycle against the table walk's one, so checking a shipped KV block costs less than
// copying it.
#include "KernelsC.h"

#include <string.h>

#include "x86.h"

int apus_has_crc32c(void) {
#if APUS_X86
    __builtin_cpu_init();
    return __builtin_cpu_supports("sse4.2") ? 1 : 0;
#else
    return 0;
#endif
}

#if APUS_X86
#include <nmmintrin.h>

__attribute__((target("sse4.2")))
uint32_t apus_crc32c_update(uint32_t crc, const void *bytes, size_t count) {
    const uint8_t *p = bytes;
    uint64_t c = ~crc;
    while (count >= 8) {
        uint64_t word;
        memcpy(&word, p, 8);
        c = _mm_crc32_u64(c, word);
        p += 8;
        count -= 8;
    }
    uint32_t c32 = (uint32_t)c;
    while (count-- > 0) c32 = _mm_crc32_u8(c32, *p++);
    return ~c32;
}
#else
uint32_t apus_crc32c_update(uint32_t crc, const void *bytes, size_t count) {
    (void)bytes;
    (void)count;
    return crc;
}
#endif
