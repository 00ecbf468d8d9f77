"""Exceptions for bad input. Each names the format, what was expected and
what was given; each is a ``ValueError`` or ``TypeError`` so that generic
callers can catch them the usual way."""

from __future__ import annotations


class QuantspecError(Exception):
    """Base of every quantspec error."""


class UnknownFormatError(QuantspecError, ValueError):
    """A format name or (origin, type id) that the registry does not have."""


class DtypeError(QuantspecError, TypeError):
    """An array of the wrong dtype."""


class ShapeError(QuantspecError, ValueError):
    """Wrong number of dimensions, a row length that is not a multiple of the
    block size, or a byte row whose length does not match the format."""


class OutArrayError(QuantspecError, ValueError):
    """An ``out=`` array of the wrong shape, dtype or memory layout."""


class ImatrixError(QuantspecError, ValueError):
    """An importance matrix of the wrong length, or with negative or
    non-finite weights."""


class NonFiniteInputError(QuantspecError, ValueError):
    """NaN or inf input to a format that cannot hold it."""


class SizeOverflowError(QuantspecError, ValueError):
    """Sizes whose product does not fit the platform's address space."""


class UnsupportedOperationError(QuantspecError, ValueError):
    """An operation the format does not have (e.g. a dot product of an
    activation-only format)."""


class IsaError(QuantspecError, ValueError):
    """An implementation name that does not exist or that this CPU lacks."""


class GGUFError(QuantspecError, ValueError):
    """A GGUF file that is truncated, corrupt or not what an operation needs
    (bad magic or version, a tensor outside the data section, an unknown type
    id, ...). The message names the file, and where they apply the tensor and
    the field; ``path``, ``tensor`` and ``field`` carry them for programs."""

    def __init__(self, message: str, *, path=None, tensor: str | None = None, field: str | None = None):
        super().__init__(message)
        self.path = None if path is None else str(path)
        self.tensor = tensor
        self.field = field


def describe(x) -> str:
    """A short description of what was given, for error messages."""
    shape = getattr(x, "shape", None)
    dtype = getattr(x, "dtype", None)
    if shape is not None and dtype is not None:
        return f"{type(x).__name__} of dtype {dtype} and shape {tuple(shape)}"
    return f"{type(x).__name__} {x!r}"[:120]
