"""`quantspec stats`: the metrics' definitions on random data, the GGUF path
(tensor classes, 1-D tensors left out, a quantized tensor as its own
reference) on a file made here, the table and the plot."""

from __future__ import annotations

import math

import numpy as np
import pytest

import quantspec as qs
from quantspec import stats
from quantspec.cli import main


def test_measure_matches_its_definition():
    x = stats.random_data("laplace", 8, 256, seed=3)
    w = stats.random_imatrix(256)
    s = stats.measure("q4_1", x, "g", imatrix=w)
    y = qs.dequantize("q4_1", qs.quantize("q4_1", x, imatrix=w)).astype(np.float64)
    err = y - x
    assert s.elements == x.size and s.nbytes == 8 * 8 * 20 and s.bpw == 5.0
    assert s.rel_rmse == pytest.approx(math.sqrt((err ** 2).sum() / (x.astype(np.float64) ** 2).sum()), rel=1e-12)
    assert s.max_abs == np.abs(err).max()
    assert s.weighted_rel_rmse == pytest.approx(
        math.sqrt((w * err ** 2).sum() / (w * x.astype(np.float64) ** 2).sum()), rel=1e-12)
    assert stats.measure("f32", x).rel_rmse == 0


def test_chunked_sums_equal_one_pass(monkeypatch):
    x = stats.random_data("normal", 16, 512)
    whole = stats.measure("q5_0", x)
    monkeypatch.setattr(stats, "CHUNK", 1024)  # two rows per call
    parts = stats.measure("q5_0", x)
    assert parts.nbytes == whole.nbytes and parts.max_abs == whole.max_abs
    # float64 statistics summed per chunk: another summation order, so equal within float64 rounding
    assert parts.sq_err == pytest.approx(whole.sq_err, rel=1e-12)


@pytest.mark.parametrize("dist", stats.DISTRIBUTIONS)
def test_random_data_is_seeded(dist):
    a, b = stats.random_data(dist, 4, 64, seed=1), stats.random_data(dist, 4, 64, seed=1)
    assert a.dtype == np.float32 and np.array_equal(a, b)
    assert not np.array_equal(a, stats.random_data(dist, 4, 64, seed=2))


def test_random_table_and_plot(tmp_path, capsys):
    pytest.importorskip("matplotlib")
    png = tmp_path / "err.png"
    rc = main(["stats", "--random", "student-t", "--df", "3", "--formats", "q4_0,q4_1,q5_0,q5_1,q8_0,f16",
               "--rows", "8", "--cols", "1024", "--plot", str(png)])
    assert rc == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "data: student-t df=3, 8 x 1024, seed 0"
    assert lines[1].split() == ["format", "bpw", "rel", "RMSE", "max", "abs", "err", "max", "err/rms"]
    rows = {line.split()[0]: line.split() for line in lines[3:] if not line.startswith("plot")}
    assert list(rows) == ["q4_0", "q4_1", "q5_0", "q5_1", "q8_0", "f16"]
    bpw = {f: float(r[1]) for f, r in rows.items()}
    rmse = {f: float(r[2]) for f, r in rows.items()}
    assert bpw == {"q4_0": 4.5, "q4_1": 5.0, "q5_0": 5.5, "q5_1": 6.0, "q8_0": 8.5, "f16": 16.0}
    assert rmse["q4_0"] > rmse["q5_0"] > rmse["q8_0"] > rmse["f16"] > 0
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert lines[-1] == f"plot: {png}"


def test_sort_by_bpw(capsys):
    assert main(["stats", "--random", "uniform", "--formats", "q8_0,q4_1,q5_0,q4_0", "--rows", "2", "--cols", "256",
                 "--sort", "bpw"]) == 0
    rows = [line.split()[0] for line in capsys.readouterr().out.splitlines()[3:]]
    assert rows == ["q4_0", "q4_1", "q5_0", "q8_0"]


def test_markdown_with_imatrix(capsys):
    assert main(["stats", "--random", "normal", "--formats", "q4_0,q8_0", "--rows", "4", "--cols", "256",
                 "--imatrix", "random", "--markdown"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].endswith("; random importance matrix")
    assert out[1] == "| format | bpw | rel RMSE | max abs err | max err/rms | imatrix-weighted rel RMSE |"
    assert out[3].startswith("| q4_0 | 4.5000 |") and out[4].startswith("| q8_0 | 8.5000 |")


def _small_gguf(path):
    gguf = pytest.importorskip("gguf")
    rng = np.random.default_rng(0)
    writer = gguf.GGUFWriter(str(path), "llama")
    emb = rng.standard_normal((64, 256)).astype(np.float32)
    attn = qs.quantize("q8_0", rng.standard_normal((32, 256)).astype(np.float32))
    ffn = rng.standard_t(4, (16, 512)).astype(np.float16)
    writer.add_tensor("token_embd.weight", emb)
    writer.add_tensor("blk.0.attn_q.weight", attn, raw_dtype=gguf.GGMLQuantizationType.Q8_0)
    writer.add_tensor("blk.0.ffn_down.weight", ffn)
    writer.add_tensor("blk.0.attn_norm.weight", np.ones(256, np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return emb, attn, ffn


def test_gguf_classes_and_reference(tmp_path, capsys):
    model = tmp_path / "small.gguf"
    emb, attn_q8, ffn = _small_gguf(model)
    found = stats.gguf_stats(model, ["q4_0", "q8_0"])
    by = {(s.fmt, s.group): s for s in found.stats}
    assert [k for k in by] == [("q4_0", "attn"), ("q4_0", "embd"), ("q4_0", "ffn"), ("q4_0", "all"),
                               ("q8_0", "attn"), ("q8_0", "embd"), ("q8_0", "ffn"), ("q8_0", "all")]
    assert by[("q4_0", "embd")] == stats.measure("q4_0", emb, "embd")
    # the quantized tensor is its own reference: requantizing Q8_0 to Q8_0 changes nothing
    assert by[("q8_0", "attn")].sq_err == 0 and by[("q8_0", "attn")].sq_ref > 0
    assert by[("q4_0", "ffn")] == stats.measure("q4_0", ffn.astype(np.float32), "ffn")
    total = by[("q4_0", "all")]
    assert total.tensors == 3 and total.elements == emb.size + 32 * 256 + ffn.size
    assert found.source_types == {"f32": 1, "q8_0": 1, "f16": 1}
    assert any("1 1-D tensors" in note for note in found.notes)

    assert main(["stats", str(model), "--formats", "q4_0", "--group", "kind"]) == 0
    out = capsys.readouterr().out
    assert "reference: the file's q8_0 tensors dequantized by the spec" in out
    groups = [line.split()[1] for line in out.splitlines()[4:] if line.startswith("q4_0")]
    assert groups == ["attn_q", "ffn_down", "token_embd", "all"]


def test_table_is_reusable():
    s = [stats.ErrorStats("q4_0", "g", 1, 32, 18, 1.0, 4.0, 0.5)]
    header, rows = stats.table(s, columns=stats.COLUMNS[:1] + [("bpw", lambda e: f"{e.bpw:.1f}")])
    assert header == ["format", "bpw"] and rows == [["q4_0", "4.5"]]
    assert stats.render(header, rows).splitlines() == ["format  bpw", "------  ---", "q4_0    4.5"]
    assert stats.tensor_class("blk.12.ffn_gate.weight") == "ffn"
    assert stats.tensor_kind("blk.1.attn_v.weight") == "attn_v"
    assert stats.tensor_class("token_embd.weight") == "embd" and stats.tensor_class("output.weight") == "output"


def test_bad_arguments(tmp_path, capsys):
    assert main(["stats", str(tmp_path / "missing.gguf")]) == 2
    assert main(["stats", "--random", "normal", "--formats", "q9_9"]) == 2
    assert main(["stats", "--random", "normal", "--imatrix", str(tmp_path)]) == 2
    bad = tmp_path / "bad.gguf"
    bad.write_bytes(b"GGUF\x03\x00\x00\x00" + b"\xff" * 8)
    assert main(["stats", str(bad)]) == 2
    err = capsys.readouterr().err
    assert "no such file" in err and "q9_9" in err and "cannot read as GGUF" in err
    with pytest.raises(SystemExit):
        main(["stats", "--random", "cauchy"])


def test_gguf_with_an_imatrix_file(tmp_path, capsys):
    """A legacy llama.cpp imatrix (.dat) weighs the tensors it names; the
    others are measured without one."""
    import struct

    model = tmp_path / "small.gguf"
    emb, _, _ = _small_gguf(model)
    weights = np.exp(np.random.default_rng(5).normal(0, 1, 256)).astype(np.float32)
    name = b"token_embd.weight"
    dat = struct.pack("<i", 1) + struct.pack("<i", len(name)) + name + struct.pack("<ii", 1, 256) + weights.tobytes()
    (tmp_path / "imatrix.dat").write_bytes(dat)
    assert main(["stats", str(model), "--formats", "q4_0", "--imatrix", str(tmp_path / "imatrix.dat")]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[2].endswith("max err/rms  imatrix-weighted rel RMSE")
    embd = next(line.split() for line in out if line.split()[:2] == ["q4_0", "embd"])
    direct = stats.measure("q4_0", emb, "embd", imatrix=weights)
    # the table prints 5 significant digits: equal to that precision
    assert float(embd[5]) == pytest.approx(direct.rel_rmse, rel=1e-4)
    assert float(embd[-1]) == pytest.approx(direct.weighted_rel_rmse, rel=1e-4)
    attn = next(line.split() for line in out if line.split()[:2] == ["q4_0", "attn"])
    assert attn[-1] == "-"  # no weights for that tensor
