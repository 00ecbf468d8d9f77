"""The IQ3 grids (reference/tables/ggml_iq3.py) and the computed tables of
reference/_iq3.py: pinned by checksum, checked against the upstream sources
where they are at hand, and against the rules that define them."""

from __future__ import annotations

import hashlib
import os
import re
from pathlib import Path

import numpy as np
import pytest

from quantspec.reference import _iq3
from quantspec.reference.tables import ggml_iq3

#: sha256 of each table's bytes (little-endian, in table order).
CHECKSUMS = {
    "IQ3XXS_GRID": "46e35f5a997efdee6c99ce57854c8a0d4f0ff8ca57e5e8a60c0793ea580acf5d",
    "IQ3S_GRID": "bd1af4945a1717c65610b0284e4628b9a1ba3b306fae3a06f6e5f597356e349f",
    "KGRID_256": "c9678803c61b2210fbd8cbbb3f965a835409cd7d88a04d086d236261bd221d11",
    "KGRID_512": "353274c58dd7d8dc5ee960dc8fc54ff9164eaf2b49206b841cd49415cf393f81",
}

#: (upstream file, C declaration that opens the table)
UPSTREAM = {
    "IQ3XXS_GRID": ("ggml-common.h", r"GGML_TABLE_BEGIN\(uint32_t, iq3xxs_grid, 256\)"),
    "IQ3S_GRID": ("ggml-common.h", r"GGML_TABLE_BEGIN\(uint32_t, iq3s_grid, 512\)"),
    "KGRID_256": ("ggml-quants.c", r"static const uint16_t kgrid_256\[256\] = \{"),
    "KGRID_512": ("ggml-quants.c", r"static const uint16_t kgrid_512\[512\] = \{"),
}


def _digest(table: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(table).astype(table.dtype.newbyteorder("<")).tobytes()).hexdigest()


@pytest.mark.parametrize("name", list(CHECKSUMS))
def test_table_checksum(name):
    table = getattr(ggml_iq3, name)
    assert _digest(table) == CHECKSUMS[name]
    assert not table.flags.writeable


def _ggml_src() -> Path | None:
    """ggml's ``src`` folder: ``$GGML_SRC`` or the unpacked llama-cpp-python 0.3.36 sources."""
    candidates = [Path(os.environ["GGML_SRC"])] if "GGML_SRC" in os.environ else []
    candidates.append(Path("/tmp/lcp/llama_cpp_python-0.3.36/vendor/llama.cpp/ggml/src"))
    return next((c for c in candidates if (c / "ggml-common.h").is_file()), None)


def _upstream_values(filename: str, opening: str) -> list[int]:
    src = _ggml_src()
    if src is None:
        pytest.skip("the ggml sources are not available (set GGML_SRC to a ggml src folder)")
    text = (src / filename).read_text()
    body = re.search(opening + r"(.*?)(GGML_TABLE_END|\};)", text, re.S)
    assert body, f"{opening} not found in {src / filename}"
    return [int(v, 0) for v in re.findall(r"0x[0-9a-fA-F]+|\b\d+\b", body.group(1))]


@pytest.mark.parametrize("name", list(UPSTREAM))
def test_table_is_upstream(name):
    assert _upstream_values(*UPSTREAM[name]) == getattr(ggml_iq3, name).tolist()


def test_ksigns_is_upstream():
    assert _upstream_values("ggml-common.h", r"GGML_TABLE_BEGIN\(uint8_t, ksigns_iq2xs, 128\)") == _iq3.KSIGNS.tolist()


def test_kmask_is_upstream():
    assert _upstream_values("ggml-common.h", r"GGML_TABLE_BEGIN\(uint8_t, kmask_iq2xs, 8\)") == _iq3.KMASK.tolist()


def test_ksigns_are_the_even_parity_completion():
    assert np.array_equal(_iq3.KSIGNS, _iq3.even_parity_signs())
    bits = np.unpackbits(_iq3.KSIGNS[:, None], axis=1)
    assert np.all(bits.sum(axis=1) % 2 == 0)
    assert np.array_equal(_iq3.KSIGNS & 127, np.arange(128))


def _levels(kgrid: np.ndarray) -> np.ndarray:
    return (kgrid.astype(np.int64)[:, None] >> (3 * np.arange(4))) & 7


def test_iq3s_grid_is_its_lattice():
    """Byte i of IQ3S_GRID[g] is 2*l_i + 1 of KGRID_512[g]."""
    assert np.array_equal(ggml_iq3.IQ3S_GRID.view(np.uint8).reshape(-1, 4), 2 * _levels(ggml_iq3.KGRID_512) + 1)


def test_iq3xxs_grid_is_four_times_its_lattice_except_15():
    """Byte i of IQ3XXS_GRID[g] is 4*(2*l_i + 1), except level 7: 62 (not 60)."""
    levels = _levels(ggml_iq3.KGRID_256)
    assert np.array_equal(ggml_iq3.IQ3XXS_GRID.view(np.uint8).reshape(-1, 4),
                          np.where(levels == 7, 62, 4 * (2 * levels + 1)))


def test_grid_keys_are_distinct_and_sorted():
    for kgrid in (ggml_iq3.KGRID_256, ggml_iq3.KGRID_512):
        assert np.all(np.diff(kgrid.astype(int)) > 0) and kgrid.max() < 4096


@pytest.mark.parametrize("grid_size", [256, 512])
def test_neighbour_lists_follow_their_definition(grid_size):
    """For every off-grid key, by brute force: the points of the nwant
    smallest distinct squared distances in the odd lattice, ordered by
    (distance, index); on-grid keys map to their index and have no list."""
    t = _iq3.lattice_tables(grid_size)
    kgrid = ggml_iq3.KGRID_256 if grid_size == 256 else ggml_iq3.KGRID_512
    grid_odd = 2 * _levels(kgrid) + 1
    assert np.array_equal(t.map[kgrid.astype(int)], np.arange(grid_size))
    assert np.all(t.count[kgrid.astype(int)] == 0)
    assert (t.map >= 0).sum() == grid_size
    rng = np.random.default_rng(0)
    off = np.flatnonzero(t.map < 0)
    for u in np.concatenate([off[:64], rng.choice(off, 200, replace=False), off[-64:]]):
        d2 = ((2 * _levels(np.array([u]))[0] + 1 - grid_odd) ** 2).sum(axis=1)
        shells = sorted(set(d2.tolist()))[: _iq3.NWANT[grid_size]]
        expected = sorted((int(d), g) for g, d in enumerate(d2) if d in shells)
        n = int(t.count[u])
        assert t.neighbours[u, :n].tolist() == [g for _, g in expected]
        assert np.all(t.neighbours[u, n:] == -1)


def test_neighbour_table_sizes():
    """Pinned totals of neighbour entries (without the counts); the bytes of
    the oracle tests prove the lists through the quantizers."""
    assert int(_iq3.lattice_tables(256).count.sum()) == 18985
    assert int(_iq3.lattice_tables(512).count.sum()) == 24733
