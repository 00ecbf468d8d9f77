"""`quantspec verify` and the edge-case corpus: the corpus's promises (flags,
ties, the largest finite scale) hold for every format; ggml and the kernels
agree with the spec; gguf-py's differences are shown exactly; a user's
function is loaded, and its bugs are named by block and field."""

from __future__ import annotations

import re
import textwrap

import numpy as np
import pytest

import quantspec as qs
from quantspec import corpus, registry, verify
from quantspec.cli import main

def _representatives() -> list:
    """Every format as a pytest param; the first format of each layout class
    (origin, block size, imatrix policy, row metadata, non-finite policy,
    float field types) runs by default, the others are marked slow, so the
    default run stays fast however many formats the registry gains."""
    seen, params = set(), []
    for fmt in qs.formats():
        s = registry.spec(fmt)
        key = (s.origin, s.block_size, s.imatrix, s.row_meta_size > 0, s.nonfinite_input,
               tuple(f.ctype for f in s.fields if f.ctype in ("f16", "bf16", "f32")))
        params.append(pytest.param(fmt, id=fmt, marks=() if key not in seen else pytest.mark.slow))
        seen.add(key)
    return params


FORMATS = _representatives()
DEFAULT_FORMATS = [p.values[0] for p in FORMATS if not p.marks]


@pytest.mark.parametrize("fmt", FORMATS)
def test_corpus_cases_are_well_formed(fmt):
    spec = registry.spec(fmt)
    n = corpus.row_length(fmt)
    assert n % spec.block_size == 0 and n // spec.block_size >= 2
    cases = corpus.cases(fmt) + corpus.random_cases(fmt, 3)
    ids = [c.id for c in cases]
    assert len(ids) == len(set(ids))
    for c in cases:
        assert c.comment and c.flags and set(c.flags) <= corpus.FLAGS.keys(), c.id
        if c.decode_only:
            assert c.q.dtype == np.uint8 and c.q.shape[1] == spec.row_bytes(n) and "decode_only" in c.flags
            continue
        assert c.x.dtype == np.float32 and c.x.ndim == 2 and c.x.shape[1] == n, c.id
        if spec.imatrix == "required":
            assert c.imatrix is not None, c.id
        if c.imatrix is not None:
            assert c.imatrix.dtype == np.float32 and c.imatrix.shape == (n,)
        if spec.nonfinite_input == "reject":
            assert np.isfinite(c.x).all(), c.id
    flags = {f for c in cases for f in c.flags}
    assert {"zero_block", "negative_zero", "constant", "outlier", "subnormal", "random", "heavy_tail",
            "decode_only"} <= flags
    if spec.imatrix != "ignored":
        assert {"imatrix_zeros", "imatrix_ratios"} <= flags


@pytest.mark.parametrize("fmt", [p for p in FORMATS if p.values[0] != "f32"])
def test_tie_cases_sit_on_a_rounding_boundary(fmt):
    """tie and tie_below differ in one element per row, by one float32 step,
    and the spec decodes that element differently."""
    cases = {c.id: c for c in corpus.cases(fmt)}
    assert {"tie", "tie_below", "tie_above"} <= cases.keys()
    at, below, above = cases["tie"].x, cases["tie_below"].x, cases["tie_above"].x
    rows, cols = np.nonzero(at != below)
    assert list(rows) == list(range(at.shape[0]))  # one element per row
    assert np.array_equal(np.nextafter(below[rows, cols], np.float32(np.inf)), at[rows, cols])
    assert np.array_equal(np.nextafter(at[rows, cols], np.float32(np.inf)), above[rows, cols])
    with qs.use_isa("reference"):
        y_at = qs.dequantize(fmt, qs.quantize(fmt, at, imatrix=cases["tie"].imatrix))
        y_below = qs.dequantize(fmt, qs.quantize(fmt, below, imatrix=cases["tie"].imatrix))
    assert (y_at[rows, cols].view(np.uint32) != y_below[rows, cols].view(np.uint32)).all()


@pytest.mark.parametrize("fmt", FORMATS)
def test_max_scale_is_the_last_finite_scale(fmt):
    cases = {c.id: c for c in corpus.cases(fmt)}
    if "max_scale" not in cases:  # only where no scale can overflow: float32 scales (f32, q8_k)
        x = np.full((1, corpus.row_length(fmt)), np.finfo(np.float32).max, np.float32)
        x[0, ::3] *= -0.5
        imatrix = np.ones(x.shape[1], np.float32) if registry.spec(fmt).imatrix == "required" else None
        with qs.use_isa("reference"), np.errstate(all="ignore"):
            assert qs.validate(fmt, qs.quantize(fmt, x, imatrix=imatrix)) == []
        return
    ok, over = cases["max_scale"], cases["scale_overflow"]
    with qs.use_isa("reference"):
        assert qs.validate(fmt, qs.quantize(fmt, ok.x, imatrix=ok.imatrix)) == []
        bad_rows = {v.row for v in qs.validate(fmt, qs.quantize(fmt, over.x, imatrix=over.imatrix))}
    assert bad_rows == set(range(over.x.shape[0]))
    amax_ok, amax_over = np.abs(ok.x).max(axis=1), np.abs(over.x).max(axis=1)
    assert (amax_ok < amax_over).all()


def test_q4_0_tie_is_the_float32_rounding_of_the_add():
    """For Q4_0 the boundary is where x*id + 8.5 rounds up to the next integer
    in float32: exactly what a fused multiply-add computes differently."""
    cases = {c.id: c for c in corpus.cases("q4_0")}
    at, below = cases["tie"].x, cases["tie_below"].x
    r, c = (int(i) for i in np.argwhere(at != below)[0])
    block = at[r, c // 32 * 32:c // 32 * 32 + 32]
    vmax = block[np.argmax(np.abs(block))]
    inv = np.float32(1) / (vmax / np.float32(-8))
    up, down = at[r, c] * inv + np.float32(8.5), below[r, c] * inv + np.float32(8.5)
    assert np.trunc(up) != np.trunc(down) and abs(float(np.trunc(up)) - float(np.trunc(down))) == 1.0


# ------------------------------------------------------------------ targets

@pytest.mark.oracle
def test_ggml_agrees_with_the_spec(capsys):
    pytest.importorskip("llama_cpp", reason="needs libggml from llama-cpp-python")
    rc = main(["verify", "ggml", "--cases", "2", "--formats", ",".join(DEFAULT_FORMATS + ["q5_0", "q5_1", "q8_0"])])
    out = capsys.readouterr().out
    assert rc == 0, out
    assert "FAIL" not in out and "ERROR" not in out
    for fmt in ("q4_0", "q4_1", "q5_0", "q5_1", "q8_0", "f16", "bf16"):
        assert any(line.split()[:3] == [fmt, "quantize", "pass"] for line in out.splitlines()), fmt
        assert any(line.split()[:3] == [fmt, "dequantize", "pass"] for line in out.splitlines()), fmt


@pytest.mark.oracle
@pytest.mark.slow
def test_ggml_agrees_with_the_spec_on_every_format():
    pytest.importorskip("llama_cpp", reason="needs libggml from llama-cpp-python")
    outcomes = verify.verify(verify.load_target("ggml"), random_cases=4)
    assert all(o.ok for o in outcomes), verify.render(outcomes, "ggml")


def test_kernels_agree_with_the_spec():
    outcomes = verify.verify(verify.load_target("kernels"), DEFAULT_FORMATS, random_cases=1)
    assert all(o.ok for o in outcomes), verify.render(outcomes, "kernels")


def test_gguf_py_findings_are_shown_exactly():
    """gguf-py's NumPy quants differ from ggml (and the spec) on signed zeros and
    NaN payloads. These are findings about gguf-py, reported field by field."""
    pytest.importorskip("gguf")
    legacy = ["f32", "f16", "bf16", "q4_0", "q4_1", "q5_0", "q5_1", "q8_0"]
    outcomes = {(o.fmt, o.op): o for o in verify.verify(verify.load_target("gguf-py"), legacy, random_cases=2)}
    report = verify.render(list(outcomes.values()), "gguf-py")
    for fmt in legacy:  # every decoder agrees bit for bit
        assert outcomes[(fmt, "dequantize")].status == verify.PASS, report
    for fmt in ("f32", "bf16", "q8_0"):
        assert outcomes[(fmt, "quantize")].status == verify.PASS, report
    # all-(-0.0) blocks: ggml's loop keeps max = +0.0, so d = +0.0/-8 = -0.0;
    # gguf-py takes the signed first element, -0.0, and stores d = +0.0
    for fmt in ("q4_0", "q5_0"):
        o = outcomes[(fmt, "quantize")]
        assert o.status == verify.FAIL and o.first.case.id == "negative_zero_block", report
        assert o.failing == ["negative_zero_block", "mixed_signed_zeros"], report
        text = "\n".join(o.first.lines)
        assert "byte 1 of the block = d" in text and "expected 0x8000 (-0.0)   actual 0x0000 (0.0)" in text
    # zero blocks whose minimum is -0.0: ggml keeps the first minimum's sign
    for fmt in ("q4_1", "q5_1"):
        o = outcomes[(fmt, "quantize")]
        assert o.status == verify.FAIL and o.failing == ["mixed_signed_zeros"], report
        assert "byte 3 of the block = m" in "\n".join(o.first.lines)
    # NaN inputs: ggml writes the quiet NaN 0x7e00 (sign kept); NumPy's cast keeps payload bits
    o = outcomes[("f16", "quantize")]
    assert o.status == verify.FAIL and o.failing == ["nonfinite"], report
    assert "expected 0x7e00 (nan)   actual 0x7c01 (nan)" in "\n".join(o.first.lines)
    # gguf-py has no importance matrix: those cases are skipped, not failed
    assert outcomes[("q4_0", "quantize")].skipped > 0


USER_MODULE = '''
import numpy as np
import quantspec as qs


def swapped_nibbles(fmt, op, data, imatrix):
    """Q4_0 with element pairs (2j, 2j+1) in byte j, a bug seen in the wild."""
    if fmt != "q4_0" or imatrix is not None:
        raise NotImplementedError(f"{fmt} with an importance matrix" if fmt == "q4_0" else fmt)
    if op == "dequantize":
        return qs.dequantize("q4_0", data)
    q = qs.quantize("q4_0", data)
    blocks = q.reshape(-1, 18)
    nib = np.concatenate([blocks[:, 2:] & 15, blocks[:, 2:] >> 4], axis=1)
    blocks[:, 2:] = nib[:, 0::2] | (nib[:, 1::2] << 4)
    return q


def exact(fmt, op, data, imatrix):
    if op == "quantize":
        return qs.quantize(fmt, data, imatrix=imatrix)
    return qs.dequantize(fmt, data)


def broken(fmt, op, data, imatrix):
    raise RuntimeError("out of cheese")
'''


@pytest.fixture
def user_module(tmp_path, monkeypatch):
    (tmp_path / "user_quants.py").write_text(textwrap.dedent(USER_MODULE), encoding="utf-8")
    monkeypatch.chdir(tmp_path)
    yield "user_quants"


def test_user_function_bug_is_named_by_block_and_field(user_module, capsys):
    rc = main(["verify", f"{user_module}:swapped_nibbles", "--formats", "q4_0,q8_0", "--cases", "1"])
    out = capsys.readouterr().out
    assert rc == 1
    lines = out.splitlines()
    assert lines[0].split()[:3] == ["q4_0", "quantize", "FAIL"]
    # the scale d (bytes 0-1) is right; the first wrong byte is a quant byte
    first = next(line for line in lines if line.strip().startswith("first: block"))
    assert re.search(r"of 8 in the row\), byte \d+ of the block = qs\[\d+\]$", first), first
    fields = next(line for line in lines if "fields that differ in this block:" in line)
    assert "qs[" in fields and " d," not in fields and not fields.endswith(" d")
    assert "cases skipped: q4_0 with an importance matrix" in lines[0]
    assert any(line.split()[:3] == ["q4_0", "dequantize", "pass"] for line in lines)
    assert any(line.split()[:3] == ["q8_0", "quantize", "n/a"] for line in lines)


def test_user_function_exact_passes_and_errors_fail(user_module, capsys):
    assert main(["verify", f"{user_module}:exact", "--formats", "q5_1", "--cases", "1"]) == 0
    assert main(["verify", f"{user_module}:broken", "--formats", "q5_1", "--ops", "dequantize"]) == 1
    out = capsys.readouterr().out
    assert "ERROR" in out and "RuntimeError: out of cheese" in out


def test_bad_arguments(capsys):
    assert main(["verify", "nonsense"]) == 2
    assert main(["verify", "ggml", "--formats", "q9_9"]) == 2
    assert main(["verify", "no_such_module_xyz:fn"]) == 2
    assert main(["verify", "gguf-py", "--ops", "vec_dot"]) == 2
    err = capsys.readouterr().err
    assert "unknown target 'nonsense'" in err and "q9_9" in err and "no_such_module_xyz" in err
