/* Scalar building blocks of the grid IQ quantizers (reference/_iq3.py):
 * the weighted neighbour search and the C-order weighted sums. Every float
 * operation is the spec's, in its order (no FMA: -ffp-contract=off). */
#ifndef QS_IQGRID_SEARCH_H
#define QS_IQGRID_SEARCH_H

#include "qs_common.h"

/* MAX(a, b) of ggml: a > b ? a : b (a NaN b wins unless a > b). */
static inline float qs_c_max(float a, float b) { return a > b ? a : b; }

/* iq3_find_best_neighbour over `count` lattice keys `keys` (levels l_i =
 * bits 3i..3i+2, lattice values q_i = 2*l_i + 1): the position of the first
 * key of least
 *   d2 = sum_i (waux_i * diff_i) * diff_i,  diff_i = scale * q_i - xval_i
 * (i = 0..3 in order, from 0) among those with d2 < FLT_MAX; 0 when none
 * qualifies (ggml aborts there; reference/_iq3.py best_neighbour). */
static inline int qs_iq3_best_neighbour(const uint16_t *keys, int count, const float *xval, const float *waux,
                                        float scale) {
    float best = FLT_MAX;
    int found = 0;
    for (int j = 0; j < count; ++j) {
        float d2 = 0;
        for (int i = 0; i < 4; ++i) {
            const float q = (float)(2 * ((keys[j] >> (3 * i)) & 7) + 1);
            const float diff = scale * q - xval[i];
            d2 += (waux[i] * diff) * diff;
        }
        if (d2 < best) {
            best = d2;
            found = j;
        }
    }
    return found;
}

/* sumqx = sum (w*xval)*q, sumq2 = sum (w*q)*q, q = 2*L + 1, in element order. */
static inline void qs_iq_weighted_sums(int n, const float *weight, const float *xval, const int8_t *L,
                                       float *sumqx, float *sumq2) {
    float sx = 0, s2 = 0;
    for (int i = 0; i < n; ++i) {
        const float w = weight[i];
        const float q = (float)(2 * L[i] + 1);
        sx += (w * xval[i]) * q;
        s2 += (w * q) * q;
    }
    *sumqx = sx;
    *sumq2 = s2;
}

/* ggml's level rounding: MAX(0, MIN(lmax, nearest_int(0.5f*(id*xval - 1)))). */
static inline int qs_iq_round_level(float id, float xval, int lmax) {
    const int l = qs_nearest_int(0.5f * (id * xval - 1.f));
    return l < 0 ? 0 : l > lmax ? lmax : l;
}

#endif
