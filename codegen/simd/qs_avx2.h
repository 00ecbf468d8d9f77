/* AVX2 (+FMA, F16C) shims used by the generated avx2 and avx512 kernels.
 * Only exact operations: integer arithmetic, float mul/add/sub/div in IEEE
 * binary32 (no FMA: the files are built with -ffp-contract=off). */
#ifndef QS_AVX2_H
#define QS_AVX2_H

#include <immintrin.h>
#include <stdio.h>
#include "qs_common.h"

/* Non-temporal stores pay off when the output is much larger than the
 * last-level cache; they need 64-byte aligned output (numpy's large arrays are). */
#ifndef QS_STREAM_MIN_BYTES /* a test build lowers it to reach the streaming path with small inputs */
#define QS_STREAM_MIN_BYTES ((int64_t)64 << 20)
#endif
static inline int qs_stream_output(const float *y, int64_t n) {
    return n * (int64_t)sizeof(float) >= QS_STREAM_MIN_BYTES && ((uintptr_t)y & 63) == 0;
}

/* The last-level cache one core sees, in bytes (Linux sysfs: cpu0's level-3,
 * else level-2 cache; 0 if unknown), read once per translation unit. */
static inline int64_t qs_llc_bytes(void) {
    static int64_t cached = -1;
    int64_t v = __atomic_load_n(&cached, __ATOMIC_RELAXED);
    if (v >= 0) return v;
    v = 0;
    for (int level = 3; level >= 2 && v == 0; --level) {
        char path[64], unit = 0;
        long long size = 0;
        snprintf(path, sizeof path, "/sys/devices/system/cpu/cpu0/cache/index%d/size", level);
        FILE *f = fopen(path, "r");
        if (!f) continue;
        if (fscanf(f, "%lld%c", &size, &unit) >= 1 && size > 0)
            v = size << (unit == 'K' ? 10 : unit == 'M' ? 20 : 0);
        fclose(f);
    }
    __atomic_store_n(&cached, v, __ATOMIC_RELAXED);
    return v;
}

/* qs_stream_output, with "far beyond the caches" taken as twice the last-level
 * cache where it is known (at most QS_STREAM_MIN_BYTES), for stores of `align`
 * bytes (16: _mm_stream_ps, which NumPy's 16-byte aligned arrays allow). */
static inline int qs_stream_output_llc(const float *y, int64_t n, uintptr_t align) {
    const int64_t llc = qs_llc_bytes();
    const int64_t limit = llc > 0 && 2 * llc < QS_STREAM_MIN_BYTES ? 2 * llc : QS_STREAM_MIN_BYTES;
    return n * (int64_t)sizeof(float) >= limit && ((uintptr_t)y & (align - 1)) == 0;
}

static inline float qs_f16_to_f32_hw(uint16_t h) { return _cvtsh_ss(h); }

static inline __m128i qs_avx2_fold_i32(__m256i v) {
    return _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
}

static inline int qs_avx2_hsum_i32(__m256i v) {
    __m128i s = qs_avx2_fold_i32(v);
    s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0x4E));
    s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0xB1));
    return _mm_cvtsi128_si32(s);
}

/* The totals of four int32x4 vectors, [sum(a), sum(b), sum(c), sum(d)]. */
static inline __m128i qs_sse_hsum_4x4(__m128i a, __m128i b, __m128i c, __m128i d) {
    const __m128i ab = _mm_add_epi32(_mm_unpacklo_epi32(a, b), _mm_unpackhi_epi32(a, b));
    const __m128i cd = _mm_add_epi32(_mm_unpacklo_epi32(c, d), _mm_unpackhi_epi32(c, d));
    return _mm_add_epi32(_mm_unpacklo_epi64(ab, cd), _mm_unpackhi_epi64(ab, cd));
}

/* [sum(p[0]), ..., sum(p[7])]: the totals of eight int32x8 vectors. Halves are folded first and
 * the rest is unpacks and adds: vphaddd and vperm2i128 cost several uops each on Zen 1. */
static inline __m256i qs_avx2_hsum_8x8(const __m256i p[8]) {
    const __m128i lo = qs_sse_hsum_4x4(qs_avx2_fold_i32(p[0]), qs_avx2_fold_i32(p[1]), qs_avx2_fold_i32(p[2]),
                                       qs_avx2_fold_i32(p[3]));
    const __m128i hi = qs_sse_hsum_4x4(qs_avx2_fold_i32(p[4]), qs_avx2_fold_i32(p[5]), qs_avx2_fold_i32(p[6]),
                                       qs_avx2_fold_i32(p[7]));
    return _mm256_inserti128_si256(_mm256_castsi128_si256(lo), hi, 1);
}

static inline float qs_avx2_hmax_ps(__m256 v) {
    __m128 m = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    m = _mm_max_ps(m, _mm_movehl_ps(m, m));
    m = _mm_max_ss(m, _mm_movehdup_ps(m));
    return _mm_cvtss_f32(m);
}

static inline float qs_avx2_hmin_ps(__m256 v) {
    __m128 m = _mm_min_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    m = _mm_min_ps(m, _mm_movehl_ps(m, m));
    m = _mm_min_ss(m, _mm_movehdup_ps(m));
    return _mm_cvtss_f32(m);
}

/* 16 bytes of packed nibbles -> 32 codes: bytes 0..15 the low nibbles
 * (elements 0..15), bytes 16..31 the high nibbles (elements 16..31). */
static inline __m256i qs_avx2_nibbles(const uint8_t *qs) {
    const __m128i raw = _mm_loadu_si128((const __m128i *)qs);
    return _mm256_and_si256(_mm256_set_m128i(_mm_srli_epi16(raw, 4), raw), _mm256_set1_epi8(0x0F));
}

/* bit j of a 32-bit word -> byte j = 0xFF or 0x00. */
static inline __m256i qs_avx2_bits_to_bytes(uint32_t bits) {
    const __m256i shuf = _mm256_set_epi64x(0x0303030303030303, 0x0202020202020202,
                                           0x0101010101010101, 0x0000000000000000);
    __m256i v = _mm256_shuffle_epi8(_mm256_set1_epi32((int)bits), shuf);
    const __m256i bit = _mm256_set1_epi64x((long long)0x8040201008040201ULL);
    return _mm256_cmpeq_epi8(_mm256_and_si256(v, bit), bit);
}

/* Four vectors of 8 int32 in [-128, 255] (elements 0..31 in order) -> 32 bytes in order. */
static inline __m256i qs_avx2_pack_u8(__m256i q0, __m256i q1, __m256i q2, __m256i q3) {
    const __m256i p = _mm256_packus_epi16(_mm256_packs_epi32(q0, q1), _mm256_packs_epi32(q2, q3));
    return _mm256_permutevar8x32_epi32(p, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
}

static inline __m256i qs_avx2_pack_i8(__m256i q0, __m256i q1, __m256i q2, __m256i q3) {
    const __m256i p = _mm256_packs_epi16(_mm256_packs_epi32(q0, q1), _mm256_packs_epi32(q2, q3));
    return _mm256_permutevar8x32_epi32(p, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
}

/* C roundf on each lane: nearest, ties away from zero. */
static inline __m256 qs_avx2_roundf_ps(__m256 v) {
    const __m256 t = _mm256_round_ps(v, _MM_FROUND_TO_ZERO | _MM_FROUND_NO_EXC);
    const __m256 sign = _mm256_set1_ps(-0.0f);
    const __m256 frac = _mm256_andnot_ps(sign, _mm256_sub_ps(v, t));
    const __m256 up = _mm256_cmp_ps(frac, _mm256_set1_ps(0.5f), _CMP_GE_OQ);
    const __m256 one = _mm256_or_ps(_mm256_set1_ps(1.0f), _mm256_and_ps(sign, v));
    return _mm256_add_ps(t, _mm256_and_ps(up, one));
}

/* Exact sum over 32 lanes of a[j]*b[j] for any signed bytes (-128 included). */
static inline __m256i qs_avx2_dot_i8i8(__m256i a, __m256i b) {
    const __m256i lo = _mm256_madd_epi16(_mm256_cvtepi8_epi16(_mm256_castsi256_si128(a)),
                                         _mm256_cvtepi8_epi16(_mm256_castsi256_si128(b)));
    const __m256i hi = _mm256_madd_epi16(_mm256_cvtepi8_epi16(_mm256_extracti128_si256(a, 1)),
                                         _mm256_cvtepi8_epi16(_mm256_extracti128_si256(b, 1)));
    return _mm256_add_epi32(lo, hi);
}

/* Index of the first of 32 lanes (four vectors) equal to v; v must occur. */
static inline int qs_avx2_first_equal(const __m256 x[4], float v) {
    const __m256 vv = _mm256_set1_ps(v);
    uint32_t hit = 0;
    for (int k = 0; k < 4; ++k)
        hit |= (uint32_t)_mm256_movemask_ps(_mm256_cmp_ps(x[k], vv, _CMP_EQ_OQ)) << (8 * k);
    return __builtin_ctz(hit);
}

/* 8 lanes of |x| and whether any lane is NaN or inf. */
static inline __m256 qs_avx2_abs_ps(__m256 v) { return _mm256_andnot_ps(_mm256_set1_ps(-0.0f), v); }
static inline __m256 qs_avx2_nonfinite(__m256 absv) {
    return _mm256_cmp_ps(absv, _mm256_set1_ps(FLT_MAX), _CMP_NLE_UQ);
}

#endif
