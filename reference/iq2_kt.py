"""IQ2_KT (ik_llama.cpp type 153): trellis quantization at 2.125 bits per
weight: every group of 8 weights is one 16-bit seed of the integer trellis
generator (``_kt``), every 32 weights have a 4-bit non-linear scale, one
float32 scale per row.

Row (``row_meta_size`` = 4)::

    offset 0   d        float32   row scale
    then n/256 blocks of 68 bytes:
    offset 0    scales[4]  uint8    sub-block b (0..7): nibble b//4 of scales[b%4]
                                    indexes iq4k_values (the first 16: -127 .. 113)
    offset 4    ql[32]     uint16   seeds: group g (0..3) of sub-block b is ql[4b + g]

    y[32b + 8g + k] = (d * iq4k_values[scale nibble of b]) * value_k(seed, offset 4096)

where ``value_k`` is output k of the generator (an integer in -126..126,
as float32). The 16 bits of a seed give 65536 possible 8-vectors.

Quantize (``quantize_row_iq2_kt_impl``; ik_llama.cpp's search runs only in
its AVX2 code, whose lane order and fused multiply-adds the spec follows,
``_kt.Search``):

1. Weights (``set_weights``, sigma2 factor 2): per super-block ``sigma2 =
   2*sum(x^2)/256``; a super-block with ``sum(x^2) < 256e-14`` weighs 1e-4;
   otherwise ``0.25*sigma2 + x^2``, or with an imatrix ``qw*sqrtf(sigma2 +
   x^2)`` (raw imatrix; a 32-block whose ``sum x^2``, ``sum w^2`` or
   ``sum w|x|`` is below 1e-14 weighs 1e-4).
2. Per sub-block (largest magnitude ``amax`` of at least 1e-16, else scale
   0 and seeds 0): ``scale_0 = max(90, 124*amax/amax_row)``; seeds for the
   block scales ``+amax/scale_0`` and ``-amax/scale_0`` (``best_match``),
   each refitted (``best_scale``); the better score wins.
3. ``max_scale`` = the signed sub-block scale of largest magnitude; 0 ->
   ``d = 0``, zero blocks. Else ``d = max_scale/-127``, and for itry =
   -9..9, ``id = (itry - 127)/max_scale``, the 4-bit codes
   ``best_index_iq4nl(id*scale)`` are scored over the row (``sumqx += w*x*q``,
   ``sumq2 += w*q*q``, ``q = iq4k_values[code]*value``); a strictly better
   ``sumqx^2/sumq2`` sets ``d = sumqx/sumq2``. The codes are taken at ``1/d``.
4. Per sub-block at ``dl = d*iq4k_values[code]``: new seeds; the old ones
   stay if their weighted error ``sum w*(x - dl*v)^2`` is strictly smaller.
   ``d = sum w*x*q / sum w*q*q`` over the row (``q = value*scale``), if positive.

Dot product with Q8_0 (ik_llama.cpp dots the KT formats with Q8_0_X4 /
Q8_2_X4, Q8_0's quants in groups of four blocks): per 32-element sub-block
``t_b = (d * scale_b * q8.d_b) * sumi_b``, ``sumi_b = sum value_j *
q8.qs_j`` (exact), evaluated ``((d*scale_b) * fp16(q8.d_b)) * (float)sumi_b``;
the super-block's term is ``t_0 + t_1 + ... + t_7`` left to right, then the
canonical reduction.

Upstream: ik_llama.cpp ``ggml/src/iqk/iqk_quantize.cpp``
``quantize_row_iq2_kt_impl``, ``QuantizerIQKT``, ``dequantize_row_iq2_kt``;
``ggml/src/ggml-common.h`` ``block_iq2_kt`` @ 8337e4cd.
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

FORMAT = BlockFormat(
    name="iq2_kt", origin="ik_llama", type_id=153, block_size=QK_K,
    fields=(Field("scales", "u8", 4, "4-bit scale codes into iq4k_values: sub-block b in nibble b//4 of scales[b%4]"),
            Field("ql", "u16", 32, "16-bit trellis seeds: group g of sub-block b at ql[4b+g]")),
    vec_dot_format="q8_0",
    upstream="ik_llama.cpp ggml/src/iqk/iqk_quantize.cpp quantize_row_iq2_kt_impl, QuantizerIQKT, "
             "dequantize_row_iq2_kt; ggml/src/ggml-common.h block_iq2_kt @ 8337e4cd",
    row_meta_size=4,
    imatrix="accepted",
)


#: The codebook, flat: value k of seed s is ``CODEBOOK[8*s + k]`` (the generator's
#: outputs for every 16-bit seed; what the bit map's formula reads).
CODEBOOK = codebook(16, GROUP).reshape(-1)


def quantize(x: np.ndarray, imatrix: np.ndarray | None = None) -> np.ndarray:
    nrows, n = x.shape
    nsb = n // QK_K
    S = search(16, GROUP, False, 256, 8)
    w = kt_weights(x, imatrix).reshape(nrows, nsb * NSUB, BLOCK)
    xb = x.reshape(nrows, nsb * NSUB, BLOCK)
    xg, wg = xb.reshape(nrows, -1, BLOCK // GROUP, GROUP), w.reshape(nrows, -1, BLOCK // GROUP, GROUP)
    with np.errstate(**IEEE):
        amax_row = np.abs(x).max(axis=1)
        amax = np.abs(xb).max(axis=-1)
        empty = amax < F32(1e-16)
        scale0 = np.maximum(F32(90), (F32(124) * amax) / amax_row[:, None])
        dp_, dm_ = amax / scale0, -amax / scale0
    idx_p = S.best_match(dp_, xg, wg)
    dp, score_p = S.best_scale(xb, w, idx_p)
    idx_m = S.best_match(dm_, xg, wg)
    dm, score_m = S.best_scale(xb, w, idx_m)
    plus = score_p > score_m
    scales = np.where(empty, F32(0), np.where(plus, dp, dm)).astype(F32)
    idx = np.where(empty[..., None], 0, np.where(plus[..., None], idx_p, idx_m))
    q = S.values[idx].reshape(xb.shape)
    d, max_scale = row_scale_search(xb, w, q, scales, IQ4K_VALUES)
    keep = max_scale != 0
    with np.errstate(**IEEE):
        inv = np.where(d != 0, F32(1) / d, F32(0)).astype(F32)
        codes = IQ4K.nearest(inv[:, None] * scales)
        ls = IQ4K_VALUES.astype(np.int64)[codes]
        dl = d[:, None] * ls.astype(F32)
        new = S.best_match(dl, xg, wg)
        qn = S.values[new].reshape(xb.shape)
        e1 = xb - dl[..., None] * q
        e2 = xb - dl[..., None] * qn
        keep_old = c_sum(w * e1 * e1) < c_sum(w * e2 * e2)
        idx = np.where(keep_old[..., None], idx, new)
        qq = S.values[idx].reshape(xb.shape) * ls[..., None].astype(F32)
        sumqx = c_sum((w * xb * qq).reshape(nrows, -1))
        sumq2 = c_sum((w * qq * qq).reshape(nrows, -1))
        d_final = np.where((d != 0) & (sumq2 > 0), sumqx / sumq2, d).astype(F32)
    done = keep & (d != 0)
    blocks = FORMAT.empty_blocks(nrows, nsb)
    c = np.where(keep[:, None], codes, 0).reshape(nrows, nsb, NSUB).astype(np.uint8)
    blocks["scales"] = c[..., :4] | (c[..., 4:] << 4)
    blocks["ql"] = np.where(done[:, None, None], idx, 0).reshape(nrows, nsb, -1)
    return join_rows(FORMAT, f32_meta(np.where(keep, d_final, F32(0))), blocks)


def _decoded(blocks: np.ndarray):
    s = blocks["scales"].astype(np.int64)
    codes = np.concatenate([s & 15, s >> 4], axis=-1)                      # (..., 8)
    seeds = blocks["ql"].astype(np.int64)
    return IQ4K_VALUES.astype(np.int64)[codes], kt_values(seeds, GROUP).reshape(blocks.shape + (NSUB, BLOCK))


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
