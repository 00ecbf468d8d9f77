/* AVX2 helpers of the small-format kernels (codebook.c.j2, ternary.c.j2). */
#ifndef QS_LOWBIT_AVX2_H
#define QS_LOWBIT_AVX2_H

#include "qs_avx2.h"

/* The totals of the low and of the high 128-bit halves of eight int32x8
 * vectors: lo = [sum(lo(p[0])), ..., sum(lo(p[7]))], hi likewise (the sum of
 * the two is qs_avx2_hsum_8x8). */
static inline void qs_avx2_hsum_8x8_halves(const __m256i p[8], __m256i *lo, __m256i *hi) {
    const __m256i h01 = _mm256_hadd_epi32(p[0], p[1]), h23 = _mm256_hadd_epi32(p[2], p[3]);
    const __m256i h45 = _mm256_hadd_epi32(p[4], p[5]), h67 = _mm256_hadd_epi32(p[6], p[7]);
    const __m256i h0123 = _mm256_hadd_epi32(h01, h23), h4567 = _mm256_hadd_epi32(h45, h67);
    *lo = _mm256_permute2x128_si256(h0123, h4567, 0x20);
    *hi = _mm256_permute2x128_si256(h0123, h4567, 0x31);
}

/* 8 fp16 fields at a stride -> 8 floats */
static inline __m256 qs_avx2_load_fp16x8(const uint8_t *p, int64_t stride) {
    const __m128i h = _mm_setr_epi16((short)qs_load_u16(p), (short)qs_load_u16(p + stride),
                                     (short)qs_load_u16(p + 2 * stride), (short)qs_load_u16(p + 3 * stride),
                                     (short)qs_load_u16(p + 4 * stride), (short)qs_load_u16(p + 5 * stride),
                                     (short)qs_load_u16(p + 6 * stride), (short)qs_load_u16(p + 7 * stride));
    return _mm256_cvtph_ps(h);
}

/* 8 floats at a stride of bytes -> one vector */
static inline __m256 qs_avx2_load_f32x8(const uint8_t *p, int64_t stride) {
    return _mm256_setr_ps(qs_load_f32(p), qs_load_f32(p + stride), qs_load_f32(p + 2 * stride),
                          qs_load_f32(p + 3 * stride), qs_load_f32(p + 4 * stride), qs_load_f32(p + 5 * stride),
                          qs_load_f32(p + 6 * stride), qs_load_f32(p + 7 * stride));
}

/* Sum over 32 lanes of w[j]*a[j], exact, as 8 int32 lanes (lane k: elements
 * 4k .. 4k+3), for |w| <= 127 and any a: |a| (as unsigned, -128 -> 128) times
 * w with a's sign, so that pairs stay within 2*128*127 < 2^15. */
static inline __m256i qs_avx2_dot_i8_small(__m256i w, __m256i a) {
    return _mm256_madd_epi16(_mm256_maddubs_epi16(_mm256_abs_epi8(a), _mm256_sign_epi8(w, a)), _mm256_set1_epi16(1));
}

#endif
