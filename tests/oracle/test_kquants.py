"""The K-quants against the real libggml: quantize byte for byte
(``ggml_quantize_chunk``: ``quantize_row_q*_K_ref`` without an importance
matrix, ``quantize_q*_K`` with one), dequantize bit for bit (``to_float``),
Q8_K against ``quantize_row_q8_K_ref`` / ``dequantize_row_q8_K``, and the
dot products within a stated bound of ggml's ``vec_dot``."""

from __future__ import annotations

import numpy as np
import pytest

import quantspec as qs
from quantspec import registry
from quantspec.reference import _kquants, q8_k
from tests.bits import assert_same_bits, assert_same_blocks

pytestmark = pytest.mark.oracle

KQUANTS = ["q2_k", "q3_k", "q4_k", "q5_k", "q6_k"]
N = 2048  # 8 super-blocks per row


def inputs(kind: str, seed: int = 0, nrows: int = 8, n: int = N) -> np.ndarray:
    rng = np.random.default_rng([seed, KINDS.index(kind)])
    x = rng.standard_normal((nrows, n))
    if kind == "student_t":
        x = rng.standard_t(3, (nrows, n))
    elif kind == "scaled":  # whole rows from 1e-20 to 1e20: fp16 d/dmin underflow, overflow, x*x overflow
        x = x * 10.0 ** rng.uniform(-20, 20, (nrows, 1))
    elif kind == "superblock_scales":  # every super-block at its own magnitude
        x = x * 10.0 ** rng.uniform(-9, 9, (nrows, n // 256, 1)).repeat(256, axis=2).reshape(nrows, n)
    elif kind == "subblock_scales":  # sub-blocks of 16 at magnitudes 1e-4 .. 1e4: sub-block scales round to 0
        x = x * 10.0 ** rng.uniform(-4, 4, (nrows, n // 16, 1)).repeat(16, axis=2).reshape(nrows, n)
    elif kind == "edges":
        x = edge_rows(rng, nrows, n)
    return x.astype(np.float32)


def edge_rows(rng, nrows, n) -> np.ndarray:
    """Zero, -0.0 and constant super-blocks, zero sub-blocks, outliers, exact
    ties, subnormal and tiny blocks, fp16-overflowing scales, |x| whose square
    overflows."""
    x = rng.standard_normal((nrows, n))
    x[0] = 0.0
    x[1, :256] = -0.0
    x[1, 256:512] = np.where(rng.random(256) < 0.5, -0.0, 0.0)
    x[1, 512:768] = 3.0
    x[1, 768:1024] = -2.5
    x[1, 1024:1040] = 0.0  # one zero sub-block in normal data
    x[1, 1280:1536] = np.abs(x[1, 1280:1536]) + 5  # all positive: min clamps to 0
    x[2, ::97] = 1e4  # outliers
    x[2, 1024::256] = -1e4
    x[3] = np.round(rng.standard_normal(n) * 4) / 2  # ties on half-integers
    x[4, :256] *= 1e-41  # subnormal
    x[4, 256:512] *= 1e-30
    x[4, 512:768] *= 1e-7  # sub-block scales in fp16's subnormal range
    x[4, 768:1024] *= 1e7  # d overflows fp16
    x[4, 1024:1280] *= 1e20  # x*x overflows float32
    x[4, 1280:1536] *= 3e38 / np.abs(x[4, 1280:1536]).max()
    x[5, :32] = np.arange(32) - 16
    x[5, 256:512] = np.linspace(-1, 1, 256)
    x[5, 512:528] = 1e-45  # the smallest subnormal
    x[6, ::2] *= 1e-3  # alternating magnitudes
    x[7, :128] *= 1e5  # half a super-block dominates
    return x


def imatrix(kind: str, n: int = N) -> np.ndarray | None:
    rng = np.random.default_rng(11)
    if kind == "none":
        return None
    if kind == "zeros":
        w = rng.random(n) * 5
        w[rng.random(n) < 0.4] = 0
        w[:16] = 0  # a whole sub-block of zero weight
        return w.astype(np.float32)
    if kind == "all_zero":
        return np.zeros(n, np.float32)
    return (10.0 ** rng.uniform(-8, 8, n)).astype(np.float32)  # huge ratios


KINDS = ["normal", "student_t", "scaled", "superblock_scales", "subblock_scales", "edges"]
IMATRICES = ["none", "zeros", "ratios", "all_zero"]


@pytest.mark.parametrize("im", IMATRICES)
@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("fmt", KQUANTS)
def test_quantize_matches_ggml(ggml, fmt, kind, im):
    x, w = inputs(kind), imatrix(im)
    with qs.use_isa("reference"):
        ours = qs.quantize(fmt, x, imatrix=w)
    assert_same_blocks(fmt, ours, ggml.quantize(fmt, x, w), f"{kind}, imatrix {im}")


@pytest.mark.slow
@pytest.mark.parametrize("seed", range(1, 6))
@pytest.mark.parametrize("fmt", KQUANTS)
def test_quantize_matches_ggml_many_seeds(ggml, fmt, seed):
    for kind in KINDS:
        x = inputs(kind, seed, nrows=32, n=4096)
        for im in IMATRICES:
            w = imatrix(im, 4096)
            with qs.use_isa("reference"):
                ours = qs.quantize(fmt, x, imatrix=w)
            assert_same_blocks(fmt, ours, ggml.quantize(fmt, x, w), f"seed {seed} {kind}, imatrix {im}")


@pytest.mark.parametrize("fmt", KQUANTS + ["q8_k"])
def test_dequantize_matches_ggml(ggml, fmt):
    q = ggml.quantize(fmt, np.vstack([inputs("edges"), inputs("scaled")]))
    junk = np.random.default_rng(5).integers(0, 256, (8, q.shape[1]), dtype=np.uint8)  # NaN/inf scales too
    for rows in (q, junk):
        with qs.use_isa("reference"):
            ours = qs.dequantize(fmt, rows)
        assert_same_bits(ours, ggml.dequantize(fmt, rows), f"{fmt} dequantize")


@pytest.mark.parametrize("kind", KINDS)
def test_q8_k_matches_quantize_row_q8_K_ref(ggml, kind):
    x = inputs(kind)
    x[0, 256:512] = 0
    x[1, 512:768] = 1e-40  # -127/max overflows: quants 0, d = -0.0
    assert_same_blocks("q8_k", qs.quantize("q8_k", x), ggml.quantize("q8_k", x), kind)
    assert_same_blocks("q8_k", qs.quantize("q8_k", x), ggml.from_float("q8_k", x.reshape(-1)).reshape(x.shape[0], -1),
                       "the CPU backend's from_float")


def test_q8_k_zero_block_bsums_are_defined(ggml):
    """ggml skips bsums for an all-zero super-block (they keep what the buffer
    held); the spec writes 0, their value. Everything else is identical."""
    x = np.zeros((1, 512), np.float32)
    x[0, 256:] = np.random.default_rng(0).standard_normal(256)
    out = np.full((1, q8_k.FORMAT.row_bytes(512)), 0xAB, dtype=np.uint8)
    ggml.reference_row_quantizer("q8_k")(x.ctypes.data, out.ctypes.data, 512)
    theirs, ours = q8_k.FORMAT.blocks(out), q8_k.FORMAT.blocks(qs.quantize("q8_k", x))
    assert (theirs["bsums"][0, 0].view(np.uint16) == 0xABAB).all() and not ours["bsums"][0, 0].any()
    for name in ("d", "qs"):
        np.testing.assert_array_equal(ours[name], theirs[name])
    np.testing.assert_array_equal(ours[0, 1:].view(np.uint8), theirs[0, 1:].view(np.uint8))


def _min_part(fmt: str, wq: np.ndarray) -> np.ndarray:
    """Per element, the ``dmin * m_j`` that dequantize subtracts (0 without mins), float64."""
    mod = registry.module(fmt)
    b = mod.FORMAT.blocks(wq)
    if fmt == "q2_k":
        m = (b["scales"] >> 4).astype(np.float64).repeat(16, axis=-1)
    elif fmt in ("q4_k", "q5_k"):
        m = _kquants.unpack_scale_min_k4(b["scales"])[1].astype(np.float64).repeat(32, axis=-1)
    else:
        return np.zeros((wq.shape[0], b.shape[1] * 256))
    dmin = b["dmin"].view(np.float16).astype(np.float64)[..., None]
    return (dmin * m).reshape(wq.shape[0], -1)


#: |ours - ggml| <= DOT_BOUND * sum_i (|scale part of w_i| + |min part of w_i|) * |a_i|.
#: Each result is a float32 sum of one term per super-block, each term a few
#: float32 roundings of exact integer sums (ggml's generic code: 8 lane
#: products and sums per term; its AVX2 code: fused multiply-adds), so each
#: is within about (nblocks + 16) * 2^-24 of that magnitude of the exact dot
#: product; for 16 super-blocks, twice that is 2^-18. (Observed: < 2^-23.)
DOT_BOUND = 2.0**-18


@pytest.mark.parametrize("fmt", KQUANTS)
def test_vec_dot_within_bound_of_ggml(ggml, fmt):
    rng = np.random.default_rng(8)
    x = np.vstack([rng.standard_t(4, (12, 4096)), rng.standard_normal((4, 4096)) + 3]).astype(np.float32)
    a = (rng.standard_normal(4096) * (1 + np.abs(rng.standard_t(2, 4096)))).astype(np.float32)
    for w in (None, imatrix("ratios", 4096)):
        wq, aq = qs.quantize(fmt, x, imatrix=w), qs.quantize("q8_k", a)
        with qs.use_isa("reference"):
            ours = qs.vec_dot(fmt, wq, aq)
        theirs = ggml.vec_dot(fmt, wq, aq)
        mins = _min_part(fmt, wq)
        scaled = qs.dequantize(fmt, wq).astype(np.float64) + mins
        magnitude = ((np.abs(scaled) + np.abs(mins)) * np.abs(qs.dequantize("q8_k", aq).astype(np.float64))).sum(1)
        assert np.all(np.abs(ours.astype(np.float64) - theirs) <= DOT_BOUND * magnitude), (ours, theirs)
