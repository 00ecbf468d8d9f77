"""IQ2_XXS, IQ2_XS and IQ2_S against the real libggml: quantize byte for
byte (``ggml_quantize_chunk``: with an importance matrix, which IQ2_XXS and
IQ2_XS require, and without one for IQ2_S), dequantize bit for bit
(``to_float``, on quantized rows, random bytes and special fp16 scales),
the dot products within a stated bound of ggml's ``vec_dot``, ``validate``
as ``ggml_validate_row_data``, and the documented quirks."""

from __future__ import annotations

import ctypes

import numpy as np
import pytest

import quantspec as qs
from quantspec import registry
from quantspec.errors import ImatrixError
from tests.bits import assert_dot_within_bound, assert_same_bits, assert_same_blocks

pytestmark = pytest.mark.oracle

F = np.float32
FORMATS = ["iq2_xxs", "iq2_xs", "iq2_s"]


def random_blocks(fmt: str, rng, nrows: int, nsuper: int) -> np.ndarray:
    """Random bytes, with the fp16 ``d`` of the first rows made moderate
    (random bytes elsewhere: huge, subnormal, inf and NaN scales)."""
    spec = registry.spec(fmt)
    q = rng.integers(0, 256, (nrows, nsuper * spec.type_size), dtype=np.uint8)
    blocks = q.reshape(nrows, nsuper, spec.type_size)
    d = (rng.standard_normal((nrows // 2, nsuper)) * 1e-3).astype(np.float16)
    blocks[:nrows // 2, :, :2] = d.view(np.uint8).reshape(nrows // 2, nsuper, 2)
    return q


SPECIAL_D = [0x0000, 0x8000, 0x0001, 0x8001, 0x03FF, 0x0400, 0x3C00, 0x7BFF, 0xFBFF, 0x7C00, 0xFC00, 0x7E00, 0x7C01,
             0xFE00]


@pytest.mark.parametrize("fmt", FORMATS)
def test_dequantize_random_bytes_matches_ggml(ggml, fmt):
    rng = np.random.default_rng([1, FORMATS.index(fmt)])
    q = random_blocks(fmt, rng, 8, 12)
    with qs.use_isa("reference"):
        ours = qs.dequantize(fmt, q)
    assert_same_bits(ours, ggml.dequantize(fmt, q), f"{fmt} dequantize")


@pytest.mark.parametrize("fmt", FORMATS)
def test_dequantize_special_scales_matches_ggml(ggml, fmt):
    """fp16 d: zeros, subnormals, the largest finite, inf, NaN; every scale code."""
    spec = registry.spec(fmt)
    rng = np.random.default_rng([2, FORMATS.index(fmt)])
    q = rng.integers(0, 256, (len(SPECIAL_D), 4 * spec.type_size), dtype=np.uint8)
    blocks = q.reshape(len(SPECIAL_D), 4, spec.type_size)
    blocks[:, :, :2] = np.array(SPECIAL_D, dtype="<u2").view(np.uint8).reshape(-1, 1, 2)
    with qs.use_isa("reference"):
        ours = qs.dequantize(fmt, q)
    assert_same_bits(ours, ggml.dequantize(fmt, q), f"{fmt} dequantize, special d")


#: |ours - ggml| <= DOT_BOUND * sum_i |w_i * a_i|. Both sum the same exact
#: integer super-block sums times float32 scales, in different orders (ggml's
#: AVX2 path fuses multiply-adds and sums 8 lanes), so each is within
#: ~(nblocks + 16) * 2^-24 of the exact sum of |terms|; 16 super-blocks give
#: < 2^-18, and 2^-16 leaves room.
DOT_BOUND = 2.0**-16


@pytest.mark.parametrize("fmt", FORMATS)
def test_vec_dot_random_bytes_within_bound_of_ggml(ggml, fmt):
    rng = np.random.default_rng([3, FORMATS.index(fmt)])
    nsuper = 16
    q = random_blocks(fmt, rng, 8, nsuper)[:4]  # the rows with moderate scales
    a = (rng.standard_t(3, nsuper * 256)).astype(F)
    aq = qs.quantize("q8_k", a)
    with qs.use_isa("reference"):
        ours = qs.vec_dot(fmt, q, aq)
    theirs = ggml.vec_dot(fmt, q, aq)
    assert_dot_within_bound(fmt, q, aq, ours, theirs, DOT_BOUND)


def _generic_dot_one_super_block(fmt: str, block: bytes, aq: np.ndarray) -> np.float32:
    """``ggml_vec_dot_iq2_*_q8_K_generic`` for one super-block, transcribed
    element by element (Python ints, then the float32 steps of the C)."""
    from quantspec.reference.tables.ggml_iq2 import IQ2S_GRID, IQ2XS_GRID, IQ2XXS_GRID, KSIGNS_IQ2XS

    a = registry.spec("q8_k").blocks(aq[None, :])[0, 0]
    q8 = a["qs"].astype(int)
    d = np.frombuffer(block[:2], dtype="<f2")[0].astype(F)
    bsum = 0
    for ib32 in range(8):
        groups = []  # (grid point, sign byte, scale code) of the 4 groups
        if fmt == "iq2_xxs":
            aux0, aux1 = np.frombuffer(block[2 + 8 * ib32:10 + 8 * ib32], dtype="<u4").tolist()
            groups = [(int(IQ2XXS_GRID[aux0 >> 8 * l & 255]), int(KSIGNS_IQ2XS[aux1 >> 7 * l & 127]), aux1 >> 28)
                      for l in range(4)]
        elif fmt == "iq2_xs":
            qs16 = np.frombuffer(block[2 + 8 * ib32:10 + 8 * ib32], dtype="<u2").tolist()
            sc = block[66 + ib32]
            groups = [(int(IQ2XS_GRID[v & 511]), int(KSIGNS_IQ2XS[v >> 9]), sc >> 4 * (l // 2) & 15)
                      for l, v in enumerate(qs16)]
        else:
            sc, qh = block[74 + ib32], block[66 + ib32]
            groups = [(int(IQ2S_GRID[block[2 + 4 * ib32 + l] | (qh << (8 - 2 * l) & 0x300)]),
                       block[34 + 4 * ib32 + l], sc >> 4 * (l // 2) & 15) for l in range(4)]
        for l, (point, signs, ls) in enumerate(groups):
            sumi = sum((point >> 8 * j & 255) * int(q8[32 * ib32 + 8 * l + j]) * (-1 if signs >> j & 1 else 1)
                       for j in range(8))
            bsum += sumi * (2 * ls + 1)
    return F(F(0.125) * F(F(d * a["d"]) * F(bsum)))


@pytest.mark.parametrize("fmt", FORMATS)
def test_vec_dot_of_one_super_block_is_the_generic_c(fmt):
    """One super-block: the canonical order adds nothing, and
    ``(d * bsum) * 0.125`` has the bits of ggml's ``0.125f * sumf`` (a
    build without fused multiply-adds: the generic C)."""
    rng = np.random.default_rng([4, FORMATS.index(fmt)])
    q = random_blocks(fmt, rng, 8, 1)[:4]
    aq = qs.quantize("q8_k", rng.standard_t(3, 256).astype(F))
    with qs.use_isa("reference"):
        ours = qs.vec_dot(fmt, q, aq)
    expected = np.array([_generic_dot_one_super_block(fmt, row.tobytes(), aq) for row in q], dtype=F)
    assert_same_bits(ours, expected, f"{fmt} vec_dot of one super-block")


def _ggml_validate(ggml, fmt: str, q: np.ndarray) -> bool:
    fn = ggml.base.ggml_validate_row_data
    fn.restype = ctypes.c_bool
    fn.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_size_t]
    q = np.ascontiguousarray(q)
    return bool(fn(registry.spec(fmt).type_id, q.ctypes.data, q.nbytes))


@pytest.mark.parametrize("fmt", FORMATS)
def test_validate_agrees_with_ggml(ggml, fmt):
    spec = registry.spec(fmt)
    rng = np.random.default_rng([5, FORMATS.index(fmt)])
    for d in SPECIAL_D:
        q = rng.integers(0, 256, (1, 3 * spec.type_size), dtype=np.uint8)
        q.reshape(3, spec.type_size)[1, :2] = np.array([d], dtype="<u2").view(np.uint8)
        q.reshape(3, spec.type_size)[[0, 2], :2] = 0
        found = qs.validate(fmt, q)
        assert (not found) == _ggml_validate(ggml, fmt, q), (fmt, hex(d), found)
        if found:
            assert [(v.row, v.block, v.field) for v in found] == [(0, 1, "d")]


@pytest.mark.parametrize("fmt", ["iq2_xxs", "iq2_xs"])
def test_imatrix_is_required(fmt):
    x = np.ones((1, 256), dtype=F)
    with pytest.raises(ImatrixError, match=fmt):
        qs.quantize(fmt, x)
    assert registry.spec(fmt).imatrix == "required"
    assert registry.spec("iq2_s").imatrix == "accepted"


# ------------------------------------------------------------------ quantize

KINDS = ["normal", "student_t", "edges"]
IMATRICES = ["none", "ones", "zeros", "ratios", "all_zero"]


def inputs(kind: str, seed: int = 0, nrows: int = 4, n: int = 1024) -> np.ndarray:
    rng = np.random.default_rng([seed, KINDS.index(kind)])
    if kind == "normal":
        x = rng.standard_normal((nrows, n))
    elif kind == "student_t":
        x = rng.standard_t(3, (nrows, n))
    else:
        x = edge_rows(rng, n)
    return x.astype(F)


def edge_rows(rng, n: int) -> np.ndarray:
    """Every super-block of 256 an edge case: zero, signed zeros, constant
    (all signs equal: an even or odd count of negatives per group), one
    outlier, zero blocks of 16/32 at the start, middle and end, tiny values
    (1e-20: weights underflow; 1e-41: subnormal), values at the zero
    thresholds (1e-15, 1e-8), large values (1e12, below where ggml aborts),
    exact ties, one negative element per group (the parity flip), one half
    many orders of magnitude below the other."""
    normal = lambda: rng.standard_normal(256)  # noqa: E731
    cases = [np.zeros(256), np.where(rng.random(256) < 0.5, -0.0, 0.0), np.full(256, 3.0), np.full(256, -0.75)]
    z = normal() * 0.01
    z[77] = 50.0
    cases.append(z)
    for zero_ranges in ([(0, 16)], [(112, 144)], [(240, 256)], [(0, 32), (64, 96), (160, 176)], [(0, 224)]):
        z = normal()
        for a, b in zero_ranges:
            z[a:b] = 0.0
        cases.append(z)
    cases += [normal() * 1e-20, normal() * 1e-41, normal() * 1e-15, np.abs(normal()) * 1e-8, normal() * 2e-8,
              normal() * 1e12, np.round(normal() * 4) / 2]
    z = np.abs(normal()) + 0.5
    z[::8] *= -1  # one negative element per group of 8: an odd count
    cases.append(z)
    z = -np.abs(normal()) - 0.1
    z[3::8] *= -1  # seven negative elements per group
    cases.append(z)
    z = normal()
    z[:128] *= 1e-6
    cases.append(z)
    per_row = n // 256
    rows = -(-len(cases) // per_row)
    out = rng.standard_normal((rows * per_row, 256))
    out[:len(cases)] = np.array(cases)
    return out.reshape(rows, n)


def imatrix(kind: str, n: int) -> np.ndarray | None:
    rng = np.random.default_rng(11)
    if kind == "none":
        return None
    if kind == "ones":
        return np.ones(n, dtype=F)
    if kind == "zeros":  # stretches of zero weights, whole groups and blocks among them
        w = rng.random(n) * 5
        w[rng.random(n) < 0.3] = 0
        w[16:48] = 0
        w[256 + 100:256 + 108] = 0
        return w.astype(F)
    if kind == "all_zero":
        return np.zeros(n, dtype=F)
    return (10.0 ** rng.uniform(-6, 6, n)).astype(F)  # huge ratios


def imatrix_cases(fmt: str) -> list[str]:
    return [k for k in IMATRICES if k != "none" or registry.spec(fmt).imatrix != "required"]


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("fmt, wkind", [(f, w) for f in FORMATS for w in imatrix_cases(f)])
def test_quantize_matches_ggml(ggml, fmt, kind, wkind):
    x = inputs(kind)
    w = imatrix(wkind, x.shape[1])
    with qs.use_isa("reference"):
        ours = qs.quantize(fmt, x, imatrix=w)
    assert_same_blocks(fmt, ours, ggml.quantize(fmt, x, w))


@pytest.mark.parametrize("n", [256, 512, 2816])
@pytest.mark.parametrize("fmt", FORMATS)
def test_quantize_row_lengths_match_ggml(ggml, fmt, n):
    """The imatrix is per column: its super-block slices follow the column."""
    rng = np.random.default_rng([7, n])
    x = rng.standard_normal((3, n)).astype(F)
    w = imatrix("ratios", n)
    with qs.use_isa("reference"):
        ours = qs.quantize(fmt, x, imatrix=w)
    assert_same_blocks(fmt, ours, ggml.quantize(fmt, x, w))


@pytest.mark.slow
@pytest.mark.parametrize("seed", [1, 2])
@pytest.mark.parametrize("fmt", FORMATS)
def test_quantize_many_rows_match_ggml(ggml, fmt, seed):
    rng = np.random.default_rng([8, seed])
    n = 4096
    x = (rng.standard_t(4, (64, n)) * 10.0 ** rng.uniform(-3, 3, (64, 1))).astype(F)
    for w in (imatrix("ratios", n), imatrix("zeros", n)) + ((None,) if fmt == "iq2_s" else ()):
        with qs.use_isa("reference"):
            ours = qs.quantize(fmt, x, imatrix=w)
        assert_same_blocks(fmt, ours, ggml.quantize(fmt, x, w))


@pytest.mark.parametrize("fmt", FORMATS)
def test_quantized_rows_dequantize_and_dot_like_ggml(ggml, fmt):
    x = inputs("edges")
    w = imatrix("ratios", x.shape[1])
    q = ggml.quantize(fmt, x, w)
    with qs.use_isa("reference"):
        ours = qs.dequantize(fmt, q)
    assert_same_bits(ours, ggml.dequantize(fmt, q), f"{fmt} dequantize of quantized rows")


# ------------------------------------------------------------------ quirks

@pytest.mark.parametrize("fmt", FORMATS)
def test_zero_super_block_is_all_zero_bytes(ggml, fmt):
    """``if (!max_scale)``: d = 0 and nothing else stored, also for -0.0 and
    values below the zero threshold (1e-15; IQ2_S: 1e-8)."""
    spec = registry.spec(fmt)
    x = np.zeros((3, 256), dtype=F)
    x[1] = -0.0
    x[2] = np.random.default_rng(0).standard_normal(256) * (1e-9 if fmt == "iq2_s" else 1e-16)
    w = np.ones(256, dtype=F)
    with qs.use_isa("reference"):
        ours = qs.quantize(fmt, x, imatrix=w)
    assert not ours.any()
    assert_same_blocks(fmt, ours, ggml.quantize(fmt, x, w))
    assert ours.shape == (3, spec.type_size)


@pytest.mark.parametrize("fmt", FORMATS)
def test_zero_block_in_a_live_super_block_stores_index_0_and_sign_0(ggml, fmt):
    """ggml skips a block below the zero threshold: its index, sign and
    scale code stay 0, which decodes to d/8 * 8 = d per element (ggml alike)."""
    rng = np.random.default_rng(1)
    x = rng.standard_normal((1, 256)).astype(F)
    x[0, 32:64] = 0.0  # block 1 of 32 (IQ2_XS, IQ2_S: blocks 2 and 3 of 16)
    w = np.ones(256, dtype=F)
    with qs.use_isa("reference"):
        ours = qs.quantize(fmt, x, imatrix=w)
    assert_same_blocks(fmt, ours, ggml.quantize(fmt, x, w))
    b = registry.spec(fmt).blocks(ours)[0, 0]
    if fmt == "iq2_xxs":
        assert b["qs"][4:8].tolist() == [0, 0, 0, 0]  # both words of block 1, scale code included
    elif fmt == "iq2_xs":
        assert b["qs"][4:8].tolist() == [0, 0, 0, 0] and b["scales"][1] == 0
    else:
        assert b["qs"][4:8].tolist() == [0] * 4 and b["qs"][36:40].tolist() == [0] * 4 and b["scales"][1] == 0
        assert b["qh"][1] == 0
    # codebook point 0 is eight 8s and ls = 0: the zero block decodes to d * 0.5 * 0.25 * 8, not to 0
    d = np.float16(b["d"].view(np.float16)).astype(F)
    expected = np.full(32, (d * F(0.5)) * F(0.25) * F(8), dtype=F)
    assert_same_bits(qs.dequantize(fmt, ours)[0, 32:64], expected, f"{fmt} zero block")


@pytest.mark.parametrize("fmt", ["iq2_xxs", "iq2_xs"])
def test_sign_parity_flips_back_the_least_weighted_element(ggml, fmt):
    """A group with an odd count of negatives stores the element with the
    least weight*x^2 with the wrong sign (the implied eighth bit makes the
    count even)."""
    rng = np.random.default_rng(2)
    x = (rng.random((1, 256)) + 0.5).astype(F)
    x[0, ::8] *= -1          # one negative per group: odd
    x[0, 5::8] = 0.01        # the least |x| of each group, positive
    w = np.ones(256, dtype=F)
    with qs.use_isa("reference"):
        q = qs.quantize(fmt, x, imatrix=w)
    assert_same_blocks(fmt, q, ggml.quantize(fmt, x, w))
    y = qs.dequantize(fmt, q)[0].reshape(32, 8)
    assert ((y < 0).sum(axis=1) % 2 == 0).all()
    assert (y[:, 0] < 0).all() and (y[:, 5] < 0).all()   # the small element took the flip


def test_iq2_s_stores_all_eight_signs(ggml):
    rng = np.random.default_rng(3)
    x = (rng.random((1, 256)) + 0.5).astype(F)
    x[0, ::8] *= -1
    with qs.use_isa("reference"):
        q = qs.quantize("iq2_s", x)
    assert_same_blocks("iq2_s", q, ggml.quantize("iq2_s", x))
    y = qs.dequantize("iq2_s", q)[0].reshape(32, 8)
    assert (np.signbit(y) == np.signbit(x[0].reshape(32, 8))).all()
    assert (registry.spec("iq2_s").blocks(q)[0, 0]["qs"][32:] == 1).all()


def test_iq2_s_reference_row_quantizer_is_the_chunk_path_without_imatrix(ggml):
    """``quantize_row_iq2_s_ref`` (the type traits' from_float_ref) is
    ``quantize_iq2_s(..., NULL)``; it needs ``ggml_quantize_init`` first
    (IQ2_XXS and IQ2_XS have no reference row quantizer: no imatrix, no bytes)."""
    x = inputs("student_t")[:2]
    ggml.base.ggml_quantize_init(registry.spec("iq2_s").type_id)
    ref = ggml.reference_row_quantizer("iq2_s")
    out = np.zeros((2, registry.spec("iq2_s").row_bytes(x.shape[1])), dtype=np.uint8)
    for r in range(2):
        ref(x[r].ctypes.data, out[r].ctypes.data, x.shape[1])
    with qs.use_isa("reference"):
        assert_same_blocks("iq2_s", qs.quantize("iq2_s", x), out)
    for fmt in ("iq2_xxs", "iq2_xs"):
        assert not ggml.base.ggml_get_type_traits(registry.spec(fmt).type_id).contents.from_float_ref


@pytest.mark.parametrize("fmt", FORMATS)
def test_where_ggml_aborts_the_spec_takes_the_first_neighbour(ggml, fmt):
    """|x| ~ 1e15 with large imatrix weights: every weighted distance of some
    neighbour search overflows, ggml's GGML_ASSERT aborts; the spec has
    bytes (the first neighbour), the same bytes each time, and a finite d
    where fp16 holds it (validate reports the others)."""
    from quantspec.oracle import GgmlAborted

    rng = np.random.default_rng(4)
    x = (rng.standard_normal((1, 256)) * 1e15).astype(F)
    w = (10.0 ** rng.uniform(-8, 8, 256)).astype(F)
    with pytest.raises(GgmlAborted):
        ggml.quantize(fmt, x, w)
    with qs.use_isa("reference"):
        first = qs.quantize(fmt, x, imatrix=w)
        assert np.array_equal(first, qs.quantize(fmt, x, imatrix=w))
    assert first.shape == (1, registry.spec(fmt).type_size)


@pytest.mark.slow
@pytest.mark.parametrize("fmt", FORMATS)
def test_magnitude_sweep_matches_ggml_where_ggml_has_bytes(ggml, fmt):
    """Rows from 1e-45 to 3e38 with unit, zero and wide imatrices: byte-exact
    wherever ggml does not abort (from about 1e16 it does, for every format;
    IQ2_XXS gives zero blocks again from 1e19, where the weights are inf)."""
    from quantspec.oracle import GgmlAborted

    rng = np.random.default_rng(9)
    compared = 0
    for scale in (1e-45, 1e-38, 1e-30, 1e-12, 1e13, 1e14, 1e16, 1e18, 1e19, 1e30, 3e38):
        for w in (np.ones(256, dtype=F), np.zeros(256, dtype=F), (10.0 ** rng.uniform(-4, 4, 256)).astype(F)):
            x = np.clip(rng.standard_normal((1, 256)) * scale, -3.4e38, 3.4e38).astype(F)
            with qs.use_isa("reference"):
                ours = qs.quantize(fmt, x, imatrix=w)
            try:
                theirs = ggml.quantize(fmt, x, w)
            except GgmlAborted:
                continue
            assert_same_blocks(fmt, ours, theirs)
            compared += 1
    assert compared >= 18
