"""The arithmetic model's helpers against independent definitions."""

from __future__ import annotations

import math

import numpy as np
import pytest

from quantspec.reference import _numerics as nx

ALL_F16 = np.arange(1 << 16, dtype=np.uint32).astype(np.uint16)


def _f16_rne_exact(value: float) -> int:
    """binary16 bits of ``value`` by exact rational rounding (ties to even)."""
    if math.isnan(value):
        return 0x7E00 | (0x8000 if math.copysign(1, value) < 0 else 0)
    sign = 0x8000 if math.copysign(1, value) < 0 else 0
    mag = abs(value)
    if mag >= 65520.0:
        return sign | 0x7C00
    from fractions import Fraction

    m = Fraction(mag)
    scaled = m * (1 << 24)  # units of the smallest subnormal
    if m >= Fraction(1, 1 << 14):
        e = math.floor(math.log2(mag))
        while Fraction(2) ** e > m:
            e -= 1
        while Fraction(2) ** (e + 1) <= m:
            e += 1
        scaled = m / Fraction(2) ** (e - 10)
    q, r = divmod(scaled, 1)
    q = int(q)
    if r > Fraction(1, 2) or (r == Fraction(1, 2) and q & 1):
        q += 1
    if m < Fraction(1, 1 << 14):
        return sign | q
    return sign | (((e + 15) << 10) + (q - 1024))


def test_f16_decode_is_exact_for_all_patterns():
    values = nx.f16_bits_to_f32(ALL_F16)
    finite = np.isfinite(values)
    back = nx.f32_to_f16_bits(values[finite])
    np.testing.assert_array_equal(back, ALL_F16[finite])


@pytest.mark.parametrize("seed", range(3))
def test_f16_encode_rounds_half_even(seed):
    rng = np.random.default_rng(seed)
    bits = rng.integers(0, 2**32, 3000, dtype=np.uint64).astype(np.uint32)
    # concentrate on the fp16 range, its subnormals, ties and the overflow edge
    x = bits.view(np.float32)
    x = np.concatenate([x, (rng.standard_normal(3000) * 10.0 ** rng.uniform(-9, 5, 3000)).astype(np.float32),
                        np.array([65504, 65519.99, 65520, 2.0**-25, 2.0**-24 * 1.5, 2.0**-14 * (1 - 2**-11),
                                  np.nan, -np.nan, np.inf, -np.inf, -0.0], dtype=np.float32)])
    got = nx.f32_to_f16_bits(x)
    want = np.array([_f16_rne_exact(float(v)) for v in x], dtype=np.uint16)
    np.testing.assert_array_equal(got, want)


def test_bf16_round_trip_and_nan():
    assert nx.f32_to_bf16_bits(np.float32(1.0)) == 0x3F80
    assert nx.f32_to_bf16_bits(np.array([np.uint32(0x3F808000)]).view(np.float32))[0] == 0x3F80  # tie -> even
    assert nx.f32_to_bf16_bits(np.array([np.uint32(0x3F818000)]).view(np.float32))[0] == 0x3F82
    nan = np.array([np.uint32(0x7F800001)]).view(np.float32)
    assert nx.f32_to_bf16_bits(nan)[0] == 0x7F80 | 64
    all_bf16 = np.arange(1 << 16, dtype=np.uint32).astype(np.uint16)
    v = nx.bf16_bits_to_f32(all_bf16)
    ok = ~np.isnan(v)
    np.testing.assert_array_equal(nx.f32_to_bf16_bits(v[ok]), all_bf16[ok])


def test_round_half_away_is_c_roundf():
    x = np.array([0.5, -0.5, 1.5, 2.5, -2.5, 0.49999997, -0.49999997, 8388609.0, 1e30, -0.0, 0.0],
                 dtype=np.float32)
    want = np.array([1, -1, 2, 3, -3, 0, -0.0, 8388609.0, 1e30, -0.0, 0.0], dtype=np.float32)
    np.testing.assert_array_equal(nx.round_half_away(x).view(np.uint32), want.view(np.uint32))


def test_nearest_int_ties_to_even():
    x = np.array([0.5, 1.5, 2.5, -0.5, -1.5, 3.49, 4194303.0, -4194303.0], dtype=np.float32)
    np.testing.assert_array_equal(nx.nearest_int(x), [0, 2, 2, 0, -2, 3, 4194303, -4194303])


def test_trunc_to_int_out_of_range_is_int_min():
    x = np.array([1.9, -1.9, np.inf, -np.inf, np.nan, 3e9, -2**31], dtype=np.float32)
    np.testing.assert_array_equal(nx.trunc_to_int(x), [1, -1, -2**31, -2**31, -2**31, -2**31, -2**31])
    np.testing.assert_array_equal(nx.wrap_int8(np.array([200, -2**31, 127, -128])), [-56, 0, 127, -128])


def test_sequential_sum_is_left_to_right():
    a = np.array([1e8, 1.0, -1e8, 1.0], dtype=np.float32)
    # ((1e8 + 1) - 1e8) + 1 == 1 in float32; pairwise would give (1e8+1) + (-1e8+1) = 0
    assert nx.sequential_sum(a) == np.float32(1.0)


def test_canonical_dot_order():
    rng = np.random.default_rng(3)
    c = (rng.standard_normal((3, 37)) * 10.0 ** rng.uniform(-6, 6, (3, 37))).astype(np.float32)
    got = nx.canonical_dot(c)
    for r in range(3):
        lanes = [np.float32(0)] * 16
        for i, v in enumerate(c[r]):
            lanes[i % 16] = np.float32(lanes[i % 16] + v)
        w = 8
        while w:
            lanes = [np.float32(lanes[j] + lanes[j + w]) for j in range(w)]
            w //= 2
        assert got[r].view(np.uint32) == lanes[0].view(np.uint32)


def test_signed_absmax_first_occurrence_and_zero():
    x = np.array([[1.0, -3.0, 3.0, 2.0], [-0.0, 0.0, -0.0, 0.0]], dtype=np.float32)
    amax, vmax = nx.signed_absmax(x)
    assert list(amax) == [3.0, 0.0]
    assert vmax[0] == -3.0 and not np.signbit(vmax[1])  # +0.0 when no element beats 0
