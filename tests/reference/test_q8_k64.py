"""Q8_K64, ik_llama.cpp's activation format of the ternary dot products,
and the IQ1_BN/IQ2_BN dot products with it: the row header, the lane
rule, the quantizer's rounding and saturation, and agreement of the dot
products with exact (float64) arithmetic within a stated bound."""

from __future__ import annotations

import numpy as np
import pytest

import quantspec as qs
from quantspec import errors, registry
from quantspec.reference import q8_k64

F = np.float32


def _lane(n: int) -> np.ndarray:
    return (np.arange(n) % 16) // 4


def test_layout():
    info = qs.format_info(("ik_llama", 136))
    assert info.name == "q8_k64" and info.vec_dot_format is None
    assert (info.block_size, info.type_size, info.row_meta_size) == (64, 64, 32)
    assert info.row_bytes(512) == 32 + 512  # ik_llama.cpp allocates 512/64*68 = 544 bytes and writes these
    assert registry.spec("iq1_bn").vec_dot_format == registry.spec("iq2_bn").vec_dot_format == "q8_k64"


def test_quantize_header_lanes_and_ties():
    n = 128
    lane = _lane(n)
    x = np.zeros(n, dtype=F)
    amax = np.array([127.0, 254.0, 12.7, 1.0], dtype=F)
    x[np.arange(n)[lane == 0][:6]] = [127.0, 2.5, 3.5, -2.5, -0.5, 1.5]  # d = 1: ties to even
    x[np.arange(n)[lane == 1][:3]] = [-254.0, 5.0, 3.0]                    # d = 2: 2.5 -> 2, 1.5 -> 2
    x[np.arange(n)[lane == 2][:2]] = [12.7, -6.35]
    x[np.arange(n)[lane == 3][:2]] = [1.0, 0.25]
    q = qs.quantize("q8_k64", x)
    assert q.shape == (32 + n,)
    d, s = q[:16].view(F), q[16:32].view(F)
    np.testing.assert_array_equal(d, amax / F(127))
    quants = q[32:].view(np.int8).astype(np.int64)
    np.testing.assert_array_equal(quants[np.arange(n)[lane == 0][:6]], [127, 2, 4, -2, 0, 2])
    np.testing.assert_array_equal(quants[np.arange(n)[lane == 1][:3]], [-127, 2, 2])
    for L in range(4):
        assert s[L] == d[L] * F(quants[lane == L].sum())
    y = qs.dequantize("q8_k64", q)
    np.testing.assert_array_equal(y, d[lane] * quants.astype(F))


def test_zero_row_and_tiny_lane():
    q = qs.quantize("q8_k64", np.zeros(64, dtype=F))
    assert not q.any()
    x = np.ones(64, dtype=F)
    x[_lane(64) == 1] = F(1e-37)   # d = 1e-37/127: its reciprocal overflows
    x[np.flatnonzero(_lane(64) == 1)[0]] = 0.0
    q = qs.quantize("q8_k64", x)
    quants = q[32:].view(np.int8)
    assert (quants[_lane(64) == 1] == -128).all()       # cvtps2dq(+-inf or NaN) = INT_MIN, saturated
    assert (quants[_lane(64) != 1] == 127).all()
    assert q[16:32].view(F)[1] == q[:16].view(F)[1] * F(-128 * 16)


def test_bad_input():
    with pytest.raises(errors.NonFiniteInputError, match="q8_k64"):
        qs.quantize("q8_k64", np.full(64, np.inf, dtype=F))
    with pytest.raises(errors.ShapeError, match=r"q8_k64: a row must be 32 \+ k\*64 bytes"):
        qs.dequantize("q8_k64", np.zeros(64, dtype=np.uint8))
    q = qs.quantize("q8_k64", np.ones((2, 64), dtype=F))
    q[1, 20:24] = np.frombuffer(F(np.nan).tobytes(), dtype=np.uint8)
    found = qs.validate("q8_k64", q)
    assert [(v.row, v.block, v.field, v.reason) for v in found] == [(1, -1, "s[1]", "NaN")]


def test_rows_are_independent():
    x = np.random.default_rng(0).standard_normal((3, 192)).astype(F)
    q = qs.quantize("q8_k64", x)
    for r in range(3):
        np.testing.assert_array_equal(qs.quantize("q8_k64", x[r]), q[r])


@pytest.mark.parametrize("fmt", ["iq1_bn", "iq2_bn"])
@pytest.mark.parametrize("nblocks", [1, 8, 17, 40])
def test_ternary_dot_is_the_exact_dot_within_rounding(fmt, nblocks):
    """|spec - exact| <= (depth + 6) * 2^-24 * sum|w_j a_j|: each block
    contribution rounds e_L = d*a.d[L], e_L*isum_L and three adds; the
    16-lane reduction adds ceil(nblocks/16) + 4 roundings per path."""
    rng = np.random.default_rng(nblocks)
    n = 64 * nblocks
    x = rng.standard_normal((4, n)).astype(F)
    w = qs.quantize(fmt, x)
    aq = qs.quantize("q8_k64", rng.standard_t(4, n).astype(F))
    got = qs.vec_dot(fmt, w, aq).astype(np.float64)
    wf = qs.dequantize(fmt, w).astype(np.float64)
    af = qs.dequantize("q8_k64", aq).astype(np.float64)
    exact = wf @ af
    magnitude = np.abs(wf) @ np.abs(af)
    depth = -(-nblocks // 16) + 4
    assert (np.abs(got - exact) <= (depth + 6) * 2.0**-24 * magnitude).all()


def test_lane_dot_reads_value_times_quant_per_lane():
    """One block, one nonzero element per lane: the contribution is
    ((e_0*v_0*q_0 + e_1*...) + ...) with e_L = d * a.d[L]."""
    values = np.zeros((1, 1, 64), dtype=np.int64)
    values[0, 0, [0, 4, 8, 12]] = [1, -1, 1, 2]
    a = np.zeros(32 + 64, dtype=np.uint8)
    a[:16] = np.array([0.5, 0.25, 2.0, 1.0], dtype=F).view(np.uint8)
    a[32 + np.array([0, 4, 8, 12])] = np.array([3, 5, -7, 11], dtype=np.int8).view(np.uint8)
    got = q8_k64.lane_dot(np.array([2.0], dtype=F), values, a)
    assert got[0] == F(((1.0 * 3 + 0.5 * -5) + 4.0 * -7) + 2.0 * 22)
