"""The K-quant kernels beyond the Hypothesis properties: the scale-byte
layout the templates render (probed from the spec's decoders), the edge
inputs of the oracle tests with and without an importance matrix on every
ISA, super-block groups that straddle rows, the first non-finite super-block,
and dot-product tails."""

from __future__ import annotations

from functools import lru_cache

import numpy as np
import pytest

import quantspec as qs
from quantspec import registry
from quantspec.errors import NonFiniteInputError
from quantspec.reference import _kquants
from tests.bits import assert_same_bits
from tests.conftest import kernel_params
from tests.oracle.test_kquants import KINDS, inputs

codegen_model = pytest.importorskip("codegen.model", reason="needs the source tree (codegen/)")

KQUANTS = ("q2_k", "q3_k", "q4_k", "q5_k", "q6_k")
N = 256 * 11  # 11 super-blocks per row: whole SIMD groups and a tail


def _params(op: str, formats=KQUANTS + ("q8_k",)):
    return [p for p in kernel_params(op) if p.values[0] in formats]


def _evaluate_fields(fields, packed: np.ndarray) -> np.ndarray:
    """Decode bytes with a bit-field table as the rendered C does."""
    out = np.zeros(packed.shape[:-1] + (len(fields),), dtype=np.int64)
    for v, parts in enumerate(fields):
        for p in parts:
            out[..., v] |= ((packed[..., p["byte"]].astype(np.int64) >> p["shift"]) & p["mask"]) << p["dest"]
    return out


def _pack_fields(fields, values: np.ndarray, nbytes: int) -> np.ndarray:
    """Pack byte values with a bit-field table as the rendered C does: every
    field ORed in, the top field of a value unmasked, stores truncated to 8 bits."""
    out = np.zeros(values.shape[:-1] + (nbytes,), dtype=np.int64)
    v64 = values.astype(np.int64)
    for v, parts in enumerate(fields):
        for p in parts:
            part = v64[..., v] >> p["dest"]
            if not p["top"]:
                part = part & p["mask"]
            out[..., p["byte"]] |= (part << p["shift"]) & 0xFF
    return out.astype(np.uint8)


@pytest.mark.parametrize("decoder,nbytes", [("unpack_scale_min_k4", 12), ("unpack_scales_q3k", 12),
                                            ("nibbles", 16), ("bytes", 16)])
def test_scale_fields_decode_every_byte_pattern_like_the_spec(decoder, nbytes):
    fields = codegen_model.scale_fields(decoder, nbytes)
    packed = np.random.default_rng(1).integers(0, 256, (4096, nbytes), dtype=np.uint8)
    expected = codegen_model.SCALE_DECODERS[decoder](packed).astype(np.int64) & 0xFF
    np.testing.assert_array_equal(_evaluate_fields(fields, packed), expected)


def test_scale_packing_rule_is_the_c_packers_also_beyond_six_bits():
    """Q4_K's imatrix path may pack make_qp_quants codes above 63 unclamped;
    the rendered rule spills them exactly as pack_scale_min_k4 (the C)."""
    rng = np.random.default_rng(2)
    fields = codegen_model.scale_fields("unpack_scale_min_k4", 12)
    ls, lm = rng.integers(0, 256, (2, 4096, 8))
    np.testing.assert_array_equal(_pack_fields(fields, np.concatenate([ls, lm], axis=-1), 12),
                                  _kquants.pack_scale_min_k4(ls, lm))
    fields = codegen_model.scale_fields("unpack_scales_q3k", 12)
    s6 = rng.integers(0, 64, (4096, 16))
    np.testing.assert_array_equal(_pack_fields(fields, s6, 12), _kquants.pack_scales_q3k(s6))
    fields = codegen_model.scale_fields("nibbles", 16)  # q2_k: (ls | lm << 4) & 0xFF, as reference/q2_k.py
    ls, lm = rng.integers(0, 256, (2, 4096, 16))
    np.testing.assert_array_equal(_pack_fields(fields, np.concatenate([ls, lm], axis=-1), 16),
                                  ((ls | (lm << 4)) & 0xFF).astype(np.uint8))


def _imatrix(n: int, kind: str) -> np.ndarray | None:
    if kind == "none":
        return None
    rng = np.random.default_rng(9)
    w = (10.0 ** rng.uniform(-6, 6, n)).astype(np.float32)  # huge ratios
    w[rng.random(n) < 0.25] = 0  # and zeros
    return w


@lru_cache(maxsize=None)
def _spec_quantize(fmt: str, kind: str, im: str) -> bytes:
    x = inputs(kind, seed=3, nrows=8, n=N)
    with qs.use_isa("reference"):
        return qs.quantize(fmt, x, imatrix=_imatrix(N, im)).tobytes()


@pytest.mark.parametrize("fmt,isa", _params("quantize"))
@pytest.mark.parametrize("im", ["none", "zeros_and_ratios"])
def test_quantize_edge_inputs_bitexact(fmt, isa, im):
    """Zero, -0.0 and constant super-blocks, zero sub-blocks, outliers, ties,
    subnormal and tiny blocks, fp16-overflowing scales, squares that overflow."""
    if fmt == "q8_k" and im != "none":
        pytest.skip("q8_k ignores the importance matrix")
    spec = registry.spec(fmt)
    for kind in KINDS:
        x = inputs(kind, seed=3, nrows=8, n=N)
        with qs.use_isa(isa):
            got = qs.quantize(fmt, x, imatrix=_imatrix(N, im))
        expected = np.frombuffer(_spec_quantize(fmt, kind, im), dtype=np.uint8).reshape(got.shape)
        if not np.array_equal(got, expected):
            bad = np.flatnonzero((got.reshape(-1, spec.type_size) != expected.reshape(-1, spec.type_size)).any(1))
            raise AssertionError(f"{fmt} on {isa}, {kind}, imatrix {im}: super-blocks {bad[:8]} differ")


@pytest.mark.parametrize("fmt,isa", _params("quantize", KQUANTS))
@pytest.mark.parametrize("nrows,per_row", [(3, 3), (5, 1), (2, 5), (1, 7), (4, 6)])
def test_superblock_groups_straddle_rows_with_an_imatrix(fmt, isa, nrows, per_row):
    """The SIMD quantizers take 2 or 4 super-blocks at once, also across row
    ends, where the importance matrix starts over."""
    rng = np.random.default_rng(nrows * 10 + per_row)
    x = rng.standard_normal((nrows, 256 * per_row)).astype(np.float32)
    im = rng.random(256 * per_row).astype(np.float32)
    for imatrix in (None, im):
        with qs.use_isa(isa):
            got = qs.quantize(fmt, x, imatrix=imatrix)
        with qs.use_isa("reference"):
            expected = qs.quantize(fmt, x, imatrix=imatrix)
        np.testing.assert_array_equal(got, expected)


@pytest.mark.parametrize("fmt,isa", _params("quantize"))
def test_the_first_nonfinite_superblock_is_reported(fmt, isa):
    rng = np.random.default_rng(4)
    x = rng.standard_normal((3, 256 * 5)).astype(np.float32)
    x[2, 10] = np.inf  # a later row
    x[1, 256 * 3 + 7] = np.nan  # row 1, block 3: inside a SIMD group
    with qs.use_isa(isa), pytest.raises(NonFiniteInputError, match=r"row 1 column 775 \(block 3\)"):
        qs.quantize(fmt, x)
    x[1, 256 * 3 + 7] = 0
    x[2, 256 * 4 + 255] = -np.inf  # the last super-block: the scalar tail
    x[2, 10] = 0
    with qs.use_isa(isa), pytest.raises(NonFiniteInputError, match=r"row 2 column 1279 \(block 4\)"):
        qs.quantize(fmt, x)


@pytest.mark.parametrize("fmt,isa", _params("vec_dot", KQUANTS))
def test_vec_dot_row_and_superblock_tails(fmt, isa):
    """Rows taken two at a time and alone; 8 and 16 super-blocks per vector
    step and the scalar tail; arbitrary bytes (bsums unrelated to the quants)."""
    spec = registry.spec(fmt)
    rng = np.random.default_rng(5)
    for nb in (1, 7, 8, 9, 16, 17, 33):
        a = rng.integers(0, 256, 292 * nb, dtype=np.uint8)
        for nrows in (1, 2, 3, 5):
            w = rng.integers(0, 256, (nrows, spec.type_size * nb), dtype=np.uint8)
            with qs.use_isa(isa):
                got = qs.vec_dot(fmt, w, a)
            with qs.use_isa("reference"):
                expected = qs.vec_dot(fmt, w, a)
            assert_same_bits(got, expected, f"{fmt} on {isa}, {nrows} rows of {nb} super-blocks")


@pytest.mark.parametrize("fmt,isa", _params("quantize", ("q8_k",)))
def test_q8_k_blocks_off_the_fast_path(fmt, isa):
    """Zero and -0.0 blocks, a subnormal largest element (-127/max overflows:
    the C's quants are 0 and d is -0.0), ties, and the largest magnitude
    reached with both signs."""
    rng = np.random.default_rng(6)
    x = rng.standard_normal((6, 512)).astype(np.float32)
    x[0] = 0.0
    x[1, :256] = -0.0
    x[2, :256] *= np.float32(1e-40)
    x[3] = np.round(x[3] * 8) / 2
    x[4, 3], x[4, 9] = -5.0, 5.0
    x[5, 256:] = np.float32(3e38)
    with qs.use_isa(isa):
        got = qs.quantize(fmt, x)
    with qs.use_isa("reference"):
        expected = qs.quantize(fmt, x)
    np.testing.assert_array_equal(got, expected)


@pytest.mark.parametrize("fmt,isa", [p for p in _params("dequantize", ("q4_k", "q6_k", "q8_k"))
                                     if p.values[1] != "scalar"])
def test_huge_outputs_take_the_streaming_path_bitexact(fmt, isa):
    """Outputs beyond twice the last-level cache (64 MiB at most) are written
    with non-temporal stores: the same bits as the scalar kernel."""
    n = (64 << 20) // 4 + 256 * 5
    x = np.random.default_rng(7).standard_normal(n).astype(np.float32)
    with qs.use_isa(isa):
        q = qs.quantize(fmt, x)
        fast = qs.dequantize(fmt, q)
    with qs.use_isa("scalar"):
        slow = qs.dequantize(fmt, q)
    assert_same_bits(fast, slow, f"{fmt} on {isa}, streaming stores")
