"""The IQ2 quantizers (codegen/templates/iq2grid_quantize.c.j2) beyond the
Hypothesis properties: edge rows compared with the spec byte for byte on every
ISA, with the importance matrices IQ2_XXS and IQ2_XS require (zero stretches,
all zero, random, widely spread) and, for IQ2_S, without one: zero and
signed-zero blocks (the zero-block rules differ per format), one large
outlier, magnitudes where every neighbour distance overflows (ggml aborts;
the spec takes the first neighbour), odd sign parities, lattice ties; several
rows and row lengths; the first non-finite super-block reported as the spec
reports it; the missing importance matrix refused on the kernel path too; and
a few rows against ggml itself."""

from __future__ import annotations

from functools import cache

import numpy as np
import pytest

import quantspec as qs
from quantspec import registry
from quantspec.errors import ImatrixError, NonFiniteInputError
from tests.bits import assert_same_blocks
from tests.conftest import kernel_params

IQ2 = ("iq2_xxs", "iq2_xs", "iq2_s")
QK = 256


def _params(formats=IQ2):
    return [p for p in kernel_params("quantize") if p.values[0] in formats]


def _quantize(isa: str, fmt: str, x: np.ndarray, imatrix=None) -> np.ndarray:
    with qs.use_isa(isa), np.errstate(all="ignore"):
        return qs.quantize(fmt, x, imatrix=imatrix)


def _edge_rows() -> dict[str, np.ndarray]:
    """Named rows of one super-block each."""
    rng = np.random.default_rng(5)
    normal = rng.standard_normal(QK).astype(np.float32)
    rows = {
        "zeros": np.where(rng.random(QK) < 0.5, 0.0, -0.0).astype(np.float32),
        "subnormal": (rng.standard_normal(QK) * 1e-40).astype(np.float32),
        "near the IQ2_S zero-block threshold": (rng.standard_normal(QK) * 1e-8).astype(np.float32),
        "near the IQ2_XXS zero-block threshold": (rng.standard_normal(QK) * 1e-15).astype(np.float32),
        "distances overflow": normal * np.float32(1e16),
        "squares overflow": normal * np.float32(1e25),
        "constant": np.full(QK, 1.0, dtype=np.float32),
        "negative constant": np.full(QK, -2.5, dtype=np.float32),
        "outlier": (rng.standard_normal(QK) * 0.01).astype(np.float32),
        "lattice ties": (rng.integers(0, 3, QK) * 2 + 1).astype(np.float32) * np.float32(0.5),
        "odd sign parity": np.abs(normal) * np.where(np.arange(QK) % 8 == 3, -1, 1).astype(np.float32),
        "heavy tails": rng.standard_t(2, QK).astype(np.float32),
    }
    rows["outlier"][37] = 1e4
    zero_inside = normal.copy()
    zero_inside[16:32] = -0.0
    zero_inside[128:160] = 0.0
    rows["zero blocks inside"] = zero_inside
    one = np.zeros(QK, dtype=np.float32)
    one[200] = -3.0
    rows["one value"] = one
    return rows


EDGE = _edge_rows()


def _imatrices() -> dict[str, np.ndarray | None]:
    rng = np.random.default_rng(13)
    stretches = rng.random(2 * QK).astype(np.float32)
    stretches[:40] = 0
    stretches[300:420] = 0
    return {"none": None, "zero stretches": stretches, "all zero": np.zeros(2 * QK, dtype=np.float32),
            "random": rng.random(2 * QK).astype(np.float32),
            "spread": (10.0 ** rng.uniform(-6, 6, 2 * QK)).astype(np.float32)}


IMATRICES = _imatrices()
EDGE_NAMES = list(EDGE)
# each edge row paired with the next into rows of 2 super-blocks, so the importance matrix's second half is used too
EDGE_ROWS = np.stack([np.concatenate([EDGE[a], EDGE[b]]) for a, b in zip(EDGE_NAMES, EDGE_NAMES[1:] + EDGE_NAMES[:1])])


@cache
def _spec_edge_bytes(fmt: str, imatrix: str) -> np.ndarray:
    """The spec's bytes of the edge rows (once per format and importance matrix: the search is slow in NumPy)."""
    return _quantize("reference", fmt, EDGE_ROWS, IMATRICES[imatrix])


@pytest.mark.parametrize("fmt,isa", _params())
@pytest.mark.parametrize("imatrix", list(IMATRICES))
def test_edge_rows_match_spec(fmt, isa, imatrix):
    """Every edge row gives the spec's bytes."""
    im = IMATRICES[imatrix]
    if im is None and registry.spec(fmt).imatrix == "required":
        pytest.skip(f"{fmt} requires an importance matrix")
    expected = _spec_edge_bytes(fmt, imatrix)
    got = _quantize(isa, fmt, EDGE_ROWS, im)
    spec = registry.spec(fmt)
    for r, name in enumerate(EDGE_NAMES):
        a, b = got[r].reshape(-1, spec.type_size), expected[r].reshape(-1, spec.type_size)
        for s in range(2):
            assert a[s].tobytes() == b[s].tobytes(), (
                f"{fmt} on {isa}, imatrix {imatrix}: row {name!r} super-block {s}: "
                f"{a[s].tobytes().hex()} != {b[s].tobytes().hex()}")


@pytest.mark.parametrize("fmt,isa", _params())
def test_no_neighbour_qualifies_takes_the_first(fmt, isa):
    """Magnitudes where every candidate's weighted distance is inf or NaN
    (even sum(x^2) overflows here): ggml aborts, the spec and the kernels
    take the first neighbour of the list."""
    rng = np.random.default_rng(17)
    x = (rng.standard_normal((2, QK)) * np.float32(3e18)).astype(np.float32)
    im = np.full(QK, 1e6, dtype=np.float32)
    np.testing.assert_array_equal(_quantize(isa, fmt, x, im), _quantize("reference", fmt, x, im))


@pytest.mark.parametrize("fmt,isa", _params())
def test_several_rows_and_row_lengths(fmt, isa):
    """Rows of 1 to 3 super-blocks, several rows, the imatrix indexed per column."""
    rng = np.random.default_rng(3)
    for nsuper, nrows in ((1, 3), (3, 2)):
        x = (rng.standard_normal((nrows, nsuper * QK)) * rng.uniform(0.01, 100, (nrows, 1))).astype(np.float32)
        im = rng.random(nsuper * QK).astype(np.float32)
        for imatrix in (None, im) if fmt == "iq2_s" else (im,):
            np.testing.assert_array_equal(_quantize(isa, fmt, x, imatrix), _quantize("reference", fmt, x, imatrix),
                                          err_msg=f"{fmt} on {isa}, {nrows} rows of {nsuper} super-blocks")


@pytest.mark.parametrize("fmt,isa", _params())
@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_nonfinite_input_refused_like_the_spec(fmt, isa, bad):
    x = np.ones((2, 2 * QK), dtype=np.float32)
    x[1, QK + 5] = bad
    im = np.ones(2 * QK, dtype=np.float32)
    for impl in ("reference", isa):
        with pytest.raises(NonFiniteInputError, match=fmt) as info:
            _quantize(impl, fmt, x, im)
        assert "row 1 column 261 (block 1)" in str(info.value)


@pytest.mark.parametrize("fmt,isa", _params(("iq2_xxs", "iq2_xs")))
def test_missing_imatrix_refused_on_the_kernel_path(fmt, isa):
    x = np.ones((1, QK), dtype=np.float32)
    for impl in ("reference", isa):
        with pytest.raises(ImatrixError, match=fmt):
            _quantize(impl, fmt, x)


@pytest.mark.oracle
@pytest.mark.parametrize("fmt,isa", _params())
def test_kernel_matches_ggml(fmt, isa):
    """A few rows of ordinary data (random imatrix; IQ2_S also without one)
    give ggml_quantize_chunk's bytes."""
    from quantspec.oracle import GgmlUnavailable, ggml

    try:
        lib = ggml()
    except (GgmlUnavailable, OSError) as exc:
        pytest.skip(f"libggml from llama-cpp-python is not available: {exc}")
    rng = np.random.default_rng(23)
    x = (rng.standard_normal((3, 2 * QK)) * np.array([[0.02], [1.0], [300.0]])).astype(np.float32)
    x[1, 40:56] = 0
    im = rng.random(2 * QK).astype(np.float32)
    for imatrix in (im, None) if fmt == "iq2_s" else (im,):
        assert_same_blocks(fmt, _quantize(isa, fmt, x, imatrix), lib.quantize(fmt, x, imatrix),
                           f"on {isa} (imatrix {imatrix is not None})")
