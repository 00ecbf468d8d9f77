"""IQ1_S and IQ1_M against the real libggml: quantize byte for byte
(``ggml_quantize_chunk``, with an importance matrix; IQ1_M also without),
dequantize bit for bit (``to_float``, on random bytes and special scales),
the dot products with Q8_K within a stated bound of ggml's ``vec_dot``,
``ggml_validate_row_data``, the sort-tie order, the required imatrix and
the inputs on which ggml aborts."""

from __future__ import annotations

import ctypes
import subprocess
import sys

import numpy as np
import pytest

import quantspec as qs
from quantspec import registry
from quantspec.errors import ImatrixError, NonFiniteInputError
from quantspec.reference import _iq1, iq1_m, iq1_s
from tests.bits import assert_dot_within_bound, assert_same_bits, assert_same_blocks

pytestmark = pytest.mark.oracle

F = np.float32
FORMATS = ["iq1_s", "iq1_m"]
KINDS = ["normal", "student_t", "edges", "ties"]
IMATRICES = ["ones", "random", "zero_stretches", "ratios"]


def edge_rows(rng, nrows: int, n: int) -> np.ndarray:
    """Zero, -0.0 and constant blocks, zero blocks among normal data, tiny
    blocks below and above the zero thresholds (1e-12, 1e-7), subnormals,
    large blocks (up to 1e15, whose sums overflow float32 without making
    ggml abort), single outliers, signed zeros mixed in."""
    x = rng.standard_normal((nrows, n))
    x[0] = 0.0
    x[1, :256] = -0.0
    x[1, 256 % n:] = np.where(rng.random(n - 256 % n) < 0.5, -0.0, 0.0) if n > 256 else x[1, 256 % n:]
    x[2, :128] = 3.0
    x[2, 128:256] = -2.5
    x[3, :32] = 0.0  # one zero block of 32 in normal data
    x[3, 48:64] = 0.0  # one zero block of 16
    x[3, 100] = 1e4  # an outlier
    x[3, 200] = -1e6
    x[4, :64] *= 1e-13
    x[4, 64:128] *= 1e-8
    x[4, 128:192] *= 1e-41
    x[4, 192:256] *= 1e-6
    x[5, :256] *= 1e15
    x[5, 7] = 1.0
    x[6, :256] = rng.standard_normal(256) * 1e10
    x[6, 3] = 1e13
    x[7, ::3] = -0.0
    return x


def tie_rows(rng, nrows: int, n: int) -> np.ndarray:
    """Many equal values in a block: a few distinct levels, and -0.0/+0.0."""
    x = rng.integers(-2, 3, (nrows, n)).astype(np.float64)
    x[::2] *= 0.5
    zero = x == 0
    x[zero] = np.where(rng.random(int(zero.sum())) < 0.5, -0.0, 0.0)
    x[1, :32] = np.repeat([1.0, -1.0], 16)  # two runs of equal values
    x[2, :16] = 0.25
    return x


def inputs(kind: str, seed: int = 0, nrows: int = 8, n: int = 512) -> np.ndarray:
    rng = np.random.default_rng([seed, KINDS.index(kind), n])
    if kind == "student_t":
        return rng.standard_t(3, (nrows, n)).astype(F)
    if kind == "edges":
        return edge_rows(rng, nrows, n).astype(F)
    if kind == "ties":
        return tie_rows(rng, nrows, n).astype(F)
    return rng.standard_normal((nrows, n)).astype(F)


def imatrix(kind: str, n: int = 512) -> np.ndarray | None:
    rng = np.random.default_rng([11, n])
    if kind == "none":
        return None
    if kind == "ones":
        return np.ones(n, F)
    if kind == "random":
        return (rng.random(n) * 5).astype(F)
    if kind == "zero_stretches":
        w = rng.random(n) * 5
        w[rng.random(n) < 0.4] = 0
        w[:32] = 0  # a whole IQ1_S block of zero weight
        w[40:48] = 0  # a group of 8
        w[64:72] = -0.0
        w[256 % n: 256 % n + 16] = 0  # an IQ1_M block
        return w.astype(F)
    return (10.0 ** rng.uniform(-8, 8, n)).astype(F)  # huge ratios


def imatrices(fmt: str) -> list[str]:
    return IMATRICES + (["none"] if fmt == "iq1_m" else [])


def _check(ggml, fmt, x, w, what):
    with qs.use_isa("reference"):
        ours = qs.quantize(fmt, x, imatrix=w)
    assert_same_blocks(fmt, ours, ggml.quantize(fmt, x, w), what)


# ----------------------------------------------------------------- quantize

@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("kind", KINDS)
def test_quantize_matches_ggml(ggml, fmt, kind):
    x = inputs(kind)
    for im in imatrices(fmt):
        _check(ggml, fmt, x, imatrix(im), f"{kind}, imatrix {im}")


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("n", [256, 768])
def test_quantize_row_lengths(ggml, fmt, n):
    """The imatrix columns follow the element's column, not its super-block
    (one super-block per row, and three)."""
    x = inputs("student_t", seed=1, nrows=3, n=n)
    _check(ggml, fmt, x, imatrix("zero_stretches", n), f"n_per_row {n}")


@pytest.mark.slow
@pytest.mark.parametrize("seed", range(1, 4))
@pytest.mark.parametrize("fmt", FORMATS)
def test_quantize_matches_ggml_many_seeds(ggml, fmt, seed):
    for kind in KINDS:
        x = inputs(kind, seed, nrows=16, n=2048)
        for im in imatrices(fmt):
            _check(ggml, fmt, x, imatrix(im, 2048), f"seed {seed} {kind}, imatrix {im}")


@pytest.mark.parametrize("fmt", FORMATS)
def test_sort_ties_follow_index_order(ggml, fmt, monkeypatch):
    """Upstream sorts with qsort on the value alone; glibc's merge sort keeps
    equal values in index order, and so does the spec. In IQ1_M a split
    inside a run of equal values puts them in different halves' levels, so
    the order decides most tie-heavy blocks: ordering ties the other way
    round writes other bytes there. In IQ1_S equal values end up on one
    level, and the order shows only in the rounding of the prefix sums."""
    rng = np.random.default_rng(0)
    x = (rng.integers(-2, 3, (16, 256)) * 0.5).astype(F)
    x[rng.random(x.shape) < 0.3] *= F(3)
    w = (rng.random(256) * 5).astype(F)
    theirs = ggml.quantize(fmt, x, w)
    assert_same_blocks(fmt, qs.quantize(fmt, x, imatrix=w), theirs, "ties")
    if fmt == "iq1_m":
        def reversed_ties(xb):  # ascending value, ties in descending index order
            return xb.shape[1] - 1 - np.argsort(xb[:, ::-1], axis=1, kind="stable")

        monkeypatch.setattr(_iq1, "stable_order", reversed_ties)
        with qs.use_isa("reference"):  # the spec's order replaced (the kernels keep theirs)
            other = qs.quantize(fmt, x, imatrix=w)
        assert (other != theirs).any(axis=1).sum() >= 12


def test_iq1_s_requires_an_imatrix():
    x = inputs("normal", nrows=1, n=256)
    with pytest.raises(ImatrixError, match="iq1_s.*importance matrix"):
        qs.quantize("iq1_s", x)
    with pytest.raises(ImatrixError, match="iq1_s"):
        iq1_s.quantize(x)


def test_iq1_m_without_imatrix_uses_squares(ggml):
    x = inputs("student_t", nrows=4, n=256)
    _check(ggml, "iq1_m", x, None, "no imatrix")
    assert not np.array_equal(qs.quantize("iq1_m", x), qs.quantize("iq1_m", x, imatrix=imatrix("ratios", 256)))


def test_zero_blocks_are_ggml_bytes(ggml):
    """All-zero super-blocks: IQ1_S d = 0, every index 0, no scale or delta
    bits (``if (!max_scale) continue``); IQ1_M all 56 bytes 0."""
    z = np.zeros((1, 256), F)
    ones = np.ones(256, F)
    for fmt in FORMATS:
        ours = qs.quantize(fmt, z, imatrix=ones)
        assert_same_blocks(fmt, ours, ggml.quantize(fmt, z, ones), "zero block")
        assert not ours.any()


@pytest.mark.parametrize("fmt", FORMATS)
def test_overflowing_sums_are_refused(fmt):
    """A constant block of 1e19: x*x overflows, every weight is inf and the
    search's scale is inf/inf; ggml asserts (scale >= 0) and aborts, the
    spec raises."""
    x = np.ones((2, 512), F)
    x[1, 256:288] = 1e19
    with pytest.raises(NonFiniteInputError, match=f"{fmt}: row 1, elements 256..."):
        qs.quantize(fmt, x, imatrix=np.ones(512, F))


_ABORT_SCRIPT = """
import numpy as np
from quantspec.oracle import ggml
x = np.full((1, 256), 1e19, np.float32)
ggml().quantize({fmt!r}, x, np.ones(256, np.float32))
"""


@pytest.mark.slow
@pytest.mark.parametrize("fmt", FORMATS)
def test_ggml_aborts_where_the_spec_refuses(ggml, fmt):
    with pytest.raises(NonFiniteInputError):
        qs.quantize(fmt, np.full((1, 256), 1e19, F), imatrix=np.ones(256, F))
    run = subprocess.run([sys.executable, "-c", _ABORT_SCRIPT.format(fmt=fmt)], capture_output=True, timeout=300)
    assert run.returncode != 0 and b"GGML_ASSERT" in run.stderr


# --------------------------------------------------------------- dequantize

def _special_bytes(fmt: str, rng) -> np.ndarray:
    """Random blocks whose fp16 scale takes zeros, subnormals, the largest,
    inf and NaN (IQ1_M: spread over the scale words' high nibbles)."""
    halves = np.array([0x0000, 0x8000, 0x0001, 0x8001, 0x03FF, 0x0400, 0x3C00, 0xBC00, 0x7BFF, 0xFBFF,
                       0x7C00, 0xFC00, 0x7C01, 0x7E00, 0xFE00, 0x7FFF], dtype=np.uint16)
    spec = registry.spec(fmt)
    blocks = rng.integers(0, 256, (halves.size, spec.type_size), dtype=np.uint8)
    if fmt == "iq1_s":
        blocks[:, :2] = halves.view(np.uint8).reshape(-1, 2)
    else:
        words = blocks[:, 48:56].copy().view("<u2")
        words &= 0x0FFF
        words |= ((halves[:, None].astype(np.uint16) >> (4 * np.arange(4, dtype=np.uint16))) & 15) << 12
        blocks[:, 48:56] = words.view(np.uint8)
    return blocks.reshape(1, -1)


@pytest.mark.parametrize("fmt", FORMATS)
def test_dequantize_matches_ggml(ggml, fmt):
    rng = np.random.default_rng(5)
    q = qs.quantize(fmt, np.vstack([inputs("edges"), inputs("normal")]), imatrix=imatrix("random"))
    junk = rng.integers(0, 256, (8, q.shape[1]), dtype=np.uint8)  # every index and bit, NaN/inf scales too
    for rows in (q, junk, _special_bytes(fmt, rng)):
        with qs.use_isa("reference"):
            ours = qs.dequantize(fmt, rows)
        assert_same_bits(ours, ggml.dequantize(fmt, rows), f"{fmt} dequantize")


def test_iq1_m_super_scale_nibbles():
    """D is bits 12-15 of the four scale words, word k holding bits 4k..4k+3."""
    block = np.zeros((1, 56), np.uint8)
    words = np.array([0x3000, 0xC000, 0x3000, 0x3000], "<u2")  # D = 0x33C3
    block[0, 48:] = words.view(np.uint8)
    assert int(iq1_m.super_scale_bits(iq1_m.FORMAT.blocks(block))[0, 0]) == 0x33C3


# ------------------------------------------------------------------ vec_dot

#: |ours - ggml| <= DOT_BOUND * sum_i |w_i * a_i|. Both add the same
#: super-block terms (d * a.d * (sumi + 0.125 * sumi1): exact integer sums,
#: three float32 roundings, within 2**-22 of exact), ggml's AVX2 code with
#: fused multiply-adds into 8 lanes, the spec in its canonical 16-lane
#: order; a float32 sum of t terms is within t * 2**-24 of the exact sum of
#: their magnitudes, and a 4096-element row has 16 terms, so the two differ
#: by less than 2 * (16 + 16) * 2**-24 + 2 * 2**-22 < 2**-17 of that magnitude.
DOT_BOUND = 2.0**-17


@pytest.mark.parametrize("fmt", FORMATS)
def test_vec_dot_within_bound_of_ggml(ggml, fmt):
    x = inputs("student_t", nrows=16, n=4096)
    a = inputs("normal", seed=3, nrows=1, n=4096)[0]
    wq = qs.quantize(fmt, x, imatrix=imatrix("random", 4096))
    aq = qs.quantize("q8_k", a)
    with qs.use_isa("reference"):
        ours = qs.vec_dot(fmt, wq, aq)
    theirs = ggml.vec_dot(fmt, wq, aq)
    assert_dot_within_bound(fmt, wq, aq, ours, theirs, DOT_BOUND)


@pytest.mark.parametrize("fmt", FORMATS)
def test_vec_dot_is_the_canonical_sum_of_exact_terms(fmt):
    """Each super-block's term as the docstring states it, from the decoded
    weights and quants (exact in float64), then the canonical reduction."""
    from quantspec.reference._numerics import canonical_dot

    rng = np.random.default_rng(4)
    wq = rng.integers(0, 256, (3, registry.spec(fmt).row_bytes(1024)), dtype=np.uint8)
    module = iq1_s if fmt == "iq1_s" else iq1_m
    w = module.FORMAT.blocks(wq)
    d = (w["d"].view(np.float16) if fmt == "iq1_s" else iq1_m.super_scale_bits(w).view(np.float16)).astype(F)
    keep = np.isfinite(d)
    aq = qs.quantize("q8_k", rng.standard_normal((1, 1024)).astype(F))[0]
    a = registry.module("q8_k").FORMAT.blocks(aq[None, :])
    unit = module.dequantize(wq) / np.where(keep, d, F(1)).repeat(256, axis=1)  # (2ls+1)(grid+delta): exact
    exact = (unit.astype(np.float64) * a["qs"].reshape(1, -1)).reshape(3, 4, 256).sum(axis=-1)
    parts = np.round(exact * 8)  # 8 * (sumi + 0.125 * sumi1): an integer
    terms = (d * a["d"]) * (parts / 8).astype(F)
    ours = qs.vec_dot(fmt, wq, aq)
    rows = keep.all(axis=1)
    assert_same_bits(ours[rows], canonical_dot(terms)[rows], f"{fmt} dot")


# ----------------------------------------------------------------- validate

@pytest.mark.parametrize("fmt", FORMATS)
def test_validate_matches_ggml(ggml, fmt):
    validate = ggml.base.ggml_validate_row_data
    validate.restype = ctypes.c_bool
    validate.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_size_t]
    rows = _special_bytes(fmt, np.random.default_rng(8)).reshape(-1, registry.spec(fmt).type_size)
    for block in rows:
        block = np.ascontiguousarray(block)
        ours = qs.validate(fmt, block[None, :])
        assert (not ours) == validate(registry.spec(fmt).type_id, block.ctypes.data, block.size), block.tobytes().hex()
