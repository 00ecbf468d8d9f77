"""What ik_llama.cpp's IQK formats share: row layout, importance weights,
nearest-value search on the non-linear grids, and the scale sweep.

* Rows. A format with ``row_meta_size > 0`` stores per-row metadata (a
  float32 or fp16 row scale) before the blocks of every row:
  ``row = [meta][block 0][block 1] ...``, ``ggml_row_size = row_meta_size +
  n/block_size*type_size``. :func:`split_rows` / :func:`join_rows` cut and
  glue the two parts.
* Importance weights. ``QHelper::row_weights`` copies the imatrix per row
  and replaces a block's weights by ``1e-9`` when the block carries no
  information (:func:`helper_weights`); the formats then weigh element j
  with ``qw[j]*sqrtf(sigma2 + x[j]^2)`` (with an imatrix) or ``x[j]^2`` /
  ``0.25*sigma2 + x[j]^2`` (without).
* Nearest grid value (:class:`Grid`): the quantizers' ``best_index_iq*nl``,
  a table lookup on ``trunc(x) - grid[0]`` followed, near a midpoint, by a
  float32 distance comparison in which a tie goes to the upper value.

Upstream: ik_llama.cpp ``ggml/src/iqk/iqk_quantize.cpp`` (``QHelper``,
``best_index_iq2nl``, ``best_index_iq3nl``, ``best_index_iq4nl``,
``best_index_iq5nl``, ``best_index_iq6nl``) @ 8337e4cd.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from . import q8_k
from ._format import BlockFormat, Invalid
from ._numerics import F32, canonical_dot, f16_bits_to_f32, nearest_int, sequential_sum, trunc_to_int
from .tables import ik_llama as tables

#: Elements per super-block.
QK_K = 256

#: IEEE results without warnings: a search divides by zero sums and
#: overflows on huge inputs exactly as the C does.
IEEE = {"over": "ignore", "invalid": "ignore", "divide": "ignore", "under": "ignore"}

_EPS = F32(1e-9)
_EPS2 = _EPS * _EPS  # kEps*kEps, a float32 constant


# --------------------------------------------------------------------------- rows

def split_rows(fmt: BlockFormat, q: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """uint8 rows -> (the row metadata bytes ``(nrows, meta)``, the blocks)."""
    q = np.ascontiguousarray(q, dtype=np.uint8)
    return q[:, :fmt.row_meta_size], fmt.blocks(q)


def join_rows(fmt: BlockFormat, meta: np.ndarray, blocks: np.ndarray) -> np.ndarray:
    """Row metadata bytes and structured blocks -> uint8 rows."""
    body = fmt.to_bytes(blocks)
    return np.ascontiguousarray(np.concatenate([np.asarray(meta, dtype=np.uint8).reshape(body.shape[0], -1), body],
                                               axis=1))


def f32_meta(d: np.ndarray) -> np.ndarray:
    """Row scales (float32, one per row) as the 4 metadata bytes of each row."""
    return np.ascontiguousarray(np.asarray(d, dtype=F32).reshape(-1, 1)).view(np.uint8)


def meta_f32(meta: np.ndarray) -> np.ndarray:
    """The float32 row scale of each row from its 4 metadata bytes."""
    return np.ascontiguousarray(meta).view(F32)[:, 0]


def f16_meta(bits: np.ndarray) -> np.ndarray:
    """fp16 row scales (bits, one per row) as the 2 metadata bytes of each row."""
    return np.ascontiguousarray(np.asarray(bits, dtype=np.uint16).reshape(-1, 1)).view(np.uint8)


def meta_f16(meta: np.ndarray) -> np.ndarray:
    """The fp16 row scale of each row (as float32) from its 2 metadata bytes."""
    return f16_bits_to_f32(np.ascontiguousarray(meta).view(np.uint16)[:, 0])


def nonfinite_row_scales(meta: np.ndarray, ctype: str) -> list[Invalid]:
    """Rows whose f32 or f16 row scale is inf or NaN (block index -1: the row
    metadata, before block 0)."""
    if ctype == "f32":
        bits = np.ascontiguousarray(meta).view(np.uint32)[:, 0]
        exp, frac = np.uint32(0x7F800000), np.uint32(0x7FFFFF)
    else:
        bits = np.ascontiguousarray(meta).view(np.uint16)[:, 0]
        exp, frac = np.uint16(0x7C00), np.uint16(0x3FF)
    bad = np.flatnonzero((bits & exp) == exp)
    return [Invalid(int(r), -1, "row scale", int(bits[r]), "NaN" if bits[r] & frac else "inf") for r in bad]


# --------------------------------------------------------------------------- weights

def helper_weights(x: np.ndarray, imatrix: np.ndarray | None, block: int) -> np.ndarray | None:
    """``QHelper::row_weights``: the imatrix, per row, with the weights of a
    block of ``block`` columns replaced by ``1e-9`` unless all three of
    ``sum w^2``, ``sum x^2`` and ``sum w*|x|`` (sequential float sums over
    the block) exceed ``block * 1e-18``. ``(nrows, n)`` or None."""
    if imatrix is None:
        return None
    nrows, n = x.shape
    w = np.broadcast_to(np.asarray(imatrix, dtype=F32), (nrows, n)).reshape(nrows, n // block, block)
    xb = x.reshape(nrows, n // block, block)
    with np.errstate(**IEEE):
        sumw2 = sequential_sum(w * w)
        sumx2 = sequential_sum(xb * xb)
        sumwx = sequential_sum(w * np.abs(xb))
    limit = F32(block) * _EPS2
    informative = (sumw2 > limit) & (sumx2 > limit) & (sumwx > limit)
    return np.where(informative[..., None], w, _EPS).astype(F32).reshape(nrows, n)


def superblock_sigma2(x: np.ndarray, factor: float) -> np.ndarray:
    """``sigma2 = sum_j x[j]^2`` over each 256-element super-block (a
    sequential float sum), then ``sigma2 *= factor/256`` (``factor/256`` is
    a float32 constant). ``x``: ``(..., 256)`` -> ``(...)``."""
    with np.errstate(**IEEE):
        return sequential_sum(x * x) * (F32(factor) / F32(QK_K))


def imatrix_element_weights(qw: np.ndarray, x: np.ndarray, sigma2: np.ndarray) -> np.ndarray:
    """``qw[j] * sqrtf(sigma2 + x[j]*x[j])`` (``sigma2`` broadcast over x's last axis)."""
    with np.errstate(**IEEE):
        return qw * np.sqrt(sigma2[..., None] + x * x)


# --------------------------------------------------------------------------- nearest value

@dataclass(frozen=True)
class Grid:
    """A non-linear value grid of two halves (base, shifted) of ``size``
    values each, and the quantizers' nearest-index rule for it.

    ``nearest(x, shift)`` is ``best_index_*`` on half ``shift``::

        ix = trunc(x) - half[0]          (index_from_difference: trunc(x - half[0]))
        ix < 0       -> 0
        ix >= limit  -> size - 1
        t = index[ix]
        t < size     -> t
        else i = t - size: (x - half[i] < half[i+1] - x) ? i : i + 1

    The distances are float32 subtractions of the grid values (exact
    integers) from x; a tie, or a comparison made equal by rounding, goes to
    the upper value. The same table serves both halves: the shifted half is
    the base half plus a constant, so only ``half[0]`` changes.
    """

    name: str
    values: np.ndarray
    size: int
    index: np.ndarray | None
    limit: int = 0
    index_from_difference: bool = False

    def half(self, shift) -> np.ndarray:
        return self.values[self.size * np.asarray(shift):][: self.size]

    def nearest(self, x: np.ndarray, shift=0) -> np.ndarray:
        """Index into the half (0 .. size-1) of the value nearest to each x
        (int64). ``shift``: 0, 1 or an integer array broadcast against x."""
        x = np.asarray(x, dtype=F32)
        base = np.asarray(shift, dtype=np.int64) * self.size
        vals = self.values.astype(np.int64)
        first = vals[base]
        with np.errstate(**IEEE):
            if self.index is None:  # best_index_iq2nl: direct comparisons
                v1 = vals[base + 1].astype(F32)
                v2 = vals[base + 2].astype(F32)
                lo = np.where(x < v1, 0, np.where(x > v2, 2, 1))
            else:
                if self.index_from_difference:
                    ix = trunc_to_int(x - first.astype(F32)).astype(np.int64)
                else:
                    ix = trunc_to_int(x).astype(np.int64) - first
                inside = (ix >= 0) & (ix < self.limit)
                t = self.index.astype(np.int64)[np.clip(ix, 0, self.limit - 1)]
                direct = inside & (t < self.size)
                lo = np.clip(t - self.size, 0, self.size - 2)
            lower = x - vals[base + lo].astype(F32)
            upper = vals[base + lo + 1].astype(F32) - x
            pick = np.where(lower < upper, lo, lo + 1)
        if self.index is None:
            return pick
        return np.where(direct, t, np.where(inside, pick, np.where(ix < 0, 0, self.size - 1)))


IQ2NL = Grid("iq2nl", tables.IQ2NL_VALUES, 4, None)
IQ3NL = Grid("iq3nl", tables.IQ3NL_VALUES, 8, tables.IQ3NL_INDEX, limit=111)
IQ4K = Grid("iq4k", tables.IQ4K_VALUES, 16, tables.IQ4NL_INDEX, limit=241)
IQ5NL = Grid("iq5nl", tables.IQ5NL_VALUES, 32, tables.IQ5NL_INDEX, limit=247)
IQ6NL = Grid("iq6nl", tables.IQ6NL_VALUES, 64, tables.IQ6NL_INDEX, limit=249, index_from_difference=True)


def c_sum(terms: np.ndarray) -> np.ndarray:
    """``float s = 0; for (...) s += terms[i];`` over the last axis."""
    with np.errstate(**IEEE):
        return sequential_sum(terms)


def dot_terms(d_row: np.ndarray, d_act: np.ndarray, isum: np.ndarray) -> np.ndarray:
    """Each super-block's float32 term of a dot product with Q8_K, reduced
    in the canonical order::

        term = (d_row * a.d) * (float)isum

    ``d_row``: the weight rows' scales ``(nrows,)`` (or per super-block
    ``(nrows, nsb)``), ``d_act``: the Q8_K scales ``(nsb,)``, ``isum``: the
    exact integer sum of sub-block scale times integer dot product
    ``(nrows, nsb)`` (|isum| < 2**31), rounded to float32 once."""
    d_row = np.asarray(d_row, dtype=F32)
    if d_row.ndim == 1:
        d_row = d_row[:, None]
    with np.errstate(**IEEE):
        term = (d_row * np.asarray(d_act, dtype=F32)[None, :]) * isum.astype(np.int64).astype(np.int32).astype(F32)
    return canonical_dot(term)


def row_scaled_dequantize(d_row: np.ndarray, scale: np.ndarray, levels: np.ndarray) -> np.ndarray:
    """Decode rows with one float row scale and a signed integer scale per
    sub-block (the _KS types): ``y = (d_row * (float)scale_b) * (float)level``,
    float32. ``d_row`` ``(nrows,)``, ``scale`` ``(nrows, nsb, nsub)``,
    ``levels`` ``(nrows, nsb, nsub, block)``: the codebook value of each element."""
    with np.errstate(**IEEE):
        dl = np.asarray(d_row, dtype=F32)[:, None, None] * scale.astype(F32)
        return (dl[..., None] * levels.astype(F32)).reshape(len(d_row), -1)


def row_scaled_dot(d_row: np.ndarray, scale: np.ndarray, levels: np.ndarray, aq: np.ndarray) -> np.ndarray:
    """The dot product of such rows (as ``row_scaled_dequantize``) with one
    Q8_K row: per super-block ``isum = sum_b scale_b * sum_j level_bj *
    a.qs_bj`` (exact), then ``dot_terms``."""
    a = q8_k.FORMAT.blocks(aq[None, :])[0]
    qa = a["qs"].astype(np.int64).reshape(-1, levels.shape[-2], levels.shape[-1])
    isum = (scale * (levels.astype(np.int64) * qa[None]).sum(axis=-1)).sum(axis=-1)
    return dot_terms(d_row, a["d"], isum)


# --------------------------------------------------------------------------- the scale sweep

def _weighted_sums(grid: Grid, al: np.ndarray, shift: int, x: np.ndarray, w: np.ndarray):
    """Quantize ``al`` to the nearest values of one half of ``grid``; return
    ``sum w*q*x`` and ``sum w*q*q`` over the block (element order)."""
    q = grid.values[grid.size * shift + grid.nearest(al, shift)].astype(F32)
    wq = w * q
    return c_sum(wq * x), c_sum(wq * q)


def _take_if_better(d, best, sumqx, sumq2, flag=None, value=None):
    """``if (sumq2 > 0 && sumqx*sumqx > best*sumq2) { d = sumqx/sumq2; best = d*sumqx; }``"""
    better = (sumq2 > 0) & (sumqx * sumqx > best * sumq2)
    d = np.where(better, sumqx / sumq2, d).astype(F32)
    best = np.where(better, d * sumqx, best).astype(F32)
    if flag is not None:
        flag = np.where(better, value, flag)
    return d, best, flag


def shift_sweep(x: np.ndarray, w: np.ndarray, vmax: np.ndarray, grid: Grid, ntry: int,
                step: float = 1.0, refit: bool = False, guard_first: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """The block-scale search of IQ4_K, IQ4_KS, IQ5_K, IQ5_KS (and, with
    other constants, IQ3_K, IQ6_K, IQ3_KS): for blocks ``x`` ``(..., n)``
    with weights ``w`` and signed largest element ``vmax``, the float scale
    ``d`` and whether the shifted half of the grid won.

    ::

        d = -max/grid[0]; id = 1/d
        candidate  q = nearest(+id*x), base half: d = sumqx/sumq2, best = d*sumqx
        candidate  q = nearest(-id*x), base half: taken if strictly better
        for itry in -ntry..ntry, then for the base, then the shifted half:
            id = (itry*step + half[0]) / max
            candidates +id*x, then -id*x: taken if strictly better
            (sumq2 > 0 and sumqx^2 > best*sumq2; then d = sumqx/sumq2, best = d*sumqx)

    Sums run over the block in element order, ``sumqx += w*q*x``,
    ``sumq2 += w*q*q``. A negative ``d`` is a negative block scale (the
    ``-id*x`` candidates). With ``refit`` (IQ5_K, IQ6_K), a nonzero ``d`` is
    then refitted once: ``q = nearest(x/d)`` on the chosen half,
    ``d = sumqx/sumq2`` if ``sumq2 > 0``. With ``guard_first`` (IQ3_K) the
    first candidate is taken only if its ``sumq2 > 0`` (else ``best = 0``
    and ``d = -max/grid[0]`` stand). Blocks with ``vmax == 0`` give
    garbage that the caller masks (the C skips them).
    """
    base0, shifted0 = F32(grid.values[0]), F32(grid.values[grid.size])
    with np.errstate(**IEEE):
        d = -vmax / base0
        inv = F32(1) / d
        al = inv[..., None] * x
        sumqx, sumq2 = _weighted_sums(grid, al, 0, x, w)
        if guard_first:
            first = sumq2 > 0
            d = np.where(first, sumqx / sumq2, d).astype(F32)
            best = np.where(first, d * sumqx, F32(0)).astype(F32)
        else:
            d = (sumqx / sumq2).astype(F32)
            best = (d * sumqx).astype(F32)
        sumqx, sumq2 = _weighted_sums(grid, -al, 0, x, w)
        d, best, _ = _take_if_better(d, best, sumqx, sumq2)
        shifted = np.zeros(d.shape, dtype=bool)
        for itry in range(-ntry, ntry + 1):
            for shift, first in ((0, base0), (1, shifted0)):
                inv = (F32(itry) * F32(step) + first) / vmax
                al = inv[..., None] * x
                for sign_al in (al, -al):
                    sumqx, sumq2 = _weighted_sums(grid, sign_al, shift, x, w)
                    d, best, shifted = _take_if_better(d, best, sumqx, sumq2, shifted, bool(shift))
        if refit:
            inv = F32(1) / d
            q = grid.values[grid.size * shifted[..., None] + grid.nearest(inv[..., None] * x, shifted[..., None])]
            q = q.astype(F32)
            wq = w * q
            sumqx, sumq2 = c_sum(wq * x), c_sum(wq * q)
            d = np.where((d != 0) & (sumq2 > 0), sumqx / sumq2, d).astype(F32)
    return d, shifted


def signed_max(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``amax``/``max`` of ``float amax = 0, max = 0; for (j...) if (ax > amax)
    { amax = ax; max = x[j]; }`` over the last axis: the first element of
    largest magnitude; a NaN never compares greater, so it is never taken
    (scales of overflowing blocks can be NaN)."""
    ax = np.abs(np.asarray(x, dtype=F32))
    ax = np.where(np.isnan(ax), F32(-1), ax)
    first = np.argmax(ax, axis=-1)[..., None]
    amax = np.take_along_axis(ax, first, axis=-1)[..., 0]
    vmax = np.take_along_axis(np.asarray(x, dtype=F32), first, axis=-1)[..., 0]
    taken = amax > 0
    return np.where(taken, amax, F32(0)).astype(F32), np.where(taken, vmax, F32(0)).astype(F32)


def running_max(x: np.ndarray) -> np.ndarray:
    """``m = 0; for (...) m = std::max(m, x[i]);`` over the last axis:
    ``std::max(m, v)`` is ``m < v ? v : m``, so a NaN is never taken."""
    return np.fmax.reduce(np.asarray(x, dtype=F32), axis=-1, initial=F32(0)).astype(F32)


def make_qx_quants_ik(x: np.ndarray, nmax: int, w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """ik_llama.cpp's ``make_qx_quants`` (``ggml/src/ggml-quants.c``, weights
    given): symmetric codes ``l`` in ``[-nmax, nmax-1]`` and a scale, for
    blocks ``x`` ``(..., n)``. Returns ``(scale, l + nmax)``.

    It differs from mainline's in three ways: the trial ``is = 0`` is not
    skipped, every ``is`` also tries the positive inverse scale
    ``(nmax - 1 + 0.1*is)/max``, and a coordinate descent follows::

        max = signed largest element; amax < 1e-15: scale 0, codes 0
        l = clamp(nearest_int(-nmax/max * x)); scale = sumlx/suml2 (0 if suml2 == 0)
        best = scale*sumlx
        for is in -9..9, iscale in (-(nmax + 0.1*is)/max, (nmax-1 + 0.1*is)/max):
            codes at iscale; taken if suml2 > 0 and sumlx^2 > best*suml2
        repeat up to n*(2*nmax-1) times:
            g_j = scale*w_j*(x_j - scale*l_j) for the codes that may still move
            in g's direction; j = the first of largest |g_j|
            move l_j by sign(g_j) (sumlx += -/+ w_j*x_j, suml2 += -/+ w_j*(2l_j +- 1));
            keep it if the new sumlx^2 > best*new suml2 (and new suml2 > 0), else stop

    with ``sumlx = sum w*x*l``, ``suml2 = sum w*l*l`` in element order.
    """
    x = np.asarray(x, dtype=F32)
    n = x.shape[-1]
    with np.errstate(**IEEE):
        amax, vmax = signed_max(x)
        zero = amax < F32(1e-15)
        vmax = np.where(zero, F32(1), vmax)
        wx = w * x

        def trial(iscale):
            l = np.clip(nearest_int(iscale[..., None] * x), -nmax, nmax - 1)
            lf = l.astype(F32)
            return l, c_sum(wx * lf), c_sum(w * lf * lf)

        L, sumlx, suml2 = trial(F32(-nmax) / vmax)
        scale = np.where(suml2 != 0, sumlx / suml2, F32(0)).astype(F32)
        best = (scale * sumlx).astype(F32)
        for step in range(-9, 10):
            for iscale in (-(F32(nmax) + F32(0.1) * F32(step)) / vmax, (F32(nmax - 1) + F32(0.1) * F32(step)) / vmax):
                cand, slx, sl2 = trial(iscale)
                better = (sl2 > 0) & (slx * slx > best * sl2)
                L = np.where(better[..., None], cand, L)
                scale = np.where(better, slx / sl2, scale).astype(F32)
                best = np.where(better, scale * slx, best).astype(F32)
                sumlx = np.where(better, slx, sumlx).astype(F32)
                suml2 = np.where(better, sl2, suml2).astype(F32)
        active = ~zero
        for _ in range(n * (2 * nmax - 1)):
            if not active.any():
                break
            lf = L.astype(F32)
            g = (scale[..., None] * w) * (x - scale[..., None] * lf)
            movable = ((g > 0) & (L < nmax - 1)) | ((g < 0) & (L > -nmax))
            ag = np.where(movable, np.abs(g), F32(0))
            j = np.argmax(ag, axis=-1)  # first of the largest; none movable (all 0) -> stop
            gmax = np.take_along_axis(g, j[..., None], axis=-1)[..., 0]
            found = np.take_along_axis(ag, j[..., None], axis=-1)[..., 0] > 0
            wj = np.take_along_axis(w, j[..., None], axis=-1)[..., 0]
            xj = np.take_along_axis(x, j[..., None], axis=-1)[..., 0]
            lj = np.take_along_axis(L, j[..., None], axis=-1)[..., 0]
            up = gmax > 0
            new_sumlx = np.where(up, sumlx + wj * xj, sumlx - wj * xj).astype(F32)
            new_suml2 = np.where(up, suml2 + wj * (2 * lj + 1).astype(F32), suml2 - wj * (2 * lj - 1).astype(F32))
            new_suml2 = new_suml2.astype(F32)
            keep = active & found & (new_suml2 > 0) & (new_sumlx * new_sumlx > best * new_suml2)
            sumlx = np.where(keep, new_sumlx, sumlx).astype(F32)
            suml2 = np.where(keep, new_suml2, suml2).astype(F32)
            scale = np.where(keep, sumlx / suml2, scale).astype(F32)
            best = np.where(keep, scale * sumlx, best).astype(F32)
            moved = np.where(up, lj + 1, lj - 1)
            np.put_along_axis(L, j[..., None], np.where(keep, moved, lj)[..., None], axis=-1)
            active = keep
    scale = np.where(zero, F32(0), scale).astype(F32)
    return scale, np.where(zero[..., None], 0, L + nmax)


# --------------------------------------------------------------------------- 256-blocks of 16 (IQ4_K, IQ5_K, IQ6_K)

def sigma2_scaled(xs: np.ndarray) -> np.ndarray:
    """``sigma2 = 2*sumx2/QK_K`` (IQ5_K, IQ6_K: ``(2*sum)/256``, which
    differs from ``sum*(2/256)`` only where ``2*sum`` overflows)."""
    with np.errstate(**IEEE):
        return (F32(2) * sequential_sum(xs * xs)) / F32(QK_K)


def superblock_weights(x: np.ndarray, imatrix: np.ndarray | None, block: int, sigma2: np.ndarray,
                       quarter_sigma: bool) -> np.ndarray:
    """Element weights ``(nrows, nsb, 256/block, block)``: with an imatrix
    ``qw*sqrtf(sigma2 + x^2)`` (``qw`` after ``QHelper::row_weights`` over
    blocks of ``block``); without, ``x^2`` or, with ``quarter_sigma``,
    ``0.25*sigma2 + x^2``. ``sigma2``: per super-block ``(nrows, nsb)``."""
    nrows, n = x.shape
    xb = x.reshape(nrows, n // QK_K, QK_K // block, block)
    qw = helper_weights(x, imatrix, block)
    s2 = sigma2[..., None, None]
    with np.errstate(**IEEE):
        if qw is not None:
            return imatrix_element_weights(qw.reshape(xb.shape), xb, s2[..., 0])
        if quarter_sigma:
            return F32(0.25) * s2 + xb * xb
        return xb * xb


@dataclass
class SuperBlocks:
    """The result of :func:`quantize_superblocks`: per super-block the float
    scale ``d`` (to be stored as fp16), per sub-block the integer scale
    ``code`` and ``shifted`` bit, per element the grid index ``idx``."""

    d: np.ndarray
    code: np.ndarray
    shifted: np.ndarray
    idx: np.ndarray
    skipped: np.ndarray


def quantize_superblocks(xb: np.ndarray, w: np.ndarray, grid: Grid, ntry: int, *, refit: bool, divisor: int,
                         code_range: tuple[int, int], skip_empty: bool, step: float = 1.0) -> SuperBlocks:
    """The super-block quantizer of IQ4_K (``quantize_row_iq4_k_impl_bs16``),
    IQ5_K and IQ6_K (``quantize_row_iq5_k_impl``, ``quantize_row_iq6_k_impl``)
    over ``xb``/``w`` ``(nrows, nsb, 16, 16)``::

        per sub-block: scale_b, shift_b = shift_sweep(...)   (0, no shift if amax < 1e-16)
        max_scale = the signed scale of largest magnitude
        [skip_empty: max_scale == 0 -> d = 0, nothing else written]
        d = -max_scale/divisor;  id = d ? 1/d : 0
        code_b = clamp(nearest_int(id*scale_b), code_range)
        dl = d*code_b;  q_j = nearest((1/dl)*x_j) on the sub-block's half
            [skip_empty formats leave sub-blocks with dl == 0 at index 0]
        d = sum w*q*x / sum w*q*q over the super-block (q = value*code), if > 0
    """
    amax, vmax = signed_max(xb)
    empty = amax < F32(1e-16)
    scales, shifted = shift_sweep(xb, w, np.where(empty, F32(1), vmax), grid, ntry, step=step, refit=refit)
    scales = np.where(empty, F32(0), scales).astype(F32)
    shifted = shifted & ~empty
    lo, hi = code_range
    with np.errstate(**IEEE):
        _, max_scale = signed_max(scales)
        d = -max_scale / F32(divisor)
        inv = np.where(d != 0, F32(1) / d, F32(0)).astype(F32)
        code = np.clip(nearest_int(inv[..., None] * scales), lo, hi)
        dl = d[..., None] * code.astype(F32)
        idl = np.where(dl != 0, F32(1) / dl, F32(0)).astype(F32)
        idx = grid.nearest(idl[..., None] * xb, shifted[..., None])
        used = np.ones(dl.shape, dtype=bool) if not skip_empty else dl != 0
        idx = np.where(used[..., None], idx, 0)
        q = (grid.values.astype(np.int64)[grid.size * shifted[..., None] + idx] * code[..., None]).astype(F32)
        wq = w * q
        tqx = np.where(used[..., None], wq * xb, F32(0))
        tq2 = np.where(used[..., None], wq * q, F32(0))
        nrows, nsb = d.shape
        sumqx = c_sum(tqx.reshape(nrows, nsb, -1))
        sumq2 = c_sum(tq2.reshape(nrows, nsb, -1))
        d = np.where(sumq2 > 0, sumqx / sumq2, d).astype(F32)
    skipped = (max_scale == 0) if skip_empty else np.zeros(d.shape, dtype=bool)
    return SuperBlocks(d, code, shifted, idx, skipped)


# --------------------------------------------------------------------------- IQ2_K / IQ2_KS searches

def make_qx_quants_iqk(x: np.ndarray, nmax: int, w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``make_qx_quants`` of ``iqk_quantize.cpp`` (for the scales of IQ2_K and
    IQ2_KS): mainline's search (``-nmax/max``, then ``-(nmax + 0.1*is)/max``
    for is = +-1..+-9, a trial replacing the best only if strictly better),
    but a set is all zero only if every element is exactly 0. Returns
    ``(scale, L)`` with ``L = l + nmax`` in ``[0, 2*nmax)``. Sums in element
    order: ``sumlx += w*x*l``, ``suml2 += w*l*l``."""
    x = np.asarray(x, dtype=F32)
    with np.errstate(**IEEE):
        amax, vmax = signed_max(x)
        zero = amax == 0
        vmax = np.where(zero, F32(1), vmax)
        wx = w * x

        def trial(iscale):
            l = np.clip(nearest_int(iscale[..., None] * x), -nmax, nmax - 1)
            lf = l.astype(F32)
            return l, c_sum(wx * lf), c_sum(w * lf * lf)

        L, sumlx, suml2 = trial(F32(-nmax) / vmax)
        scale = np.where(suml2 != 0, sumlx / suml2, F32(0)).astype(F32)
        best = (scale * sumlx).astype(F32)
        for step in range(-9, 10):
            if step == 0:
                continue
            cand, slx, sl2 = trial(-(F32(nmax) + F32(0.1) * F32(step)) / vmax)
            better = (sl2 > 0) & (slx * slx > best * sl2)
            L = np.where(better[..., None], cand, L)
            scale = np.where(better, slx / sl2, scale).astype(F32)
            best = np.where(better, scale * slx, best).astype(F32)
    return np.where(zero, F32(0), scale).astype(F32), np.where(zero[..., None], 0, L + nmax)


def partitions(n: int, max_i1: int | None = None, min_i3: int = 0) -> np.ndarray:
    """The breakpoints ``(i1, i2, i3)`` of the 4-bin partition searches in
    loop order: ``i1 < max_i1``, ``i1 <= i2 < n``, ``max(i2, min_i3) <= i3 < n``."""
    max_i1 = n if max_i1 is None else max_i1
    return np.array([(i1, i2, i3) for i1 in range(max_i1) for i2 in range(i1, n) for i3 in range(max(i2, min_i3), n)],
                    dtype=np.int64)


def partition_search(x: np.ndarray, w: np.ndarray, grid: Grid,
                     breakpoints: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The exhaustive 2-bit search of IQ2_K and IQ2_KS (``x``, ``w``:
    ``(..., n)``): the elements sorted ascending (ties by index, as
    ``std::sort`` of ``(x, j)`` pairs) are cut into 4 runs at ``i1 <= i2 <=
    i3``, mapped to the 4 grid values in ascending or descending order, on
    either half. With prefix sums ``sumw[k]``, ``sumx[k]`` (``+= w``,
    ``+= w*x`` over the sorted elements) each candidate costs::

        sumqx = (sumx[i1]-sumx[0])*v0 + (sumx[i2]-sumx[i1])*v1
              + (sumx[i3]-sumx[i2])*v2 + (sumx[n]-sumx[i3])*v3
        sumq2 = (sumw[i1]-sumw[0])*v0*v0 + ... + (sumw[n]-sumw[i3])*v3*v3

    and is taken if ``sumq2 > 0 && sumqx^2 > best*sumq2`` (then ``d =
    sumqx/sumq2``, ``best = d*sumqx``); per breakpoint the candidates run
    base ascending, shifted ascending, base descending, shifted descending.
    Returns the scale ``d`` (0 if nothing was taken) and the shift."""
    shape = x.shape[:-1]
    n = x.shape[-1]
    x2 = np.asarray(x, dtype=F32).reshape(-1, n)
    w2 = np.asarray(w, dtype=F32).reshape(-1, n)
    d_out = np.zeros(x2.shape[0], dtype=F32)
    shift_out = np.zeros(x2.shape[0], dtype=bool)
    base = grid.values[:4].astype(F32)
    shifted = grid.values[4:8].astype(F32)
    orders = ((base, False), (shifted, True), (base[::-1], False), (shifted[::-1], True))
    i1, i2, i3 = breakpoints.T
    batch = max(64, (1 << 22) // (4 * len(breakpoints)))  # candidate arrays of about 16 MiB
    with np.errstate(**IEEE):
        for start in range(0, x2.shape[0], batch):
            xs, ws = x2[start:start + batch], w2[start:start + batch]
            order = np.argsort(xs, axis=-1, kind="stable")
            sx_ = np.take_along_axis(xs, order, axis=-1)
            sw_ = np.take_along_axis(ws, order, axis=-1)
            zeros = np.zeros((xs.shape[0], 1), dtype=F32)
            sumw = np.concatenate([zeros, np.add.accumulate(sw_, axis=-1, dtype=F32)], axis=-1)
            sumx = np.concatenate([zeros, np.add.accumulate(sw_ * sx_, axis=-1, dtype=F32)], axis=-1)
            runs_x = (sumx[:, i1] - sumx[:, :1], sumx[:, i2] - sumx[:, i1], sumx[:, i3] - sumx[:, i2],
                      sumx[:, n:n + 1] - sumx[:, i3])
            runs_w = (sumw[:, i1] - sumw[:, :1], sumw[:, i2] - sumw[:, i1], sumw[:, i3] - sumw[:, i2],
                      sumw[:, n:n + 1] - sumw[:, i3])
            cands_qx, cands_q2 = [], []
            for vals, _ in orders:
                cands_qx.append(((runs_x[0] * vals[0] + runs_x[1] * vals[1]) + runs_x[2] * vals[2])
                                + runs_x[3] * vals[3])
                cands_q2.append(((runs_w[0] * vals[0] * vals[0] + runs_w[1] * vals[1] * vals[1])
                                 + runs_w[2] * vals[2] * vals[2]) + runs_w[3] * vals[3] * vals[3])
            qx = np.stack(cands_qx, axis=-1).reshape(xs.shape[0], -1)  # breakpoint-major, then the 4 orders
            q2 = np.stack(cands_q2, axis=-1).reshape(xs.shape[0], -1)
            is_shift = np.tile([o[1] for o in orders], len(breakpoints))
            qxT, q2T = np.ascontiguousarray(qx.T), np.ascontiguousarray(q2.T)
            best = np.zeros(xs.shape[0], dtype=F32)
            d = np.zeros(xs.shape[0], dtype=F32)
            sh = np.zeros(xs.shape[0], dtype=bool)
            for c in range(qxT.shape[0]):
                sqx, sq2 = qxT[c], q2T[c]
                better = (sq2 > 0) & (sqx * sqx > best * sq2)
                if better.any():
                    d = np.where(better, sqx / sq2, d).astype(F32)
                    best = np.where(better, d * sqx, best).astype(F32)
                    sh = np.where(better, is_shift[c], sh)
            d_out[start:start + batch] = d
            shift_out[start:start + batch] = sh
    return d_out.reshape(shape), shift_out.reshape(shape)
