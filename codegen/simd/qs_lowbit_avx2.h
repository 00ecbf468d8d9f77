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
 * 4k .. 4k+3 of the two 128-bit halves' order): |w| * sign(a, w), valid when
 * |w| <= 127 and no a is -128 (pairs <= 2*127*127); else the widening path. */
static inline __m256i qs_avx2_dot_i8_signed(__m256i w, __m256i a, int exact) {
    if (exact) {
        /* per 128-bit half: the same lanes as the fast path hold the same elements */
        const __m256i wl = _mm256_cvtepi8_epi16(_mm256_castsi256_si128(w));
        const __m256i wh = _mm256_cvtepi8_epi16(_mm256_extracti128_si256(w, 1));
        const __m256i al = _mm256_cvtepi8_epi16(_mm256_castsi256_si128(a));
        const __m256i ah = _mm256_cvtepi8_epi16(_mm256_extracti128_si256(a, 1));
        /* lo: elements 0..15 -> 8 pair sums; keep halves apart: hadd pairs of pairs */
        const __m256i pl = _mm256_madd_epi16(wl, al), ph = _mm256_madd_epi16(wh, ah);
        /* pl lanes: pairs (0,1),(2,3),...,(14,15) with (0..7) low, (8..15) high 128 */
        const __m256i s = _mm256_hadd_epi32(pl, ph);
        /* s low half: pl(0..3) sums of 4 = elements 0..7 as [0-3, 4-7], ph(0..3) = 16..23; high:
         * pl(4..7) = 8..15, ph(4..7) = 24..31: low half elements 0..7 and 16..23, high 8..15, 24..31 */
        return _mm256_permute4x64_epi64(s, 0xD8); /* low: 0..7, 8..15; high: 16..23, 24..31 */
    }
    return _mm256_madd_epi16(_mm256_maddubs_epi16(_mm256_sign_epi8(w, w), _mm256_sign_epi8(a, w)),
                             _mm256_set1_epi16(1));
}

/* [0 or -1 per byte] any byte of the activation is -128 */
static inline int qs_avx2_has_min128(const uint8_t *p, int64_t n) {
    int64_t j = 0;
    __m256i hit = _mm256_setzero_si256();
    for (; j + 32 <= n; j += 32)
        hit = _mm256_or_si256(hit, _mm256_cmpeq_epi8(_mm256_loadu_si256((const __m256i *)(p + j)),
                                                     _mm256_set1_epi8((char)0x80)));
    int any = _mm256_movemask_epi8(hit) != 0;
    for (; j < n; ++j) any |= p[j] == 0x80;
    return any;
}

#endif
