"""The format registry: every spec module under a lowercase name, and
lookups by name (case-insensitive) or by ``(origin, type_id)``."""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from functools import cache
from types import ModuleType

from quantspec.errors import UnknownFormatError
from quantspec.reference import MODULES, BlockFormat


@dataclass(frozen=True)
class FormatInfo:
    """What ``qs.format_info`` returns."""

    name: str
    origin: str
    type_id: int
    block_size: int
    type_size: int
    row_meta_size: int
    vec_dot_format: str | None
    bits_per_weight: float
    imatrix: str
    nonfinite_input: str

    def row_bytes(self, n_per_row: int) -> int:
        return self.row_meta_size + (int(n_per_row) // self.block_size) * self.type_size


@cache
def _modules() -> dict[str, ModuleType]:
    return {name: importlib.import_module(f"quantspec.reference.{name}") for name in MODULES}


@cache
def _by_id() -> dict[tuple[str, int], str]:
    return {(m.FORMAT.origin, m.FORMAT.type_id): name for name, m in _modules().items()}


def formats() -> list[str]:
    """Every format name, in registry order."""
    return list(_modules())


def resolve(fmt) -> str:
    """A format name from a name (any case) or an ``(origin, type_id)`` pair."""
    if fmt in _modules():  # the common case: already a registry name
        return fmt
    if isinstance(fmt, str):
        name = fmt.lower()
        if name in _modules():
            return name
        raise UnknownFormatError(f"unknown format {fmt!r}: expected one of {', '.join(formats())}")
    if isinstance(fmt, tuple) and len(fmt) == 2:
        origin, type_id = fmt
        try:
            return _by_id()[(str(origin).lower(), int(type_id))]
        except (KeyError, TypeError, ValueError):
            known = ", ".join(f"({o!r}, {i})" for o, i in sorted(_by_id()))
            raise UnknownFormatError(f"unknown format id {fmt!r}: expected one of {known}") from None
    raise UnknownFormatError(
        f"unknown format {fmt!r}: expected a name such as 'q4_0' or an (origin, type_id) pair such as ('ggml', 2)")


def module(fmt) -> ModuleType:
    """The spec module of a format."""
    return _modules()[resolve(fmt)]


def spec(fmt) -> BlockFormat:
    return module(fmt).FORMAT


def format_info(fmt) -> FormatInfo:
    f = spec(fmt)
    return FormatInfo(f.name, f.origin, f.type_id, f.block_size, f.type_size, f.row_meta_size,
                      f.vec_dot_format, f.bits_per_weight, f.imatrix, f.nonfinite_input)
