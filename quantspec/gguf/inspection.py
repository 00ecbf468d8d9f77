"""What a GGUF file holds: metadata, tensors, types, bits per weight, and the
validity of every block's scales (``qs.validate``, the checks of ggml's
``ggml_validate_row_data``), with the first bad block of each tensor named."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from quantspec.gguf import types as gt
from quantspec.gguf.io import GGUFFile, open_gguf

#: encoded bytes validated at a time
VALIDATE_BYTES = 64 * 1024 * 1024


@dataclass
class TensorCheck:
    index: int
    name: str
    type: str
    shape: tuple[int, ...]
    offset: int
    nbytes: int
    bits_per_weight: float
    status: str  # "ok", "invalid", "not checked", "skipped"
    bad_blocks: int = 0
    first_bad: str = ""

    def as_dict(self) -> dict:
        return {"index": self.index, "name": self.name, "type": self.type, "shape": list(self.shape),
                "offset": self.offset, "nbytes": self.nbytes, "bits_per_weight": self.bits_per_weight,
                "status": self.status, "bad_blocks": self.bad_blocks, "first_bad": self.first_bad}


@dataclass
class Inspection:
    path: str
    version: int
    alignment: int
    data_offset: int
    file_size: int
    architecture: str | None
    file_type: str | None
    quantization_version: int | None
    metadata: dict[str, str] = field(default_factory=dict)
    tensors: list[TensorCheck] = field(default_factory=list)

    @property
    def n_elements(self) -> int:
        return sum(math.prod(t.shape) for t in self.tensors)

    @property
    def tensor_bytes(self) -> int:
        return sum(t.nbytes for t in self.tensors)

    @property
    def invalid(self) -> list[TensorCheck]:
        return [t for t in self.tensors if t.status == "invalid"]

    def as_dict(self) -> dict:
        return {"path": self.path, "version": self.version, "alignment": self.alignment,
                "data_offset": self.data_offset, "file_size": self.file_size, "architecture": self.architecture,
                "file_type": self.file_type, "quantization_version": self.quantization_version,
                "n_elements": self.n_elements, "tensor_bytes": self.tensor_bytes,
                "bits_per_weight": 8 * self.tensor_bytes / max(self.n_elements, 1),
                "metadata": self.metadata, "tensors": [t.as_dict() for t in self.tensors]}

    def render(self, show_metadata: bool = False) -> str:
        lines = [f"{self.path}: GGUF v{self.version}, {len(self.tensors)} tensors, {len(self.metadata)} metadata keys, "
                 f"alignment {self.alignment}, data at byte {self.data_offset}, {self.file_size} bytes"]
        qv = "?" if self.quantization_version is None else self.quantization_version
        lines.append(f"  architecture {self.architecture or '?'}, file type {self.file_type or '?'}, "
                     f"quantization version {qv}")
        n = max(self.n_elements, 1)
        lines.append(f"  {self.n_elements} weights in {self.tensor_bytes / 2**20:.2f} MiB: "
                     f"{8 * self.tensor_bytes / n:.3f} bits per weight")
        by_type: dict[str, list[int]] = {}
        for t in self.tensors:
            agg = by_type.setdefault(t.type, [0, 0])
            agg[0] += 1
            agg[1] += t.nbytes
        lines.append("  types: " + ", ".join(f"{k} x{v[0]} ({v[1] / 2**20:.2f} MiB)" for k, v in by_type.items()))
        if show_metadata:
            lines.append("")
            width = max((len(k) for k in self.metadata), default=0)
            lines += [f"  {k:<{width}}  {v}" for k, v in self.metadata.items()]
        lines.append("")
        nw = max((len(t.name) for t in self.tensors), default=4)
        head = f"{'#':>5}  {'tensor':<{nw}}  {'type':<8} {'shape':<22} {'bytes':>12} {'bpw':>7}  check"
        lines += [head, "-" * len(head)]
        for t in self.tensors:
            check = t.status if t.status != "invalid" else f"INVALID: {t.bad_blocks} bad blocks, first {t.first_bad}"
            if t.status == "not checked":
                check = f"not checked (quantspec has no spec for {t.type})"
            shape = "x".join(map(str, t.shape))
            lines.append(f"{t.index:>5}  {t.name:<{nw}}  {t.type:<8} {shape:<22} {t.nbytes:>12} "
                         f"{t.bits_per_weight:>7.4f}  {check}")
        bad = self.invalid
        lines.append("")
        lines.append(f"{len(bad)} tensors with invalid blocks" if bad else "every checked block is valid")
        return "\n".join(lines)


def _check(f: GGUFFile, t, validate: bool) -> TensorCheck:
    import quantspec as qs

    tc = TensorCheck(t.index, t.name, t.type_name, t.shape, t.offset, t.nbytes, t.bits_per_weight, "ok")
    fmt = t.format
    if fmt is None:
        tc.status = "not checked"
        return tc
    if not validate:
        tc.status = "skipped"
        return tc
    if t.nrows == 0 or t.row_bytes == 0:
        return tc
    slab = max(1, VALIDATE_BYTES // t.row_bytes)
    for r0 in range(0, t.nrows, slab):
        r1 = min(t.nrows, r0 + slab)
        bad = qs.validate(fmt, f.rows(t, r0, r1))
        if bad:
            if not tc.bad_blocks:
                b = bad[0]
                tc.first_bad = f"row {r0 + b.row} block {b.block}: {b.field} = 0x{b.bits:x} ({b.reason})"
            tc.bad_blocks += len(bad)
            tc.status = "invalid"
    return tc


def inspect_file(path, validate: bool = True, progress: bool = False) -> Inspection:
    """Read and check ``path``; with ``validate`` every block's scales too."""
    from tqdm import tqdm

    with open_gguf(path) as f:
        ft = f.get("general.file_type")
        try:
            ft_name = gt.file_type(int(ft)).name if ft is not None else None
        except (KeyError, TypeError, ValueError):
            ft_name = f"unknown ({ft})"
        qv = f.get("general.quantization_version")
        arch = f.get("general.architecture")
        result = Inspection(str(path), f.version, f.alignment, f.data_offset, f.file_size,
                            arch if isinstance(arch, str) else None, ft_name,
                            qv if isinstance(qv, int) else None,
                            {k: kv.describe() for k, kv in f.kv.items()})
        for t in tqdm(f.tensors, desc="validate", unit="tensor", disable=not progress, leave=False):
            result.tensors.append(_check(f, t, validate))
    return result
