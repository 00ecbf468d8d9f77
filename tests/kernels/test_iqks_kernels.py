"""The kernels of the ik_llama.cpp formats with a row scale (IQ4_KSS, IQ4_KS,
IQ5_KS, IQ3_KS, IQ2_KS, IQ2_KL) beyond the Hypothesis properties: NaN, inf,
subnormal and signed-zero row scales, every code of every sub-block,
IQ4_KSS's parity-coded words (all 65536 of them), dot products whose
super-block counts are not whole SIMD groups over several rows, and the
quantizers on ik_llama.cpp's own vectors (ground truth) and edge rows, with
and without an importance matrix, on every ISA."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import quantspec as qs
from quantspec import registry
from quantspec.errors import NonFiniteInputError
from tests.bits import assert_same_bits
from tests.conftest import kernel_params

FORMATS = ("iq4_kss", "iq4_ks", "iq5_ks", "iq3_ks", "iq2_ks", "iq2_kl")
VECTORS = Path(__file__).resolve().parent.parent / "vectors" / "ik_llama"
QK = 256


def _params(op: str):
    return [p for p in kernel_params(op) if p.values[0] in FORMATS]


def _reference(fn, *args, **kwargs):
    with qs.use_isa("reference"):
        return fn(*args, **kwargs)


def _kernel(isa, fn, *args, **kwargs):
    with qs.use_isa(isa):
        return fn(*args, **kwargs)


def _row_scales(meta_size: int) -> list[bytes]:
    """Row scales that stress a decoder: NaN (quiet, signalling, negative), +-inf,
    +-0, the smallest and largest subnormal, the largest finite value."""
    if meta_size == 4:
        bits = [0x7FC00000, 0x7F800001, 0xFFC12345, 0x7F800000, 0xFF800000, 0x00000000, 0x80000000,
                0x00000001, 0x007FFFFF, 0x7F7FFFFF, 0x3F800000, 0xBE000000]
        return [int(b).to_bytes(4, "little") for b in bits]
    bits = [0x7E00, 0x7C01, 0xFE55, 0x7C00, 0xFC00, 0x0000, 0x8000, 0x0001, 0x03FF, 0x7BFF, 0x3C00, 0xB800]
    return [int(b).to_bytes(2, "little") for b in bits]


def _rows_with_scales(fmt: str, nblocks: int, seed: int) -> np.ndarray:
    """One row per stressing row scale, random block bytes."""
    spec = registry.spec(fmt)
    scales = _row_scales(spec.row_meta_size)
    rng = np.random.default_rng(seed)
    body = rng.integers(0, 256, (len(scales), nblocks * spec.type_size), dtype=np.uint8)
    meta = np.frombuffer(b"".join(scales), dtype=np.uint8).reshape(len(scales), -1)
    return np.ascontiguousarray(np.concatenate([meta, body], axis=1))


@pytest.mark.parametrize("fmt,isa", _params("dequantize"))
def test_dequantize_special_row_scales(fmt, isa):
    q = _rows_with_scales(fmt, 3, 1)
    assert_same_bits(_kernel(isa, qs.dequantize, fmt, q), _reference(qs.dequantize, fmt, q), f"{fmt} on {isa}")


@pytest.mark.parametrize("fmt,isa", _params("vec_dot"))
def test_vec_dot_special_row_scales(fmt, isa):
    q = _rows_with_scales(fmt, 9, 2)
    a = np.random.default_rng(3).integers(0, 256, registry.spec("q8_k").row_bytes(9 * QK), dtype=np.uint8)
    assert_same_bits(_kernel(isa, qs.vec_dot, fmt, q, a), _reference(qs.vec_dot, fmt, q, a), f"{fmt} on {isa}")


def _every_byte_rows(fmt: str) -> np.ndarray:
    """Rows whose blocks, taken together, hold every byte value at every offset
    (so every scale code, shift bit and index of every sub-block), row scale 1."""
    spec = registry.spec(fmt)
    blocks = (np.arange(256, dtype=np.uint16)[:, None] + 7 * np.arange(spec.type_size)[None, :]) % 256
    body = blocks.astype(np.uint8).reshape(16, 16 * spec.type_size)
    meta = np.frombuffer(_row_scales(spec.row_meta_size)[10], dtype=np.uint8)
    return np.ascontiguousarray(np.concatenate([np.tile(meta, (16, 1)), body], axis=1))


@pytest.mark.parametrize("fmt,isa", _params("dequantize"))
def test_dequantize_every_code(fmt, isa):
    q = _every_byte_rows(fmt)
    assert_same_bits(_kernel(isa, qs.dequantize, fmt, q), _reference(qs.dequantize, fmt, q), f"{fmt} on {isa}")


@pytest.mark.parametrize("fmt,isa", _params("vec_dot"))
def test_vec_dot_every_code_against_extreme_activations(fmt, isa):
    """Every code against activation quants of -128 and 127 (the largest
    products pmaddubsw may see) and random ones."""
    q = _every_byte_rows(fmt)
    act = registry.spec("q8_k")
    for fill in (-128, 127, None):
        a = np.random.default_rng(4).integers(0, 256, act.row_bytes(16 * QK), dtype=np.uint8)
        if fill is not None:
            quants = a.reshape(16, act.type_size)[:, 4:4 + QK]
            quants[...] = np.uint8(fill & 0xFF)
        assert_same_bits(_kernel(isa, qs.vec_dot, fmt, q, a), _reference(qs.vec_dot, fmt, q, a),
                         f"{fmt} on {isa}, activation quants {fill}")


def _every_kss_word() -> np.ndarray:
    """IQ4_KSS rows holding each of the 65536 16-bit words once (1024 blocks),
    with row scale 1: every parity-coded nibble group and scale bit."""
    words = np.arange(1 << 16, dtype=np.uint32).astype(np.uint16).reshape(16, -1)
    meta = np.frombuffer(np.float32(1.0).tobytes(), dtype=np.uint8)
    return np.ascontiguousarray(np.concatenate([np.tile(meta, (16, 1)), words.view(np.uint8)], axis=1))


@pytest.mark.parametrize("fmt,isa", [p for p in _params("dequantize") if p.values[0] == "iq4_kss"])
def test_iq4_kss_every_word(fmt, isa):
    q = _every_kss_word()
    assert_same_bits(_kernel(isa, qs.dequantize, fmt, q), _reference(qs.dequantize, fmt, q), f"{fmt} on {isa}")
    a = np.random.default_rng(5).integers(0, 256, registry.spec("q8_k").row_bytes(q.shape[1] // 128 * QK),
                                          dtype=np.uint8)
    assert_same_bits(_kernel(isa, qs.vec_dot, fmt, q, a), _reference(qs.vec_dot, fmt, q, a), f"{fmt} on {isa}")


@pytest.mark.parametrize("fmt,isa", _params("vec_dot"))
@pytest.mark.parametrize("nblocks", [1, 7, 8, 9, 15, 16, 17, 23, 24, 33])
def test_vec_dot_tails_and_row_pairs(fmt, isa, nblocks):
    """Super-block counts around the groups of 8 and 16, 1..5 rows (pairs of
    rows and a last single row)."""
    spec = registry.spec(fmt)
    rng = np.random.default_rng(nblocks)
    a = rng.integers(0, 256, registry.spec("q8_k").row_bytes(nblocks * QK), dtype=np.uint8)
    for nrows in (1, 2, 5):
        q = rng.integers(0, 256, (nrows, spec.row_bytes(nblocks * QK)), dtype=np.uint8)
        q[:, :spec.row_meta_size] = np.frombuffer(_row_scales(spec.row_meta_size)[11], dtype=np.uint8)
        assert_same_bits(_kernel(isa, qs.vec_dot, fmt, q, a), _reference(qs.vec_dot, fmt, q, a),
                         f"{fmt} on {isa}, {nrows} rows of {nblocks} super-blocks")


# ------------------------------------------------------------------ quantize

def _edge():
    return {fmt: dict(np.load(VECTORS / "edge" / f"{fmt}.npz")) for fmt in FORMATS
            if (VECTORS / "edge" / f"{fmt}.npz").exists()}


@pytest.mark.parametrize("fmt,isa", _params("quantize"))
@pytest.mark.parametrize("with_imatrix", [False, True], ids=["plain", "imatrix"])
def test_quantize_edge_rows_are_ik_llama_bytes(fmt, isa, with_imatrix):
    """ik_llama.cpp's edge rows (zeros, zero sub-blocks, 1e-20, 1e15, constant,
    outlier, ties, signed zeros, ramp, Student-t): the kernel writes ik_llama.cpp's
    bytes wherever ik_llama.cpp finishes (it aborts on IQ4_KSS's 1e15 row), and
    the spec's bytes everywhere."""
    case = _edge()[fmt]
    im = case["imatrix"] if with_imatrix else None
    q = _kernel(isa, qs.quantize, fmt, case["x"], imatrix=im)
    np.testing.assert_array_equal(q, _reference(qs.quantize, fmt, case["x"], imatrix=im))
    ok = case["ok_imatrix" if with_imatrix else "ok"]
    np.testing.assert_array_equal(q[ok], case["q_imatrix" if with_imatrix else "q"][ok])


@pytest.mark.parametrize("fmt,isa", _params("quantize"))
def test_quantize_cases_are_ik_llama_bytes(fmt, isa):
    for path in sorted(VECTORS.glob(f"{fmt}_case*.npz")):
        case = dict(np.load(path))
        q = _kernel(isa, qs.quantize, fmt, case["x"], imatrix=case.get("imatrix"))
        np.testing.assert_array_equal(q, case["q"], err_msg=f"{path.name} on {isa}")


@pytest.mark.parametrize("fmt,isa", _params("quantize"))
def test_quantize_scales_and_magnitudes(fmt, isa):
    """Rows whose sub-block scales span many octaves (one row scale serves
    them all), tiny and huge rows, rows of one repeated value, a zero row."""
    rng = np.random.default_rng(6)
    n = 3 * QK
    x = rng.standard_normal((8, n)).astype(np.float32)
    x[0] *= np.repeat(np.float32(10.0) ** rng.integers(-8, 8, n // 32), 32).astype(np.float32)
    x[1] *= np.float32(1e-30)
    x[2] *= np.float32(1e30)
    x[3] = np.float32(0.75)
    x[4] = 0
    x[5, :40] = 0
    x[6] = np.round(x[6] * 8) / 8
    x[7, 100] = np.float32(-3e4)
    im = rng.random(n).astype(np.float32)
    im[:64] = 0
    for imatrix in (None, im):
        np.testing.assert_array_equal(_kernel(isa, qs.quantize, fmt, x, imatrix=imatrix),
                                      _reference(qs.quantize, fmt, x, imatrix=imatrix))


@pytest.mark.parametrize("fmt,isa", _params("quantize"))
def test_quantize_reports_the_first_nonfinite_superblock(fmt, isa):
    x = np.ones((3, 2 * QK), dtype=np.float32)
    x[1, QK + 5] = np.inf
    x[2, 3] = np.nan
    with pytest.raises(NonFiniteInputError, match="row 1 column 261"):
        _kernel(isa, qs.quantize, fmt, x)
