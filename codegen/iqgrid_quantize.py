"""Facts of the grid IQ quantizers (codegen/templates/iqgrid_quantize.c.j2
for IQ3, codegen/templates/iq2grid_quantize.c.j2 for IQ2).

The quantizers search a lattice: every group of 4 (IQ3) or 8 (IQ2)
elements is rounded to lattice levels; a group whose levels are not a grid
point takes the best of the grid points listed as its neighbours. The map
from lattice keys to grid indices and the neighbour lists are the spec's
own tables (``reference/_iq3.py lattice_tables``, ``reference/_iq2.py
lattice``), written once per format into
``generated/iqgrid/<fmt>_lattice.h`` (shared by the kernels of every ISA:
the lists are large) as static const C arrays.
"""

from __future__ import annotations

import importlib
import sys

import numpy as np

from codegen.model import ROOT

TEMPLATES = ("iqgrid_quantize.c.j2", "iq2grid_quantize.c.j2")
LATTICE_DIR = "generated/iqgrid"


def _ref(name: str):
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    return importlib.import_module(f"reference.{name}")


def _c_float(v) -> str:
    return repr(float(np.float32(v))) + "f"


def _c_array(ctype: str, name: str, values, per_line: int = 24) -> str:
    values = [int(v) for v in values]
    lines = [", ".join(str(v) for v in values[i:i + per_line]) for i in range(0, len(values), per_line)]
    return f"static const {ctype} {name}[{len(values)}] = {{\n    " + ",\n    ".join(lines) + "\n};\n"


# ------------------------------------------------------------------ IQ3

def _iq3_lattice(fmt: str):
    mod = _ref(fmt)
    iq3 = _ref("_iq3")
    grid_size = {"iq3_s": 512, "iq3_xxs": 256}[fmt]
    return mod, iq3, iq3.lattice_tables(grid_size), grid_size


def iq3_lattice_header(fmt: str) -> str:
    """KMAP (key -> grid index or -1, padded by one entry for 4-byte gathers)
    and, per off-grid key u, its neighbours NB_LIST[NB_START[u] ..] (NB_COUNT[u]
    of them, in the spec's order) given by their own keys: the grid index is
    KMAP[key], the levels are the key's 3-bit fields (NB_LIST is padded by 8
    entries for 8-wide loads)."""
    _, iq3, t, grid_size = _iq3_lattice(fmt)
    grid_keys = (t.levels.astype(np.int64) << (3 * np.arange(4))).sum(axis=1)
    if not (t.map[grid_keys] == np.arange(grid_size)).all():
        raise ValueError(f"{fmt}: the lattice map does not invert the grid keys")
    kmap = np.concatenate([t.map, [0]])
    starts, flat = np.zeros(iq3.KMAP_SIZE, dtype=np.int64), []
    for u in range(iq3.KMAP_SIZE):
        starts[u] = len(flat)
        flat.extend(grid_keys[t.neighbours[u, :t.count[u]]].tolist())
    flat += [0] * 8
    if len(flat) >= 1 << 16:
        raise ValueError(f"{fmt}: neighbour list too long for uint16 starts")
    return (f"/* {fmt}: the quantizer's lattice (reference/_iq3.py lattice_tables({grid_size})) */\n"
            + _c_array("int16_t", "KMAP", kmap)
            + _c_array("uint16_t", "NB_START", starts)
            + _c_array("uint8_t", "NB_COUNT", t.count)
            + _c_array("uint16_t", "NB_LIST", flat))


def iq3_context(fmt: str, spec, extra: dict) -> dict:
    mod, iq3, t, grid_size = _iq3_lattice(fmt)
    trials = extra["trials"]
    ctx = dict(lattice="iq3", grid_size=grid_size, trial_min=trials[0], ntrial=trials[1] - trials[0] + 1,
               fudge=_c_float(mod.D_FUDGE), lattice_header=f"../iqgrid/{fmt}_lattice.h",
               max_width=int(t.count.max()))
    ctx["trial_vectors"] = -(-ctx["ntrial"] // 8)
    ctx["zero_test"] = ("vmax < " + _c_float(mod.GROUP_MAX_EPS)) if hasattr(mod, "GROUP_MAX_EPS") else "!vmax"
    return ctx


# ------------------------------------------------------------------ IQ2

IQ2_KEYS = 3 ** 8  # groups of 8 levels 0..2, keyed in base 3: key3 = sum_j l_j * 3**j


def _iq2_key3_levels() -> np.ndarray:
    """(6561, 8): the levels of every base-3 key."""
    return (np.arange(IQ2_KEYS)[:, None] // 3 ** np.arange(8)) % 3


def iq2_permute_indices(levels: np.ndarray) -> np.ndarray:
    """Levels ``(..., 8)`` -> u32 words holding element j's level at bits
    3j..3j+1 (bit 3j+2 is set for j = 4..7 and never read): ``(word >> 3j)
    & 3`` is the level, and the in-lane permutes of ``qs_iq2_search_avx2.h``
    read exactly those two bits of ``word >> 3j``."""
    fields = levels.astype(np.int64) + 4 * (np.arange(8) >= 4)
    return (fields << (3 * np.arange(8))).sum(axis=-1)


def iq2_lattice_header(fmt: str) -> str:
    """KMAP3 (base-3 key -> codebook index, or -1 off the codebook; padded by
    one entry for 4-byte gathers) and, per off-codebook key, its neighbours
    NB_LEVELS[NB_START[key3] ..] (NB_COUNT[key3] of them, in the spec's order)
    as permute-index words (iq2_permute_indices). Each list is padded to a
    multiple of 8 with copies of its first neighbour, which never change the
    first least distance, so 8-wide loads need no mask."""
    iq2 = _ref("_iq2")
    lat = iq2.lattice(fmt)
    levels = _iq2_key3_levels()
    keys2 = (levels << (2 * np.arange(8))).sum(axis=1)
    kmap3 = lat.index[keys2]
    grid_key3 = (lat.levels.astype(np.int64) * 3 ** np.arange(8)).sum(axis=1)
    if not (kmap3[grid_key3] == np.arange(lat.levels.shape[0])).all():
        raise ValueError(f"{fmt}: the base-3 lattice map does not invert the codebook keys")
    words = iq2_permute_indices(lat.levels)
    starts, counts, flat = np.zeros(IQ2_KEYS, dtype=np.int64), np.zeros(IQ2_KEYS, dtype=np.int64), []
    for u in range(IQ2_KEYS):
        starts[u] = len(flat)
        if kmap3[u] < 0:
            neighbours = iq2.neighbour_list(lat, int(keys2[u]))
            if not neighbours:
                raise ValueError(f"{fmt}: off-codebook key {u} has no neighbours")
            counts[u] = len(neighbours)
            flat.extend(words[neighbours].tolist() + [int(words[neighbours[0]])] * (-len(neighbours) % 8))
    return (f"/* {fmt}: the quantizer's lattice (reference/_iq2.py lattice({fmt!r})), keyed in base 3 */\n"
            + _c_array("int16_t", "KMAP3", np.concatenate([kmap3, [0]]))
            + _c_array("uint32_t", "NB_START", starts)
            + _c_array("uint16_t", "NB_COUNT", counts)
            + _c_array("uint32_t", "NB_LEVELS", flat, per_line=12))


def iq2_context(fmt: str, spec, extra: dict) -> dict:
    iq2 = _ref("_iq2")
    lat = iq2.lattice(fmt)
    trial_min, trial_max = extra["trials"]
    ctx = dict(lattice="iq2", grid_size=int(lat.levels.shape[0]), trial_min=trial_min,
               ntrial=trial_max - trial_min + 1, lattice_header=f"../iqgrid/{fmt}_lattice.h",
               max_width=int(np.diff(lat.starts).max()),
               group_max_eps=_c_float(iq2.GROUP_MAX_EPS_IQ2_S if fmt == "iq2_s" else iq2.GROUP_MAX_EPS),
               block={"iq2_xxs": 32}.get(fmt, 16), shells=iq2.NEIGHBOUR_SHELLS[fmt])
    ctx["trial_vectors"] = -(-ctx["ntrial"] // 8)
    return ctx


# ------------------------------------------------------------------ registry hooks

_CONTEXTS = {"iq3": iq3_context, "iq2": iq2_context}
_HEADERS = {"iq3": iq3_lattice_header, "iq2": iq2_lattice_header}


def context(fmt: str, spec, extra: dict) -> dict:
    return _CONTEXTS[extra["iqgrid_search"]](fmt, spec, extra)


def _banner(fmt: str) -> str:
    return ("/* Generated by `python -m codegen` from codegen/iqgrid_quantize.py. DO NOT EDIT.\n"
            f" * Spec: reference/{fmt}.py */\n")


def lattice_headers() -> dict[str, str]:
    """generated/iqgrid/<fmt>_lattice.h of every format quantized by the template."""
    from codegen.kernels import FORMATS
    out = {}
    for fmt, template, _, extra in FORMATS:
        if template in TEMPLATES:
            header = _HEADERS[extra["iqgrid_search"]](fmt)
            out[f"{LATTICE_DIR}/{fmt}_lattice.h"] = _banner(fmt) + header
    return out
