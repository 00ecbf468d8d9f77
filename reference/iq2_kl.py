"""IQ2_KL (ik_llama.cpp type 157): 256-element blocks of 8 sub-blocks of 32;
pairs of elements are one of 32 points of a 2-D grid (5 bits per pair), a
6-bit signed scale per sub-block, one fp16 scale per row (2.6875 bits per
weight).

Row (``row_meta_size`` = 2)::

    offset 0   d        fp16     row scale
    then n/256 blocks of 86 bytes:
    offset 0    scales_h     uint16  bits 4-5 of sub-block b's scale code at bits 2b..2b+1
    offset 2    scales_l[4]  uint8   bits 0-3 of the scale codes: sub-block b in
                                     nibble b//4 of scales_l[b%4]
    offset 6    qs[64]       uint8   bits 0-3 of the pair indices: pair j (elements
                                     2j, 2j+1) of sub-block b = 2p + h in nibble h
                                     of qs[16p + j], j = 0..15
    offset 70   qh[16]       uint8   bit 4 of the pair indices: bit b of qh[j]

    pair (y[32b + 2j], y[32b + 2j + 1]) = (d * (code_b - 32)) * IQ2KL_VALUES[idx]
                                          (the two int8 of the uint16, low byte first)

Every coordinate of the 32 points lies on the base half of ``iq3nl``
(``-63, -40, -23, -10, 1, 13, 28, 47``): the grid is the 32 pairs of the
8x8 product ik_llama.cpp kept (ik#602). There is no shift bit.

Quantize (``quantize_row_iq2_kl_impl``, ntry = 5). The pair index for an
inverse scale ``id`` (``index``): round ``id*x1`` and ``id*x2`` to the
nearest ``iq3nl`` values (``best_index_iq3nl``); if that pair is one of the
32 points, take it, else the best of the 8 listed neighbours of the pair by
``w1*(v1 - id*x1)^2 + w2*(v2 - id*x2)^2`` (first on ties; the tables
``K_INDEX``, ``K_NEIGHBOURS`` are ik_llama.cpp's).

1. Weights ``|x|`` (no imatrix) or ``qw*sqrt(sigma2 + x^2)`` with
   ``sigma2 = 2.25*sum(x^2)/256`` per super-block and ``qw`` the imatrix
   after ``QHelper::row_weights`` (blocks of 32).
2. Per sub-block the sweep of the other formats on the single grid: the
   first candidate ``-max/grid[0]`` unconditionally, then ``(itry +
   grid[0])/max``, itry = -5..5, for ``+x`` and ``-x``; the sums add each
   pair's two terms first (``w1*q1*x1 + w2*q2*x2``).
3. ``d = -max_scale/32`` over the row (a row of zero scales stores ``d = 0``
   and nothing else); per sub-block ``ls = clamp(nearest_int(scale/d), -32,
   31)``, then of ``ls-1, ls, ls+1`` (within -32..31) the code with the
   smallest weighted error ``sum w*(d*code*v - x)^2`` (the first on ties).
4. Sub-blocks with a nonzero code are re-quantized at ``1/(d*code)``; a code
   0 sub-block keeps index 0. ``d = sum w*q*x / sum w*q*q`` over the row if
   the denominator is positive; stored as ``fp16(1.025*d)``.

Dot product with Q8_K: ``isum = sum_b scale_b * sum_j q8_j * v_j``, term
``(d * q8.d) * isum``, canonical reduction.

Upstream: ik_llama.cpp ``ggml/src/iqk/iqk_quantize.cpp``
``quantize_row_iq2_kl_impl``, ``dequantize_row_iq2_kl``; ``ggml/src/ggml-common.h``
``block_iq2_kl``, ``iq2kl_values`` @ 8337e4cd.
"""

from __future__ import annotations

import numpy as np

from . import q8_k
from ._format import BlockFormat, Field, Invalid
from ._iqk import IEEE, IQ3NL, QK_K, c_sum, dot_terms, f16_meta, join_rows, meta_f16, nonfinite_row_scales, \
    signed_max, split_rows, superblock_sigma2, helper_weights
from ._numerics import F32, f32_to_f16_bits, nearest_int
from .tables.ik_llama import IQ2KL_VALUES, IQ3NL_VALUES

BLOCK = 32
NSUB = QK_K // BLOCK
NTRY = 5
FUDGE = F32(1.025)
_FLT_MAX = F32(np.finfo(np.float32).max)

#: ``k_index``: for the nearest iq3nl pair (8*l1 + l2), its grid point, or -(1 + its neighbour list).
K_INDEX = np.array([
    -1, -2, 0, -3, -4, 1, -5, -6, 2, -7, -8, 3, -9, 4, -10, 5, -11, 6, 7, -12, 8, 9, 10, -13, 11, -14, -15, -16,
    12, 13, -17, 14, -18, -19, 15, 16, 17, 18, 19, -20, -21, 20, 21, 22, 23, 24, -22, -23, 25, -24, 26, -25, 27,
    -26, 28, 29, -27, -28, 30, -29, -30, 31, -31, -32], dtype=np.int64)

#: ``k_neighbours``: the 8 grid points tried for each pair that is not one.
K_NEIGHBOURS = np.array([
    [2, 0, 6, 11, 7, 3, 8, 15], [0, 2, 3, 6, 7, 1, 8, 4], [0, 1, 3, 4, 8, 7, 9, 6], [1, 0, 3, 4, 8, 9, 7, 10],
    [1, 4, 5, 10, 9, 3, 8, 0], [5, 1, 4, 10, 9, 14, 8, 3], [6, 2, 7, 0, 3, 11, 8, 15], [3, 7, 0, 6, 8, 4, 12, 9],
    [3, 4, 8, 9, 1, 7, 12, 10], [4, 10, 5, 9, 1, 8, 13, 14], [11, 2, 6, 7, 20, 15, 25, 21],
    [8, 7, 3, 12, 9, 16, 17, 13], [14, 5, 10, 19, 9, 13, 4, 18], [6, 15, 7, 11, 20, 21, 16, 2],
    [15, 7, 16, 6, 21, 12, 17, 22], [12, 16, 17, 8, 15, 7, 13, 22], [19, 10, 13, 18, 14, 9, 12, 24],
    [11, 20, 25, 6, 15, 2, 21, 7], [20, 15, 21, 6, 11, 7, 16, 26], [14, 19, 29, 10, 28, 18, 13, 24],
    [25, 11, 20, 21, 15, 6, 26, 30], [19, 24, 28, 18, 29, 23, 13, 17], [29, 19, 14, 28, 24, 18, 10, 13],
    [20, 26, 21, 25, 30, 15, 22, 16], [27, 26, 22, 23, 21, 30, 16, 24], [27, 24, 28, 31, 23, 18, 22, 17],
    [25, 30, 20, 26, 21, 11, 15, 22], [30, 26, 25, 20, 21, 27, 22, 15], [30, 27, 31, 26, 22, 23, 21, 24],
    [31, 27, 30, 26, 28, 23, 22, 24], [31, 28, 29, 27, 24, 23, 19, 18], [29, 28, 31, 24, 19, 27, 14, 18]],
    dtype=np.int64)

#: The grid as (first, second) int8 coordinates.
GRID_FIRST = (IQ2KL_VALUES & 0xFF).astype(np.uint8).view(np.int8)
GRID_SECOND = (IQ2KL_VALUES >> 8).astype(np.uint8).view(np.int8)
#: The same, flat: point p is ``(GRID_VALUES[2p], GRID_VALUES[2p + 1])``.
GRID_VALUES = np.stack([GRID_FIRST, GRID_SECOND], axis=-1).reshape(-1)

FORMAT = BlockFormat(
    name="iq2_kl", origin="ik_llama", type_id=157, block_size=QK_K,
    fields=(Field("scales_h", "u16", 1, "bits 4-5 of sub-block b's scale code at bits 2b..2b+1"),
            Field("scales_l", "u8", 4, "bits 0-3 of the scale codes: sub-block b in nibble b//4 of scales_l[b%4]"),
            Field("qs", "u8", QK_K // 4, "bits 0-3 of the pair indices: sub-block 2p+h, pair j in nibble h of "
                                         "qs[16p+j]"),
            Field("qh", "u8", QK_K // 16, "bit 4 of the pair indices: bit b of qh[j]")),
    vec_dot_format="q8_k",
    upstream="ik_llama.cpp ggml/src/iqk/iqk_quantize.cpp quantize_row_iq2_kl_impl, dequantize_row_iq2_kl; "
             "ggml/src/ggml-common.h block_iq2_kl, iq2kl_values @ 8337e4cd",
    row_meta_size=2,
    imatrix="accepted",
)

_B = np.arange(NSUB)


def pair_index(inv: np.ndarray, x1: np.ndarray, x2: np.ndarray, w1: np.ndarray, w2: np.ndarray) -> np.ndarray:
    """``index(id, x1, x2, w1, w2)`` for every pair (``inv`` broadcast)."""
    with np.errstate(**IEEE):
        sx1, sx2 = inv * x1, inv * x2
        i = K_INDEX[8 * IQ3NL.nearest(sx1) + IQ3NL.nearest(sx2)]
        neigh = K_NEIGHBOURS[np.where(i < 0, -i - 1, 0)]                     # (..., 8)
        diff1 = GRID_FIRST[neigh].astype(F32) - sx1[..., None]
        diff2 = GRID_SECOND[neigh].astype(F32) - sx2[..., None]
        score = w1[..., None] * diff1 * diff1 + w2[..., None] * diff2 * diff2
        score = np.where(score < _FLT_MAX, score, np.inf)                  # never taken by `score < best`
        best = np.take_along_axis(neigh, np.argmin(score, axis=-1)[..., None], axis=-1)[..., 0]
    return np.where(i >= 0, i, best)


def _pair_sums(idx, x1, x2, w1, w2, scale=None):
    """``sumqx += w1*q1*x1 + w2*q2*x2``, ``sumq2 += w1*q1*q1 + w2*q2*q2`` over the pairs."""
    q1, q2 = GRID_FIRST[idx].astype(np.int64), GRID_SECOND[idx].astype(np.int64)
    if scale is not None:
        q1, q2 = q1 * scale[..., None], q2 * scale[..., None]
    q1, q2 = q1.astype(F32), q2.astype(F32)
    t_qx = w1 * q1 * x1 + w2 * q2 * x2
    t_q2 = w1 * q1 * q1 + w2 * q2 * q2
    return t_qx, t_q2


def _sweep(x1, x2, w1, w2, vmax):
    g0 = F32(IQ3NL_VALUES[0])
    with np.errstate(**IEEE):
        d = -vmax / g0
        inv = F32(1) / d

        def sums(i):
            tqx, tq2 = _pair_sums(pair_index(i[..., None], x1, x2, w1, w2), x1, x2, w1, w2)
            return c_sum(tqx), c_sum(tq2)

        sqx, sq2 = sums(inv)
        d = (sqx / sq2).astype(F32)
        best = (d * sqx).astype(F32)
        candidates = [sums(-inv)]
        for itry in range(-NTRY, NTRY + 1):
            inv = (F32(itry) + g0) / vmax
            candidates += [sums(inv), sums(-inv)]
        for sqx, sq2 in candidates:
            better = (sq2 > 0) & (sqx * sqx > best * sq2)
            d = np.where(better, sqx / sq2, d).astype(F32)
            best = np.where(better, d * sqx, best).astype(F32)
    return d


def quantize(x: np.ndarray, imatrix: np.ndarray | None = None) -> np.ndarray:
    nrows, n = x.shape
    nsb = n // QK_K
    xb = x.reshape(nrows, nsb, NSUB, BLOCK)
    qw = helper_weights(x, imatrix, BLOCK)
    with np.errstate(**IEEE):
        if qw is None:
            w = np.abs(xb)
        else:
            sigma2 = superblock_sigma2(x.reshape(nrows, nsb, QK_K), 2.25)
            w = qw.reshape(xb.shape) * np.sqrt(sigma2[..., None, None] + xb * xb)
    x1, x2, w1, w2 = xb[..., 0::2], xb[..., 1::2], w[..., 0::2], w[..., 1::2]
    amax, vmax = signed_max(xb)
    empty = amax < F32(1e-16)
    scales = np.where(empty, F32(0), _sweep(x1, x2, w1, w2, np.where(empty, F32(1), vmax))).astype(F32)
    with np.errstate(**IEEE):
        _, max_scale = signed_max(scales.reshape(nrows, -1))
        keep = max_scale != 0
        d = np.where(keep, -max_scale / F32(32), F32(0)).astype(F32)
        inv = np.where(keep, F32(1) / d, F32(0)).astype(F32)
        ls = np.clip(nearest_int(inv[:, None, None] * scales), -32, 31)
        best_score = np.full(ls.shape, _FLT_MAX, dtype=F32)
        best_ls = ls.copy()
        for delta in (-1, 0, 1):
            cand = ls + delta
            valid = (cand >= -32) & (cand <= 31)
            dl = d[:, None, None] * cand.astype(F32)
            idl = np.where(dl != 0, F32(1) / dl, F32(0)).astype(F32)
            idx = pair_index(idl[..., None], x1, x2, w1, w2)
            diff1 = dl[..., None] * GRID_FIRST[idx].astype(F32) - x1
            diff2 = dl[..., None] * GRID_SECOND[idx].astype(F32) - x2
            score = c_sum(w1 * diff1 * diff1 + w2 * diff2 * diff2)
            take = valid & (score < best_score)
            best_score = np.where(take, score, best_score).astype(F32)
            best_ls = np.where(take, cand, best_ls)
        ls = best_ls
        used = ls != 0
        dl = d[:, None, None] * ls.astype(F32)
        idl = np.where(used, F32(1) / dl, F32(0)).astype(F32)
        idx = np.where(used[..., None], pair_index(idl[..., None], x1, x2, w1, w2), 0)
        tqx, tq2 = _pair_sums(idx, x1, x2, w1, w2, ls)
        sumqx = c_sum(np.where(used[..., None], tqx, F32(0)).reshape(nrows, -1))
        sumq2 = c_sum(np.where(used[..., None], tq2, F32(0)).reshape(nrows, -1))
        d_final = np.where(sumq2 > 0, sumqx / sumq2, d).astype(F32)
        d_stored = np.where(keep, f32_to_f16_bits(FUDGE * d_final), 0)
    k3 = keep[:, None, None]
    uls = np.where(k3, ls + 32, 0).astype(np.uint32)
    blocks = FORMAT.empty_blocks(nrows, nsb)
    blocks["scales_h"] = ((uls >> 4) << (2 * _B).astype(np.uint32)).sum(axis=-1)
    low = uls & 15
    blocks["scales_l"] = low[..., :4] | (low[..., 4:] << 4)
    idx = np.where(k3[..., None], idx, 0).astype(np.uint32)                   # (..., 8, 16)
    nib = idx & 15
    blocks["qs"] = (nib[..., 0::2, :] | (nib[..., 1::2, :] << 4)).reshape(nrows, nsb, -1)
    blocks["qh"] = ((idx >> 4) << _B.astype(np.uint32)[:, None]).sum(axis=-2)
    return join_rows(FORMAT, f16_meta(d_stored), blocks)


def _decoded(blocks: np.ndarray):
    sl = blocks["scales_l"].astype(np.int64)
    low = np.concatenate([sl & 15, sl >> 4], axis=-1)
    high = (blocks["scales_h"].astype(np.int64)[..., None] >> (2 * _B)) & 3
    qs = blocks["qs"].astype(np.int64).reshape(blocks.shape + (4, 1, 16))
    nib = ((qs >> np.array([0, 4])[:, None]) & 15).reshape(blocks.shape + (NSUB, 16))
    hbit = (blocks["qh"].astype(np.int64)[..., None, :] >> _B[:, None]) & 1
    idx = nib | (hbit << 4)
    pairs = np.stack([GRID_FIRST[idx], GRID_SECOND[idx]], axis=-1).reshape(blocks.shape + (NSUB, BLOCK))
    return (low | (high << 4)) - 32, pairs.astype(np.int64)


def dequantize(q: np.ndarray) -> np.ndarray:
    meta, blocks = split_rows(FORMAT, q)
    scale, values = _decoded(blocks)
    with np.errstate(**IEEE):
        dl = meta_f16(meta)[:, None, None] * scale.astype(F32)
        return (dl[..., None] * values.astype(F32)).reshape(q.shape[0], -1)


def vec_dot(wq: np.ndarray, aq: np.ndarray) -> np.ndarray:
    meta, blocks = split_rows(FORMAT, wq)
    a = q8_k.FORMAT.blocks(aq[None, :])[0]
    scale, values = _decoded(blocks)
    qa = a["qs"].astype(np.int64).reshape(-1, NSUB, BLOCK)
    isum = (scale * (values * qa[None]).sum(axis=-1)).sum(axis=-1)
    return dot_terms(meta_f16(meta), a["d"], isum)


def validate(q: np.ndarray) -> list[Invalid]:
    meta, _ = split_rows(FORMAT, q)
    return nonfinite_row_scales(meta, "f16")
