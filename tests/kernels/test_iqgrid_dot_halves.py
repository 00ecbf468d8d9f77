"""IQ2_XXS and IQ3_XXS: the vector dot product adds the int16 pair sums of a
run's two 16-element halves before one madd with the block scale, which is
exact while 2 * (2 * max grid value * 127) fits int16 (21844 for IQ2_XXS,
31496 for IQ3_XXS). Here every group is the grid point with the largest sum,
every sign positive, every scale code 15, every quant +-127: those sums at
their largest, against the spec's bits.
"""

from __future__ import annotations

import numpy as np
import pytest

from reference.tables.ggml_iq2 import IQ2XXS_GRID
from reference.tables.ggml_iq3 import IQ3XXS_GRID
from tests.kernels.test_iqgrid_dot_paths import Q8K_QS, _activation, _same_as_spec, kernel_params

PARAMS = [p for p in kernel_params("vec_dot") if p.values[0] in ("iq2_xxs", "iq3_xxs")]
RUN_WORD = (15 << 28)  # sign fields 0 (all positive), scale code 15


def _largest_point(grid: np.ndarray) -> int:
    values = grid.astype(f"<u{grid.dtype.itemsize}").view(np.uint8).reshape(len(grid), -1)
    return int(values.astype(np.int32).sum(axis=1).argmax())


def _superblock(fmt: str) -> bytes:
    d = np.float16(1.0).tobytes()
    if fmt == "iq2_xxs":  # per run: 4 grid index bytes, then the u32 of signs and scale
        run = bytes([_largest_point(IQ2XXS_GRID)] * 4) + RUN_WORD.to_bytes(4, "little")
        return d + run * 8
    # iq3_xxs: 64 grid index bytes, then one u32 of signs and scale per run
    return d + bytes([_largest_point(IQ3XXS_GRID)] * 64) + RUN_WORD.to_bytes(4, "little") * 8


@pytest.mark.parametrize("fmt,isa", PARAMS)
@pytest.mark.parametrize("quant", [-127, 127])
@pytest.mark.parametrize("nblocks", [1, 9])
def test_largest_half_sums(fmt, isa, quant, nblocks):
    w = np.frombuffer(_superblock(fmt) * nblocks * 3, np.uint8).reshape(3, -1)
    a = _activation(nblocks, np.random.default_rng(nblocks)).reshape(nblocks, -1)
    a[:, Q8K_QS:Q8K_QS + 256] = np.uint8(quant & 0xFF)
    _same_as_spec(fmt, isa, w, a.reshape(-1))
