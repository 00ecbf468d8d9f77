/* AVX2 helpers of the small-format kernels (codebook.c.j2, ternary.c.j2). */
#ifndef QS_LOWBIT_AVX2_H
#define QS_LOWBIT_AVX2_H

#include "qs_avx2.h"

/* Fields of 8 records at a stride, packed in general-purpose registers (the
 * integer units are idle in the dot products; lane inserts are not). */
static inline uint64_t qs_pack_u16x4(const uint8_t *p, int64_t stride) {
    return (uint64_t)qs_load_u16(p) | (uint64_t)qs_load_u16(p + stride) << 16 |
           (uint64_t)qs_load_u16(p + 2 * stride) << 32 | (uint64_t)qs_load_u16(p + 3 * stride) << 48;
}

static inline uint64_t qs_pack_u32x2(const uint8_t *p, int64_t stride) {
    return (uint64_t)qs_load_u32(p) | (uint64_t)qs_load_u32(p + stride) << 32;
}

/* 8 u16 fields at a stride -> 8 u16 lanes */
static inline __m128i qs_sse_gather_u16x8(const uint8_t *p, int64_t stride) {
    return _mm_set_epi64x((long long)qs_pack_u16x4(p + 4 * stride, stride), (long long)qs_pack_u16x4(p, stride));
}

/* 8 u32 fields at a stride -> 8 int32 lanes */
static inline __m256i qs_avx2_gather_u32x8(const uint8_t *p, int64_t stride) {
    return _mm256_set_epi64x((long long)qs_pack_u32x2(p + 6 * stride, stride), (long long)qs_pack_u32x2(p + 4 * stride, stride),
                             (long long)qs_pack_u32x2(p + 2 * stride, stride), (long long)qs_pack_u32x2(p, stride));
}

/* 8 bytes at a stride -> 8 int32 lanes (zero-extended) */
static inline __m256i qs_avx2_gather_u8x8(const uint8_t *p, int64_t stride) {
    uint64_t v = 0;
    for (int j = 0; j < 8; ++j) v |= (uint64_t)p[j * stride] << (8 * j);
    return _mm256_cvtepu8_epi32(_mm_cvtsi64_si128((long long)v));
}

/* 8 fp16 fields at a stride -> 8 floats */
static inline __m256 qs_avx2_load_fp16x8(const uint8_t *p, int64_t stride) {
    return _mm256_cvtph_ps(qs_sse_gather_u16x8(p, stride));
}

/* Per 128-bit lane, [sum(d0), sum(d1), sum(d2), sum(d3)] of that lane's four int32 of each of four
 * vectors, by unpacks and adds (hadd costs more). */
static inline __m256i qs_avx2_hsum_4x4_lanes(__m256i d0, __m256i d1, __m256i d2, __m256i d3) {
    const __m256i s01 = _mm256_add_epi32(_mm256_unpacklo_epi32(d0, d1), _mm256_unpackhi_epi32(d0, d1));
    const __m256i s23 = _mm256_add_epi32(_mm256_unpacklo_epi32(d2, d3), _mm256_unpackhi_epi32(d2, d3));
    return _mm256_add_epi32(_mm256_unpacklo_epi64(s01, s23), _mm256_unpackhi_epi64(s01, s23));
}

/* Per 128-bit lane, four vectors' [a_j, a'_j, b_j, b'_j] -> *a = [a_j + a'_j]_j, *b = [b_j + b'_j]_j. */
static inline void qs_avx2_hsum_pairs_4x4_lanes(__m256i d0, __m256i d1, __m256i d2, __m256i d3, __m256i *a, __m256i *b) {
    const __m256 u01 = _mm256_castsi256_ps(_mm256_unpacklo_epi64(d0, d1)), u23 = _mm256_castsi256_ps(_mm256_unpacklo_epi64(d2, d3));
    const __m256 v01 = _mm256_castsi256_ps(_mm256_unpackhi_epi64(d0, d1)), v23 = _mm256_castsi256_ps(_mm256_unpackhi_epi64(d2, d3));
    *a = _mm256_add_epi32(_mm256_castps_si256(_mm256_shuffle_ps(u01, u23, _MM_SHUFFLE(2, 0, 2, 0))),
                          _mm256_castps_si256(_mm256_shuffle_ps(u01, u23, _MM_SHUFFLE(3, 1, 3, 1))));
    *b = _mm256_add_epi32(_mm256_castps_si256(_mm256_shuffle_ps(v01, v23, _MM_SHUFFLE(2, 0, 2, 0))),
                          _mm256_castps_si256(_mm256_shuffle_ps(v01, v23, _MM_SHUFFLE(3, 1, 3, 1))));
}

#endif
