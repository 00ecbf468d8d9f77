"""What MXFP4 and NVFP4 share: E2M1 codes, their 8-bit block scales, and the
nearest-code search.

* Codes: a 4-bit code indexes ``KVALUES_MXFP4`` (twice the E2M1 value, so
  the table holds integers); the scale conversions below return half the
  scale to make up for it.
* E8M0 (MXFP4's ``e``): a bare biased exponent. ``e8m0_half(e)`` =
  ``GGML_E8M0_TO_FP32_HALF(e)`` = 2**(e - 128) as a float32 bit pattern:
  ``0x00200000 << e`` for e < 2 (subnormal), else ``(e - 1) << 23``. Every
  byte decodes, 0xFF included (2**127), although OCP reads 0xFF as NaN and
  ``ggml_validate_row_data`` rejects it.
* UE4M3 (NVFP4's ``d[s]``): unsigned E4M3, bias 7. ``ue4m3_half(b)`` =
  ``ggml_ue4m3_to_fp32(b)``: 0 for b = 0x00 and 0x7F; else with ``exp =
  (b >> 3) & 15``, ``man = b & 7``: ``man * 2**-9`` if exp = 0, else ``(1 +
  man/8) * 2**(exp - 7)``; times 0.5. Bit 7 is ignored, so 0xFF decodes as
  0x7F's neighbour 240, not as 0. Every value is exact in float32.
* ``fp32_to_ue4m3(x)`` (``ggml_fp32_to_ue4m3``), for the scale ``amax/6``:
  0 unless ``x > 0``; x clamped to 448; below 2**-6: ``man = (int)(x*512 +
  0.5f)`` clamped to 7, 0 if < 1; otherwise the top 3 mantissa bits plus
  bit 19 (round half up on the magnitude, lower bits ignored), a carry
  moving into the exponent. Any biased exponent of 15 gives 0x7E (448):
  every x in [256, 448] encodes as 448, so codes 0x78..0x7D (256 .. 416)
  are decodable but never written.
* ``best_index_mxfp4(x, d)``: the first code ``i`` of the smallest
  ``fabsf(kvalues_mxfp4[i]*d - x)``, a strict ``<`` over i = 0..15 in order;
  code 8 ("-0") ties with code 0 and is never written.
* ``mxfp4_exponent(amax)``: ``amax > 0 ? (uint8_t)(floorf(log2f(amax)) - 2
  + 127) : 0``, without libm (see the function).

Upstream: ggml ``src/ggml-impl.h`` (``ggml_e8m0_to_fp32_half``,
``ggml_ue4m3_to_fp32``, ``ggml_fp32_to_ue4m3``), ``src/ggml-quants.c``
(``best_index_mxfp4``, ``quantize_row_mxfp4_ref``) @ d99724f2.
"""

from __future__ import annotations

import math

import numpy as np

from ._numerics import F32, trunc_to_int
from .tables.ggml import KVALUES_MXFP4

#: The 16 code values as float32 (the C converts the int8 entry to float).
KVALUES_MXFP4_F32 = KVALUES_MXFP4.astype(F32)


# --------------------------------------------------------------------------- E8M0

def _e8m0_half_table() -> np.ndarray:
    e = np.arange(256, dtype=np.uint32)
    bits = np.where(e < 2, np.uint32(0x00200000) << e, (e - np.uint32(1)) << np.uint32(23))
    return bits.astype(np.uint32).view(F32)


#: ``GGML_E8M0_TO_FP32_HALF(e)`` for every byte ``e``: 2**(e - 128).
E8M0_HALF = _e8m0_half_table()


def e8m0_half(e: np.ndarray) -> np.ndarray:
    """Half the scale an E8M0 byte stands for, float32."""
    return E8M0_HALF[np.asarray(e, dtype=np.uint8)]


# --------------------------------------------------------------------------- UE4M3

def _ue4m3_half_table() -> np.ndarray:
    b = np.arange(256)
    exp, man = (b >> 3) & 15, (b & 7).astype(np.float64)
    raw = np.where(exp == 0, man * 2.0**-9, (1 + man / 8) * np.exp2(exp - 7.0))
    raw[(b == 0) | (b == 0x7F)] = 0.0
    return (raw * 0.5).astype(F32)  # exact: at most 4 significant bits


#: ``ggml_ue4m3_to_fp32(b)`` for every byte ``b`` (half the scale).
UE4M3_HALF = _ue4m3_half_table()


def ue4m3_half(b: np.ndarray) -> np.ndarray:
    """Half the scale a UE4M3 byte stands for, float32."""
    return UE4M3_HALF[np.asarray(b, dtype=np.uint8)]


def fp32_to_ue4m3(x: np.ndarray) -> np.ndarray:
    """``ggml_fp32_to_ue4m3``: float32 -> UE4M3 byte (uint8)."""
    x = np.asarray(x, dtype=F32)
    positive = x > 0  # !(x > 0) -> 0, NaN included
    x = np.where(x > F32(448), F32(448), x).astype(F32)
    bits = x.view(np.uint32)
    exp = ((bits >> np.uint32(23)) & np.uint32(0xFF)).astype(np.int32) - 127 + 7
    man = ((bits >> np.uint32(20)) & np.uint32(7)).astype(np.int32)
    # subnormal UE4M3: (int)(x*512.0f + 0.5f), at most 7, below 1 -> 0
    sub = trunc_to_int(np.where(exp <= 0, x, F32(0)) * F32(512) + F32(0.5))
    sub = np.where(sub < 1, 0, np.minimum(sub, 7))
    # normal: top three mantissa bits plus bit 19, carrying into the exponent
    man = man + ((bits >> np.uint32(19)) & np.uint32(1)).astype(np.int32)
    carry = man > 7
    exp_r = exp + carry
    normal = np.where(exp_r >= 15, 0x7E, (exp_r << 3) | np.where(carry, 0, man))
    code = np.where(exp <= 0, sub, np.where(exp >= 15, 0x7E, normal))
    return np.where(positive, code, 0).astype(np.uint8)


# --------------------------------------------------------------------------- nearest code

def best_index_mxfp4(x: np.ndarray, d: np.ndarray) -> np.ndarray:
    """``best_index_mxfp4`` of every element of ``x`` against the half-scale
    ``d`` (broadcast against ``x``): the C's loop over the 16 codes, a code
    replacing the best so far only if its error is strictly smaller."""
    x = np.asarray(x, dtype=F32)
    d = np.asarray(d, dtype=F32)
    best = np.zeros(np.broadcast_shapes(x.shape, d.shape), dtype=np.uint8)
    best_err = np.abs(KVALUES_MXFP4_F32[0] * d - x)
    for i in range(1, 16):
        err = np.abs(KVALUES_MXFP4_F32[i] * d - x)
        better = err < best_err
        best[better] = i
        np.copyto(best_err, err, where=better)
    return best


# --------------------------------------------------------------------------- MXFP4's exponent

def _log2_round_up_counts() -> np.ndarray:
    """For each binade ``[2**E, 2**(E+1))`` of positive float32 (E = -149 ..
    127), how many of its largest floats have a correctly rounded float32
    log2 equal to E + 1.

    For x = 2**k * (1 - m*r) (the m-th float below 2**k, r its relative
    spacing: 2**-24, or 2**(-149-k) where those floats are subnormal),
    log2 x = k - delta with delta = -log2(1 - m*r); it rounds to k iff delta
    is below half the gap ``h`` from k to the next float32 below k, i.e. iff
    ``m < -expm1(-h*ln 2)/r``. k = 0 never rounds up (log2 of x < 1 is a
    representable non-zero float's neighbourhood, never 0)."""
    counts = np.zeros(277, dtype=np.int64)
    for E in range(-149, 128):
        k = E + 1
        if k == 0:
            continue
        gap = float(F32(k)) - float(np.nextafter(F32(k), F32(-np.inf)))
        r = 2.0**-24 if k - 1 >= -126 else 2.0**(-149 - k)
        bound = -math.expm1(-(gap / 2) * math.log(2)) / r
        frac = bound - math.floor(bound)
        assert 1e-6 < frac < 1 - 1e-6, (E, bound)  # far from a tie: float64 decides it
        counts[E + 149] = math.floor(bound)
    return counts


def _exact_floor_log2(amax: np.ndarray) -> np.ndarray:
    """floor(log2(amax)) of positive float32 values, from the bits."""
    bits = amax.view(np.uint32)
    biased = (bits >> np.uint32(23)).astype(np.int32)
    mantissa = bits & np.uint32(0x7FFFFF)
    # a subnormal m * 2**-149: float32(m) is exact, its exponent is floor(log2 m)
    sub = ((mantissa.astype(F32).view(np.uint32) >> np.uint32(23)).astype(np.int32) - 127) - 149
    return np.where(biased > 0, biased - 127, sub)


#: Binade E of float32 rounds log2 up to E + 1 from these bits on (index E + 149):
#: the bits of 2**(E+1) minus the number of floats below it that round up.
def _log2_thresholds() -> np.ndarray:
    with np.errstate(over="ignore"):  # 2**128 is inf, whose bits follow the largest float
        powers = np.ldexp(np.ones(277, dtype=F32), np.arange(-148, 129)).astype(F32)
    return (powers.view(np.uint32).astype(np.int64) - _log2_round_up_counts()).astype(np.uint32)


LOG2_ROUNDS_UP_FROM = _log2_thresholds()


def floor_log2f(amax: np.ndarray) -> np.ndarray:
    """``floorf(log2f(amax))`` for positive finite float32, as int32, where
    ``log2f`` is the correctly rounded float32 log2: the exact exponent of
    ``amax``, plus one for the few largest floats of a binade whose log2
    rounds up to the next integer (a table, ``LOG2_ROUNDS_UP_FROM``)."""
    amax = np.ascontiguousarray(amax, dtype=F32)
    exponent = _exact_floor_log2(amax)
    threshold = LOG2_ROUNDS_UP_FROM[np.clip(exponent, -149, 127) + 149]
    return exponent + (amax.view(np.uint32) >= threshold)


def mxfp4_exponent(amax: np.ndarray) -> np.ndarray:
    """MXFP4's ``e`` byte for blocks of largest magnitude ``amax`` (>= 0, finite).

    ggml computes ``(uint8_t)(floorf(log2f(amax)) - 2 + 127)`` with libm's
    ``log2f``. The spec defines ``log2f`` as the correctly rounded float32
    log2, which glibc's ``log2f`` returns on every positive float32 (checked
    exhaustively), and evaluates it without libm: ``floor_log2f``. For the
    values just below a power of two that is not the exact exponent: the 44
    largest floats below 2**127 have log2f = 127.0 exactly, so their block
    gets the exponent of the next binade.

    The conversion to ``uint8_t`` of a negative float (``amax < 2**-125``)
    is undefined in C; x86-64, where ggml's files are made, truncates to
    int32 and keeps the low byte, and so does the spec: ``amax`` in
    [2**-126, 2**-125) gives e = 0xFF, which ggml's own validation rejects
    (those blocks decode to zeros times 2**127).
    """
    amax = np.asarray(amax, dtype=F32)
    positive = amax > 0
    e = (floor_log2f(np.where(positive, amax, F32(1))) - 2 + 127) & 0xFF
    return np.where(positive, e, 0).astype(np.uint8)
