"""The mainline formats without grids (IQ4_NL, IQ4_XS, TQ1_0, TQ2_0, MXFP4,
NVFP4, Q1_0, Q2_0) without libggml: the vectorized spec against per-block
transcriptions of the C, layouts, the scale conversions, the libm-free
log2f, each documented quirk, the dot products as stated, bad input."""

from __future__ import annotations

import ctypes
import ctypes.util
import math
import struct

import numpy as np
import pytest

import quantspec as qs
from quantspec import errors
from quantspec.reference import _fp4, _iq4, iq4_nl, iq4_xs, mxfp4, nvfp4, q1_0, q2_0, q8_0, q8_k, tq1_0, tq2_0
from quantspec.reference._numerics import canonical_dot, f16_bits_to_f32
from quantspec.reference.tables.ggml import KVALUES_IQ4NL, KVALUES_MXFP4

F = np.float32
FORMATS = ["iq4_nl", "iq4_xs", "tq1_0", "tq2_0", "mxfp4", "nvfp4", "q1_0", "q2_0"]
MODULES = {"iq4_nl": iq4_nl, "iq4_xs": iq4_xs, "tq1_0": tq1_0, "tq2_0": tq2_0, "mxfp4": mxfp4, "nvfp4": nvfp4,
           "q1_0": q1_0, "q2_0": q2_0}


def _bits(x) -> np.ndarray:
    return np.asarray(x, dtype=F).view(np.uint32)


def _same(a, b) -> bool:
    return np.array_equal(_bits(a), _bits(b))


def edge_blocks(n: int, count: int, seed: int) -> np.ndarray:
    """Blocks of normal, Student-t, constant, zero, outlier, tie, tiny and huge data."""
    rng = np.random.default_rng(seed)
    out = []
    for b in range(count):
        kind = b % 10
        x = rng.standard_normal(n)
        if kind == 1:
            x = rng.standard_t(3, n)
        elif kind == 2:
            x = np.full(n, rng.choice([-2.5, 3.0, 1e-3]))
        elif kind == 3:
            x = np.where(rng.random(n) < 0.5, -0.0, 0.0)
        elif kind == 4:
            x = x * 0.01
            x[rng.integers(n)] = rng.choice([100.0, -100.0])
        elif kind == 5:
            x = np.round(x * 4) / 2
        elif kind == 6:
            x = x * 1e-41
        elif kind == 7:
            x = x * 1e25
        elif kind == 8:
            x = np.abs(x) + 1.0
        elif kind == 9:
            x = x * 1e-16  # below GROUP_MAX_EPS
        out.append(x)
    return np.array(out, dtype=F)


# ------------------------------------------------------------------ C transcriptions (one block, scalar float32)

def c_best_index_int8(x) -> int:
    val = [F(v) for v in KVALUES_IQ4NL.tolist()]
    if x <= val[0]:
        return 0
    if x >= val[15]:
        return 15
    ml, mu = 0, 15
    while mu - ml > 1:
        mav = (ml + mu) // 2
        if x < val[mav]:
            mu = mav
        else:
            ml = mav
    return mu - 1 if x - val[mu - 1] < val[mu] - x else mu


def c_nearest_int(f) -> int:
    i = struct.unpack("<i", struct.pack("<f", F(f) + F(12582912.0)))[0]
    return (i & 0x007FFFFF) - 0x00400000


def c_fp16(f) -> float:
    with np.errstate(over="ignore"):
        return F(np.float16(F(f)))


def c_iq4_nl_impl(x: np.ndarray, qw: np.ndarray | None, ntry: int = 7):
    """``quantize_row_iq4_nl_impl`` for one super-block (32 or 256 elements):
    (dh bits, scales_h, scales_l, qs) as the C writes them."""
    n = len(x)
    values = [F(v) for v in KVALUES_IQ4NL.tolist()]
    sigma2 = F(0)
    for j in range(n):
        sigma2 = sigma2 + x[j] * x[j]
    sigma2 = sigma2 * (F(2) / F(n))
    L = [0] * n
    scales = []
    max_scale = amax_scale = F(0)
    for ib in range(n // 32):
        xb = x[32 * ib:32 * ib + 32]
        if qw is not None:
            weight = [qw[32 * ib + j] * np.sqrt(sigma2 + xb[j] * xb[j]) for j in range(32)]
        else:
            weight = [xb[j] * xb[j] for j in range(32)]
        amax = vmax = F(0)
        for j in range(32):
            ax = abs(xb[j])
            if ax > amax:
                amax, vmax = ax, xb[j]
        if amax < F(1e-15):
            scales.append(F(0))
            continue
        d = -vmax / values[0] if ntry > 0 else vmax / values[0]
        iscale = F(1) / d
        sumqx = sumq2 = F(0)
        for j in range(32):
            lv = c_best_index_int8(iscale * xb[j])
            L[32 * ib + j] = lv
            q, w = values[lv], weight[j]
            sumqx = sumqx + w * q * xb[j]
            sumq2 = sumq2 + w * q * q
        d = sumqx / sumq2 if sumq2 > 0 else F(0)
        best = d * sumqx
        for itry in range(-ntry, ntry + 1):
            iscale = F(itry + int(KVALUES_IQ4NL[0])) / vmax
            sumqx = sumq2 = F(0)
            for j in range(32):
                q, w = values[c_best_index_int8(iscale * xb[j])], weight[j]
                sumqx = sumqx + w * q * xb[j]
                sumq2 = sumq2 + w * q * q
            if sumq2 > 0 and sumqx * sumqx > best * sumq2:
                d = sumqx / sumq2
                best = d * sumqx
        scales.append(d)
        if abs(d) > amax_scale:
            amax_scale, max_scale = abs(d), d
    scales_h, scales_l = 0, [0, 0, 0, 0]
    if n > 32:
        d = -max_scale / F(32)
        dh = c_fp16(d)
        iscale = F(1) / d if d != 0 else F(0)
        for ib in range(n // 32):
            lv = max(-32, min(31, c_nearest_int(iscale * scales[ib])))
            dl = d * F(lv)
            idl = F(1) / dl if dl != 0 else F(0)
            for j in range(32):
                L[32 * ib + j] = c_best_index_int8(idl * x[32 * ib + j])
            lv += 32
            if ib % 2 == 0:
                scales_l[ib // 2] = lv & 15
            else:
                scales_l[ib // 2] |= (lv & 15) << 4
            scales_h |= (lv >> 4) << (2 * ib)
    else:
        dh = c_fp16(scales[0])
        if ntry > 0:
            iscale = F(1) / scales[0] if scales[0] != 0 else F(0)
            L = [c_best_index_int8(iscale * x[j]) for j in range(n)]
    qs_bytes = [L[32 * i + j] | (L[32 * i + 16 + j] << 4) for i in range(n // 32) for j in range(16)]
    return int(np.float16(dh).view(np.uint16)), scales_h, scales_l, qs_bytes


def c_best_index_mxfp4(x, e) -> int:
    kv = [F(v) for v in KVALUES_MXFP4.tolist()]
    best, best_err = 0, abs(kv[0] * e - x)
    for i in range(1, 16):
        err = abs(kv[i] * e - x)
        if err < best_err:
            best, best_err = i, err
    return best


def c_fp32_to_ue4m3(x) -> int:
    x = F(x)
    if not x > 0:
        return 0
    if x > F(448):
        x = F(448)
    bits = struct.unpack("<I", struct.pack("<f", x))[0]
    exp = ((bits >> 23) & 0xFF) - 127 + 7
    man = (bits >> 20) & 7
    if exp <= 0:
        m = int(x * F(512) + F(0.5))
        return 0 if min(m, 7) < 1 else min(m, 7)
    if exp >= 15:
        return 0x7E
    man += (bits >> 19) & 1
    if man > 7:
        man, exp = 0, exp + 1
        if exp >= 15:
            return 0x7E
    return (exp << 3) | man


def c_ue4m3_to_fp32(b: int):
    if b in (0, 0x7F):
        return F(0)
    exp, man = (b >> 3) & 15, b & 7
    raw = math.ldexp(man, -9) if exp == 0 else math.ldexp(1 + man / 8, exp - 7)
    return F(raw) * F(0.5)


# ------------------------------------------------------------------ layouts

#: ggml-common.h @ d99724f2: (field, byte offset) and block bytes; block size; type id.
GGML_LAYOUTS = {
    "iq4_nl": ([("d", 0), ("qs", 2)], 18, 32, 20),
    "iq4_xs": ([("d", 0), ("scales_h", 2), ("scales_l", 4), ("qs", 8)], 136, 256, 23),
    "tq1_0": ([("qs", 0), ("qh", 48), ("d", 52)], 54, 256, 34),
    "tq2_0": ([("qs", 0), ("d", 64)], 66, 256, 35),
    "mxfp4": ([("e", 0), ("qs", 1)], 17, 32, 39),
    "nvfp4": ([("d", 0), ("qs", 4)], 36, 64, 40),
    "q1_0": ([("d", 0), ("qs", 2)], 18, 128, 41),
    "q2_0": ([("d", 0), ("qs", 2)], 18, 64, 42),
}


@pytest.mark.parametrize("fmt", FORMATS)
def test_layout_is_ggml_common_h(fmt):
    fields, size, block, type_id = GGML_LAYOUTS[fmt]
    spec = MODULES[fmt].FORMAT
    assert (spec.origin, spec.type_id, spec.block_size, spec.type_size) == ("ggml", type_id, block, size)
    assert list(spec.offsets().items()) == fields
    assert spec.vec_dot_format == ("q8_k" if fmt in ("iq4_xs", "tq1_0", "tq2_0") else "q8_0")
    assert spec.imatrix == ("accepted" if fmt.startswith("iq4") else "ignored")
    assert qs.format_info(("ggml", type_id)).name == fmt


# ------------------------------------------------------------------ IQ4: nearest level and scale search

def test_best_index_int8_is_the_c_binary_search():
    v = KVALUES_IQ4NL.astype(np.float64)
    mids = (v[:-1] + v[1:]) / 2
    x = np.concatenate([v, mids, np.nextafter(mids.astype(F), np.inf), np.nextafter(mids.astype(F), -np.inf),
                        [-1e30, 1e30, -np.inf, np.inf, np.nan, -0.0, 0.0, -127.5, 113.5],
                        np.random.default_rng(0).uniform(-140, 130, 3000)]).astype(F)
    got = _iq4.best_index_int8(x)
    assert got.dtype == np.uint8
    for xi, g in zip(x, got):
        assert g == c_best_index_int8(xi), xi
    assert _iq4.best_index_int8(F(np.nan)) == 15  # every comparison fails: the search ends at the top
    assert _iq4.best_index_int8(F(-4.5)) == 7 + 1  # an exact tie between -10 and 1 goes up


@pytest.mark.parametrize("weighted", [False, True])
def test_iq4_nl_blocks_are_the_c_per_block(weighted):
    x = edge_blocks(32, 40, seed=1)
    rng = np.random.default_rng(2)
    qw = (rng.random((40, 32)) * 10.0 ** rng.uniform(-4, 4, (40, 1)) * (rng.random((40, 32)) < 0.8)).astype(F)
    qw[5] = 0  # a block of zero weights
    q = iq4_nl.FORMAT.blocks(iq4_nl.quantize(x.reshape(1, -1), qw.reshape(-1) if weighted else None))[0]
    for b in range(len(x)):
        dh, _, _, qs_bytes = c_iq4_nl_impl(x[b], qw[b] if weighted else None)
        assert q["d"][b] == dh and q["qs"][b].tolist() == qs_bytes, b


@pytest.mark.parametrize("weighted", [False, True])
def test_iq4_xs_super_blocks_are_the_c_per_block(weighted):
    x = edge_blocks(256, 6, seed=3)
    x[1, 64:96] = 0  # a zero block inside a normal super-block
    x[2, :128] *= 1e5  # two scales of very different size
    rng = np.random.default_rng(4)
    qw = (rng.random(256) * (rng.random(256) < 0.7) * 100).astype(F)
    q = iq4_xs.FORMAT.blocks(iq4_xs.quantize(x.reshape(1, -1), np.tile(qw, 6) if weighted else None))[0]
    for b in range(len(x)):
        dh, scales_h, scales_l, qs_bytes = c_iq4_nl_impl(x[b], qw if weighted else None)
        assert (q["d"][b], q["scales_h"][b]) == (dh, scales_h), b
        assert q["scales_l"][b].tolist() == scales_l and q["qs"][b].tolist() == qs_bytes, b


def test_iq4_batches_never_change_a_bit(monkeypatch):
    rng = np.random.default_rng(9)
    x = rng.standard_t(4, (2, 768)).astype(F)
    w = rng.random(x.shape[1]).astype(F)
    want = {m: (m.quantize(x), m.quantize(x, w)) for m in (iq4_nl, iq4_xs)}
    for batch in (1, 3, 7):
        monkeypatch.setattr(_iq4, "BATCH_BLOCKS", batch)
        monkeypatch.setattr(iq4_xs, "BATCH_SUPERBLOCKS", batch)
        for m, (plain, weighted) in want.items():
            np.testing.assert_array_equal(m.quantize(x), plain)
            np.testing.assert_array_equal(m.quantize(x, w), weighted)


def test_iq4_zero_blocks():
    """IQ4_NL: scale +0 and index 8 (level 1, nearest 0); IQ4_XS: d = -0.0
    (-max_scale/32 with max_scale +0), ls = 32 everywhere, index 8."""
    z = np.zeros((1, 256), F)
    assert qs.quantize("iq4_nl", z[:, :32]).tobytes().hex() == "0000" + "88" * 16
    assert qs.quantize("iq4_xs", z).tobytes().hex() == "0080" + "aaaa" + "00" * 4 + "88" * 128
    assert qs.quantize("iq4_nl", np.full((1, 32), F(1e-16))).tobytes().hex() == "0000" + "88" * 16
    for fmt in ("iq4_nl", "iq4_xs"):
        y = qs.dequantize(fmt, qs.quantize(fmt, z))
        assert not y.any()


def test_iq4_imatrix_is_used():
    rng = np.random.default_rng(5)
    x = rng.standard_normal((4, 512)).astype(F)
    w = (10.0 ** rng.uniform(-3, 3, 512)).astype(F)
    for fmt in ("iq4_nl", "iq4_xs"):
        assert not np.array_equal(qs.quantize(fmt, x), qs.quantize(fmt, x, imatrix=w)), fmt


# ------------------------------------------------------------------ FP4 scales

def test_e8m0_half_is_the_c_conversion():
    for e in range(256):
        bits = (0x00200000 << e) if e < 2 else (e - 1) << 23
        assert _bits(_fp4.E8M0_HALF[e]) == bits
        assert _fp4.E8M0_HALF[e] == F(2.0 ** (e - 128))


def test_ue4m3_decode_is_the_c_conversion():
    for b in range(256):
        assert _same(_fp4.UE4M3_HALF[b], c_ue4m3_to_fp32(b)), b
    assert _fp4.UE4M3_HALF[0x7F] == 0 and _fp4.UE4M3_HALF[0xFF] == 240  # bit 7 ignored but for 0x7F
    assert _fp4.UE4M3_HALF[0x7E] == 224  # 448 / 2


def test_fp32_to_ue4m3_is_the_c_conversion():
    rng = np.random.default_rng(6)
    codes = np.arange(1, 0x7F)
    exact = np.array([c_ue4m3_to_fp32(int(c)) * 2 for c in codes], dtype=F)
    mids = (exact[:-1] + exact[1:]) / 2
    x = np.concatenate([exact, mids, np.nextafter(mids, 0), np.nextafter(mids, 1e9), np.nextafter(exact, 0),
                        [0, -0.0, -1, np.nan, np.inf, -np.inf, 1e-45, 1e-40, 2**-10, 2**-6, 255.9, 256, 447, 448,
                         449, 1e30], 2.0 ** rng.uniform(-12, 10, 5000)]).astype(F)
    got = _fp4.fp32_to_ue4m3(x)
    for xi, g in zip(x, got):
        assert g == c_fp32_to_ue4m3(xi), xi
    # round trip on the codes it writes; 256 .. 416 are never written
    assert np.array_equal(_fp4.fp32_to_ue4m3(exact[exact < 256]), codes[exact < 256])
    assert set(_fp4.fp32_to_ue4m3(np.linspace(256, 448, 1000, dtype=F)).tolist()) == {0x7E}


def test_best_index_mxfp4_is_the_c_loop():
    rng = np.random.default_rng(7)
    d = F(0.25)
    kv = KVALUES_MXFP4.astype(F) * d
    x = np.concatenate([kv, (kv[:8, None] + kv[None, :8]).ravel() / 2, -(kv[:8, None] + kv[None, :8]).ravel() / 2,
                        rng.uniform(-4, 4, 500), [0, -0.0, 100, -100]]).astype(F)
    got = _fp4.best_index_mxfp4(x, d)
    for xi, g in zip(x, got):
        assert g == c_best_index_mxfp4(xi, d), xi
    assert 8 not in got  # "-0" ties with code 0, the first wins


def _libm_log2f():
    name = ctypes.util.find_library("m")
    if name is None:
        return None
    libm = ctypes.CDLL(name)
    libm.log2f.restype = ctypes.c_float
    libm.log2f.argtypes = [ctypes.c_float]
    return libm.log2f


def _binade_edges(top: int, bottom: int) -> np.ndarray:
    """For every binade [2**E, 2**(E+1)) of positive float32: its ``top``
    largest and ``bottom`` smallest floats."""
    starts = np.ldexp(np.ones(277, F), np.arange(-149, 128)).astype(F).view(np.uint32).astype(np.int64)
    ends = np.append(starts[1:], 0x7F800000)
    near = np.concatenate([e - 1 - np.arange(top) for e in ends] + [s + np.arange(bottom) for s in starts])
    return np.unique(near[near > 0]).astype(np.uint32).view(F)


def test_floor_log2f_is_glibc_log2f_at_every_binade_edge():
    """The spec's log2f is the correctly rounded one; glibc's log2f agrees on
    every positive float32 (checked exhaustively when this was written). Only
    the largest floats of a binade can round up to the next integer (fewer
    than 64, see _fp4), so the edges of all 277 binades are the cases."""
    log2f = _libm_log2f()
    x = _binade_edges(top=96, bottom=8)
    got = _fp4.floor_log2f(x)
    exact = np.frexp(x.astype(np.float64))[1] - 1
    assert np.all((got == exact) | (got == exact + 1))
    assert int((got != exact).sum()) == int(_fp4._log2_round_up_counts().sum())
    if log2f is None:
        pytest.skip("no libm to compare with")
    for xi, g in zip(x, got):
        assert math.floor(log2f(float(xi))) == g, xi


@pytest.mark.slow
def test_floor_log2f_is_glibc_log2f_on_random_floats():
    log2f = _libm_log2f()
    if log2f is None:
        pytest.skip("no libm to compare with")
    bits = np.random.default_rng(8).integers(1, 0x7F800000, 300_000).astype(np.uint32)
    x = np.concatenate([bits.view(F), _binade_edges(top=4096, bottom=64)])
    got = _fp4.floor_log2f(x)
    for xi, g in zip(x, got):
        assert math.floor(log2f(float(xi))) == g, xi


def test_mxfp4_exponent_quirks():
    pow2 = np.ldexp(F(1), np.arange(-120, 127)).astype(F)
    below = np.nextafter(pow2, F(0))
    assert np.array_equal(_fp4.mxfp4_exponent(pow2), (np.arange(-120, 127) + 125).astype(np.uint8))
    # the float just below 2**k has log2f == k (rounds up), except for k = -1, 0, 1, 2
    k = np.arange(-120, 127)
    expected = k + 125 - ((k >= -1) & (k <= 2))
    assert np.array_equal(_fp4.mxfp4_exponent(below), expected.astype(np.uint8))
    top = np.nextafter(F(2.0**127), F(0))
    assert _fp4.mxfp4_exponent(top) == 252 and _fp4.mxfp4_exponent(F(3.4e38)) == 252
    # below 2**-125 the negative float wraps as x86-64's conversion does
    tiny = np.array([2.0**-125, 2.0**-126, 1.5 * 2**-127, 1e-39, 1e-45, 0], dtype=F)
    assert _fp4.mxfp4_exponent(tiny).tolist() == [0, 255, 254, 251, 232, 0]


def test_mxfp4_tiny_block_stores_an_invalid_exponent():
    x = np.zeros((1, 64), F)
    x[0, 3] = 2.0**-126
    x[0, 40] = 1.0
    q = qs.quantize("mxfp4", x)
    assert q[0, 0] == 0xFF
    assert [(v.block, v.field, v.bits) for v in qs.validate("mxfp4", q)] == [(0, "e", 0xFF)]
    assert not qs.dequantize("mxfp4", q)[0, :32].any()  # codes 0 at that scale


def test_mxfp4_values():
    """The largest magnitude lands on the top levels (8 or 12 half-scales);
    elements keep their sign; zero blocks are all zero bytes."""
    x = np.array([[6.0, -3.0, 1.0, 0.5] + [0.0] * 28], dtype=F)
    q = qs.quantize("mxfp4", x)
    assert q[0, 0] == 127 and np.array_equal(qs.dequantize("mxfp4", q), x)  # E2M1 values at scale 1
    assert not qs.quantize("mxfp4", np.zeros((1, 32), F)).any()


def test_nvfp4_scale_quirks():
    x = np.zeros((1, 64), F)
    x[0, 0] = 6 * 300.0  # amax/6 = 300: in [256, 448] -> 448
    x[0, 16] = 6 * 1e-3
    x[0, 32] = 6.0
    q = nvfp4.FORMAT.blocks(qs.quantize("nvfp4", x))[0, 0]
    assert q["d"].tolist() == [0x7E, _fp4.fp32_to_ue4m3(F(1e-3)), 0x38, 0]
    y = qs.dequantize("nvfp4", qs.quantize("nvfp4", x))[0]
    assert y[32] == 6.0 and y[0] == 8 * 224  # 1800 is nearest code 6 (E2M1 4) times half of 448
    junk = np.zeros((1, 36), np.uint8)
    junk[0, :4] = [0x7F, 0xFF, 0x80, 0x08]
    junk[0, 4:] = 0x11  # code 1 everywhere
    y = qs.dequantize("nvfp4", junk)[0]
    assert y[0] == 0 and y[16] == 240 and y[32] == 0 and y[48] == F(1 / 128)
    assert qs.validate("nvfp4", junk) == []


# ------------------------------------------------------------------ ternary and binary

def test_tq1_0_trits_and_packing_are_the_c():
    x = edge_blocks(256, 20, seed=9)
    q = tq1_0.FORMAT.blocks(tq1_0.quantize(x.reshape(1, -1)))[0]
    for b in range(len(x)):
        xs = x[b]
        amax = F(np.abs(xs).max())
        with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
            iscale = F(1) / amax if amax else F(0)
            v = xs * iscale
        t = [int(math.floor(abs(vi) + 0.5)) * (1 if vi >= 0 else -1) + 1 if np.isfinite(vi) else 1 for vi in v]
        want = []
        for start, count, ntrits in ((0, 32, 5), (160, 16, 5)):
            for m in range(count):
                val = 0
                for n in range(ntrits):
                    val = val * 3 + t[start + m + count * n]
                want.append((val * 256 + 242) // 243)
        for m in range(4):
            val = 0
            for n in range(4):
                val = val * 3 + t[240 + m + 4 * n]
            want.append((val * 3 * 256 + 242) // 243)
        assert q["qs"][b].tolist() + q["qh"][b].tolist() == want, b
        assert q["d"][b] == np.float16(amax).view(np.uint16)


def test_tq1_0_decodes_every_byte_like_the_c():
    data = np.zeros((1, 54), np.uint8)
    for start in range(0, 256, 52):  # every byte value through every byte position
        data[0, :52] = (np.arange(52) + start) % 256
        data[0, 52:] = np.array([F(1.5)], np.float16).view(np.uint8)
        y = tq1_0.dequantize(data)[0]
        for j in range(256):
            byte = int(data[0, tq1_0.TRIT_BYTE[j]])
            t = (((byte * int(tq1_0.TRIT_POW3[j])) & 255) * 3) >> 8
            assert y[j] == F(t - 1) * F(1.5), (start, j)


def test_tq2_0_packing_and_code_3():
    x = edge_blocks(256, 10, seed=10)
    q = tq2_0.FORMAT.blocks(tq2_0.quantize(x.reshape(1, -1)))[0]
    codes = tq2_0.codes(q["qs"])
    for b in range(len(x)):
        for c in range(2):
            for m in range(32):  # qs[32c + m] bits 2n = element 128c + m + 32n
                assert q["qs"][b, 32 * c + m] == sum(int(codes[b, 128 * c + m + 32 * n]) << 2 * n for n in range(4))
    assert 3 not in codes
    block = np.full((1, 66), 0xFF, np.uint8)
    block[0, 64:] = np.array([1.0], np.float16).view(np.uint8)
    assert (tq2_0.dequantize(block) == 2).all()  # code 3 decodes to +2*d


def test_ternary_zero_and_tiny_blocks():
    """Zero blocks store only zero trits; so do blocks whose 1/d overflows,
    because lroundf(+-inf or NaN) is LONG_MIN on x86-64 glibc."""
    for x in (np.zeros((1, 256), F), np.full((1, 256), F(1e-39)) * np.sign(np.arange(256) - 100).astype(F)):
        q1, q2 = qs.quantize("tq1_0", x), qs.quantize("tq2_0", x)
        assert q1[0, :48].tolist() == [128] * 48 and q1[0, 48:52].tolist() == [127] * 4 and not q1[0, 52:].any()
        assert q2[0, :64].tolist() == [0x55] * 64 and not q2[0, 64:].any()


def test_q1_0_rules():
    x = np.random.default_rng(11).standard_normal((1, 256)).astype(F)
    x[0, :3] = [-0.0, 0.0, -1e-30]
    q = q1_0.FORMAT.blocks(q1_0.quantize(x))[0]
    bits = q1_0.signs(q["qs"])
    assert bits[0, 0] and bits[0, 1] and not bits[0, 2]  # x >= 0: -0.0 counts as positive
    for b in range(2):
        total = F(0)
        for v in np.abs(x[0, 128 * b:128 * b + 128]):
            total = total + v
        assert q["d"][b] == np.float16(total / F(128)).view(np.uint16)
        for j in range(128):
            assert bool((q["qs"][b, j // 8] >> (j % 8)) & 1) == bool(x[0, 128 * b + j] >= 0)
    d = f16_bits_to_f32(q["d"])
    y = q1_0.dequantize(q1_0.quantize(x))[0].reshape(2, 128)
    assert np.array_equal(y, np.where(bits, d[:, None], -d[:, None]))


def test_q2_0_never_writes_code_3_but_decodes_it():
    x = np.random.default_rng(12).standard_t(3, (16, 4096)).astype(F)
    codes = q2_0.codes(q2_0.FORMAT.blocks(q2_0.quantize(x))["qs"])
    counts = np.bincount(codes.ravel(), minlength=4)
    assert counts[3] == 0 and counts[:3].min() > 0
    block = np.zeros((1, 18), np.uint8)
    block[0, :2] = np.array([0.5], np.float16).view(np.uint8)
    block[0, 2:] = 0b11100100  # codes 0, 1, 2, 3
    assert q2_0.dequantize(block)[0, :4].tolist() == [-0.5, 0.0, 0.5, 1.0]


def test_q2_0_packing_and_tiny_blocks():
    x = edge_blocks(64, 10, seed=13)
    q = q2_0.FORMAT.blocks(q2_0.quantize(x.reshape(1, -1)))[0]
    for b in range(len(x)):
        amax = F(np.abs(x[b]).max())
        with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
            iscale = F(1) / amax if amax > 0 else F(0)
            v = x[b] * iscale
        want = [min(3, max(0, (int(math.copysign(math.floor(abs(vi) + 0.5), vi)) if np.isfinite(vi) else -2**31) + 1))
                for vi in v]
        assert [(q["qs"][b, j // 4] >> 2 * (j % 4)) & 3 for j in range(64)] == want, b
    tiny = np.full((1, 64), F(1e-39))
    tiny[0, ::2] = 0
    assert not qs.quantize("q2_0", tiny).any()  # 1/d overflows: every code converts from +-inf/NaN to INT_MIN -> 0


# ------------------------------------------------------------------ dot products

def _c_dot(fmt: str, wq: np.ndarray, aq: np.ndarray) -> np.ndarray:
    """Each block's term as ggml's _generic function computes it (float32,
    scalar), then the canonical reduction."""
    mod = MODULES[fmt]
    w = mod.FORMAT.blocks(wq)[0]
    act = mod.FORMAT.vec_dot_format
    a = (q8_0 if act == "q8_0" else q8_k).FORMAT.blocks(aq[None, :])[0]
    values = mod.dequantize(wq)[0]  # decoded weights; dividing by the scale recovers the integer levels
    terms = []
    per = mod.FORMAT.block_size
    for i in range(w.shape[0]):
        if fmt == "iq4_nl":
            levels = KVALUES_IQ4NL[np.concatenate([w["qs"][i] & 15, w["qs"][i] >> 4])].astype(int)
            sumi = int((levels * a["qs"][i].astype(int)).sum())
            terms.append((f16_bits_to_f32(a["d"][i]) * f16_bits_to_f32(w["d"][i])) * F(sumi))
        elif fmt == "mxfp4":
            levels = KVALUES_MXFP4[np.concatenate([w["qs"][i] & 15, w["qs"][i] >> 4])].astype(int)
            sumi = int((levels * a["qs"][i].astype(int)).sum())
            terms.append((f16_bits_to_f32(a["d"][i]) * _fp4.E8M0_HALF[w["e"][i]]) * F(sumi))
        elif fmt == "nvfp4":
            sumf = F(0)
            for s in range(4):
                byte = w["qs"][i, 8 * s:8 * s + 8]
                levels = KVALUES_MXFP4[np.concatenate([byte & 15, byte >> 4])].astype(int)
                blk = a[2 * i + s // 2]
                sumi = int((levels * blk["qs"][16 * (s % 2):16 * (s % 2) + 16].astype(int)).sum())
                sumf = sumf + f16_bits_to_f32(blk["d"]) * _fp4.UE4M3_HALF[w["d"][i, s]] * F(sumi)
            terms.append(sumf)
        elif fmt in ("q1_0", "q2_0"):
            nsub = per // 32
            signs = (values[per * i:per * (i + 1)] / f16_bits_to_f32(w["d"][i])).round().astype(int)
            sumi = F(0)
            for k in range(nsub):
                blk = a[nsub * i + k]
                sumi = sumi + f16_bits_to_f32(blk["d"]) * F(int((signs[32 * k:32 * k + 32]
                                                                 * blk["qs"].astype(int)).sum()))
            terms.append(f16_bits_to_f32(w["d"][i]) * sumi)
        elif fmt in ("tq1_0", "tq2_0"):
            t = (values[256 * i:256 * (i + 1)] / f16_bits_to_f32(w["d"][i])).round().astype(int)
            total = int((t * a["qs"][i].astype(int)).sum())
            terms.append(F(total) * (f16_bits_to_f32(w["d"][i]) * a["d"][i]))
        elif fmt == "iq4_xs":
            d4d8 = f16_bits_to_f32(w["d"][i]) * a["d"][i]
            ls = iq4_xs.block_scale_codes(w[i:i + 1])[0]
            sumf = F(0)
            for b in range(8):
                byte = w["qs"][i, 16 * b:16 * b + 16]
                levels = KVALUES_IQ4NL[np.concatenate([byte & 15, byte >> 4])].astype(int)
                sumi = int((levels * a["qs"][i, 32 * b:32 * b + 32].astype(int)).sum())
                sumf = sumf + (d4d8 * F(int(ls[b]) - 32)) * F(sumi)
            terms.append(sumf)
    return canonical_dot(np.array(terms, dtype=F))


@pytest.mark.parametrize("fmt", FORMATS)
def test_vec_dot_is_the_stated_sum(fmt):
    rng = np.random.default_rng(14)
    mod = MODULES[fmt]
    n = 256 * 18
    x = rng.standard_t(4, (1, n)).astype(F)
    act = qs.quantize(mod.FORMAT.vec_dot_format, rng.standard_normal(n).astype(F))
    wq = mod.quantize(x)
    got = mod.vec_dot(wq, act)
    assert _same(got[0], _c_dot(fmt, wq, act))
    assert _same(qs.vec_dot(fmt, wq, act), got)
    exact = (mod.dequantize(wq).astype(np.float64) * qs.dequantize(mod.FORMAT.vec_dot_format, act)).sum()
    assert abs(float(got[0]) - exact) <= 1e-5 * np.abs(mod.dequantize(wq) * qs.dequantize(
        mod.FORMAT.vec_dot_format, act)).sum()


# ------------------------------------------------------------------ round trip, imatrix, bad input

#: Relative RMS error bound of quantize -> dequantize on Gaussian rows.
RMSE_BOUND = {"iq4_nl": 0.12, "iq4_xs": 0.12, "tq1_0": 0.85, "tq2_0": 0.85, "mxfp4": 0.15, "nvfp4": 0.12,
              "q1_0": 0.65, "q2_0": 0.75}


@pytest.mark.parametrize("fmt", FORMATS)
def test_round_trip_error_is_small(fmt):
    x = np.random.default_rng(15).standard_normal((4, 1024)).astype(F)
    y = qs.dequantize(fmt, qs.quantize(fmt, x))
    rel = float(np.sqrt(((y - x) ** 2).mean() / (x ** 2).mean()))
    assert rel < RMSE_BOUND[fmt], rel


@pytest.mark.parametrize("fmt", [f for f in FORMATS if not f.startswith("iq4")])
def test_ignored_imatrix_changes_nothing(fmt):
    x = np.random.default_rng(16).standard_normal((2, 512)).astype(F)
    w = np.random.default_rng(17).random(512).astype(F)
    assert np.array_equal(qs.quantize(fmt, x), qs.quantize(fmt, x, imatrix=w))


@pytest.mark.parametrize("fmt", FORMATS)
def test_rows_must_be_a_multiple_of_the_block(fmt):
    spec = MODULES[fmt].FORMAT
    n = spec.block_size + 16
    with pytest.raises(errors.ShapeError, match=f"{fmt}: rows must hold a positive multiple of {spec.block_size} "
                                                f"elements .* got {n}"):
        qs.quantize(fmt, np.zeros(n, F))
    with pytest.raises(errors.ShapeError, match=rf"{fmt}: a row must be 0 \+ k\*{spec.type_size} bytes"):
        qs.dequantize(fmt, np.zeros(spec.type_size + 1, np.uint8))
    with pytest.raises(errors.NonFiniteInputError, match=f"{fmt}: input must be finite"):
        qs.quantize(fmt, np.full(spec.block_size, np.nan, F))


@pytest.mark.parametrize("fmt", [f for f in FORMATS if f not in ("mxfp4", "nvfp4")])
def test_validate_names_blocks_with_non_finite_scales(fmt):
    spec = MODULES[fmt].FORMAT
    q = qs.quantize(fmt, np.random.default_rng(18).standard_normal((2, 2 * 256)).astype(F))
    assert qs.validate(fmt, q) == []
    at = spec.offsets()["d"]
    q[0, 1 * spec.type_size + at:1 * spec.type_size + at + 2] = np.array([0x7C00], np.uint16).view(np.uint8)
    q[1, at:at + 2] = np.array([0xFE01], np.uint16).view(np.uint8)
    assert [(v.row, v.block, v.field, v.reason) for v in qs.validate(fmt, q)] == [(0, 1, "d", "inf"),
                                                                               (1, 0, "d", "NaN")]
