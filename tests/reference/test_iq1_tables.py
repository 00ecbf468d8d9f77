"""The IQ1 grid (reference/tables/ggml_iq1.py) and the neighbour lists
computed from it (reference/_iq1.py): pinned by checksum, consistent with
each other, and compared with the upstream sources where those are at hand."""

from __future__ import annotations

import hashlib
import os
import re
from pathlib import Path

import numpy as np
import pytest

from quantspec.reference import _iq1
from quantspec.reference.tables import ggml_iq1

#: sha256 of each table's little-endian bytes.
CHECKSUMS = {
    "IQ1S_GRID": "07540ffc1aeaf6ad4d97e96b0fcc765aae39671d4ae4a27bbd0e796fde167c6a",
    "KGRID_1BIT_2048": "e9ffebfc997ad6023063a667c0bf4eedd8ebf7f56b3da399cbc7d1b1f7ea52c6",
}

#: sha256 of the neighbour lists (little-endian int32 rows, -1 padded).
NEIGHBOURS_SHA256 = "af25ce3f234eac765b53c05f87fd033ffd7132440880bfc0cdb0a812620ba122"


def _sha(a: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(a).astype(a.dtype.newbyteorder("<")).tobytes()).hexdigest()


@pytest.mark.parametrize("name", list(CHECKSUMS))
def test_table_checksum(name):
    table = getattr(ggml_iq1, name)
    assert table.shape == (2048,)
    assert _sha(table) == CHECKSUMS[name]
    assert not table.flags.writeable


def test_grid_and_kgrid_are_the_same_points():
    """iq1s_grid byte j = l_j - 1 with l_j = (kgrid >> 2j) & 3 in {0, 1, 2}."""
    levels = (ggml_iq1.KGRID_1BIT_2048[:, None].astype(np.int64) >> (2 * np.arange(8))) & 3
    assert levels.max() == 2
    assert np.array_equal(_iq1.GRID_VALUES, (levels - 1).astype(np.int8))
    assert np.all(np.diff(ggml_iq1.KGRID_1BIT_2048.astype(np.int64)) > 0)  # ascending, distinct


def test_grid_plus_delta_is_exact():
    assert np.array_equal(_iq1.GRID_PLUS_DELTA[0] * 8, _iq1.GRID_VALUES * 8 + 1)
    assert np.array_equal(_iq1.GRID_PLUS_DELTA[1] * 8, _iq1.GRID_VALUES * 8 - 1)


def _brute_force_neighbours(u: int) -> list[int]:
    """iq2xs_init_impl for one lattice point, as the C writes it."""
    pos = np.array([2 * ((u >> 2 * k) & 3) + 1 for k in range(8)])
    grid = 2 * _iq1.GRID_LEVELS.astype(np.int64) + 1
    dist2 = ((grid - pos) ** 2).sum(axis=1)
    pairs = sorted(zip(dist2.tolist(), range(2048)))
    out, have, d2 = [], 1, pairs[0][0]
    for dist, j in pairs:
        if dist > d2:
            if have == _iq1.NEIGHBOUR_SHELLS:
                break
            d2, have = dist, have + 1
        out.append(j)
    return out


def test_neighbour_lists_against_the_c_loop():
    row, table = _iq1.neighbour_lists()
    reachable = [u for u in range(_iq1.KMAP_SIZE) if all((u >> 2 * k) & 3 < 3 for k in range(8))]
    assert len(reachable) == 3 ** 8
    off = [u for u in reachable if _iq1.GRID_INDEX[u] < 0]
    assert len(off) == 3 ** 8 - 2048 == table.shape[0]
    assert all(row[u] < 0 for u in reachable if _iq1.GRID_INDEX[u] >= 0)
    rng = np.random.default_rng(0)
    for u in [off[0], off[-1], *rng.choice(off, 40, replace=False).tolist()]:
        listed = table[row[u]]
        assert listed[listed >= 0].tolist() == _brute_force_neighbours(u), u


def test_neighbour_lists_checksum():
    row, table = _iq1.neighbour_lists()
    assert int((table >= 0).sum()) == 327721
    assert table.shape == (4513, 205)
    assert _sha(table) == NEIGHBOURS_SHA256


def _source(name: str) -> Path | None:
    candidates = [Path(os.environ["GGML_SRC"]) / name] if "GGML_SRC" in os.environ else []
    candidates.append(Path("/tmp/lcp/llama_cpp_python-0.3.36/vendor/llama.cpp/ggml/src") / name)
    return next((c for c in candidates if c.is_file()), None)


def test_grid_is_the_upstream_header():
    header = _source("ggml-common.h")
    if header is None:
        pytest.skip("ggml-common.h is not available (set GGML_SRC to a ggml src folder)")
    text = header.read_text()
    body = re.search(r"GGML_TABLE_BEGIN\(uint64_t, iq1s_grid, NGRID_IQ1S\)(.*?)GGML_TABLE_END", text, re.S)
    assert body, f"iq1s_grid not found in {header}"
    assert [int(v, 16) for v in re.findall(r"0x[0-9a-fA-F]+", body.group(1))] == ggml_iq1.IQ1S_GRID.tolist()
    assert re.search(r"#define IQ1S_DELTA 0\.125f", text)
    assert re.search(r"#define IQ1M_DELTA 0\.125f", text)


def test_kgrid_is_the_upstream_init_table():
    source = _source("ggml-quants.c")
    if source is None:
        pytest.skip("ggml-quants.c is not available (set GGML_SRC to a ggml src folder)")
    text = source.read_text()
    body = re.search(r"kgrid_1bit_2048\[NGRID_IQ1S\] = \{(.*?)\};", text, re.S)
    assert body, f"kgrid_1bit_2048 not found in {source}"
    assert [int(v) for v in re.findall(r"\d+", body.group(1))] == ggml_iq1.KGRID_1BIT_2048.tolist()
    # the facts the neighbour lists rest on
    assert "const int kmap_size = 43692;" in text
    assert re.search(r"nwant = type == GGML_TYPE_IQ1_S \|\| type == GGML_TYPE_IQ1_M \? 3", text)


def test_grid_agrees_with_gguf_py():
    quants = pytest.importorskip("gguf.quants")
    quants.IQ1_S.init_grid()
    grid = np.asarray(quants.IQ1_S.grid, dtype=np.float32).reshape(2048, 8)
    assert np.array_equal(grid, _iq1.GRID_VALUES.astype(np.float32))
