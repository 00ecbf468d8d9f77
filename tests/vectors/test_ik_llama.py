"""The ik_llama.cpp formats against ik_llama.cpp itself.

``ik_llama/*.npz`` are the ground-truth vectors made by the real library
(``ik_llama/README.md``, ``index.json``): for every case the spec's
``quantize`` must reproduce ``q`` from (``x``, ``imatrix``) byte for byte,
also through the public API by name and by ``("ik_llama", type id)``.

Their ``y`` needs care. The run that made them never called ``ggml_init``,
so ggml's fp16 -> fp32 table was all zeros: for every format with an fp16
scale (in the block or as row metadata) ``y`` holds signed zeros
(``test_shared_y_of_fp16_formats_is_the_zero_table``). ``ik_llama/to_float``
holds ``to_float`` of the same ``q`` from a build of the same commit that
does call it (see ``to_float/README.md``); the spec's ``dequantize``
reproduces those bit for bit, and the shared ``y`` wherever it is valid.
Three formats have a CPU ``to_float`` that is not the format's definition,
and the spec states both: IQ1_BN and IQ2_BN (the CPU reads the row scale's
bytes as quants and never scales: ``cpu_to_float``), IQ6_K (the CPU
evaluates the cubic behind the value table: ``cpu_to_float``; every other
ik_llama.cpp path uses the table).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

import quantspec as qs
from quantspec import registry
from quantspec.reference._numerics import f16_bits_to_f32
from tests.bits import assert_same_bits

HERE = Path(__file__).resolve().parent / "ik_llama"
INDEX = json.loads((HERE / "index.json").read_text())
TYPES = INDEX["types"]

#: The CPU to_float is a documented deviation from the format's definition.
CPU_QUIRK = {"IQ1_BN", "IQ2_BN", "IQ6_K"}

CASES = [pytest.param(name, i, id=f"{name.lower()}-case{i}") for name, info in TYPES.items()
         for i in range(len(info["cases"]))]


def _module(name: str):
    fmt = name.lower()
    if fmt not in qs.formats():
        pytest.skip(f"{name} has no spec module yet")
    return registry.module(fmt)


def _case(name: str, i: int) -> dict:
    with np.load(HERE / TYPES[name]["cases"][i]["file"]) as data:
        return {k: data[k] for k in data.files}


def test_index_agrees_with_the_spec_layouts():
    for name, info in TYPES.items():
        if name.lower() not in qs.formats():
            continue
        spec = registry.spec(name.lower())
        assert (spec.origin, spec.type_id) == ("ik_llama", info["ggml_type_id"]), name
        assert (spec.block_size, spec.type_size, spec.row_meta_size) == (
            info["block_size"], info["type_size"], info["row_meta_size"]), name
        assert spec.imatrix != "required" or info["requires_imatrix"], name
        assert qs.format_info(("ik_llama", info["ggml_type_id"])).name == name.lower()
        for case in info["cases"]:
            assert spec.row_bytes(case["n_per_row"]) == case["row_bytes"], name


@pytest.mark.parametrize("name, i", CASES)
def test_quantize_reproduces_q(name, i):
    module = _module(name)
    case = _case(name, i)
    im = case.get("imatrix")
    q = module.quantize(case["x"], im)
    assert q.dtype == np.uint8 and q.shape == case["q"].shape
    bad = np.argwhere(q != case["q"])
    assert bad.size == 0, f"{name} case {i}: {len(bad)} bytes differ, first at (row, byte) {tuple(bad[0])}"


@pytest.mark.parametrize("name", [n for n in TYPES])
def test_public_api_by_name_and_by_type_id(name):
    _module(name)
    case = _case(name, 1)
    tid = TYPES[name]["ggml_type_id"]
    q = qs.quantize(("ik_llama", tid), case["x"][:2], case.get("imatrix"))
    assert np.array_equal(q, case["q"][:2])
    assert np.array_equal(qs.quantize(name.lower(), case["x"][1], case.get("imatrix")), case["q"][1])
    y = qs.dequantize(name, case["q"])
    assert_same_bits(y, registry.module(name.lower()).dequantize(case["q"]), name)


@pytest.mark.parametrize("name, i", CASES)
def test_dequantize_reproduces_ik_to_float(name, i):
    """``to_float`` of a correctly initialized ik_llama.cpp build."""
    module = _module(name)
    case = _case(name, i)
    expected = np.load(HERE / "to_float" / TYPES[name]["cases"][i]["file"].replace(".npz", ".npy"))
    decode = module.cpu_to_float if name in CPU_QUIRK else module.dequantize
    assert_same_bits(decode(case["q"]), expected, f"{name} case {i}")


@pytest.mark.parametrize("name, i", CASES)
def test_shared_y_where_valid(name, i):
    """The shared vectors' own ``y`` for the formats whose scales are float32."""
    module = _module(name)
    if _has_fp16_scale(module.FORMAT):
        pytest.skip("fp16 scales: the shared y is all zeros (see the next test)")
    case = _case(name, i)
    decode = module.cpu_to_float if name in CPU_QUIRK else module.dequantize
    assert_same_bits(decode(case["q"]), case["y"], f"{name} case {i}")


def _has_fp16_scale(spec) -> bool:
    return spec.row_meta_size == 2 or any(f.ctype == "f16" for f in spec.fields)


@pytest.mark.parametrize("name, i", CASES)
def test_shared_y_of_fp16_formats_is_the_zero_table(name, i):
    """Where the shared ``y`` is signed zeros, it is exactly what the spec
    gives with every fp16 scale read as +0.0: the signs still carry the
    decoded scales and grid values."""
    module = _module(name)
    spec = module.FORMAT
    if not _has_fp16_scale(spec) or name in CPU_QUIRK:
        pytest.skip("no fp16 scale read by this to_float")
    case = _case(name, i)
    q = case["q"].copy()
    body = q[:, spec.row_meta_size:].reshape(q.shape[0], -1, spec.type_size)
    for name_, offset in spec.offsets().items():
        f = next(f for f in spec.fields if f.name == name_)
        if f.ctype == "f16":
            body[:, :, offset:offset + f.nbytes] = 0
    q[:, spec.row_meta_size:] = body.reshape(q.shape[0], -1)
    q[:, :spec.row_meta_size] = 0
    assert not np.any(case["y"])
    assert_same_bits(module.dequantize(q), case["y"], f"{name} case {i}")


@pytest.mark.parametrize("name", sorted(CPU_QUIRK))
def test_cpu_to_float_deviation_is_where_stated(name):
    """IQ6_K: the cubic departs from the table by less than 0.49 grid steps.
    IQ1_BN/IQ2_BN: the CPU function applied to the blocks (past the row
    scale) gives the raw ternary values, and the spec is the row scale times
    them."""
    module = _module(name)
    q = _case(name, 0)["q"]
    spec = module.FORMAT
    y_spec = module.dequantize(q)
    if name == "IQ6_K":
        b = spec.blocks(q)
        dl = (f16_bits_to_f32(b["d"])[..., None] * b["scales"].astype(np.float32)).repeat(16, axis=-1)
        dl = dl.reshape(q.shape[0], -1)
        nonzero = dl != 0
        steps = np.abs(module.cpu_to_float(q)[nonzero] / dl[nonzero] - y_spec[nonzero] / dl[nonzero])
        assert 0.3 < steps.max() < 0.49
        assert (steps > 0.01).mean() > 0.5  # most table values are a rounding of the cubic
    else:
        meta = spec.row_meta_size
        blocks_first = np.concatenate([q[:, meta:], np.zeros((q.shape[0], meta), np.uint8)], axis=1)
        raw = module.cpu_to_float(blocks_first)
        d = (q[:, :meta].copy().view(np.float32) if meta == 4
             else f16_bits_to_f32(q[:, :meta].copy().view(np.uint16)))
        assert_same_bits(y_spec, d * raw, name)
        assert set(np.unique(raw)) <= {-1.0, 0.0, 1.0}


# --------------------------------------------------------------------------- edge cases

EDGE = sorted(p.stem for p in (HERE / "edge").glob("*.npz"))


@pytest.mark.parametrize("fmt", EDGE)
def test_edge_cases(fmt):
    """``ik_llama/edge``: rows that stress the quantizers (zeros, zero
    sub-blocks, 1e-20, 1e15, a constant, an outlier, small integers, signed
    zeros, a ramp, heavy tails), with and without an importance matrix that
    has zero stretches, quantized one row at a time by ik_llama.cpp
    (see ``edge/README.md``). Byte for byte and bit for bit, except the rows on
    which ik_llama.cpp aborts on an assertion (recorded in ``ok``): there the
    spec returns a row of the right size without raising."""
    if fmt not in qs.formats():
        pytest.skip(f"{fmt} has no spec module yet")
    module = registry.module(fmt)
    with np.load(HERE / "edge" / f"{fmt}.npz") as data:
        d = {k: data[k] for k in data.files}
    decode = module.cpu_to_float if fmt.upper() in CPU_QUIRK else module.dequantize
    for key, im, ok, ykey in (("q", None, "ok", "y"), ("q_imatrix", d["imatrix"], "ok_imatrix", "y_imatrix")):
        with np.errstate(all="ignore"):
            q = module.quantize(d["x"], im)  # rows are independent: all at once
            y = decode(d[key])
        assert q.shape == d[key].shape
        for r, name in enumerate(d["rows"]):
            if not d[ok][r]:
                continue
            assert np.array_equal(q[r], d[key][r]), f"{fmt} {key} row {name!r}: {int((q[r] != d[key][r]).sum())} bytes"
            assert_same_bits(y[r], d[ykey][r], f"{fmt} {ykey} row {name!r}")


def test_edge_cases_where_ik_llama_aborts():
    """Recorded facts: IQ4_KSS aborts on 1e15-sized rows (``prune_iq4ks``
    finds no finite score: ``GGML_ASSERT(jbest >= 0)``), IQ3_KT and IQ4_KT on
    the same rows without an imatrix (no candidate scale scores above 0)."""
    aborts = {}
    for fmt in EDGE:
        with np.load(HERE / "edge" / f"{fmt}.npz") as data:
            for ok in ("ok", "ok_imatrix"):
                for r in np.flatnonzero(~data[ok]):
                    aborts.setdefault(fmt, set()).add((str(data["rows"][r]), ok))
    assert aborts == {"iq4_kss": {("large 1e15", "ok"), ("large 1e15", "ok_imatrix")},
                      "iq3_kt": {("large 1e15", "ok")}, "iq4_kt": {("large 1e15", "ok")}}


def test_iq6_k_cpu_polynomial_against_the_table_per_index():
    """Where ik_llama.cpp's CPU to_float departs from the IQ6_K table: the
    cubic A + q(B + q(-C + qD)) in float32 against ``iq6nl_values`` for each of
    the 64 indices (the shifted half adds 1 to both). The table is the cubic
    rounded to integers; the CPU keeps the fraction, up to 0.49 grid steps."""
    from quantspec.reference import iq6_k
    from quantspec.reference.tables.ik_llama import IQ6NL_VALUES

    q = np.arange(64, dtype=np.float32)
    cubic = iq6_k.POLY_A + q * (iq6_k.POLY_B + q * (-iq6_k.POLY_C + q * iq6_k.POLY_D))
    table = IQ6NL_VALUES[:64].astype(np.float32)
    assert np.array_equal(np.round(cubic), table)
    off = np.abs(cubic - table)
    assert 0.48 < off.max() < 0.49 and int(np.argmax(off)) == 8
    assert (off > 1e-3).sum() == 63  # only index 0 (-127) is on the table
