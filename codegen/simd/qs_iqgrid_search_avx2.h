/* AVX2 forms of qs_iqgrid_search.h: the neighbour search scores 8 grid
 * points per vector (one lane each, the scalar sum's order per lane). */
#ifndef QS_IQGRID_SEARCH_AVX2_H
#define QS_IQGRID_SEARCH_AVX2_H

#include "qs_avx2.h"
#include "qs_iqgrid_search.h"

/* The 8 terms (waux*diff)*diff, diff = scale*q_l - xval, of one coordinate
 * for its 8 possible levels l (lane l, q_l = 2l + 1): a candidate's d2 is
 * the sum of one lane of each coordinate's table, the same operations as
 * computing it directly. */
static inline __m256 qs_iq3_terms_avx2(__m256 scale, float xval, float waux) {
    const __m256 q = _mm256_setr_ps(1.f, 3.f, 5.f, 7.f, 9.f, 11.f, 13.f, 15.f);
    const __m256 diff = _mm256_sub_ps(_mm256_mul_ps(scale, q), _mm256_set1_ps(xval));
    return _mm256_mul_ps(_mm256_mul_ps(_mm256_set1_ps(waux), diff), diff);
}

/* The least of 8 lanes of d and the least of the positions j whose d equals
 * it: the first least of a list scored 8 at a time (each lane holding its own
 * first least); returns -1 when no lane is below FLT_MAX. */
static inline int qs_first_least_avx2(__m256 d, __m256i j) {
    __m128 m = _mm_min_ps(_mm256_castps256_ps128(d), _mm256_extractf128_ps(d, 1));
    m = _mm_min_ps(m, _mm_movehl_ps(m, m));
    m = _mm_min_ss(m, _mm_movehdup_ps(m));
    const __m256 least = _mm256_broadcastss_ps(m);
    if (!(_mm_cvtss_f32(m) < FLT_MAX)) return -1;
    const __m256i pos = _mm256_blendv_epi8(_mm256_set1_epi32(INT32_MAX), j,
                                           _mm256_castps_si256(_mm256_cmp_ps(d, least, _CMP_EQ_OQ)));
    __m128i p = _mm_min_epi32(_mm256_castsi256_si128(pos), _mm256_extracti128_si256(pos, 1));
    p = _mm_min_epi32(p, _mm_shuffle_epi32(p, 0x4E));
    p = _mm_min_epi32(p, _mm_shuffle_epi32(p, 0xB1));
    return _mm_cvtsi128_si32(p);
}

/* qs_iq3_best_neighbour, 8 keys at a time from the coordinates' term tables;
 * keys must be readable 8 entries past count (the lattice tables pad them).
 * A lane keeps a candidate only when its d2 is below the lane's best so far
 * (FLT_MAX at first: NaN and overflow never qualify). */
static inline int qs_iq3_best_neighbour_avx2(const uint16_t *keys, int count, const float *xval, const float *waux,
                                             float scale) {
    const __m256 s = _mm256_set1_ps(scale);
    const __m256 t0 = qs_iq3_terms_avx2(s, xval[0], waux[0]), t1 = qs_iq3_terms_avx2(s, xval[1], waux[1]);
    const __m256 t2 = qs_iq3_terms_avx2(s, xval[2], waux[2]), t3 = qs_iq3_terms_avx2(s, xval[3], waux[3]);
    const __m256i lanes = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
    __m256 best = _mm256_set1_ps(FLT_MAX);
    __m256i best_j = _mm256_setzero_si256();
    for (int j0 = 0; j0 < count; j0 += 8) {
        const __m256i u = _mm256_cvtepu16_epi32(_mm_loadu_si128((const __m128i *)(keys + j0)));
        __m256 d2 = _mm256_add_ps(_mm256_setzero_ps(), _mm256_permutevar8x32_ps(t0, u));
        d2 = _mm256_add_ps(d2, _mm256_permutevar8x32_ps(t1, _mm256_srli_epi32(u, 3)));
        d2 = _mm256_add_ps(d2, _mm256_permutevar8x32_ps(t2, _mm256_srli_epi32(u, 6)));
        d2 = _mm256_add_ps(d2, _mm256_permutevar8x32_ps(t3, _mm256_srli_epi32(u, 9)));
        const __m256i j = _mm256_add_epi32(lanes, _mm256_set1_epi32(j0));
        const __m256 keep = _mm256_and_ps(_mm256_cmp_ps(d2, best, _CMP_LT_OQ),
                                          _mm256_castsi256_ps(_mm256_cmpgt_epi32(_mm256_set1_epi32(count), j)));
        best = _mm256_blendv_ps(best, d2, keep);
        best_j = _mm256_blendv_epi8(best_j, j, _mm256_castps_si256(keep));
    }
    const int found = qs_first_least_avx2(best, best_j);
    return found < 0 ? 0 : found;
}

/* The term tables of one group (qs_iq3_terms_avx2, the same operations) from
 * the trial's scale*q vector sq (lane l: scale * (2l + 1), computed once per
 * trial) and the group's broadcast xval and waux. */
static inline void qs_iq3_group_terms_avx2(__m256 sq, const __m256 xv[4], const __m256 wv[4], __m256 terms[4]) {
    for (int i = 0; i < 4; ++i) {
        const __m256 diff = _mm256_sub_ps(sq, xv[i]);
        terms[i] = _mm256_mul_ps(_mm256_mul_ps(wv[i], diff), diff);
    }
}

/* d2 of 8 keys from the coordinates' term tables, in the scalar sum's order.
 * The sum starts at the first term rather than 0 + it: they differ at most in
 * the sign of a zero, which no comparison of d2 tells apart. */
static inline __m256 qs_iq3_score8_avx2(const uint16_t *keys, const __m256 terms[4]) {
    const __m256i u = _mm256_cvtepu16_epi32(_mm_loadu_si128((const __m128i *)keys));
    __m256 d2 = _mm256_permutevar8x32_ps(terms[0], u);
    d2 = _mm256_add_ps(d2, _mm256_permutevar8x32_ps(terms[1], _mm256_srli_epi32(u, 3)));
    d2 = _mm256_add_ps(d2, _mm256_permutevar8x32_ps(terms[2], _mm256_srli_epi32(u, 6)));
    return _mm256_add_ps(d2, _mm256_permutevar8x32_ps(terms[3], _mm256_srli_epi32(u, 9)));
}

/* The least of the 8 lanes of v, broadcast. */
static inline __m256 qs_hmin8_avx2(__m256 v) {
    __m128 m = _mm_min_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    m = _mm_min_ps(m, _mm_movehl_ps(m, m));
    return _mm256_broadcastss_ps(_mm_min_ss(m, _mm_movehdup_ps(m)));
}

/* qs_iq3_best_neighbour_avx2 from precomputed term tables. Lists of at most
 * 8 keys (most of them) take one vector and no loop: lanes past count and
 * those not below FLT_MAX are FLT_MAX, and the first lane equal to the least
 * is the first least of the list (when no key qualifies every lane is FLT_MAX
 * and that lane is 0, the answer for none). */
static inline int qs_iq3_best_neighbour_terms_avx2(const uint16_t *keys, int count, const __m256 terms[4]) {
    const __m256i lanes = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
    const __m256 flt_max = _mm256_set1_ps(FLT_MAX);
    /* min(d2, FLT_MAX) is d2 below FLT_MAX, else (NaN too) FLT_MAX */
    const __m256 d2 = _mm256_min_ps(qs_iq3_score8_avx2(keys, terms), flt_max);
    __m256 best = _mm256_blendv_ps(flt_max, d2, _mm256_castsi256_ps(_mm256_cmpgt_epi32(_mm256_set1_epi32(count), lanes)));
    if (count <= 8) {
        __m128 m = _mm_min_ps(_mm256_castps256_ps128(best), _mm256_extractf128_ps(best, 1));
        m = _mm_min_ps(m, _mm_movehl_ps(m, m));
        m = _mm_min_ss(m, _mm_movehdup_ps(m));
        return __builtin_ctz((unsigned)_mm256_movemask_ps(_mm256_cmp_ps(best, _mm256_broadcastss_ps(m), _CMP_EQ_OQ)));
    }
    __m256i best_j = lanes;
    for (int j0 = 8; j0 < count; j0 += 8) {
        const __m256 d = qs_iq3_score8_avx2(keys + j0, terms);
        const __m256i j = _mm256_add_epi32(lanes, _mm256_set1_epi32(j0));
        const __m256 k = _mm256_and_ps(_mm256_cmp_ps(d, best, _CMP_LT_OQ),
                                       _mm256_castsi256_ps(_mm256_cmpgt_epi32(_mm256_set1_epi32(count), j)));
        best = _mm256_blendv_ps(best, d, k);
        best_j = _mm256_blendv_epi8(best_j, j, _mm256_castps_si256(k));
    }
    const int found = qs_first_least_avx2(best, best_j);
    return found < 0 ? 0 : found;
}

/* 8 lanes of ggml's level rounding: clamp(nearest_int(0.5f*(id*xval - 1)), 0, lmax). */
static inline __m256i qs_iq_round_levels_avx2(__m256 id, __m256 xval, __m256i lmax) {
    const __m256 v = _mm256_mul_ps(_mm256_set1_ps(0.5f), _mm256_sub_ps(_mm256_mul_ps(id, xval), _mm256_set1_ps(1.f)));
    const __m256i biased = _mm256_castps_si256(_mm256_add_ps(v, _mm256_set1_ps(12582912.f)));
    const __m256i l = _mm256_sub_epi32(_mm256_and_si256(biased, _mm256_set1_epi32(0x007FFFFF)),
                                       _mm256_set1_epi32(0x00400000));
    return _mm256_min_epi32(_mm256_max_epi32(l, _mm256_setzero_si256()), lmax);
}

#endif
