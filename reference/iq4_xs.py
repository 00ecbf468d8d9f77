"""IQ4_XS (ggml type 23): 256-element super-blocks of 8 blocks of 32, 4-bit
indices into the non-linear levels ``kvalues_iq4nl``, a 6-bit scale per
block and an fp16 super-block scale. 4.25 bits per weight.

Block (136 bytes)::

    offset 0   d            fp16    super-block scale
    offset 2   scales_h     uint16  bits 2b, 2b+1 = bits 4-5 of ls_b
    offset 4   scales_l[4]  uint8   low nibble of byte k = bits 0-3 of ls_2k,
                                    high nibble = bits 0-3 of ls_2k+1
    offset 8   qs[128]      uint8   block b = bytes 16b .. 16b+15: low nibble
                                    of byte 16b + j = index of element 32b + j,
                                    high nibble = index of element 32b + 16 + j
    element 32b + j = (d * (ls_b - 32)) * kvalues_iq4nl[index]

Quantize (``quantize_iq4_xs`` = ``quantize_row_iq4_nl_impl`` with 256-element
super-blocks and ``ntry = 7``; ``quantize_row_iq4_xs_ref`` is the same)::

    weights    w_j = x_j^2, or with an importance matrix qw:
               w_j = qw_j * sqrt(sigma2 + x_j^2), sigma2 = sum(x^2) * (2/256)
    scale_b    the weighted search of each block of 32 (_iq4.block_scales);
               0 for a block with all |x| < 1e-15
    max_scale  the scale of largest magnitude (the first one; from +0.0,
               strict >, so a NaN scale never wins)
    d          = -max_scale / 32                     stored as fp16(d)
    id         = d != 0 ? 1/d : 0
    l_b        = clamp(nearest_int(id * scale_b), -32, 31);  ls_b = l_b + 32
    dl_b       = d * l_b      (the float32 d, not the stored fp16)
    idl_b      = dl_b != 0 ? 1/dl_b : 0
    index_j    = best_index_int8(idl_b * x_j)

The levels are not symmetric (-127 .. 113), so a block scale may have
either sign; ``l_b`` is about -32 for scales of ``max_scale``'s sign and up
to +32 for the other sign, where the clamp at 31 trims it (as in ggml).

An all-zero super-block stores ``d = -0.0`` (``00 80``: ``-0.0/32``),
``ls = 32`` everywhere (``scales_h = aa aa``, ``scales_l = 00``) and index 8
(level 1) everywhere.

Dot product with Q8_K (``ggml_vec_dot_iq4_xs_q8_K_generic``), per super-block::

    d4d8   = fp16(d) * a.d
    term_b = (d4d8 * (float)(ls_b - 32)) * (float)sumi_b,
             sumi_b = sum over block b of kvalues_iq4nl[index] * a.qs   (exact)
    contribution = ((term_0 + term_1) + ...) + term_7

ggml adds each ``term_b`` straight into its running sum; the spec adds the
eight terms of a super-block in the same order first, then reduces the
super-block contributions in the canonical 16-lane order.

Validation: ``d`` must be finite.

Upstream: ggml ``src/ggml-quants.c`` ``quantize_iq4_xs``,
``quantize_row_iq4_nl_impl``, ``dequantize_row_iq4_xs``;
``src/ggml-cpu/quants.c`` ``ggml_vec_dot_iq4_xs_q8_K_generic`` @ d99724f2.
"""

from __future__ import annotations

import numpy as np

from . import q8_k
from ._format import BlockFormat, Field, Invalid, nonfinite_f16
from ._iq4 import IEEE, KVALUES_IQ4NL_F32, best_index_int8, block_scales, imatrix_weights
from ._legacy import pack_nibbles, unpack_nibbles
from ._numerics import F32, canonical_dot, f16_bits_to_f32, f32_to_f16_bits, nearest_int, sequential_sum
from .tables.ggml import KVALUES_IQ4NL

QK_K = 256
NBLOCK, BLOCK = 8, 32

#: Super-blocks quantized per batch (independent: the batch never changes a bit).
BATCH_SUPERBLOCKS = 1024

FORMAT = BlockFormat(
    name="iq4_xs", origin="ggml", type_id=23, block_size=QK_K,
    fields=(Field("d", "f16", 1, "super-block scale"),
            Field("scales_h", "u16", 1, "bits 2b, 2b+1: the high 2 bits of the 6-bit scale ls_b of block b"),
            Field("scales_l", "u8", 4, "low nibble of byte k: low 4 bits of ls_2k; high nibble: of ls_2k+1"),
            Field("qs", "u8", QK_K // 2, "4-bit indices into kvalues_iq4nl: element 32b+j in the low nibble of "
                                         "byte 16b+j, element 32b+16+j in the high nibble; "
                                         "value d*(ls_b-32)*kvalues_iq4nl[index]")),
    vec_dot_format="q8_k",
    upstream="ggml src/ggml-quants.c quantize_iq4_xs, quantize_row_iq4_nl_impl, dequantize_row_iq4_xs; "
             "src/ggml-cpu/quants.c ggml_vec_dot_iq4_xs_q8_K_generic @ d99724f2",
    imatrix="accepted",
)


def quantize(x: np.ndarray, imatrix: np.ndarray | None = None) -> np.ndarray:
    nrows, n = x.shape
    per_row = n // QK_K
    xs = x.reshape(-1, QK_K)
    qw = None if imatrix is None else np.asarray(imatrix, dtype=F32).reshape(per_row, QK_K)
    blocks = np.empty(xs.shape[0], dtype=FORMAT.dtype)
    with np.errstate(**IEEE):
        for start in range(0, xs.shape[0], BATCH_SUPERBLOCKS):
            stop = min(start + BATCH_SUPERBLOCKS, xs.shape[0])
            w = None if qw is None else qw[np.arange(start, stop) % per_row]
            blocks[start:stop] = _superblocks(xs[start:stop], w)
    return FORMAT.to_bytes(blocks.reshape(nrows, per_row))


def _superblocks(xs: np.ndarray, qw: np.ndarray | None) -> np.ndarray:
    """Super-blocks ``xs (S, 256)`` with imatrix columns ``qw`` -> blocks ``(S,)``."""
    nsuper = xs.shape[0]
    scales = block_scales(xs.reshape(-1, BLOCK), imatrix_weights(xs, qw).reshape(-1, BLOCK)).reshape(nsuper, NBLOCK)
    amax_scale = np.zeros(nsuper, dtype=F32)
    max_scale = np.zeros(nsuper, dtype=F32)
    for b in range(NBLOCK):  # if (abs_d > amax_scale) { amax_scale = abs_d; max_scale = d; }
        take = np.abs(scales[:, b]) > amax_scale
        np.copyto(amax_scale, np.abs(scales[:, b]), where=take)
        np.copyto(max_scale, scales[:, b], where=take)
    d = -max_scale / F32(32)
    inverse = np.where(d != 0, F32(1) / d, F32(0))
    l = np.clip(nearest_int(inverse[:, None] * scales), -32, 31)
    dl = d[:, None] * l.astype(F32)
    inverse_dl = np.where(dl != 0, F32(1) / dl, F32(0))
    indices = best_index_int8(inverse_dl[..., None] * xs.reshape(nsuper, NBLOCK, BLOCK))
    ls = (l + 32).astype(np.uint16)
    blocks = np.empty(nsuper, dtype=FORMAT.dtype)
    blocks["d"] = f32_to_f16_bits(d)
    blocks["scales_h"] = np.bitwise_or.reduce((ls >> 4) << (2 * np.arange(NBLOCK, dtype=np.uint16)), axis=-1)
    blocks["scales_l"] = ((ls[:, 0::2] & 15) | ((ls[:, 1::2] & 15) << 4)).astype(np.uint8)
    blocks["qs"] = pack_nibbles(indices).reshape(nsuper, QK_K // 2)
    return blocks


def block_scale_codes(blocks: np.ndarray) -> np.ndarray:
    """The 6-bit scales ``ls_b`` (0..63, int32) of structured blocks, ``(..., 8)``."""
    b = np.arange(NBLOCK)
    low = (blocks["scales_l"][..., b // 2].astype(np.int32) >> (4 * (b % 2))) & 15
    high = (blocks["scales_h"][..., None].astype(np.int32) >> (2 * b)) & 3
    return low | high << 4


def _level_tables() -> tuple[np.ndarray, np.ndarray]:
    """Per byte value: the level of its low nibble and of its high nibble (float32)."""
    byte = np.arange(256)
    return KVALUES_IQ4NL_F32[byte & 15], KVALUES_IQ4NL_F32[byte >> 4]


_LOW_LEVEL, _HIGH_LEVEL = _level_tables()


def dequantize(q: np.ndarray) -> np.ndarray:
    b = FORMAT.blocks(q)
    nrows, nsuper = b.shape
    out = np.empty((nrows, nsuper, NBLOCK, BLOCK), dtype=F32)
    qs = b["qs"].reshape(nrows, nsuper, NBLOCK, BLOCK // 2)
    np.take(_LOW_LEVEL, qs, out=out[..., :BLOCK // 2])
    np.take(_HIGH_LEVEL, qs, out=out[..., BLOCK // 2:])
    with np.errstate(**IEEE):
        dl = f16_bits_to_f32(b["d"])[..., None] * (block_scale_codes(b) - 32).astype(F32)
        out *= dl[..., None]  # dl * level (commutative: the same bits)
    return out.reshape(nrows, -1)


def vec_dot(wq: np.ndarray, aq: np.ndarray) -> np.ndarray:
    w, a = FORMAT.blocks(wq), q8_k.FORMAT.blocks(aq[None, :])
    nrows, nsuper = w.shape
    levels = KVALUES_IQ4NL.astype(np.int32)[unpack_nibbles(w["qs"].reshape(nrows, nsuper, NBLOCK, BLOCK // 2))]
    sumi = np.einsum("rsbj,rsbj->rsb", levels, a["qs"].astype(np.int32).reshape(1, nsuper, NBLOCK, BLOCK))
    with np.errstate(**IEEE):
        d4d8 = f16_bits_to_f32(w["d"]) * a["d"]
        terms = (d4d8[..., None] * (block_scale_codes(w) - 32).astype(F32)) * sumi.astype(F32)
        return canonical_dot(sequential_sum(terms))


def validate(q: np.ndarray) -> list[Invalid]:
    return nonfinite_f16(FORMAT.blocks(q), "d")
