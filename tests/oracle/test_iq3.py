"""IQ3_XXS and IQ3_S against the real libggml: quantize byte for byte
(``ggml_quantize_chunk``, with and without an importance matrix),
dequantize bit for bit (``to_float``, also on random bytes and special fp16
scales), the dot products within a stated bound of ggml's ``vec_dot``,
``validate`` as ``ggml_validate_row_data``, and the documented quirks."""

from __future__ import annotations

import ctypes

import numpy as np
import pytest

import quantspec as qs
from quantspec import registry
from quantspec.reference import iq3_s, iq3_xxs
from tests.bits import assert_dot_within_bound, assert_same_bits, assert_same_blocks

pytestmark = pytest.mark.oracle

F = np.float32
FORMATS = ["iq3_xxs", "iq3_s"]
KINDS = ["normal", "student_t", "edges"]
IMATRICES = ["none", "zeros", "ratios", "all_zero"]


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
    """Every super-block of 256 (in n // 256 per row) an edge case: zero,
    signed zeros, constant, one outlier, zero blocks of 32 at the start, in
    the middle and at the end (IQ3_S's shifted packing), tiny values whose
    weights x^2 underflow, subnormals, 1e-8 (IQ3_XXS's zero threshold),
    large values (1e10: squares and sums near the float32 range without
    ggml aborting), exact ties, one negative element (IQ3_XXS's parity fix)."""
    cases = []
    normal = lambda: rng.standard_normal(256)  # noqa: E731
    cases.append(np.zeros(256))
    cases.append(np.where(rng.random(256) < 0.5, -0.0, 0.0))
    cases.append(np.full(256, 3.0))
    cases.append(np.full(256, -0.75))
    z = normal() * 0.01
    z[77] = 50.0
    cases.append(z)
    for zero_blocks in ([0], [3], [7], [1, 2, 5], [0, 1, 2, 3, 4, 5, 6]):
        z = normal()
        for b in zero_blocks:
            z[32 * b:32 * b + 32] = 0.0
        cases.append(z)
    cases.append(normal() * 1e-20)
    cases.append(normal() * 1e-41)
    cases.append(normal() * 1e-8)
    cases.append(np.abs(normal()) * 1e-8)
    cases.append(normal() * 1e10)
    cases.append(np.round(normal() * 4) / 2)
    z = np.abs(normal()) + 0.5
    z[::8] *= -1  # one negative element per group of 8: an odd count
    cases.append(z)
    z = normal()
    z[:128] *= 1e-6  # one half of the super-block many orders of magnitude below the other
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
    if kind == "zeros":
        w = rng.random(n) * 5
        w[rng.random(n) < 0.4] = 0
        w[:32] = 0  # a whole block of zero weight
        w[64:72] = 0  # a whole group of 8
        return w.astype(F)
    if kind == "all_zero":
        return np.zeros(n, F)
    return (10.0 ** rng.uniform(-8, 8, n)).astype(F)  # huge ratios


def _spec_quantize(fmt, x, w=None):
    with qs.use_isa("reference"):
        return qs.quantize(fmt, x, imatrix=w)


@pytest.mark.parametrize("im", IMATRICES)
@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("fmt", FORMATS)
def test_quantize_matches_ggml(ggml, fmt, kind, im):
    x = inputs(kind)
    w = imatrix(im, x.shape[1])
    assert_same_blocks(fmt, _spec_quantize(fmt, x, w), ggml.quantize(fmt, x, w), f"{kind}, imatrix {im}")


@pytest.mark.parametrize("n", [256, 768, 2560])
@pytest.mark.parametrize("fmt", FORMATS)
def test_quantize_matches_ggml_row_lengths(ggml, fmt, n):
    """Rows of 1, 3 and 10 super-blocks; the imatrix columns repeat per row."""
    x = inputs("student_t", seed=n, nrows=3, n=n)
    for w in (None, imatrix("zeros", n)):
        assert_same_blocks(fmt, _spec_quantize(fmt, x, w), ggml.quantize(fmt, x, w), f"n = {n}")


@pytest.mark.slow
@pytest.mark.parametrize("seed", range(1, 5))
@pytest.mark.parametrize("fmt", FORMATS)
def test_quantize_matches_ggml_many_seeds(ggml, fmt, seed):
    for kind in KINDS:
        x = inputs(kind, seed, nrows=32, n=4096)
        for im in IMATRICES:
            w = imatrix(im, 4096)
            assert_same_blocks(fmt, _spec_quantize(fmt, x, w), ggml.quantize(fmt, x, w),
                               f"seed {seed} {kind}, imatrix {im}")


def test_reference_quantizers_are_the_file_path(ggml):
    """quantize_row_iq3_*_ref (the type traits' from_float_ref) = the chunk path without an imatrix."""
    from quantspec.oracle import _FROM_FLOAT

    x = inputs("edges")
    for fmt in FORMATS:
        ggml.base.ggml_quantize_init(registry.spec(fmt).type_id)  # the grids (ggml_quantize_chunk's first step)
        ref = np.zeros((x.shape[0], registry.spec(fmt).row_bytes(x.shape[1])), np.uint8)
        fn = _FROM_FLOAT(ggml.base.ggml_get_type_traits(registry.spec(fmt).type_id).contents.from_float_ref)
        for r in range(x.shape[0]):
            fn(x[r].ctypes.data, ref[r].ctypes.data, x.shape[1])
        assert_same_blocks(fmt, _spec_quantize(fmt, x), ref, "quantize_row_*_ref")


_SPECIAL_HALVES = np.array([0x0000, 0x8000, 0x0001, 0x8001, 0x03FF, 0x0400, 0x3C00, 0xBC00, 0x7BFF, 0xFBFF,
                            0x7C00, 0xFC00, 0x7C01, 0x7E00, 0xFE00, 0x7FFF], dtype=np.uint16)


@pytest.mark.parametrize("fmt", FORMATS)
def test_dequantize_matches_ggml(ggml, fmt):
    rng = np.random.default_rng(5)
    size = registry.spec(fmt).type_size
    quantized = ggml.quantize(fmt, inputs("edges"))
    junk = rng.integers(0, 256, (4, 64 * size), dtype=np.uint8)  # every index, sign and scale code
    special = rng.integers(0, 256, (1, _SPECIAL_HALVES.size * size), dtype=np.uint8)
    special.reshape(-1, size)[:, :2] = _SPECIAL_HALVES.view(np.uint8).reshape(-1, 2)
    for rows in (quantized, junk, special):
        with qs.use_isa("reference"):
            ours = qs.dequantize(fmt, rows)
        assert_same_bits(ours, ggml.dequantize(fmt, rows), f"{fmt} dequantize")


#: |ours - ggml| <= DOT_BOUND * sum_i |w_i * a_i|. Both add the same
#: super-block terms: each the float32 product of the exact integer sum with
#: (fp16(d) * a.d), within 2 * 2**-24 of its exact value (IQ3_XXS's 0.25 is
#: exact). ggml's AVX2 kernel forms them in other steps (float sums per 32,
#: fused multiply-adds), each again within a few 2**-24 of exact, and adds them
#: in its order; a 4096-element row has 16 terms, so every float32 sum is
#: within 16 * 2**-24 of the sum of magnitudes. Together far below 2**-16.
DOT_BOUND = 2.0**-16


@pytest.mark.parametrize("fmt", FORMATS)
def test_vec_dot_within_bound_of_ggml(ggml, fmt):
    x = inputs("student_t", nrows=16, n=4096)
    a = inputs("normal", seed=3, nrows=1, n=4096)[0]
    wq = ggml.quantize(fmt, x)
    aq = qs.quantize("q8_k", a)
    junk = np.random.default_rng(2).integers(0, 256, wq.shape, dtype=np.uint8)
    junk.reshape(-1, registry.spec(fmt).type_size)[:, :2] = np.frombuffer(np.float16(0.01).tobytes(), np.uint8)
    for w in (wq, junk):
        with qs.use_isa("reference"):
            ours = qs.vec_dot(fmt, w, aq)
        theirs = ggml.vec_dot(fmt, w, aq)
        assert_dot_within_bound(fmt, w, aq, ours, theirs, DOT_BOUND)


@pytest.mark.parametrize("fmt", FORMATS)
def test_validate_agrees_with_ggml(ggml, fmt):
    validate = ggml.base.ggml_validate_row_data
    validate.restype = ctypes.c_bool
    validate.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_size_t]
    size = registry.spec(fmt).type_size
    for half in _SPECIAL_HALVES:
        q = np.random.default_rng(int(half)).integers(0, 256, (1, 3 * size), dtype=np.uint8)
        q.reshape(3, size)[1, :2] = np.frombuffer(half.tobytes(), np.uint8)
        q.reshape(3, size)[[0, 2], :2] = 0
        found = qs.validate(fmt, q)
        assert validate(registry.spec(fmt).type_id, q.ctypes.data, q.nbytes) == (not found), hex(half)
        assert [v.block for v in found] == ([1] if (half & 0x7C00) == 0x7C00 else [])


# ----------------------------------------------------------------- quirks

def test_zero_superblocks_are_zero_bytes(ggml):
    for fmt in FORMATS:
        for z in (np.zeros((1, 256), F), np.full((1, 256), -0.0, F)):
            theirs = ggml.quantize(fmt, z)
            assert_same_blocks(fmt, _spec_quantize(fmt, z), theirs, "zero super-block")
            assert not theirs.any()


def test_iq3_xxs_zero_block_decodes_to_d(ggml):
    """A zero block of 32 in a non-zero super-block: index 0, signs 0, scale
    code 0, which decodes to d (grid point 0 is 4, times d*0.5*0.5)."""
    x = inputs("normal", nrows=1, n=256)
    x[0, 64:96] = 0
    q = ggml.quantize("iq3_xxs", x)
    assert_same_blocks("iq3_xxs", _spec_quantize("iq3_xxs", x), q)
    b = iq3_xxs.FORMAT.blocks(q)[0, 0]
    assert not b["qs"][16:24].any() and b["scales_and_signs"][2] == 0
    d = np.float16(np.frombuffer(q[0, :2].tobytes(), np.float16)[0]).astype(F)
    y = ggml.dequantize("iq3_xxs", q)[0, 64:96]
    assert np.all(y == d)


def test_iq3_s_zero_block_shifts_the_blocks_after_it(ggml):
    """ggml packs the qs and signs of the non-zero blocks at the front; qh
    stays by position. The spec writes the same bytes."""
    x = inputs("normal", nrows=1, n=256)
    x[0, 64:96] = 0  # block 2
    q = ggml.quantize("iq3_s", x)
    assert_same_blocks("iq3_s", _spec_quantize("iq3_s", x), q)
    b = iq3_s.FORMAT.blocks(q)[0, 0]
    assert not b["qs"][56:].any() and not b["signs"][28:].any()  # the last block's place is empty
    assert (b["qh"][2] == 0) and (b["scales"][1] & 15) == 0
    # blocks 3..7 quantized alone (block 2 not zero there) have the same indices one place earlier
    y = x.copy()
    y[0, 64:96] = x[0, 32:64]
    alone = iq3_s.FORMAT.blocks(ggml.quantize("iq3_s", y))[0, 0]
    assert np.array_equal(b["qs"][16:56], alone["qs"][24:64]) or b["d"] != alone["d"]


def test_iq3_s_tiny_values_keep_their_indices(ggml):
    """Values whose weights x^2 underflow are not a zero block: with every
    scale re-fit to 0, d = 0 but the indices and signs are written."""
    x = (np.random.default_rng(3).standard_normal((1, 256)) * 1e-25).astype(F)
    q = ggml.quantize("iq3_s", x)
    assert_same_blocks("iq3_s", _spec_quantize("iq3_s", x), q)
    b = iq3_s.FORMAT.blocks(q)[0, 0]
    assert b["d"] == 0 and b["signs"].any()


def test_huge_values_abort_ggml_but_not_the_spec(ggml):
    """|x| ~ 1e13: every weighted distance of the neighbour search
    overflows; ggml aborts, the spec has a result (the first neighbour; its
    fp16 d overflows to inf, as for every |x| beyond about 1e6)."""
    from quantspec.oracle import GgmlAborted

    x = (np.random.default_rng(4).standard_normal((1, 256)) * 1e13).astype(F)
    for fmt in FORMATS:
        with pytest.raises(GgmlAborted):
            ggml.quantize(fmt, x)
        assert [v.reason for v in qs.validate(fmt, _spec_quantize(fmt, x))] == ["inf"]
