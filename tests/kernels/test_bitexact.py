"""Every generated kernel on every ISA this CPU has equals the spec: bytes
for quantize, float bit patterns for dequantize and the dot product."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, reject, settings
from hypothesis import strategies as st

import quantspec as qs
from quantspec import dispatch, registry
from quantspec.bench import SLOW_SPEC_QUANTIZERS, required_imatrix
from quantspec.errors import NonFiniteInputError
from tests.bits import assert_same_bits
from tests.conftest import kernel_params
from tests.strategies import byte_rows, imatrices, rows


def _run(isa: str, fn, *args, **kwargs):
    with qs.use_isa(isa):
        return fn(*args, **kwargs)


SMALL_ROWS = dict(max_rows=2, block_counts=[1, 2, 3])
FEWER_EXAMPLES = settings(max_examples=max(10, settings.default.max_examples // 4))


def _float_rows(fmt: str):
    """Rows to quantize: small ones where the spec's quantizer is slow."""
    block_size = registry.spec(fmt).block_size
    return rows(block_size, **SMALL_ROWS) if fmt in SLOW_SPEC_QUANTIZERS else rows(block_size)


def _quantize_bitexact(fmt, isa, data):
    spec = registry.spec(fmt)
    x = data.draw(_float_rows(fmt))
    imatrix = None
    if spec.imatrix == "required" or (spec.imatrix != "ignored" and data.draw(st.booleans())):
        imatrix = data.draw(imatrices(x.shape[1]))
    try:
        expected = _run("reference", qs.quantize, fmt, x, imatrix=imatrix)
    except NonFiniteInputError as refused:  # finite input the spec refuses (IQ1: overflowing sums)
        with pytest.raises(NonFiniteInputError) as raised:
            _run(isa, qs.quantize, fmt, x, imatrix=imatrix)
        assert str(raised.value) == str(refused)
        return
    actual = _run(isa, qs.quantize, fmt, x, imatrix=imatrix)
    assert actual.dtype == np.uint8 and actual.shape == expected.shape
    if not np.array_equal(actual, expected):
        block = int(np.argmax((actual != expected).reshape(-1, spec.type_size).any(axis=1)))
        raise AssertionError(f"{fmt} on {isa}: first differing block {block}: "
                             f"{actual.reshape(-1, spec.type_size)[block].tobytes().hex()} != "
                             f"{expected.reshape(-1, spec.type_size)[block].tobytes().hex()}")


@pytest.mark.parametrize("fmt,isa", [p for p in kernel_params("quantize") if p.values[0] not in SLOW_SPEC_QUANTIZERS])
@given(data=st.data())
def test_quantize_bitexact(fmt, isa, data):
    _quantize_bitexact(fmt, isa, data)


@pytest.mark.parametrize("fmt,isa", [p for p in kernel_params("quantize") if p.values[0] in SLOW_SPEC_QUANTIZERS])
@FEWER_EXAMPLES
@given(data=st.data())
def test_quantize_bitexact_slow_spec(fmt, isa, data):
    _quantize_bitexact(fmt, isa, data)


@pytest.mark.parametrize("fmt,isa", kernel_params("dequantize"))
@given(data=st.data())
def test_dequantize_bitexact(fmt, isa, data):
    spec = registry.spec(fmt)
    q = data.draw(byte_rows(spec.type_size, row_meta_size=spec.row_meta_size))  # every bit pattern, NaN/inf scales included
    expected = _run("reference", qs.dequantize, fmt, q)
    actual = _run(isa, qs.dequantize, fmt, q)
    assert_same_bits(actual, expected, f"{fmt} on {isa}")


@pytest.mark.parametrize("fmt,isa", [p for p in kernel_params("vec_dot") if p.values[0] not in SLOW_SPEC_QUANTIZERS])
@given(data=st.data())
def test_vec_dot_bitexact(fmt, isa, data):
    _vec_dot_bitexact(fmt, isa, data)


@pytest.mark.parametrize("fmt,isa", [p for p in kernel_params("vec_dot") if p.values[0] in SLOW_SPEC_QUANTIZERS])
@FEWER_EXAMPLES
@given(data=st.data())
def test_vec_dot_bitexact_slow_spec(fmt, isa, data):
    """Half the examples quantize floats (with the spec where there is no
    quantize kernel): fewer of them; the byte examples cover the dot's tails."""
    _vec_dot_bitexact(fmt, isa, data)


def _vec_dot_bitexact(fmt, isa, data):
    spec = registry.spec(fmt)
    act = registry.spec(spec.vec_dot_format)
    if data.draw(st.booleans()):  # quantized from edge-case floats
        x = data.draw(_float_rows(fmt))
        # formats that require an importance matrix (ggml asserts one) get one
        imatrix = data.draw(imatrices(x.shape[1])) if spec.imatrix == "required" else None
        try:
            wq = qs.quantize(fmt, x, imatrix=imatrix)
        except NonFiniteInputError:  # the spec refuses what makes ggml abort (overflowing grid searches)
            reject()
        a = data.draw(rows(act.block_size, max_rows=1))
        a = np.resize(a[0], x.shape[1])
        aq = qs.quantize(act.name, a)
    else:  # arbitrary bytes in both operands
        wq = data.draw(byte_rows(spec.type_size, row_meta_size=spec.row_meta_size))
        nblocks = (wq.shape[1] - spec.row_meta_size) // spec.type_size
        aq = np.random.default_rng(wq.shape[1]).integers(
            0, 256, act.row_bytes(nblocks * spec.block_size), dtype=np.uint8)
    expected = _run("reference", qs.vec_dot, fmt, wq, aq)
    actual = _run(isa, qs.vec_dot, fmt, wq, aq)
    assert_same_bits(actual, expected, f"{fmt} on {isa}")


@pytest.mark.parametrize("fmt,isa", [p for p in kernel_params("quantize")
                                     if registry.spec(p.values[0]).nonfinite_input == "store"])
def test_quantize_nonfinite_stored_bitexact(fmt, isa):
    """Float formats store NaN and inf: the kernels convert them as the spec."""
    x = np.array([np.nan, -np.nan, np.inf, -np.inf, 0.0, -0.0, 65520.0, -65519.0, 1e-45, 3.4e38,
                  np.float32(np.uint32(0x7F800001).view(np.float32)), np.float32(np.uint32(0xFFC12345).view(np.float32)),
                  1.0, 2.0, 3.0, 4.0] * 3, dtype=np.float32)
    np.testing.assert_array_equal(_run(isa, qs.quantize, fmt, x), _run("reference", qs.quantize, fmt, x))


@pytest.mark.parametrize("fmt,isa", kernel_params("dequantize"))
@pytest.mark.parametrize("threads", [2, 3])
def test_threads_split_identically(fmt, isa, threads):
    """Threads split rows or blocks; the result is the same bytes and bits."""
    spec = registry.spec(fmt)
    rng = np.random.default_rng(7)
    x = rng.standard_normal((7, 64 * spec.block_size if spec.block_size > 1 else 2048)).astype(np.float32)
    with qs.use_isa(isa):
        if dispatch.has_kernel(isa, fmt, "quantize"):
            im = required_imatrix(fmt, x.shape[1])
            q1 = qs.quantize(fmt, x, imatrix=im)
            qn = qs.quantize(fmt, x, imatrix=im, threads=threads)
            np.testing.assert_array_equal(q1, qn)
        else:  # arbitrary bytes: what the split must preserve does not depend on them
            q1 = rng.integers(0, 256, (x.shape[0], spec.row_bytes(x.shape[1])), dtype=np.uint8)
        y1 = qs.dequantize(fmt, q1)
        yn = qs.dequantize(fmt, q1, threads=threads)
    assert_same_bits(yn, y1, f"{fmt} threads={threads}")
    if spec.vec_dot_format:
        aq = qs.quantize(spec.vec_dot_format, x[0])
        with qs.use_isa(isa):
            d1 = qs.vec_dot(fmt, q1, aq)
            dn = qs.vec_dot(fmt, q1, aq, threads=threads)
        assert_same_bits(dn, d1, f"{fmt} vec_dot threads={threads}")


@pytest.mark.parametrize("fmt,isa", [p for p in kernel_params("quantize") if p.values[0] in ("f16", "bf16")])
def test_float_conversion_on_every_pattern(fmt, isa):
    """The kernels' fp32 -> f16/bf16 converters on 2^20 random bit patterns
    plus every value a binary16 can hold and the midpoints between them."""
    rng = np.random.default_rng(2)
    random_bits = rng.integers(0, 2**32, 1 << 20, dtype=np.uint64).astype(np.uint32)
    halves = np.arange(1 << 16, dtype=np.uint32).astype(np.uint16).view(np.float16).astype(np.float32)
    mids = ((halves.view(np.uint32) + np.uint32(0x1000)) & np.uint32(0xFFFFF000))
    x = np.concatenate([random_bits.view(np.float32), halves, mids.view(np.float32)])
    x = x[: x.size // 32 * 32]
    np.testing.assert_array_equal(_run(isa, qs.quantize, fmt, x), _run("reference", qs.quantize, fmt, x))


@pytest.mark.parametrize("fmt,isa", [p for p in kernel_params("dequantize")
                                     if p.values[0] in ("q4_0", "q5_1", "q8_0", "f16", "bf16") and p.values[1] != "scalar"])
def test_huge_outputs_take_the_streaming_path_bitexact(fmt, isa):
    """Outputs of 64 MiB and more are written with non-temporal stores: same bits."""
    spec = registry.spec(fmt)
    n = (64 << 20) // 4 + 32 * 5  # past the threshold, and a tail
    x = np.random.default_rng(3).standard_normal(n // spec.block_size * spec.block_size).astype(np.float32)
    q = qs.quantize(fmt, x)
    with qs.use_isa(isa):
        fast = qs.dequantize(fmt, q)
    with qs.use_isa("scalar"):
        slow = qs.dequantize(fmt, q)
    assert_same_bits(fast, slow, f"{fmt} on {isa}, streaming stores")
