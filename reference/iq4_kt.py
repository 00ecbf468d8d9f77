"""IQ4_KT (ik_llama.cpp type 155): trellis quantization at 4.0 bits per
weight: every group of 4 weights is one 15-bit seed of the integer trellis
generator (``_kt``) on one of two codebooks (offset 4096 or 4096 + 32768,
one bit per 32 weights), every 32 weights have a 7-bit signed scale, one
float32 scale per row.

Row (``row_meta_size`` = 4)::

    offset 0   d        float32   row scale
    then n/256 blocks of 128 bytes (C: uint32_t qs[32]):
    offset 0    shb[8]   uint32   sub-block b: bit 0 = codebook (offset 4096 + 32768
                                  if set), bits 1-7 = scale code (scale = code - 64),
                                  bits 8+3g .. 10+3g = bits 12-14 of group g's seed
    offset 32   ql[64]   uint8    bits 0-7 of the seed of group j = 8b + g: ql[j]
    offset 96   qh[32]   uint8    bits 8-11: nibble j//32 of qh[j % 32]

    y[32b + 4g + k] = (d * (code_b - 64)) * value_k(seed, offset_b)     (4 values per seed)

Quantize (``quantize_row_iq4_kt_impl``; the search of ``_kt.Search`` with
groups of 4: clusters by the bins -48/-16/16/48 of each coordinate (625),
each seed in its 6 nearest, one search per codebook):

1. A row of zeros stores ``d = 0`` and zero blocks. Weights as IQ2_KT.
2. Per sub-block (``amax >= 1e-16``, else scale 0): ``scale_0 = max(90,
   124*amax/amax_row)``; on the first codebook, for itry = -2..2, the seeds
   at ``+amax/(8*itry + scale_0)`` and ``-amax/(8*itry + scale_0)`` and
   their refitted scales (best strictly positive score wins); then on the
   second codebook the seeds at that scale (taken with the codebook bit if
   its score beats the best, which is not updated) and the same 10 tries
   (each taken, with the bit, if strictly better than the best so far).
3. ``d = -max_scale/64`` (the signed scale of largest magnitude); 0 stops
   here (``d = 0`` stored, codebook bits kept).
4. Per sub-block: ``code = min(nearest_int(scale/d), 63) + 64``, new seeds
   at ``d*(code - 64)`` on the sub-block's codebook; ``d = sum w*x*q /
   sum w*q*q`` over the row (``q = value*(code - 64)``), if positive. An
   all-zero sub-block stores code 64 (scale 0) and seeds 0.

Dot product with Q8_0: as IQ2_KT (``_kt.kt_dot``).

Upstream: ik_llama.cpp ``ggml/src/iqk/iqk_quantize.cpp``
``quantize_row_iq4_kt_impl``, ``QuantizerIQKT``, ``dequantize_row_iq4_kt``;
``ggml/src/ggml-common.h`` ``block_iq4_kt`` @ 8337e4cd.
"""

from __future__ import annotations

import numpy as np

from ._format import BlockFormat, Field, Invalid
from ._iqk import IEEE, QK_K, c_sum, f32_meta, join_rows, meta_f32, nonfinite_row_scales, signed_max, split_rows
from ._kt import codebook, OFFSET, kt_dot, kt_values, kt_weights, search
from ._numerics import F32, nearest_int

BLOCK = 32
GROUP = 4
NSUB = QK_K // BLOCK
NG = BLOCK // GROUP
SECOND_OFFSET = OFFSET + 32768
#: Both codebooks, flat: value k of seed s in codebook c is ``CODEBOOKS[4*(32768*c + s) + k]``.
CODEBOOKS = np.concatenate([codebook(15, GROUP, OFFSET), codebook(15, GROUP, SECOND_OFFSET)]).reshape(-1)


FORMAT = BlockFormat(
    name="iq4_kt", origin="ik_llama", type_id=155, block_size=QK_K,
    fields=(Field("shb", "u32", NSUB, "sub-block b: bit 0 = codebook, bits 1-7 = scale code (scale = code - 64), "
                                      "bits 8+3g.. = bits 12-14 of group g's seed"),
            Field("ql", "u8", 64, "bits 0-7 of the seed of group j = 8b + g"),
            Field("qh", "u8", 32, "bits 8-11 of the seeds: nibble j//32 of qh[j % 32]")),
    vec_dot_format="q8_0",
    upstream="ik_llama.cpp ggml/src/iqk/iqk_quantize.cpp quantize_row_iq4_kt_impl, QuantizerIQKT, "
             "dequantize_row_iq4_kt; ggml/src/ggml-common.h block_iq4_kt @ 8337e4cd",
    row_meta_size=4,
    imatrix="accepted",
)

_J = np.arange(NSUB * NG)          # group j = 8b + g of the super-block


def _searches():
    return search(15, GROUP, False, 625, 6, OFFSET), search(15, GROUP, False, 625, 6, SECOND_OFFSET)


def quantize(x: np.ndarray, imatrix: np.ndarray | None = None) -> np.ndarray:
    nrows, n = x.shape
    nsb = n // QK_K
    S1, S2 = _searches()
    w = kt_weights(x, imatrix).reshape(nrows, nsb * NSUB, BLOCK)
    xb = x.reshape(nrows, nsb * NSUB, BLOCK)
    xg, wg = xb.reshape(nrows, -1, NG, GROUP), w.reshape(nrows, -1, NG, GROUP)
    with np.errstate(**IEEE):
        amax_row = np.abs(x).max(axis=1)
        nonzero_row = amax_row != 0
        amax = np.abs(xb).max(axis=-1)
        empty = amax < F32(1e-16)
        scale0 = np.maximum(F32(90), (F32(124) * amax) / amax_row[:, None])
        best = np.zeros(amax.shape, dtype=F32)
        scale = np.zeros(amax.shape, dtype=F32)
        second = np.zeros(amax.shape, dtype=bool)

        def tries(S, flag):
            nonlocal best, scale, second
            for itry in range(-2, 3):
                step = F32(8) * F32(itry) + scale0
                for dd in (amax / step, -amax / step):
                    dc, sc = S.best_scale(xb, w, S.best_match(dd, xg, wg))
                    better = sc > best
                    best = np.where(better, sc, best)
                    scale = np.where(better, dc, scale)
                    if flag:
                        second = second | better

        tries(S1, False)
        dc, sc = S2.best_scale(xb, w, S2.best_match(scale, xg, wg))
        take = sc > best
        scale = np.where(take, dc, scale)
        second = second | take
        tries(S2, True)
    scales = np.where(empty, F32(0), scale).astype(F32)
    second &= ~empty
    _, max_scale = signed_max(scales)
    with np.errstate(**IEEE):
        d = -max_scale / F32(64)
        go = nonzero_row & (d != 0)
        inv = np.where(go, F32(1) / d, F32(0)).astype(F32)
        ls = np.minimum(nearest_int(inv[:, None] * scales), 63)
        dl = d[:, None] * ls.astype(F32)
        idx = np.where(second[..., None], S2.best_match(dl, xg, wg), S1.best_match(dl, xg, wg))
        values = np.where(second[..., None, None], S2.values[idx], S1.values[idx]).reshape(xb.shape)
        qq = values * ls[..., None].astype(F32)
        sumqx = c_sum((w * xb * qq).reshape(nrows, -1))
        sumq2 = c_sum((w * qq * qq).reshape(nrows, -1))
        d_final = np.where(go & (sumq2 > 0), sumqx / sumq2, d).astype(F32)
    g2 = go[:, None]
    seeds = np.where(g2[..., None], idx, 0).reshape(nrows, nsb, NSUB * NG).astype(np.int64)
    code = np.where(g2, ((ls + 64) << 1), 0).reshape(nrows, nsb, NSUB)
    flag = np.where(nonzero_row[:, None], second, False).reshape(nrows, nsb, NSUB).astype(np.int64)
    high = ((seeds.reshape(nrows, nsb, NSUB, NG) >> 12) << (8 + 3 * np.arange(NG))).sum(axis=-1)
    blocks = FORMAT.empty_blocks(nrows, nsb)
    blocks["shb"] = (code | flag | high).astype(np.uint32)
    blocks["ql"] = seeds & 255
    nib = ((seeds >> 8) & 15).reshape(nrows, nsb, 2, 32)
    blocks["qh"] = nib[..., 0, :] | (nib[..., 1, :] << 4)
    return join_rows(FORMAT, f32_meta(np.where(nonzero_row, d_final, F32(0))), blocks)


def _decoded(blocks: np.ndarray):
    shb = blocks["shb"].astype(np.int64)
    scale = ((shb & 255) >> 1) - 64
    qh = blocks["qh"].astype(np.int64)[..., _J % 32]
    high = (shb[..., _J // NG] >> (8 + 3 * (_J % NG))) & 7
    seeds = blocks["ql"].astype(np.int64) | (((qh << (8 - 4 * (_J // 32))) & 0xF00)) | (high << 12)
    seeds = seeds.reshape(blocks.shape + (NSUB, NG))
    first = kt_values(seeds, GROUP, OFFSET)
    other = kt_values(seeds, GROUP, SECOND_OFFSET)
    values = np.where((shb & 1).astype(bool)[..., None, None], other, first).reshape(blocks.shape + (NSUB, BLOCK))
    return scale, values


def dequantize(q: np.ndarray) -> np.ndarray:
    meta, blocks = split_rows(FORMAT, q)
    scale, values = _decoded(blocks)
    with np.errstate(**IEEE):
        sl = meta_f32(meta)[:, None, None] * scale.astype(F32)
        return (sl[..., None] * values).reshape(q.shape[0], -1)


def vec_dot(wq: np.ndarray, aq: np.ndarray) -> np.ndarray:
    meta, blocks = split_rows(FORMAT, wq)
    scale, values = _decoded(blocks)
    return kt_dot(meta_f32(meta), scale, values, aq)


def validate(q: np.ndarray) -> list[Invalid]:
    meta, _ = split_rows(FORMAT, q)
    return nonfinite_row_scales(meta, "f32")
