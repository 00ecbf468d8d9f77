"""ggml's scale searches, as array operations over all blocks at once.

Each function takes blocks ``x`` of shape ``(..., n)`` and per-element
weights of the same shape and returns, for every block, what the C routine
returns for that block alone. Sums over a block are the C loops' sums
(``sequential_sum``), candidate loops run over the candidates with every
block in flight, and "keep the candidate if it is better" becomes a masked
update. Read from ggml ``src/ggml-quants.c`` @ d99724f2.
"""

from __future__ import annotations

import numpy as np

from ._numerics import F32, first_max, first_min, nearest_int, sequential_sum, signed_absmax

#: ``GROUP_MAX_EPS``: blocks whose largest magnitude is below this are all zero.
GROUP_MAX_EPS = F32(1e-15)


def make_qx_quants(x: np.ndarray, nmax: int, weights: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Symmetric scale search (``make_qx_quants`` with ``rmse_type = 1`` and
    quant weights ``qw``), returning ``(scale, L)`` with ``L`` in ``[0, 2*nmax)``.

    It minimizes the weighted squared error ``sum w (x - scale*l)^2`` over
    integer codes ``l`` in ``[-nmax, nmax-1]``: for a trial inverse scale the
    codes are ``nearest_int(iscale*x)``, and the best scale for those codes is
    the weighted least-squares one, ``sumlx / suml2``, whose error decreases
    as ``sumlx^2 / suml2`` grows. The trials are ``iscale = -nmax/max`` and
    ``-(nmax + 0.1*is)/max`` for ``is = -9..9`` (``max`` = the signed element
    of largest magnitude); a trial replaces the best one only if strictly
    better. A block with ``amax < 1e-15`` gets scale 0 and all codes 0.
    """
    x = np.asarray(x, dtype=F32)
    w = np.asarray(weights, dtype=F32)
    amax, vmax = signed_absmax(x)
    zero = amax < GROUP_MAX_EPS
    safe_max = np.where(zero, F32(1), vmax)[..., None]
    fnmax = F32(nmax)

    def trial(iscale):
        lvals = np.clip(nearest_int(iscale * x), -nmax, nmax - 1)
        lf = lvals.astype(F32)
        sumlx = sequential_sum(w * x * lf)
        suml2 = sequential_sum(w * lf * lf)
        return lvals, sumlx, suml2

    with np.errstate(divide="ignore", invalid="ignore"):
        lvals, sumlx, suml2 = trial(-fnmax / safe_max)
        scale = np.where(suml2 != 0, sumlx / suml2, F32(0)).astype(F32)
        best = scale * sumlx
        for step in range(-9, 10):
            if step == 0:
                continue
            iscale = -(fnmax + F32(0.1) * F32(step)) / safe_max
            cand, sumlx, suml2 = trial(iscale)
            better = (suml2 > 0) & (sumlx * sumlx > best * suml2)
            lvals = np.where(better[..., None], cand, lvals)
            new_scale = sumlx / suml2
            scale = np.where(better, new_scale, scale)
            best = np.where(better, new_scale * sumlx, best)
    scale = np.where(zero, F32(0), scale).astype(F32)
    codes = np.where(zero[..., None], 0, lvals + nmax).astype(np.uint8)
    return scale, codes


def make_qkx3_quants(x: np.ndarray, nmax: int, weights: np.ndarray,
                     rmin: float = -0.9, rdelta: float = 0.05, nstep: int = 36
                     ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Asymmetric (scale, min) search (``make_qkx3_quants``, squared error),
    returning ``(scale, the_min, L)`` with ``x ~ scale*L - the_min``, ``L`` in
    ``[0, nmax]`` and ``the_min >= 0``.

    It starts from the min/max grid (``min = min(x, 0)``, ``iscale =
    nmax/(max - min)``) and its weighted squared error, then for ``is = 0 ..
    nstep`` tries ``iscale = (rmin + rdelta*is + nmax)/(max - min)``: round
    the codes, solve the 2x2 weighted least-squares problem for (scale, min)
    (with ``min`` forced to 0 and a one-parameter fit if the solution has
    ``min > 0``), and keep the trial if its weighted squared error is strictly
    smaller. A block with ``max <= min`` gets scale 0 and codes 0.
    """
    x = np.asarray(x, dtype=F32)
    w = np.asarray(weights, dtype=F32)
    fnmax = F32(nmax)
    vmin = first_min(x)
    vmin = np.where(vmin > 0, F32(0), vmin)  # if (min > 0) min = 0; a -0.0 min stays
    vmax = first_max(x)
    flat = vmax <= vmin
    sum_w = sequential_sum(w)
    sum_x = sequential_sum(w * x)

    def codes_for(iscale, minimum):
        return np.clip(nearest_int(iscale[..., None] * (x - minimum[..., None])), 0, nmax)

    def weighted_sq_error(scale, minimum, lvals):
        diff = scale[..., None] * lvals.astype(F32) + minimum[..., None] - x
        return sequential_sum(w * (diff * diff))

    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        minimum = vmin
        iscale = fnmax / np.where(flat, F32(1), vmax - vmin)
        scale = F32(1) / iscale
        lvals = codes_for(iscale, minimum)
        best_mad = weighted_sq_error(scale, minimum, lvals)
        for step in range(nstep + 1):
            # the C loop reads the best min so far: an accepted trial moves the grid
            span = np.where(flat, F32(1), vmax - minimum)
            iscale = (F32(rmin) + F32(rdelta) * F32(step) + fnmax) / span
            cand = codes_for(iscale, minimum)
            lf = cand.astype(F32)
            sum_l = sequential_sum(w * lf)
            sum_l2 = sequential_sum(w * lf * lf)
            sum_xl = sequential_sum(w * lf * x)
            det = sum_w * sum_l2 - sum_l * sum_l
            this_scale = (sum_w * sum_xl - sum_x * sum_l) / det
            this_min = (sum_l2 * sum_x - sum_l * sum_xl) / det
            positive = this_min > 0
            this_min = np.where(positive, F32(0), this_min)
            this_scale = np.where(positive, sum_xl / sum_l2, this_scale)
            mad = weighted_sq_error(this_scale, this_min, cand)
            better = (det > 0) & (mad < best_mad) & ~flat
            lvals = np.where(better[..., None], cand, lvals)
            best_mad = np.where(better, mad, best_mad)
            scale = np.where(better, this_scale, scale)
            minimum = np.where(better, this_min, minimum)
    scale = np.where(flat, F32(0), scale).astype(F32)
    lvals = np.where(flat[..., None], 0, lvals).astype(np.uint8)
    return scale, (-minimum).astype(F32), lvals
