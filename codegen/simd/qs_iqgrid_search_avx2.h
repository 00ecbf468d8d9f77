/* AVX2 forms of qs_iqgrid_search.h: the neighbour search scores 8 grid
 * points per vector (one lane each, the scalar sum's order per lane). */
#ifndef QS_IQGRID_SEARCH_AVX2_H
#define QS_IQGRID_SEARCH_AVX2_H

#include "qs_avx2.h"
#include "qs_iqgrid_search.h"

/* qs_iq3_best_neighbour, 8 neighbours at a time; list must be readable 8
 * entries past count (the lattice tables pad it). Within a chunk the least
 * qualifying d2 and its first lane; across chunks a strict < keeps the
 * earlier one: the first least in list order. */
static inline int qs_iq3_best_neighbour_avx2(const uint16_t *list, int count, const uint32_t *grid_odd,
                                             const float *xval, const float *waux, float scale) {
    const __m256 s = _mm256_set1_ps(scale);
    const __m256 inf = _mm256_set1_ps(INFINITY), flt_max = _mm256_set1_ps(FLT_MAX);
    const __m256i lanes = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7), byte = _mm256_set1_epi32(0xFF);
    __m256 x[4], w[4];
    for (int i = 0; i < 4; ++i) {
        x[i] = _mm256_set1_ps(xval[i]);
        w[i] = _mm256_set1_ps(waux[i]);
    }
    float best = FLT_MAX;
    int found = list[0];
    for (int j0 = 0; j0 < count; j0 += 8) {
        const __m256i idx = _mm256_cvtepu16_epi32(_mm_loadu_si128((const __m128i *)(list + j0)));
        const __m256i g = _mm256_i32gather_epi32((const int *)grid_odd, idx, 4);
        __m256 d2 = _mm256_setzero_ps();
        for (int i = 0; i < 4; ++i) {
            const __m256 q = _mm256_cvtepi32_ps(_mm256_and_si256(_mm256_srli_epi32(g, 8 * i), byte));
            const __m256 diff = _mm256_sub_ps(_mm256_mul_ps(s, q), x[i]);
            d2 = _mm256_add_ps(d2, _mm256_mul_ps(_mm256_mul_ps(w[i], diff), diff));
        }
        const __m256 valid = _mm256_and_ps(_mm256_cmp_ps(d2, flt_max, _CMP_LT_OQ),
                                           _mm256_castsi256_ps(_mm256_cmpgt_epi32(_mm256_set1_epi32(count - j0), lanes)));
        d2 = _mm256_blendv_ps(inf, d2, valid);
        const float m = qs_avx2_hmin_ps(d2);
        if (m < best) {
            best = m;
            const unsigned hit = (unsigned)_mm256_movemask_ps(_mm256_cmp_ps(d2, _mm256_set1_ps(m), _CMP_EQ_OQ));
            found = list[j0 + __builtin_ctz(hit)];
        }
    }
    return found;
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
