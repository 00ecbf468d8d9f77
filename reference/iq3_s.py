"""IQ3_S (ggml type 21): 256-element super-blocks of 8 blocks of 32; every
group of 4 elements is one of 512 points of a grid of magnitudes
(``IQ3S_GRID``, a 9-bit index), every element has an explicit sign bit,
and every block of 32 a 4-bit scale. 3.4375 bits per weight.

Block (110 bytes)::

    offset 0    d           fp16    super-block scale
    offset 2    qs[64]      uint8   bits 0-7 of the grid index of group g = elements 4g .. 4g+3
    offset 66   qh[8]       uint8   bit k of qh[b] = bit 8 of the grid index of group 8b + k
    offset 74   signs[32]   uint8   bit e of signs[t] = sign of element 8t + e (1: negative)
    offset 106  scales[4]   uint8   low nibble of scales[c] = scale code ls_2c,
                                    high nibble = ls_2c+1 (block b = elements 32b .. 32b+31)
    index_g   = qs[g] | ((qh[g // 8] >> (g % 8)) & 1) << 8
    db_b      = d * (float)(1 + 2*ls_b)
    element 4g + i = (db_b * IQ3S_GRID[index_g].byte[i]) * (sign ? -1 : 1)

``IQ3S_GRID`` bytes are the odd integers 1 .. 15 of the quantizer's lattice.

Quantize (``quantize_iq3_s`` = ``quantize_row_iq3_s_impl(32, ...)``, per
super-block; ``quantize_row_iq3_s_ref`` is the same without an importance
matrix)::

    sigma2     = 2 * sum(x^2) / 256
    weights    w_j = x_j^2, or with an importance matrix qw:
               w_j = qw_j * sqrtf(sigma2 + x_j^2)
    signs      xval = |x| (x >= 0 keeps x, so -0.0 stays -0.0); all 8 bits stored
    block b    max = the largest xval (``MAX`` chain from xval[0]);
               max == 0: scale 0 and nothing written (see the quirk below);
               otherwise (scale_b, levels) = the search of ``_iq3.block_search``
               (trial scales (15 + 0.2*is)/max, is = -9..9, 3 shells of
               neighbours, every group re-rounded at the end)
    d          = max_b(scale_b) / 31;  stored fp16(d * 1.033f)
    ls_b       = clamp(nearest_int(0.5f*(id*scale_b - 1)), 0, 15),  id = 1/d (float32 d)
    max scale 0: d = +0.0 and no scale codes (all 0); qs, qh and signs as written

Quirks, all kept because they are in the bytes ggml writes (and one
decision where ggml writes nothing):

* **A zero block of 32 shifts the blocks after it.** ggml writes block b's
  8 indices and 4 sign bytes through pointers that advance only after a
  non-zero block (the ``continue`` of a block with ``max == 0`` skips the
  advance), while ``qh`` is indexed by position. So the ``qs`` and
  ``signs`` of the non-zero blocks are packed together at the front, in
  order, and the bytes after them are 0; ``qh`` bit ``8b + k`` stays at
  block b's place. Such a super-block decodes to other values than the
  ones quantized (the blocks after a zero block read their neighbours'
  indices and signs). The spec reproduces the packing.
* A zero block (``max == 0``, e.g. ``-0.0`` and ``0.0`` only) has scale code
  0 (``db = d``) and decodes to ``d`` times the grid bytes of whatever its
  slots hold, not to 0.
* Values small enough that every ``w = x^2`` underflows to 0 are not a zero
  block: they get a scale (``max/15``, or 0 where the re-fit's ``sumqx``
  underflows) and their grid indices and signs are written; if every block
  ends with scale 0, ``d`` is 0 and the indices and signs remain.
* The fudge factor 1.033 enlarges the stored ``d`` relative to the ``d``
  the codes were rounded with.
* A negative scale would be negated and the block's 4 sign bytes
  complemented (upstream: "should never happen"; with non-negative weights
  and magnitudes it cannot, and the spec states the rule for completeness).
* Where every weighted distance of a neighbour search overflows float32
  (``|x|`` beyond about 1e12), ggml aborts on ``GGML_ASSERT(grid_index >=
  0)``; the spec takes the first neighbour of the list (the nearest lattice
  point of lowest index), so that every finite input has bytes. Such inputs
  overflow the fp16 ``d`` anyway.

Dot product with Q8_K (``ggml_vec_dot_iq3_s_q8_K_generic``), per super-block::

    sumi_b = sum over block b of IQ3S_GRID byte * a.qs * (sign ? -1 : 1)  (exact)
    bsum   = sum_b sumi_b * (2*ls_b + 1)                                 (exact)
    term   = (fp16(d) * a.d) * (float)bsum

(ggml adds the terms into one float in super-block order); the spec reduces
them in the canonical 16-lane order.

Validation: ``d`` must be finite.

Upstream: ggml ``src/ggml-quants.c`` ``quantize_row_iq3_s_impl``,
``iq3xs_init_impl``, ``iq3_find_best_neighbour``, ``dequantize_row_iq3_s``;
``src/ggml-common.h`` ``iq3s_grid``; ``src/ggml-cpu/quants.c``
``ggml_vec_dot_iq3_s_q8_K_generic`` (as vendored in llama-cpp-python 0.3.36,
ggml sync 353b63b4; identical at d99724f2).
"""

from __future__ import annotations

import numpy as np

from . import q8_k
from ._format import BlockFormat, Field, Invalid, nonfinite_f16
from ._iq3 import (IEEE, block_search, block_weights, c_max, group_keys, lattice_tables, quantize_rows,
                   signed_grid_table)
from ._numerics import F32, canonical_dot, f16_bits_to_f32, f32_to_f16_bits, nearest_int
from .tables.ggml_iq3 import IQ3S_GRID

QK_K = 256
NBLOCK, BLOCK = 8, 32

FORMAT = BlockFormat(
    name="iq3_s", origin="ggml", type_id=21, block_size=QK_K,
    fields=(Field("d", "f16", 1, "super-block scale"),
            Field("qs", "u8", 64, "bits 0-7 of the grid index (into IQ3S_GRID) of group g = elements 4g .. 4g+3"),
            Field("qh", "u8", 8, "bit k of qh[b]: bit 8 of the grid index of group 8b+k"),
            Field("signs", "u8", 32, "bit e of signs[t]: sign of element 8t+e (1: negative)"),
            Field("scales", "u8", 4, "low nibble of byte c: scale code ls_2c, high nibble: ls_2c+1; "
                                     "value (d*(1+2*ls_b))*grid byte*sign")),
    vec_dot_format="q8_k",
    upstream="ggml src/ggml-quants.c quantize_row_iq3_s_impl, iq3xs_init_impl, iq3_find_best_neighbour, "
             "dequantize_row_iq3_s; src/ggml-cpu/quants.c ggml_vec_dot_iq3_s_q8_K_generic "
             "@ 353b63b4 (llama-cpp-python 0.3.36; = d99724f2)",
    imatrix="accepted",
)

#: (grid index * 16 + 4 sign bits) -> the 4 signed grid magnitudes (float32)
_SIGNED_GRID = signed_grid_table(IQ3S_GRID)
#: the grid magnitudes as integers (512, 4)
GRID_BYTES = IQ3S_GRID.view(np.uint8).reshape(-1, 4)


def scale_codes(blocks: np.ndarray) -> np.ndarray:
    """``ls_b`` of each block of 32, ``(..., 8)`` int32."""
    sc = blocks["scales"].astype(np.int32)
    return np.stack([sc & 15, sc >> 4], axis=-1).reshape(sc.shape[:-1] + (NBLOCK,))


def grid_indices(blocks: np.ndarray) -> np.ndarray:
    """The 9-bit grid index of every group of 4, ``(..., 64)`` int32."""
    high = (blocks["qh"][..., None].astype(np.int32) >> np.arange(8)) & 1    # (..., 8 blocks, 8 groups)
    return blocks["qs"].astype(np.int32) | high.reshape(high.shape[:-2] + (64,)) << 8


def _group_rows(blocks: np.ndarray) -> np.ndarray:
    """Row of ``_SIGNED_GRID`` for every group of 4, ``(..., 64)``."""
    signs = blocks["signs"]
    nibbles = np.stack([signs & 15, signs >> 4], axis=-1).reshape(signs.shape[:-1] + (64,))
    return grid_indices(blocks).astype(np.intp) * 16 + nibbles


def dequantize(q: np.ndarray) -> np.ndarray:
    b = FORMAT.blocks(q)
    nrows, nsuper = b.shape
    values = np.take(_SIGNED_GRID, _group_rows(b), axis=0)           # (rows, nb, 64, 4)
    with np.errstate(**IEEE):
        db = f16_bits_to_f32(b["d"])[..., None] * (1 + 2 * scale_codes(b)).astype(F32)
        # (db * byte) * (+-1) == db * (+-byte): the sign is exact
        values = values.reshape(nrows, nsuper, NBLOCK, BLOCK)
        values *= db[..., None]
    return values.reshape(nrows, -1)


def vec_dot(wq: np.ndarray, aq: np.ndarray) -> np.ndarray:
    w, a = FORMAT.blocks(wq), q8_k.FORMAT.blocks(aq[None, :])
    nrows, nsuper = w.shape
    signed = np.take(_SIGNED_GRID, _group_rows(w), axis=0).astype(np.int32)  # exact small integers
    sumi = np.einsum("rsbj,rsbj->rsb", signed.reshape(nrows, nsuper, NBLOCK, BLOCK),
                     a["qs"].astype(np.int32).reshape(1, nsuper, NBLOCK, BLOCK))
    bsum = (sumi * (2 * scale_codes(w) + 1)).sum(axis=-1)
    with np.errstate(**IEEE):
        return canonical_dot((f16_bits_to_f32(w["d"]) * a["d"]) * bsum.astype(F32))


def validate(q: np.ndarray) -> list[Invalid]:
    return nonfinite_f16(FORMAT.blocks(q), "d")


def quantize(x: np.ndarray, imatrix: np.ndarray | None = None) -> np.ndarray:
    return quantize_rows(FORMAT, x, imatrix, _superblocks)


#: the stored scale is d times this fudge factor
D_FUDGE = F32(1.033)


def _superblocks(xs: np.ndarray, qw: np.ndarray | None) -> np.ndarray:
    """Super-blocks ``xs (S, 256)`` with imatrix columns ``qw`` -> blocks ``(S,)``."""
    nsuper = xs.shape[0]
    tables = lattice_tables(512)
    weight = block_weights(xs, qw).reshape(-1, BLOCK)
    waux = np.sqrt(weight)
    xb = xs.reshape(-1, BLOCK)
    negative_x = ~(xb >= 0)
    xval = np.where(negative_x, -xb, xb).astype(F32)
    signs = np.packbits(negative_x.reshape(-1, 4, 8), axis=-1, bitorder="little")[..., 0]   # (B, 4)
    vmax = c_max(xval)
    zero = vmax == 0  # ggml's `if (!max)`
    scale, levels = block_search(tables, xval, weight, waux, vmax, range(-9, 10), start_on_grid=False,
                                 refine_all=True)
    flip = scale < 0  # flipped to positive with the block's signs
    scale = np.where(zero, F32(0), np.where(flip, -scale, scale)).astype(F32)
    signs = np.where(flip[:, None], ~signs, signs).astype(np.uint8)
    indices = tables.map[group_keys(np.where(zero[:, None], 0, levels))]
    assert (indices >= 0).all()

    blocks = np.zeros(nsuper, dtype=FORMAT.dtype)
    indices = indices.reshape(nsuper, NBLOCK, 8)
    zero = zero.reshape(nsuper, NBLOCK)
    # qh by position; qs and signs packed over the non-zero blocks (the quirk in the docstring)
    blocks["qh"] = np.packbits((indices >> 8).astype(np.uint8), axis=-1, bitorder="little")[..., 0]
    blocks["qh"][...] = np.where(zero, 0, blocks["qh"])
    rank = np.cumsum(~zero, axis=1) - 1
    sb, b = np.nonzero(~zero)
    qs = blocks["qs"].reshape(nsuper, NBLOCK, 8)
    qs[sb, rank[sb, b]] = (indices[sb, b] & 255).astype(np.uint8)
    blocks["qs"] = qs.reshape(nsuper, 64)
    packed_signs = blocks["signs"].reshape(nsuper, NBLOCK, 4)
    packed_signs[sb, rank[sb, b]] = signs.reshape(nsuper, NBLOCK, 4)[sb, b]
    blocks["signs"] = packed_signs.reshape(nsuper, 32)

    scale = scale.reshape(nsuper, NBLOCK)
    max_scale = np.zeros(nsuper, dtype=F32)
    for i in range(NBLOCK):  # MAX(max_scale, scale)
        max_scale = np.where(max_scale > scale[:, i], max_scale, scale[:, i])
    d = max_scale / F32(31)
    inverse = F32(1) / d
    codes = np.clip(nearest_int(F32(0.5) * (inverse[:, None] * scale - F32(1))), 0, 15).astype(np.uint8)
    empty = max_scale == 0  # ggml stops before d and the scale codes
    blocks["d"] = np.where(empty, 0, f32_to_f16_bits(d * D_FUDGE))
    blocks["scales"] = np.where(empty[:, None], 0, codes[:, 0::2] | codes[:, 1::2] << 4)
    return blocks
