"""ggml's scale searches, as array operations over all blocks at once.

Each function takes blocks ``x`` of shape ``(..., n)`` and per-element
weights of the same shape and returns, for every block, what the C routine
returns for that block alone. Sums over a block are the C loops' sums
(``sequential_sum``, or ``_c_sum`` over element-major rows), candidate loops
run over the candidates with every block in flight, and "keep the candidate
if it is better" becomes a masked update. Read from ggml
``src/ggml-quants.c`` @ d99724f2.
"""

from __future__ import annotations

import numpy as np

from ._numerics import F32, first_max, first_min, nearest_int, sequential_sum, signed_absmax

#: ``GROUP_MAX_EPS``: blocks whose largest magnitude is below this are all zero.
GROUP_MAX_EPS = F32(1e-15)

# ------------------------------------------------------------------------
# Element-major forms. The K-quant searches run one C loop iteration per
# step over all blocks at once: blocks are transposed to ``(n, nblocks)``
# so that element i of every block is one contiguous row, a C loop
# ``for (i...) s += f(x[i])`` is n vector operations over all blocks, and a
# coordinate-descent step on element i updates every block in one masked
# operation.

_MAGIC = F32(12582912.0)  # nearest_int's 1.5 * 2**23


def _element_major(a: np.ndarray, n: int) -> np.ndarray:
    """Blocks ``(..., n)`` -> ``(n, nblocks)`` (contiguous float32 rows)."""
    return np.ascontiguousarray(np.asarray(a, dtype=F32).reshape(-1, n).T)


def _block_major(a: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """Inverse of :func:`_element_major`."""
    return np.ascontiguousarray(a.T).reshape(shape)


def _nearest_int(v: np.ndarray) -> np.ndarray:
    """``nearest_int`` of a float32 array (ties to even; NaN -> 0, and the
    bits ggml's trick gives outside ``|v| <= 4194303``). Overwrites ``v``."""
    v += _MAGIC
    i = v.view(np.int32)
    i &= np.int32(0x007FFFFF)
    i -= np.int32(0x00400000)
    return i


def _codes(v: np.ndarray, lo: int, hi: int) -> tuple[np.ndarray, np.ndarray]:
    """``MAX(lo, MIN(hi, nearest_int(v)))`` as int32 and as float32. Overwrites ``v``."""
    i = _nearest_int(v)
    np.clip(i, lo, hi, out=i)
    return i, i.astype(F32)


def _c_sum(rows: np.ndarray, start_at_first: bool = False) -> np.ndarray:
    """A C accumulation over the rows of an element-major array, in order:
    ``float s = 0; for (i...) s += rows[i];``, or with ``start_at_first``
    ``float s = rows[0]; for (i = 1...) s += rows[i];`` (the two differ
    only in the sign of an all-zero sum)."""
    if rows.ndim == 2 and rows.shape[1] >= 2 and rows.flags.c_contiguous:
        # Reducing a C-contiguous array over its outer axis adds the rows one
        # by one (NumPy sums pairwise only along the fast axis in memory,
        # which a single column would become). Whatever zero it starts from,
        # only the sign of an all-zero sum can differ, and that is fixed up:
        # from +0.0 it is never -0.0; from rows[0] it is -0.0 iff every term is.
        s = np.add.reduce(rows, axis=0) + F32(0.0)
        if start_at_first:
            s[np.all(np.signbit(rows) & (rows == 0), axis=0)] = F32(-0.0)
        return s
    s = rows[0].copy() if start_at_first else rows[0] + F32(0.0)
    for i in range(1, rows.shape[0]):
        s += rows[i]
    return s


def _select(take: np.ndarray, *pairs: tuple[np.ndarray, np.ndarray]) -> None:
    """``dst[take] = src[take]`` for each ``(dst, src)`` pair of float32
    arrays shaped like ``take``: a bitwise blend, which NumPy runs several
    times faster than a masked copy or ``np.where``."""
    sel = np.negative(take.astype(np.uint32))  # all ones where taken
    for dst, src in pairs:
        d = dst.view(np.uint32)
        t = np.bitwise_xor(d, src.view(np.uint32))
        t &= sel
        d ^= t


def _signed_absmax_rows(xt: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``amax``/``max`` of ggml's ``if (ax > amax) { amax = ax; max = x[i]; }``
    loop (both start at +0.0), over the rows of an element-major array."""
    amax = np.zeros(xt.shape[1], dtype=F32)
    vmax = np.zeros(xt.shape[1], dtype=F32)
    for row in xt:
        ax = np.abs(row)
        take = ax > amax
        np.copyto(amax, ax, where=take)
        np.copyto(vmax, row, where=take)
    return amax, vmax


def make_qx_quants(x: np.ndarray, nmax: int, weights: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Symmetric scale search (``make_qx_quants`` with ``rmse_type = 1``),
    returning ``(scale, L)`` with ``L`` in ``[0, 2*nmax)``.

    ``weights`` are the quant weights ``qw``; without them the C's
    ``rmse_type = 1`` weights ``x*x`` are used (Q6_K without an imatrix).

    It minimizes the weighted squared error ``sum w (x - scale*l)^2`` over
    integer codes ``l`` in ``[-nmax, nmax-1]``: for a trial inverse scale the
    codes are ``nearest_int(iscale*x)``, and the best scale for those codes is
    the weighted least-squares one, ``sumlx / suml2``, whose error decreases
    as ``sumlx^2 / suml2`` grows. The trials are ``iscale = -nmax/max`` and
    ``-(nmax + 0.1*is)/max`` for ``is = -9..9`` (``max`` = the signed element
    of largest magnitude); a trial replaces the best one only if strictly
    better. A block with ``amax < 1e-15`` gets scale 0 and all codes 0.
    """
    shape = np.shape(x)
    n = shape[-1]
    xt = _element_major(x, n)
    wt = xt * xt if weights is None else _element_major(weights, n)
    wx = wt * xt
    amax, vmax = _signed_absmax_rows(xt)
    zero = amax < GROUP_MAX_EPS
    safe_max = np.where(zero, F32(1), vmax)
    fnmax = F32(nmax)

    def trial(iscale):
        lvals, lf = _codes(iscale * xt, -nmax, nmax - 1)
        return lvals, _c_sum(wx * lf), _c_sum(wt * lf * lf)

    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        lvals, sumlx, suml2 = trial(-fnmax / safe_max)
        scale = np.where(suml2 != 0, sumlx / suml2, F32(0)).astype(F32)
        best = scale * sumlx
        for step in range(-9, 10):
            if step == 0:
                continue
            iscale = -(fnmax + F32(0.1) * F32(step)) / safe_max
            cand, sumlx, suml2 = trial(iscale)
            better = (suml2 > 0) & (sumlx * sumlx > best * suml2)
            np.copyto(lvals, cand, where=better)
            new_scale = sumlx / suml2
            np.copyto(scale, new_scale, where=better)
            np.copyto(best, new_scale * sumlx, where=better)
    scale = np.where(zero, F32(0), scale).astype(F32)
    codes = np.where(zero, 0, lvals + nmax).astype(np.uint8)
    return scale.reshape(shape[:-1]), _block_major(codes, shape)


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


def make_qkx2_quants(x: np.ndarray, nmax: int, weights: np.ndarray, rmin: float, rdelta: float, nstep: int,
                     use_mad: bool = False) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Asymmetric (scale, min) search of the K-quants (``make_qkx2_quants``),
    returning ``(scale, the_min, L)`` with ``x ~ scale*L - the_min``, codes
    ``L`` in ``[0, nmax]`` and ``the_min = -min`` (``min <= 0``).

    It minimizes the weighted error ``sum_i w_i * e(scale*L_i + min - x_i)``
    (``e`` = squared error, or absolute error with ``use_mad``) over a grid
    of trial inverse scales. It starts from the min/max grid (``min =
    min(x, 0)``, ``iscale = nmax/(max - min)``, codes rounded) and its error;
    then for ``is = 0 .. nstep`` it rounds the codes for ``iscale = (rmin +
    rdelta*is + nmax)/(max - min)``, solves the 2x2 weighted least-squares
    problem for (scale, min) given those codes (``D = sum_w*sum_l2 -
    sum_l^2`` must be > 0; a fitted ``min > 0`` is replaced by ``min = 0``
    and the one-parameter fit ``scale = sum_xl/sum_l2``), and keeps the
    trial if its error is strictly smaller. As in the C, an accepted trial
    moves ``min``, and later trials round against the new ``min`` and
    ``max - min``. A block with ``max == min`` gets scale 0, codes 0 and
    ``the_min = -min``.

    ggml's ``make_qkx3_quants`` with explicit weights (the imatrix paths of
    Q2_K, Q4_K, Q5_K) is this same search: the two differ only in the
    default weights when none are given and in testing ``max <= min``
    instead of ``max == min``, which agree for finite x.

    Sums are the C's: ``sum_w`` and ``sum_x`` start from the first term, the
    others from +0.0.
    """
    shape = np.shape(x)
    n = shape[-1]
    xt = _element_major(x, n)
    wt = _element_major(weights, n)
    fnmax = F32(nmax)
    vmin = xt[0].copy()
    vmax = xt[0].copy()
    for row in xt[1:]:
        np.copyto(vmin, row, where=row < vmin)
        np.copyto(vmax, row, where=row > vmax)
    sum_w = _c_sum(wt, start_at_first=True)
    sum_x = _c_sum(wt * xt, start_at_first=True)
    minimum = np.where(vmin > 0, F32(0), vmin)  # if (min > 0) min = 0; a -0.0 min stays
    flat = vmax == minimum

    work = np.empty_like(xt)  # the C loops' per-element temporaries, for every block

    def codes(iscale, mn):
        """MAX(0, MIN(nmax, nearest_int(iscale*(x - mn)))), as float32."""
        np.subtract(xt, mn, out=work)
        np.multiply(work, iscale, out=work)
        # Shortcut, same bits: where every |iscale*(x - mn)| <= 2**22 (bounded
        # through the block's extremes; rounding is monotone), nearest_int is
        # (v + 1.5*2**23) - 1.5*2**23 in float32, and clamping commutes with it.
        bound = np.abs(iscale) * np.maximum(vmax - mn, mn - vmin)
        if np.all(bound <= F32(4194303)):
            np.add(work, _MAGIC, out=work)
            np.subtract(work, _MAGIC, out=work)
            return np.clip(work, F32(0), F32(nmax))
        ints = _nearest_int(work)
        np.clip(ints, 0, nmax, out=ints)
        return ints.astype(F32)

    def error(scale, mn, lf):
        """sum w * e(scale*l + mn - x)"""
        np.multiply(lf, scale, out=work)
        np.add(work, mn, out=work)
        np.subtract(work, xt, out=work)
        if use_mad:
            np.abs(work, out=work)
        else:
            np.multiply(work, work, out=work)
        np.multiply(work, wt, out=work)
        return _c_sum(work)

    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        wl = np.empty_like(xt)
        iscale = fnmax / (vmax - minimum)
        scale = F32(1) / iscale
        best = error(scale, minimum, codes(iscale, minimum))
        # The codes of the best trial are recomputed once at the end from the
        # (iscale, min) they were rounded with: the same operations, the same bits.
        code_iscale, code_min = iscale.copy(), minimum.copy()
        for step in range(nstep + 1):
            numer = F32(rmin) + F32(rdelta) * F32(step) + fnmax
            iscale = numer / (vmax - minimum)
            cf = codes(iscale, minimum)
            np.multiply(wt, cf, out=wl)
            sum_l = _c_sum(wl)
            np.multiply(wl, cf, out=work)
            sum_l2 = _c_sum(work)
            np.multiply(wl, xt, out=work)
            sum_xl = _c_sum(work)
            det = sum_w * sum_l2 - sum_l * sum_l
            this_scale = (sum_w * sum_xl - sum_x * sum_l) / det
            this_min = (sum_l2 * sum_x - sum_l * sum_xl) / det
            positive = this_min > 0
            this_min[positive] = F32(0)
            this_scale = np.where(positive, sum_xl / sum_l2, this_scale)
            cur = error(this_scale, this_min, cf)
            better = (det > 0) & (cur < best) & ~flat
            if better.any():
                _select(better, (code_iscale, iscale), (code_min, minimum), (best, cur), (scale, this_scale),
                        (minimum, this_min))
        lvals = codes(code_iscale, code_min).astype(np.uint8)
    scale = np.where(flat, F32(0), scale).astype(F32)
    lvals[:, flat] = 0
    return scale.reshape(shape[:-1]), (-minimum).reshape(shape[:-1]), _block_major(lvals, shape)


def make_q3_quants(x: np.ndarray, nmax: int) -> tuple[np.ndarray, np.ndarray]:
    """Symmetric search with coordinate descent (``make_q3_quants`` with
    ``do_rmse = true``, Q3_K's sub-block search), returning ``(scale, L)``
    with ``L`` in ``[0, 2*nmax)`` (``x ~ scale*(L - nmax)``).

    It minimizes ``sum x^2 (x - scale*l)^2`` over codes ``l`` in ``[-nmax,
    nmax-1]``, with the least-squares scale ``sumlx/suml2`` for the codes,
    i.e. it maximizes ``sumlx^2/suml2``. Start: ``l = nearest_int(-nmax/max
    * x)`` (``max`` = the signed element of largest magnitude). Then up to
    5 sweeps over the elements in order: remove element i from the sums,
    re-round it against the current best scale of the others
    (``nearest_int(x_i * sl2/slx)``, only when ``slx > 0``), and keep the new
    code if it strictly increases ``sumlx^2/suml2``. A sweep that changes
    nothing ends the search (the next one would repeat it exactly, so the
    blocks run their sweeps together until none changes). A block with
    ``amax < 1e-15`` gets scale 0 and codes 0.
    """
    shape = np.shape(x)
    n = shape[-1]
    xt = _element_major(x, n)
    amax, vmax = _signed_absmax_rows(xt)
    zero = amax < GROUP_MAX_EPS
    w = xt * xt
    wx = w * xt
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        iscale = -F32(nmax) / np.where(zero, F32(1), vmax)
        lvals, lf = _codes(iscale * xt, -nmax, nmax - 1)
        sumlx = _c_sum(wx * lf)
        suml2 = _c_sum(w * lf * lf)
        for _sweep in range(5):
            changed = False
            for i in range(n):
                li = lf[i]
                slx = sumlx - wx[i] * li
                sl2 = suml2 - w[i] * li * li
                new, nf = _codes(xt[i] * sl2 / slx, -nmax, nmax - 1)
                slx_new = slx + wx[i] * nf
                sl2_new = sl2 + w[i] * nf * nf
                accept = ((slx > 0) & (new != lvals[i]) & (sl2_new > 0)
                          & (slx_new * slx_new * suml2 > sumlx * sumlx * sl2_new))
                if accept.any():
                    changed = True
                    np.copyto(lvals[i], new, where=accept)
                    np.copyto(lf[i], nf, where=accept)
                    np.copyto(sumlx, slx_new, where=accept)
                    np.copyto(suml2, sl2_new, where=accept)
            if not changed:
                break
        scale = np.where(suml2 > 0, sumlx / suml2, F32(0))
    scale = np.where(zero, F32(0), scale).astype(F32)
    codes = np.where(zero, 0, lvals + nmax).astype(np.uint8)
    return scale.reshape(shape[:-1]), _block_major(codes, shape)


def make_qp_quants(x: np.ndarray, nmax: int, weights: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Scale search for non-negative data (``make_qp_quants``: the imatrix
    paths quantize the sub-block scales and mins with it), returning
    ``(scale, L)`` with ``x ~ scale*L``, ``L`` as the C's ``uint8_t``.

    It minimizes the weighted squared error ``sum w (x - scale*l)^2`` with
    ``l = min(nmax, nearest_int(iscale*x))`` (no lower clamp). First the
    trial inverse scales ``nmax/max`` and ``(nmax + 0.1*is)/max`` for ``is =
    -4..4`` are compared with the scale ``1/iscale`` (strictly smaller error
    wins); then the codes for the best one get up to 5 sweeps of weighted
    coordinate descent as in :func:`make_q3_quants` (re-round element i
    against the scale of the others when ``slx > 0`` and ``sl2 > 0``; keep it
    if ``sumlx^2/suml2`` strictly grows), and the result is the least-squares
    scale ``sumlx/suml2``. ``max`` is the C's ``MAX(max, x)`` chain from 0;
    ``max < 1e-15`` gives scale 0 and codes 0.

    C stores codes in ``uint8_t``: a negative code keeps its low byte, and
    the sweeps read the stored byte while the first sums use the int.
    """
    shape = np.shape(x)
    n = shape[-1]
    xt = _element_major(x, n)
    wt = _element_major(weights, n)
    vmax = np.zeros(xt.shape[1], dtype=F32)
    for row in xt:
        vmax = np.where(vmax > row, vmax, row)  # MAX(max, x[i]): a NaN x[i] is taken
    zero = vmax < GROUP_MAX_EPS
    fnmax = F32(nmax)
    wx = wt * xt

    def mse(scale, lf):
        diff = xt - scale * lf
        return _c_sum(wt * diff * diff)

    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        iscale = fnmax / vmax
        stored = _nearest_int(iscale * xt) & 0xFF
        best = mse(F32(1) / iscale, stored.astype(F32))
        for step in (-4, -3, -2, -1, 1, 2, 3, 4):
            iscale_is = (F32(0.1) * F32(step) + fnmax) / vmax
            lvals = np.minimum(nmax, _nearest_int(iscale_is * xt))
            cur = mse(F32(1) / iscale_is, lvals.astype(F32))
            better = cur < best
            np.copyto(best, cur, where=better)
            np.copyto(iscale, iscale_is, where=better)
        lvals = np.minimum(nmax, _nearest_int(iscale * xt))
        lf = lvals.astype(F32)
        sumlx = _c_sum(wx * lf)
        suml2 = _c_sum(wt * lf * lf)
        stored = lvals & 0xFF
        sf = stored.astype(F32)
        for _sweep in range(5):
            changed = False
            for i in range(n):
                li = sf[i]
                slx = sumlx - wx[i] * li
                sl2 = suml2 - wt[i] * li * li
                new = np.minimum(nmax, _nearest_int(xt[i] * sl2 / slx))
                nf = new.astype(F32)
                slx_new = slx + wx[i] * nf
                sl2_new = sl2 + wt[i] * nf * nf
                accept = ((slx > 0) & (sl2 > 0) & (new != stored[i])
                          & (slx_new * slx_new * suml2 > sumlx * sumlx * sl2_new))
                if accept.any():
                    changed = True
                    np.copyto(stored[i], new & 0xFF, where=accept)
                    np.copyto(sf[i], stored[i].astype(F32), where=accept)
                    np.copyto(sumlx, slx_new, where=accept)
                    np.copyto(suml2, sl2_new, where=accept)
            if not changed:
                break
        scale = np.where(suml2 > 0, sumlx / suml2, F32(0))
    scale = np.where(zero, F32(0), scale).astype(F32)
    stored[:, zero] = 0
    return scale.reshape(shape[:-1]), _block_major(stored.astype(np.uint8), shape)
