/* AVX2 form of qs_iq2_search.h: the neighbour search scores 8 codebook
 * points per vector (one lane each, the scalar sum's order per lane). */
#ifndef QS_IQ2_SEARCH_AVX2_H
#define QS_IQ2_SEARCH_AVX2_H

#include "qs_avx2.h"
#include "qs_iqgrid_search_avx2.h"
#include "qs_iq2_search.h"

/* The term tables of a group of 8 for `scale`: lane l (l = 0..2) of table j
 * is (waux_j * diff) * diff, diff = scale * q_l - xval_j, q_l = 2l + 1, in
 * both 128-bit halves (lane 3 is never read), so an in-lane permute
 * (vpermilps: index bits 1..0, the level) serves every lane; built with
 * 128-bit operations, then duplicated. */
static inline void qs_iq2_terms_avx2(const float *xval, const float *waux, float scale, __m256 t[8]) {
    const __m128 sq = _mm_mul_ps(_mm_set1_ps(scale), _mm_setr_ps(1.f, 3.f, 5.f, 1.f));
    for (int j = 0; j < 8; ++j) {
        const __m128 diff = _mm_sub_ps(sq, _mm_set1_ps(xval[j]));
        const __m128 term = _mm_mul_ps(_mm_mul_ps(_mm_set1_ps(waux[j]), diff), diff);
        t[j] = _mm256_insertf128_ps(_mm256_castps128_ps256(term), term, 1);
    }
}

/* The distances of 8 neighbour words from the term tables t: the permute by
 * word >> 3j reads element j's level from the low 2 bits of its field; the
 * sum starts from the first term instead of 0 + term: the two differ only in
 * the sign of a zero, which no comparison sees. */
static inline __m256 qs_iq2_distances_avx2(__m256i u, const __m256 t[8]) {
    __m256 d2 = _mm256_permutevar_ps(t[0], u);
    d2 = _mm256_add_ps(d2, _mm256_permutevar_ps(t[1], _mm256_srli_epi32(u, 3)));
    d2 = _mm256_add_ps(d2, _mm256_permutevar_ps(t[2], _mm256_srli_epi32(u, 6)));
    d2 = _mm256_add_ps(d2, _mm256_permutevar_ps(t[3], _mm256_srli_epi32(u, 9)));
    d2 = _mm256_add_ps(d2, _mm256_permutevar_ps(t[4], _mm256_srli_epi32(u, 12)));
    d2 = _mm256_add_ps(d2, _mm256_permutevar_ps(t[5], _mm256_srli_epi32(u, 15)));
    d2 = _mm256_add_ps(d2, _mm256_permutevar_ps(t[6], _mm256_srli_epi32(u, 18)));
    return _mm256_add_ps(d2, _mm256_permutevar_ps(t[7], _mm256_srli_epi32(u, 21)));
}

/* qs_iq2_best_neighbour, 8 words at a time, two vectors in flight: each
 * lane of a chain keeps a candidate only when its d2 is below the lane's
 * best so far (FLT_MAX at first: NaN and overflow never qualify), so every
 * chain lane holds the first least of its candidates, and the first least of
 * all 16 is the scalar loop's choice. Lists are padded to a multiple of 8
 * with copies of their first word (codegen/iqgrid_quantize.py), which tie
 * with position 0 and never win. Returns the position. */
static inline int qs_iq2_best_neighbour_avx2(const uint32_t *words, int count, const __m256 t[8]) {
    __m256i c = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
    const __m256i eight = _mm256_set1_epi32(8), sixteen = _mm256_set1_epi32(16);
    __m256 best_a = _mm256_set1_ps(FLT_MAX), best_b = best_a;
    __m256i at_a = _mm256_setzero_si256(), at_b = at_a;
    int c0 = 0;
    for (; c0 + 8 < count; c0 += 16) {
        const __m256 da = qs_iq2_distances_avx2(_mm256_loadu_si256((const __m256i *)(words + c0)), t);
        const __m256 db = qs_iq2_distances_avx2(_mm256_loadu_si256((const __m256i *)(words + c0 + 8)), t);
        const __m256 keep_a = _mm256_cmp_ps(da, best_a, _CMP_LT_OQ), keep_b = _mm256_cmp_ps(db, best_b, _CMP_LT_OQ);
        best_a = _mm256_blendv_ps(best_a, da, keep_a);
        best_b = _mm256_blendv_ps(best_b, db, keep_b);
        at_a = _mm256_blendv_epi8(at_a, c, _mm256_castps_si256(keep_a));
        at_b = _mm256_blendv_epi8(at_b, _mm256_add_epi32(c, eight), _mm256_castps_si256(keep_b));
        c = _mm256_add_epi32(c, sixteen);
    }
    if (c0 < count) {
        const __m256 da = qs_iq2_distances_avx2(_mm256_loadu_si256((const __m256i *)(words + c0)), t);
        const __m256 keep_a = _mm256_cmp_ps(da, best_a, _CMP_LT_OQ);
        best_a = _mm256_blendv_ps(best_a, da, keep_a);
        at_a = _mm256_blendv_epi8(at_a, c, _mm256_castps_si256(keep_a));
    }
    /* the least of the 16 lanes, then the least position holding it: with one
     * vector the lane itself (lanes hold positions 0..7), else the least of
     * the lanes' positions (ties are rare: usually one lane) */
    const __m256 m8 = _mm256_min_ps(best_a, best_b);
    __m128 m = _mm_min_ps(_mm256_castps256_ps128(m8), _mm256_extractf128_ps(m8, 1));
    m = _mm_min_ps(m, _mm_movehl_ps(m, m));
    m = _mm_min_ss(m, _mm_movehdup_ps(m));
    if (!(_mm_cvtss_f32(m) < FLT_MAX)) return 0; /* none qualifies: ggml aborts, the spec takes the first */
    const __m256 least = _mm256_broadcastss_ps(m);
    const unsigned in_a = (unsigned)_mm256_movemask_ps(_mm256_cmp_ps(best_a, least, _CMP_EQ_OQ));
    if (count <= 8) return __builtin_ctz(in_a);
    unsigned in = in_a | (unsigned)_mm256_movemask_ps(_mm256_cmp_ps(best_b, least, _CMP_EQ_OQ)) << 8;
    int32_t at[16];
    _mm256_storeu_si256((__m256i *)at, at_a);
    _mm256_storeu_si256((__m256i *)(at + 8), at_b);
    int found = INT32_MAX;
    while (in) {
        const int lane = __builtin_ctz(in);
        in &= in - 1;
        found = at[lane] < found ? at[lane] : found;
    }
    return found;
}

/* Two searches of one group at once, for the scales sa (low 128-bit half:
 * neighbour list a, count ca) and sb (high half: list b, count cb), 4
 * candidates per half and vector: the term tables of both come from one set
 * of 256-bit operations (the same operations per lane as
 * qs_iq2_terms_avx2). A list shorter than the other reads its first 4 words
 * again at positions 0..3: a lane keeps only a strictly smaller distance,
 * so the repeats change nothing. Lists must be readable in whole groups of 4
 * (they are padded to multiples of 8). Writes the positions of the first
 * least distance (0 where none qualifies, as the scalar search). */
static inline void qs_iq2_best_neighbour2_avx2(const uint32_t *a, int ca, const uint32_t *b, int cb,
                                               const float *xval, const float *waux, float sa, float sb,
                                               int *pa, int *pb) {
    const __m256 sq = _mm256_mul_ps(_mm256_setr_ps(sa, sa, sa, sa, sb, sb, sb, sb),
                                    _mm256_setr_ps(1.f, 3.f, 5.f, 1.f, 1.f, 3.f, 5.f, 1.f));
    __m256 t[8];
    for (int j = 0; j < 8; ++j) {
        const __m256 diff = _mm256_sub_ps(sq, _mm256_set1_ps(xval[j]));
        t[j] = _mm256_mul_ps(_mm256_mul_ps(_mm256_set1_ps(waux[j]), diff), diff);
    }
    const int n = ca > cb ? ca : cb;
    const __m256i lanes = _mm256_setr_epi32(0, 1, 2, 3, 0, 1, 2, 3);
    __m256 best = _mm256_set1_ps(FLT_MAX);
    __m256i at = _mm256_setzero_si256();
    for (int c0 = 0; c0 < n; c0 += 4) {
        const int ia = c0 < ca ? c0 : 0, ib = c0 < cb ? c0 : 0;
        const __m256i u = _mm256_inserti128_si256(
            _mm256_castsi128_si256(_mm_loadu_si128((const __m128i *)(a + ia))),
            _mm_loadu_si128((const __m128i *)(b + ib)), 1);
        const __m256i c = _mm256_add_epi32(lanes, _mm256_setr_epi32(ia, ia, ia, ia, ib, ib, ib, ib));
        const __m256 d2 = qs_iq2_distances_avx2(u, t);
        const __m256 keep = _mm256_cmp_ps(d2, best, _CMP_LT_OQ);
        best = _mm256_blendv_ps(best, d2, keep);
        at = _mm256_blendv_epi8(at, c, _mm256_castps_si256(keep));
    }
    int32_t pos[8];
    _mm256_storeu_si256((__m256i *)pos, at);
    for (int h = 0; h < 2; ++h) {
        const __m128 v = h ? _mm256_extractf128_ps(best, 1) : _mm256_castps256_ps128(best);
        __m128 m = _mm_min_ps(v, _mm_movehl_ps(v, v));
        m = _mm_min_ss(m, _mm_movehdup_ps(m));
        int found = 0; /* none qualifies: ggml aborts, the spec takes the first */
        if (_mm_cvtss_f32(m) < FLT_MAX) {
            unsigned in = (unsigned)_mm_movemask_ps(_mm_cmpeq_ps(v, _mm_shuffle_ps(m, m, 0)));
            found = INT32_MAX;
            while (in) {
                const int lane = 4 * h + __builtin_ctz(in);
                in &= in - 1;
                found = pos[lane] < found ? pos[lane] : found;
            }
        }
        *(h ? pb : pa) = found;
    }
}

#endif
