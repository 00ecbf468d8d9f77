"""IQ2_XS (ggml type 17): 256-element super-blocks of 16 blocks of 16, each
block 2 groups of 8 elements; a group is a 9-bit index into the 512-point
codebook ``IQ2XS_GRID`` and 7 stored sign bits in one uint16; a 4-bit scale
per block of 16 and an fp16 super-block scale. 2.3125 bits per weight.

Block (74 bytes)::

    offset 0    d           fp16    super-block scale
    offset 2    qs[32]      uint16  group g (elements 8g .. 8g+7):
                                      bits 0..8  = codebook index
                                      bits 9..15 = sign index s_g
    offset 66   scales[8]   uint8   low nibble of byte k = ls of block 2k
                                    (elements 32k .. 32k+15), high nibble =
                                    ls of block 2k+1 (32k+16 .. 32k+31)
    db_b         = d * (0.5f + ls_b) * 0.25f           (float32, in this order)
    element 8g + j = db_(g//2) * IQ2XS_GRID[qs[g] & 511] byte j
                     * (KSIGNS_IQ2XS[qs[g] >> 9] bit j ? -1 : 1)

The eighth sign of a group is implied by parity, as in IQ2_XXS.

Quantize (``quantize_row_iq2_xs_impl``; an importance matrix ``qw`` is
required: ggml's ``GGML_ASSERT(quant_weights)`` aborts without one and the
type has no reference row quantizer; the spec raises
``quantspec.errors.ImatrixError``, and ``FORMAT.imatrix`` is
``"required"``), per super-block::

    sigma2     = sum(x^2) / 256
    weight_i   = qw_i * sqrt(sigma2 + x_i^2),   waux_i = sqrt(weight_i)
    signs      per group of 8 as in IQ2_XXS (even count of negatives; the
               element with the least weight*x^2 is flipped back)
    scale_b    per block of 16: 0 if max(xval) < 1e-15; else start from
               scale = max/5 with all levels 0, then 19 trial inverse scales
               id = (5 + 0.1*is)/max, is = -9..9: levels l = clamp(
               nearest_int(0.5*(id*xval - 1)), 0, 2), groups off the codebook
               replaced by their best neighbour, the trial with the largest
               sumqx^2/sumq2 wins (strictly, from 0); if a group of the
               winner was off the codebook, those groups are rounded again
               at id = 1/scale (neighbour search where needed) and scale =
               sumqx/sumq2; a negative scale is negated and the stored sign
               bits of the block toggle
    d          = max_scale / 31                       stored as fp16(d)
    ls_b       = clamp(nearest_int(0.5 * ((1/d) * scale_b - 1)), 0, 15)

A super-block whose block scales are all 0 stores 74 zero bytes. A zero
block of 16 in a live super-block stores index 0, sign index 0 and ls 0,
which decodes to d per element, not 0 (codebook point 0 is eight 8s), as in
ggml.
Where ggml aborts (see IQ2_XXS) the spec takes the first neighbour.

Dot product with Q8_K (``ggml_vec_dot_iq2_xs_q8_K_generic``), per super-block::

    bsum = sum_b (2*ls_b + 1) * sumi_b               (blocks of 16, exact)
    contribution = ((fp16(d) * a.d) * (float)bsum) * 0.125f

reduced in the canonical 16-lane order (ggml applies the 0.125 once, at the end).

Validation: ``d`` must be finite.

Upstream: ggml ``src/ggml-quants.c`` ``quantize_row_iq2_xs_impl``,
``dequantize_row_iq2_xs``; ``src/ggml-common.h`` ``iq2xs_grid``;
``src/ggml-cpu/quants.c`` ``ggml_vec_dot_iq2_xs_q8_K_generic``, as vendored
by llama-cpp-python 0.3.36 (llama.cpp @ 0c1e5709; the same code as ggml @
d99724f2).
"""

from __future__ import annotations

import numpy as np

from quantspec.errors import ImatrixError

from . import _iq2, q8_k
from ._format import BlockFormat, Field, Invalid, nonfinite_f16
from ._kquants import IEEE, quantize_rows
from ._numerics import F32, canonical_dot, f16_bits_to_f32, f32_to_f16_bits, sequential_sum
from .tables.ggml_iq2 import IQ2XS_GRID, KSIGNS_IQ2XS  # noqa: F401 - named by the bit map formula (quantspec.explain)

QK_K = 256
NBLOCK, BLOCK = 16, 16

FORMAT = BlockFormat(
    name="iq2_xs", origin="ggml", type_id=17, block_size=QK_K,
    fields=(Field("d", "f16", 1, "super-block scale"),
            Field("qs", "u16", 32, "group g of 8 elements: bits 0..8 = IQ2XS_GRID index, bits 9..15 = sign index "
                                   "(KSIGNS_IQ2XS)"),
            Field("scales", "u8", 8, "4-bit scale codes ls of the blocks of 16: block 2k in the low nibble of byte k, "
                                     "block 2k+1 in the high nibble; value d*(0.5+ls)*0.25*grid byte*sign")),
    vec_dot_format="q8_k",
    upstream="ggml src/ggml-quants.c quantize_row_iq2_xs_impl, dequantize_row_iq2_xs; "
             "src/ggml-cpu/quants.c ggml_vec_dot_iq2_xs_q8_K_generic (llama.cpp @ 0c1e5709, ggml @ d99724f2)",
    imatrix="required",
)


def scale_codes(scales: np.ndarray) -> np.ndarray:
    """The 16 4-bit scale codes ``(..., 16)`` of the ``scales`` bytes ``(..., 8)``."""
    return np.stack((scales & 15, scales >> 4), axis=-1).reshape(scales.shape[:-1] + (NBLOCK,))


def dequantize(q: np.ndarray) -> np.ndarray:
    b = FORMAT.blocks(q)
    values = _iq2.signed_points_f32("iq2_xs", True)[b["qs"]]  # the u16 is the table row: (R, S, 32, 8)
    with np.errstate(**IEEE):
        db = _iq2.block_scale(f16_bits_to_f32(b["d"])[..., None], scale_codes(b["scales"]))
        values = values.reshape(b.shape + (NBLOCK, BLOCK))
        values *= db[..., None]
    return values.reshape(q.shape[0], -1)


def vec_dot(wq: np.ndarray, aq: np.ndarray) -> np.ndarray:
    w, a = FORMAT.blocks(wq), q8_k.FORMAT.blocks(aq[None, :])
    nrows, nsuper = w.shape
    values = _iq2.signed_points("iq2_xs", True)[w["qs"]].reshape(nrows, nsuper, NBLOCK, BLOCK)
    sumi = np.einsum("rsbj,rsbj->rsb", values.astype(np.int32),
                     a["qs"].astype(np.int32).reshape(1, nsuper, NBLOCK, BLOCK))
    bsum = (sumi * (2 * scale_codes(w["scales"]).astype(np.int32) + 1)).sum(axis=-1)
    with np.errstate(**IEEE):
        dd = f16_bits_to_f32(w["d"]) * a["d"]
        return canonical_dot((dd * bsum.astype(F32)) * F32(0.125))


def validate(q: np.ndarray) -> list[Invalid]:
    return nonfinite_f16(FORMAT.blocks(q), "d")


def quantize(x: np.ndarray, imatrix: np.ndarray | None = None) -> np.ndarray:
    if imatrix is None:
        raise ImatrixError("iq2_xs: an importance matrix is required (ggml_quantize_chunk asserts one)")
    return quantize_rows(FORMAT, x, imatrix, _superblocks)


def pack_scale_codes(codes: np.ndarray) -> np.ndarray:
    """16 scale codes ``(..., 16)`` -> the ``scales`` bytes ``(..., 8)``."""
    return (codes[..., 0::2] | codes[..., 1::2] << 4).astype(np.uint8)


def _superblocks(xs: np.ndarray, qw: np.ndarray) -> np.ndarray:
    """Super-blocks ``xs (S, 256)`` with imatrix columns ``qw`` -> blocks ``(S,)``."""
    nsuper = xs.shape[0]
    sigma2 = sequential_sum(xs * xs) / F32(QK_K)
    weight = _iq2.weights_of(xs, qw, sigma2)
    waux = np.sqrt(weight)
    xval, signs = _iq2.magnitudes_and_signs(xs.reshape(-1, 8), weight.reshape(-1, 8), parity=True)
    scale, index, flip = _iq2.search_xs(_iq2.lattice("iq2_xs"), xval.reshape(-1, BLOCK), weight.reshape(-1, BLOCK),
                                        waux.reshape(-1, BLOCK), _iq2.GROUP_MAX_EPS)
    signs = signs.reshape(-1, 2).astype(np.uint16)
    signs = np.where(flip[:, None], ~signs & np.uint16(127), signs)
    words = np.where(index >= 0, index.astype(np.uint16) | signs << np.uint16(9), 0).astype(np.uint16)
    max_scale, d, codes = _iq2.super_scale_codes(scale.reshape(nsuper, NBLOCK))
    empty = max_scale == 0                                  # if (!max_scale): 74 zero bytes
    blocks = np.zeros(nsuper, dtype=FORMAT.dtype)
    blocks["d"] = np.where(empty, 0, f32_to_f16_bits(d))
    blocks["qs"] = np.where(empty[:, None], 0, words.reshape(nsuper, 32))
    blocks["scales"] = np.where(empty[:, None], 0, pack_scale_codes(codes))
    return blocks
