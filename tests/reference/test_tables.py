"""ggml's value tables (reference/tables/ggml.py): pinned by checksum, and
checked against the upstream header and gguf-py where those are at hand."""

from __future__ import annotations

import hashlib
import os
import re
from pathlib import Path

import numpy as np
import pytest

from quantspec.reference.tables import ggml

#: sha256 of each table's bytes (int8, in table order).
CHECKSUMS = {
    "KVALUES_IQ4NL": "61aa47540aa024b5d6ddaa839b84ffe59f3d5a349af5c6c7ffcb5e0474b46163",
    "KVALUES_MXFP4": "adf76b672d47eb7fc0afd4db132d548d59d3190aa0ad118fdbf569d5fd478f97",
}

#: The upstream name of each table in ggml-common.h.
UPSTREAM_NAMES = {"KVALUES_IQ4NL": "kvalues_iq4nl", "KVALUES_MXFP4": "kvalues_fp4"}


@pytest.mark.parametrize("name", list(CHECKSUMS))
def test_table_checksum(name):
    table = getattr(ggml, name)
    assert table.dtype == np.int8 and table.shape == (16,)
    assert hashlib.sha256(table.tobytes()).hexdigest() == CHECKSUMS[name]
    assert not table.flags.writeable


def test_iq4nl_levels_are_sorted():
    """best_index_int8's binary search needs them ascending and distinct."""
    assert np.all(np.diff(ggml.KVALUES_IQ4NL.astype(int)) > 0)


def test_fp4_values_are_doubled_e2m1():
    e2m1 = [0, 0.5, 1, 1.5, 2, 3, 4, 6]
    expected = [2 * v for v in e2m1] + [-2 * v for v in e2m1]
    assert ggml.KVALUES_MXFP4.tolist() == expected


def _ggml_common_h() -> Path | None:
    """ggml's ``src/ggml-common.h``: under ``$GGML_SRC`` (a ggml ``src`` folder)
    or in the unpacked llama-cpp-python 0.3.36 sources, if present."""
    candidates = [Path(os.environ["GGML_SRC"]) / "ggml-common.h"] if "GGML_SRC" in os.environ else []
    candidates.append(Path("/tmp/lcp/llama_cpp_python-0.3.36/vendor/llama.cpp/ggml/src/ggml-common.h"))
    return next((c for c in candidates if c.is_file()), None)


@pytest.mark.parametrize("name", list(CHECKSUMS))
def test_table_is_the_upstream_header(name):
    header = _ggml_common_h()
    if header is None:
        pytest.skip("ggml-common.h is not available (set GGML_SRC to a ggml src folder)")
    text = header.read_text()
    body = re.search(rf"GGML_TABLE_BEGIN\(int8_t, {UPSTREAM_NAMES[name]}, 16\)(.*?)GGML_TABLE_END", text, re.S)
    assert body, f"{UPSTREAM_NAMES[name]} not found in {header}"
    assert [int(v) for v in re.findall(r"-?\d+", body.group(1))] == getattr(ggml, name).tolist()


def test_tables_agree_with_gguf_py():
    quants = pytest.importorskip("gguf.quants")
    assert list(quants.IQ4_NL.kvalues) == ggml.KVALUES_IQ4NL.tolist()
    assert list(quants.MXFP4.kvalues) == ggml.KVALUES_MXFP4.tolist()
    assert list(quants.NVFP4.kvalues) == ggml.KVALUES_MXFP4.tolist()
