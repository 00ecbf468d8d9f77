"""IQ1_KT (ik_llama.cpp type 158): trellis quantization at 1.75 bits per
weight: every group of 8 weights is one 13-bit seed of the integer trellis
generator (``_kt``), every 32 weights have a 4-bit non-linear scale, one
float32 scale per row.

Row (``row_meta_size`` = 4)::

    offset 0   d        float32   row scale
    then n/256 blocks of 56 bytes:
    offset 0    sh[8]    uint8    sub-block b: bits 0-3 = scale code into
                                  iq4k_values (the first 16), bit 4+g = bit 12 of
                                  the seed of group g (g = 0..3)
    offset 8    ql[32]   uint8    bits 0-7 of the seed of group g of sub-block b: ql[4b + g]
    offset 40   qh[16]   uint8    bits 8-11: nibble b//4 of qh[4*(b%4) + g]

    y[32b + 8g + k] = (d * iq4k_values[sh[b] & 15]) * value_k(seed, offset 4096)

Quantize (``quantize_row_iq1_kt_impl``): as IQ2_KT (``iq2_kt``; same
weights, search and row scale), with 13-bit seeds (clusters: 256 sign
patterns, each seed in its 32 nearest), a second try per sub-block at
``scale_0 - 8`` (taken if either of its two candidates scores above the
first try's winner; then the better of the two), the codes stored one per
byte, and the final row scale multiplied by 1.07.

Dot product with Q8_0: as IQ2_KT (``_kt.kt_dot``).

Upstream: ik_llama.cpp ``ggml/src/iqk/iqk_quantize.cpp``
``quantize_row_iq1_kt_impl``, ``QuantizerIQKT``, ``dequantize_row_iq1_kt``;
``ggml/src/ggml-common.h`` ``block_iq1_kt`` @ 8337e4cd.
"""

from __future__ import annotations

import numpy as np

from ._format import BlockFormat, Field, Invalid
from ._iqk import IEEE, IQ4K, QK_K, c_sum, f32_meta, join_rows, meta_f32, nonfinite_row_scales, split_rows
from ._kt import codebook, kt_dot, kt_values, kt_weights, row_scale_search, search
from ._numerics import F32
from .tables.ik_llama import IQ4K_VALUES

BLOCK = 32
GROUP = 8
NSUB = QK_K // BLOCK
NG = BLOCK // GROUP
FUDGE = F32(1.07)
#: The codebook, flat: value k of seed s is ``CODEBOOK[8*s + k]`` (what the bit map's formula reads).
CODEBOOK = codebook(13, GROUP).reshape(-1)


FORMAT = BlockFormat(
    name="iq1_kt", origin="ik_llama", type_id=158, block_size=QK_K,
    fields=(Field("sh", "u8", NSUB, "sub-block b: bits 0-3 = scale code into iq4k_values, bit 4+g = bit 12 of "
                                    "group g's seed"),
            Field("ql", "u8", 32, "bits 0-7 of the seeds: ql[4b + g]"),
            Field("qh", "u8", 16, "bits 8-11 of the seeds: nibble b//4 of qh[4(b%4) + g]")),
    vec_dot_format="q8_0",
    upstream="ik_llama.cpp ggml/src/iqk/iqk_quantize.cpp quantize_row_iq1_kt_impl, QuantizerIQKT, "
             "dequantize_row_iq1_kt; ggml/src/ggml-common.h block_iq1_kt @ 8337e4cd",
    row_meta_size=4,
    imatrix="accepted",
)

_B = np.arange(NSUB)[:, None]
_G = np.arange(NG)[None, :]
QH_AT = 4 * (_B % 4) + _G          # (8, 4): qh byte of group g of sub-block b
QH_SHIFT = 4 * (_B // 4)


def _try(S, xb, w, xg, wg, dplus):
    idx_p = S.best_match(dplus, xg, wg)
    dp, score_p = S.best_scale(xb, w, idx_p)
    idx_m = S.best_match(-dplus, xg, wg)
    dm, score_m = S.best_scale(xb, w, idx_m)
    return (idx_p, dp, score_p), (idx_m, dm, score_m)


def quantize(x: np.ndarray, imatrix: np.ndarray | None = None) -> np.ndarray:
    nrows, n = x.shape
    nsb = n // QK_K
    S = search(13, GROUP, False, 256, 32)
    w = kt_weights(x, imatrix).reshape(nrows, nsb * NSUB, BLOCK)
    xb = x.reshape(nrows, nsb * NSUB, BLOCK)
    xg, wg = xb.reshape(nrows, -1, NG, GROUP), w.reshape(nrows, -1, NG, GROUP)
    with np.errstate(**IEEE):
        amax_row = np.abs(x).max(axis=1)
        amax = np.abs(xb).max(axis=-1)
        empty = amax < F32(1e-16)
        scale0 = np.maximum(F32(90), (F32(124) * amax) / amax_row[:, None])
        (ip, dp, sp), (im, dm, sm) = _try(S, xb, w, xg, wg, amax / scale0)
        plus = sp > sm
        scale = np.where(plus, dp, dm)
        idx = np.where(plus[..., None], ip, im)
        score = np.where(plus, sp, sm)
        (ip1, dp1, sp1), (im1, dm1, sm1) = _try(S, xb, w, xg, wg, amax / (scale0 - F32(8)))
        second = (sp1 > score) | (sm1 > score)
        plus1 = sp1 > sm1
        scale = np.where(second, np.where(plus1, dp1, dm1), scale)
        idx = np.where(second[..., None], np.where(plus1[..., None], ip1, im1), idx)
    scales = np.where(empty, F32(0), scale).astype(F32)
    idx = np.where(empty[..., None], 0, idx)
    q = S.values[idx].reshape(xb.shape)
    d, max_scale = row_scale_search(xb, w, q, scales, IQ4K_VALUES)
    keep = max_scale != 0
    with np.errstate(**IEEE):
        inv = np.where(d != 0, F32(1) / d, F32(0)).astype(F32)
        codes = IQ4K.nearest(inv[:, None] * scales)
        ls = IQ4K_VALUES.astype(np.int64)[codes]
        dl = d[:, None] * ls.astype(F32)
        new = S.best_match(dl, xg, wg)
        e1 = xb - dl[..., None] * q
        e2 = xb - dl[..., None] * S.values[new].reshape(xb.shape)
        keep_old = c_sum(w * e1 * e1) < c_sum(w * e2 * e2)
        idx = np.where(keep_old[..., None], idx, new)
        qq = S.values[idx].reshape(xb.shape) * ls[..., None].astype(F32)
        sumqx = c_sum((w * xb * qq).reshape(nrows, -1))
        sumq2 = c_sum((w * qq * qq).reshape(nrows, -1))
        d_final = np.where((d != 0) & (sumq2 > 0), (sumqx / sumq2) * FUDGE, d).astype(F32)
    done = (keep & (d != 0))[:, None, None]
    seeds = np.where(done, idx, 0).reshape(nrows, nsb, NSUB, NG).astype(np.int64)
    blocks = FORMAT.empty_blocks(nrows, nsb)
    codes = np.where(keep[:, None], codes, 0).reshape(nrows, nsb, NSUB)
    blocks["sh"] = codes | ((seeds >> 12) << (4 + _G)).sum(axis=-1)
    blocks["ql"] = (seeds & 255).reshape(nrows, nsb, -1)
    qh = np.zeros((nrows, nsb, 16), dtype=np.int64)
    for b in range(NSUB):
        for g in range(NG):
            qh[..., QH_AT[b, g]] |= ((seeds[..., b, g] >> 8) & 15) << QH_SHIFT[b, 0]
    blocks["qh"] = qh
    return join_rows(FORMAT, f32_meta(np.where(keep, d_final, F32(0))), blocks)


def _decoded(blocks: np.ndarray):
    sh = blocks["sh"].astype(np.int64)
    seeds = (blocks["ql"].astype(np.int64).reshape(blocks.shape + (NSUB, NG))
             | (((blocks["qh"].astype(np.int64)[..., QH_AT] >> QH_SHIFT) & 15) << 8)
             | (((sh[..., None] >> (4 + _G)) & 1) << 12))
    return IQ4K_VALUES.astype(np.int64)[sh & 15], kt_values(seeds, GROUP).reshape(blocks.shape + (NSUB, BLOCK))


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
