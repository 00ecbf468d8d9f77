"""IQ4_NL, IQ4_XS, TQ1_0, TQ2_0, MXFP4, NVFP4, Q1_0 and Q2_0 against the real
libggml: quantize byte for byte (``ggml_quantize_chunk``, with and without an
importance matrix), dequantize bit for bit (``to_float``, also on random and
special bytes), the dot products within a stated bound of ggml's ``vec_dot``,
MXFP4's ``log2f`` at every binade edge, and the documented quirks."""

from __future__ import annotations

import ctypes

import numpy as np
import pytest

import quantspec as qs
from quantspec import registry
from quantspec.oracle import _FROM_FLOAT
from quantspec.reference import _fp4
from tests.bits import assert_dot_within_bound, assert_same_bits, assert_same_blocks

pytestmark = pytest.mark.oracle

F = np.float32
FORMATS = ["iq4_nl", "iq4_xs", "tq1_0", "tq2_0", "mxfp4", "nvfp4", "q1_0", "q2_0"]
IMATRIX_FORMATS = ["iq4_nl", "iq4_xs"]
N = 2048  # 8 blocks of 256, 64 of 32 per row
KINDS = ["normal", "student_t", "scaled", "block_scales", "edges"]
IMATRICES = ["none", "zeros", "ratios", "all_zero"]


def inputs(kind: str, seed: int = 0, nrows: int = 8, n: int = N) -> np.ndarray:
    rng = np.random.default_rng([seed, KINDS.index(kind)])
    x = rng.standard_normal((nrows, n))
    if kind == "student_t":
        x = rng.standard_t(3, (nrows, n))
    elif kind == "scaled":  # whole rows from 1e-40 to 1e30: subnormal and tiny blocks, fp16 scale overflow
        x = x * 10.0 ** rng.uniform(-40, 30, (nrows, 1))
    elif kind == "block_scales":  # every 16 elements at its own magnitude, 1e-20 .. 1e20
        x = x * 10.0 ** rng.uniform(-20, 20, (nrows, n // 16, 1)).repeat(16, axis=2).reshape(nrows, n)
    elif kind == "edges":
        x = edge_rows(rng, nrows, n)
    return x.astype(F)


def edge_rows(rng, nrows: int, n: int) -> np.ndarray:
    """Zero, -0.0 and constant blocks, zero sub-blocks, outliers, exact ties,
    subnormal and tiny blocks (1/d overflows), fp16-overflowing scales, |x|
    whose square overflows, NVFP4 scales in [256, 448], MXFP4 maxima just
    below powers of two."""
    x = rng.standard_normal((nrows, n))
    x[0] = 0.0
    x[1, :256] = -0.0
    x[1, 256:512] = np.where(rng.random(256) < 0.5, -0.0, 0.0)
    x[1, 512:768] = 3.0
    x[1, 768:1024] = -2.5
    x[1, 1024:1056] = 0.0  # one zero block of 32 in normal data
    x[1, 1280:1536] = np.abs(x[1, 1280:1536]) + 5
    x[2, ::97] = 1e4
    x[2, 1024::256] = -1e4
    x[3] = np.round(rng.standard_normal(n) * 4) / 2  # ties on half-integers
    x[3, 1024:] = np.round(rng.standard_normal(n - 1024) * 8) / 8
    x[4, :256] *= 1e-41  # subnormal
    x[4, 256:512] *= 1e-39  # 1/amax overflows
    x[4, 512:768] *= 1e-7
    x[4, 768:1024] *= 1e7  # fp16 d overflows
    x[4, 1024:1280] *= 1e20  # x*x overflows float32
    x[4, 1280:1536] *= 3e38 / np.abs(x[4, 1280:1536]).max()
    x[4, 1536:1600] = 6 * np.linspace(256, 448, 64)  # NVFP4: amax/6 in [256, 448]
    x[5, :32] = np.arange(32) - 16
    x[5, 256:512] = np.linspace(-1, 1, 256)
    x[5, 512:528] = 1e-45
    pow2 = 2.0 ** rng.integers(-30, 30, 32)
    x[5, 1024:2048] *= 0.01  # 32 blocks of 32 ...
    x[5, 1024:2048:32] = np.nextafter(pow2.astype(F), F(0))  # ... led by the float just below 2**k
    x[6, ::2] *= 1e-3
    x[7, :128] *= 1e5
    return x


def imatrix(kind: str, n: int = N) -> np.ndarray | None:
    rng = np.random.default_rng(11)
    if kind == "none":
        return None
    if kind == "zeros":
        w = rng.random(n) * 5
        w[rng.random(n) < 0.4] = 0
        w[:32] = 0  # a whole block of zero weight
        return w.astype(F)
    if kind == "all_zero":
        return np.zeros(n, F)
    return (10.0 ** rng.uniform(-8, 8, n)).astype(F)  # huge ratios


def _cases():
    for fmt in FORMATS:
        for kind in KINDS:
            for im in (IMATRICES if fmt in IMATRIX_FORMATS else ["none", "ratios"]):
                yield pytest.param(fmt, kind, im, id=f"{fmt}-{kind}-{im}")


@pytest.mark.parametrize("fmt,kind,im", list(_cases()))
def test_quantize_matches_ggml(ggml, fmt, kind, im):
    x, w = inputs(kind), imatrix(im)
    with qs.use_isa("reference"):
        ours = qs.quantize(fmt, x, imatrix=w)
    assert_same_blocks(fmt, ours, ggml.quantize(fmt, x, w), f"{kind}, imatrix {im}")


@pytest.mark.slow
@pytest.mark.parametrize("seed", range(1, 6))
@pytest.mark.parametrize("fmt", FORMATS)
def test_quantize_matches_ggml_many_seeds(ggml, fmt, seed):
    for kind in KINDS:
        x = inputs(kind, seed, nrows=32, n=4096)
        for im in (IMATRICES if fmt in IMATRIX_FORMATS else ["none"]):
            w = imatrix(im, 4096)
            with qs.use_isa("reference"):
                ours = qs.quantize(fmt, x, imatrix=w)
            assert_same_blocks(fmt, ours, ggml.quantize(fmt, x, w), f"seed {seed} {kind}, imatrix {im}")


def _special_bytes(fmt: str, rng) -> np.ndarray:
    """Blocks whose scale fields take every value the field can hold (E8M0 and
    UE4M3 bytes: all 256; fp16: zeros, subnormals, the largest, inf, NaN)
    over random codes."""
    spec = registry.spec(fmt)
    if fmt == "mxfp4":
        scales = np.arange(256, dtype=np.uint8)[:, None]
    elif fmt == "nvfp4":
        scales = np.arange(256, dtype=np.uint8).reshape(64, 4)
    else:
        halves = np.array([0x0000, 0x8000, 0x0001, 0x8001, 0x03FF, 0x0400, 0x3C00, 0xBC00, 0x7BFF, 0xFBFF,
                           0x7C00, 0xFC00, 0x7C01, 0x7E00, 0xFE00, 0x7FFF], dtype=np.uint16)
        scales = halves.view(np.uint8).reshape(-1, 2)
    blocks = rng.integers(0, 256, (scales.shape[0], spec.type_size), dtype=np.uint8)
    field = spec.fields[[f.name for f in spec.fields].index("e" if fmt == "mxfp4" else "d")]
    at = spec.offsets()[field.name]
    blocks[:, at:at + field.nbytes] = scales
    return blocks.reshape(-1)[: (blocks.size // spec.type_size) * spec.type_size].reshape(1, -1)


@pytest.mark.parametrize("fmt", FORMATS)
def test_dequantize_matches_ggml(ggml, fmt):
    rng = np.random.default_rng(5)
    q = ggml.quantize(fmt, np.vstack([inputs("edges"), inputs("scaled")]))
    junk = rng.integers(0, 256, (8, q.shape[1]), dtype=np.uint8)  # every code, NaN/inf scales too
    for rows in (q, junk, _special_bytes(fmt, rng)):
        with qs.use_isa("reference"):
            ours = qs.dequantize(fmt, rows)
        assert_same_bits(ours, ggml.dequantize(fmt, rows), f"{fmt} dequantize")


#: |ours - ggml| <= DOT_BOUND * sum_i |w_i * a_i|. Both sum the same block
#: terms (each a float32 rounding of exact integer sums times float32 scale
#: products, within 2**-22 of its exact value) in different orders: ggml's
#: AVX2 code in 8-lane fused multiply-adds, the spec in its canonical 16-lane
#: order. Each float32 sum of t terms is within t * 2**-24 of the exact sum
#: of their magnitudes; a 4096-element row has at most 4096/16 = 256 terms
#: (NVFP4: four per block of 64), so the two differ by less than
#: 2 * (256 + 16) * 2**-24 + 2 * 2**-22 < 2**-14 of that magnitude.
DOT_BOUND = 2.0**-14


@pytest.mark.parametrize("fmt", FORMATS)
def test_vec_dot_within_bound_of_ggml(ggml, fmt):
    spec = registry.spec(fmt)
    x = inputs("student_t", nrows=16, n=4096)
    a = inputs("normal", seed=3, nrows=1, n=4096)[0]
    wq = qs.quantize(fmt, x)
    aq = qs.quantize(spec.vec_dot_format, a)
    with qs.use_isa("reference"):
        ours = qs.vec_dot(fmt, wq, aq)
    theirs = ggml.vec_dot(fmt, wq, aq)
    assert_dot_within_bound(fmt, wq, aq, ours, theirs, DOT_BOUND)


def _binade_edges(top: int, bottom: int) -> np.ndarray:
    """The ``top`` largest and ``bottom`` smallest floats of every binade of positive float32."""
    starts = np.ldexp(np.ones(277, F), np.arange(-149, 128)).astype(F).view(np.uint32).astype(np.int64)
    ends = np.append(starts[1:], 0x7F800000)
    near = np.concatenate([e - 1 - np.arange(top) for e in ends] + [s + np.arange(bottom) for s in starts])
    return np.unique(near[near > 0]).astype(np.uint32).view(F)


def test_mxfp4_log2f_at_every_binade_edge_matches_ggml(ggml):
    """``floorf(log2f(amax))`` through libm in ggml, from the bits in the spec:
    blocks led by each of the 64 largest and 4 smallest floats of all 277
    binades, the rest small, alternating in sign."""
    amax = _binade_edges(top=64, bottom=4)
    x = np.zeros((amax.size, 32), F)
    x[:, 0] = amax
    x[:, 1] = -amax / F(3)
    x[:, 2] = amax * F(0.7)
    x = x.reshape(1, -1)
    theirs = ggml.quantize("mxfp4", x)
    assert_same_blocks("mxfp4", qs.quantize("mxfp4", x), theirs, "binade edges")
    e = theirs.reshape(-1, 17)[:, 0]
    exact = (np.frexp(amax.astype(np.float64))[1] - 1 + 125) & 0xFF
    assert int((e != exact).sum()) == int(_fp4._log2_round_up_counts().sum())  # the floats whose log2f rounds up


def _ref_quantizer(ggml, fmt: str):
    traits = ggml.base.ggml_get_type_traits(registry.spec(fmt).type_id).contents
    return _FROM_FLOAT(traits.from_float_ref)


def test_iq4_nl_reference_quantizer_is_a_variant(ggml):
    """ggml's quantize_row_iq4_nl_ref (ntry = -1) writes other bytes than the
    file path on most blocks, and for an all-zero block packs the previous
    block's indices; the spec is the file path (ggml_quantize_chunk)."""
    x = inputs("normal", nrows=1, n=4096)
    x[0, 32:64] = 0  # block 1: zero, after block 0
    ref = np.zeros((1, registry.spec("iq4_nl").row_bytes(4096)), np.uint8)
    _ref_quantizer(ggml, "iq4_nl")(x.ctypes.data, ref.ctypes.data, 4096)
    chunk = ggml.quantize("iq4_nl", x)
    ours = qs.quantize("iq4_nl", x)
    assert_same_blocks("iq4_nl", ours, chunk)
    differ = (ref.reshape(-1, 18) != chunk.reshape(-1, 18)).any(axis=1)
    assert differ.mean() > 0.3
    blocks = ref.reshape(-1, 18)
    assert blocks[1, :2].tobytes() == b"\0\0" and np.array_equal(blocks[1, 2:], blocks[0, 2:])  # stale indices
    assert ours.reshape(-1, 18)[1].tobytes().hex() == "0000" + "88" * 16


@pytest.mark.parametrize("fmt", ["iq4_xs", "tq1_0", "tq2_0", "mxfp4", "nvfp4", "q1_0", "q2_0"])
def test_reference_quantizer_is_the_file_path(ggml, fmt):
    """For these formats the CPU backend's reference quantizer
    (``quantize_row_*_ref``; IQ4_XS's calls ``quantize_iq4_xs``) writes the
    file path's bytes."""
    x = inputs("edges")
    ref = np.zeros((x.shape[0], registry.spec(fmt).row_bytes(x.shape[1])), np.uint8)
    _ref_quantizer(ggml, fmt)(x.ctypes.data, ref.ctypes.data, x.size)
    assert_same_blocks(fmt, qs.quantize(fmt, x), ref, "quantize_row_*_ref")


def test_quirks_are_ggml_bytes(ggml):
    """Zero blocks, Q2_0's missing code 3, MXFP4's e = 0xFF for tiny blocks,
    NVFP4's saturated scales: the bytes ggml writes."""
    z = np.zeros((1, 256), F)
    for fmt in FORMATS:
        assert_same_blocks(fmt, qs.quantize(fmt, z), ggml.quantize(fmt, z), "zero block")
    x = np.zeros((1, 64), F)
    x[0, 3] = 2.0**-126
    q = ggml.quantize("mxfp4", x)
    assert q[0, 0] == 0xFF and q[0, 17] == 0
    validate = ggml.base.ggml_validate_row_data
    validate.restype = ctypes.c_bool
    validate.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_size_t]
    assert not validate(39, q.ctypes.data, q.nbytes)  # ggml rejects its own block
    assert [v.block for v in qs.validate("mxfp4", q)] == [0]
    codes = ggml.quantize("q2_0", inputs("student_t", nrows=4, n=4096))[:, :].reshape(-1, 18)[:, 2:]
    assert not np.any(((codes[..., None] >> np.array([0, 2, 4, 6], np.uint8)) & 3) == 3)
