/* AVX2 forms of the searches in qs_search.h: one lane per candidate scale.
 * Every lane runs the scalar loop's float32 operations in the same order
 * (sums over the block's elements stay sequential per candidate), and the
 * candidates are then decided one by one in the scalar order, so the result
 * is the scalar search's, bit for bit. */
#ifndef QS_SEARCH_AVX2_H
#define QS_SEARCH_AVX2_H

#include <immintrin.h>
#include "qs_common.h"

/* ggml's nearest_int on 8 lanes: the 1.5*2^23 magic number, ties to even. */
static inline __m256i qs_avx2_nearest_int(__m256 v) {
    const __m256i bits = _mm256_castps_si256(_mm256_add_ps(v, _mm256_set1_ps(12582912.f)));
    return _mm256_sub_epi32(_mm256_and_si256(bits, _mm256_set1_epi32(0x007FFFFF)), _mm256_set1_epi32(0x00400000));
}

static inline __m256i qs_avx2_clamp_epi32(__m256i v, int lo, int hi) {
    return _mm256_min_epi32(_mm256_max_epi32(v, _mm256_set1_epi32(lo)), _mm256_set1_epi32(hi));
}

/* make_qx_quants(n, nmax, x, L, rmse_type = 1, qw): the initial trial and the
 * 18 others (is = -9..9, is != 0) in 3 vectors of 8 lanes. */
static inline float qs_make_qx_quants_avx2(int n, int nmax, const float *x, uint8_t *L, const float *w) {
    float max = 0, amax = 0;
    for (int i = 0; i < n; ++i) {
        const float ax = fabsf(x[i]);
        if (ax > amax) { amax = ax; max = x[i]; }
    }
    if (amax < QS_GROUP_MAX_EPS) {
        memset(L, 0, (size_t)n);
        return 0.f;
    }
    float iscales[24];
    iscales[0] = -nmax / max;
    int k = 1;
    for (int is = -9; is <= 9; ++is)
        if (is != 0) iscales[k++] = -(nmax + 0.1f * is) / max;
    for (; k < 24; ++k) iscales[k] = iscales[0]; /* padding lanes, never decided */
    __m256 isc[3], sumlx[3], suml2[3];
    for (int v = 0; v < 3; ++v) {
        isc[v] = _mm256_loadu_ps(iscales + 8 * v);
        sumlx[v] = suml2[v] = _mm256_setzero_ps();
    }
    for (int i = 0; i < n; ++i) {
        const __m256 xi = _mm256_set1_ps(x[i]), wi = _mm256_set1_ps(w[i]);
        const __m256 wx = _mm256_set1_ps(w[i] * x[i]);
        for (int v = 0; v < 3; ++v) {
            const __m256i l = qs_avx2_clamp_epi32(qs_avx2_nearest_int(_mm256_mul_ps(isc[v], xi)), -nmax, nmax - 1);
            const __m256 lf = _mm256_cvtepi32_ps(l);
            sumlx[v] = _mm256_add_ps(sumlx[v], _mm256_mul_ps(wx, lf));
            suml2[v] = _mm256_add_ps(suml2[v], _mm256_mul_ps(_mm256_mul_ps(wi, lf), lf));
        }
    }
    float sx[24], s2[24];
    for (int v = 0; v < 3; ++v) {
        _mm256_storeu_ps(sx + 8 * v, sumlx[v]);
        _mm256_storeu_ps(s2 + 8 * v, suml2[v]);
    }
    float scale = s2[0] ? sx[0] / s2[0] : 0.0f;
    float best = scale * sx[0];
    int chosen = 0;
    for (k = 1; k < 19; ++k) {
        if (s2[k] > 0 && sx[k] * sx[k] > best * s2[k]) {
            scale = sx[k] / s2[k];
            best = scale * sx[k];
            chosen = k;
        }
    }
    for (int i = 0; i < n; ++i) {
        int l = qs_nearest_int(iscales[chosen] * x[i]);
        L[i] = (uint8_t)(nmax + (l < -nmax ? -nmax : l > nmax - 1 ? nmax - 1 : l));
    }
    return scale;
}

/* make_qkx3_quants(n, nmax, x, w, L, &the_min, Laux, -0.9, 0.05, 36, false).
 * A trial's grid depends on the best min so far, so eight trials are computed
 * with the current min; at the first one accepted (in trial order) the min
 * changes and the trials after it are computed again. */
static inline float qs_make_qkx3_quants_avx2(int n, int nmax, const float *x, const float *w,
                                             uint8_t *L, float *the_min) {
    float min = x[0], max = x[0];
    float sum_w = w[0];
    float sum_x = sum_w * x[0];
    for (int i = 1; i < n; ++i) {
        if (x[i] < min) min = x[i];
        if (x[i] > max) max = x[i];
        sum_w += w[i];
        sum_x += w[i] * x[i];
    }
    if (min > 0) min = 0;
    if (max <= min) {
        memset(L, 0, (size_t)n);
        *the_min = -min;
        return 0.f;
    }
    float iscale = nmax / (max - min);
    float scale = 1 / iscale;
    float best_mad = 0;
    for (int i = 0; i < n; ++i) {
        int l = qs_nearest_int(iscale * (x[i] - min));
        L[i] = (uint8_t)(l < 0 ? 0 : l > nmax ? nmax : l);
        float diff = scale * L[i] + min - x[i];
        diff = diff * diff;
        best_mad += w[i] * diff;
    }
    const __m256 vsum_w = _mm256_set1_ps(sum_w), vsum_x = _mm256_set1_ps(sum_x);
    int is = 0;
    while (is <= 36) {
        float iscales[8];
        for (int k = 0; k < 8; ++k) iscales[k] = (-0.9f + 0.05f * (is + k) + nmax) / (max - min);
        const __m256 isc = _mm256_loadu_ps(iscales), vmin = _mm256_set1_ps(min);
        __m256 sum_l = _mm256_setzero_ps(), sum_l2 = _mm256_setzero_ps(), sum_xl = _mm256_setzero_ps();
        for (int i = 0; i < n; ++i) {
            const __m256 xi = _mm256_set1_ps(x[i]), wi = _mm256_set1_ps(w[i]);
            const __m256i l = qs_avx2_clamp_epi32(qs_avx2_nearest_int(_mm256_mul_ps(isc, _mm256_sub_ps(xi, vmin))), 0, nmax);
            const __m256 wl = _mm256_mul_ps(wi, _mm256_cvtepi32_ps(l));
            sum_l = _mm256_add_ps(sum_l, wl);
            sum_l2 = _mm256_add_ps(sum_l2, _mm256_mul_ps(wl, _mm256_cvtepi32_ps(l)));
            sum_xl = _mm256_add_ps(sum_xl, _mm256_mul_ps(wl, xi));
        }
        const __m256 D = _mm256_sub_ps(_mm256_mul_ps(vsum_w, sum_l2), _mm256_mul_ps(sum_l, sum_l));
        __m256 this_scale = _mm256_div_ps(_mm256_sub_ps(_mm256_mul_ps(vsum_w, sum_xl), _mm256_mul_ps(vsum_x, sum_l)), D);
        __m256 this_min = _mm256_div_ps(_mm256_sub_ps(_mm256_mul_ps(sum_l2, vsum_x), _mm256_mul_ps(sum_l, sum_xl)), D);
        const __m256 positive = _mm256_cmp_ps(this_min, _mm256_setzero_ps(), _CMP_GT_OQ);
        this_min = _mm256_andnot_ps(positive, this_min);
        this_scale = _mm256_blendv_ps(this_scale, _mm256_div_ps(sum_xl, sum_l2), positive);
        __m256 mad = _mm256_setzero_ps();
        for (int i = 0; i < n; ++i) {
            const __m256 xi = _mm256_set1_ps(x[i]);
            const __m256i l = qs_avx2_clamp_epi32(qs_avx2_nearest_int(_mm256_mul_ps(isc, _mm256_sub_ps(xi, vmin))), 0, nmax);
            __m256 diff = _mm256_sub_ps(_mm256_add_ps(_mm256_mul_ps(this_scale, _mm256_cvtepi32_ps(l)), this_min), xi);
            diff = _mm256_mul_ps(diff, diff);
            mad = _mm256_add_ps(mad, _mm256_mul_ps(_mm256_set1_ps(w[i]), diff));
        }
        float d[8], ts[8], tm[8], md[8];
        _mm256_storeu_ps(d, D);
        _mm256_storeu_ps(ts, this_scale);
        _mm256_storeu_ps(tm, this_min);
        _mm256_storeu_ps(md, mad);
        int accepted = -1;
        for (int k = 0; k < 8 && is + k <= 36; ++k) {
            if (d[k] > 0 && md[k] < best_mad) {
                accepted = k;
                break;
            }
        }
        if (accepted < 0) {
            is += 8;
            continue;
        }
        const int k = accepted;
        for (int i = 0; i < n; ++i) {
            const int l = qs_nearest_int(iscales[k] * (x[i] - min));
            L[i] = (uint8_t)(l < 0 ? 0 : l > nmax ? nmax : l);
        }
        best_mad = md[k];
        scale = ts[k];
        min = tm[k];
        is += k + 1; /* the trials after it see the new min */
    }
    *the_min = -min;
    return scale;
}

#endif
