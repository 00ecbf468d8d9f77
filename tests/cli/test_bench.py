"""The bench machinery on a tiny size: the table's shape and its bit-exact
column. Speed is never asserted here (see asv_bench/ and `quantspec bench`)."""

import pytest

pytest.importorskip("llama_cpp", reason="the bench compares with libggml from llama-cpp-python")

from quantspec import bench  # noqa: E402
from quantspec.cli import main  # noqa: E402

FORMATS = ("q4_0", "q8_0")
OPS = ("quantize", "dequantize", "vec_dot")


def test_tables_columns_and_exactness():
    results = bench.run(FORMATS, n=8 * 1024, repeats=1, threads=2)
    (main_cols, main_rows), (other_cols, other_rows) = bench.tables(results)
    assert main_cols == ("format", "op", "isa", "ours Melem/s", "baseline", "baseline Melem/s", "ratio",
                         "bit-exact")
    assert [r[:2] for r in main_rows] == [(f, op) for f in FORMATS for op in OPS]
    assert [r[-1] for r in main_rows] == ["✔"] * len(main_rows)
    assert all(r[4] == "ggml" and r[5] != bench.NA for r in main_rows)  # ggml has every op of these formats
    assert other_cols[0] == "comparison" and other_cols[-1] == "bit-exact"
    kinds = {r[0] for r in other_rows}
    assert {bench.GGUF, "2 threads vs 1"} <= kinds
    assert [r[-1] for r in other_rows] == ["✔"] * len(other_rows)


def test_ik_llama_formats_against_their_ggml_counterpart():
    """ggml lacks the ik_llama.cpp formats: the baseline is the mainline format
    of similar size, and the kernels' quantize is compared with the spec's."""
    results = bench.run(["iq4_kss"], n=4 * 1024, repeats=1, threads=1)
    (_, main_rows), (_, other_rows) = bench.tables(results)
    assert [r[:2] for r in main_rows] == [("iq4_kss", op) for op in OPS]
    assert all(r[4] == "ggml iq4_xs" and r[5] != bench.NA for r in main_rows)
    assert [r[-1] for r in main_rows] == ["✔†", "✔†", "✔"]
    if any(r[0] == bench.SPEC_QUANTIZE for r in other_rows):
        assert [r[-1] for r in other_rows if r[0] == bench.SPEC_QUANTIZE] == ["✔"]


def test_cli_prints_and_updates_readme(tmp_path, capsys):
    readme = tmp_path / "README.md"
    readme.write_text("intro\n<!-- bench:begin -->\nold table\n<!-- bench:end -->\nrest\n", encoding="utf-8")
    rc = main(["bench", "--quick", "--formats", "q4_0,f32", "--ops", "dequantize,vec_dot", "--n", "4096",
               "--repeats", "1", "--threads", "1", "--update-readme", str(readme)])
    assert rc == 0
    out = capsys.readouterr().out
    header = out.splitlines()[0].split()
    assert header[:3] == ["format", "op", "isa"] and header[-1] == "bit-exact"
    f32_dequantize = next(line for line in out.splitlines() if line.startswith("f32") and "dequantize" in line)
    assert bench.NA in f32_dequantize and "✔†" in f32_dequantize  # ggml has no f32 to_float
    text = readme.read_text(encoding="utf-8")
    assert text.startswith("intro\n<!-- bench:begin -->\n| format | op | isa |") and text.endswith(
        "<!-- bench:end -->\nrest\n")
    assert "old table" not in text


def test_update_readme_needs_markers(tmp_path):
    readme = tmp_path / "README.md"
    readme.write_text("no markers\n", encoding="utf-8")
    with pytest.raises(ValueError, match="bench:begin"):
        bench.update_readme(readme, "| t |")
