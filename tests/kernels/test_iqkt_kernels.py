"""Edge cases of the ik_llama.cpp kernels (trellis IQ1_KT..IQ4_KT, ternary
IQ1_BN/IQ2_BN, binary Q1_0_G128) against the spec, bit for bit, on every
ISA this CPU has: non-finite, subnormal and signed-zero row scales, every
scale code and every stored byte, dot products whose block counts leave
tails after the 8- and 16-block SIMD groups, several rows, activation bytes
of -128, and the last block of a row (which the SIMD loads must not read
past)."""

from __future__ import annotations

import numpy as np
import pytest

import quantspec as qs
from quantspec import registry
from tests.bits import assert_same_bits
from tests.conftest import kernel_params

KT = ("iq1_kt", "iq2_kt", "iq3_kt", "iq4_kt")
BN = ("iq1_bn", "iq2_bn")
FORMATS = KT + BN + ("q1_0_g128",)

F32_SCALES = np.array([0.0, -0.0, 1.0, -2.5, 1e-40, -1e-45, 3e38, np.inf, -np.inf, np.nan, 1e-3, 65504.0, 0.0137],
                      dtype=np.float32)
F16_SCALES = np.array([0x0000, 0x8000, 0x0001, 0x83FF, 0x3C00, 0x7BFF, 0x7C00, 0xFC00, 0x7E00, 0x7C01, 0x1234, 0xB800],
                      dtype=np.uint16)


def _params(op: str, formats=FORMATS):
    return [p for p in kernel_params(op) if p.values[0] in formats]


def _same(isa: str, op: str, fmt: str, *args):
    with qs.use_isa("reference"):
        expected = getattr(qs, op)(fmt, *args)
    with qs.use_isa(isa):
        actual = getattr(qs, op)(fmt, *args)
    assert_same_bits(actual, expected, f"{fmt} {op} on {isa}")
    return expected


def _rows(fmt: str, nblocks: int, scales, rng) -> np.ndarray:
    """Random block bytes, one row per scale, the scales written as each row's
    metadata (IQ1_BN: fp16 bits; the others float32) or, for Q1_0_G128, as
    every block's fp16 d."""
    spec = registry.spec(fmt)
    q = rng.integers(0, 256, (len(scales), spec.row_bytes(nblocks * spec.block_size)), dtype=np.uint8)
    if spec.row_meta_size:
        q[:, :spec.row_meta_size] = np.ascontiguousarray(scales).view(np.uint8).reshape(len(scales), -1)
    else:
        blocks = q.reshape(len(scales), nblocks, spec.type_size)
        blocks[:, :, :2] = np.ascontiguousarray(np.repeat(scales[:, None], nblocks, axis=1)).view(np.uint8).reshape(
            len(scales), nblocks, 2)
    return q


def _scales(fmt: str) -> np.ndarray:
    return F16_SCALES if fmt in ("iq1_bn", "q1_0_g128") else F32_SCALES


def _activation(fmt: str, n: int, rng, min128: bool) -> np.ndarray:
    act = registry.spec(fmt).vec_dot_format
    x = (rng.standard_normal(n) * rng.choice([1e-3, 1.0, 50.0], n)).astype(np.float32)
    aq = qs.quantize(act, x)
    if min128:  # -128 never comes out of the quantizers but is a valid byte
        meta, size, bs = registry.spec(act).row_meta_size, registry.spec(act).type_size, registry.spec(act).block_size
        body = aq[meta:].reshape(-1, size)
        body[:, size - bs::7] = 0x80
    return aq


@pytest.mark.parametrize("fmt,isa", _params("dequantize"))
def test_dequantize_edge_scales(fmt, isa):
    rng = np.random.default_rng(11)
    for nblocks in (1, 3):
        _same(isa, "dequantize", fmt, _rows(fmt, nblocks, _scales(fmt), rng))


@pytest.mark.parametrize("fmt,isa", _params("vec_dot"))
@pytest.mark.parametrize("nblocks", [1, 7, 9, 15, 16, 17, 31, 33])
def test_vec_dot_tails_and_rows(fmt, isa, nblocks):
    """Finite scales, realistic activations: the sums must agree to the bit
    for every block count around the 8- and 16-block groups."""
    rng = np.random.default_rng(nblocks)
    spec = registry.spec(fmt)
    scales = _scales(fmt)
    finite = scales[np.isfinite(scales.view(np.float16) if scales.dtype == np.uint16 else scales)]
    w = _rows(fmt, nblocks, finite, rng)
    for min128 in (False, True):
        aq = _activation(fmt, nblocks * spec.block_size, rng, min128)
        _same(isa, "vec_dot", fmt, w, aq)


@pytest.mark.parametrize("fmt,isa", _params("vec_dot"))
def test_vec_dot_nonfinite_scales(fmt, isa):
    rng = np.random.default_rng(5)
    spec = registry.spec(fmt)
    w = _rows(fmt, 17, _scales(fmt), rng)
    _same(isa, "vec_dot", fmt, w, _activation(fmt, 17 * spec.block_size, rng, False))


@pytest.mark.parametrize("fmt,isa", _params("dequantize", KT))
def test_kt_every_scale_code(fmt, isa):
    """Every value of the sub-block scale bits (IQ4_KT: all 128 codes and both codebooks)."""
    rng = np.random.default_rng(3)
    spec = registry.spec(fmt)
    nblocks = 32
    q = _rows(fmt, nblocks, np.array([0.01, -7.0], dtype=np.float32), rng)
    blocks = q[:, spec.row_meta_size:].reshape(2, nblocks, spec.type_size)
    if fmt == "iq4_kt":
        codes = np.arange(256, dtype=np.uint8).reshape(nblocks, 8)  # bit 0 codebook, bits 1-7 scale
        blocks[:, :, 0:32:4] = codes
    elif fmt == "iq1_kt":
        blocks[:, :, 0:8] = (blocks[:, :, 0:8] & 0xF0) | (np.arange(nblocks * 8) % 16).reshape(nblocks, 8)
    else:
        blocks[:, :, 0:4] = (np.arange(nblocks * 4) * 17 % 256).reshape(nblocks, 4)
    _same(isa, "dequantize", fmt, q)
    _same(isa, "vec_dot", fmt, q, _activation(fmt, nblocks * spec.block_size, rng, True))


@pytest.mark.parametrize("fmt,isa", _params("dequantize", ("iq1_bn",)))
def test_iq1_bn_every_byte_in_every_position(fmt, isa):
    """256 rows: row r holds byte r in all 13 positions of each block (a 1-block
    row also ends the buffer there: the SIMD load must stop at byte 13)."""
    for nblocks in (1, 2):
        q = np.empty((256, 2 + 13 * nblocks), dtype=np.uint8)
        q[:, :2] = np.frombuffer(np.float16(0.75).tobytes(), dtype=np.uint8)
        q[:, 2:] = np.arange(256, dtype=np.uint8)[:, None]
        y = _same(isa, "dequantize", fmt, q)
        assert set(np.unique(y)) <= {-0.75, 0.0, 0.75}
        aq = _activation(fmt, 64 * nblocks, np.random.default_rng(nblocks), True)
        _same(isa, "vec_dot", fmt, q, aq)


@pytest.mark.parametrize("fmt,isa", _params("dequantize", ("iq2_bn",)))
def test_iq2_bn_code_3(fmt, isa):
    """Code 3 (never written) reads as value 2, in dequantize and the dot product."""
    q = np.zeros((2, 4 + 16 * 9), dtype=np.uint8)
    q[:, :4] = np.array([1.5, -0.25], dtype=np.float32).view(np.uint8).reshape(2, 4)
    q[:, 4:] = 0xFF
    y = _same(isa, "dequantize", fmt, q)
    assert (y[0] == 3.0).all()
    _same(isa, "vec_dot", fmt, q, _activation(fmt, 64 * 9, np.random.default_rng(0), True))


@pytest.mark.parametrize("fmt,isa", _params("vec_dot", BN))
def test_bn_dot_with_tiny_activation_lanes(fmt, isa):
    """A Q8_K64 lane whose scale's reciprocal overflows stores -128 everywhere."""
    rng = np.random.default_rng(9)
    x = rng.standard_normal(64 * 19).astype(np.float32)
    x[(np.arange(x.size) % 16) // 4 == 2] *= np.float32(1e-38)
    aq = qs.quantize("q8_k64", x)
    assert (aq[32:].view(np.int8)[(np.arange(x.size) % 16) // 4 == 2] == -128).all()
    w = qs.quantize(fmt, rng.standard_normal((3, x.size)).astype(np.float32))
    _same(isa, "vec_dot", fmt, w, aq)


@pytest.mark.parametrize("fmt,isa", _params("vec_dot", BN + ("q1_0_g128",)))
def test_quantized_rows(fmt, isa):
    """Rows the spec quantized (these quantizers are fast), several rows at once."""
    rng = np.random.default_rng(4)
    spec = registry.spec(fmt)
    x = rng.standard_t(3, (5, 41 * spec.block_size)).astype(np.float32)
    w = qs.quantize(fmt, x)
    _same(isa, "dequantize", fmt, w)
    _same(isa, "vec_dot", fmt, w, qs.quantize(spec.vec_dot_format, x[0]))


@pytest.mark.parametrize("fmt,isa", _params("vec_dot", KT))
def test_kt_vectors_of_ik_llama(fmt, isa):
    """The ik_llama.cpp ground-truth rows (tests/vectors/ik_llama): dequantize and dot."""
    from tests.vectors.test_ik_llama import HERE, TYPES

    case = np.load(HERE / TYPES[fmt.upper()]["cases"][0]["file"])
    q = case["q"]
    _same(isa, "dequantize", fmt, q)
    _same(isa, "vec_dot", fmt, q, qs.quantize("q8_0", case["x"][0]))
