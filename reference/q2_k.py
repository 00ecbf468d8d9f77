"""Q2_K (ggml type 10): 256-element super-blocks of 16 sub-blocks of 16,
2-bit codes, a 4-bit scale and a 4-bit min per sub-block, fp16 ``d`` and
``dmin``. 2.625 bits per weight.

Block (84 bytes)::

    offset 0    scales[16] uint8   sub-block j (elements 16j .. 16j+15):
                                   low nibble sc_j, high nibble m_j
    offset 16   qs[64]     uint8   2-bit codes q: element 128h + 32s + l
                                   at bits 2s of byte 32h + l (TWO_BIT)
    offset 80   d          fp16    scale of the sub-block scales
    offset 82   dmin       fp16    scale of the sub-block mins
    element = (d * sc_j) * q - (dmin * m_j)

Quantize without an importance matrix (``quantize_row_q2_K_ref``), per
super-block:

1. Every sub-block: ``(scale_j, min_j, L) = make_qkx2_quants(16, nmax=3,
   weights |x|, rmin=-0.5, rdelta=0.1, nstep=15, use_mad)``: the (scale,
   min) grid search minimizing the |x|-weighted *absolute* error.
2. ``max_scale``/``max_min`` = the largest scale/min (from 0, strict ``>``).
   If ``max_scale > 0``: ``sc_j = nearest_int((15/max_scale) * scale_j)``
   (no clamp; stored as the C's ``uint8_t``), ``d = max_scale/15``, else
   ``sc_j = 0``, ``d = 0``. The mins likewise into the high nibbles
   (``|= m_j << 4``) and ``dmin``.
3. Requantize with the *stored* fp16 values: ``dl = d * sc_j``; where ``dl
   != 0``, ``q = clamp(nearest_int((x + dmin*m_j) / dl), 0, 3)`` (a
   division, not a reciprocal); where ``dl == 0`` the codes of step 1 stay.

With an importance matrix ``qw`` (``quantize_row_q2_K_impl``), per
super-block: ``sigma2 = sum(x^2)/256`` (no factor 2, unlike Q3_K..Q5_K),
weights ``w = qw * sqrt(sigma2 + x^2)``; step 1 with ``make_qkx3_quants(16,
3, w, -0.9, 0.05, 36)`` (squared error); the 16 scales and the 16 mins are
each quantized with ``make_qp_quants(16, nmax=15, weights sw_j = sum of the
sub-block's w)``, which gives ``d``/``dmin`` and the nibbles directly; then
step 3 with the stored fp16 ``d``/``dmin``.

Dot product with Q8_K, per super-block (exact integers)::

    isum = sum_j sc_j * sum_{16 elements} q * a.qs
    msum = sum_j m_j * a.bsums[j]
    term = (fp16(d) * a.d) * (float)isum - (fp16(dmin) * a.d) * (float)msum

as ggml's ``sumf += dall * isum - dmin * summs``; the terms of the
super-blocks are added in the canonical 16-lane order.

Upstream: ggml ``src/ggml-quants.c`` ``quantize_row_q2_K_ref``,
``quantize_row_q2_K_impl``, ``dequantize_row_q2_K``;
``src/ggml-cpu/quants.c`` ``ggml_vec_dot_q2_K_q8_K_generic`` @ d99724f2.
"""

from __future__ import annotations

import numpy as np

from . import q8_k
from ._format import BlockFormat, Field, Invalid, nonfinite_f16
from ._kquants import IEEE, QK_K, TWO_BIT, CodeLayout, dot_with_q8_k, quantize_rows, requantize, running_max
from ._numerics import F32, f16_bits_to_f32, f32_to_f16_bits, nearest_int, sequential_sum
from ._search import make_qkx2_quants, make_qp_quants

FORMAT = BlockFormat(
    name="q2_k", origin="ggml", type_id=10, block_size=QK_K,
    fields=(Field("scales", "u8", 16, "sub-block j (elements 16j..16j+15): low nibble = scale sc_j, "
                                      "high nibble = min m_j"),
            Field("qs", "u8", 64, "2-bit codes q: element 128h+32s+l at bits 2s of byte 32h+l"),
            Field("d", "f16", 1, "scale of the sub-block scales"),
            Field("dmin", "f16", 1, "scale of the sub-block mins; element = d*sc_j*q - dmin*m_j")),
    vec_dot_format="q8_k",
    upstream="ggml src/ggml-quants.c quantize_row_q2_K_ref, quantize_row_q2_K_impl, dequantize_row_q2_K; "
             "src/ggml-cpu/quants.c ggml_vec_dot_q2_K_q8_K_generic @ d99724f2",
    imatrix="accepted",
)

NSUB, SUB = 16, 16
#: The 2-bit codes: all in ``qs``.
CODES = CodeLayout((("qs", TWO_BIT, 0),))


def _reference_scales(xb: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Steps 1-2 without an imatrix: (scale bytes, d, dmin, codes) before requantizing."""
    scales, mins, codes = make_qkx2_quants(xb, 3, np.abs(xb), -0.5, 0.1, 15, use_mad=True)
    max_scale = running_max(scales)
    max_min = running_max(mins)
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        ls = nearest_int((F32(15) / max_scale)[:, None] * scales) & 0xFF
        lm = (nearest_int((F32(15) / max_min)[:, None] * mins) << 4) & 0xFF
    byte = np.where((max_scale > 0)[:, None], ls, 0)
    byte = np.where((max_min > 0)[:, None], byte | lm, byte)
    d = np.where(max_scale > 0, max_scale / F32(15), F32(0))
    dmin = np.where(max_min > 0, max_min / F32(15), F32(0))
    return byte, d, dmin, codes


def _imatrix_scales(xs: np.ndarray, xb: np.ndarray, qw: np.ndarray):
    sigma2 = sequential_sum(xs * xs) / F32(QK_K)
    weights = qw.reshape(xb.shape) * np.sqrt(sigma2[:, None, None] + xb * xb)
    sw = sequential_sum(weights)
    scales, mins, codes = make_qkx2_quants(xb, 3, weights, -0.9, 0.05, 36)  # = make_qkx3_quants
    d, ls = make_qp_quants(scales, 15, sw)
    dmin, lm = make_qp_quants(mins, 15, sw)
    byte = (ls.astype(np.int32) | (lm.astype(np.int32) << 4)) & 0xFF
    return byte, d, dmin, codes


def _superblocks(xs: np.ndarray, qw: np.ndarray | None) -> np.ndarray:
    xb = xs.reshape(-1, NSUB, SUB)
    if qw is None:
        byte, d, dmin, codes = _reference_scales(xb)
    else:
        byte, d, dmin, codes = _imatrix_scales(xs, xb, qw)
    blocks = np.zeros(xs.shape[0], dtype=FORMAT.dtype)
    blocks["d"] = f32_to_f16_bits(d)
    blocks["dmin"] = f32_to_f16_bits(dmin)
    blocks["scales"] = byte
    dl = f16_bits_to_f32(blocks["d"])[:, None] * (byte & 0xF).astype(F32)
    ml = f16_bits_to_f32(blocks["dmin"])[:, None] * (byte >> 4).astype(F32)
    codes = requantize(xb, dl, ml, 0, 3, codes)
    CODES.pack(blocks, codes.reshape(-1, QK_K))
    return blocks


def quantize(x: np.ndarray, imatrix: np.ndarray | None = None) -> np.ndarray:
    return quantize_rows(FORMAT, x, imatrix, _superblocks)


def dequantize(q: np.ndarray) -> np.ndarray:
    with np.errstate(**IEEE):
        return _dequantize(q)


def _dequantize(q: np.ndarray) -> np.ndarray:
    b = FORMAT.blocks(q)
    sc = b["scales"]
    dl = f16_bits_to_f32(b["d"])[..., None] * (sc & 0xF).astype(F32)
    ml = f16_bits_to_f32(b["dmin"])[..., None] * (sc >> 4).astype(F32)
    values = CODES.values(b).reshape(sc.shape + (SUB,)).astype(F32)
    values *= dl[..., None]  # (d * sc) * q - (dmin * m), in place
    values -= ml[..., None]
    return values.reshape(q.shape[0], -1)


def vec_dot(wq: np.ndarray, aq: np.ndarray) -> np.ndarray:
    with np.errstate(**IEEE):
        return _vec_dot(wq, aq)


def _vec_dot(wq: np.ndarray, aq: np.ndarray) -> np.ndarray:
    w, a = FORMAT.blocks(wq), q8_k.FORMAT.blocks(aq[None, :])
    codes = CODES.values(w).astype(np.int32).reshape(w.shape + (NSUB, SUB))
    sub = np.einsum("rbjl,rbjl->rbj", codes, a["qs"].astype(np.int32).reshape(a.shape + (NSUB, SUB)))
    isum = (sub * (w["scales"] & 0xF)).sum(axis=-1)
    msum = (a["bsums"].astype(np.int32) * (w["scales"] >> 4)).sum(axis=-1)
    return dot_with_q8_k(w["d"], a["d"], isum, w["dmin"], msum)


def validate(q: np.ndarray) -> list[Invalid]:
    return nonfinite_f16(FORMAT.blocks(q), "d", "dmin")
