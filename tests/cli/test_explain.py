"""`quantspec explain`: the layout, then a block decoded field by field, from
the worked example, from hex or from a GGUF tensor; bad input is a clear
quantspec error (exit status 2 on the command line)."""

from __future__ import annotations

import re

import numpy as np
import pytest

import quantspec as qs
from quantspec import explain, registry
from quantspec.cli import main
from quantspec.errors import GGUFError, QuantspecError, ShapeError, UnknownFormatError


def _printed_floats(out: str) -> np.ndarray:
    """The y[...] lines under "floats (the spec's dequantize):"."""
    tail = out[out.index("floats (the spec's dequantize):"):]
    values = []
    for line in tail.splitlines()[1:]:
        m = re.match(r"\s+y\[\d+\.\.\d+\]: (.*)", line)
        if not m:
            break
        values += m.group(1).split()
    return np.array([np.float32(v) for v in values], dtype=np.float32)


def _same_bits(a: np.ndarray, b: np.ndarray) -> bool:
    return a.shape == b.shape and bool(np.array_equal(a.view(np.uint32), b.view(np.uint32)))


@pytest.mark.parametrize("fmt", qs.formats())
def test_worked_example_by_default(fmt, capsys):
    assert main(["explain", fmt.upper()]) == 0
    out = capsys.readouterr().out
    spec = registry.spec(fmt)
    assert out.startswith(fmt.upper())
    for f in spec.fields:
        assert f" {f.name}" in out
    assert "Worked example" in out and "element by element:" in out
    x = explain.example_input(spec.block_size)[None, :]
    q = registry.module(fmt).quantize(x, explain.example_imatrix(spec))
    assert _same_bits(_printed_floats(out), registry.module(fmt).dequantize(q)[0])


def test_hex_block_decoded_field_by_field(capsys):
    block = "00 3c 01 23 45 67 89 ab cd ef 00 11 22 33 44 55 66 77"
    assert main(["explain", "q4_0", "--hex", block]) == 0
    out = capsys.readouterr().out
    assert "d (f16 @0) = 00 3c -> 0x3c00 = 1.0" in out
    assert "q[17] = 2: qs[1] bits 4-7" in out and "y[17] = (2 - 8) * 1.0 = -6.0" in out
    expected = qs.dequantize("q4_0", np.frombuffer(bytes.fromhex(block.replace(" ", "")), dtype=np.uint8))
    assert _same_bits(_printed_floats(out), expected)


def test_hex_accepts_common_spellings():
    spec = registry.spec("q5_0")
    data = bytes(range(22))
    for text in (data.hex(), data.hex(" "), data.hex(":"), ", ".join(f"0x{b:02X}" for b in data)):
        assert explain.parse_hex(spec, text) == data


def test_api_explains_names_and_bytes():
    text = explain.explain("q8_0", bytes(2) + bytes([1]) * 32)
    assert "qs (i8[32] @2) = 1 1 1" in text and "y[0] = 1 * 0.0 = 0.0" in text
    assert explain.explain(("ggml", 2)).startswith("Q4_0 (ggml type 2)")


@pytest.mark.parametrize("text, error, match", [
    ("00 3c", ShapeError, r"q4_0: a block is 18 bytes \(36 hex digits\), got 2 bytes"),
    ("00" * 19, ShapeError, "got 19 bytes"),
    ("zz" * 18, explain.HexError, "character 'z'"),
    ("0" * 35, explain.HexError, "odd number of digits"),
])
def test_bad_hex_is_a_clear_error(text, error, match, capsys):
    with pytest.raises(error, match=match) as info:
        explain.parse_hex(registry.spec("q4_0"), text)
    assert isinstance(info.value, (QuantspecError, ValueError))
    assert main(["explain", "q4_0", "--hex", text]) == 2
    assert re.search(match, capsys.readouterr().err)


def test_decode_checks_the_length():
    with pytest.raises(ShapeError, match="q8_0: a block is 34 bytes, got 33"):
        explain.decode(registry.module("q8_0"), bytes(33))


def test_unknown_format_and_misused_options(capsys):
    assert main(["explain", "q9_9"]) == 2
    assert "unknown format 'q9_9'" in capsys.readouterr().err
    with pytest.raises(UnknownFormatError):
        explain.explain("q9_9")
    assert main(["explain", "q4_0", "--tensor", "x"]) == 2
    assert "need --from" in capsys.readouterr().err
    assert main(["explain", "q4_0", "--from", "model.gguf"]) == 2
    assert "needs --tensor" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["explain", "q4_0", "--hex", "00", "--from", "model.gguf"])


# --------------------------------------------------------------------------- GGUF

@pytest.fixture(scope="module")
def gguf_file(tmp_path_factory):
    gguf = pytest.importorskip("gguf")
    x = np.random.default_rng(7).standard_normal((3, 64)).astype(np.float32)
    q = qs.quantize("q4_0", x)
    path = tmp_path_factory.mktemp("gguf") / "tiny.gguf"
    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_tensor("blk.0.attn_q.weight", q, raw_dtype=gguf.GGMLQuantizationType.Q4_0)
    writer.add_tensor("output_norm.weight", x[0])
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path, q


def test_block_from_gguf(gguf_file, capsys):
    path, q = gguf_file
    block = 5  # row 2, second block
    assert main(["explain", "q4_0", "--from", str(path), "--tensor", "blk.0.attn_q.weight",
                 "--block", str(block)]) == 0
    out = capsys.readouterr().out
    assert "Block 5 of 6 of tensor blk.0.attn_q.weight (ne [64, 3], row 2, elements 160..191" in out
    data = q[2, 18:36]
    assert " ".join(f"{b:02x}" for b in data[:16]) in out
    assert _same_bits(_printed_floats(out), qs.dequantize("q4_0", data))
    raw, where = explain.block_from_gguf(registry.spec("q4_0"), str(path), "blk.0.attn_q.weight", block)
    assert raw == data.tobytes() and where["block_in_row"] == 1


def test_float_tensor_block_from_gguf(gguf_file, capsys):
    path, _ = gguf_file
    assert main(["explain", "f32", "--from", str(path), "--tensor", "output_norm.weight", "--block", "3"]) == 0
    assert "element 3," in capsys.readouterr().out


@pytest.mark.parametrize("args, error, match", [
    (("nope", 0), GGUFError, "has no tensor 'nope'; it has blk.0.attn_q.weight, output_norm.weight"),
    (("blk.0.attn_q.weight", 6), ShapeError, r"has 6 blocks \(0..5\), got block 6"),
    (("blk.0.attn_q.weight", -1), ShapeError, "got block -1"),
    (("output_norm.weight", 0), GGUFError, r"stored as F32 \(ggml type 0\), not q4_0 \(ggml type 2\)"),
])
def test_bad_gguf_requests_are_clear_errors(gguf_file, args, error, match, capsys):
    path, _ = gguf_file
    tensor, block = args
    with pytest.raises(error, match=match):
        explain.block_from_gguf(registry.spec("q4_0"), str(path), tensor, block)
    assert main(["explain", "q4_0", "--from", str(path), "--tensor", tensor, "--block", str(block)]) == 2
    assert re.search(match, capsys.readouterr().err)


def test_not_a_gguf_file(tmp_path):
    bogus = tmp_path / "bogus.gguf"
    bogus.write_bytes(b"not a gguf file at all" * 4)
    with pytest.raises(GGUFError, match="cannot read"):
        explain.block_from_gguf(registry.spec("q4_0"), str(bogus), "x", 0)
    with pytest.raises(GGUFError, match="cannot read"):
        explain.block_from_gguf(registry.spec("q4_0"), str(tmp_path / "missing.gguf"), "x", 0)
