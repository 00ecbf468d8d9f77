"""Q4_K (ggml type 12): 256-element super-blocks of 8 sub-blocks of 32,
4-bit codes, a 6-bit scale and a 6-bit min per sub-block, fp16 ``d`` and
``dmin``. 4.5 bits per weight.

Block (144 bytes)::

    offset 0    d           fp16    scale of the sub-block scales
    offset 2    dmin        fp16    scale of the sub-block mins
    offset 4    scales[12]  uint8   8 6-bit scales sc_j and 8 6-bit mins m_j
                                    (get_scale_min_k4):
                                      j < 4:  sc_j = b[j] & 63,   m_j = b[j+4] & 63
                                      j >= 4: sc_j = (b[j+4] & 15) | (b[j-4] >> 6) << 4
                                              m_j  = (b[j+4] >> 4) | (b[j] >> 6) << 4
    offset 16   qs[128]     uint8   4-bit codes q: element 64c + 32s + l at
                                    bits 4s of byte 32c + l (FOUR_BIT)
    element = (d * sc_j) * q - (dmin * m_j)      (sub-block j = element // 32)

Quantize without an importance matrix (``quantize_row_q4_K_ref``), per
super-block:

1. Every sub-block: ``av_x = sqrt(sum(x^2)/32)``, weights ``av_x + |x|``,
   ``(scale_j, min_j, L) = make_qkx2_quants(32, nmax=15, rmin=-1,
   rdelta=0.1, nstep=20)``: the weighted least-squares (scale, min) search.
2. ``max_scale``/``max_min`` = the largest scale/min (from 0, strict ``>``);
   ``sc_j = min(63, (uint8)nearest_int(63/max_scale * scale_j))`` (0 when
   ``max_scale`` is not > 0), ``m_j`` likewise; ``d = max_scale/63``,
   ``dmin = max_min/63``.
3. Requantize with the stored values: ``dl = fp16(d) * sc_j``; where ``dl
   != 0``, ``q = clamp(nearest_int((x + fp16(dmin) * m_j) / dl), 0, 15)``;
   where ``dl == 0`` the codes of step 1 stay.

With an importance matrix ``qw`` (``quantize_row_q4_K_impl``), per
super-block: ``sigma2 = 2*sum(x^2)/256``, weights ``w = qw * sqrt(sigma2 +
x^2)``, ``sw_j`` = sum of sub-block j's weights; step 1 with
``make_qkx3_quants(32, 15, w, -0.9, 0.05, 36)`` (= ``make_qkx2_quants`` for
explicit weights); the 8 scales and the 8 mins are each quantized with
``make_qp_quants(8, nmax=63, weights sw)``, which gives ``d``/``dmin`` and
``sc_j``/``m_j`` directly; then step 3. ggml packs ``make_qp_quants``'
``uint8_t`` codes without clamping them to 6 bits here (Q5_K clamps); a
code above 63 (possible only for a negative sub-block scale or min, i.e.
never from the search) would spill into neighbouring bits, and the spec
packs them exactly as the C does.

Dot product with Q8_K, per super-block (exact integers)::

    isum = sum_j sc_j * sum_{32 elements} q * a.qs
    msum = sum_{k<16} m_{k//2} * a.bsums[k]
    term = (fp16(d) * a.d) * (float)isum - (fp16(dmin) * a.d) * (float)msum

(ggml's generic code keeps ``isum`` in 8 int32 lanes, adds ``d * lane``
into 8 float sums and subtracts ``dmin * msum`` from a separate total; the
spec adds the exact integer first.) The terms are added in the canonical
16-lane order.

Upstream: ggml ``src/ggml-quants.c`` ``quantize_row_q4_K_ref``,
``quantize_row_q4_K_impl``, ``dequantize_row_q4_K``, ``get_scale_min_k4``;
``src/ggml-cpu/quants.c`` ``ggml_vec_dot_q4_K_q8_K_generic`` @ d99724f2.
"""

from __future__ import annotations

import numpy as np

from . import q8_k
from ._format import BlockFormat, Field, Invalid, nonfinite_f16
from ._kquants import (IEEE, FOUR_BIT, QK_K, CodeLayout, dot_with_q8_k, pack_scale_min_k4, quantize_rows,
                       requantize, running_max, unpack_scale_min_k4)
from ._numerics import F32, f16_bits_to_f32, f32_to_f16_bits, nearest_int, sequential_sum
from ._search import make_qkx2_quants, make_qp_quants

FORMAT = BlockFormat(
    name="q4_k", origin="ggml", type_id=12, block_size=QK_K,
    fields=(Field("d", "f16", 1, "scale of the sub-block scales"),
            Field("dmin", "f16", 1, "scale of the sub-block mins"),
            Field("scales", "u8", 12, "8 6-bit scales sc_j and 8 6-bit mins m_j (get_scale_min_k4)"),
            Field("qs", "u8", 128, "4-bit codes q: element 64c+32s+l at bits 4s of byte 32c+l; "
                                   "element = d*sc_j*q - dmin*m_j, j = element//32")),
    vec_dot_format="q8_k",
    upstream="ggml src/ggml-quants.c quantize_row_q4_K_ref, quantize_row_q4_K_impl, dequantize_row_q4_K; "
             "src/ggml-cpu/quants.c ggml_vec_dot_q4_K_q8_K_generic @ d99724f2",
    imatrix="accepted",
)

NSUB, SUB = 8, 32
#: The 4-bit codes: all in ``qs``.
CODES = CodeLayout((("qs", FOUR_BIT, 0),))


def sub_block_scales(xs: np.ndarray, qw: np.ndarray | None, nmax: int, ref_search: tuple[float, float, int],
                     clamp_imatrix_codes: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Steps 1-2 of Q4_K and Q5_K: ``(scale bytes (S, 12), d, dmin, codes
    (S, 8, 32))`` before requantizing. ``ref_search`` = (rmin, rdelta, nstep)
    of the search without an imatrix."""
    xb = xs.reshape(-1, NSUB, SUB)
    if qw is None:
        av_x = np.sqrt(sequential_sum(xb * xb) / F32(32))
        scales, mins, codes = make_qkx2_quants(xb, nmax, av_x[..., None] + np.abs(xb), *ref_search)
        max_scale = running_max(scales)
        max_min = running_max(mins)
        inv_scale = np.where(max_scale > 0, F32(63) / np.where(max_scale > 0, max_scale, F32(1)), F32(0))
        inv_min = np.where(max_min > 0, F32(63) / np.where(max_min > 0, max_min, F32(1)), F32(0))
        ls = np.minimum(63, nearest_int(inv_scale[:, None] * scales) & 0xFF)
        lm = np.minimum(63, nearest_int(inv_min[:, None] * mins) & 0xFF)
        d = max_scale / F32(63)
        dmin = max_min / F32(63)
    else:
        sigma2 = F32(2) * sequential_sum(xs * xs) / F32(QK_K)
        weights = qw.reshape(xb.shape) * np.sqrt(sigma2[:, None, None] + xb * xb)
        sw = sequential_sum(weights)
        scales, mins, codes = make_qkx2_quants(xb, nmax, weights, -0.9, 0.05, 36)  # = make_qkx3_quants
        d, ls = make_qp_quants(scales, 63, sw)
        dmin, lm = make_qp_quants(mins, 63, sw)
        if clamp_imatrix_codes:
            ls, lm = np.minimum(63, ls), np.minimum(63, lm)
    return pack_scale_min_k4(ls, lm), d, dmin, codes


def requantized_codes(blocks: np.ndarray, xs: np.ndarray, codes: np.ndarray, nmax: int) -> np.ndarray:
    """Step 3 of Q4_K and Q5_K: codes ``(S, 256)`` from the stored d, dmin, scales."""
    sc, m = unpack_scale_min_k4(blocks["scales"])
    dl = f16_bits_to_f32(blocks["d"])[:, None] * sc.astype(F32)
    ml = f16_bits_to_f32(blocks["dmin"])[:, None] * m.astype(F32)
    return requantize(xs.reshape(-1, NSUB, SUB), dl, ml, 0, nmax, codes).reshape(-1, QK_K)


def _superblocks(xs: np.ndarray, qw: np.ndarray | None) -> np.ndarray:
    packed, d, dmin, codes = sub_block_scales(xs, qw, 15, (-1.0, 0.1, 20), clamp_imatrix_codes=False)
    blocks = np.zeros(xs.shape[0], dtype=FORMAT.dtype)
    blocks["d"] = f32_to_f16_bits(d)
    blocks["dmin"] = f32_to_f16_bits(dmin)
    blocks["scales"] = packed
    CODES.pack(blocks, requantized_codes(blocks, xs, codes, 15))
    return blocks


def quantize(x: np.ndarray, imatrix: np.ndarray | None = None) -> np.ndarray:
    return quantize_rows(FORMAT, x, imatrix, _superblocks)


def scales_and_mins(blocks: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Decoded per-sub-block ``(d * sc_j, dmin * m_j)``, float32 ``(..., 8)`` each."""
    sc, m = unpack_scale_min_k4(blocks["scales"])
    return (f16_bits_to_f32(blocks["d"])[..., None] * sc.astype(F32),
            f16_bits_to_f32(blocks["dmin"])[..., None] * m.astype(F32))


def dequantize(q: np.ndarray) -> np.ndarray:
    with np.errstate(**IEEE):
        return _dequantize(q)


def _dequantize(q: np.ndarray) -> np.ndarray:
    b = FORMAT.blocks(q)
    dl, ml = scales_and_mins(b)
    values = CODES.values(b).reshape(b.shape + (NSUB, SUB)).astype(F32)
    values *= dl[..., None]  # (d * sc) * q - (dmin * m), in place
    values -= ml[..., None]
    return values.reshape(q.shape[0], -1)


def dot_terms(w: np.ndarray, a: np.ndarray, values: np.ndarray) -> np.ndarray:
    """Q4_K/Q5_K dot product from the unsigned codes ``values (rows, nb, 256)``."""
    sc, m = unpack_scale_min_k4(w["scales"])
    sub = np.einsum("rbjl,rbjl->rbj", values.reshape(w.shape + (NSUB, SUB)),
                    a["qs"].astype(np.int32).reshape(a.shape + (NSUB, SUB)))
    isum = (sub * sc).sum(axis=-1)
    msum = (a["bsums"].astype(np.int32) * np.repeat(m, 2, axis=-1)).sum(axis=-1)
    return dot_with_q8_k(w["d"], a["d"], isum, w["dmin"], msum)


def vec_dot(wq: np.ndarray, aq: np.ndarray) -> np.ndarray:
    with np.errstate(**IEEE):
        return _vec_dot(wq, aq)


def _vec_dot(wq: np.ndarray, aq: np.ndarray) -> np.ndarray:
    w, a = FORMAT.blocks(wq), q8_k.FORMAT.blocks(aq[None, :])
    return dot_terms(w, a, CODES.values(w).astype(np.int32))


def validate(q: np.ndarray) -> list[Invalid]:
    return nonfinite_f16(FORMAT.blocks(q), "d", "dmin")
