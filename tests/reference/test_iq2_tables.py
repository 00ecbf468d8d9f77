"""The IQ2 codebooks (reference/tables/ggml_iq2.py): pinned by checksum,
checked against the upstream sources where they are at hand, and the
facts the decoders and quantizers rely on."""

from __future__ import annotations

import hashlib
import os
import re
from pathlib import Path

import numpy as np
import pytest

from quantspec.reference import _iq2
from quantspec.reference.tables import ggml_iq2

#: sha256 of each table's little-endian bytes, in table order.
CHECKSUMS = {
    "IQ2XXS_GRID": "05826b5d3e472a3a78f196be62ac78acf81df0f909626e12ab9fa2a5d490dd54",
    "IQ2XS_GRID": "06e47aaca60b4dc1d9b5a3f34540437058a6b142b4d7a59d5ded769b4d1bf1de",
    "IQ2S_GRID": "e1aa1473412b0552c2174c30ef22ab4073f6a181b85a17056e8249bd2932fd88",
    "KSIGNS_IQ2XS": "a76742a603f8beca5212ecce0f1f02f11a4887fd2f7c8b15aca0ea3eb3380c31",
    "KMASK_IQ2XS": "5ac9831b2e30eb285ef34f8501620f878432d5c04331ad1ae47f977a83ba41a5",
}
SHAPES = {"IQ2XXS_GRID": (256, np.uint64), "IQ2XS_GRID": (512, np.uint64), "IQ2S_GRID": (1024, np.uint64),
          "KSIGNS_IQ2XS": (128, np.uint8), "KMASK_IQ2XS": (8, np.uint8)}
UPSTREAM_NAMES = {"IQ2XXS_GRID": "iq2xxs_grid", "IQ2XS_GRID": "iq2xs_grid", "IQ2S_GRID": "iq2s_grid",
                  "KSIGNS_IQ2XS": "ksigns_iq2xs", "KMASK_IQ2XS": "kmask_iq2xs"}
KGRIDS = {"iq2_xxs": "kgrid_2bit_256", "iq2_xs": "kgrid_2bit_512", "iq2_s": "kgrid_2bit_1024"}


@pytest.mark.parametrize("name", list(CHECKSUMS))
def test_table_checksum(name):
    table = getattr(ggml_iq2, name)
    size, dtype = SHAPES[name]
    assert table.dtype == dtype and table.shape == (size,)
    assert not table.flags.writeable
    assert hashlib.sha256(table.astype(table.dtype.newbyteorder("<")).tobytes()).hexdigest() == CHECKSUMS[name]


def test_codebooks_use_three_magnitudes_and_distinct_points():
    for grid in (ggml_iq2.IQ2XXS_GRID, ggml_iq2.IQ2XS_GRID, ggml_iq2.IQ2S_GRID):
        points = _iq2.grid_bytes(grid)
        assert set(np.unique(points).tolist()) == set(_iq2.GRID_LEVELS)
        assert len(np.unique(grid)) == grid.size


def test_ksigns_is_the_parity_completion():
    s = np.arange(128)
    parity = np.array([bin(v).count("1") & 1 for v in s])
    assert ggml_iq2.KSIGNS_IQ2XS.tolist() == (s | parity << 7).tolist()
    assert ggml_iq2.KMASK_IQ2XS.tolist() == [1 << j for j in range(8)]


def _vendored(name: str) -> Path | None:
    """A ggml source file: under ``$GGML_SRC`` (a ggml ``src`` folder) or in
    the unpacked llama-cpp-python 0.3.36 sources, if present."""
    candidates = [Path(os.environ["GGML_SRC"]) / name] if "GGML_SRC" in os.environ else []
    candidates.append(Path("/tmp/lcp/llama_cpp_python-0.3.36/vendor/llama.cpp/ggml/src") / name)
    return next((c for c in candidates if c.is_file()), None)


@pytest.mark.parametrize("name", list(CHECKSUMS))
def test_table_is_the_upstream_header(name):
    header = _vendored("ggml-common.h")
    if header is None:
        pytest.skip("ggml-common.h is not available (set GGML_SRC to a ggml src folder)")
    body = re.search(rf"GGML_TABLE_BEGIN\(\w+, {UPSTREAM_NAMES[name]}, \d+\)(.*?)GGML_TABLE_END", header.read_text(),
                     re.S)
    assert body, f"{UPSTREAM_NAMES[name]} not found in {header}"
    assert [int(v, 0) for v in re.findall(r"0x[0-9a-fA-F]+|\d+", body.group(1))] == getattr(ggml_iq2, name).tolist()


@pytest.mark.parametrize("fmt", list(KGRIDS))
def test_lattice_keys_are_upstream_kgrid(fmt):
    """The quantizers' kgrid_2bit_* lists are the codebooks' level indices."""
    source = _vendored("ggml-quants.c")
    if source is None:
        pytest.skip("ggml-quants.c is not available (set GGML_SRC to a ggml src folder)")
    body = re.search(rf"static const uint16_t {KGRIDS[fmt]}\[\d+\] = \{{(.*?)\}};", source.read_text(), re.S)
    assert body, f"{KGRIDS[fmt]} not found in {source}"
    assert [int(v) for v in re.findall(r"\d+", body.group(1))] == _iq2.lattice_keys(fmt).tolist()


@pytest.mark.parametrize("fmt", ["iq2_xxs", "iq2_xs"])
def test_signed_points_are_indexed_by_the_stored_bits(fmt):
    table = _iq2.signed_points(fmt, True)
    grid = _iq2.grid_bytes({"iq2_xxs": ggml_iq2.IQ2XXS_GRID, "iq2_xs": ggml_iq2.IQ2XS_GRID}[fmt])
    n = grid.shape[0]
    rng = np.random.default_rng(0)
    for index, s in zip(rng.integers(0, n, 50), rng.integers(0, 128, 50)):
        signs = ggml_iq2.KSIGNS_IQ2XS[s]
        expected = [int(grid[index, j]) * (-1 if signs >> j & 1 else 1) for j in range(8)]
        assert table[index + n * s].tolist() == expected
        assert (table[index + n * s] < 0).sum() % 2 == 0


def _c_neighbours(points: np.ndarray, key: int, nwant: int) -> list[int]:
    """``iq2xs_init_impl``'s list for one key, transcribed: the odd-integer
    position of the key, the squared distance to every codebook point,
    ``qsort`` on (distance, index), then points while fewer than ``nwant``
    distinct distances have been passed."""
    pos = [2 * (key >> 2 * k & 3) + 1 for k in range(8)]
    dist2 = sorted((sum((2 * int(g[k]) + 1 - pos[k]) ** 2 for k in range(8)), j) for j, g in enumerate(points))
    out, d2, nhave = [], dist2[0][0], 1
    for dist, j in dist2:
        if dist > d2:
            if nhave == nwant:
                break
            d2, nhave = dist, nhave + 1
        out.append(j)
    return out


@pytest.mark.parametrize("fmt", list(KGRIDS))
def test_neighbour_lists_are_iq2xs_init_impl(fmt):
    lat = _iq2.lattice(fmt)
    rng = np.random.default_rng(3)
    off_keys = [u for u in range(1 << 16) if lat.row[u] >= 0]
    assert len(off_keys) + int((lat.index >= 0).sum()) == 3 ** 8  # every key of levels 0..2 is mapped
    assert all(max((u >> 2 * k) & 3 for k in range(8)) <= 2 for u in off_keys)
    for u in [off_keys[0], off_keys[-1]] + rng.choice(off_keys, 40, replace=False).tolist():
        assert _iq2.neighbour_list(lat, u) == _c_neighbours(lat.levels, u, _iq2.NEIGHBOUR_SHELLS[fmt]), (fmt, u)
    on = _iq2.lattice_keys(fmt)
    assert (lat.index[on] == np.arange(on.size)).all()
