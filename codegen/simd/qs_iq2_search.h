/* Scalar building blocks of the IQ2 grid quantizers (reference/_iq2.py):
 * the weighted neighbour search over groups of 8 lattice levels 0..2
 * (values q = 2l + 1). Every float operation is the spec's, in its order
 * (no FMA: -ffp-contract=off). */
#ifndef QS_IQ2_SEARCH_H
#define QS_IQ2_SEARCH_H

#include "qs_common.h"

/* The 24 terms (waux_j * diff) * diff, diff = scale * q_l - xval_j, of a
 * group of 8 at terms[3j + l]: a candidate's distance adds one term per
 * element, the same operations as computing it directly. */
static inline void qs_iq2_terms(const float *xval, const float *waux, float scale, float terms[24]) {
    for (int j = 0; j < 8; ++j) {
        for (int l = 0; l < 3; ++l) {
            const float diff = scale * (float)(2 * l + 1) - xval[j];
            terms[3 * j + l] = (waux[j] * diff) * diff;
        }
    }
}

/* The level of element j of a neighbour word (codegen/iqgrid_quantize.py
 * iq2_permute_indices: bits 3j..3j+2, plus 4 for j >= 4). */
static inline int qs_iq2_level(uint32_t word, int j) { return (int)((word >> (3 * j)) & 3); }

/* iq2_find_best_neighbour over `count` neighbour words: the position of the
 * first one of least
 *   d2 = sum_j terms[3j + l_j]   (j = 0..7 in order, from 0)
 * among those with d2 < FLT_MAX; 0 when none qualifies (ggml aborts there;
 * reference/_iq2.py best_neighbour). */
static inline int qs_iq2_best_neighbour(const uint32_t *words, int count, const float terms[24]) {
    float best = FLT_MAX;
    int found = 0;
    for (int c = 0; c < count; ++c) {
        float d2 = 0;
        for (int j = 0; j < 8; ++j) d2 += terms[3 * j + qs_iq2_level(words[c], j)];
        if (d2 < best) {
            best = d2;
            found = c;
        }
    }
    return found;
}

#endif
