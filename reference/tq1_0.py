"""TQ1_0 (ggml type 34): ternary, 256 elements, five trits per byte, one
fp16 scale. 1.6875 bits per weight.

Block (54 bytes)::

    offset 0    qs[48]  uint8   bytes 0-31:  byte m holds elements m + 32n,       n = 0..4
                                bytes 32-47: byte 32+m holds elements 160 + m + 16n, n = 0..4
    offset 48   qh[4]   uint8   byte m holds elements 240 + m + 4n,          n = 0..3
    offset 52   d       fp16    scale
    element = (t - 1) * d,   t = trit n of its byte, in {0, 1, 2}

A byte stores its trits as a fixed-point fraction of 3**5 = 243: with
``v = t_0*81 + t_1*27 + t_2*9 + t_3*3 + t_4`` (the first element most
significant; ``qh`` bytes have ``t_4 = 0``) the byte is ``ceil(v*256/243)``
= ``(v*256 + 242) / 243``. Trit n is read back as the top base-3 digit of
the byte times 3**n modulo 256: ``t_n = ((uint8_t)(byte * 3**n) * 3) >> 8``.
Every byte value decodes (to some trits); ``TRIT_BYTE`` / ``TRIT_POW3`` give,
for element j, its byte (0-47 in ``qs``, 48-51 in ``qh``) and 3**n.

Quantize (``quantize_row_tq1_0_ref``; ggml ignores an importance matrix)::

    d = max |x_j|,  t_j = lroundf(x_j / d) + 1   (see _ternary)

Dot product with Q8_K (``ggml_vec_dot_tq1_0_q8_K_generic``), per block::

    sum  = sum_j (t_j - 1) * a.qs[j]                (exact)
    term = (float)sum * (fp16(d) * a.d)

then the canonical 16-lane reduction of the terms.

Validation: ``d`` must be finite.

Upstream: ggml ``src/ggml-quants.c`` ``quantize_row_tq1_0_ref``,
``dequantize_row_tq1_0``; ``src/ggml-cpu/quants.c``
``ggml_vec_dot_tq1_0_q8_K_generic`` @ d99724f2.
"""

from __future__ import annotations

import numpy as np

from . import q8_k
from ._format import BlockFormat, Field, Invalid, nonfinite_f16
from ._numerics import F32, canonical_dot, f16_bits_to_f32, f32_to_f16_bits
from ._ternary import IEEE, QK_K, scale_and_trits

FORMAT = BlockFormat(
    name="tq1_0", origin="ggml", type_id=34, block_size=QK_K,
    fields=(Field("qs", "u8", 48, "5 trits per byte (base 3, scaled by 256/243): byte m < 32 holds elements "
                                  "m+32n, byte 32+m holds elements 160+m+16n, n = 0..4"),
            Field("qh", "u8", 4, "4 trits per byte (as qs, last trit 0): byte m holds elements 240+m+4n, n = 0..3"),
            Field("d", "f16", 1, "scale; element = (trit - 1) * d")),
    vec_dot_format="q8_k",
    upstream="ggml src/ggml-quants.c quantize_row_tq1_0_ref, dequantize_row_tq1_0; "
             "src/ggml-cpu/quants.c ggml_vec_dot_tq1_0_q8_K_generic @ d99724f2",
)


def _element_places() -> tuple[np.ndarray, np.ndarray]:
    """Element j's byte in ``qs`` followed by ``qh`` (0..51) and its trit n in that byte."""
    j = np.arange(QK_K)
    byte = np.where(j < 160, j % 32, np.where(j < 240, 32 + (j - 160) % 16, 48 + (j - 240) % 4))
    trit = np.where(j < 160, j // 32, np.where(j < 240, (j - 160) // 16, (j - 240) // 4))
    return byte.astype(np.int64), trit.astype(np.int64)


TRIT_BYTE, _TRIT_N = _element_places()
#: 3**n for element j's trit n: ``t = ((byte * TRIT_POW3[j]) % 256 * 3) >> 8``.
TRIT_POW3 = 3 ** _TRIT_N

_POW3 = np.array([1, 3, 9, 27, 81], dtype=np.uint8)[:, None]


def _pack(trits: np.ndarray, count: int, shift_last: bool) -> np.ndarray:
    """Trits ``(..., ntrits, count)``, the first most significant -> bytes ``(..., count)``."""
    v = np.zeros(trits.shape[:-2] + (count,), dtype=np.int32)
    for n in range(trits.shape[-2]):
        v = v * 3 + trits[..., n, :]
    if shift_last:
        v = v * 3
    return ((v * 256 + 242) // 243).astype(np.uint8)


def quantize(x: np.ndarray, imatrix: np.ndarray | None = None) -> np.ndarray:
    """Rows ``(nrows, n)`` -> bytes; the importance matrix is ignored (as ggml)."""
    nrows, n = x.shape
    d, t = scale_and_trits(x.reshape(nrows, n // QK_K, QK_K))
    blocks = FORMAT.empty_blocks(nrows, n // QK_K)
    lead = t.shape[:-1]
    blocks["qs"] = np.concatenate([_pack(t[..., :160].reshape(lead + (5, 32)), 32, False),
                                   _pack(t[..., 160:240].reshape(lead + (5, 16)), 16, False)], axis=-1)
    blocks["qh"] = _pack(t[..., 240:].reshape(lead + (4, 4)), 4, True)
    blocks["d"] = f32_to_f16_bits(d)
    return FORMAT.to_bytes(blocks)


def _scaled_bytes(blocks: np.ndarray) -> np.ndarray:
    """``(uint8_t)(byte * 3**n)`` of every element, in element order, ``(..., 256)``."""
    qs, qh = blocks["qs"], blocks["qh"]
    lead = blocks.shape
    return np.concatenate([(qs[..., None, :32] * _POW3).reshape(lead + (160,)),
                           (qs[..., None, 32:] * _POW3).reshape(lead + (80,)),
                           (qh[..., None, :] * _POW3[:4]).reshape(lead + (16,))], axis=-1)


def trits(blocks: np.ndarray) -> np.ndarray:
    """The trits ``t`` (0, 1, 2; uint16) of structured blocks, ``(..., 256)``."""
    return (_scaled_bytes(blocks).astype(np.uint16) * np.uint16(3)) >> np.uint16(8)


#: Blocks decoded per batch: the batch's temporaries stay in cache (no effect on the bits).
BATCH_BLOCKS = 512


def dequantize(q: np.ndarray) -> np.ndarray:
    b = FORMAT.blocks(q).reshape(-1)
    out = np.empty((b.shape[0], QK_K), dtype=F32)
    with np.errstate(**IEEE):
        for start in range(0, b.shape[0], BATCH_BLOCKS):
            batch = b[start:start + BATCH_BLOCKS]
            t = _scaled_bytes(batch).astype(np.uint16)
            t *= np.uint16(3)
            t >>= np.uint16(8)
            values = out[start:start + BATCH_BLOCKS]
            values[...] = t
            values -= F32(1)  # (float)(t - 1): small integers, exact either way
            values *= f16_bits_to_f32(batch["d"])[:, None]
    return out.reshape(q.shape[0], -1)


def vec_dot(wq: np.ndarray, aq: np.ndarray) -> np.ndarray:
    w, a = FORMAT.blocks(wq), q8_k.FORMAT.blocks(aq[None, :])
    total = np.einsum("rbj,rbj->rb", trits(w).astype(np.int32) - 1, a["qs"].astype(np.int32))
    with np.errstate(**IEEE):
        return canonical_dot(total.astype(F32) * (f16_bits_to_f32(w["d"]) * a["d"]))


def validate(q: np.ndarray) -> list[Invalid]:
    return nonfinite_f16(FORMAT.blocks(q), "d")
