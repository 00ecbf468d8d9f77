"""Truncated and corrupt GGUF files, one class of damage per test, built here
from a valid file: every operation (read, quantize, dequantize, inspect)
raises GGUFError naming the file and, where they apply, the tensor or key
and the field; the command line prints one line, exits non-zero, and leaves
no output file and no temporary file behind."""

from __future__ import annotations

import struct

import numpy as np
import pytest

from quantspec.errors import GGUFError, QuantspecError
from quantspec.gguf import dequantize_file, inspect_file, open_gguf, quantize_file
from tests.gguf.builders import write_gguf

gguf = pytest.importorskip("gguf")

U64 = struct.Struct("<Q")
U32 = struct.Struct("<I")


@pytest.fixture
def valid(tmp_path):
    rng = np.random.default_rng(0)
    kvs = {"llama.block_count": 1, "general.name": "tiny", "tokenizer.ggml.tokens": ["a", "bb", "ccc"]}
    tensors = [("token_embd.weight", rng.standard_normal((4, 64)), "f32"),
               ("blk.0.attn_q.weight", rng.standard_normal((2, 64)), "q8_0"),
               ("output_norm.weight", rng.standard_normal(64), "f32")]
    return write_gguf(tmp_path / "valid.gguf", kvs, tensors)


def layout(path):
    """Byte offsets of the fields, from gguf-py's own reader of the valid file."""
    r = gguf.GGUFReader(str(path))
    tensors = {}
    for t in r.tensors:
        off = t.field.offset
        name_len = int(t.field.parts[0][0])
        n_dims = int(t.field.parts[2][0])
        dims_at = off + 8 + name_len + 4
        tensors[t.name] = {"name_len": off, "n_dims": off + 8 + name_len, "dims": dims_at,
                           "type": dims_at + 8 * n_dims, "offset": dims_at + 8 * n_dims + 4}
    kvs = {k: f.offset for k, f in r.fields.items() if not k.startswith("GGUF.")}
    return {"tensors": tensors, "kvs": kvs, "data_offset": r.data_offset, "size": path.stat().st_size}


def patch(path, at: int, data: bytes, out=None):
    b = bytearray(path.read_bytes())
    b[at:at + len(data)] = data
    out = out or path.with_name("bad.gguf")
    out.write_bytes(bytes(b))
    return out


def expect_error(path, tmp_path, *, match: str, tensor: str | None = None, field: str | None = None):
    """Every entry point refuses ``path`` the same way, and writes nothing."""
    with pytest.raises(GGUFError, match=match) as info:
        open_gguf(path)
    err = info.value
    assert str(path) in str(err) and err.path == str(path)
    if tensor is not None:
        assert err.tensor == tensor and tensor in str(err)
    if field is not None:
        assert err.field == field
    assert isinstance(err, QuantspecError) and isinstance(err, ValueError)
    for run in (lambda out: quantize_file(path, out, "Q8_0"), lambda out: dequantize_file(path, out),
                lambda out: inspect_file(path)):
        out = tmp_path / "out.gguf"
        with pytest.raises(GGUFError, match=match):
            run(out)
        assert not out.exists()
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []
    return err


def test_the_valid_file_is_valid(valid, tmp_path):
    with open_gguf(valid) as f:
        assert [t.name for t in f.tensors] == ["token_embd.weight", "blk.0.attn_q.weight", "output_norm.weight"]
        assert f.get("tokenizer.ggml.tokens") == ["a", "bb", "ccc"]
    quantize_file(valid, tmp_path / "q.gguf", "Q8_0")


# -- the classes of the issue ---------------------------------------------------

@pytest.mark.parametrize("where", ["header", "metadata", "tensor table", "data"])
def test_truncated(valid, tmp_path, where):
    lay = layout(valid)
    cut = {"header": 20, "metadata": lay["kvs"]["general.name"] + 10,
           "tensor table": lay["tensors"]["blk.0.attn_q.weight"]["dims"] + 3, "data": lay["size"] - 100}[where]
    bad = tmp_path / "bad.gguf"
    bad.write_bytes(valid.read_bytes()[:cut])
    match = {"header": "too short for a GGUF header", "metadata": "truncated|bytes left",
             "tensor table": "truncated|cannot fit", "data": "runs past the end of the file"}[where]
    err = expect_error(bad, tmp_path, match=match)
    if where == "data":
        assert err.tensor == "output_norm.weight" and err.field == "offset"


def test_empty_file(tmp_path):
    bad = tmp_path / "empty.gguf"
    bad.write_bytes(b"")
    expect_error(bad, tmp_path, match="too short", field="header")


def test_bad_magic(valid, tmp_path):
    expect_error(patch(valid, 0, b"GGML"), tmp_path, match="bad magic b'GGML'", field="magic")


@pytest.mark.parametrize("version,match", [(0, "version 0"), (1, "GGUFv1"), (4, "version 4"),
                                           (0x03000000, "big-endian")])
def test_wrong_version(valid, tmp_path, version, match):
    expect_error(patch(valid, 4, U32.pack(version)), tmp_path, match=match, field="version")


def test_offset_past_the_end(valid, tmp_path):
    at = layout(valid)["tensors"]["blk.0.attn_q.weight"]["offset"]
    expect_error(patch(valid, at, U64.pack(1 << 40)), tmp_path, match="runs past the end of the file",
                 tensor="blk.0.attn_q.weight", field="offset")


def test_offset_that_wraps(valid, tmp_path):
    at = layout(valid)["tensors"]["output_norm.weight"]["offset"]
    expect_error(patch(valid, at, U64.pack(2**64 - 32)), tmp_path, match="runs past the end",
                 tensor="output_norm.weight", field="offset")


def test_overlapping_tensors(valid, tmp_path):
    lay = layout(valid)["tensors"]
    bad = patch(valid, lay["blk.0.attn_q.weight"]["offset"], U64.pack(0))
    expect_error(bad, tmp_path, match="overlaps tensor 0 .'token_embd.weight'.", tensor="blk.0.attn_q.weight",
                 field="offset")


def test_misaligned_tensor(valid, tmp_path):
    lay = layout(valid)
    with open_gguf(valid) as f:
        rel = f.tensor("blk.0.attn_q.weight").offset - f.data_offset
    bad = patch(valid, lay["tensors"]["blk.0.attn_q.weight"]["offset"], U64.pack(rel + 4))
    expect_error(bad, tmp_path, match="not a multiple of the alignment 32", tensor="blk.0.attn_q.weight",
                 field="offset")


@pytest.mark.parametrize("type_id", [4, 31, 43, 99, 2**31])
def test_unknown_type_id(valid, tmp_path, type_id):
    at = layout(valid)["tensors"]["blk.0.attn_q.weight"]["type"]
    expect_error(patch(valid, at, U32.pack(type_id)), tmp_path, match="not a ggml tensor type",
                 tensor="blk.0.attn_q.weight", field="type")


def test_dims_whose_product_overflows(valid, tmp_path):
    at = layout(valid)["tensors"]["token_embd.weight"]["dims"]
    # ne = (2^32, 2^32): 2^64 elements (gguf-py's np.prod of uint64 dims wraps this to 0)
    bad = patch(valid, at, U64.pack(2**32) + U64.pack(2**32))
    expect_error(bad, tmp_path, match="multiply to 18446744073709551616 elements", tensor="token_embd.weight",
                 field="ne")


def test_negative_dimension(valid, tmp_path):
    at = layout(valid)["tensors"]["token_embd.weight"]["dims"]
    expect_error(patch(valid, at + 8, U64.pack(2**64 - 4)), tmp_path, match="negative as int64",
                 tensor="token_embd.weight", field="ne[1]")


@pytest.mark.parametrize("which", ["key", "value", "tensor name", "array item"])
def test_absurd_string_lengths(valid, tmp_path, which):
    lay = layout(valid)
    if which == "key":
        at = lay["kvs"]["general.name"]
    elif which == "value":
        at = lay["kvs"]["general.name"] + 8 + len("general.name") + 4
    elif which == "tensor name":
        at = lay["tensors"]["output_norm.weight"]["name_len"]
    else:  # the first string of tokenizer.ggml.tokens
        at = lay["kvs"]["tokenizer.ggml.tokens"] + 8 + len("tokenizer.ggml.tokens") + 4 + 4 + 8
    expect_error(patch(valid, at, U64.pack(2**62)), tmp_path, match="length 4611686018427387904",
                 field="string length")


# -- more damage ggml's loader refuses --------------------------------------------

def test_too_many_dimensions(valid, tmp_path):
    at = layout(valid)["tensors"]["output_norm.weight"]["n_dims"]
    expect_error(patch(valid, at, U32.pack(5)), tmp_path, match="n_dims is 5", tensor="output_norm.weight",
                 field="n_dims")


def test_row_not_a_multiple_of_the_block(valid, tmp_path):
    at = layout(valid)["tensors"]["blk.0.attn_q.weight"]["dims"]
    expect_error(patch(valid, at, U64.pack(48)), tmp_path, match="ne.0. = 48 is not a multiple of 32",
                 tensor="blk.0.attn_q.weight", field="ne[0]")


def _two_of(tmp_path, kind: str):
    """A file with two tensors (or keys) whose names differ only in the first byte."""
    path = tmp_path / f"two_{kind}.gguf"
    w = gguf.GGUFWriter(str(path), "llama")
    if kind == "tensors":
        w.add_tensor("x.weight", np.ones((2, 32), np.float32))
        w.add_tensor("y.weight", np.ones((2, 32), np.float32))
    else:
        w.add_uint32("aaaa", 1)
        w.add_uint32("bbbb", 2)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


def test_duplicate_tensor_name(tmp_path):
    path = _two_of(tmp_path, "tensors")
    bad = patch(path, layout(path)["tensors"]["y.weight"]["name_len"] + 8, b"x")
    expect_error(bad, tmp_path, match="duplicate tensor name", tensor="x.weight", field="name")


def test_duplicate_key(tmp_path):
    path = _two_of(tmp_path, "keys")
    bad = patch(path, layout(path)["kvs"]["bbbb"] + 8, b"aaaa")
    expect_error(bad, tmp_path, match="duplicate key 'aaaa'", field="key")


@pytest.mark.parametrize("value,vtype,match", [(0, "u32", "power of two"), (48, "u32", "power of two"),
                                               (32, "i32", "Bad type for general.alignment")])
def test_bad_alignment(tmp_path, value, vtype, match):
    from gguf import GGUFValueType

    path = write_gguf(tmp_path / "a.gguf", {"general.alignment": (value, GGUFValueType.UINT32 if vtype == "u32"
                                                                  else GGUFValueType.INT32)},
                      [("a.weight", np.ones((2, 32)), "f32")])
    expect_error(path, tmp_path, match=match)


def test_unknown_value_type(valid, tmp_path):
    at = layout(valid)["kvs"]["llama.block_count"] + 8 + len("llama.block_count")
    expect_error(patch(valid, at, U32.pack(13)), tmp_path, match="unknown value type 13", field="type")


def test_nested_array(valid, tmp_path):
    at = layout(valid)["kvs"]["tokenizer.ggml.tokens"] + 8 + len("tokenizer.ggml.tokens") + 4
    expect_error(patch(valid, at, U32.pack(9)), tmp_path, match="arrays of arrays", field="array type")


@pytest.mark.parametrize("field,at", [("tensor_count", 8), ("kv_count", 16)])
def test_absurd_counts(valid, tmp_path, field, at):
    expect_error(patch(valid, at, U64.pack(2**60)), tmp_path, match=f"{field} 1152921504606846976 cannot fit",
                 field=field)


def test_absurd_array_length(valid, tmp_path):
    at = layout(valid)["kvs"]["tokenizer.ggml.tokens"] + 8 + len("tokenizer.ggml.tokens") + 4 + 4
    expect_error(patch(valid, at, U64.pack(2**40)), tmp_path, match="array of 1099511627776 elements",
                 field="array length")


def test_not_a_file(tmp_path):
    with pytest.raises(GGUFError, match="cannot open"):
        open_gguf(tmp_path / "missing.gguf")
    with pytest.raises(GGUFError, match="is a directory"):
        open_gguf(tmp_path)


def test_nonfinite_weights_refused_with_the_row(tmp_path):
    x = np.ones((3, 64), np.float32)
    x[2, 40] = np.inf
    src = write_gguf(tmp_path / "inf.gguf", {}, [("blk.0.attn_q.weight", x, "f32")])
    out = tmp_path / "out.gguf"
    with pytest.raises(GGUFError, match=r"blk.0.attn_q.weight.*row 2 column 40") as info:
        quantize_file(src, out, "q8_0")
    assert info.value.tensor == "blk.0.attn_q.weight"
    assert not out.exists() and not [p for p in tmp_path.iterdir() if p.name.startswith(".")]
