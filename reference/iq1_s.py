"""IQ1_S (ggml type 19): 256-element super-blocks of 8 blocks of 32, each
group of 8 elements one of 2048 points of a ternary grid (11-bit index), a
3-bit scale and a delta sign per block, an fp16 super-block scale. 1.5625
bits per weight.

Block (50 bytes)::

    offset 0   d        fp16       super-block scale
    offset 2   qs[32]   uint8      low 8 bits of the grid index of group g
                                   (elements 8g .. 8g+7)
    offset 34  qh[8]    uint16     word b, for block b (groups 4b .. 4b+3):
                                   bits 3k .. 3k+2  high 3 bits of group 4b+k's index
                                   bits 12 .. 14    scale code ls_b (0..7)
                                   bit 15           delta sign s_b (1: negative)

    index_g   = qs[g] | ((qh[g // 4] >> 3*(g % 4)) & 7) << 8
    dl_b      = d * (2*ls_b + 1)                       (float32)
    delta_b   = s_b ? -0.125 : +0.125                  (IQ1S_DELTA)
    element 8g + j = dl_b * (iq1s_grid[index_g][j] + delta_b),   b = g // 4

``iq1s_grid[index][j]`` is byte j of the 64-bit grid entry, an int8 in
{-1, 0, +1}; ``grid + delta`` is exact in float32, so one rounding remains
(``dl_b * ...``) besides ``dl_b`` itself.

Quantize (``quantize_iq1_s`` = ``quantize_row_iq1_s_impl`` row by row; an
importance matrix is required, as in ggml, where ``ggml_quantize_chunk``
asserts it)::

    sigma2    = (2 * sum(x^2 over the super-block)) / 256       (sequential sum)
    w_i       = qw_i * sqrt(sigma2 + x_i^2)
    per block of 32 (b):
      max |x| < 1e-12: scale 0, delta +, index 0 for its groups
      sort x ascending (ties in index order, _iq1); prefix sums
        S_j = S_{j-1} + w*x,  W_j = W_{j-1} + w   over the sorted order
      for i1 = 0..32, i2 = i1..32, then delta + (x_p) before delta - (x_m):
        levels 0 | 1 | 2 for sorted positions [0,i1) [i1,i2) [i2,32), values v
        sumqx = (S_i1 - S_0)*v0 + (S_i2 - S_i1)*v1 + (S_32 - S_i2)*v2
        sumq2 = (W_i1 - W_0)*v0*v0 + (W_i2 - W_i1)*v1*v1 + (W_32 - W_i2)*v2*v2
        keep if sumq2 > 0 and sumqx^2 > best*sumq2; scale = sumqx/sumq2,
        best = scale*sumqx                                  (_iq1.scan_best)
      no candidate kept (every weight 0, or NaN sums): as a zero block
      scale < 0: levels L -> 2 - L, scale -> -scale, delta sign flipped
      each group of 8: its lattice point u = sum L_j << 2j; on the grid: that
        index; else the neighbour with the least sum w*(scale*v[L] - x)^2
        (_iq1.best_neighbour); if any group was off the grid, refit
        scale = sumqx/sumq2 over the block's chosen points if both > 0
      max_scale = the largest block scale
    max_scale == 0: d = 0 and every ls, delta bit 0 (the indices stay)
    d = max_scale / 15;  stored fp16(d * 1.125)
    ls_b = clamp(nearest_int(0.5 * (1/d * scale_b - 1)), 0, 7), + bit 3 for delta -

The 1.125 in the stored scale is ggml's fudge factor: the searched scale
models levels ``2l+1`` scaled by ``d`` on the raw search values, and the
stored one is deliberately 12.5 % larger.

Sort ties: upstream sorts with C ``qsort``, whose order of equal values the
C standard leaves open; on glibc it is a merge sort at this size and keeps
equal values in index order. The spec defines exactly that stable order
(equal values, -0.0 and +0.0 included, keep index order), so it agrees with
ggml built on glibc; a libc with an unstable ``qsort`` may give other bytes
for blocks with equal values.

Zero blocks: a block of 32 with max |x| < 1e-12, or whose search keeps no
candidate (all its weights 0, e.g. an imatrix that is 0 on its columns),
stores index 0 for its groups and contributes scale 0; an all-zero
super-block is 50 zero bytes (d = +0.0, not -0.0).

Overflow: where x*x overflows (|x| around 1e19 and more in a super-block),
the weights are inf and a block's search can end with scale inf/inf = NaN;
ggml then fails ``GGML_ASSERT(scale >= 0)`` and aborts the process. The
spec raises ``NonFiniteInputError`` naming the row and the elements
instead. Smaller overflows (sums of |x| near 1e13 and more) are IEEE
arithmetic that the spec reproduces byte for byte. If every neighbour's
score overflowed, upstream's fallback would read out of bounds; the spec
defines that case (``_iq1.best_neighbour``), which the NaN check leaves
unreachable with finite input as far as known.

Dot product with Q8_K (``ggml_vec_dot_iq1_s_q8_K_generic``), per super-block::

    lsum_b  = sum over block b of iq1s_grid value * a.qs          (exact)
    sumi    = sum_b (2*ls_b + 1) * lsum_b                         (exact)
    sumi1   = sum_b (2*ls_b + 1) * (s_b ? -1 : 1) * (a.bsums[2b] + a.bsums[2b+1])
    contribution = (fp16(d) * a.d) * ((float)sumi + 0.125 * (float)sumi1)

ggml adds each contribution straight into one float sum; the spec reduces
them in the canonical 16-lane order. ``a.bsums`` are read as stored.

Validation: ``d`` must be finite.

Upstream: ggml ``src/ggml-quants.c`` ``quantize_iq1_s``,
``quantize_row_iq1_s_impl``, ``iq1_find_best_neighbour2``,
``dequantize_row_iq1_s``; ``src/ggml-cpu/quants.c``
``ggml_vec_dot_iq1_s_q8_K_generic``; ``src/ggml-common.h`` ``block_iq1_s``,
``iq1s_grid`` (llama.cpp @ 0c1e57098, vendored in llama-cpp-python 0.3.36;
the same at ggml @ d99724f2).
"""

from __future__ import annotations

import numpy as np

from . import _iq1, q8_k
from ._format import BlockFormat, Field, Invalid, nonfinite_f16
from ._numerics import F32, canonical_dot, f16_bits_to_f32, f32_to_f16_bits, nearest_int, sequential_sum

QK_K = 256
NBLOCK, BLOCK, GROUP = 8, 32, 8
GROUP_MAX_EPS_IQ1_S = F32(1e-12)

#: Super-blocks quantized per batch (independent: the batch never changes a bit).
BATCH_SUPERBLOCKS = 256

#: ``iq1s_grid`` as one flat int8 array: value j of grid point g is entry 8g + j.
IQ1S_GRID_VALUES = _iq1.GRID_VALUES.reshape(-1)

#: Overflow, 0/0 and inf*0 happen on huge, tiny or zero blocks exactly as in the C.
IEEE = {"over": "ignore", "invalid": "ignore", "divide": "ignore", "under": "ignore"}

FORMAT = BlockFormat(
    name="iq1_s", origin="ggml", type_id=19, block_size=QK_K,
    fields=(Field("d", "f16", 1, "super-block scale"),
            Field("qs", "u8", QK_K // 8, "low 8 bits of the grid index of group g (elements 8g .. 8g+7)"),
            Field("qh", "u16", QK_K // 32, "word b (groups 4b .. 4b+3): bits 3k..3k+2 = high 3 bits of group 4b+k's "
                                           "index, bits 12-14 = scale code ls_b, bit 15 = delta sign; "
                                           "value d*(2*ls_b+1)*(iq1s_grid[index][j] +- 0.125)")),
    vec_dot_format="q8_k",
    upstream="ggml src/ggml-quants.c quantize_iq1_s, quantize_row_iq1_s_impl, iq1_find_best_neighbour2, "
             "dequantize_row_iq1_s; src/ggml-cpu/quants.c ggml_vec_dot_iq1_s_q8_K_generic "
             "@ llama.cpp 0c1e57098 (ggml d99724f2)",
    imatrix="required",
)

_GROUPS = np.arange(NBLOCK * 4)


def group_indices(blocks: np.ndarray) -> np.ndarray:
    """The 11-bit grid index of every group of 8, ``(..., 32)`` int32."""
    qh = blocks["qh"][..., _GROUPS // 4].astype(np.int32)
    return blocks["qs"].astype(np.int32) | ((qh >> (3 * (_GROUPS % 4))) & 7) << 8


def scale_codes(blocks: np.ndarray) -> np.ndarray:
    """``ls_b`` (0..7) of every block of 32, ``(..., 8)`` int32."""
    return (blocks["qh"].astype(np.int32) >> 12) & 7


def delta_signs(blocks: np.ndarray) -> np.ndarray:
    """1 where block b's delta is -0.125, ``(..., 8)`` int32."""
    return blocks["qh"].astype(np.int32) >> 15


def dequantize(q: np.ndarray) -> np.ndarray:
    b = FORMAT.blocks(q)
    nrows, nsuper = b.shape
    index = group_indices(b)
    sign = delta_signs(b)[..., _GROUPS // 4]
    values = _iq1.GRID_PLUS_DELTA[sign, index]  # (rows, supers, 32, 8): grid + delta
    with np.errstate(**IEEE):
        dl = f16_bits_to_f32(b["d"])[..., None] * (2 * scale_codes(b) + 1).astype(F32)
        values *= dl[..., _GROUPS // 4, None]
    return values.reshape(nrows, -1)


def vec_dot(wq: np.ndarray, aq: np.ndarray) -> np.ndarray:
    w, a = FORMAT.blocks(wq), q8_k.FORMAT.blocks(aq[None, :])
    nrows, nsuper = w.shape
    grid = _iq1.GRID_VALUES.astype(np.int32)[group_indices(w)]  # (rows, supers, 32, 8)
    lsum = np.einsum("rsbj,rsbj->rsb", grid.reshape(nrows, nsuper, NBLOCK, BLOCK),
                     a["qs"].astype(np.int32).reshape(1, nsuper, NBLOCK, BLOCK))
    ls = 2 * scale_codes(w) + 1
    delta = 1 - 2 * delta_signs(w)
    bsums = a["bsums"].astype(np.int32).reshape(1, nsuper, NBLOCK, 2).sum(axis=-1)
    sumi = (ls * lsum).sum(axis=-1)
    sumi1 = (ls * delta * bsums).sum(axis=-1)
    with np.errstate(**IEEE):
        terms = (f16_bits_to_f32(w["d"]) * a["d"]) * (sumi.astype(F32) + _iq1.DELTA * sumi1.astype(F32))
        return canonical_dot(terms)


def validate(q: np.ndarray) -> list[Invalid]:
    return nonfinite_f16(FORMAT.blocks(q), "d")


# ------------------------------------------------------------------ quantize

def quantize(x: np.ndarray, imatrix: np.ndarray | None = None) -> np.ndarray:
    if imatrix is None:
        from quantspec.errors import ImatrixError
        raise ImatrixError(f"iq1_s: an importance matrix of {x.shape[1]} float32 weights is required "
                           "(ggml_quantize_chunk asserts one for IQ1_S)")
    nrows, n = x.shape
    per_row = n // QK_K
    xs = np.asarray(x, dtype=F32).reshape(-1, QK_K)
    qw = np.asarray(imatrix, dtype=F32).reshape(per_row, QK_K)
    blocks = np.empty(xs.shape[0], dtype=FORMAT.dtype)
    with np.errstate(**IEEE):
        for start in range(0, xs.shape[0], BATCH_SUPERBLOCKS):
            stop = min(start + BATCH_SUPERBLOCKS, xs.shape[0])
            try:
                blocks[start:stop] = _superblocks(xs[start:stop], qw[np.arange(start, stop) % per_row])
            except _iq1.Overflow as exc:
                raise _iq1.overflow_error("iq1_s", x, start, exc.block, per_row, BLOCK) from None
    return FORMAT.to_bytes(blocks.reshape(nrows, per_row))


def quantize_refusal(x: np.ndarray, imatrix: np.ndarray | None, superblock: int):
    """The error ``quantize(x, imatrix)`` raises when super-block ``superblock``
    (row-major) is the first it refuses (a NaN block scale), or None: for the
    kernels, which report only the super-block (``_iq1.refusal``)."""
    return _iq1.refusal("iq1_s", _superblocks, x, imatrix, superblock, BLOCK)


def _superblocks(xs: np.ndarray, qw: np.ndarray) -> np.ndarray:
    """Super-blocks ``xs (S, 256)`` with their imatrix columns ``qw`` -> blocks ``(S,)``."""
    nsuper = xs.shape[0]
    sigma2 = (F32(2) * sequential_sum(xs * xs)) / F32(QK_K)
    weight = qw * np.sqrt(sigma2[:, None] + xs * xs)
    xb = xs.reshape(-1, BLOCK)
    wb = weight.reshape(-1, BLOCK)
    index, scale, negative = _block_search(xb, wb)
    index = index.reshape(nsuper, NBLOCK, 4)
    scale = scale.reshape(nsuper, NBLOCK)
    negative = negative.reshape(nsuper, NBLOCK)

    max_scale = np.zeros(nsuper, dtype=F32)
    for b in range(NBLOCK):  # MAX(max_scale, scale)
        max_scale = np.where(max_scale > scale[:, b], max_scale, scale[:, b])
    d = max_scale / F32(15)
    inverse = F32(1) / d
    ls = np.clip(nearest_int(F32(0.5) * (inverse[:, None] * scale - F32(1))), 0, 7)
    ls = ls | np.where(negative, 8, 0)
    written = max_scale != 0  # if (!max_scale) continue: d and the scale bits stay 0
    ls = np.where(written[:, None], ls, 0)

    blocks = np.empty(nsuper, dtype=FORMAT.dtype)
    blocks["d"] = np.where(written, f32_to_f16_bits(d * F32(1.125)), np.uint16(0))
    blocks["qs"] = (index & 255).reshape(nsuper, QK_K // 8).astype(np.uint8)
    high = ((index >> 8) << (3 * np.arange(4))).sum(axis=-1)
    blocks["qh"] = (high | (ls << 12)).astype(np.uint16)
    return blocks


def _block_search(xb: np.ndarray, wb: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The search of every block of 32 ``xb``, ``wb (B, 32)``: grid indices
    ``(B, 4)``, scales ``(B,)`` and delta signs (True: negative)."""
    nblocks = xb.shape[0]
    amax = np.max(np.abs(xb), axis=1)
    order = _iq1.stable_order(xb)
    wx = np.take_along_axis(wb * xb, order, axis=1)
    sumx = _iq1.prefix_sums(wx)  # (B, 33)
    sumw = _iq1.prefix_sums(np.take_along_axis(wb, order, axis=1))
    i1, i2 = _iq1.splits(BLOCK)
    # element-major: candidate c = 2*split + (0: x_p, 1: x_m), the C loop order, one row per candidate
    sx, sw = np.ascontiguousarray(sumx.T), np.ascontiguousarray(sumw.T)  # (33, B)
    low_x, mid_x, high_x = sx[i1] - sx[0], sx[i2] - sx[i1], sx[BLOCK] - sx[i2]
    low_w, mid_w, high_w = sw[i1] - sw[0], sw[i2] - sw[i1], sw[BLOCK] - sw[i2]
    sumqx = np.empty((2 * len(i1), nblocks), dtype=F32)
    sumq2 = np.empty((2 * len(i1), nblocks), dtype=F32)
    for shift, v in enumerate((_iq1.X_P, _iq1.X_M)):
        sumqx[shift::2] = low_x * v[0] + mid_x * v[1] + high_x * v[2]
        sumq2[shift::2] = low_w * v[0] * v[0] + mid_w * v[1] * v[1] + high_w * v[2] * v[2]
    best, scale = _iq1.scan_best(sumqx, sumq2)

    _iq1.check_scales(scale, (amax >= GROUP_MAX_EPS_IQ1_S) & (best >= 0))
    zero = (amax < GROUP_MAX_EPS_IQ1_S) | (best < 0)
    split = np.maximum(best, 0) // 2
    negative = (best % 2 == 1)
    levels = _iq1.levels_of_split(order, i1[split], i2[split])
    flip = scale < 0
    levels = np.where(flip[:, None], 2 - levels, levels)
    scale = np.where(flip, -scale, scale)
    negative ^= flip

    values = np.where(negative[:, None], _iq1.X_M, _iq1.X_P)  # (B, 3)
    groups = levels.reshape(nblocks, 4, GROUP)
    u = _iq1.lattice_index(groups)
    index = _iq1.GRID_INDEX[u]
    off = (index < 0) & ~zero[:, None]
    if off.any():
        blk, grp = np.nonzero(off)
        index[blk, grp] = _iq1.best_neighbour(u[blk, grp], xb.reshape(nblocks, 4, GROUP)[blk, grp],
                                              wb.reshape(nblocks, 4, GROUP)[blk, grp], scale[blk], negative[blk])
        refit = off.any(axis=1)
        chosen = _iq1.GRID_LEVELS[index[refit]].reshape(-1, BLOCK)
        q = values[refit][np.arange(chosen.shape[0])[:, None], chosen]
        w, x = wb[refit], xb[refit]
        sumqx_f = sequential_sum(w * q * x)
        sumq2_f = sequential_sum(w * q * q)
        ok = (sumqx_f > 0) & (sumq2_f > 0)
        scale[refit] = np.where(ok, sumqx_f / sumq2_f, scale[refit])

    index = np.where(zero[:, None], 0, index)
    scale = np.where(zero, F32(0), scale).astype(F32)
    negative &= ~zero
    return index, scale, negative
