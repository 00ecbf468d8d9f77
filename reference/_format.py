"""``BlockFormat``: the layout facts of one format, as data.

Every format module exports ``FORMAT = BlockFormat(...)``. The registry, the
API's argument checks, the code generator's template context, the tests and
the benchmarks all read sizes and fields from here, so a layout is stated
once.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property

import numpy as np

# C type of a field -> (little-endian NumPy dtype, size in bytes)
CTYPES = {
    "u8": ("u1", 1),
    "i8": ("i1", 1),
    "u16": ("<u2", 2),
    "i16": ("<i2", 2),
    "u32": ("<u4", 4),
    "f16": ("<u2", 2),  # IEEE binary16 bits (ggml_half)
    "bf16": ("<u2", 2),  # upper half of a binary32 (ggml_bf16_t)
    "f32": ("<f4", 4),
}


@dataclass(frozen=True)
class Field:
    """One field of a block struct: ``ctype name[count]``."""

    name: str
    ctype: str
    count: int
    meaning: str

    @property
    def nbytes(self) -> int:
        return CTYPES[self.ctype][1] * self.count


@dataclass(frozen=True)
class BlockFormat:
    """Layout facts of a block format.

    ``origin`` namespaces ``type_id`` (``"ggml"`` or ``"ik_llama"``).
    ``vec_dot_format`` names the activation format of the dot product (None
    for activation-only formats). ``row_meta_size`` bytes of per-row data
    precede the blocks of each row (0 for every ggml format).
    ``nonfinite_input`` states the policy for NaN/inf input to ``quantize``:
    ``"reject"`` (the format cannot hold them) or ``"store"``.
    """

    name: str
    origin: str
    type_id: int
    block_size: int
    fields: tuple[Field, ...]
    vec_dot_format: str | None
    upstream: str
    row_meta_size: int = 0
    nonfinite_input: str = "reject"
    imatrix: str = "ignored"  # "ignored" | "accepted" | "required"
    aliases: tuple[str, ...] = field(default=())

    @cached_property
    def type_size(self) -> int:
        """Bytes per block."""
        return sum(f.nbytes for f in self.fields)

    @property
    def bits_per_weight(self) -> float:
        return 8.0 * self.type_size / self.block_size

    @cached_property
    def dtype(self) -> np.dtype:
        """The block struct as a NumPy structured dtype (packed, little-endian)."""
        parts = []
        for f in self.fields:
            base = CTYPES[f.ctype][0]
            parts.append((f.name, base) if f.count == 1 else (f.name, base, (f.count,)))
        dt = np.dtype(parts)
        assert dt.itemsize == self.type_size
        return dt

    def offsets(self) -> dict[str, int]:
        """Byte offset of each field within the block."""
        out, at = {}, 0
        for f in self.fields:
            out[f.name] = at
            at += f.nbytes
        return out

    def row_bytes(self, n_per_row: int) -> int:
        """Bytes of one row of ``n_per_row`` elements (Python int: no overflow)."""
        return self.row_meta_size + (int(n_per_row) // self.block_size) * self.type_size

    def blocks(self, q: np.ndarray) -> np.ndarray:
        """View uint8 rows ``(nrows, row_bytes)`` as structured blocks ``(nrows, nblocks)``."""
        q = np.ascontiguousarray(q, dtype=np.uint8)
        body = q[:, self.row_meta_size:] if self.row_meta_size else q
        return np.ascontiguousarray(body).view(self.dtype)

    def empty_blocks(self, nrows: int, nblocks: int) -> np.ndarray:
        return np.zeros((nrows, nblocks), dtype=self.dtype)

    def to_bytes(self, blocks: np.ndarray) -> np.ndarray:
        """Structured blocks ``(nrows, nblocks)`` back to uint8 rows."""
        return np.ascontiguousarray(blocks).view(np.uint8).reshape(blocks.shape[0], -1)


@dataclass(frozen=True)
class Invalid:
    """One block that ``validate`` rejects: where, which field, its bits."""

    row: int
    block: int
    field: str
    bits: int
    reason: str

    def __str__(self) -> str:
        return f"row {self.row} block {self.block}: {self.field} = 0x{self.bits:x} ({self.reason})"


def nonfinite_f16(blocks: np.ndarray, *names: str) -> list[Invalid]:
    """``ggml_validate_row_data`` for fp16 scale fields: inf or NaN is invalid."""
    found = []
    for name in names:
        bits = blocks[name]
        bad = (bits & 0x7C00) == 0x7C00
        for row, block in zip(*np.nonzero(bad)):
            b = int(bits[row, block])
            found.append(Invalid(int(row), int(block), name, b, "NaN" if b & 0x3FF else "inf"))
    found.sort(key=lambda v: (v.row, v.block))
    return found


def nonfinite_f32(blocks: np.ndarray, *names: str) -> list[Invalid]:
    """``ggml_validate_row_data`` for float32 scale fields (Q8_K's ``d``):
    inf or NaN is invalid."""
    found = []
    for name in names:
        bits = np.ascontiguousarray(blocks[name]).view(np.uint32)
        bad = (bits & 0x7F800000) == 0x7F800000
        for row, block in zip(*np.nonzero(bad)):
            b = int(bits[row, block])
            found.append(Invalid(int(row), int(block), name, b, "NaN" if b & 0x7FFFFF else "inf"))
    found.sort(key=lambda v: (v.row, v.block))
    return found
