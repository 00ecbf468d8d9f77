"""The ik_llama.cpp tables and the pieces of the IQK spec on their own: the
value grids and index tables pinned by checksum (carried over from
ik_llama.cpp @ 8337e4cd), the grids' stated structure, the nearest-index
rule against a one-value-at-a-time transcription of the C, IQ4_KSS's
15-bit code, its docstring's worked example, and bad input."""

from __future__ import annotations

import doctest
import hashlib
import math

import numpy as np
import pytest

import quantspec as qs
from quantspec import errors
from quantspec.reference import _iqk, iq4_kss
from quantspec.reference.tables import ik_llama as T

F = np.float32

CHECKSUMS = {  # sha256 of the table bytes
    "IQ2KL_VALUES": ("uint16", 32, "8d2011e5bfbbe13bb2e30cc23f5c2b03692f26230d26c8898c210d0dda94cb98"),
    "IQ2NL_VALUES": ("int8", 8, "55112d6b200b171919870996964d8b1f4dc99058ee26a4bd7dd46c650fd7d429"),
    "IQ3NL_INDEX": ("int8", 111, "7fe0d1ea470d63e78373f9e5938d4a7ac8b566acb8e5c7c0484cecc4e3f403db"),
    "IQ3NL_VALUES": ("int8", 16, "7ae1edf05f1f62d5af381d6729418f94d621e044a7b0953daff5640a15141c50"),
    "IQ4K_VALUES": ("int8", 32, "7925acdfe234c1ce2a8b821a9d46e75cf3b6250c32cbd7f052caaf18d77dfb67"),
    "IQ4NL_INDEX": ("int8", 241, "25012536e6b65bb129f63a385234333d8c22baee222ab3eaee53a4d00a7e8eaf"),
    "IQ5NL_INDEX": ("int8", 248, "4d45381dfe6e6b2be5712aafc2ca8aa81142454fcea9a6fa640d5f6b72e67168"),
    "IQ5NL_VALUES": ("int8", 64, "ee5728e13f40f364a86d063826cc4417be5111dbecfdf54c3232db656d6898af"),
    "IQ6NL_INDEX": ("uint8", 249, "bb84dcd4dab70306c77842735185e69a9f6c31a68a7e5aa60c56c86ed3f1285a"),
    "IQ6NL_VALUES": ("int8", 128, "1797f65070a2c3a37f9d8deff5163672dd1c42b3ac1a3c911fefa263b7fcec05"),
}


@pytest.mark.parametrize("name", sorted(CHECKSUMS))
def test_table_checksums(name):
    table = getattr(T, name)
    dtype, size, digest = CHECKSUMS[name]
    assert (str(table.dtype), table.size) == (dtype, size)
    assert hashlib.sha256(table.tobytes()).hexdigest() == digest


@pytest.mark.parametrize("grid, offset", [(_iqk.IQ2NL, 5), (_iqk.IQ3NL, 4), (_iqk.IQ4K, 4), (_iqk.IQ5NL, 2),
                                          (_iqk.IQ6NL, 1)])
def test_grids_are_a_base_half_and_a_shifted_copy(grid, offset):
    base = grid.values[:grid.size].astype(int)
    shifted = grid.values[grid.size:].astype(int)
    assert np.all(np.diff(base) > 0)
    assert np.array_equal(shifted - base, np.full(grid.size, offset))


def test_iq4k_base_half_is_mainline_kvalues_iq4nl_and_iq6nl_is_its_cubic():
    assert T.IQ4K_VALUES[:16].tolist() == [-127, -104, -83, -65, -49, -35, -22, -10, 1, 13, 25, 38, 53, 69, 89, 113]
    q = np.arange(64)
    cubic = -127 + q * (6.2568 + q * (-0.11218 + q * 0.0011972))
    assert np.array_equal(T.IQ6NL_VALUES[:64], np.round(cubic).astype(int))


def test_iq2kl_pairs_lie_on_the_iq3nl_grid():
    low = (T.IQ2KL_VALUES & 0xFF).astype(np.uint8).view(np.int8)
    high = (T.IQ2KL_VALUES >> 8).astype(np.uint8).view(np.int8)
    assert set(low.tolist()) | set(high.tolist()) <= set(T.IQ3NL_VALUES[:8].tolist())


def _c_best_index(grid: _iqk.Grid, x: float, shift: int) -> int:
    """``best_index_iq*nl`` transcribed one value at a time (float32 math)."""
    half = [F(v) for v in grid.values[grid.size * shift:grid.size * (shift + 1)]]
    x = F(x)
    if grid.index is None:  # best_index_iq2nl
        idx = 0 if x < half[1] else 2 if x > half[2] else 1
        return idx if x - half[idx] < half[idx + 1] - x else idx + 1
    v = x - half[0] if grid.index_from_difference else x
    if not math.isfinite(v) or abs(v) >= 2**31:
        ix = -2**31  # x86 cvttss2si: out of range -> INT_MIN
    else:
        ix = int(v)
    if not grid.index_from_difference:
        ix -= int(half[0])
    if ix < 0 or ix >= grid.limit:
        return 0 if ix < 0 else grid.size - 1
    t = int(grid.index[ix])
    if t < grid.size:
        return t
    i = t - grid.size
    return i if x - half[i] < half[i + 1] - x else i + 1


@pytest.mark.parametrize("grid", [_iqk.IQ2NL, _iqk.IQ3NL, _iqk.IQ4K, _iqk.IQ5NL, _iqk.IQ6NL], ids=lambda g: g.name)
def test_nearest_index_matches_the_c_transcription(grid):
    rng = np.random.default_rng(len(grid.name))
    vals = grid.values.astype(F)
    mids = (vals[:-1] + vals[1:]) / F(2)
    x = np.concatenate([
        rng.uniform(-140, 140, 3000).astype(F),
        np.arange(-140, 141).astype(F),                     # integers: the table's interval ends
        mids, np.nextafter(mids, F(np.inf)), np.nextafter(mids, F(-np.inf)),
        vals, np.array([0.0, -0.0, 1e-30, -1e-30, 3e9, -3e9, 1e38], dtype=F),
    ])
    for shift in (0, 1):
        got = grid.nearest(x, shift)
        want = np.array([_c_best_index(grid, v, shift) for v in x])
        assert np.array_equal(got, want), x[got != want][:5]


def test_iq4_kss_code_is_a_bijection_onto_even_parity_words():
    c = np.arange(1 << 15, dtype=np.uint16)
    v = (c ^ (c << np.uint16(1))).astype(np.uint16)
    parity = np.array([bin(int(w)).count("1") % 2 for w in v])
    assert not parity.any()
    assert np.unique(v).size == 1 << 15
    assert np.array_equal(iq4_kss.encode_word(v), c)
    assert np.array_equal(iq4_kss.decode_word((c << np.uint16(1)) | np.uint16(1)), v)


def test_iq4_kss_quantized_words_have_even_parity_and_odd_scales():
    rng = np.random.default_rng(3)
    x = rng.standard_t(3, size=(3, 512)).astype(F)
    q = iq4_kss.quantize(x)
    _, blocks = _iqk.split_rows(iq4_kss.FORMAT, q)
    v = iq4_kss.decode_word(blocks["qs"])
    assert all(bin(int(w)).count("1") % 2 == 0 for w in v.ravel())
    scale, _, _ = iq4_kss.sub_block_codes(blocks)
    assert np.all(scale % 2 == 1)


def test_iq4_kss_worked_example_doctest():
    result = doctest.testmod(iq4_kss, optionflags=doctest.ELLIPSIS)
    assert result.attempted >= 10 and result.failed == 0


IK_FORMATS = ["q6_0", "iq1_bn", "iq2_bn", "iq2_k", "iq3_k", "iq4_k", "iq5_k", "iq6_k", "iq4_ks", "iq2_ks", "iq4_kss",
              "iq5_ks", "iq2_kt", "iq3_kt", "iq4_kt", "iq3_ks", "iq2_kl", "iq1_kt", "q1_0_g128"]
KT_FORMATS = ["iq1_kt", "iq2_kt", "iq3_kt", "iq4_kt"]


@pytest.mark.parametrize("fmt", IK_FORMATS)
def test_rows_carry_their_metadata_and_zero_rows(fmt):
    info = qs.format_info(fmt)
    assert info.origin == "ik_llama"
    n = 2 * max(info.block_size, 256)
    x = np.zeros((2, n), dtype=F)
    q = qs.quantize(fmt, x)
    assert q.shape == (2, info.row_bytes(n))
    y = qs.dequantize(fmt, q)
    assert y.shape == x.shape and not np.any(y)
    assert qs.validate(fmt, q) == []


@pytest.mark.parametrize("fmt", [f for f in IK_FORMATS if f not in KT_FORMATS] + [
    pytest.param(f, marks=pytest.mark.slow) for f in KT_FORMATS])
def test_quantize_is_row_independent(fmt):
    rng = np.random.default_rng(7)
    n = max(qs.format_info(fmt).block_size, 256)
    x = rng.standard_normal((2, n)).astype(F)
    im = rng.uniform(0.1, 2.0, n).astype(F)
    for imatrix in (None, im):
        q = qs.quantize(fmt, x, imatrix)
        for r in range(2):
            assert np.array_equal(qs.quantize(fmt, x[r], imatrix), q[r])


@pytest.mark.parametrize("fmt", ["iq4_ks", "iq4_kss", "iq5_ks", "iq2_bn"])
def test_validate_reports_a_non_finite_row_scale(fmt):
    x = np.random.default_rng(1).standard_normal((2, 256)).astype(F)
    q = qs.quantize(fmt, x)
    q[1, :4] = np.frombuffer(np.float32(np.inf).tobytes(), dtype=np.uint8)
    found = qs.validate(fmt, q)
    assert [(v.row, v.block, v.reason) for v in found] == [(1, -1, "inf")]


def test_bad_input_names_the_format():
    with pytest.raises(errors.ShapeError, match="iq4_kss: rows must hold a positive multiple of 256"):
        qs.quantize("iq4_kss", np.zeros(100, dtype=F))
    with pytest.raises(errors.ShapeError, match=r"iq4_kss: a row must be 4 \+ k\*128 bytes"):
        qs.dequantize("iq4_kss", np.zeros(128, dtype=np.uint8))
    with pytest.raises(errors.NonFiniteInputError, match="iq4_ks"):
        qs.quantize("iq4_ks", np.full(256, np.nan, dtype=F))
    with pytest.raises(errors.UnknownFormatError):
        qs.format_info(("ik_llama", 999))
    with pytest.raises(errors.UnsupportedOperationError):
        qs.vec_dot("q8_k64", np.zeros(96, np.uint8), np.zeros(96, np.uint8))


def test_ik_and_mainline_ids_are_separate():
    assert qs.format_info(("ik_llama", 146)).name == "iq4_kss"
    with pytest.raises(errors.UnknownFormatError):
        qs.format_info(("ggml", 146))


def _element_scale(fmt: str, q: np.ndarray) -> np.ndarray:
    """The float scale each element's integer (sub-block scale times grid
    value) is multiplied by: the row scale, or the block's fp16 d."""
    from quantspec.reference._numerics import f16_bits_to_f32

    spec = qs.registry.spec(fmt)
    n = (q.shape[1] - spec.row_meta_size) // spec.type_size * spec.block_size
    if spec.row_meta_size == 4:
        return np.repeat(q[:, :4].copy().view(F), n, axis=1)
    if spec.row_meta_size == 2:
        return np.repeat(f16_bits_to_f32(q[:, :2].copy().view(np.uint16)), n, axis=1)
    d = f16_bits_to_f32(spec.blocks(q)["d"])
    return np.repeat(d, spec.block_size, axis=1)


@pytest.mark.parametrize("fmt", [f for f in IK_FORMATS if qs.format_info(f).vec_dot_format
                                 and f not in ("q1_0_g128", "iq1_bn", "iq2_bn") and f not in KT_FORMATS])
def test_vec_dot_is_the_stated_integer_sum(fmt):
    """term = (d_w * d_a) * (float)isum per block of the activation's size
    (exact integer isum, recovered from the dequantized weights), canonical order."""
    from quantspec.reference._numerics import canonical_dot

    rng = np.random.default_rng(11)
    act = qs.format_info(fmt).vec_dot_format
    n = 1024
    x = rng.standard_normal((3, n)).astype(F)
    q = qs.quantize(fmt, x)
    a = qs.quantize(act, rng.standard_normal(n).astype(F))
    scale = _element_scale(fmt, q)
    ints = np.rint(qs.dequantize(fmt, q).astype(np.float64) / scale).astype(np.int64)
    aspec = qs.registry.spec(act)
    ab = aspec.blocks(a[None, :])[0]
    qa = ab["qs"].astype(np.int64).reshape(-1)
    if act == "q8_0":
        from quantspec.reference._numerics import f16_bits_to_f32
        da = f16_bits_to_f32(ab["d"])
    else:
        da = ab["d"].astype(F)
    bs = aspec.block_size
    isum = (ints * qa).reshape(3, -1, bs).sum(axis=-1)
    dw = scale[:, ::bs]
    expected = canonical_dot((dw * da[None, :]) * isum.astype(np.int32).astype(F))
    got = qs.vec_dot(fmt, q, a)
    assert np.array_equal(got.view(np.uint32), expected.view(np.uint32))
    exact = (qs.dequantize(fmt, q).astype(np.float64) * qs.dequantize(act, a)[None, :].astype(np.float64)).sum(axis=1)
    assert np.all(np.abs(got - exact) <= 1e-4 * np.abs(qs.dequantize(fmt, q)).sum(axis=1) * np.abs(x).max())


def test_q1_0_g128_is_mainline_q1_0_with_ik_llama_s_dot_product():
    from quantspec.reference._numerics import canonical_dot, f16_bits_to_f32

    rng = np.random.default_rng(5)
    x = rng.standard_normal((2, 512)).astype(F)
    q = qs.quantize(("ik_llama", 41), x)
    assert np.array_equal(q, qs.quantize(("ggml", 41), x))
    assert np.array_equal(qs.dequantize("q1_0_g128", q).view(np.uint32), qs.dequantize("q1_0", q).view(np.uint32))
    a = qs.quantize("q8_0", rng.standard_normal(512).astype(F))
    ab = qs.registry.spec("q8_0").blocks(a[None, :])[0]
    signs = np.where(qs.dequantize("q1_0_g128", q) > 0, 1, -1).reshape(2, 4, 4, 32)
    s = (signs * ab["qs"].astype(np.int64).reshape(1, 4, 4, 32)).sum(axis=-1)
    dw = f16_bits_to_f32(qs.registry.spec("q1_0_g128").blocks(q)["d"])
    t = (dw[..., None] * f16_bits_to_f32(ab["d"]).reshape(1, 4, 4)) * s.astype(F)
    expected = canonical_dot(((t[..., 0] + t[..., 1]) + t[..., 2]) + t[..., 3])
    assert np.array_equal(qs.vec_dot("q1_0_g128", q, a).view(np.uint32), expected.view(np.uint32))


def _set_values(seed: int, group: int, offset: int = 4096, absolute: bool = False) -> list[float]:
    """``QuantizerIQKT::set_values`` (integer trellis) transcribed with Python ints."""
    x = (seed + offset) & 0xFFFFFFFF
    out = []
    for _ in range(group):
        x = (x * 0xCBAC1FED) & 0xFFFFFFFF
        s = x & 0x3F3F3F3F
        v = sum((s >> (8 * i)) & 0xFF for i in range(4)) - 126
        out.append(float(abs(v) if absolute else v))
    return out


@pytest.mark.parametrize("bits, group, offset, absolute", [(13, 8, 4096, False), (16, 8, 4096, False),
                                                           (16, 8, 4096, True), (15, 4, 4096, False),
                                                           (15, 4, 4096 + 32768, False)])
def test_trellis_generator_matches_the_integer_recurrence(bits, group, offset, absolute):
    from quantspec.reference import _kt

    table = _kt.codebook(bits, group, offset, absolute)
    assert table.shape == (1 << bits, group) and table.dtype == F
    for seed in [0, 1, 2, 4095, (1 << bits) // 3, (1 << bits) - 1]:
        assert table[seed].tolist() == _set_values(seed, group, offset, absolute)
    assert table.min() >= (0 if absolute else -126) and table.max() <= 126
    if not absolute:  # the sum of 4 uniform 6-bit numbers, centred: about Gaussian, mean near 0
        assert abs(float(table.mean())) < 1.0 and 30 < float(table.std()) < 40


def _round_f32(value) -> np.float32:
    """A Fraction correctly rounded to float32 (ties to even), by comparing neighbours."""
    from fractions import Fraction

    guess = F(float(value))
    cands = [np.nextafter(guess, F(-np.inf)), guess, np.nextafter(guess, F(np.inf))]
    dist = [abs(Fraction(float(c)) - value) for c in cands]
    best = min(dist)
    ties = [c for c, dd in zip(cands, dist) if dd == best]
    return ties[0] if len(ties) == 1 else next(c for c in ties if not c.view(np.uint32) & 1)


def test_fma_is_one_rounding():
    from fractions import Fraction

    from quantspec.reference._kt import fma

    rng = np.random.default_rng(2)
    a, b, c = (rng.standard_normal(300).astype(F) * F(s) for s in (1, 3, 1e-3))
    got = fma(a, b, c)
    for x, y, z, r in zip(a, b, c, got):
        assert r == _round_f32(Fraction(float(x)) * Fraction(float(y)) + Fraction(float(z)))
    # a*b lies exactly halfway between two floats; a tiny c decides, which rounding the float64 sum first loses
    one = F(1 + 2.0**-12)
    assert fma(one, one, F(2.0**-80)) == F(1 + 2.0**-11 + 2.0**-23)
    assert fma(one, one, F(-2.0**-80)) == F(1 + 2.0**-11)


def test_kt_dot_is_the_stated_sum():
    """IQ2_KT: t_b = ((d*scale_b) * fp16(q8.d_b)) * sumi_b per 32 elements, added left to right per
    super-block, canonical order; scales and values read back from the bytes and the floats."""
    from quantspec.reference._numerics import canonical_dot, f16_bits_to_f32

    rng = np.random.default_rng(4)
    q = qs.quantize("iq2_kt", rng.standard_normal((2, 512)).astype(F))
    a = qs.quantize("q8_0", rng.standard_normal(512).astype(F))
    d = q[:, :4].copy().view(F)[:, 0]
    sc = q[:, 4:].reshape(2, 2, 68)[:, :, :4].astype(int)
    scale = T.IQ4K_VALUES[np.concatenate([sc & 15, sc >> 4], axis=-1)].astype(F)        # (2, 2, 8)
    dl = d[:, None, None] * scale
    values = np.rint(qs.dequantize("iq2_kt", q).reshape(2, 2, 8, 32) / dl[..., None]).astype(np.int64)
    ab = qs.registry.spec("q8_0").blocks(a[None, :])[0]
    sumi = (values * ab["qs"].astype(np.int64).reshape(1, 2, 8, 32)).sum(axis=-1)
    t = (dl * f16_bits_to_f32(ab["d"]).reshape(1, 2, 8)) * sumi.astype(F)
    term = t[..., 0]
    for b in range(1, 8):
        term = term + t[..., b]
    assert np.array_equal(qs.vec_dot("iq2_kt", q, a).view(np.uint32), canonical_dot(term).view(np.uint32))


@pytest.mark.parametrize("fmt", KT_FORMATS)
def test_kt_dot_is_close_to_the_float_dot(fmt):
    rng = np.random.default_rng(6)
    q = qs.quantize(fmt, rng.standard_normal((2, 256)).astype(F))
    a = qs.quantize("q8_0", rng.standard_normal(256).astype(F))
    exact = (qs.dequantize(fmt, q).astype(np.float64) * qs.dequantize("q8_0", a).astype(np.float64)).sum(axis=1)
    got = qs.vec_dot(fmt, q, a)
    assert np.all(np.abs(got - exact) <= 1e-5 * np.abs(qs.dequantize(fmt, q)).sum(axis=1) * 4)
