"""The arithmetic model every format module is written in.

All format arithmetic is IEEE binary32 with round-to-nearest-even, one
rounding per operation, evaluated in the order the C source writes it, and
never contracted into fused multiply-adds (ggml-base on x86-64 is built
without FMA, which is what makes its files reproducible; formats-ggml.md
§0.1). NumPy float32 ufuncs give exactly that, one ufunc per C operation, so
each line of a format module is one C statement.

The helpers here name the conversions and rounding rules that upstream uses,
because four different rounding rules are in use across the formats and the
differences are visible in the bytes:

* ``round_half_away``  C ``roundf``: ties away from zero (Q8_0, Q8_1).
* ``trunc_to_int``     C float-to-int conversion: toward zero (Q4_0 ... Q5_1,
                       after adding 8.5 / 16.5 / 0.5, i.e. round-half-up).
* ``nearest_int``      ggml's ``nearest_int``: adds 1.5 * 2**23 and reads the
                       mantissa, i.e. ties to even (the imatrix searches, K/IQ).
* fp16 / bf16          round-half-even, as ggml's software converters.

``sequential_sum`` is a C ``for`` loop ``s += a[i]``: float32 addition in
index order, which ``np.sum`` (pairwise) is not.

``canonical_dot`` is the one reduction order of every dot product in
quantspec, which the kernels of every ISA reproduce bit for bit.
"""

from __future__ import annotations

import numpy as np

F32 = np.float32
F16_NAN = np.uint16(0x7E00)  # ggml_compute_fp32_to_fp16: NaN -> quiet NaN, sign kept

#: Number of float32 lanes of the canonical dot product.
DOT_LANES = 16


def f32(value) -> np.float32:
    """A Python literal as a float32 constant (``8.5f``)."""
    return np.float32(value)


# --------------------------------------------------------------------- fp16

def f32_to_f16_bits(x: np.ndarray) -> np.ndarray:
    """``GGML_FP32_TO_FP16``: round to nearest even, overflow to +-inf.

    NumPy's float32 -> float16 cast is the correctly rounded IEEE conversion
    (subnormals included); only NaN payloads differ from ggml, which writes
    0x7E00 with the sign kept.
    """
    x = np.asarray(x, dtype=F32)
    with np.errstate(over="ignore", invalid="ignore"):
        bits = x.astype(np.float16).view(np.uint16)
    nan = np.isnan(x)
    if nan.any():
        bits = np.where(nan, F16_NAN | (np.signbit(x).astype(np.uint16) << np.uint16(15)), bits)
    return bits.astype(np.uint16)


def f16_bits_to_f32(h: np.ndarray) -> np.ndarray:
    """``GGML_FP16_TO_FP32``: exact widening of binary16 bits."""
    return np.asarray(h, dtype=np.uint16).view(np.float16).astype(F32)


def round_f16(x: np.ndarray) -> np.ndarray:
    """The float32 value a fp16 field stores for ``x`` (round trip through fp16)."""
    return f16_bits_to_f32(f32_to_f16_bits(x))


# --------------------------------------------------------------------- bf16

def f32_to_bf16_bits(x: np.ndarray) -> np.ndarray:
    """``ggml_compute_fp32_to_bf16``: NaN -> ``(bits >> 16) | 64`` (quieted),
    otherwise ``(bits + 0x7fff + ((bits >> 16) & 1)) >> 16`` (round half even;
    overflow rounds into +-inf)."""
    bits = np.ascontiguousarray(x, dtype=F32).view(np.uint32)
    rounded = (bits + np.uint32(0x7FFF) + ((bits >> np.uint32(16)) & np.uint32(1))) >> np.uint32(16)
    nan = (bits & np.uint32(0x7FFFFFFF)) > np.uint32(0x7F800000)
    quiet = (bits >> np.uint32(16)) | np.uint32(64)
    return np.where(nan, quiet, rounded).astype(np.uint16)


def bf16_bits_to_f32(b: np.ndarray) -> np.ndarray:
    """bf16 is the upper half of a binary32: shift back, exact."""
    return (np.asarray(b, dtype=np.uint16).astype(np.uint32) << np.uint32(16)).view(F32)


def inverse_or_zero(d: np.ndarray) -> np.ndarray:
    """``id = d ? 1.0f/d : 0.0f``: the inverse scale of the reference
    quantizers (from the float32 ``d``, not the stored fp16 one)."""
    d = np.asarray(d, dtype=F32)
    with np.errstate(divide="ignore"):
        return np.where(d != 0, F32(1) / d, F32(0)).astype(F32)


# ----------------------------------------------------------------- rounding

def round_half_away(x: np.ndarray) -> np.ndarray:
    """C ``roundf``: nearest integer, ties away from zero (as float32)."""
    x = np.asarray(x, dtype=F32)
    # trunc(x + copysign(0.5, x)) is wrong for 0.49999997f (x + 0.5 rounds up
    # to 1); decide on the exact fractional part instead.
    t = np.trunc(x)
    frac = np.abs(x - t)  # exact for float32
    return np.where(frac >= F32(0.5), t + np.copysign(F32(1), x), t).astype(F32)


INT_MIN = np.int32(-2**31)


def trunc_to_int(x: np.ndarray) -> np.ndarray:
    """C conversion of a float to ``int``: truncation toward zero.

    NaN and values outside the int32 range have no C value (undefined
    behaviour); x86-64, where ggml's files are made, gives INT_MIN (the
    "integer indefinite" of cvttss2si), and so does the spec. They arise
    when a scale is subnormal and its reciprocal overflows to inf.
    """
    x = np.asarray(x, dtype=F32)
    ok = np.abs(x) < F32(2.0**31)  # False for NaN
    return np.where(ok, np.trunc(np.where(ok, x, F32(0))), F32(0)).astype(np.int32) | np.where(ok, 0, INT_MIN)


def wrap_int8(c: np.ndarray) -> np.ndarray:
    """C conversion of an ``int`` to ``int8_t``/``uint8_t``: keep the low byte
    (as a signed value). INT_MIN becomes 0."""
    return ((np.asarray(c, dtype=np.int32) + 128) & 255) - 128


_MAGIC = F32(12582912.0)  # 1.5 * 2**23


def nearest_int(x: np.ndarray) -> np.ndarray:
    """ggml's ``nearest_int``: ``x + 1.5*2**23`` puts the rounded integer in
    the low mantissa bits (ties to even); valid for ``|x| <= 4194303``."""
    biased = (np.asarray(x, dtype=F32) + _MAGIC).view(np.int32)
    return (biased & np.int32(0x007FFFFF)) - np.int32(0x00400000)


# --------------------------------------------------------------- reductions

def sequential_sum(a: np.ndarray, axis: int = -1) -> np.ndarray:
    """``float s = 0; for (i...) s += a[i];`` along ``axis``, in float32.

    ``np.add.accumulate`` adds strictly left to right (each partial sum is an
    output), unlike ``np.sum``, which sums pairwise. Starting at +0.0 adds
    nothing: ``0 + a0 == a0`` for every a0 but -0.0, as in C.
    """
    a = np.asarray(a, dtype=F32)
    if a.shape[axis] == 0:
        return np.zeros(np.delete(a.shape, axis % a.ndim), dtype=F32)
    acc = np.add.accumulate(a, axis=axis, dtype=F32)
    out = np.take(acc, -1, axis=axis)
    return out + F32(0.0)  # the C accumulator starts at +0.0


def signed_absmax(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``amax`` and ``max`` of the ggml loop over the last axis::

        float amax = 0, max = 0;
        for (j...) if (amax < fabsf(x[j])) { amax = fabsf(x[j]); max = x[j]; }

    ``max`` is the signed value of the first element of largest magnitude.
    """
    ax = np.abs(x)
    first = np.argmax(ax, axis=-1)
    amax = np.take_along_axis(ax, first[..., None], axis=-1)[..., 0]
    signed = np.take_along_axis(x, first[..., None], axis=-1)[..., 0]
    # all-zero block: the loop never fires and max keeps its +0.0 start
    signed = np.where(amax > 0, signed, F32(0.0))
    return amax.astype(F32), signed.astype(F32)


def first_min(x: np.ndarray) -> np.ndarray:
    """``min = x[0]; for (j...) if (x[j] < min) min = x[j];`` over the last axis.

    The first element of least value: when that value is zero, its sign is
    the sign of the first zero, which ``np.min`` does not promise.
    """
    return np.take_along_axis(x, np.argmin(x, axis=-1)[..., None], axis=-1)[..., 0]


def first_max(x: np.ndarray) -> np.ndarray:
    """``max = x[0]; for (j...) if (x[j] > max) max = x[j];``: the first largest element."""
    return np.take_along_axis(x, np.argmax(x, axis=-1)[..., None], axis=-1)[..., 0]


def canonical_dot(contributions: np.ndarray) -> np.ndarray:
    """The canonical reduction of a dot product, over the last axis.

    ``contributions[..., i]`` is block i's float32 contribution, computed as
    its format module writes it. Block i is added into lane ``i % 16`` in
    block order (lanes start at +0.0), then the 16 lanes are folded by a
    fixed pairwise tree: ``lane[j] += lane[j + w]`` for w = 8, 4, 2, 1. The
    result is ``lane[0]``. A 16-lane AVX-512 register, two 8-lane AVX2
    registers or a scalar array of 16 floats all reproduce it exactly.
    """
    c = np.asarray(contributions, dtype=F32)
    nblocks = c.shape[-1]
    groups = -(-nblocks // DOT_LANES)
    padded = np.zeros(c.shape[:-1] + (max(groups, 1) * DOT_LANES,), dtype=F32)
    padded[..., :nblocks] = c  # +0.0 padding leaves every lane unchanged
    grouped = padded.reshape(c.shape[:-1] + (max(groups, 1), DOT_LANES))
    lanes = np.take(np.add.accumulate(grouped, axis=-2, dtype=F32), -1, axis=-2)
    lanes = lanes + F32(0.0)
    width = DOT_LANES // 2
    while width >= 1:
        lanes = lanes[..., :width] + lanes[..., width:2 * width]
        width //= 2
    return lanes[..., 0]
