/* The K-quants' scale searches (reference/_search.py) in C, in the float32
 * operation order of ggml src/ggml-quants.c @ d99724f2 (the files are built
 * with -ffp-contract=off: no multiply-add is fused).
 *
 * Scalar forms take one sub-block. The AVX2 forms take the sub-blocks of a
 * super-block (or two) at once, one sub-block per float lane: element i of
 * 8 sub-blocks is one __m256 (element-major, "xt"), so every C loop over a
 * sub-block's elements becomes the same loop over vectors, each lane adding
 * its terms in the C order. A candidate the C accepts with an `if` is kept
 * with a lane mask; lanes never interact, so every lane returns the bits the
 * C returns for its sub-block alone. Searches return the (inverse scale,
 * min) their best codes were rounded with instead of the codes: the codes
 * are recomputed from them only where they are needed (the same operations,
 * the same bits). */
#ifndef QS_KSEARCH_H
#define QS_KSEARCH_H

#include "qs_search.h"

#define QS_ALWAYS_INLINE static inline __attribute__((always_inline))
#define QS_MAX_GROUPS 4 /* vectors of 8 lanes a lane search takes at once */

/* ---------------------------------------------------------------- scalar */

/* make_qkx2_quants(n, nmax, x, w, L, &the_min, Laux, rmin, rdelta, nstep, use_mad);
 * also make_qkx3_quants with explicit weights (whose `max <= min` test agrees
 * with `max == min` for every input: min <= x[0] <= max unless x[0] is NaN). */
QS_ALWAYS_INLINE float qs_make_qkx2_quants(int n, int nmax, const float *x, const float *w, uint8_t *L,
                                           float *the_min, float rmin, float rdelta, int nstep, int use_mad) {
    uint8_t Laux[32];
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
    if (max == min) {
        memset(L, 0, (size_t)n);
        *the_min = -min;
        return 0.f;
    }
    float iscale = nmax / (max - min);
    float scale = 1 / iscale;
    float best_error = 0;
    for (int i = 0; i < n; ++i) {
        int l = qs_nearest_int(iscale * (x[i] - min));
        L[i] = (uint8_t)(l < 0 ? 0 : l > nmax ? nmax : l);
        float diff = scale * L[i] + min - x[i];
        diff = use_mad ? fabsf(diff) : diff * diff;
        best_error += w[i] * diff;
    }
    for (int is = 0; is <= nstep; ++is) {
        iscale = (rmin + rdelta * is + nmax) / (max - min);
        float sum_l = 0, sum_l2 = 0, sum_xl = 0;
        for (int i = 0; i < n; ++i) {
            int l = qs_nearest_int(iscale * (x[i] - min));
            l = l < 0 ? 0 : l > nmax ? nmax : l;
            Laux[i] = (uint8_t)l;
            sum_l += w[i] * l;
            sum_l2 += w[i] * l * l;
            sum_xl += w[i] * l * x[i];
        }
        const float D = sum_w * sum_l2 - sum_l * sum_l;
        if (D > 0) {
            float this_scale = (sum_w * sum_xl - sum_x * sum_l) / D;
            float this_min = (sum_l2 * sum_x - sum_l * sum_xl) / D;
            if (this_min > 0) {
                this_min = 0;
                this_scale = sum_xl / sum_l2;
            }
            float cur_error = 0;
            for (int i = 0; i < n; ++i) {
                float diff = this_scale * Laux[i] + this_min - x[i];
                diff = use_mad ? fabsf(diff) : diff * diff;
                cur_error += w[i] * diff;
            }
            if (cur_error < best_error) {
                memcpy(L, Laux, (size_t)n);
                best_error = cur_error;
                scale = this_scale;
                min = this_min;
            }
        }
    }
    *the_min = -min;
    return scale;
}

/* make_q3_quants(n, nmax, x, L, do_rmse = true): codes L in [0, 2*nmax). */
QS_ALWAYS_INLINE float qs_make_q3_quants(int n, int nmax, const float *x, int8_t *L) {
    float max = 0, amax = 0;
    for (int i = 0; i < n; ++i) {
        const float ax = fabsf(x[i]);
        if (ax > amax) { amax = ax; max = x[i]; }
    }
    if (amax < QS_GROUP_MAX_EPS) {
        memset(L, 0, (size_t)n);
        return 0.f;
    }
    const float iscale = -nmax / max;
    float sumlx = 0, suml2 = 0;
    for (int i = 0; i < n; ++i) {
        int l = qs_nearest_int(iscale * x[i]);
        l = l < -nmax ? -nmax : l > nmax - 1 ? nmax - 1 : l;
        L[i] = (int8_t)l;
        const float w = x[i] * x[i];
        sumlx += w * x[i] * l;
        suml2 += w * l * l;
    }
    for (int itry = 0; itry < 5; ++itry) {
        int n_changed = 0;
        for (int i = 0; i < n; ++i) {
            const float w = x[i] * x[i];
            float slx = sumlx - w * x[i] * L[i];
            if (slx > 0) {
                float sl2 = suml2 - w * L[i] * L[i];
                int new_l = qs_nearest_int(x[i] * sl2 / slx);
                new_l = new_l < -nmax ? -nmax : new_l > nmax - 1 ? nmax - 1 : new_l;
                if (new_l != L[i]) {
                    slx += w * x[i] * new_l;
                    sl2 += w * new_l * new_l;
                    if (sl2 > 0 && slx * slx * suml2 > sumlx * sumlx * sl2) {
                        L[i] = (int8_t)new_l;
                        sumlx = slx;
                        suml2 = sl2;
                        ++n_changed;
                    }
                }
            }
        }
        if (!n_changed) break;
    }
    for (int i = 0; i < n; ++i) L[i] = (int8_t)(L[i] + nmax);
    return suml2 > 0.0f ? sumlx / suml2 : 0.0f;
}

/* make_qp_quants(n, nmax, x, L, w): codes as the C's uint8_t (a negative code keeps its low byte). */
QS_ALWAYS_INLINE float qs_make_qp_quants(int n, int nmax, const float *x, uint8_t *L, const float *w) {
    float max = 0;
    for (int i = 0; i < n; ++i) max = max > x[i] ? max : x[i];
    if (max < QS_GROUP_MAX_EPS) {
        memset(L, 0, (size_t)n);
        return 0.f;
    }
    float iscale = nmax / max;
    for (int i = 0; i < n; ++i) L[i] = (uint8_t)qs_nearest_int(iscale * x[i]);
    const float scale = 1 / iscale;
    float best_mse = 0;
    for (int i = 0; i < n; ++i) {
        const float diff = x[i] - scale * L[i];
        best_mse += w[i] * diff * diff;
    }
    for (int is = -4; is <= 4; ++is) {
        if (is == 0) continue;
        const float iscale_is = (0.1f * is + nmax) / max;
        const float scale_is = 1 / iscale_is;
        float mse = 0;
        for (int i = 0; i < n; ++i) {
            int l = qs_nearest_int(iscale_is * x[i]);
            l = l < nmax ? l : nmax;
            const float diff = x[i] - scale_is * l;
            mse += w[i] * diff * diff;
        }
        if (mse < best_mse) {
            best_mse = mse;
            iscale = iscale_is;
        }
    }
    float sumlx = 0, suml2 = 0;
    for (int i = 0; i < n; ++i) {
        int l = qs_nearest_int(iscale * x[i]);
        l = l < nmax ? l : nmax;
        L[i] = (uint8_t)l;
        sumlx += w[i] * x[i] * l;
        suml2 += w[i] * l * l;
    }
    for (int itry = 0; itry < 5; ++itry) {
        int n_changed = 0;
        for (int i = 0; i < n; ++i) {
            float slx = sumlx - w[i] * x[i] * L[i];
            float sl2 = suml2 - w[i] * L[i] * L[i];
            if (slx > 0 && sl2 > 0) {
                int new_l = qs_nearest_int(x[i] * sl2 / slx);
                new_l = new_l < nmax ? new_l : nmax;
                if (new_l != L[i]) {
                    slx += w[i] * x[i] * new_l;
                    sl2 += w[i] * new_l * new_l;
                    if (slx * slx * suml2 > sumlx * sumlx * sl2) {
                        L[i] = (uint8_t)new_l;
                        sumlx = slx;
                        suml2 = sl2;
                        ++n_changed;
                    }
                }
            }
        }
        if (!n_changed) break;
    }
    return suml2 > 0.0f ? sumlx / suml2 : 0.0f;
}

#ifdef __AVX2__
#include "qs_avx2.h"

/* ------------------------------------------------- AVX2, lane = sub-block */

#ifndef QS_SEARCH_AVX2_H /* qs_search.h may already bring these two from qs_search_avx2.h */
/* nearest_int on 8 lanes: the same magic-number bits as qs_nearest_int, for every input. */
static inline __m256i qs_avx2_nearest_int(__m256 v) {
    const __m256i bits = _mm256_castps_si256(_mm256_add_ps(v, _mm256_set1_ps(12582912.f)));
    return _mm256_sub_epi32(_mm256_and_si256(bits, _mm256_set1_epi32(0x007FFFFF)), _mm256_set1_epi32(0x00400000));
}

static inline __m256i qs_avx2_clamp_epi32(__m256i v, int lo, int hi) {
    return _mm256_min_epi32(_mm256_max_epi32(v, _mm256_set1_epi32(lo)), _mm256_set1_epi32(hi));
}
#endif

QS_ALWAYS_INLINE __m256 qs_avx2_select_ps(__m256 keep, __m256 take, __m256 mask) {
    return _mm256_blendv_ps(keep, take, mask);
}

/* 8x8 floats: rows r[0..7] -> columns, in place. */
QS_ALWAYS_INLINE void qs_avx2_transpose8_ps(__m256 r[8]) {
    const __m256 t0 = _mm256_unpacklo_ps(r[0], r[1]), t1 = _mm256_unpackhi_ps(r[0], r[1]);
    const __m256 t2 = _mm256_unpacklo_ps(r[2], r[3]), t3 = _mm256_unpackhi_ps(r[2], r[3]);
    const __m256 t4 = _mm256_unpacklo_ps(r[4], r[5]), t5 = _mm256_unpackhi_ps(r[4], r[5]);
    const __m256 t6 = _mm256_unpacklo_ps(r[6], r[7]), t7 = _mm256_unpackhi_ps(r[6], r[7]);
    const __m256 s0 = _mm256_shuffle_ps(t0, t2, 0x44), s1 = _mm256_shuffle_ps(t0, t2, 0xEE);
    const __m256 s2 = _mm256_shuffle_ps(t1, t3, 0x44), s3 = _mm256_shuffle_ps(t1, t3, 0xEE);
    const __m256 s4 = _mm256_shuffle_ps(t4, t6, 0x44), s5 = _mm256_shuffle_ps(t4, t6, 0xEE);
    const __m256 s6 = _mm256_shuffle_ps(t5, t7, 0x44), s7 = _mm256_shuffle_ps(t5, t7, 0xEE);
    r[0] = _mm256_permute2f128_ps(s0, s4, 0x20);
    r[1] = _mm256_permute2f128_ps(s1, s5, 0x20);
    r[2] = _mm256_permute2f128_ps(s2, s6, 0x20);
    r[3] = _mm256_permute2f128_ps(s3, s7, 0x20);
    r[4] = _mm256_permute2f128_ps(s0, s4, 0x31);
    r[5] = _mm256_permute2f128_ps(s1, s5, 0x31);
    r[6] = _mm256_permute2f128_ps(s2, s6, 0x31);
    r[7] = _mm256_permute2f128_ps(s3, s7, 0x31);
}

/* 8 sub-blocks of n elements (x + n*k, k = 0..7) -> group g of element-major
 * vectors: xt[i*G + g] lane k = element i of sub-block k. */
QS_ALWAYS_INLINE void qs_avx2_element_major(int G, int g, int n, const float *x, __m256 *xt) {
    for (int t = 0; t < n / 8; ++t) {
        __m256 r[8];
        for (int k = 0; k < 8; ++k) r[k] = _mm256_loadu_ps(x + n * k + 8 * t);
        qs_avx2_transpose8_ps(r);
        for (int c = 0; c < 8; ++c) xt[(8 * t + c) * G + g] = r[c];
    }
}

/* What a lane-wise (scale, min) search returns for each of 8 sub-blocks. */
typedef struct {
    __m256 scale;       /* the returned scale */
    __m256 the_min;     /* *the_min (= -min) */
    __m256 code_iscale; /* the best codes are clamp(nearest_int(code_iscale * (x - code_min))) */
    __m256 code_min;
    __m256 zero_codes;  /* lanes whose codes are all 0 (flat sub-blocks) */
} qs_avx2_qkx_result;

/* qs_make_qkx2_quants on 8*G sub-blocks of n elements, element-major xt/wt. */
QS_ALWAYS_INLINE void qs_avx2_make_qkx2_quants(int G, int n, int nmax, const __m256 *xt, const __m256 *wt,
                                               float rmin, float rdelta, int nstep, int use_mad,
                                               qs_avx2_qkx_result *res) {
    const __m256 zero = _mm256_setzero_ps(), sign = _mm256_set1_ps(-0.0f);
    const __m256 fnmax = _mm256_set1_ps((float)nmax);
    __m256 vmax[QS_MAX_GROUPS], min[QS_MAX_GROUPS], flat[QS_MAX_GROUPS], sum_w[QS_MAX_GROUPS], sum_x[QS_MAX_GROUPS];
    __m256 best[QS_MAX_GROUPS], scale[QS_MAX_GROUPS], code_iscale[QS_MAX_GROUPS], code_min[QS_MAX_GROUPS];
    for (int g = 0; g < G; ++g) {
        __m256 lo = xt[g], hi = xt[g];
        sum_w[g] = wt[g];
        sum_x[g] = _mm256_mul_ps(sum_w[g], xt[g]);
        for (int i = 1; i < n; ++i) {
            const __m256 x = xt[i * G + g], w = wt[i * G + g];
            lo = _mm256_min_ps(x, lo); /* x < lo ? x : lo, as `if (x[i] < min) min = x[i]` */
            hi = _mm256_max_ps(x, hi);
            sum_w[g] = _mm256_add_ps(sum_w[g], w);
            sum_x[g] = _mm256_add_ps(sum_x[g], _mm256_mul_ps(w, x));
        }
        min[g] = qs_avx2_select_ps(lo, zero, _mm256_cmp_ps(lo, zero, _CMP_GT_OQ));
        vmax[g] = hi;
        flat[g] = _mm256_cmp_ps(hi, min[g], _CMP_EQ_OQ); /* the C returns here: scale 0, codes 0 */
        const __m256 iscale = _mm256_div_ps(fnmax, _mm256_sub_ps(hi, min[g]));
        scale[g] = _mm256_div_ps(_mm256_set1_ps(1.0f), iscale);
        __m256 err = zero;
        for (int i = 0; i < n; ++i) {
            const __m256 x = xt[i * G + g];
            const __m256i l = qs_avx2_clamp_epi32(qs_avx2_nearest_int(_mm256_mul_ps(iscale, _mm256_sub_ps(x, min[g]))),
                                                  0, nmax);
            __m256 diff = _mm256_sub_ps(_mm256_add_ps(_mm256_mul_ps(scale[g], _mm256_cvtepi32_ps(l)), min[g]), x);
            diff = use_mad ? _mm256_andnot_ps(sign, diff) : _mm256_mul_ps(diff, diff);
            err = _mm256_add_ps(err, _mm256_mul_ps(wt[i * G + g], diff));
        }
        best[g] = err;
        code_iscale[g] = iscale;
        code_min[g] = min[g];
    }
    for (int is = 0; is <= nstep; ++is) {
        const __m256 numer = _mm256_set1_ps(rmin + rdelta * is + nmax);
        __m256 iscale[QS_MAX_GROUPS], sum_l[QS_MAX_GROUPS], sum_l2[QS_MAX_GROUPS], sum_xl[QS_MAX_GROUPS];
        __m256 lf[32 * QS_MAX_GROUPS];
        for (int g = 0; g < G; ++g) {
            iscale[g] = _mm256_div_ps(numer, _mm256_sub_ps(vmax[g], min[g]));
            sum_l[g] = sum_l2[g] = sum_xl[g] = zero;
        }
        for (int i = 0; i < n; ++i)
            for (int g = 0; g < G; ++g) {
                const __m256 x = xt[i * G + g];
                const __m256i l = qs_avx2_clamp_epi32(
                    qs_avx2_nearest_int(_mm256_mul_ps(iscale[g], _mm256_sub_ps(x, min[g]))), 0, nmax);
                const __m256 f = _mm256_cvtepi32_ps(l);
                const __m256 wl = _mm256_mul_ps(wt[i * G + g], f);
                lf[i * G + g] = f;
                sum_l[g] = _mm256_add_ps(sum_l[g], wl);
                sum_l2[g] = _mm256_add_ps(sum_l2[g], _mm256_mul_ps(wl, f));
                sum_xl[g] = _mm256_add_ps(sum_xl[g], _mm256_mul_ps(wl, x));
            }
        __m256 this_scale[QS_MAX_GROUPS], this_min[QS_MAX_GROUPS], D[QS_MAX_GROUPS], cur[QS_MAX_GROUPS];
        for (int g = 0; g < G; ++g) {
            D[g] = _mm256_sub_ps(_mm256_mul_ps(sum_w[g], sum_l2[g]), _mm256_mul_ps(sum_l[g], sum_l[g]));
            this_scale[g] = _mm256_div_ps(_mm256_sub_ps(_mm256_mul_ps(sum_w[g], sum_xl[g]), _mm256_mul_ps(sum_x[g], sum_l[g])), D[g]);
            this_min[g] = _mm256_div_ps(_mm256_sub_ps(_mm256_mul_ps(sum_l2[g], sum_x[g]), _mm256_mul_ps(sum_l[g], sum_xl[g])), D[g]);
            const __m256 positive = _mm256_cmp_ps(this_min[g], zero, _CMP_GT_OQ);
            this_min[g] = qs_avx2_select_ps(this_min[g], zero, positive);
            this_scale[g] = qs_avx2_select_ps(this_scale[g], _mm256_div_ps(sum_xl[g], sum_l2[g]), positive);
            cur[g] = zero;
        }
        for (int i = 0; i < n; ++i)
            for (int g = 0; g < G; ++g) {
                __m256 diff = _mm256_sub_ps(_mm256_add_ps(_mm256_mul_ps(this_scale[g], lf[i * G + g]), this_min[g]),
                                            xt[i * G + g]);
                diff = use_mad ? _mm256_andnot_ps(sign, diff) : _mm256_mul_ps(diff, diff);
                cur[g] = _mm256_add_ps(cur[g], _mm256_mul_ps(wt[i * G + g], diff));
            }
        for (int g = 0; g < G; ++g) {
            const __m256 better = _mm256_andnot_ps(flat[g], _mm256_and_ps(_mm256_cmp_ps(D[g], zero, _CMP_GT_OQ),
                                                                          _mm256_cmp_ps(cur[g], best[g], _CMP_LT_OQ)));
            code_iscale[g] = qs_avx2_select_ps(code_iscale[g], iscale[g], better);
            code_min[g] = qs_avx2_select_ps(code_min[g], min[g], better);
            best[g] = qs_avx2_select_ps(best[g], cur[g], better);
            scale[g] = qs_avx2_select_ps(scale[g], this_scale[g], better);
            min[g] = qs_avx2_select_ps(min[g], this_min[g], better);
        }
    }
    for (int g = 0; g < G; ++g) {
        res[g].scale = _mm256_andnot_ps(flat[g], scale[g]);
        res[g].the_min = _mm256_xor_ps(min[g], sign);
        res[g].code_iscale = code_iscale[g];
        res[g].code_min = code_min[g];
        res[g].zero_codes = flat[g];
    }
}

/* What a lane-wise symmetric search returns for each of 8 sub-blocks. */
typedef struct {
    __m256 scale;       /* the returned scale */
    __m256 code_iscale; /* the best codes are nmax + clamp(nearest_int(code_iscale * x), -nmax, nmax-1) */
    __m256 zero_codes;  /* lanes whose codes are all 0 (amax < GROUP_MAX_EPS) */
} qs_avx2_qx_result;

/* The signed element of largest magnitude (first one; +0 if none) and its magnitude, per lane. */
QS_ALWAYS_INLINE void qs_avx2_signed_absmax(int G, int n, const __m256 *xt, int g, __m256 *amax, __m256 *vmax) {
    const __m256 sign = _mm256_set1_ps(-0.0f);
    __m256 a = _mm256_setzero_ps(), m = _mm256_setzero_ps();
    for (int i = 0; i < n; ++i) {
        const __m256 x = xt[i * G + g];
        const __m256 ax = _mm256_andnot_ps(sign, x);
        const __m256 take = _mm256_cmp_ps(ax, a, _CMP_GT_OQ);
        a = qs_avx2_select_ps(a, ax, take);
        m = qs_avx2_select_ps(m, x, take);
    }
    *amax = a;
    *vmax = m;
}

/* One trial inverse scale numer/max of make_qx_quants: its weighted sums per lane. */
QS_ALWAYS_INLINE void qs_avx2_qx_trial(int G, int n, int nmax, const __m256 *xt, const __m256 *wt,
                                       const __m256 *wx, const __m256 *vmax, float numer, __m256 *iscale,
                                       __m256 *sumlx, __m256 *suml2) {
    for (int g = 0; g < G; ++g) {
        iscale[g] = _mm256_div_ps(_mm256_set1_ps(numer), vmax[g]);
        sumlx[g] = suml2[g] = _mm256_setzero_ps();
    }
    for (int i = 0; i < n; ++i)
        for (int g = 0; g < G; ++g) {
            const __m256i l = qs_avx2_clamp_epi32(qs_avx2_nearest_int(_mm256_mul_ps(iscale[g], xt[i * G + g])),
                                                  -nmax, nmax - 1);
            const __m256 f = _mm256_cvtepi32_ps(l);
            sumlx[g] = _mm256_add_ps(sumlx[g], _mm256_mul_ps(wx[i * G + g], f));
            suml2[g] = _mm256_add_ps(suml2[g], _mm256_mul_ps(_mm256_mul_ps(wt[i * G + g], f), f));
        }
}

/* qs_make_qx_quants (make_qx_quants with rmse_type 1 and weights wt) on 8*G sub-blocks. */
QS_ALWAYS_INLINE void qs_avx2_make_qx_quants(int G, int n, int nmax, const __m256 *xt, const __m256 *wt,
                                             qs_avx2_qx_result *res) {
    const __m256 zero = _mm256_setzero_ps();
    __m256 vmax[QS_MAX_GROUPS], zero_lanes[QS_MAX_GROUPS], scale[QS_MAX_GROUPS], best[QS_MAX_GROUPS];
    __m256 best_iscale[QS_MAX_GROUPS], iscale[QS_MAX_GROUPS], sumlx[QS_MAX_GROUPS], suml2[QS_MAX_GROUPS];
    __m256 wx[32 * QS_MAX_GROUPS];
    for (int g = 0; g < G; ++g) {
        __m256 amax;
        qs_avx2_signed_absmax(G, n, xt, g, &amax, &vmax[g]);
        zero_lanes[g] = _mm256_cmp_ps(amax, _mm256_set1_ps(QS_GROUP_MAX_EPS), _CMP_LT_OQ);
        for (int i = 0; i < n; ++i) wx[i * G + g] = _mm256_mul_ps(wt[i * G + g], xt[i * G + g]);
    }
    qs_avx2_qx_trial(G, n, nmax, xt, wt, wx, vmax, (float)-nmax, iscale, sumlx, suml2);
    for (int g = 0; g < G; ++g) {
        /* scale = suml2 ? sumlx/suml2 : 0 (a NaN suml2 is true) */
        scale[g] = _mm256_and_ps(_mm256_div_ps(sumlx[g], suml2[g]), _mm256_cmp_ps(suml2[g], zero, _CMP_NEQ_UQ));
        best[g] = _mm256_mul_ps(scale[g], sumlx[g]);
        best_iscale[g] = iscale[g];
    }
    for (int is = -9; is <= 9; ++is) {
        if (is == 0) continue;
        qs_avx2_qx_trial(G, n, nmax, xt, wt, wx, vmax, -(nmax + 0.1f * is), iscale, sumlx, suml2);
        for (int g = 0; g < G; ++g) {
            const __m256 better = _mm256_and_ps(
                _mm256_cmp_ps(suml2[g], zero, _CMP_GT_OQ),
                _mm256_cmp_ps(_mm256_mul_ps(sumlx[g], sumlx[g]), _mm256_mul_ps(best[g], suml2[g]), _CMP_GT_OQ));
            const __m256 new_scale = _mm256_div_ps(sumlx[g], suml2[g]);
            scale[g] = qs_avx2_select_ps(scale[g], new_scale, better);
            best[g] = qs_avx2_select_ps(best[g], _mm256_mul_ps(new_scale, sumlx[g]), better);
            best_iscale[g] = qs_avx2_select_ps(best_iscale[g], iscale[g], better);
        }
    }
    for (int g = 0; g < G; ++g) {
        res[g].scale = _mm256_andnot_ps(zero_lanes[g], scale[g]);
        res[g].code_iscale = best_iscale[g];
        res[g].zero_codes = zero_lanes[g];
    }
}

/* qs_make_q3_quants on 8*G sub-blocks; codes (0 .. 2*nmax-1) element-major in Lt[i*G + g]. */
QS_ALWAYS_INLINE void qs_avx2_make_q3_quants(int G, int n, int nmax, const __m256 *xt, __m256 *scale_out,
                                             __m256i *Lt) {
    const __m256 zero = _mm256_setzero_ps();
    __m256 zero_lanes[QS_MAX_GROUPS], sumlx[QS_MAX_GROUPS], suml2[QS_MAX_GROUPS];
    /* per element: w = x*x, wx = w*x, and for the current code L the C's products
     * w*x*L and w*L*L (the same operations give the same bits, so they are kept
     * until L changes), the bounds of the settled test below; the codes are
     * kept as floats */
    const __m256 lo_clamp = _mm256_set1_ps((float)-nmax), hi_clamp = _mm256_set1_ps((float)(nmax - 1));
    __m256 w[32 * QS_MAX_GROUPS], wx[32 * QS_MAX_GROUPS], Lf[32 * QS_MAX_GROUPS];
    __m256 wxL[32 * QS_MAX_GROUPS], wLL[32 * QS_MAX_GROUPS], mlo[32 * QS_MAX_GROUPS], mhi[32 * QS_MAX_GROUPS];
    for (int g = 0; g < G; ++g) {
        __m256 amax, vmax;
        qs_avx2_signed_absmax(G, n, xt, g, &amax, &vmax);
        zero_lanes[g] = _mm256_cmp_ps(amax, _mm256_set1_ps(QS_GROUP_MAX_EPS), _CMP_LT_OQ);
        const __m256 iscale = _mm256_div_ps(_mm256_set1_ps((float)-nmax), vmax);
        sumlx[g] = suml2[g] = zero;
        for (int i = 0; i < n; ++i) {
            const int k = i * G + g;
            const __m256 x = xt[k];
            const __m256 f = _mm256_cvtepi32_ps(qs_avx2_clamp_epi32(qs_avx2_nearest_int(_mm256_mul_ps(iscale, x)), -nmax, nmax - 1));
            Lf[k] = f;
            mlo[k] = qs_avx2_select_ps(_mm256_set1_ps(-0.499f), _mm256_set1_ps(-0x1p20f), _mm256_cmp_ps(f, lo_clamp, _CMP_EQ_OQ));
            mhi[k] = qs_avx2_select_ps(_mm256_set1_ps(0.499f), _mm256_set1_ps(0x1p20f), _mm256_cmp_ps(f, hi_clamp, _CMP_EQ_OQ));
            w[k] = _mm256_mul_ps(x, x);
            wx[k] = _mm256_mul_ps(w[k], x);
            wxL[k] = _mm256_mul_ps(wx[k], f);
            wLL[k] = _mm256_mul_ps(_mm256_mul_ps(w[k], f), f);
            sumlx[g] = _mm256_add_ps(sumlx[g], wxL[k]);
            suml2[g] = _mm256_add_ps(suml2[g], wLL[k]);
        }
    }
    /* Coordinate descent. A lane whose sweep changes nothing would change
     * nothing in the next sweep either (same state, same decisions), so each
     * group of lanes sweeps until none of its lanes changes, at most 5 times,
     * as the C per sub-block. */
    unsigned active = (1u << G) - 1;
    for (int itry = 0; itry < 5 && active; ++itry) {
        __m256 changed[QS_MAX_GROUPS];
        for (int g = 0; g < G; ++g) changed[g] = zero;
        for (int i = 0; i < n; ++i)
            for (int g = 0; g < G; ++g) {
                if (!((active >> g) & 1)) continue;
                const int k = i * G + g;
                const __m256 slx = _mm256_sub_ps(sumlx[g], wxL[k]);
                const __m256 sl2 = _mm256_sub_ps(suml2[g], wLL[k]);
                const __m256 num = _mm256_mul_ps(xt[k], sl2);
                /* Most steps change nothing. A lane is settled without the quotient when the C
                 * skips it (!(slx > 0)), or when 2^-100 <= slx <= 2^100 (every product below
                 * finite and normal) and d = num - L*slx in float has |d| <= 0.499*slx: then
                 * num/slx is within 0.4991 of L, its float quotient rounds to L (never a tie)
                 * and new_l == L. At a clamp end only one side counts (|d| <= 2^20*slx keeps the
                 * quotient in nearest_int's valid range). NaN fails every comparison. */
                const __m256 d = _mm256_sub_ps(num, _mm256_mul_ps(Lf[k], slx));
                const __m256 in_range = _mm256_and_ps(_mm256_cmp_ps(slx, _mm256_set1_ps(0x1p-100f), _CMP_GE_OQ),
                                                      _mm256_cmp_ps(slx, _mm256_set1_ps(0x1p100f), _CMP_LE_OQ));
                const __m256 sure = _mm256_and_ps(in_range,
                                                  _mm256_and_ps(_mm256_cmp_ps(d, _mm256_mul_ps(mlo[k], slx), _CMP_GE_OQ),
                                                                _mm256_cmp_ps(d, _mm256_mul_ps(mhi[k], slx), _CMP_LE_OQ)));
                if (_mm256_movemask_ps(_mm256_or_ps(sure, _mm256_cmp_ps(slx, zero, _CMP_NGT_UQ))) == 0xFF) continue;
                const __m256 nf = _mm256_cvtepi32_ps(qs_avx2_clamp_epi32(qs_avx2_nearest_int(_mm256_div_ps(num, slx)), -nmax, nmax - 1));
                const __m256 wxn = _mm256_mul_ps(wx[k], nf), wnn = _mm256_mul_ps(_mm256_mul_ps(w[k], nf), nf);
                const __m256 slx_new = _mm256_add_ps(slx, wxn);
                const __m256 sl2_new = _mm256_add_ps(sl2, wnn);
                __m256 accept = _mm256_and_ps(_mm256_cmp_ps(slx, zero, _CMP_GT_OQ), _mm256_cmp_ps(nf, Lf[k], _CMP_NEQ_UQ));
                accept = _mm256_and_ps(accept, _mm256_cmp_ps(sl2_new, zero, _CMP_GT_OQ));
                accept = _mm256_and_ps(accept, _mm256_cmp_ps(_mm256_mul_ps(_mm256_mul_ps(slx_new, slx_new), suml2[g]),
                                                             _mm256_mul_ps(_mm256_mul_ps(sumlx[g], sumlx[g]), sl2_new),
                                                             _CMP_GT_OQ));
                Lf[k] = qs_avx2_select_ps(Lf[k], nf, accept);
                wxL[k] = qs_avx2_select_ps(wxL[k], wxn, accept);
                wLL[k] = qs_avx2_select_ps(wLL[k], wnn, accept);
                mlo[k] = qs_avx2_select_ps(_mm256_set1_ps(-0.499f), _mm256_set1_ps(-0x1p20f), _mm256_cmp_ps(Lf[k], lo_clamp, _CMP_EQ_OQ));
                mhi[k] = qs_avx2_select_ps(_mm256_set1_ps(0.499f), _mm256_set1_ps(0x1p20f), _mm256_cmp_ps(Lf[k], hi_clamp, _CMP_EQ_OQ));
                sumlx[g] = qs_avx2_select_ps(sumlx[g], slx_new, accept);
                suml2[g] = qs_avx2_select_ps(suml2[g], sl2_new, accept);
                changed[g] = _mm256_or_ps(changed[g], accept);
            }
        for (int g = 0; g < G; ++g)
            if (!_mm256_movemask_ps(changed[g])) active &= ~(1u << g);
    }
    for (int k = 0; k < n * G; ++k) Lt[k] = _mm256_cvtps_epi32(Lf[k]);
    for (int g = 0; g < G; ++g) {
        const __m256 scale = _mm256_and_ps(_mm256_div_ps(sumlx[g], suml2[g]),
                                           _mm256_cmp_ps(suml2[g], zero, _CMP_GT_OQ));
        scale_out[g] = _mm256_andnot_ps(zero_lanes[g], scale);
        for (int i = 0; i < n; ++i)
            Lt[i * G + g] = _mm256_andnot_si256(_mm256_castps_si256(zero_lanes[g]),
                                                _mm256_add_epi32(Lt[i * G + g], _mm256_set1_epi32(nmax)));
    }
}

#endif /* __AVX2__ */

#endif
