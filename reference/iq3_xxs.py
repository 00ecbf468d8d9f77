"""IQ3_XXS (ggml type 18): 256-element super-blocks of 8 blocks of 32;
every group of 4 elements is one of 256 points of a grid of magnitudes
(``IQ3XXS_GRID``), every group of 8 has 7 stored sign bits (the 8th makes
their parity even), and every block of 32 a 4-bit scale. 3.0625 bits per
weight.

Block (98 bytes; ggml declares ``qs[96]``, of which the spec names the last
32 bytes ``scales_and_signs``)::

    offset 0    d                    fp16    super-block scale
    offset 2    qs[64]               uint8   grid index of group g = elements 4g .. 4g+3
    offset 66   scales_and_signs[8]  uint32  word b (block b = elements 32b .. 32b+31):
                                               bits 7t .. 7t+6 = sign index s_bt of the
                                               elements 32b+8t .. 32b+8t+7 (t = 0..3)
                                               bits 28 .. 31   = scale code ls_b
    signs_bt  = KSIGNS[s_bt]: s_bt with bit 7 set when s_bt has odd parity
                (ksigns_iq2xs); bit e = sign of element 32b+8t+e (1: negative)
    db_b      = (d * (0.5f + ls_b)) * 0.5f
    element 4g + i = (db_b * IQ3XXS_GRID[qs[g]].byte[i]) * (sign ? -1 : 1)

``IQ3XXS_GRID`` bytes are magnitudes in {4, 12, ..., 52, 62}, about four
times the odd integers 1 .. 15 of the quantizer's lattice (15 decodes as 62).

Quantize (``quantize_iq3_xxs`` = ``quantize_row_iq3_xxs_impl(256, ...)``,
per super-block; ``quantize_row_iq3_xxs_ref`` is the same without an
importance matrix)::

    sigma2     = 2 * sum(x^2) / 256
    weights    w_j = x_j^2, or with an importance matrix qw:
               w_j = qw_j * sqrtf(sigma2 + x_j^2)
    signs      per group of 8: xval = |x| (x >= 0 keeps x, so -0.0 stays -0.0);
               an odd number of negative elements flips the one with the
               smallest w*x*x (the first one) back: its xval becomes -|x| and
               its sign bit is cleared, so the parity is even; 7 bits stored
    block b    max = the largest xval (``MAX`` chain from xval[0]);
               max < 1e-8 (GROUP_MAX_EPS_IQ3_XXS): scale 0, and the block's
               indices and its whole scales_and_signs word stay 0;
               otherwise (scale_b, levels) = the search of ``_iq3.block_search``
               (trial scales (15 + 0.2*is)/max, is = -15..15, 2 shells of
               neighbours, only off-grid groups re-rounded at the end)
    d          = max_b(scale_b) / 31;  stored fp16(d * 1.0125f)
    ls_b       = clamp(nearest_int(0.5f*(id*scale_b - 1)), 0, 15),  id = 1/d (float32 d)
    an all-zero super-block (max scale 0) is all zero bytes (d = +0.0)

Quirks, all kept because they are in the bytes ggml writes (and one
decision where ggml writes nothing):

* A zero block of 32 inside a non-zero super-block stores index 0, signs 0
  and ``ls = 0``: it decodes to ``d/4 * 4 = d``, not to 0 (ggml's ``continue``
  skips the block; the scale 0 rounds to code 0, and grid point 0 is not 0).
* The fudge factor 1.0125 enlarges the stored ``d`` relative to the ``d``
  the codes were rounded with.
* The parity fix makes the flipped element's ``xval`` negative; it still
  enters the searches as a negative magnitude (its level is clamped to 0).
* A negative scale ("should never happen" upstream; only the parity fix's
  negative ``xval`` could cause it, with extreme importance weights) is
  negated and the stored 7-bit sign indices of the block complemented (the
  completed 8 bits stay of even parity).
* Where every weighted distance of a neighbour search overflows float32
  (``|x|`` beyond about 1e12), ggml aborts on ``GGML_ASSERT(grid_index >=
  0)``; the spec takes the first neighbour of the list (the nearest lattice
  point of lowest index), so that every finite input has bytes. Such inputs
  overflow the fp16 ``d`` anyway.

Dot product with Q8_K (``ggml_vec_dot_iq3_xxs_q8_K_generic``), per
super-block::

    sumi_b = sum over block b of IQ3XXS_GRID byte * a.qs * (sign ? -1 : 1)  (exact)
    bsum   = sum_b sumi_b * (2*ls_b + 1)                                   (exact)
    term   = ((fp16(d) * a.d) * (float)bsum) * 0.25f

ggml adds ``(fp16(d) * a.d) * bsum`` into one float and multiplies the total
by 0.25 at the end; the spec scales each super-block's term by 0.25 (exact,
a power of two, unless it underflows) and reduces the terms in the canonical
16-lane order.

Validation: ``d`` must be finite.

Upstream: ggml ``src/ggml-quants.c`` ``quantize_row_iq3_xxs_impl``,
``iq3xs_init_impl``, ``iq3_find_best_neighbour``, ``dequantize_row_iq3_xxs``;
``src/ggml-common.h`` ``iq3xxs_grid``, ``ksigns_iq2xs``;
``src/ggml-cpu/quants.c`` ``ggml_vec_dot_iq3_xxs_q8_K_generic`` (as vendored
in llama-cpp-python 0.3.36, ggml sync 353b63b4; identical at d99724f2).
"""

from __future__ import annotations

import numpy as np

from . import q8_k
from ._format import BlockFormat, Field, Invalid, nonfinite_f16
from ._iq3 import (IEEE, KSIGNS, block_search, block_weights, c_max, group_keys, lattice_tables, quantize_rows,
                   signed_grid_table)
from ._numerics import F32, canonical_dot, f16_bits_to_f32, f32_to_f16_bits, nearest_int
from .tables.ggml_iq3 import IQ3XXS_GRID

QK_K = 256
NBLOCK, BLOCK = 8, 32

FORMAT = BlockFormat(
    name="iq3_xxs", origin="ggml", type_id=18, block_size=QK_K,
    fields=(Field("d", "f16", 1, "super-block scale"),
            Field("qs", "u8", 64, "grid index (into IQ3XXS_GRID) of group g = elements 4g .. 4g+3"),
            Field("scales_and_signs", "u32", 8,
                  "word b: bits 7t..7t+6 = 7-bit sign index of elements 32b+8t .. 32b+8t+7 (KSIGNS), "
                  "bits 28..31 = scale code ls_b; value (d*(0.5+ls_b)*0.5)*grid byte*sign")),
    vec_dot_format="q8_k",
    upstream="ggml src/ggml-quants.c quantize_row_iq3_xxs_impl, iq3xs_init_impl, iq3_find_best_neighbour, "
             "dequantize_row_iq3_xxs; src/ggml-cpu/quants.c ggml_vec_dot_iq3_xxs_q8_K_generic "
             "@ 353b63b4 (llama-cpp-python 0.3.36; = d99724f2)",
    imatrix="accepted",
)

#: (grid index * 16 + 4 sign bits) -> the 4 signed grid magnitudes (float32)
_SIGNED_GRID = signed_grid_table(IQ3XXS_GRID)
#: the grid magnitudes as integers (256, 4)
GRID_BYTES = IQ3XXS_GRID.view(np.uint8).reshape(-1, 4)


def scale_codes(blocks: np.ndarray) -> np.ndarray:
    """``ls_b``: bits 28..31 of each scales_and_signs word, ``(..., 8)`` int32."""
    return (blocks["scales_and_signs"] >> np.uint32(28)).astype(np.int32)


def sign_bytes(blocks: np.ndarray) -> np.ndarray:
    """The 8 sign bits of every group of 8, ``(..., 8 blocks, 4)`` uint8:
    ``KSIGNS[(word >> 7t) & 127]``."""
    words = blocks["scales_and_signs"][..., None]
    return KSIGNS[(words >> (np.uint32(7) * np.arange(4, dtype=np.uint32))) & np.uint32(127)]


def _group_rows(blocks: np.ndarray) -> np.ndarray:
    """Row of ``_SIGNED_GRID`` for every group of 4, ``(..., 64)``."""
    signs = sign_bytes(blocks)                                       # (..., 8, 4)
    nibbles = np.stack([signs & 15, signs >> 4], axis=-1).reshape(signs.shape[:-2] + (64,))
    return blocks["qs"].astype(np.intp) * 16 + nibbles


def dequantize(q: np.ndarray) -> np.ndarray:
    b = FORMAT.blocks(q)
    nrows, nsuper = b.shape
    values = np.take(_SIGNED_GRID, _group_rows(b), axis=0)           # (rows, nb, 64, 4)
    with np.errstate(**IEEE):
        db = (f16_bits_to_f32(b["d"])[..., None] * (F32(0.5) + scale_codes(b).astype(F32))) * F32(0.5)
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
        d = f16_bits_to_f32(w["d"]) * a["d"]
        return canonical_dot((d * bsum.astype(F32)) * F32(0.25))


def validate(q: np.ndarray) -> list[Invalid]:
    return nonfinite_f16(FORMAT.blocks(q), "d")


def quantize(x: np.ndarray, imatrix: np.ndarray | None = None) -> np.ndarray:
    return quantize_rows(FORMAT, x, imatrix, _superblocks)


#: GROUP_MAX_EPS_IQ3_XXS: a block of 32 whose largest magnitude is below this is a zero block
GROUP_MAX_EPS = F32(1e-8)
#: the stored scale is d times this fudge factor
D_FUDGE = F32(1.0125)


def parity_signs(x: np.ndarray, weight: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Groups of 8 ``(..., 8)`` -> (``xval``, the 7 stored sign bits).

    ``xval = |x|`` with bit e set for ``x_e < 0`` (``x >= 0`` keeps ``x``);
    with an odd number of set bits the element of least ``w*x*x`` (the first
    one, C's strict ``<`` from element 0) is flipped back: ``xval = -|x|``
    there and its bit cleared."""
    negative = ~(x >= 0)
    xval = np.where(negative, -x, x)
    bits = (negative.astype(np.int32) << np.arange(8)).sum(axis=-1)
    odd = negative.sum(axis=-1) % 2 == 1
    ax = (weight * x) * x
    least, imin = ax[..., 0], np.zeros(ax.shape[:-1], dtype=np.int32)
    for i in range(1, 8):
        smaller = ax[..., i] < least
        least = np.where(smaller, ax[..., i], least)
        imin = np.where(smaller, i, imin)
    flip = odd[..., None] & (np.arange(8) == imin[..., None])
    xval = np.where(flip, -xval, xval)
    bits = np.where(odd, bits ^ (1 << imin), bits)
    return xval.astype(F32), (bits & 127).astype(np.uint32)


def _superblocks(xs: np.ndarray, qw: np.ndarray | None) -> np.ndarray:
    """Super-blocks ``xs (S, 256)`` with imatrix columns ``qw`` -> blocks ``(S,)``."""
    nsuper = xs.shape[0]
    tables = lattice_tables(256)
    weight = block_weights(xs, qw).reshape(-1, BLOCK)
    waux = np.sqrt(weight)
    xval, signs = parity_signs(xs.reshape(-1, 4, 8), weight.reshape(-1, 4, 8))
    xval = xval.reshape(-1, BLOCK)
    vmax = c_max(xval)
    zero = vmax < GROUP_MAX_EPS
    scale, levels = block_search(tables, xval, weight, waux, vmax, range(-15, 16), start_on_grid=True,
                                 refine_all=False)
    negative = scale < 0  # flipped to positive with the block's signs
    scale = np.where(zero, F32(0), np.where(negative, -scale, scale)).astype(F32)
    signs = np.where(negative[:, None], ~signs & np.uint32(127), signs)
    words = signs[:, 0] | signs[:, 1] << np.uint32(7) | signs[:, 2] << np.uint32(14) | signs[:, 3] << np.uint32(21)
    words = np.where(zero, np.uint32(0), words).reshape(nsuper, NBLOCK)
    indices = tables.map[group_keys(np.where(zero[:, None], 0, levels))]
    assert (indices >= 0).all()

    scale = scale.reshape(nsuper, NBLOCK)
    max_scale = np.zeros(nsuper, dtype=F32)
    for b in range(NBLOCK):  # MAX(max_scale, scale)
        max_scale = np.where(max_scale > scale[:, b], max_scale, scale[:, b])
    d = max_scale / F32(31)
    inverse = F32(1) / d
    codes = np.clip(nearest_int(F32(0.5) * (inverse[:, None] * scale - F32(1))), 0, 15).astype(np.uint32)
    blocks = np.zeros(nsuper, dtype=FORMAT.dtype)
    blocks["d"] = f32_to_f16_bits(d * D_FUDGE)
    blocks["qs"] = indices.reshape(nsuper, 64)
    blocks["scales_and_signs"] = words | codes << np.uint32(28)
    empty = max_scale == 0  # ggml clears the whole block (d = +0.0)
    blocks[empty] = np.zeros((), dtype=FORMAT.dtype)
    return blocks
