"""The spec against the real libggml (llama-cpp-python's build): quantize
byte for byte (``ggml_quantize_chunk``, with and without an importance
matrix), dequantize bit for bit (``to_float``), and the dot product within
a stated bound of ggml's own ``vec_dot`` (whose order differs per ISA)."""

from __future__ import annotations

import numpy as np
import pytest

import quantspec as qs
from quantspec import registry
from tests.bits import assert_dot_within_bound, assert_same_bits, assert_same_blocks

pytestmark = pytest.mark.oracle

GGML_FORMATS = [f for f in qs.formats() if registry.spec(f).origin == "ggml"]
QUANTIZED = [f for f in GGML_FORMATS if registry.spec(f).block_size > 1]


def _inputs(kind: str, nrows: int = 6, n: int = 4096) -> np.ndarray:
    rng = np.random.default_rng(KINDS.index(kind))
    if kind == "normal":
        x = rng.standard_normal((nrows, n))
    elif kind == "student_t":
        x = rng.standard_t(3, (nrows, n))
    elif kind == "scaled":
        x = rng.standard_normal((nrows, n)) * 10.0 ** rng.uniform(-20, 20, (nrows, 1))
    else:  # edges: zero blocks, constant blocks, outliers, exact ties, subnormals
        x = rng.standard_normal((nrows, n))
        x[0] = 0
        x[1, :64] = -0.0
        x[1, 64:128] = 3.0
        x[2, ::97] = 1e4
        x[3] = np.round(rng.standard_normal(n) * 4) / 2
        x[4, :256] = rng.standard_normal(256) * 1e-41
        x[5, :32] = np.arange(32) - 16
    return x.astype(np.float32)


def _imatrix(kind: str, n: int = 4096) -> np.ndarray:
    rng = np.random.default_rng(11)
    if kind == "zeros":
        w = rng.random(n) * 5
        w[rng.random(n) < 0.4] = 0
        return w.astype(np.float32)
    return (10.0 ** rng.uniform(-8, 8, n)).astype(np.float32)  # huge ratios


KINDS = ["normal", "student_t", "scaled", "edges"]


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("fmt", [f for f in GGML_FORMATS if registry.spec(f).imatrix != "required"])
def test_quantize_matches_ggml(ggml, fmt, kind):
    x = _inputs(kind)
    with qs.use_isa("reference"):
        ours = qs.quantize(fmt, x)
    theirs = ggml.quantize(fmt, x)
    assert_same_blocks(fmt, ours, theirs)


@pytest.mark.parametrize("imatrix", ["zeros", "ratios"])
@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("fmt", [f for f in GGML_FORMATS if registry.spec(f).imatrix != "ignored"])
def test_quantize_with_imatrix_matches_ggml(ggml, fmt, kind, imatrix):
    x = _inputs(kind)
    w = _imatrix(imatrix, x.shape[1])
    with qs.use_isa("reference"):
        ours = qs.quantize(fmt, x, imatrix=w)
    assert_same_blocks(fmt, ours, ggml.quantize(fmt, x, w))


@pytest.mark.parametrize("fmt", [f for f in GGML_FORMATS if registry.spec(f).imatrix == "ignored" and f != "q8_1"])
def test_ignored_imatrix_changes_nothing(ggml, fmt):
    x = _inputs("normal")
    with qs.use_isa("reference"):
        ours = qs.quantize(fmt, x, imatrix=_imatrix("zeros", x.shape[1]))
    assert_same_blocks(fmt, ours, ggml.quantize(fmt, x, _imatrix("zeros", x.shape[1])))


@pytest.mark.parametrize("fmt", [f for f in QUANTIZED if f != "q8_1"] + ["f16", "bf16"])
def test_dequantize_matches_ggml(ggml, fmt):
    spec = registry.spec(fmt)
    rng = np.random.default_rng(5)
    x = _inputs("edges")
    q = ggml.quantize(fmt, x, _imatrix("ratios", x.shape[1]) if spec.imatrix == "required" else None)
    junk = rng.integers(0, 256, (3, q.shape[1]), dtype=np.uint8)  # every bit pattern
    for rows in (q, junk):
        with qs.use_isa("reference"):
            ours = qs.dequantize(fmt, rows)
        assert_same_bits(ours, ggml.dequantize(fmt, rows), f"{fmt} dequantize (block size {spec.block_size})")


#: |ours - ggml| <= DOT_BOUND * sum_i |w_i * a_i|: both are float32 sums of the
#: same exactly-computed block terms in different orders (and ggml's AVX2 path
#: may fuse multiply-adds), so each differs from the exact sum by at most
#: ~n_terms * 2^-24 of the absolute sum; 4096-element rows give < 4096/32 * 2^-23.
DOT_BOUND = 2.0**-10


@pytest.mark.parametrize("fmt", [f for f in GGML_FORMATS if registry.spec(f).vec_dot_format])
def test_vec_dot_within_bound_of_ggml(ggml, fmt):
    spec = registry.spec(fmt)
    x = _inputs("normal", nrows=16)
    a = _inputs("student_t", nrows=1)[0]
    wq = qs.quantize(fmt, x, imatrix=_imatrix("ratios", x.shape[1]) if spec.imatrix == "required" else None)
    aq = qs.quantize(spec.vec_dot_format, a)
    with qs.use_isa("reference"):
        ours = qs.vec_dot(fmt, wq, aq)
    theirs = ggml.vec_dot(fmt, wq, aq)
    assert_dot_within_bound(fmt, wq, aq, ours, theirs, DOT_BOUND)


def test_q8_0_reference_activation_quantizer_differs_from_ggml_avx2(ggml):
    """The normative activation quantizer rounds ties away from zero (roundf);
    ggml's x86 CPU from_float rounds them to even: a documented variant."""
    x = np.zeros(32, dtype=np.float32)
    x[:5] = [127, 2.5, -2.5, 3.5, 0.5]
    ours = qs.quantize("q8_0", x)
    assert list(ours[2:7].view(np.int8)) == [127, 3, -3, 4, 1]
    np.testing.assert_array_equal(ours, ggml.quantize("q8_0", x)[0])
    native = ggml.from_float("q8_0", x)
    if not np.array_equal(native, ours):  # AVX2/AVX-512 builds: ties to even
        assert list(native[2:7].view(np.int8)) == [127, 2, -2, 4, 0]
