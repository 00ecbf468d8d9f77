"""What IQ4_NL and IQ4_XS share: the non-linear levels ``kvalues_iq4nl``,
the nearest-level search ``best_index_int8`` and the per-32 scale search of
``quantize_row_iq4_nl_impl``, as array operations over all blocks at once.

``quantize_row_iq4_nl_impl(super_block_size, 32, ..., ntry)`` quantizes one
super-block (32 elements for IQ4_NL, 256 for IQ4_XS) in blocks of 32:

1. ``sigma2 = (sum over the super-block of x*x) * (2/super_block_size)``
   (a sequential float sum; ``2.f/32`` and ``2.f/256`` are exact).
2. Weights: ``qw[j] * sqrtf(sigma2 + x[j]*x[j])`` with an importance matrix
   ``qw`` (its columns of this block), else ``x[j]*x[j]``.
3. Per block of 32 (:func:`block_scales`): ``max`` = the signed element of
   largest magnitude (the first one; ``amax``/``max`` start at +0.0, strict
   ``>``). ``amax < 1e-15``: scale 0. Else ``d = -max/kvalues[0]`` (-127),
   ``L_j = best_index_int8(x_j/d)`` (as ``(1/d)*x_j``), and the weighted
   least-squares scale for those levels ``d = sumqx/sumq2`` (0 unless
   ``sumq2 > 0``) with ``sumqx = sum (w*q)*x``, ``sumq2 = sum (w*q)*q``, ``q
   = kvalues[L]``, both sequential float sums, and ``best = d*sumqx``. Then
   for ``itry = -ntry .. ntry``: ``id = (itry + kvalues[0])/max``, levels
   and sums as before; the trial replaces the scale if ``sumq2 > 0`` and
   ``sumqx*sumqx > best*sumq2`` (strict: the first best trial wins), with
   ``d = sumqx/sumq2``, ``best = d*sumqx``. ggml's file path
   (``quantize_iq4_nl``, ``quantize_iq4_xs``) uses ``ntry = 7``.
4. The format's own finish (the modules): the levels are recomputed from the
   scales as they are stored.

``best_index_int8(x)``: 0 if ``x <= kvalues[0]``, 15 if ``x >= kvalues[15]``;
else a binary search finds ``kvalues[mu-1] <= x < kvalues[mu]`` and the
index is ``mu-1`` if ``x - kvalues[mu-1] < kvalues[mu] - x`` (float32
differences), else ``mu``: an exact tie goes up. A NaN ``x`` fails every
comparison and ends at 15. Rounding never moves the choice off the midpoint
of two levels, so the index is the number of midpoints ``<= x``
(``UPPER_LEVEL_FROM``, derived from the C's comparison at import).

Upstream: ggml ``src/ggml-quants.c`` ``best_index_int8``,
``quantize_row_iq4_nl_impl``, ``quantize_iq4_nl``, ``quantize_iq4_xs`` @
d99724f2.
"""

from __future__ import annotations

import numpy as np

from ._numerics import F32, sequential_sum
from .tables.ggml import KVALUES_IQ4NL

#: The 16 levels as float32 (``float q = values[l]``).
KVALUES_IQ4NL_F32 = KVALUES_IQ4NL.astype(F32)

#: ``GROUP_MAX_EPS``: a block whose largest magnitude is below it gets scale 0.
GROUP_MAX_EPS = F32(1e-15)

#: Trial scales on each side of the first one, in ggml's file-writing path.
NTRY = 7

#: Blocks of 32 searched at once: independent, so the batch never changes a
#: bit; this size keeps a search's working arrays in a core's L2 cache.
BATCH_BLOCKS = 2048

#: Overflow, 0/0 and inf*0 happen inside the search on huge, tiny or zero
#: blocks exactly as in the C: IEEE results, no warnings.
IEEE = {"over": "ignore", "invalid": "ignore", "divide": "ignore", "under": "ignore"}


def _upper_level_thresholds() -> np.ndarray:
    """For k = 0..14, the smallest float32 x in (kvalues[k], kvalues[k+1]) for
    which the C picks the upper level, ``!(x - kvalues[k] < kvalues[k+1] - x)``.
    Both differences are rounded, but the first only grows with x and the
    second only shrinks, so the choice flips once; found by stepping from the
    midpoint (an exact tie, which goes up)."""
    values = KVALUES_IQ4NL_F32

    def lower(x, k):
        return (x - values[k]) < (values[k + 1] - x)

    out = []
    for k in range(15):
        x = (values[k] + values[k + 1]) / F32(2)  # a half-integer: exact
        assert not lower(x, k)
        while not lower(np.nextafter(x, F32(-np.inf)), k):
            x = np.nextafter(x, F32(-np.inf))
        while lower(x, k):
            x = np.nextafter(x, F32(np.inf))
        out.append(x)
    return np.array(out, dtype=F32)


#: Where ``best_index_int8`` moves up a level: the C's float comparisons put
#: every threshold exactly on the midpoint of two levels (``tests`` check the
#: C search against this on the neighbours of every midpoint).
UPPER_LEVEL_FROM = _upper_level_thresholds()


def best_index_int8(x: np.ndarray) -> np.ndarray:
    """``best_index_int8(16, kvalues_iq4nl, x)`` of every element (uint8).

    The C's binary search and comparison come down to a count: the index is
    15 minus the number of thresholds ``UPPER_LEVEL_FROM`` above ``x``. A
    NaN is below none of them and gets 15, as in the C."""
    x = np.asarray(x, dtype=F32)
    index = np.full(x.shape, 15, dtype=np.uint8)
    for threshold in UPPER_LEVEL_FROM:
        index -= x < threshold
    return index


def imatrix_weights(xs: np.ndarray, qw: np.ndarray | None) -> np.ndarray:
    """Steps 1-2 for super-blocks ``xs (S, n)`` and their imatrix columns
    ``qw (S, n)`` (or None): the weights, ``(S, n)``."""
    if qw is None:
        return xs * xs
    sigma2 = sequential_sum(xs * xs) * (F32(2) / F32(xs.shape[-1]))
    return qw * np.sqrt(sigma2[:, None] + xs * xs)


def _c_sum(rows: np.ndarray) -> np.ndarray:
    """``float s = 0; for (j...) s += rows[j];`` over the rows of an
    element-major array ``(32, B)``: one vector addition per element."""
    s = rows[0] + F32(0.0)
    for row in rows[1:]:
        s += row
    return s


def _level_sums(iscale: np.ndarray, xt: np.ndarray, wt: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``sumqx``, ``sumq2`` of the levels ``best_index_int8(iscale*x)``."""
    q = KVALUES_IQ4NL_F32[best_index_int8(iscale * xt)]
    wq = wt * q
    return _c_sum(wq * xt), _c_sum(wq * q)


def block_scales(xb: np.ndarray, wb: np.ndarray, ntry: int = NTRY) -> np.ndarray:
    """Step 3: the float32 scale of every block of 32, ``xb (B, 32)`` with
    weights ``wb (B, 32)`` -> ``(B,)``."""
    out = np.empty(xb.shape[0], dtype=F32)
    with np.errstate(**IEEE):
        for start in range(0, xb.shape[0], BATCH_BLOCKS):
            stop = min(start + BATCH_BLOCKS, xb.shape[0])
            out[start:stop] = _block_scales(np.ascontiguousarray(xb[start:stop].T),
                                            np.ascontiguousarray(wb[start:stop].T), ntry)
    return out


def _block_scales(xt: np.ndarray, wt: np.ndarray, ntry: int) -> np.ndarray:
    """:func:`block_scales` on element-major blocks ``(32, B)``."""
    amax = np.zeros(xt.shape[1], dtype=F32)
    vmax = np.zeros(xt.shape[1], dtype=F32)
    for row in xt:  # if (ax > amax) { amax = ax; max = x; }
        ax = np.abs(row)
        take = ax > amax
        np.copyto(amax, ax, where=take)
        np.copyto(vmax, row, where=take)
    zero = amax < GROUP_MAX_EPS
    first = KVALUES_IQ4NL_F32[0]
    d = -vmax / first
    sumqx, sumq2 = _level_sums(F32(1) / d, xt, wt)
    d = np.where(sumq2 > 0, sumqx / sumq2, F32(0))
    best = d * sumqx
    for itry in range(-ntry, ntry + 1):
        sumqx, sumq2 = _level_sums(F32(itry + int(KVALUES_IQ4NL[0])) / vmax, xt, wt)
        better = (sumq2 > 0) & (sumqx * sumqx > best * sumq2)
        d = np.where(better, sumqx / sumq2, d)
        best = np.where(better, d * sumqx, best)
    return np.where(zero, F32(0), d).astype(F32)
