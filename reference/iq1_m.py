"""IQ1_M (ggml type 29): 256-element super-blocks of 16 blocks of 16, each
group of 8 elements one of 2048 points of a ternary grid (11-bit index)
with its own delta sign, a 3-bit scale per block of 16, and an fp16
super-block scale spread over the high nibbles of the scale words. 1.75
bits per weight.

Block (56 bytes)::

    offset 0   qs[32]      uint8   low 8 bits of the grid index of group g
                                   (elements 8g .. 8g+7)
    offset 32  qh[16]      uint8   byte h holds groups 2h (low nibble) and
                                   2h+1 (high nibble): bits 0-2 of the nibble
                                   = high 3 bits of the index, bit 3 = delta
                                   sign (1: negative)
    offset 48  scales[8]   uint8   read as 4 little-endian uint16 words w_k:
                                   bits 3i .. 3i+2 of w_k = scale code ls of
                                   block 4k+i (elements 16(4k+i) ..), i < 4;
                                   bits 12-15 of w_k = bits 4k .. 4k+3 of the
                                   fp16 super-block scale D

    D         = (w0 >> 12) | (w1 >> 8 & 0xf0) | (w2 >> 4 & 0xf00) | (w3 & 0xf000)
    index_g   = qs[g] | ((qh[g // 2] >> 4*(g % 2)) & 7) << 8
    delta_g   = (qh[g // 2] >> (4*(g % 2) + 3)) & 1 ? -0.125 : +0.125   (IQ1M_DELTA)
    dl_s      = fp16(D) * (2*ls_s + 1)                              (float32)
    element 8g + j = dl_s * (iq1s_grid[index_g][j] + delta_g),   s = g // 2

Quantize (``quantize_iq1_m`` = ``quantize_row_iq1_m_impl`` row by row; the
importance matrix is optional, ggml's ``ggml_quantize_chunk`` does not
require one, llama-quantize does)::

    weights   w_i = qw_i * sqrt(sigma2 + x_i^2), sigma2 = (2 * sum x^2) / 256,
              or without an importance matrix w_i = x_i^2
    per block of 16 (s):
      max |x| < 1e-7: scale 0, shifts (+, +), index 0 for both groups
      sort x ascending (ties in index order, _iq1); prefix sums per half
      of the block (h = 0: elements 0..7, h = 1: 8..15) over the sorted order:
        X_h,j = X_h,j-1 + (element in half h ? w*x : copy),  W_h,j likewise
      for i1 = 0..16, i2 = i1..16, then k = 0..3 (delta signs of the two
      halves: ++, +-, -+, --), with v = x_p = {-0.875, 0.125, 1.125} or
      x_m = {-1.125, -0.125, 0.875} per half:
        sumqx_h = X_h,16 * v2 - (X_h,i1 + X_h,i2)
        sumq2_h = W_h,16*v2*v2 + W_h,i1*(v0^2 - v1^2) + W_h,i2*(v1^2 - v2^2)
        sumqx = sumqx_0 + sumqx_1, sumq2 = sumq2_0 + sumq2_1
        keep if sumq2 > 0 and sumqx^2 > best*sumq2; scale = sumqx/sumq2,
        best = scale*sumqx                                  (_iq1.scan_best)
      (the split collapses to those terms because v0 - v1 = v1 - v2 = -1)
      no candidate kept: as a zero block
      scale < 0: levels L -> 2 - L, scale -> -scale, k -> 3 - k
      each group of 8: on the grid, or the best neighbour (_iq1), and a
      refit scale = sumqx/sumq2 over the block if a group was off the grid
    max_scale == 0: every scale word 0, no delta bits (the indices stay)
    d = max_scale / 15; ls_s = clamp(nearest_int(0.5 * (1/d * scale_s - 1)), 0, 7)
    refit over the whole super-block with the stored indices, deltas and ls:
      q = v[l] * (2*ls_s + 1);  sumqx = sum w*q*x,  sumq2 = sum w*q*q
      (sequential, element order; zero blocks take part with index 0 and
      delta +); d = sumqx/sumq2 if sumq2 > 0
    D = fp16(d * 1.1125)

ggml's search here is the form with per-half prefix sums (llama.cpp @
0c1e57098); the older form (ggml @ d99724f2) sums each split term by term
in float32, which rounds differently, so the two versions do not always
write the same bytes. The spec follows the first (the oracle's).

Zero blocks: a block of 16 with max |x| < 1e-7 or no kept candidate stores
index 0 and delta + for both groups and scale 0 (it still takes part in the
final refit); an all-zero super-block is 56 zero bytes.

Sort ties and overflowing sums: as IQ1_S (``iq1_s``, ``_iq1``): equal values
keep index order, and a NaN block scale (where ggml aborts) raises
``NonFiniteInputError``. Ties matter much more here than in IQ1_S: a split
inside a run of equal values puts them on different levels of the two
halves, whose deltas may differ.

Dot product with Q8_K (``ggml_vec_dot_iq1_m_q8_K_generic``), per super-block::

    lsum_g  = sum over group g of iq1s_grid value * a.qs           (exact)
    qsum_g  = sum over group g of a.qs                             (exact)
    sumi1   = sum_s (2*ls_s + 1) * (lsum_2s + lsum_2s+1)
    sumi2   = sum_s (2*ls_s + 1) * (delta sign_2s * qsum_2s + sign_2s+1 * qsum_2s+1)
    contribution = (fp16(D) * a.d) * ((float)sumi1 + 0.125 * (float)sumi2)

The integer sums are exact, so their order is immaterial; the
contributions are reduced in the canonical 16-lane order (ggml adds them
into one float sum). Unlike IQ1_S it sums ``a.qs`` itself, not ``bsums``.

Validation: the fp16 ``D`` assembled from the scale words must be finite.

Upstream: ggml ``src/ggml-quants.c`` ``quantize_iq1_m``,
``quantize_row_iq1_m_impl``, ``iq1_find_best_neighbour2``,
``dequantize_row_iq1_m``; ``src/ggml-cpu/quants.c``
``ggml_vec_dot_iq1_m_q8_K_generic``; ``src/ggml-common.h`` ``block_iq1_m``,
``iq1m_scale_t`` (llama.cpp @ 0c1e57098, vendored in llama-cpp-python 0.3.36).
"""

from __future__ import annotations

import numpy as np

from . import _iq1, q8_k
from ._format import BlockFormat, Field, Invalid
from ._numerics import F32, canonical_dot, f16_bits_to_f32, f32_to_f16_bits, nearest_int, sequential_sum

QK_K = 256
NBLOCK, BLOCK, GROUP = 16, 16, 8
NGROUP = QK_K // GROUP
GROUP_MAX_EPS_IQ1_M = F32(1e-7)

#: Super-blocks quantized per batch (independent: the batch never changes a bit).
BATCH_SUPERBLOCKS = 256

#: ``qh`` delta-sign bits of a block for search choice k (``masks``).
DELTA_MASKS = np.array([0x00, 0x80, 0x08, 0x88], dtype=np.uint8)

#: Every fp16 bit pattern as float32, so that the page's formula can read D.
FP16_VALUES = np.arange(1 << 16, dtype=np.uint32).astype(np.uint16).view(np.float16).astype(F32)
FP16_VALUES.flags.writeable = False

#: ``iq1s_grid`` as one flat int8 array: value j of grid point g is entry 8g + j.
IQ1S_GRID_VALUES = _iq1.GRID_VALUES.reshape(-1)

IEEE = {"over": "ignore", "invalid": "ignore", "divide": "ignore", "under": "ignore"}

FORMAT = BlockFormat(
    name="iq1_m", origin="ggml", type_id=29, block_size=QK_K,
    fields=(Field("qs", "u8", QK_K // 8, "low 8 bits of the grid index of group g (elements 8g .. 8g+7)"),
            Field("qh", "u8", QK_K // 16, "byte h: groups 2h (low nibble) and 2h+1 (high nibble); bits 0-2 of a "
                                          "nibble = high 3 bits of the index, bit 3 = delta sign"),
            Field("scales", "u8", QK_K // 32, "4 uint16 words: bits 3i..3i+2 of word k = scale code ls of block "
                                              "4k+i of 16; bits 12-15 of word k = bits 4k..4k+3 of the fp16 "
                                              "super-block scale D; value D*(2*ls+1)*(iq1s_grid[index][j] +- 0.125)")),
    vec_dot_format="q8_k",
    upstream="ggml src/ggml-quants.c quantize_iq1_m, quantize_row_iq1_m_impl, iq1_find_best_neighbour2, "
             "dequantize_row_iq1_m; src/ggml-cpu/quants.c ggml_vec_dot_iq1_m_q8_K_generic @ llama.cpp 0c1e57098",
    imatrix="accepted",
)

_GROUPS = np.arange(NGROUP)
_BLOCKS = np.arange(NBLOCK)


def scale_words(blocks: np.ndarray) -> np.ndarray:
    """The four little-endian uint16 words of ``scales``, ``(..., 4)`` int32."""
    s = blocks["scales"].astype(np.int32)
    return s[..., 0::2] | s[..., 1::2] << 8


def super_scale_bits(blocks: np.ndarray) -> np.ndarray:
    """The fp16 bits of D (``iq1m_scale_t``), ``(...)`` uint16."""
    w = scale_words(blocks)
    return ((w[..., 0] >> 12) | ((w[..., 1] >> 8) & 0x00F0) | ((w[..., 2] >> 4) & 0x0F00)
            | (w[..., 3] & 0xF000)).astype(np.uint16)


def scale_codes(blocks: np.ndarray) -> np.ndarray:
    """``ls_s`` (0..7) of every block of 16, ``(..., 16)`` int32."""
    return (scale_words(blocks)[..., _BLOCKS // 4] >> (3 * (_BLOCKS % 4))) & 7


def group_indices(blocks: np.ndarray) -> np.ndarray:
    """The 11-bit grid index of every group of 8, ``(..., 32)`` int32."""
    qh = blocks["qh"][..., _GROUPS // 2].astype(np.int32) >> (4 * (_GROUPS % 2))
    return blocks["qs"].astype(np.int32) | (qh & 7) << 8


def delta_signs(blocks: np.ndarray) -> np.ndarray:
    """1 where group g's delta is -0.125, ``(..., 32)`` int32."""
    return (blocks["qh"][..., _GROUPS // 2].astype(np.int32) >> (4 * (_GROUPS % 2) + 3)) & 1


def dequantize(q: np.ndarray) -> np.ndarray:
    b = FORMAT.blocks(q)
    nrows, nsuper = b.shape
    values = _iq1.GRID_PLUS_DELTA[delta_signs(b), group_indices(b)]  # (rows, supers, 32, 8)
    with np.errstate(**IEEE):
        dl = f16_bits_to_f32(super_scale_bits(b))[..., None] * (2 * scale_codes(b) + 1).astype(F32)
        values *= dl[..., _GROUPS // 2, None]
    return values.reshape(nrows, -1)


def vec_dot(wq: np.ndarray, aq: np.ndarray) -> np.ndarray:
    w, a = FORMAT.blocks(wq), q8_k.FORMAT.blocks(aq[None, :])
    nrows, nsuper = w.shape
    a8 = a["qs"].astype(np.int32).reshape(1, nsuper, NGROUP, GROUP)
    lsum = np.einsum("rsgj,rsgj->rsg", _iq1.GRID_VALUES.astype(np.int32)[group_indices(w)], a8)
    qsum = a8.sum(axis=-1) * (1 - 2 * delta_signs(w))
    ls = 2 * scale_codes(w) + 1
    sumi1 = (ls * lsum.reshape(nrows, nsuper, NBLOCK, 2).sum(axis=-1)).sum(axis=-1)
    sumi2 = (ls * qsum.reshape(nrows, nsuper, NBLOCK, 2).sum(axis=-1)).sum(axis=-1)
    with np.errstate(**IEEE):
        terms = (f16_bits_to_f32(super_scale_bits(w)) * a["d"]) * (sumi1.astype(F32) + _iq1.DELTA * sumi2.astype(F32))
        return canonical_dot(terms)


def validate(q: np.ndarray) -> list[Invalid]:
    b = FORMAT.blocks(q)
    bits = super_scale_bits(b)
    found = []
    for row, block in zip(*np.nonzero((bits & 0x7C00) == 0x7C00)):
        v = int(bits[row, block])
        found.append(Invalid(int(row), int(block), "scales", v,
                             "super-block scale (fp16 from bits 12-15 of the scale words) is "
                             + ("NaN" if v & 0x3FF else "inf")))
    return found


# ------------------------------------------------------------------ quantize

def quantize(x: np.ndarray, imatrix: np.ndarray | None = None) -> np.ndarray:
    nrows, n = x.shape
    per_row = n // QK_K
    xs = np.asarray(x, dtype=F32).reshape(-1, QK_K)
    qw = None if imatrix is None else np.asarray(imatrix, dtype=F32).reshape(per_row, QK_K)
    blocks = np.empty(xs.shape[0], dtype=FORMAT.dtype)
    with np.errstate(**IEEE):
        for start in range(0, xs.shape[0], BATCH_SUPERBLOCKS):
            stop = min(start + BATCH_SUPERBLOCKS, xs.shape[0])
            w = None if qw is None else qw[np.arange(start, stop) % per_row]
            try:
                blocks[start:stop] = _superblocks(xs[start:stop], w)
            except _iq1.Overflow as exc:
                raise _iq1.overflow_error("iq1_m", x, start, exc.block, per_row, BLOCK) from None
    return FORMAT.to_bytes(blocks.reshape(nrows, per_row))


def quantize_refusal(x: np.ndarray, imatrix: np.ndarray | None, superblock: int):
    """The error ``quantize(x, imatrix)`` raises when super-block ``superblock``
    (row-major) is the first it refuses (a NaN block scale), or None: for the
    kernels, which report only the super-block (``_iq1.refusal``)."""
    return _iq1.refusal("iq1_m", _superblocks, x, imatrix, superblock, BLOCK)


def _superblocks(xs: np.ndarray, qw: np.ndarray | None) -> np.ndarray:
    """Super-blocks ``xs (S, 256)`` with their imatrix columns ``qw`` -> blocks ``(S,)``."""
    nsuper = xs.shape[0]
    if qw is None:
        weight = xs * xs
    else:
        sigma2 = (F32(2) * sequential_sum(xs * xs)) / F32(QK_K)
        weight = qw * np.sqrt(sigma2[:, None] + xs * xs)
    index, scale, shift = _block_search(xs.reshape(-1, BLOCK), weight.reshape(-1, BLOCK))
    index = index.reshape(nsuper, NBLOCK, 2)
    scale = scale.reshape(nsuper, NBLOCK)
    shift = shift.reshape(nsuper, NBLOCK)

    max_scale = np.zeros(nsuper, dtype=F32)
    for b in range(NBLOCK):  # MAX(max_scale, scale)
        max_scale = np.where(max_scale > scale[:, b], max_scale, scale[:, b])
    written = max_scale != 0  # if (!max_scale) continue: no scales, no delta bits
    d = max_scale / F32(15)
    inverse = F32(1) / d
    ls = np.clip(nearest_int(F32(0.5) * (inverse[:, None] * scale - F32(1))), 0, 7)

    # the final refit of d over the super-block, from the indices as stored
    negative = np.stack([shift >= 2, shift % 2 == 1], axis=-1)  # (S, 16, 2): delta sign per group
    values = np.where(negative[..., None], _iq1.X_M, _iq1.X_P)  # (S, 16, 2, 3)
    levels = _iq1.GRID_LEVELS[index]  # (S, 16, 2, 8)
    v = np.take_along_axis(values, levels.astype(np.intp), axis=-1)
    q = (v * (2 * ls + 1).astype(F32)[..., None, None]).reshape(nsuper, QK_K)
    wq = weight * q
    sumqx = sequential_sum(wq * xs)
    sumq2 = sequential_sum(wq * q)
    d = np.where(sumq2 > 0, sumqx / sumq2, d)
    dbits = f32_to_f16_bits(d * F32(1.1125)).astype(np.int32)

    words = np.zeros((nsuper, 4), dtype=np.int32)
    for s in range(NBLOCK):
        words[:, s // 4] |= ls[:, s] << (3 * (s % 4))
    words |= ((dbits[:, None] >> (4 * np.arange(4))) & 15) << 12
    words = np.where(written[:, None], words, 0)
    qh = (index >> 8)[..., 0] | (index >> 8)[..., 1] << 4
    qh = qh | np.where(written[:, None], DELTA_MASKS[shift], 0)

    blocks = np.empty(nsuper, dtype=FORMAT.dtype)
    blocks["qs"] = (index & 255).reshape(nsuper, QK_K // 8).astype(np.uint8)
    blocks["qh"] = qh.astype(np.uint8)
    blocks["scales"] = np.stack([words & 255, words >> 8], axis=-1).reshape(nsuper, 8).astype(np.uint8)
    return blocks


def _block_search(xb: np.ndarray, wb: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The search of every block of 16 ``xb``, ``wb (B, 16)``: grid indices
    ``(B, 2)``, scales ``(B,)`` and the delta choice k (0..3) of each block."""
    nblocks = xb.shape[0]
    amax = np.max(np.abs(xb), axis=1)
    order = _iq1.stable_order(xb)
    half = (order >= BLOCK // 2)  # the half of the block each sorted element is in
    wx = np.take_along_axis(wb * xb, order, axis=1)
    ws = np.take_along_axis(wb, order, axis=1)
    zero_f = F32(0)
    px = [_iq1.prefix_sums(np.where(half == h, wx, zero_f)) for h in (0, 1)]
    pw = [_iq1.prefix_sums(np.where(half == h, ws, zero_f)) for h in (0, 1)]
    i1, i2 = _iq1.splits(BLOCK)
    p2, m2 = _iq1.X_P[2], _iq1.X_M[2]
    cp1 = _iq1.X_P[0] * _iq1.X_P[0] - _iq1.X_P[1] * _iq1.X_P[1]
    cp2 = _iq1.X_P[1] * _iq1.X_P[1] - _iq1.X_P[2] * _iq1.X_P[2]
    cm1 = _iq1.X_M[0] * _iq1.X_M[0] - _iq1.X_M[1] * _iq1.X_M[1]
    cm2 = _iq1.X_M[1] * _iq1.X_M[1] - _iq1.X_M[2] * _iq1.X_M[2]
    # element-major: candidate c = 4*split + k, the C loop order, one row per candidate
    px = [np.ascontiguousarray(p.T) for p in px]  # (17, B)
    pw = [np.ascontiguousarray(p.T) for p in pw]
    qx_p, qx_m, q2_p, q2_m = [], [], [], []
    for h in (0, 1):
        txs, tws = px[h][BLOCK], pw[h][BLOCK]
        sx = px[h][i1] + px[h][i2]
        qx_p.append(txs * p2 - sx)
        qx_m.append(txs * m2 - sx)
        q2_p.append(tws * p2 * p2 + pw[h][i1] * cp1 + pw[h][i2] * cp2)
        q2_m.append(tws * m2 * m2 + pw[h][i1] * cm1 + pw[h][i2] * cm2)
    sumqx = np.empty((4 * len(i1), nblocks), dtype=F32)
    sumq2 = np.empty((4 * len(i1), nblocks), dtype=F32)
    for k, (first, second) in enumerate(((0, 0), (0, 1), (1, 0), (1, 1))):  # 0: x_p, 1: x_m per half
        sumqx[k::4] = (qx_p, qx_m)[first][0] + (qx_p, qx_m)[second][1]
        sumq2[k::4] = (q2_p, q2_m)[first][0] + (q2_p, q2_m)[second][1]
    best, scale = _iq1.scan_best(sumqx, sumq2)

    _iq1.check_scales(scale, (amax >= GROUP_MAX_EPS_IQ1_M) & (best >= 0))
    zero = (amax < GROUP_MAX_EPS_IQ1_M) | (best < 0)
    split = np.maximum(best, 0) // 4
    shift = np.maximum(best, 0) % 4
    levels = _iq1.levels_of_split(order, i1[split], i2[split])
    flip = scale < 0
    levels = np.where(flip[:, None], 2 - levels, levels)
    scale = np.where(flip, -scale, scale)
    shift = np.where(flip, 3 - shift, shift)

    negative = np.stack([shift >= 2, shift % 2 == 1], axis=-1)  # (B, 2)
    values = np.where(negative[..., None], _iq1.X_M, _iq1.X_P)  # (B, 2, 3)
    groups = levels.reshape(nblocks, 2, GROUP)
    u = _iq1.lattice_index(groups)
    index = _iq1.GRID_INDEX[u]
    off = (index < 0) & ~zero[:, None]
    if off.any():
        blk, grp = np.nonzero(off)
        index[blk, grp] = _iq1.best_neighbour(u[blk, grp], xb.reshape(nblocks, 2, GROUP)[blk, grp],
                                              wb.reshape(nblocks, 2, GROUP)[blk, grp], scale[blk], negative[blk, grp])
        refit = off.any(axis=1)
        chosen = _iq1.GRID_LEVELS[index[refit]]  # (R, 2, 8)
        q = np.take_along_axis(values[refit], chosen.astype(np.intp), axis=-1).reshape(-1, BLOCK)
        w, x = wb[refit], xb[refit]
        sumqx_f = sequential_sum(w * q * x)
        sumq2_f = sequential_sum(w * q * q)
        ok = (sumqx_f > 0) & (sumq2_f > 0)
        scale[refit] = np.where(ok, sumqx_f / sumq2_f, scale[refit])

    index = np.where(zero[:, None], 0, index)
    scale = np.where(zero, F32(0), scale).astype(F32)
    shift = np.where(zero, 0, shift)
    return index, scale, shift
