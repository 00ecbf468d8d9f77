"""IQ4_KSS (ik_llama.cpp type 146): 4-bit indices into the two-half ``iq4k``
grid stored four to 15 bits, a 7-bit odd scale and a shift bit per 32
elements spread one bit per 16-bit word, one float32 scale per row: exactly
4.0 bits per weight, in blocks of 256 (8 sub-blocks of 32).

Row (``row_meta_size`` = 4)::

    offset 0   d        float32   row scale
    then n/256 blocks of 128 bytes, read as 64 little-endian uint16 words
    (the C struct declares them uint32_t qs[32]):
    word 8b+k  (sub-block b = 0..7, k = 0..7)
        bit 0      bit k of the sub-block's scale/shift byte ls_b
        bits 1-15  the 15-bit code c of four 4-bit grid indices

The words of a sub-block, and what they hold::

    ls_b   = sum_k (w[8b+k] & 1) << k
    shift  = ls_b & 1                       (grid half: iq4k_values[16*shift + i])
    scale  = (ls_b & 254) - 127             (odd, -127 .. 127, never 0)
    c      = w >> 1                         (15 bits)
    v      = c ^ (c << 1)                   (16 bits; ik_llama.cpp writes
                                             a = w & 0xfffe; v = a ^ (a >> 1))
    nibble 0, 1, 2, 3 of v = the indices of elements 2k, 2k+16, 2k+1, 2k+17
                             of the sub-block (IQ4_NL's byte pairing: byte 2k of
                             v's little-endian bytes holds elements 2k and 2k+16)

    y[32b + e] = (d * scale) * iq4k_values[16*shift + index_e]

Why 15 bits hold 16: every ``v = c ^ (c << 1)`` with a 15-bit ``c`` has an
even number of set bits (each set bit b of ``c`` flips bits b and b+1 of
``v``), and the map is linear and one-to-one, so the 2**15 codes reach each
of the 2**15 even-popcount 16-bit words exactly once. So IQ4_KSS stores 4 indices of 4 bits under one
constraint, *the 16 bits have even parity*, and spends the freed bit of each
word on the sub-block's scale byte: 8 words x 1 bit = the 7 scale bits and
the shift. 4 weights per 16 bits is 4.0 bits per weight, plus 32 bits per
row. The encoder inverts the map with a prefix XOR, ``c_b = v_0 ^ ... ^ v_b``
(``encode_word``; ik_llama.cpp finds the same code by brute force in
``scramble_table()``).

Quantize (``quantize_row_iq4_kss_impl``, ntry = 7; the weights are ``x^2``
without an importance matrix, ``qw*sqrtf(sigma2 + x^2)`` with one, where
``sigma2 = 2*sum(x^2)/256`` per super-block and ``qw`` the imatrix after
``QHelper::row_weights`` over blocks of 32):

1. Pass 1, per sub-block: a float scale from the sweep over the inverse
   scales ``(itry + half[0])/max``, itry = -7..7, on the base then the
   shifted half, for ``+x`` and ``-x`` (a negative scale). Each candidate
   quantizes every element to the nearest grid value (``_iqk.Grid``), then
   **prunes** each group of 4 indices to even parity (below), then scores
   ``sumqx^2/sumq2`` (``sumqx = sum w*q*x``, ``sumq2 = sum w*q*q`` over the
   32 elements in word order); a candidate must be strictly better
   (``sumqx^2 > best*sumq2``), and the scale is ``sumqx/sumq2``. A sub-block
   whose largest magnitude is below 1e-16 gets scale 0. The shift found here
   is not kept.
2. Row scale ``d = max|scale| / 127``. A row whose scales are all 0 stores
   ``d = 0`` and zero words.
3. Pass 2, per sub-block: ``l = clamp(nearest_int(0.5*(scale/d + 127)), 0,
   127)``, integer scale ``L = 2l - 127`` (odd, so never 0); the elements are
   quantized at ``1/(d*L)`` on *both* halves and pruned; the half with the
   smaller weighted error ``sum w*(x - d*L*value)^2`` wins (the base half on
   ties). This is the only place the shift is decided.
4. ``d = 1.01 * sum w*q*x / sum w*q*q`` over the whole row (``q`` = grid
   value times ``L``; sums in block, sub-block, word, nibble order), if the
   denominator is positive.

Pruning (``prune_iq4ks``): a group whose 4 indices have an odd number of set
bits gets exactly one index changed by -2, -1, +1 or +2 (staying in 0..15)
to one of the other popcount parity: the change with the smallest
``w_j*((dl*value' - x_j)^2 - (dl*value - x_j)^2)``, the first on ties
(index 0 of the group first, then the smaller candidate). ``dl`` is the
candidate scale (``1/id`` in pass 1, ``d*L`` in pass 2). Quirks kept from
ik_llama.cpp: the "before" error reads the *unshifted* grid even when the
shifted half is being pruned, and pass 1 prunes the ``-x`` candidate against
``+x``. (If no change scores below ``FLT_MAX``, ik_llama.cpp aborts on an
assertion; the spec leaves the group unchanged. Finite inputs of ordinary
size never get there.)

Dot product with Q8_K: ``isum = sum_b scale_b * sum_e q8[32b+e] *
value_e`` (exact integers), term ``(d * q8.d) * isum`` per super-block,
reduced in the canonical 16-lane order. ik_llama.cpp has no scalar dot
product for IQ4_KSS (its SIMD kernels, and its GEMM after repacking to
Q8_K_R8, compute the same integers in other float orders); its Q8_K block
carries an extra float (``sum``) that this dot product does not read, and
quantspec's ``q8_k`` is mainline's 292-byte layout.

Worked example: one sub-block decoded by hand. Word 0 of sub-block 0 holds
the indices 9, 10, 3, 5 (2+2+2+2 = 8 bits set: even) of elements 0, 16, 1,
17, and bit 0 of the scale byte; words 1..7 hold the other 7 scale bits and
code 0 (indices 0, 0, 0, 0)::

    >>> import numpy as np
    >>> from quantspec.reference import iq4_kss
    >>> v = 0x53A9                       # nibbles 9, 10, 3, 5 (lowest first)
    >>> c = int(iq4_kss.encode_word(v)); bin(c)
    '0b11000101100111'
    >>> c ^ (c << 1) == v                # the decoder's v = c ^ (c << 1)
    True
    >>> ls = 0b10000001                  # shift 1; scale (129 & 254) - 127 = 1
    >>> words = np.zeros(64, dtype=np.uint16)
    >>> words[0] = (c << 1) | (ls & 1)
    >>> words[1:8] = [(ls >> k) & 1 for k in range(1, 8)]
    >>> words[:8].tolist()
    [25295, 0, 0, 0, 0, 0, 0, 1]
    >>> row = np.concatenate([np.frombuffer(np.float32(0.5).tobytes(), np.uint8), words.view(np.uint8)])
    >>> row[:8].tobytes().hex(" ")       # d = 0.5, then word 0 = 0x62cf
    '00 00 00 3f cf 62 00 00'
    >>> y = iq4_kss.dequantize(row[None, :])[0]

The shifted half of the grid is ``-123, -100, -79, -61, -45, -31, -18, -6,
5, 17, 29, 42, 57, 73, 93, 117``, so elements 0, 16, 1, 17 are ``0.5 * 1 *
(17, 29, -61, -31)``, and element 2 (index 0 of word 1) is ``0.5 * -123``.
Sub-block 1 is all zero words: ``ls = 0``, scale -127 on the base half,
every index 0 (value -127)::

    >>> y[[0, 16, 1, 17]].tolist(), float(y[2])
    ([8.5, 14.5, -30.5, -15.5], -61.5)
    >>> float(y[32]) == 0.5 * -127 * -127
    True

Upstream: ik_llama.cpp ``ggml/src/iqk/iqk_quantize.cpp``
``quantize_row_iq4_kss_impl``, ``prune_iq4ks``, ``scramble_table``,
``dequantize_row_iq4_kss``; ``ggml/src/ggml-common.h`` ``block_iq4_kss``,
``iq4k_values`` @ 8337e4cd (formats introduced in ik#89, quantizer tweaks in
ik#642).
"""

from __future__ import annotations

import numpy as np

from ._format import BlockFormat, Field, Invalid
from ._iqk import (IEEE, IQ4K, QK_K, c_sum, f32_meta, helper_weights, imatrix_element_weights, join_rows, meta_f32,
                   nonfinite_row_scales, row_scaled_dequantize, row_scaled_dot, running_max, signed_max, split_rows,
                   superblock_sigma2)
from ._numerics import F32, nearest_int
from .tables.ik_llama import IQ4K_VALUES

BLOCK = 32          # elements per sub-block (one 7-bit scale + shift bit)
WORDS = BLOCK // 4  # uint16 words per sub-block
NTRY = 7

FORMAT = BlockFormat(
    name="iq4_kss", origin="ik_llama", type_id=146, block_size=QK_K,
    fields=(Field("qs", "u16", QK_K // 4,
                  "words w[8b+k] of sub-block b (C: uint32_t qs[32]): bits 1-15 = 15-bit code of 4 even-parity "
                  "nibbles, bit 0 = bit k of the sub-block's scale/shift byte"),),
    vec_dot_format="q8_k",
    upstream="ik_llama.cpp ggml/src/iqk/iqk_quantize.cpp quantize_row_iq4_kss_impl, prune_iq4ks, scramble_table, "
             "dequantize_row_iq4_kss; ggml/src/ggml-common.h block_iq4_kss, iq4k_values @ 8337e4cd",
    row_meta_size=4,
    imatrix="accepted",
)

#: The element each nibble of a sub-block stands for: word k holds elements
#: 2k, 2k+16, 2k+1, 2k+17 in nibbles 0..3 (IQ4_NL's byte pairing, two bytes a word).
GROUP_ORDER = np.array([e for k in range(WORDS) for e in (2 * k, 2 * k + 16, 2 * k + 1, 2 * k + 17)])
_POPCOUNT = np.array([bin(i).count("1") for i in range(16)], dtype=np.int64)
_FLT_MAX = F32(np.finfo(np.float32).max)


# --------------------------------------------------------------------------- the 15-bit code

def encode_word(v: np.ndarray) -> np.ndarray:
    """The 15-bit code ``c`` of a 16-bit nibble word ``v`` of even popcount:
    ``c ^ (c << 1) == v``, i.e. bit b of ``c`` is the XOR of bits 0..b of
    ``v`` (a prefix XOR). ik_llama.cpp's ``scramble_table()[v & 0x7fff]``
    finds the same ``c`` by brute force."""
    c = np.asarray(v).astype(np.uint32)
    c ^= c << np.uint32(1)
    c ^= c << np.uint32(2)
    c ^= c << np.uint32(4)
    c ^= c << np.uint32(8)
    return (c & np.uint32(0x7FFF)).astype(np.uint16)


def decode_word(w: np.ndarray) -> np.ndarray:
    """The 16-bit nibble word of a stored word: ``a = w & 0xfffe; a ^ (a >> 1)``."""
    a = np.asarray(w, dtype=np.uint16) & np.uint16(0xFFFE)
    return a ^ (a >> np.uint16(1))


# --------------------------------------------------------------------------- quantize

def _prune(idx: np.ndarray, shift: int, x: np.ndarray, w: np.ndarray, dl: np.ndarray) -> np.ndarray:
    """``prune_iq4ks`` on every group of 4 nibbles at once.

    ``idx``, ``x``, ``w``: ``(..., 8, 4)`` (nibble order), ``dl``: ``(...)``.
    A group whose 4 nibbles have an odd number of set bits gets exactly one
    nibble changed by -2..+2 to a value of the other popcount parity: the
    change with the least weighted increase ``w_j*(diff1^2 - diff0^2)``,
    ``diff = dl*value - x_j``, the first on ties (nibble 0 first, then the
    smaller candidate). ``diff0`` reads the *unshifted* grid even on the
    shifted half (as ik_llama.cpp does)."""
    half = IQ4K_VALUES[16 * shift:16 * shift + 16].astype(F32)
    base = IQ4K_VALUES[:16].astype(F32)
    odd = (_POPCOUNT[idx].sum(axis=-1) & 1).astype(bool)
    if not odd.any():
        return idx
    dlg = dl[..., None, None]
    with np.errstate(**IEEE):
        diff0 = dlg * base[idx] - x
        d0sq = diff0 * diff0
        scores, cands = [], []
        for j in range(4):
            q = idx[..., j]
            for delta in (-2, -1, 1, 2):
                qq = q + delta
                ok = (qq >= 0) & (qq <= 15)
                qq = np.clip(qq, 0, 15)
                ok &= ((_POPCOUNT[qq] - _POPCOUNT[q]) & 1).astype(bool)
                diff1 = dlg[..., 0] * half[qq] - x[..., j]
                score = w[..., j] * (diff1 * diff1 - d0sq[..., j])
                scores.append(np.where(ok & (score < _FLT_MAX), score, np.inf))
                cands.append(qq)
    scores = np.stack(scores, axis=-1)
    cands = np.stack(cands, axis=-1)
    best = np.argmin(scores, axis=-1)
    found = odd & np.isfinite(np.take_along_axis(scores, best[..., None], axis=-1)[..., 0])
    which = best // 4
    newq = np.take_along_axis(cands, best[..., None], axis=-1)[..., 0]
    out = idx.copy()
    for j in range(4):
        out[..., j] = np.where(found & (which == j), newq, out[..., j])
    return out


def _weights(x: np.ndarray, imatrix: np.ndarray | None) -> np.ndarray:
    """Element weights ``(nrows, nsb, 8, 32)``: ``x^2`` without an imatrix,
    ``qw*sqrtf(sigma2 + x^2)`` with one (sigma2 = 2*sum(x^2)/256 per super-block)."""
    nrows, n = x.shape
    xb = x.reshape(nrows, n // QK_K, QK_K // BLOCK, BLOCK)
    qw = helper_weights(x, imatrix, BLOCK)
    with np.errstate(**IEEE):
        if qw is None:
            return xb * xb
        sigma2 = superblock_sigma2(x.reshape(nrows, n // QK_K, QK_K), 2.0)
        return imatrix_element_weights(qw.reshape(xb.shape), xb, sigma2[..., None])


def _quantize_groups(al: np.ndarray, shift: int, xg: np.ndarray, wg: np.ndarray, dl: np.ndarray):
    """Nearest indices on one half of the grid, pruned to even parity, and
    their grid values (float32), in group order ``(..., 8, 4)``."""
    idx = _prune(IQ4K.nearest(al, shift), shift, xg, wg, dl)
    return idx, IQ4K_VALUES[16 * shift + idx].astype(F32)


def _sweep(xg: np.ndarray, wg: np.ndarray, vmax: np.ndarray) -> np.ndarray:
    """Pass 1: each sub-block's float scale from the ntry sweep (the shift
    found here is not kept)."""
    shape = xg.shape[:-2]
    x2, w2 = xg.reshape(shape + (BLOCK,)), wg.reshape(shape + (BLOCK,))
    with np.errstate(**IEEE):
        d = -vmax / F32(IQ4K_VALUES[0])
        best = np.zeros(shape, dtype=F32)
        for itry in range(-NTRY, NTRY + 1):
            for shift in (0, 1):
                inv = F32(itry + int(IQ4K_VALUES[16 * shift])) / vmax
                this_d = F32(1) / inv
                al = inv[..., None, None] * xg
                sums = []
                for sign in (al, -al):
                    _, q = _quantize_groups(sign, shift, xg, wg, this_d)
                    q = q.reshape(x2.shape)
                    sums.append((c_sum(w2 * q * x2), c_sum(w2 * q * q)))
                for sumqx, sumq2 in sums:  # +al, then -al: a later candidate must be strictly better
                    better = (sumq2 > 0) & (sumqx * sumqx > best * sumq2)
                    d = np.where(better, sumqx / sumq2, d).astype(F32)
                    best = np.where(better, d * sumqx, best).astype(F32)
    return d


def quantize(x: np.ndarray, imatrix: np.ndarray | None = None) -> np.ndarray:
    nrows, n = x.shape
    nsb = n // QK_K
    shape = (nrows, nsb, QK_K // BLOCK)
    xb = x.reshape(shape + (BLOCK,))
    wb = _weights(x, imatrix)
    xg = xb[..., GROUP_ORDER].reshape(shape + (WORDS, 4))
    wg = wb[..., GROUP_ORDER].reshape(shape + (WORDS, 4))

    # pass 1: a float scale per sub-block
    amax, vmax = signed_max(xb)
    empty = amax < F32(1e-16)
    with np.errstate(**IEEE):
        scales = np.where(empty, F32(0), _sweep(xg, wg, np.where(empty, F32(1), vmax))).astype(F32)
        amax_scale = running_max(np.abs(scales).reshape(nrows, -1))
        d = amax_scale / F32(127)

        # pass 2: odd 7-bit scales against the row scale, the shift decided by the weighted error
        inv = F32(1) / d
        l = nearest_int(F32(0.5) * (inv[:, None, None] * scales + F32(127)))
        l = (np.clip(l, 0, 127) << 1) - 127
        dl = d[:, None, None] * l.astype(F32)
        idl = F32(1) / dl
        al = idl[..., None, None] * xg
        idx_p, q_p = _quantize_groups(al, 0, xg, wg, dl)
        idx_m, q_m = _quantize_groups(al, 1, xg, wg, dl)
        flat = shape + (BLOCK,)
        x2, w2 = xg.reshape(flat), wg.reshape(flat)
        err_p = x2 - dl[..., None] * q_p.reshape(flat)
        err_m = x2 - dl[..., None] * q_m.reshape(flat)
        shifted = c_sum(w2 * err_m * err_m) < c_sum(w2 * err_p * err_p)
        idx = np.where(shifted[..., None, None], idx_m, idx_p)
        q = (IQ4K_VALUES.astype(np.int64)[16 * shifted[..., None, None] + idx] * l[..., None, None]).astype(F32)
        q = q.reshape(flat)
        sumqx = c_sum((w2 * q * x2).reshape(nrows, -1))
        sumq2 = c_sum((w2 * q * q).reshape(nrows, -1))
        d_final = np.where(sumq2 > 0, (sumqx / sumq2) * F32(1.01), d).astype(F32)

    nibbles = idx.astype(np.uint32)
    words = nibbles[..., 0] | nibbles[..., 1] << 4 | nibbles[..., 2] << 8 | nibbles[..., 3] << 12
    scale_bits = ((l + 127) | shifted).astype(np.uint32)
    bit0 = (scale_bits[..., None] >> np.arange(WORDS, dtype=np.uint32)) & np.uint32(1)
    stored = (encode_word(words).astype(np.uint32) << np.uint32(1)) | bit0
    blocks = FORMAT.empty_blocks(nrows, nsb)
    zero_row = d == 0  # every sub-block was all zeros: d = 0 and nothing written
    blocks["qs"] = np.where(zero_row[:, None, None, None], 0, stored).reshape(nrows, nsb, -1).astype(np.uint16)
    return join_rows(FORMAT, f32_meta(np.where(zero_row, F32(0), d_final)), blocks)


# --------------------------------------------------------------------------- dequantize, dot

def sub_block_codes(blocks: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per sub-block: the signed odd scale ``(ls & 254) - 127``, the shift
    ``ls & 1`` and the 32 grid indices in element order ``(..., 8, 32)``."""
    w = blocks["qs"].reshape(blocks.shape + (QK_K // BLOCK, WORDS))
    ls = ((w & 1).astype(np.int64) << np.arange(WORDS)).sum(axis=-1)
    v = decode_word(w).astype(np.int64)
    nib = np.stack([(v >> (4 * i)) & 15 for i in range(4)], axis=-1).reshape(w.shape[:-1] + (BLOCK,))
    idx = np.empty_like(nib)
    idx[..., GROUP_ORDER] = nib
    return (ls & 254) - 127, ls & 1, idx


def dequantize(q: np.ndarray) -> np.ndarray:
    meta, blocks = split_rows(FORMAT, q)
    scale, shift, idx = sub_block_codes(blocks)
    return row_scaled_dequantize(meta_f32(meta), scale, IQ4K_VALUES[16 * shift[..., None] + idx])


def vec_dot(wq: np.ndarray, aq: np.ndarray) -> np.ndarray:
    meta, blocks = split_rows(FORMAT, wq)
    scale, shift, idx = sub_block_codes(blocks)
    return row_scaled_dot(meta_f32(meta), scale, IQ4K_VALUES[16 * shift[..., None] + idx], aq)


def validate(q: np.ndarray) -> list[Invalid]:
    meta, _ = split_rows(FORMAT, q)
    return nonfinite_row_scales(meta, "f32")
