"""IQ2_XXS (ggml type 16): 256-element super-blocks of 8 blocks of 32, each
block 4 groups of 8 elements; a group is an index into the 256-point
codebook ``IQ2XXS_GRID`` and 7 stored sign bits; a 4-bit scale per block
and an fp16 super-block scale. 2.0625 bits per weight.

Block (66 bytes)::

    offset 0   d        fp16    super-block scale
    offset 2   qs[32]   uint16  read as 8 pairs of little-endian uint32
                                (aux0, aux1), one pair per block b (bytes
                                2 + 8b .. 2 + 8b + 7):
                                  byte l of aux0  = codebook index of group l
                                  bits 7l..7l+6 of aux1 = sign index s_l of group l
                                  bits 28..31 of aux1   = scale code ls_b
    db_b         = d * (0.5f + ls_b) * 0.25f           (float32, in this order)
    signs_l      = KSIGNS_IQ2XS[s_l]  (= s_l | parity(s_l) << 7)
    element 32b + 8l + j = db_b * IQ2XXS_GRID[index_l] byte j * (signs_l bit j ? -1 : 1)

The codebook bytes are 8, 25, 43; the eighth sign is implied: a group always
has an even number of negative elements (the sign parity trick, 7 bits for
8 signs).

Quantize (``quantize_row_iq2_xxs_impl``; an importance matrix ``qw`` is
required: ggml's ``GGML_ASSERT(quant_weights)`` aborts without one and the
type has no reference row quantizer; the spec raises
``quantspec.errors.ImatrixError``, and ``FORMAT.imatrix`` is
``"required"``), per super-block (``reference/_iq2.py`` has the
search)::

    sigma2     = sum(x^2) / 256                       (sequential float sum)
    weight_i   = qw_i * sqrt(sigma2 + x_i^2),   waux_i = sqrt(weight_i)
    signs      per group of 8: xval = |x| with the sign bits of the negative
               elements; if their count is odd, the element with the least
               weight*x^2 (first of equals) keeps its sign flipped the other
               way: xval = -|x| there, and its sign bit toggles
    scale_b    0 for a block with max(xval) < 1e-15; else
               make_qp_quants(32, 4, xval, weight) is the start, then
               13 trial inverse scales id = (5 + 0.1*is)/(3*scale), is =
               -6..6: levels l = clamp(nearest_int(0.5*(id*xval - 1)), 0, 2)
               per element, groups off the codebook replaced by their best
               neighbour, and the trial with the largest sumqx^2/sumq2 (q =
               2l+1, weights weight) wins; if scale > 0, one more rounding
               at id = 1/scale with neighbour search for every group, and
               scale = sumqx/sumq2; a negative scale is negated and the 7
               stored sign bits of every group of the block toggle
    d          = max_scale / 31                       stored as fp16(d)
    ls_b       = clamp(nearest_int(0.5 * ((1/d) * scale_b - 1)), 0, 15)

A super-block whose block scales are all 0 stores 66 zero bytes. A zero
block (max < 1e-15) in a live super-block stores index 0, sign index 0 and
ls = 0, which decodes to d * 0.5 * 0.25 * 8 = d per element, not 0
(codebook point 0 is eight 8s), as in ggml.

Where ggml's quantizer aborts the process (GGML_ASSERT in
``iq2_find_best_neighbour`` when every candidate's weighted distance
overflows to inf or is NaN, or ``GGML_ASSERT(scale >= 0)`` for a NaN block
scale: |x| from about 1e15 to 1e16 upwards, depending on the imatrix), the
spec takes the first neighbour of the list and carries on with the same
arithmetic, so that every finite input has bytes (ggml has none to compare
with; where ggml does not abort, the bytes agree up to 3e38).

Dot product with Q8_K (``ggml_vec_dot_iq2_xxs_q8_K_generic``), per super-block::

    bsum = sum_b (2*ls_b + 1) * sumi_b,  sumi_b = sum over block b of
           grid byte * sign * a.qs                      (exact integers)
    contribution = ((fp16(d) * a.d) * (float)bsum) * 0.125f

ggml multiplies its running sum by 0.125 once at the end; the spec scales
each super-block's contribution (exact unless subnormal) and reduces them in
the canonical 16-lane order, so a one-super-block row gives ggml's generic
bits.

Validation: ``d`` must be finite.

Upstream: ggml ``src/ggml-quants.c`` ``quantize_row_iq2_xxs_impl``,
``iq2xs_init_impl``, ``iq2_find_best_neighbour``, ``dequantize_row_iq2_xxs``;
``src/ggml-common.h`` ``iq2xxs_grid``, ``ksigns_iq2xs``;
``src/ggml-cpu/quants.c`` ``ggml_vec_dot_iq2_xxs_q8_K_generic``, as vendored
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
from .tables.ggml_iq2 import IQ2XXS_GRID, KSIGNS_IQ2XS  # noqa: F401 - named by the bit map formula (quantspec.explain)

QK_K = 256
NBLOCK, BLOCK, GROUPS = 8, 32, 4

FORMAT = BlockFormat(
    name="iq2_xxs", origin="ggml", type_id=16, block_size=QK_K,
    fields=(Field("d", "f16", 1, "super-block scale"),
            Field("qs", "u16", 32, "per block b of 32, two little-endian uint32 at bytes 8b..8b+7: byte l of the "
                                   "first = IQ2XXS_GRID index of group l; bits 7l..7l+6 of the second = sign index "
                                   "of group l (KSIGNS_IQ2XS), bits 28..31 = scale code ls_b; "
                                   "value d*(0.5+ls_b)*0.25*grid byte*sign")),
    vec_dot_format="q8_k",
    upstream="ggml src/ggml-quants.c quantize_row_iq2_xxs_impl, dequantize_row_iq2_xxs; "
             "src/ggml-cpu/quants.c ggml_vec_dot_iq2_xxs_q8_K_generic (llama.cpp @ 0c1e5709, ggml @ d99724f2)",
    imatrix="required",
)


def _fields(q: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """``(d bits (R, S), grid indices (R, S, 8, 4), sign indices (R, S, 8, 4),
    scale codes (R, S, 8))`` of byte rows."""
    nrows = q.shape[0]
    raw = np.ascontiguousarray(q, dtype=np.uint8).reshape(nrows, -1, FORMAT.type_size)
    d = raw[..., :2].copy().view("<u2")[..., 0]
    pairs = raw[..., 2:].reshape(nrows, -1, NBLOCK, 8)
    index = pairs[..., :4]
    aux = pairs[..., 4:].copy().view("<u4")[..., 0]
    signs = (aux[..., None] >> (7 * np.arange(GROUPS, dtype=np.uint32))) & np.uint32(127)
    return d, index, signs, (aux >> np.uint32(28))


def _rows(d, index, signs):
    return index.astype(np.intp) + 256 * signs.astype(np.intp)


def dequantize(q: np.ndarray) -> np.ndarray:
    d, index, signs, ls = _fields(q)
    values = _iq2.signed_points_f32("iq2_xxs", True)[_rows(d, index, signs)]  # (R, S, 8, 4, 8)
    with np.errstate(**IEEE):
        db = _iq2.block_scale(f16_bits_to_f32(d)[..., None], ls)
        values *= db[..., None, None]
    return values.reshape(q.shape[0], -1)


def vec_dot(wq: np.ndarray, aq: np.ndarray) -> np.ndarray:
    d, index, signs, ls = _fields(wq)
    a = q8_k.FORMAT.blocks(aq[None, :])
    nrows, nsuper = d.shape
    values = _iq2.signed_points("iq2_xxs", True)[_rows(d, index, signs)].reshape(nrows, nsuper, NBLOCK, BLOCK)
    sumi = np.einsum("rsbj,rsbj->rsb", values.astype(np.int32),
                     a["qs"].astype(np.int32).reshape(1, nsuper, NBLOCK, BLOCK))
    bsum = (sumi * (2 * ls.astype(np.int32) + 1)).sum(axis=-1)
    with np.errstate(**IEEE):
        dd = f16_bits_to_f32(d) * a["d"]
        return canonical_dot((dd * bsum.astype(F32)) * F32(0.125))


def validate(q: np.ndarray) -> list[Invalid]:
    return nonfinite_f16(FORMAT.blocks(q), "d")


def quantize(x: np.ndarray, imatrix: np.ndarray | None = None) -> np.ndarray:
    if imatrix is None:
        raise ImatrixError("iq2_xxs: an importance matrix is required (ggml_quantize_chunk asserts one)")
    return quantize_rows(FORMAT, x, imatrix, _superblocks)


def _superblocks(xs: np.ndarray, qw: np.ndarray) -> np.ndarray:
    """Super-blocks ``xs (S, 256)`` with imatrix columns ``qw`` -> blocks ``(S,)``."""
    nsuper = xs.shape[0]
    sigma2 = sequential_sum(xs * xs) / F32(QK_K)
    weight = _iq2.weights_of(xs, qw, sigma2)
    waux = np.sqrt(weight)
    xval, signs = _iq2.magnitudes_and_signs(xs.reshape(-1, 8), weight.reshape(-1, 8), parity=True)
    scale, index, flip = _iq2.search_xxs(_iq2.lattice("iq2_xxs"), xval.reshape(-1, BLOCK),
                                         weight.reshape(-1, BLOCK), waux.reshape(-1, BLOCK))
    signs = signs.reshape(-1, GROUPS).astype(np.uint32)
    signs = np.where(flip[:, None], ~signs & np.uint32(127), signs)
    live = index >= 0                                       # zero blocks store nothing but their scale code
    shifts = np.arange(GROUPS, dtype=np.uint32)
    aux0 = (np.where(live, index, 0).astype(np.uint32) << (8 * shifts)).sum(axis=-1, dtype=np.uint32)
    aux1 = (np.where(live, signs, 0) << (7 * shifts)).sum(axis=-1, dtype=np.uint32)
    max_scale, d, codes = _iq2.super_scale_codes(scale.reshape(nsuper, NBLOCK))
    aux1 = aux1.reshape(nsuper, NBLOCK) | codes.astype(np.uint32) << np.uint32(28)
    words = np.stack((aux0.reshape(nsuper, NBLOCK), aux1), axis=-1).reshape(nsuper, 2 * NBLOCK)
    empty = max_scale == 0                                  # if (!max_scale): 66 zero bytes
    blocks = np.zeros(nsuper, dtype=FORMAT.dtype)
    blocks["d"] = np.where(empty, 0, f32_to_f16_bits(d))
    blocks["qs"] = np.where(empty[:, None], 0, words).astype("<u4").view("<u2").reshape(nsuper, 32)
    return blocks
