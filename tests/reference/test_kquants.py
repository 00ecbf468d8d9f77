"""The K-quant spec on its own: the vectorized scale searches against
one-block-at-a-time transcriptions of the C, the bit planes and 6-bit scale
packings against their stated formulas, the block layouts against
ggml-common.h, Q8_K's rules, the dot product against its stated
definition, batch-size independence, and bad input (row lengths that are not
a multiple of 256, non-finite scales reported by ``validate``)."""

from __future__ import annotations

import numpy as np
import pytest

import quantspec as qs
from quantspec import errors
from quantspec.reference import _kquants, _search, q2_k, q3_k, q4_k, q5_k, q6_k, q8_k
from quantspec.reference._numerics import canonical_dot, f16_bits_to_f32, nearest_int

F = np.float32
KQUANTS = ["q2_k", "q3_k", "q4_k", "q5_k", "q6_k"]
MODULES = {"q2_k": q2_k, "q3_k": q3_k, "q4_k": q4_k, "q5_k": q5_k, "q6_k": q6_k, "q8_k": q8_k}


# ------------------------------------------------- the C, one block at a time

def ni(v) -> int:
    return int(nearest_int(np.array([v], dtype=F))[0])


def clamp(v, lo, hi):
    return max(lo, min(hi, v))


def c_make_qkx2(x, w, nmax, rmin, rdelta, nstep, use_mad):
    """``make_qkx2_quants`` transcribed line by line (float32 scalars)."""
    n = len(x)
    mn, mx, sum_w = x[0], x[0], w[0]
    sum_x = sum_w * x[0]
    for i in range(1, n):
        if x[i] < mn:
            mn = x[i]
        if x[i] > mx:
            mx = x[i]
        sum_w = sum_w + w[i]
        sum_x = sum_x + w[i] * x[i]
    if mn > 0:
        mn = F(0)
    if mx == mn:
        return F(0), -mn, [0] * n
    iscale = F(nmax) / (mx - mn)
    scale = F(1) / iscale
    best = F(0)
    L = []
    for i in range(n):
        L.append(clamp(ni(iscale * (x[i] - mn)), 0, nmax))
        diff = scale * F(L[i]) + mn - x[i]
        diff = abs(diff) if use_mad else diff * diff
        best = best + w[i] * diff
    for step in range(nstep + 1):
        iscale = (F(rmin) + F(rdelta) * F(step) + F(nmax)) / (mx - mn)
        sum_l = sum_l2 = sum_xl = F(0)
        aux = []
        for i in range(n):
            l = clamp(ni(iscale * (x[i] - mn)), 0, nmax)
            aux.append(l)
            sum_l = sum_l + w[i] * F(l)
            sum_l2 = sum_l2 + w[i] * F(l) * F(l)
            sum_xl = sum_xl + w[i] * F(l) * x[i]
        det = sum_w * sum_l2 - sum_l * sum_l
        if det > 0:
            this_scale = (sum_w * sum_xl - sum_x * sum_l) / det
            this_min = (sum_l2 * sum_x - sum_l * sum_xl) / det
            if this_min > 0:
                this_min = F(0)
                this_scale = sum_xl / sum_l2
            cur = F(0)
            for i in range(n):
                diff = this_scale * F(aux[i]) + this_min - x[i]
                diff = abs(diff) if use_mad else diff * diff
                cur = cur + w[i] * diff
            if cur < best:
                L, best, scale, mn = aux, cur, this_scale, this_min
    return scale, -mn, L


def _signed_max(x):
    amax, vmax = F(0), F(0)
    for v in x:
        if abs(v) > amax:
            amax, vmax = abs(v), v
    return amax, vmax


def c_make_qx(x, nmax, qw):
    """``make_qx_quants(n, nmax, x, L, rmse_type=1, qw)``."""
    n = len(x)
    amax, vmax = _signed_max(x)
    if amax < F(1e-15):
        return F(0), [0] * n
    w = [qw[i] if qw is not None else x[i] * x[i] for i in range(n)]

    def trial(iscale):
        L = [clamp(ni(iscale * x[i]), -nmax, nmax - 1) for i in range(n)]
        sumlx = suml2 = F(0)
        for i in range(n):
            sumlx = sumlx + w[i] * x[i] * F(L[i])
            suml2 = suml2 + w[i] * F(L[i]) * F(L[i])
        return L, sumlx, suml2

    L, sumlx, suml2 = trial(F(-nmax) / vmax)
    scale = sumlx / suml2 if suml2 != 0 else F(0)
    best = scale * sumlx
    for step in range(-9, 10):
        if step:
            cand, sumlx, suml2 = trial(-(F(nmax) + F(0.1) * F(step)) / vmax)
            if suml2 > 0 and sumlx * sumlx > best * suml2:
                L, scale = cand, sumlx / suml2
                best = scale * sumlx
    return scale, [v + nmax for v in L]


def c_make_q3(x, nmax):
    """``make_q3_quants(n, nmax, x, L, do_rmse=true)``."""
    n = len(x)
    amax, vmax = _signed_max(x)
    if amax < F(1e-15):
        return F(0), [0] * n
    iscale = F(-nmax) / vmax
    L = [clamp(ni(iscale * x[i]), -nmax, nmax - 1) for i in range(n)]
    sumlx = suml2 = F(0)
    for i in range(n):
        w = x[i] * x[i]
        sumlx = sumlx + w * x[i] * F(L[i])
        suml2 = suml2 + w * F(L[i]) * F(L[i])
    for _ in range(5):
        changed = 0
        for i in range(n):
            w = x[i] * x[i]
            slx = sumlx - w * x[i] * F(L[i])
            if slx > 0:
                sl2 = suml2 - w * F(L[i]) * F(L[i])
                new = clamp(ni(x[i] * sl2 / slx), -nmax, nmax - 1)
                if new != L[i]:
                    slx = slx + w * x[i] * F(new)
                    sl2 = sl2 + w * F(new) * F(new)
                    if sl2 > 0 and slx * slx * suml2 > sumlx * sumlx * sl2:
                        L[i], sumlx, suml2 = new, slx, sl2
                        changed += 1
        if not changed:
            break
    return (sumlx / suml2 if suml2 > 0 else F(0)), [v + nmax for v in L]


def c_make_qp(x, nmax, w):
    """``make_qp_quants``: codes kept as the C's uint8_t."""
    n = len(x)
    vmax = F(0)
    for v in x:
        vmax = vmax if vmax > v else v
    if vmax < F(1e-15):
        return F(0), [0] * n
    iscale = F(nmax) / vmax
    L = [ni(iscale * x[i]) & 0xFF for i in range(n)]
    scale = F(1) / iscale
    best = F(0)
    for i in range(n):
        diff = x[i] - scale * F(L[i])
        best = best + w[i] * diff * diff
    for step in (-4, -3, -2, -1, 1, 2, 3, 4):
        iscale_is = (F(0.1) * F(step) + F(nmax)) / vmax
        scale_is = F(1) / iscale_is
        mse = F(0)
        for i in range(n):
            diff = x[i] - scale_is * F(min(nmax, ni(iscale_is * x[i])))
            mse = mse + w[i] * diff * diff
        if mse < best:
            best, iscale = mse, iscale_is
    sumlx = suml2 = F(0)
    for i in range(n):
        l = min(nmax, ni(iscale * x[i]))
        L[i] = l & 0xFF
        sumlx = sumlx + w[i] * x[i] * F(l)
        suml2 = suml2 + w[i] * F(l) * F(l)
    for _ in range(5):
        changed = 0
        for i in range(n):
            slx = sumlx - w[i] * x[i] * F(L[i])
            sl2 = suml2 - w[i] * F(L[i]) * F(L[i])
            if slx > 0 and sl2 > 0:
                new = min(nmax, ni(x[i] * sl2 / slx))
                if new != L[i]:
                    slx = slx + w[i] * x[i] * F(new)
                    sl2 = sl2 + w[i] * F(new) * F(new)
                    if slx * slx * suml2 > sumlx * sumlx * sl2:
                        L[i], sumlx, suml2 = new & 0xFF, slx, sl2
                        changed += 1
        if not changed:
            break
    return (sumlx / suml2 if suml2 > 0 else F(0)), L


def edge_blocks(n: int, count: int, seed: int) -> np.ndarray:
    """Blocks of normal, Student-t, constant, zero, outlier, tie, tiny and huge data."""
    rng = np.random.default_rng(seed)
    out = []
    for b in range(count):
        kind = b % 9
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
        out.append(x)
    return np.array(out, dtype=F)


def _same(a, b) -> bool:
    return np.array_equal(np.asarray(a, F).view(np.uint32), np.asarray(b, F).view(np.uint32))


@pytest.mark.parametrize("n,nmax,params,use_mad", [
    (16, 3, (-0.5, 0.1, 15), True),     # Q2_K ref
    (32, 15, (-1.0, 0.1, 20), False),   # Q4_K ref
    (32, 31, (-0.5, 0.1, 15), False),   # Q5_K ref
    (16, 3, (-0.9, 0.05, 36), False),   # Q2_K imatrix (make_qkx3_quants)
])
def test_make_qkx2_quants_is_the_c_per_block(n, nmax, params, use_mad):
    x = edge_blocks(n, 27, seed=n + nmax)
    rng = np.random.default_rng(1)
    for w in (np.abs(x), (np.abs(x) + F(0.3)) * (rng.random(x.shape) < 0.7).astype(F)):
        w = w.astype(F)
        scale, the_min, L = _search.make_qkx2_quants(x, nmax, w, *params, use_mad=use_mad)
        for b in range(len(x)):
            s, m, l = c_make_qkx2(list(x[b]), list(w[b]), nmax, *params, use_mad)
            assert _same(scale[b], s) and _same(the_min[b], m) and list(L[b]) == l, b


@pytest.mark.parametrize("n,nmax,weighted", [(16, 32, False), (16, 4, True), (16, 32, True)])
def test_make_qx_quants_is_the_c_per_block(n, nmax, weighted):
    x = edge_blocks(n, 45, seed=nmax)
    w = (np.random.default_rng(2).random(x.shape) * 3).astype(F) if weighted else None
    scale, L = _search.make_qx_quants(x, nmax, w)
    for b in range(len(x)):
        s, l = c_make_qx(list(x[b]), nmax, None if w is None else list(w[b]))
        assert _same(scale[b], s) and list(L[b]) == l, b


def test_make_q3_quants_is_the_c_per_block():
    x = edge_blocks(16, 60, seed=3)
    scale, L = _search.make_q3_quants(x, 4)
    for b in range(len(x)):
        s, l = c_make_q3(list(x[b]), 4)
        assert _same(scale[b], s) and list(L[b]) == l, b


@pytest.mark.parametrize("n,nmax", [(16, 15), (8, 63)])
def test_make_qp_quants_is_the_c_per_block(n, nmax):
    rng = np.random.default_rng(n)
    x = np.abs(edge_blocks(n, 60, seed=4))
    x[::7, 0] = -x[::7, 0]  # negative scales: codes wrap as uint8_t
    x[3::11] = 0
    w = (rng.random(x.shape) * 10.0 ** rng.uniform(-4, 4, (len(x), 1))).astype(F)
    scale, L = _search.make_qp_quants(x, nmax, w)
    for b in range(len(x)):
        s, l = c_make_qp(list(x[b]), nmax, list(w[b]))
        assert _same(scale[b], s) and list(L[b]) == l, b


@pytest.mark.parametrize("M", [1, 2, 3, 64])
def test_c_sum_adds_rows_in_order(M):
    rng = np.random.default_rng(M)
    for n in (8, 16, 32, 33):
        a = (rng.standard_normal((n, M)) * 10.0 ** rng.uniform(-6, 6, (n, M))).astype(F)
        want = np.zeros(M, dtype=F)
        for i in range(n):
            want = want + a[i]
        assert _same(_search._c_sum(a), want)
    zeros = np.full((4, M), -0.0, dtype=F)
    assert _same(_search._c_sum(zeros), np.zeros(M, F))  # C starts at +0.0
    assert _same(_search._c_sum(zeros, start_at_first=True), zeros[0])


# ------------------------------------------------------------ layout facts

#: ggml-common.h @ d99724f2: (field, byte offset) and block size, per type.
GGML_LAYOUTS = {
    "q2_k": ([("scales", 0), ("qs", 16), ("d", 80), ("dmin", 82)], 84),
    "q3_k": ([("hmask", 0), ("qs", 32), ("scales", 96), ("d", 108)], 110),
    "q4_k": ([("d", 0), ("dmin", 2), ("scales", 4), ("qs", 16)], 144),
    "q5_k": ([("d", 0), ("dmin", 2), ("scales", 4), ("qh", 16), ("qs", 48)], 176),
    "q6_k": ([("ql", 0), ("qh", 128), ("scales", 192), ("d", 208)], 210),
    "q8_k": ([("d", 0), ("qs", 4), ("bsums", 260)], 292),
}


@pytest.mark.parametrize("fmt", list(GGML_LAYOUTS))
def test_layout_is_ggml_common_h(fmt):
    fields, size = GGML_LAYOUTS[fmt]
    spec = MODULES[fmt].FORMAT
    assert spec.block_size == 256 and spec.type_size == size
    assert list(spec.offsets().items()) == fields
    assert spec.vec_dot_format == (None if fmt == "q8_k" else "q8_k")


@pytest.mark.parametrize("fmt,bits,offset", [("q2_k", 2, 0), ("q3_k", 3, 4), ("q4_k", 4, 0), ("q5_k", 5, 0),
                                               ("q6_k", 6, 32)])
def test_code_layout_covers_the_code_fields(fmt, bits, offset):
    mod = MODULES[fmt]
    layout, fields = mod.CODES, {f.name: f for f in mod.FORMAT.fields}
    assert (layout.bits, layout.offset) == (bits, offset)
    assert sorted(bit for _, _, bit in layout.planes) == sorted(
        sum(p.width for _, p, _ in layout.planes[:i]) for i in range(len(layout.planes)))
    for field, plane, _ in layout.planes:
        assert fields[field].ctype == "u8" and fields[field].count == plane.nbytes
    codes = np.random.default_rng(bits).integers(0, 1 << bits, (3, 256)).astype(np.uint8)
    blocks = np.zeros(3, dtype=mod.FORMAT.dtype)
    layout.pack(blocks, codes)
    np.testing.assert_array_equal(layout.unpack(blocks), codes)
    np.testing.assert_array_equal(layout.values(blocks).astype(int), codes.astype(int) - offset)


@pytest.mark.parametrize("plane", [_kquants.TWO_BIT, _kquants.FOUR_BIT, _kquants.ONE_BIT, _kquants.Q6_LOW,
                                   _kquants.Q6_HIGH, _kquants.Q3_SCALE_LOW, _kquants.Q3_SCALE_HIGH])
def test_bit_planes_put_each_element_where_the_tables_say(plane):
    rng = np.random.default_rng(plane.count + plane.width)
    codes = rng.integers(0, 1 << plane.width, (5, plane.count)).astype(np.uint8)
    packed = plane.pack(codes)
    assert packed.shape == (5, plane.nbytes)
    got = (packed[:, plane.byte_of] >> plane.shift_of.astype(np.uint8)) & plane.mask
    np.testing.assert_array_equal(got, codes)
    np.testing.assert_array_equal(plane.unpack(packed), codes)
    # every bit of every byte is used exactly once
    assert sorted(zip(plane.byte_of, plane.shift_of)) == sorted(
        (b, s) for b in range(plane.nbytes) for s in range(0, 8, plane.width))


def test_upstream_packing_formulas():
    """The C packing loops of ggml-quants.c, element by element."""
    e = np.arange(256)
    L = np.random.default_rng(0).integers(0, 64, 256)
    two = _kquants.TWO_BIT.pack((L & 3)[None])[0]
    for j in (0, 128):
        for l in range(32):  # qs[j/4 + l] = L[j+l] | L[j+l+32] << 2 | L[j+l+64] << 4 | L[j+l+96] << 6
            assert two[j // 4 + l] == sum((L[j + l + 32 * s] & 3) << 2 * s for s in range(4))
    four = _kquants.FOUR_BIT.pack((L & 15)[None])[0]
    for j in range(0, 256, 64):
        for l in range(32):  # q[l] = L[j+l] | L[j+l+32] << 4
            assert four[j // 2 + l] == (L[j + l] & 15) | (L[j + l + 32] & 15) << 4
    bits = _kquants.ONE_BIT.pack((L & 1)[None])[0]
    assert all(((bits[j % 32] >> (j // 32)) & 1) == (L[j] & 1) for j in e)  # hmask[j%32] bit j/32
    ql = _kquants.Q6_LOW.pack((L & 15)[None])[0]
    qh = _kquants.Q6_HIGH.pack((L >> 4)[None])[0]
    for h in range(2):
        for l in range(32):
            j = 128 * h
            assert ql[64 * h + l] == (L[j + l] & 15) | (L[j + l + 64] & 15) << 4
            assert ql[64 * h + 32 + l] == (L[j + l + 32] & 15) | (L[j + l + 96] & 15) << 4
            assert qh[32 * h + l] == sum((L[j + l + 32 * s] >> 4) << 2 * s for s in range(4))


def test_six_bit_scale_packings_round_trip():
    rng = np.random.default_rng(7)
    ls, lm = rng.integers(0, 64, (100, 8)), rng.integers(0, 64, (100, 8))
    sc, m = _kquants.unpack_scale_min_k4(_kquants.pack_scale_min_k4(ls, lm))
    np.testing.assert_array_equal(sc, ls)
    np.testing.assert_array_equal(m, lm)
    s16 = rng.integers(0, 64, (100, 16))
    packed = _kquants.pack_scales_q3k(s16)
    np.testing.assert_array_equal(_kquants.unpack_scales_q3k(packed), s16)
    # the C's layout: low nibble of scale j in byte j%8 (high nibble for j >= 8), 2 high bits in byte 8 + j%4
    for j in range(16):
        low = (packed[:, j % 8] >> (4 * (j // 8))) & 15
        high = (packed[:, 8 + j % 4] >> (2 * (j // 4))) & 3
        np.testing.assert_array_equal(low | high << 4, s16[:, j])


def test_get_scale_min_k4_spills_bytes_over_63_like_the_c():
    """Codes above 63 reach the packer only through Q4_K's imatrix path; the
    bits land where the C's ``|=`` puts them."""
    ls = np.array([[200, 1, 2, 3, 255, 5, 6, 7]])
    lm = np.array([[0, 0, 0, 0, 70, 0, 0, 0]])
    packed = _kquants.pack_scale_min_k4(ls, lm)[0]
    assert packed[0] == (200 | (255 >> 4) << 6) & 0xFF
    assert packed[4] == (0 | (70 >> 4) << 6) & 0xFF
    assert packed[8] == (255 & 15) | (70 & 15) << 4


# ------------------------------------------------------------------ Q8_K

def test_q8_k_rules():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((3, 512)).astype(F)
    x[1, :256] = 0
    x[2, 5] = -10.0  # the element of largest magnitude, negative
    b = q8_k.FORMAT.blocks(q8_k.quantize(x))
    np.testing.assert_array_equal(b["bsums"], b["qs"].astype(np.int32).reshape(3, 2, 16, 16).sum(-1))
    assert b["d"][1, 0] == 0 and not b["qs"][1, 0].any() and not b["bsums"][1, 0].any()
    assert b["qs"][2, 0, 5] == -127 and b["d"][2, 0] == F(1) / (F(-127) / F(-10.0))
    y = q8_k.dequantize(q8_k.quantize(x))
    assert np.abs(y - x).max() <= np.abs(x).max() / 127


# ------------------------------------------------------------- dot product

@pytest.mark.parametrize("fmt", KQUANTS)
def test_vec_dot_is_the_stated_sum(fmt):
    """Per super-block ``d*(float)isum - dmin*(float)msum`` with exact integer
    sums, from the decoded codes and sub-block scales; then canonical_dot."""
    rng = np.random.default_rng(3)
    x = rng.standard_t(4, (3, 256 * 20)).astype(F)
    a = rng.standard_normal((1, 256 * 20)).astype(F)
    mod = MODULES[fmt]
    wq, aq = mod.quantize(x), q8_k.quantize(a)
    w, ab = mod.FORMAT.blocks(wq), q8_k.FORMAT.blocks(aq)
    act = ab["qs"].astype(np.int64)
    if fmt == "q2_k":
        codes, sc, mins = (_kquants.TWO_BIT.unpack(w["qs"]).astype(np.int64), w["scales"] & 15, w["scales"] >> 4)
    elif fmt == "q3_k":
        codes, sc, mins = q3_k.codes(w).astype(np.int64), _kquants.unpack_scales_q3k(w["scales"]) - 32, None
    elif fmt == "q6_k":
        codes, sc, mins = q6_k.codes(w).astype(np.int64), w["scales"].astype(np.int64), None
    else:
        codes = (_kquants.FOUR_BIT.unpack(w["qs"]) if fmt == "q4_k" else q5_k.codes(w)).astype(np.int64)
        sc, m8 = _kquants.unpack_scale_min_k4(w["scales"])
        sc, mins = np.repeat(sc, 2, axis=-1), np.repeat(m8, 2, axis=-1)  # per 16 elements
    sub16 = (codes * act).reshape(codes.shape[:-1] + (16, 16)).sum(-1)
    isum = (sub16 * sc.astype(np.int64)).sum(-1)
    terms = (f16_bits_to_f32(w["d"]) * ab["d"]) * isum.astype(F)
    if mins is not None:
        msum = (ab["bsums"].astype(np.int64) * mins.astype(np.int64)).sum(-1)
        terms = terms - (f16_bits_to_f32(w["dmin"]) * ab["d"]) * msum.astype(F)
    want = canonical_dot(terms)
    assert _same(mod.vec_dot(wq, aq[0]), want)
    # bit-exactness is the line above; this checks the float32 result against exact arithmetic,
    # within the float32 rounding bound 2^-16 * sum |w_i a_i| (a few roundings per term and sum level)
    products = mod.dequantize(wq).astype(np.float64) * q8_k.dequantize(aq).astype(np.float64)
    assert (np.abs(want.astype(np.float64) - products.sum(-1)) <= 2.0**-16 * np.abs(products).sum(-1)).all()


# ------------------------------------------------------------ quantize

@pytest.mark.parametrize("fmt", KQUANTS)
def test_batch_size_never_changes_a_bit(fmt, monkeypatch):
    rng = np.random.default_rng(9)
    x = rng.standard_normal((3, 1280)).astype(F)
    w = rng.random(1280).astype(F)
    mod = MODULES[fmt]
    want, want_w = mod.quantize(x), mod.quantize(x, w)
    for batch in (1, 2, 7):
        monkeypatch.setattr(_kquants, "BATCH_SUPERBLOCKS", batch)
        np.testing.assert_array_equal(mod.quantize(x), want)
        np.testing.assert_array_equal(mod.quantize(x, w), want_w)


@pytest.mark.parametrize("fmt", KQUANTS)
def test_round_trip_error_is_small(fmt):
    x = np.random.default_rng(1).standard_normal((4, 1024)).astype(F)
    bits = {"q2_k": 2, "q3_k": 3, "q4_k": 4, "q5_k": 5, "q6_k": 6}[fmt]
    for w in (None, np.ones(1024, F)):
        y = qs.dequantize(fmt, qs.quantize(fmt, x, imatrix=w))
        rel = np.sqrt(((y - x) ** 2).mean() / (x ** 2).mean())
        assert rel < 2.0 ** (1.4 - bits), (fmt, rel)


def test_zero_and_constant_super_blocks():
    z = np.zeros(256, F)
    assert not qs.quantize("q6_k", z).any()  # ggml zeroes the whole block
    for fmt in KQUANTS + ["q8_k"]:
        assert not qs.dequantize(fmt, qs.quantize(fmt, z)).any()
        c = np.full(256, F(-2.5))
        y = qs.dequantize(fmt, qs.quantize(fmt, c))
        assert np.abs(y - c).max() <= 2.5 / 3, fmt


# ------------------------------------------------------------- bad input

@pytest.mark.parametrize("fmt", KQUANTS + ["q8_k"])
def test_rows_must_be_a_multiple_of_256(fmt):
    for n in (32, 300, 255):
        with pytest.raises(errors.ShapeError, match=f"{fmt}: rows must hold a positive multiple of 256 elements"
                                                    f".* got {n}"):
            qs.quantize(fmt, np.zeros(n, F))
    size = qs.format_info(fmt).type_size
    with pytest.raises(errors.ShapeError, match=rf"{fmt}: a row must be 0 \+ k\*{size} bytes"):
        qs.dequantize(fmt, np.zeros(size + 1, np.uint8))


@pytest.mark.parametrize("fmt", KQUANTS + ["q8_k"])
def test_validate_names_blocks_with_non_finite_scales(fmt):
    spec = MODULES[fmt].FORMAT
    q = qs.quantize(fmt, np.random.default_rng(0).standard_normal((2, 1024)).astype(F))
    assert qs.validate(fmt, q) == []
    scale_fields = [f for f in spec.fields if f.ctype in ("f16", "f32")]
    bad = {(0, 3): ("inf", scale_fields[0]), (1, 1): ("NaN", scale_fields[-1])}
    for (row, block), (kind, field) in bad.items():
        at = block * spec.type_size + spec.offsets()[field.name]
        if field.ctype == "f16":
            value = np.array([0x7C00 if kind == "inf" else 0x7E01], np.uint16)
        else:
            value = np.array([0x7F800000 if kind == "inf" else 0x7FC00001], np.uint32)
        q[row, at:at + value.nbytes] = value.view(np.uint8)
    found = qs.validate(fmt, q)
    assert [(v.row, v.block, v.field, v.reason) for v in found] == [
        (0, 3, bad[(0, 3)][1].name, "inf"), (1, 1, bad[(1, 1)][1].name, "NaN")]
    assert "row 0 block 3" in str(found[0])
