"""Bit packing shared by the 32-element legacy formats (Q4_0 ... Q5_1).

Byte j of ``qs`` holds element j in its low nibble and element j + 16 in its
high nibble; for the 5-bit formats, bit 4 of element j is bit j of the
little-endian uint32 ``qh``.
"""

from __future__ import annotations

import numpy as np

from ._numerics import F32, inverse_or_zero, signed_absmax, trunc_to_int, wrap_int8

HALF = 16


def pack_nibbles(q: np.ndarray) -> np.ndarray:
    """``qs[j] = (q[j] & 15) | (q[j+16] & 15) << 4`` over the last axis (32 -> 16)."""
    q = q.astype(np.uint8)
    return (q[..., :HALF] & 0x0F) | ((q[..., HALF:] & 0x0F) << 4)


def unpack_nibbles(qs: np.ndarray) -> np.ndarray:
    """Inverse of :func:`pack_nibbles`: 16 bytes -> 32 values 0..15 (int32)."""
    qs = qs.astype(np.int32)
    return np.concatenate([qs & 0x0F, qs >> 4], axis=-1)


_BIT = np.arange(32, dtype=np.uint32)


def pack_high_bits(q: np.ndarray) -> np.ndarray:
    """``qh`` bit j = bit 4 of element j, for the 32 elements of the last axis."""
    hi = ((q.astype(np.uint32) >> 4) & 1) << _BIT
    return np.bitwise_or.reduce(hi, axis=-1).astype(np.uint32)


def unpack_high_bits(qh: np.ndarray) -> np.ndarray:
    """Bit 4 of each of the 32 elements, as 0 or 16 (int32)."""
    return (((qh.astype(np.uint32)[..., None] >> _BIT) & 1) << 4).astype(np.int32)


def signed_max_codes(xb: np.ndarray, half: int) -> tuple[np.ndarray, np.ndarray]:
    """The reference quantizer of Q4_0 (``half`` = 8) and Q5_0 (16), per block::

        d   = max / -half           (max: the signed element of largest magnitude)
        q_j = min(2*half - 1, (int8_t)(x_j*id + half + 0.5))

    so that ``max`` itself maps to code 0. Returns the float32 ``d`` and the codes.
    """
    _, vmax = signed_absmax(xb)
    d = vmax / F32(-half)
    scaled = xb * inverse_or_zero(d)[..., None]  # rounded before the add: no FMA
    return d, np.minimum(2 * half - 1, wrap_int8(trunc_to_int(scaled + F32(half + 0.5))))
