"""IQ2_S (ggml type 22): 256-element super-blocks of 16 blocks of 16, each
block 2 groups of 8 elements; a group is a 10-bit index into the 1024-point
codebook ``IQ2S_GRID`` and 8 explicit sign bits; a 4-bit scale per block of
16 and an fp16 super-block scale. 2.5625 bits per weight.

Block (82 bytes)::

    offset 0    d           fp16    super-block scale
    offset 2    qs[64]      uint8   bytes 0..31: low 8 bits of the codebook
                                    index of group g (elements 8g .. 8g+7);
                                    bytes 32..63: the sign byte of group g
                                    (bit j set: element 8g+j is negative)
    offset 66   qh[8]       uint8   bits 2(g%4), 2(g%4)+1 of byte g//4 = bits
                                    8, 9 of the index of group g
    offset 74   scales[8]   uint8   low nibble of byte k = ls of block 2k,
                                    high nibble = ls of block 2k+1
    index_g      = qs[g] | ((qh[g//4] >> 2(g%4)) & 3) << 8
    db_b         = d * (0.5f + ls_b) * 0.25f           (float32, in this order)
    element 8g + j = db_(g//2) * IQ2S_GRID[index_g] byte j * (qs[32+g] bit j ? -1 : 1)

Quantize (``quantize_row_iq2_s_impl``; an importance matrix is optional;
without one this is also ``quantize_row_iq2_s_ref``), per super-block::

    sigma2     = 2 * sum(x^2) / 256
    weight_i   = qw_i * sqrt(sigma2 + x_i^2)   with an importance matrix qw,
               = 0.25 * sigma2 + x_i^2          without
    waux_i     = sqrt(weight_i)
    signs      the sign bits of the negative elements, all 8 stored
               (xval = |x|; -0.0 counts as positive)
    scale_b    per block of 16: 0 if max(xval) < 1e-8; else the search of
               IQ2_XS (start max/5, is = -9..9, groups off the codebook
               replaced by their best neighbour -- here the neighbours are
               only the nearest shell of codebook points -- and a second
               rounding of those groups at 1/scale)
    d          = max_scale / 31          stored as fp16(d * 0.9875f)
    ls_b       = clamp(nearest_int(0.5 * ((1/d) * scale_b - 1)), 0, 15)
                 (from the unfudged float32 d)

A super-block whose blocks are all below 1e-8 stores 82 zero bytes (ggml's
``if (!max_scale) continue`` keeps what the blocks stored, and a block
below the threshold stores nothing). A zero block of 16 in a live
super-block stores index 0, signs 0 and ls 0, which decodes to the stored
d (d * 0.5 * 0.25 * 8) per element, not 0 (codebook point 0 is eight 8s),
as in ggml. Where ggml aborts (see IQ2_XXS) the spec takes the first neighbour.

Dot product with Q8_K (``ggml_vec_dot_iq2_s_q8_K_generic``), per super-block::

    bsum = sum_b (2*ls_b + 1) * sumi_b               (blocks of 16, exact)
    contribution = ((fp16(d) * a.d) * (float)bsum) * 0.125f

reduced in the canonical 16-lane order (ggml applies the 0.125 once, at the end).

Validation: ``d`` must be finite.

Upstream: ggml ``src/ggml-quants.c`` ``quantize_row_iq2_s_impl``,
``dequantize_row_iq2_s``; ``src/ggml-common.h`` ``iq2s_grid``;
``src/ggml-cpu/quants.c`` ``ggml_vec_dot_iq2_s_q8_K_generic``, as vendored by
llama-cpp-python 0.3.36 (llama.cpp @ 0c1e5709; the same code as ggml @
d99724f2).
"""

from __future__ import annotations

import numpy as np

from . import _iq2, q8_k
from ._format import BlockFormat, Field, Invalid, nonfinite_f16
from ._kquants import IEEE, quantize_rows
from ._numerics import F32, canonical_dot, f16_bits_to_f32, f32_to_f16_bits, sequential_sum
from .tables.ggml_iq2 import IQ2S_GRID  # noqa: F401 - named by the bit map formula (quantspec.explain)
from .iq2_xs import pack_scale_codes, scale_codes

QK_K = 256
NBLOCK, BLOCK, NGROUP = 16, 16, 32

FORMAT = BlockFormat(
    name="iq2_s", origin="ggml", type_id=22, block_size=QK_K,
    fields=(Field("d", "f16", 1, "super-block scale"),
            Field("qs", "u8", 64, "bytes 0..31: low 8 bits of the IQ2S_GRID index of group g; bytes 32..63: the "
                                  "8 sign bits of group g (bit j set: element 8g+j negative)"),
            Field("qh", "u8", 8, "bits 2(g%4), 2(g%4)+1 of byte g//4: bits 8, 9 of the index of group g"),
            Field("scales", "u8", 8, "4-bit scale codes ls of the blocks of 16: block 2k in the low nibble of "
                                     "byte k, block 2k+1 in the high nibble; value d*(0.5+ls)*0.25*grid byte*sign")),
    vec_dot_format="q8_k",
    upstream="ggml src/ggml-quants.c quantize_row_iq2_s_impl, dequantize_row_iq2_s; "
             "src/ggml-cpu/quants.c ggml_vec_dot_iq2_s_q8_K_generic (llama.cpp @ 0c1e5709, ggml @ d99724f2)",
    imatrix="accepted",
)


def grid_indices(blocks: np.ndarray) -> np.ndarray:
    """The 10-bit codebook index of each group, ``(..., 32)`` (intp)."""
    g = np.arange(NGROUP)
    high = (blocks["qh"][..., g // 4].astype(np.intp) >> (2 * (g % 4))) & 3
    return blocks["qs"][..., :NGROUP].astype(np.intp) | high << 8


def _table_rows(blocks: np.ndarray) -> np.ndarray:
    return grid_indices(blocks) + 1024 * blocks["qs"][..., NGROUP:].astype(np.intp)


def dequantize(q: np.ndarray) -> np.ndarray:
    b = FORMAT.blocks(q)
    values = _iq2.signed_points_f32("iq2_s", False)[_table_rows(b)]  # (R, S, 32, 8)
    with np.errstate(**IEEE):
        db = _iq2.block_scale(f16_bits_to_f32(b["d"])[..., None], scale_codes(b["scales"]))
        values = values.reshape(b.shape + (NBLOCK, BLOCK))
        values *= db[..., None]
    return values.reshape(q.shape[0], -1)


def vec_dot(wq: np.ndarray, aq: np.ndarray) -> np.ndarray:
    w, a = FORMAT.blocks(wq), q8_k.FORMAT.blocks(aq[None, :])
    nrows, nsuper = w.shape
    values = _iq2.signed_points("iq2_s", False)[_table_rows(w)].reshape(nrows, nsuper, NBLOCK, BLOCK)
    sumi = np.einsum("rsbj,rsbj->rsb", values.astype(np.int32),
                     a["qs"].astype(np.int32).reshape(1, nsuper, NBLOCK, BLOCK))
    bsum = (sumi * (2 * scale_codes(w["scales"]).astype(np.int32) + 1)).sum(axis=-1)
    with np.errstate(**IEEE):
        dd = f16_bits_to_f32(w["d"]) * a["d"]
        return canonical_dot((dd * bsum.astype(F32)) * F32(0.125))


def validate(q: np.ndarray) -> list[Invalid]:
    return nonfinite_f16(FORMAT.blocks(q), "d")


def quantize(x: np.ndarray, imatrix: np.ndarray | None = None) -> np.ndarray:
    return quantize_rows(FORMAT, x, imatrix, _superblocks)


def _superblocks(xs: np.ndarray, qw: np.ndarray | None) -> np.ndarray:
    """Super-blocks ``xs (S, 256)`` with imatrix columns ``qw`` (or None) -> blocks ``(S,)``."""
    nsuper = xs.shape[0]
    sigma2 = F32(2) * sequential_sum(xs * xs) / F32(QK_K)
    weight = _iq2.weights_of(xs, qw, sigma2)
    waux = np.sqrt(weight)
    xval, signs = _iq2.magnitudes_and_signs(xs.reshape(-1, 8), weight.reshape(-1, 8), parity=False)
    scale, index, flip = _iq2.search_xs(_iq2.lattice("iq2_s"), xval.reshape(-1, BLOCK), weight.reshape(-1, BLOCK),
                                        waux.reshape(-1, BLOCK), _iq2.GROUP_MAX_EPS_IQ2_S)
    signs = signs.reshape(-1, 2)
    signs = np.where(flip[:, None], ~signs, signs).astype(np.uint8)
    live = index >= 0                                       # zero blocks of 16 store nothing
    index = np.where(live, index, 0).reshape(nsuper, NGROUP)
    g = np.arange(NGROUP)
    high = (index >> 8) << (2 * (g % 4))
    max_scale, d, codes = _iq2.super_scale_codes(scale.reshape(nsuper, NBLOCK))
    empty = max_scale == 0                                  # if (!max_scale) continue: d and scales stay 0
    blocks = np.zeros(nsuper, dtype=FORMAT.dtype)
    blocks["d"] = np.where(empty, 0, f32_to_f16_bits(d * F32(0.9875)))
    blocks["qs"][:, :NGROUP] = index & 255
    blocks["qs"][:, NGROUP:] = np.where(live, signs, 0).reshape(nsuper, NGROUP)
    blocks["qh"] = np.bitwise_or.reduce(high.reshape(nsuper, 8, 4), axis=-1)
    blocks["scales"] = np.where(empty[:, None], 0, pack_scale_codes(codes))
    return blocks
