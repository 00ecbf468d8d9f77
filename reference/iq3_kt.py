"""IQ3_KT (ik_llama.cpp type 154): trellis quantization at 3.125 bits per
weight: every group of 8 weights is one 16-bit seed of the integer trellis
generator taken in absolute value (``_kt``, ``|out|``), plus one sign bit
per weight; every 32 weights have a 4-bit unsigned scale; one float32 scale
per row.

Row (``row_meta_size`` = 4)::

    offset 0   d        float32   row scale
    then n/256 blocks of 100 bytes:
    offset 0    scales[4]  uint8    sub-block b (0..7): scale code = nibble b//4 of scales[b%4]
    offset 4    ql[32]     uint16   seeds: group g of sub-block b is ql[4b + g]
    offset 68   qh[32]     uint8    signs: bit b of qh[j] = sign of element 32b + j

    y[32b + 8g + k] = +-((d * code_b) * |value_k(seed)|)      (- where the sign bit is set)

(ik#113 describes IQ3_KT as 12-bit seeds for groups of 4; the shipped
format is 16-bit seeds for groups of 8 plus signs, as above.)

Quantize (``quantize_row_iq3_kt_impl``; the search of ``_kt.Search`` on
the absolute-value codebook, clusters by the median of each coordinate,
each seed in its 8 nearest of 256):

1. A row of zeros stores ``d = 0`` and zero blocks. Weights as IQ2_KT
   (``_kt.kt_weights``). The search quantizes ``|x|``.
2. Per sub-block (``amax >= 1e-16``, else scale 0): ``scale_0 = max(84,
   123*amax/amax_row)``; for itry = -3..3 the seeds at ``amax/(scale_0 +
   8*itry)`` and their refitted scale; the first strictly best score wins.
3. ``d = max_scale/15``; for itry = -9..9, ``id = (0.2*itry + 15)/max_scale``,
   codes ``clamp(nearest_int(id*scale), 0, 15)`` scored over the row
   (``sumqx += w*|x|*q``, ``sumq2 += w*q*q``, ``q = code*value``); a
   strictly better ``sumqx^2/sumq2`` sets ``d = sumqx/sumq2``. The codes are
   taken at ``1/d``.
4. Per sub-block: the signs of x (``x < 0``), new seeds for ``|x|`` at
   ``d*code``; ``d = sum w*|x|*q / sum w*q*q`` over the row, if positive.

Dot product with Q8_0: as IQ2_KT (``_kt.kt_dot``) with the signed values.

Upstream: ik_llama.cpp ``ggml/src/iqk/iqk_quantize.cpp``
``quantize_row_iq3_kt_impl``, ``QuantizerIQKT``, ``dequantize_row_iq3_kt``;
``ggml/src/ggml-common.h`` ``block_iq3_kt`` @ 8337e4cd.
"""

from __future__ import annotations

import numpy as np

from ._format import BlockFormat, Field, Invalid
from ._iqk import IEEE, QK_K, c_sum, f32_meta, join_rows, meta_f32, nonfinite_row_scales, signed_max, split_rows
from ._kt import codebook, kt_dot, kt_values, kt_weights, search
from ._numerics import F32, nearest_int

BLOCK = 32
GROUP = 8
NSUB = QK_K // BLOCK
NG = BLOCK // GROUP
#: The absolute-value codebook, flat: value k of seed s is ``ABS_CODEBOOK[8*s + k]``.
ABS_CODEBOOK = codebook(16, GROUP, absolute=True).reshape(-1)


FORMAT = BlockFormat(
    name="iq3_kt", origin="ik_llama", type_id=154, block_size=QK_K,
    fields=(Field("scales", "u8", 4, "4-bit scale codes: sub-block b in nibble b//4 of scales[b%4]"),
            Field("ql", "u16", 32, "16-bit trellis seeds (absolute values): group g of sub-block b at ql[4b+g]"),
            Field("qh", "u8", 32, "signs: bit b of qh[j] is the sign of element 32b+j")),
    vec_dot_format="q8_0",
    upstream="ik_llama.cpp ggml/src/iqk/iqk_quantize.cpp quantize_row_iq3_kt_impl, QuantizerIQKT, "
             "dequantize_row_iq3_kt; ggml/src/ggml-common.h block_iq3_kt @ 8337e4cd",
    row_meta_size=4,
    imatrix="accepted",
)


def quantize(x: np.ndarray, imatrix: np.ndarray | None = None) -> np.ndarray:
    nrows, n = x.shape
    nsb = n // QK_K
    S = search(16, GROUP, True, 256, 8)
    w = kt_weights(x, imatrix).reshape(nrows, nsb * NSUB, BLOCK)
    xb = x.reshape(nrows, nsb * NSUB, BLOCK)
    ax = np.abs(xb)
    axg, wg = ax.reshape(nrows, -1, NG, GROUP), w.reshape(nrows, -1, NG, GROUP)
    with np.errstate(**IEEE):
        amax_row = np.abs(x).max(axis=1)
        nonzero_row = amax_row != 0
        amax = ax.max(axis=-1)
        empty = amax < F32(1e-16)
        scale0 = np.maximum(F32(84), (F32(123) * amax) / amax_row[:, None])
        best = np.zeros(amax.shape, dtype=F32)
        scale = np.zeros(amax.shape, dtype=F32)
        idx = np.zeros(axg.shape[:-1], dtype=np.int64)
        for itry in range(-3, 4):
            cand = S.best_match(amax / (scale0 + F32(8) * F32(itry)), axg, wg)
            dc, sc = S.best_scale(ax, w, cand)
            better = sc > best
            best = np.where(better, sc, best)
            scale = np.where(better, dc, scale)
            idx = np.where(better[..., None], cand, idx)
    scales = np.where(empty, F32(0), scale).astype(F32)
    q = S.values[idx].reshape(xb.shape)
    _, max_scale = signed_max(scales)
    with np.errstate(**IEEE):
        d = max_scale / F32(15)
        best = np.zeros(nrows, dtype=F32)
        for itry in range(-9, 10):
            inv = (F32(itry) * F32(0.2) + F32(15)) / max_scale
            dl = np.clip(nearest_int(inv[:, None] * scales), 0, 15).astype(F32)
            qq = np.where(empty[..., None], F32(0), dl[..., None] * q)
            sumqx = c_sum((w * ax * qq).reshape(nrows, -1))
            sumq2 = c_sum((w * qq * qq).reshape(nrows, -1))
            better = (sumq2 > 0) & (sumqx * sumqx > best * sumq2)
            d = np.where(better, sumqx / sumq2, d).astype(F32)
            best = np.where(better, d * sumqx, best).astype(F32)
        inv = np.where(d != 0, F32(1) / d, F32(0)).astype(F32)
        codes = np.clip(nearest_int(inv[:, None] * scales), 0, 15)
        dl = d[:, None] * codes.astype(F32)
        idx = S.best_match(dl, axg, wg)
        qq = S.values[idx].reshape(xb.shape) * codes[..., None].astype(F32)
        sumqx = c_sum((w * ax * qq).reshape(nrows, -1))
        sumq2 = c_sum((w * qq * qq).reshape(nrows, -1))
        d_final = np.where(sumq2 > 0, sumqx / sumq2, d).astype(F32)
    k2 = nonzero_row[:, None]
    blocks = FORMAT.empty_blocks(nrows, nsb)
    c = np.where(k2, codes, 0).reshape(nrows, nsb, NSUB).astype(np.uint8)
    blocks["scales"] = c[..., :4] | (c[..., 4:] << 4)
    blocks["ql"] = np.where(k2[..., None], idx, 0).reshape(nrows, nsb, -1)
    neg = (xb < 0) & k2[..., None]
    blocks["qh"] = (neg.reshape(nrows, nsb, NSUB, BLOCK).astype(np.uint32)
                    << np.arange(NSUB, dtype=np.uint32)[:, None]).sum(axis=-2)
    return join_rows(FORMAT, f32_meta(np.where(nonzero_row, d_final, F32(0))), blocks)


def _decoded(blocks: np.ndarray):
    s = blocks["scales"].astype(np.int64)
    codes = np.concatenate([s & 15, s >> 4], axis=-1)
    values = kt_values(blocks["ql"].astype(np.int64), GROUP, absolute=True).reshape(blocks.shape + (NSUB, BLOCK))
    negative = ((blocks["qh"].astype(np.int64)[..., None, :] >> np.arange(NSUB)[:, None]) & 1).astype(bool)
    return codes, values, negative


def dequantize(q: np.ndarray) -> np.ndarray:
    meta, blocks = split_rows(FORMAT, q)
    codes, values, negative = _decoded(blocks)
    with np.errstate(**IEEE):
        sl = meta_f32(meta)[:, None, None] * codes.astype(F32)
        y = sl[..., None] * values
        return np.where(negative, -y, y).reshape(q.shape[0], -1)


def vec_dot(wq: np.ndarray, aq: np.ndarray) -> np.ndarray:
    meta, blocks = split_rows(FORMAT, wq)
    codes, values, negative = _decoded(blocks)
    return kt_dot(meta_f32(meta), codes, np.where(negative, -values, values), aq)


def validate(q: np.ndarray) -> list[Invalid]:
    meta, _ = split_rows(FORMAT, q)
    return nonfinite_row_scales(meta, "f32")
