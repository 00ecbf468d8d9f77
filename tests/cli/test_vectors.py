"""`quantspec vectors export/check`: the files match their schema and their
payloads' sha256, round-trip to the spec's vectors, pass against ggml and
the kernels, and a corrupt or wrong vector is reported, not trusted."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest

from quantspec import vectors, verify
from quantspec.cli import main

FORMATS = ("q4_0", "q8_0")


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    directory = tmp_path_factory.mktemp("vectors")
    assert main(["vectors", "export", str(directory), "--formats", ",".join(FORMATS), "--cases", "1"]) == 0
    return directory


def _doc(directory, fmt):
    return json.loads((directory / f"{fmt}.json").read_text(encoding="utf-8"))


def test_files_match_the_schema(exported):
    assert sorted(p.name for p in exported.glob("*.json")) == ["q4_0.json", "q8_0.json", vectors.SCHEMA_NAME]
    schema = json.loads((exported / vectors.SCHEMA_NAME).read_text(encoding="utf-8"))
    assert schema == json.loads(json.dumps(vectors.SCHEMA))
    try:
        import jsonschema
    except ImportError:
        jsonschema = None
    for fmt in FORMATS:
        doc = _doc(exported, fmt)
        if jsonschema is not None:
            jsonschema.Draft202012Validator.check_schema(schema)
            jsonschema.validate(doc, schema)
        else:  # the same required keys, by hand
            vectors.validate_document(doc, fmt)
        assert doc["algorithm"] == fmt and doc["format"]["name"] == fmt
        tests = [t for g in doc["testGroups"] for t in g["tests"]]
        assert doc["numberOfTests"] == len(tests)
        assert [t["tcId"] for t in tests] == list(range(1, len(tests) + 1))
        for t in tests:
            assert set(t["flags"]) <= doc["notes"].keys()
            for key in ("x", "imatrix", "q", "y"):
                ref = t.get(key)
                if ref:
                    data = (exported / ref["file"]).read_bytes()
                    assert hashlib.sha256(data).hexdigest() == ref["sha256"]
                    size = {"float32": 4, "uint8": 1, "uint32": 4}[ref["dtype"]]
                    assert len(data) == size * int(np.prod(ref["shape"]))
        flags = {f for t in tests for f in t["flags"]}
        assert {"zero_block", "tie", "subnormal", "max_scale", "outlier", "negative_zero", "random",
                "decode_only"} <= flags
    assert "imatrix_zeros" in _doc(exported, "q4_0")["notes"]  # q4_0 takes an importance matrix
    assert "imatrix_zeros" not in _doc(exported, "q8_0")["notes"]  # q8_0 ignores one


def test_vectors_round_trip_to_the_spec(exported):
    name, layout, loaded = vectors.load(exported / "q4_0.json")
    assert name == "q4_0" and layout.type_size == 18 and layout.offsets() == {"d": 0, "qs": 2}
    spec = {v.id: v for v in verify.spec_vectors("q4_0", random_cases=1)}
    assert sorted(v.id.split(":", 1)[1] for v in loaded) == sorted(spec)
    for a in loaded:
        b = spec[a.id.split(":", 1)[1]]
        assert np.array_equal(a.q, b.q) and np.array_equal(a.y.view(np.uint32), b.y.view(np.uint32))
        assert (a.x is None) == (b.x is None) and (a.imatrix is None) == (b.imatrix is None)
        if a.x is not None:
            assert np.array_equal(a.x.view(np.uint32), b.x.view(np.uint32))


@pytest.mark.oracle
def test_check_against_ggml_passes(exported, capsys):
    pytest.importorskip("llama_cpp", reason="needs libggml from llama-cpp-python")
    assert main(["vectors", "check", str(exported), "ggml"]) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[-1] == ("ggml: every compared (format, op) pair agrees with the spec bit for bit "
                                    "(4 compared)")


def test_check_against_kernels_passes(exported):
    outcomes = vectors.check(exported, verify.load_target("kernels"))
    assert [(o.fmt, o.op, o.status) for o in outcomes] == [
        (f, op, verify.PASS) for f in FORMATS for op in verify.OPS]


def _copy(src, dst):
    import shutil

    shutil.copytree(src, dst)
    return dst


def test_corrupt_payload_is_refused(exported, tmp_path, capsys):
    directory = _copy(exported, tmp_path / "v")
    ref = _doc(directory, "q8_0")["testGroups"][0]["tests"][0]["q"]
    path = directory / ref["file"]
    data = bytearray(path.read_bytes())
    data[0] ^= 1
    path.write_bytes(bytes(data))
    assert main(["vectors", "check", str(directory), "kernels"]) == 2
    err = capsys.readouterr().err
    assert "does not match its sha256" in err and ref["file"] in err


def test_wrong_expectation_is_reported_by_field(exported, tmp_path, capsys):
    """A vector file whose expected scale is off (sha256 updated to match):
    the check names the case, block and field."""
    directory = _copy(exported, tmp_path / "v")
    doc = _doc(directory, "q4_0")
    test = next(t for t in doc["testGroups"][0]["tests"] if t["name"] == "normal")
    path = directory / test["q"]["file"]
    q = np.frombuffer(path.read_bytes(), dtype=np.uint8).copy()
    q[18 * 3] ^= 1  # block 3: lowest bit of the fp16 scale d
    path.write_bytes(q.tobytes())
    test["q"]["sha256"] = hashlib.sha256(q.tobytes()).hexdigest()
    (directory / "q4_0.json").write_text(json.dumps(doc), encoding="utf-8")
    assert main(["vectors", "check", str(directory), "kernels", "--formats", "q4_0", "--ops", "quantize"]) == 1
    out = capsys.readouterr().out
    assert f"case {test['tcId']}:normal [random]: 1 of 32 blocks differ" in out
    assert "first: block 3 (row 0, block 3 of 8 in the row), byte 0 of the block = d" in out


def test_bad_directories(tmp_path, capsys):
    assert main(["vectors", "check", str(tmp_path / "missing"), "kernels"]) == 2
    assert main(["vectors", "check", str(tmp_path), "kernels"]) == 2
    (tmp_path / "q4_0.json").write_text("{\"schema\": 1}", encoding="utf-8")
    assert main(["vectors", "check", str(tmp_path), "kernels"]) == 2
    err = capsys.readouterr().err
    assert "no such directory" in err and "no <format>.json" in err and "q4_0.json" in err
