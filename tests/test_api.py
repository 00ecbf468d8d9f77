"""The public API: registry lookups, shapes, ``out=``, and the bad-input
errors (each names the format, what was expected and what was given)."""

from __future__ import annotations

import contextlib

import numpy as np
import pytest

import quantspec as qs
from quantspec import errors
from quantspec.reference import MODULES

# (name, type id, block size, bytes per block) from ggml's type_traits (formats-ggml.md §1.1)
GGML_SIZES = {"f32": (0, 1, 4), "f16": (1, 1, 2), "q4_0": (2, 32, 18), "q4_1": (3, 32, 20), "q5_0": (6, 32, 22),
              "q5_1": (7, 32, 24), "q8_0": (8, 32, 34), "q8_1": (9, 32, 36), "bf16": (30, 1, 2)}


def test_formats_and_info():
    assert qs.formats() == list(MODULES)
    for name, (tid, bs, ts) in GGML_SIZES.items():
        info = qs.format_info(name.upper())
        assert (info.name, info.origin, info.type_id, info.block_size, info.type_size) == (name, "ggml", tid, bs, ts)
        assert qs.format_info(("ggml", tid)).name == name
        assert info.row_meta_size == 0
    assert qs.format_info("q4_1").vec_dot_format == "q8_1"
    assert qs.format_info("q8_1").vec_dot_format is None


def test_layout_sizes_match_ggml_type_traits():
    ggml = pytest.importorskip("quantspec.oracle").ggml
    try:
        g = ggml()
    except Exception as exc:  # noqa: BLE001 - environment without libggml
        pytest.skip(str(exc))
    for name in [f for f in qs.formats() if qs.format_info(f).origin == "ggml"]:  # ik_llama ids are not ggml's
        traits = g.base.ggml_get_type_traits(qs.format_info(name).type_id).contents
        assert (traits.blck_size, traits.type_size) == (qs.format_info(name).block_size,
                                                        qs.format_info(name).type_size), name


def test_one_row_and_many_rows_agree():
    x = np.random.default_rng(0).standard_normal((3, 64)).astype(np.float32)
    q = qs.quantize("q4_0", x)
    assert q.shape == (3, 36)
    np.testing.assert_array_equal(qs.quantize("q4_0", x[1]), q[1])
    assert qs.dequantize("q4_0", q[1]).shape == (64,)


def test_out_arrays_are_filled_and_checked():
    x = np.random.default_rng(1).standard_normal((2, 64)).astype(np.float32)
    out = np.empty((2, 36), dtype=np.uint8)
    assert qs.quantize("q4_0", x, out=out) is out
    y = np.empty((2, 64), dtype=np.float32)
    assert qs.dequantize("q4_0", out, out=y) is y
    with pytest.raises(errors.OutArrayError, match=r"q4_0: out must have dtype uint8 and shape \(2, 36\)"):
        qs.quantize("q4_0", x, out=np.empty((2, 35), dtype=np.uint8))
    with pytest.raises(errors.OutArrayError, match="C-contiguous"):
        qs.dequantize("q4_0", out, out=np.empty((64, 2), dtype=np.float32).T)


def test_zero_block_quirks():
    """All-zero Q4_0/Q5_0 blocks store d = -0.0 (max starts at +0, d = max/-8)."""
    z = np.zeros(32, dtype=np.float32)
    assert qs.quantize("q4_0", z).tobytes().hex() == "0080" + "88" * 16
    assert qs.quantize("q5_0", z).tobytes().hex() == "0080" + "ffffffff" + "00" * 16


@pytest.mark.parametrize("bad,exc,pattern", [
    ("q9_9", errors.UnknownFormatError, "unknown format 'q9_9'"),
    (("ggml", 4), errors.UnknownFormatError, r"unknown format id \('ggml', 4\)"),
    (("ik_llama", 2), errors.UnknownFormatError, "unknown format id"),
    (42, errors.UnknownFormatError, "expected a name"),
])
def test_unknown_format(bad, exc, pattern):
    with pytest.raises(exc, match=pattern):
        qs.quantize(bad, np.zeros(32, dtype=np.float32))


def test_wrong_dtype_and_ndim():
    with pytest.raises(errors.DtypeError, match="q4_0: x must be float32, got ndarray of dtype float64"):
        qs.quantize("q4_0", np.zeros(32))
    with pytest.raises(errors.DtypeError, match="q8_0: q must be uint8"):
        qs.dequantize("q8_0", np.zeros(34, dtype=np.int8))
    with pytest.raises(errors.ShapeError, match="must be 1-D .* or 2-D"):
        qs.quantize("q4_0", np.zeros((1, 1, 32), dtype=np.float32))
    assert issubclass(errors.DtypeError, TypeError) and issubclass(errors.ShapeError, ValueError)


def test_row_lengths():
    with pytest.raises(errors.ShapeError, match="q4_0: rows must hold a positive multiple of 32 elements .* got 48"):
        qs.quantize("q4_0", np.zeros(48, dtype=np.float32))
    with pytest.raises(errors.ShapeError, match="multiple of 32 .* got 0"):
        qs.quantize("q4_0", np.zeros((2, 0), dtype=np.float32))
    with pytest.raises(errors.ShapeError, match=r"q5_1: a row must be 0 \+ k\*24 bytes .* got 25 bytes"):
        qs.dequantize("q5_1", np.zeros(25, dtype=np.uint8))


def test_non_contiguous_and_misaligned_inputs_are_copied_not_misread():
    rng = np.random.default_rng(2)
    x = rng.standard_normal((4, 128)).astype(np.float32)
    strided = np.asfortranarray(x)
    np.testing.assert_array_equal(qs.quantize("q8_0", strided), qs.quantize("q8_0", x))
    raw = np.zeros(x.nbytes + 1, dtype=np.uint8)
    misaligned = raw[1:].view(np.float32).reshape(x.shape)
    misaligned[...] = x
    assert not misaligned.flags.aligned or misaligned.ctypes.data % 4
    np.testing.assert_array_equal(qs.quantize("q8_0", misaligned), qs.quantize("q8_0", x))
    swapped = x.astype(">f4")
    with pytest.raises(errors.DtypeError):  # a byte-swapped dtype is a different dtype: refuse, don't guess
        qs.quantize("q8_0", swapped)
    q = qs.quantize("q4_0", x)
    every_other = np.zeros((8, q.shape[1]), dtype=np.uint8)
    every_other[::2] = q
    np.testing.assert_array_equal(qs.dequantize("q4_0", every_other[::2]), qs.dequantize("q4_0", q))


def test_imatrix_checks():
    x = np.zeros((2, 64), dtype=np.float32)
    with pytest.raises(errors.ImatrixError, match=r"q4_0: imatrix must have shape \(64,\)"):
        qs.quantize("q4_0", x, imatrix=np.ones(32, dtype=np.float32))
    with pytest.raises(errors.ImatrixError, match="finite; column 3"):
        im = np.ones(64, dtype=np.float32)
        im[3] = np.nan
        qs.quantize("q4_0", x, imatrix=im)
    with pytest.raises(errors.ImatrixError, match=">= 0; column 5"):
        im = np.ones(64, dtype=np.float32)
        im[5] = -1
        qs.quantize("q4_0", x, imatrix=im)
    with pytest.raises(errors.DtypeError, match="imatrix must be float32"):
        qs.quantize("q4_0", x, imatrix=np.ones(64))


@pytest.mark.parametrize("isa", ["reference", "scalar"])
@pytest.mark.parametrize("fmt", ["q4_0", "q4_1", "q5_0", "q5_1", "q8_0", "q8_1"])
def test_nonfinite_input_is_rejected_where_the_format_cannot_hold_it(fmt, isa):
    x = np.ones((3, 64), dtype=np.float32)
    x[2, 40] = np.inf
    with qs.use_isa(isa), pytest.raises(errors.NonFiniteInputError,
                                        match=rf"{fmt}: input must be finite .* row 2 column 40 \(block 1\) is inf"):
        qs.quantize(fmt, x)
    x[2, 40] = np.nan
    with qs.use_isa(isa), pytest.raises(errors.NonFiniteInputError, match="nan"):
        qs.quantize(fmt, x, imatrix=np.ones(64, dtype=np.float32) if fmt in ("q4_0", "q5_1") else None)


@pytest.mark.parametrize("fmt", ["f32", "f16", "bf16"])
def test_float_formats_store_nonfinite(fmt):
    x = np.array([np.nan, np.inf, -np.inf, 1.0], dtype=np.float32)
    y = qs.dequantize(fmt, qs.quantize(fmt, x))
    assert np.isnan(y[0]) and y[1] == np.inf and y[2] == -np.inf and y[3] == 1.0


def test_size_overflow_is_reported_before_allocating():
    # 2^61 bytes of Q8_0 decode to 2^63 bytes of float32: refused before any copy or allocation
    huge = np.lib.stride_tricks.as_strided(np.zeros(1, dtype=np.uint8), shape=(2**26, 34 * 2**30), strides=(0, 0))
    with pytest.raises(errors.SizeOverflowError, match="q8_0: .* does not fit"):
        qs.dequantize("q8_0", huge)


def test_vec_dot_checks():
    wq = qs.quantize("q4_1", np.ones((2, 64), dtype=np.float32))
    with pytest.raises(errors.UnsupportedOperationError, match="q8_1: has no dot product here"):
        qs.vec_dot("q8_1", np.zeros(36, dtype=np.uint8), np.zeros(36, dtype=np.uint8))
    with pytest.raises(errors.ShapeError, match=r"q4_1: a row must be|activation row must hold 64"):
        qs.vec_dot("q4_1", wq, qs.quantize("q8_1", np.ones(32, dtype=np.float32)))
    with pytest.raises(errors.ShapeError, match="q8_1: a row must be"):
        qs.vec_dot("q4_1", wq, qs.quantize("q8_0", np.ones(64, dtype=np.float32)))  # 68 bytes is not 2*36
    assert qs.vec_dot("q4_1", wq, qs.quantize("q8_1", np.ones(64, dtype=np.float32))).shape == (2,)


@pytest.mark.parametrize("isa", ["reference", None])
def test_vec_dot_takes_every_layout_alike(isa):
    """The plain call (aligned C-contiguous uint8, one thread) and every
    other accepted layout give the same bits."""
    rng = np.random.default_rng(3)
    wq = qs.quantize("q4_0", rng.standard_normal((5, 128), dtype=np.float32))
    aq = qs.quantize("q8_0", rng.standard_normal(128, dtype=np.float32))
    with (qs.use_isa(isa) if isa else contextlib.nullcontext()):
        plain = qs.vec_dot("q4_0", wq, aq)
        strided = np.zeros((5, 2 * wq.shape[1]), dtype=np.uint8)
        strided[:, ::2] = wq
        others = [qs.vec_dot("q4_0", wq, aq, threads=1), qs.vec_dot("q4_0", wq, aq, threads=2),
                  qs.vec_dot("Q4_0", np.asfortranarray(wq), aq), qs.vec_dot(("ggml", 2), strided[:, ::2], aq),
                  qs.vec_dot("q4_0", wq, aq[None, :])]
    for other in others:
        assert other.dtype == np.float32 and (other.view(np.uint32) == plain.view(np.uint32)).all()
    with pytest.raises(errors.DtypeError, match="q4_0: q must be uint8"):
        qs.vec_dot("q4_0", wq.astype(np.int8), aq)
    with pytest.raises(ValueError, match="threads must be a positive integer"):
        qs.vec_dot("q4_0", wq, aq, threads=True)
    with pytest.raises(errors.ShapeError, match="the activation must be one q8_0 row, got 2 rows"):
        qs.vec_dot("q4_0", wq, np.stack([aq, aq]))
    with pytest.raises(errors.ShapeError, match="activation row must hold 128 elements"):
        qs.vec_dot("q4_0", wq, aq[:aq.size // 2])


@pytest.mark.parametrize("isa", ["reference", None])
def test_vec_dot_rows_with_metadata_take_every_layout_alike(isa):
    """A format whose rows start with a row scale (IQ4_KSS) against Q8_K: the
    plain call, one row as (row_bytes,), (1, k) activations and threads agree."""
    rng = np.random.default_rng(4)
    wq = qs.quantize("iq4_kss", rng.standard_normal((3, 512), dtype=np.float32))
    aq = qs.quantize("q8_k", rng.standard_normal(512, dtype=np.float32))
    with (qs.use_isa(isa) if isa else contextlib.nullcontext()):
        plain = qs.vec_dot("iq4_kss", wq, aq)
        others = [qs.vec_dot("iq4_kss", wq, aq[None, :]), qs.vec_dot("iq4_kss", wq, aq, threads=2),
                  np.concatenate([qs.vec_dot("iq4_kss", row, aq) for row in wq])]
    assert plain.shape == (3,)
    for other in others:
        assert other.dtype == np.float32 and (other.view(np.uint32) == plain.view(np.uint32)).all()


def test_validate_names_bad_scales():
    q = qs.quantize("q4_1", np.ones((2, 64), dtype=np.float32))
    assert qs.validate("q4_1", q) == []
    q[1, 20:22] = [0x00, 0x7C]  # block 1 of row 1: d = +inf
    q[0, 2:4] = [0x01, 0x7E]  # block 0 of row 0: m = NaN
    found = qs.validate("q4_1", q)
    assert [(v.row, v.block, v.field, v.reason) for v in found] == [(0, 0, "m", "NaN"), (1, 1, "d", "inf")]
    assert "row 1 block 1: d = 0x7c00 (inf)" in str(found[1])


def test_use_isa_rejects_unavailable():
    with pytest.raises(errors.IsaError, match="not available"):
        with qs.use_isa("neon-imaginary"):
            pass


def test_kernel_info_names_an_implementation_for_every_op():
    info = qs.kernel_info()
    assert set(info) == {(f, op) for f in qs.formats() for op in ("quantize", "dequantize", "vec_dot")}
    assert info[("q8_1", "vec_dot")] == "reference"  # no kernel: the spec (which refuses) runs it


def test_quantspec_isa_environment_variable_forces_an_implementation():
    import subprocess
    import sys

    code = "import quantspec as qs; print(qs.kernel_info()[('q4_0', 'dequantize')])"
    for isa in ("scalar", "reference"):
        env = {**__import__("os").environ, "QUANTSPEC_ISA": isa}
        out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
        assert out.stdout.strip() == isa
    env = {**__import__("os").environ, "QUANTSPEC_ISA": "sse9"}
    bad = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert bad.returncode != 0 and "QUANTSPEC_ISA='sse9' is not available" in bad.stderr
