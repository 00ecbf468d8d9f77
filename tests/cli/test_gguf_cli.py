"""The quantize, dequantize and inspect subcommands end to end on files built
here: exit statuses, the one-line errors, --force, --allow-requantize, the
atomic output under errors and Ctrl-C, and bounded memory."""

from __future__ import annotations

import json
import tracemalloc

import numpy as np
import pytest

import quantspec as qs
from quantspec.cli import main
from quantspec.gguf import open_gguf, quantize_file
from quantspec.gguf import quantize as gq
from tests.gguf.builders import tiny_llama

pytest.importorskip("gguf")


@pytest.fixture
def model(tmp_path):
    return tiny_llama(tmp_path / "m.gguf", n_layer=2, n_embd=64, n_ff=96, n_vocab=32, scale=0.05)


@pytest.fixture
def q4_1_model(tmp_path):
    return tiny_llama(tmp_path / "m_q4_1.gguf", n_layer=2, n_embd=64, n_ff=96, n_vocab=32, scale=0.05,
                      dtype="q4_1")


def leftovers(tmp_path):
    return [p.name for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_quantize_prints_a_summary(model, tmp_path, capsys):
    out = tmp_path / "q.gguf"
    assert main(["quantize", str(model), str(out), "Q4_0", "--threads", "2", "-v"]) == 0
    text = capsys.readouterr().out
    assert "file type Q4_0" in text and "output.weight" in text and "fallback from q6_k" in text
    with open_gguf(out) as f:
        assert f.get("general.file_type") == 2 and f.get("general.quantization_version") == 2
        assert f.tensor("blk.0.attn_q.weight").type_name == "q4_0"


def test_requantize_needs_the_flag(q4_1_model, tmp_path, capsys):
    out = tmp_path / "q.gguf"
    assert main(["quantize", str(q4_1_model), str(out), "Q8_0"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert "already quantized (q4_1)" in err and "--allow-requantize" in err
    assert not out.exists() and not leftovers(tmp_path)
    assert main(["quantize", str(q4_1_model), str(out), "Q8_0", "--allow-requantize", "-q"]) == 0
    assert out.exists()


def test_force(model, tmp_path, capsys):
    out = tmp_path / "q.gguf"
    out.write_bytes(b"keep me")
    assert main(["quantize", str(model), str(out), "q8_0"]) == 1
    assert "exists; use --force" in capsys.readouterr().err
    assert out.read_bytes() == b"keep me"
    assert main(["quantize", str(model), str(out), "q8_0", "--force", "-q"]) == 0
    assert out.read_bytes()[:4] == b"GGUF" and not leftovers(tmp_path)


def test_unknown_type_lists_the_choices(model, tmp_path, capsys):
    assert main(["quantize", str(model), str(tmp_path / "q.gguf"), "Q4_X"]) == 1
    err = capsys.readouterr().err
    assert "unknown type 'Q4_X'" in err and "Q4_K_M" in err and "q8_0" in err


def test_a_type_quantspec_cannot_write_is_refused_up_front(model, tmp_path, capsys):
    out = tmp_path / "q.gguf"
    assert main(["quantize", str(model), str(out), "Q8_0", "--tensor-type", "ATTN_V=q8_1"]) == 1
    err = capsys.readouterr().err
    assert "blk.0.attn_v.weight" in err and "q8_1" in err and "cannot write" in err
    assert not out.exists() and not leftovers(tmp_path)


def test_bad_tensor_type_option(model, tmp_path, capsys):
    assert main(["quantize", str(model), str(tmp_path / "q.gguf"), "Q8_0", "--tensor-type", "attn_v"]) == 1
    assert "PATTERN=TYPE" in capsys.readouterr().err


@pytest.mark.parametrize("failure", [KeyboardInterrupt, RuntimeError])
def test_nothing_partial_on_interrupt_or_failure(model, tmp_path, monkeypatch, capsys, failure):
    calls = {"n": 0}
    real = qs.quantize

    def flaky(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 5:
            raise failure("stop")
        return real(*args, **kwargs)

    monkeypatch.setattr(qs, "quantize", flaky)
    out = tmp_path / "q.gguf"
    if failure is KeyboardInterrupt:
        assert main(["quantize", str(model), str(out), "Q8_0"]) == 130
        assert "interrupted" in capsys.readouterr().err
    else:
        with pytest.raises(RuntimeError):
            quantize_file(model, out, "Q8_0")
    assert calls["n"] == 5 and not out.exists() and not leftovers(tmp_path)


@pytest.mark.parametrize("to", ["f16", "f32", "bf16"])
def test_dequantize(q4_1_model, tmp_path, to):
    out = tmp_path / "d.gguf"
    assert main(["dequantize", str(q4_1_model), str(out), "--to", to, "-q"]) == 0
    with open_gguf(q4_1_model) as src, open_gguf(out) as dst:
        assert dst.get("general.file_type") == {"f32": 0, "f16": 1, "bf16": 32}[to]
        assert [t.name for t in dst.tensors] == [t.name for t in src.tensors]
        for s, d in zip(src.tensors, dst.tensors):
            if s.type_name == "q4_1":
                assert d.type_name == to
                x = qs.dequantize("q4_1", src.rows(s))
                expected = x if to == "f32" else qs.quantize(to, x)
                assert np.array_equal(dst.rows(d).view(np.uint8), expected.view(np.uint8).reshape(d.nrows, -1))
            else:
                assert d.type_name == s.type_name and bytes(dst.raw(d)) == bytes(src.raw(s))
        assert {k: v.py for k, v in src.kv.items() if k != "general.file_type"} == \
               {k: v.py for k, v in dst.kv.items() if k != "general.file_type"}


def test_inspect_valid_and_invalid(q4_1_model, tmp_path, capsys):
    assert main(["inspect", str(q4_1_model), "--metadata"]) == 0
    text = capsys.readouterr().out
    assert "every checked block is valid" in text and "blk.1.ffn_down.weight" in text and "5.0000" in text
    assert "llama.block_count" in text
    # an inf scale (fp16 0x7c00) in row 1, block 1 of one tensor
    with open_gguf(q4_1_model) as f:
        t = f.tensor("blk.1.attn_k.weight")
        at = t.offset + t.row_bytes * 1 + 20 * 1
    data = bytearray(q4_1_model.read_bytes())
    data[at:at + 2] = b"\x00\x7c"
    bad = tmp_path / "bad.gguf"
    bad.write_bytes(bytes(data))
    assert main(["inspect", str(bad)]) == 1
    text = capsys.readouterr().out
    assert "INVALID: 1 bad blocks, first row 1 block 1: d = 0x7c00 (inf)" in text
    assert main(["inspect", str(bad), "--json"]) == 1
    report = json.loads(capsys.readouterr().out)
    bad_tensors = [t for t in report["tensors"] if t["status"] == "invalid"]
    assert [t["name"] for t in bad_tensors] == ["blk.1.attn_k.weight"]
    # requantizing it fails on that block, naming it, and writes nothing
    out = tmp_path / "out.gguf"
    assert main(["quantize", str(bad), str(out), "Q8_0", "--allow-requantize"]) == 1
    err = capsys.readouterr().err
    assert "blk.1.attn_k.weight" in err and not out.exists()


def test_inspect_unreadable_is_status_2(tmp_path, capsys):
    bad = tmp_path / "x.gguf"
    bad.write_bytes(b"GGUF" + b"\0" * 30)
    assert main(["inspect", str(bad)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("quantspec inspect: error: ") and str(bad) in err


def test_streaming_memory_is_a_slab_not_the_model(tmp_path, monkeypatch):
    """With small slabs, the traced peak stays far below the model's size:
    tensors are read from the memory map and written slab by slab."""
    src = tiny_llama(tmp_path / "big.gguf", n_layer=2, n_embd=256, n_ff=1024, n_vocab=1024, scale=0.05)
    reference = tmp_path / "ref.gguf"
    quantize_file(src, reference, "q8_0")
    monkeypatch.setattr(gq, "SLAB_ELEMENTS", 4096)
    monkeypatch.setattr(gq, "COPY_BYTES", 4096)
    out = tmp_path / "slabs.gguf"
    tracemalloc.start()
    try:
        quantize_file(src, out, "q8_0", threads=1)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    model_bytes = src.stat().st_size
    assert model_bytes > 8_000_000
    assert peak < model_bytes / 8, (peak, model_bytes)
    assert out.read_bytes() == reference.read_bytes()  # slabs change nothing
