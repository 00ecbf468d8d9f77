"""Importance matrices as llama.cpp's ``llama-imatrix`` writes them, turned
into the per-column weights ``llama-quantize`` hands to the quantizers.

Two file formats (llama.cpp ``common/imatrix-loader.cpp`` and
``tools/quantize/quantize.cpp`` ``load_imatrix`` at 0c1e5709):

GGUF (current). Per weight tensor ``W``: an F32 tensor ``W.in_sum2`` of
``ne0 * n_expert`` sums of squared activations, and an F32 tensor
``W.counts`` of ``n_expert`` token counts. Keys ``imatrix.datasets``
(string array), ``imatrix.chunk_count`` and ``imatrix.chunk_size`` (u32)
must be there. The weights are ``sums / count`` per expert in float32, where
count is the stored float rounded with ``lround`` and converted back to
float; an expert with count <= 0 gets weights 1.

Legacy ``.dat``. Little-endian: ``int32 n_entries``; per entry ``int32
name_len, name bytes, int32 ncall, int32 nval, float32[nval]`` (the values
are already ``sums / count * ncall``); then optionally ``int32
chunk_count, int32 len, dataset bytes``. The weights are ``value / ncall``
in float32 (``value`` unchanged when ncall <= 0). A name ends at its first
NUL byte, as a C string.

The weights of a 3-D (expert) tensor are ``ne0`` per expert, expert after
expert; ``llama_model_quantize`` gives the rows of expert ``e`` the slice
``e*ne0 .. (e+1)*ne0``.
"""

from __future__ import annotations

import os
import struct
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from quantspec.errors import GGUFError

F32 = np.float32


@dataclass
class Imatrix:
    """Per-tensor column weights (float32, ``ne0 * n_expert`` each), with the
    facts ``llama-quantize`` records in the quantized file."""

    path: str
    entries: dict[str, np.ndarray]
    datasets: list[str] = field(default_factory=list)
    chunk_count: int = 0
    chunk_size: int = 0
    is_legacy: bool = False

    def weights_for(self, name: str) -> np.ndarray | None:
        return self.entries.get(name)


def _lround_then_float(counts: np.ndarray) -> np.ndarray:
    """``(float) std::lround(c)``: round half away from zero to an integer,
    then back to float32. A non-finite count becomes what x86 gives for it,
    INT64_MIN, so it reads as "no tokens" (<= 0)."""
    c = counts.astype(np.float64)
    finite = np.isfinite(c)
    rounded = np.where(np.abs(c) < 2.0**52, np.trunc(c + np.copysign(0.5, c)), c)
    return np.where(finite, rounded, -(2.0**63)).astype(F32)


def _check_finite(path, name: str, w: np.ndarray) -> None:
    bad = ~np.isfinite(w)
    if bad.any():
        i = int(np.argmax(bad))
        raise GGUFError(f"{path}: importance matrix entry {name!r} has a non-finite weight at index {i} "
                        f"({float(w[i])!r})", path=path, tensor=name, field="weights")


def _load_gguf(path: Path) -> Imatrix:
    from quantspec.gguf.io import open_gguf

    with open_gguf(path) as f:
        if not f.tensors:
            raise GGUFError(f"{path}: an imatrix GGUF file without tensors", path=path)
        missing = [k for k in ("imatrix.datasets", "imatrix.chunk_count", "imatrix.chunk_size") if k not in f.kv]
        if missing:
            raise GGUFError(f"{path}: missing imatrix metadata {', '.join(missing)} (llama-quantize refuses such "
                            f"files too)", path=path, field=missing[0])
        datasets_kv = f.kv["imatrix.datasets"]
        datasets = datasets_kv.py if datasets_kv.type == 9 and datasets_kv.sub_type == 8 else []
        chunk_count = int(f.get("imatrix.chunk_count") or 0)
        chunk_size = int(f.get("imatrix.chunk_size") or 0)
        pairs: dict[str, list] = {}
        for t in f.tensors:
            for suffix, slot in ((".in_sum2", 0), (".counts", 1)):
                if t.name.endswith(suffix) and t.name != suffix:
                    pairs.setdefault(t.name[:-len(suffix)], [None, None])[slot] = t
        entries = {}
        for name in sorted(pairs):
            sums_t, counts_t = pairs[name]
            if sums_t is None or counts_t is None:
                raise GGUFError(f"{path}: {name!r} has {'no .in_sum2' if sums_t is None else 'no .counts'} tensor "
                                f"to go with its {'.counts' if sums_t is None else '.in_sum2'}", path=path, tensor=name)
            for t in (sums_t, counts_t):
                if t.type_name != "f32":
                    raise GGUFError(f"{path}: {t.name} must be f32, is {t.type_name}", path=path, tensor=t.name,
                                    field="type")
            sums = np.frombuffer(f.raw(sums_t).tobytes(), dtype="<f4").astype(F32)
            counts = _lround_then_float(np.frombuffer(f.raw(counts_t).tobytes(), dtype="<f4"))
            ncounts = counts.size
            if ncounts == 0 or sums.size % ncounts:
                raise GGUFError(f"{path}: {name}: {sums.size} sums cannot be split among {ncounts} counts",
                                path=path, tensor=name, field="counts")
            per = sums.reshape(ncounts, sums.size // ncounts)
            with np.errstate(divide="ignore", invalid="ignore"):
                w = np.where((counts > 0)[:, None], per / counts[:, None], F32(1)).astype(F32).reshape(-1)
            _check_finite(path, name, w)
            entries[name] = w
    return Imatrix(str(path), entries, datasets, chunk_count, chunk_size, is_legacy=False)


class _Cursor:
    def __init__(self, path: Path, data: bytes):
        self.path, self.data, self.pos = path, data, 0

    def take(self, n: int, what: str) -> bytes:
        if n < 0 or self.pos + n > len(self.data):
            raise GGUFError(f"{self.path}: legacy imatrix truncated: {what} needs {n} bytes at offset {self.pos}, "
                            f"the file has {len(self.data)}", path=self.path, field=what)
        out = self.data[self.pos:self.pos + n]
        self.pos += n
        return out

    def i32(self, what: str) -> int:
        return struct.unpack("<i", self.take(4, what))[0]


def _load_legacy(path: Path) -> Imatrix:
    data = path.read_bytes()
    cur = _Cursor(path, data)
    n_entries = cur.i32("n_entries")
    if n_entries < 1:
        raise GGUFError(f"{path}: legacy imatrix with {n_entries} entries (no data)", path=path, field="n_entries")
    entries: dict[str, np.ndarray] = {}
    for i in range(n_entries):
        length = cur.i32(f"entry {i} name length")
        if length < 0:
            raise GGUFError(f"{path}: legacy imatrix entry {i} has name length {length}", path=path,
                            field="name length")
        name = cur.take(length, f"entry {i} name").split(b"\0", 1)[0].decode("utf-8", errors="replace")
        ncall = cur.i32(f"entry {name!r} ncall")
        nval = cur.i32(f"entry {name!r} nval")
        if nval < 1:
            raise GGUFError(f"{path}: legacy imatrix entry {name!r} has {nval} values", path=path, tensor=name,
                            field="nval")
        values = np.frombuffer(cur.take(4 * nval, f"entry {name!r} values"), dtype="<f4").astype(F32)
        w = values / F32(ncall) if ncall > 0 else values
        _check_finite(path, name, w)
        entries[name] = w.astype(F32)
    chunk_count, datasets = 0, []
    if cur.pos < len(data):  # the trailer is optional, and so is each part of it
        if cur.pos + 4 <= len(data):
            chunk_count = cur.i32("chunk_count")
            if cur.pos + 4 <= len(data):
                n = cur.i32("dataset length")
                if 0 < n <= len(data) - cur.pos:
                    datasets.append(cur.take(n, "dataset").split(b"\0", 1)[0].decode("utf-8", errors="replace"))
    return Imatrix(str(path), entries, datasets, chunk_count, 0, is_legacy=True)


def load_imatrix(path) -> Imatrix:
    """Read an importance matrix file (GGUF or legacy ``.dat``, told apart by
    the GGUF magic) into per-tensor float32 column weights."""
    given = os.fspath(path)  # recorded as given (quantize.imatrix.file), as llama-quantize does
    path = Path(path)
    try:
        with open(path, "rb") as fh:
            magic = fh.read(4)
    except OSError as exc:
        raise GGUFError(f"{path}: cannot open the importance matrix: {exc.strerror or exc}", path=path) from None
    im = _load_gguf(path) if magic == b"GGUF" else _load_legacy(path)
    im.path = given
    return im
