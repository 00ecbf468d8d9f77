"""Quantize, requantize and dequantize whole GGUF files.

``quantize_file`` does what llama.cpp's ``llama_model_quantize`` (the
library behind ``llama-quantize``) does, and writes the same file: the same
tensor types (``quantspec.gguf.mix``), the same bytes per tensor (the
formats are quantspec's, bit-exact with ggml), the same tensor order and
alignment, the same metadata (copied in order; ``general.quantization_version``
and ``general.file_type`` moved to the end with their new values; the
``quantize.imatrix.*`` keys of ``llama-quantize`` when an importance matrix
is used). Per tensor, as upstream: a tensor whose type does not change is
copied byte for byte; otherwise its rows are decoded to float32 (exactly, by
the source format's spec) and encoded with the target format, expert by
expert with that expert's slice of the importance matrix; every encoded
slab is validated (``qs.validate``, ``ggml_validate_row_data``).

Where quantspec differs from llama.cpp, on purpose:

* everything is checked before the first byte is written (requantization
  allowed, formats available, importance-matrix sizes), and the output
  appears atomically: a temporary file renamed at the end, removed on any
  error or Ctrl-C;
* a file with ``general.alignment`` other than 32 keeps its alignment
  (llama.cpp copies the key but pads to 32, which makes a file that misreads);
* a tensor type is also accepted as TYPE (``q4_0`` as opposed to the mix
  ``Q4_0``): every quantizable tensor gets that type, as with ``--pure``.

Memory: the input is memory-mapped and processed in slabs of at most
``SLAB_ELEMENTS`` float32 values, so the peak is about one slab (64 MiB of
floats plus its encoded bytes), whatever the size of the model.
"""

from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass, field
from typing import Callable, Iterable, Iterator, Sequence

import numpy as np

from quantspec.errors import GGUFError, QuantspecError
from quantspec.gguf import types as gt
from quantspec.gguf.imatrix import Imatrix, load_imatrix
from quantspec.gguf.io import (
    KV,
    GGUFFile,
    GGUFOutput,
    OutputTensor,
    Tensor,
    atomic_output,
    copy_kvs,
    open_gguf,
    string,
    uint32,
)
from quantspec.gguf.mix import MixParams, ModelInfo, TensorChoice, choose_types, llama_order

#: float32 values decoded at a time (64 MiB): bounds the memory of a conversion
SLAB_ELEMENTS = 16 * 1024 * 1024
#: bytes copied at a time for tensors that keep their type
COPY_BYTES = 64 * 1024 * 1024

KEY_QUANTIZATION_VERSION = "general.quantization_version"
KEY_FILE_TYPE = "general.file_type"
KEY_ALIGNMENT = "general.alignment"
SPLIT_KEYS = ("split.no", "split.count", "split.tensors.count")
KEY_IMATRIX_FILE = "quantize.imatrix.file"
KEY_IMATRIX_DATASET = "quantize.imatrix.dataset"
KEY_IMATRIX_N_ENTRIES = "quantize.imatrix.entries_count"
KEY_IMATRIX_N_CHUNKS = "quantize.imatrix.chunks_count"


@dataclass(frozen=True)
class Target:
    """What the TYPE argument means: a llama.cpp file type (a mix) or one
    tensor type for every quantizable tensor."""

    text: str
    ftype: gt.FileType | None
    default_type: str
    single_type: bool

    def describe(self) -> str:
        if self.single_type:
            return f"tensor type {self.default_type} for every quantizable tensor"
        return f"file type {self.ftype.name} (llama.cpp mix, default tensor type {self.default_type})"


def parse_target(text: str) -> Target:
    """``Q4_K_M``, ``Q8_0``, ``15`` (llama-quantize's names and ids, any case
    where not ambiguous) or ``q4_0``, ``q6_K`` (ggml tensor types). The
    names both can mean are told apart by case, as llama.cpp writes them:
    upper case (``Q4_0``, ``F16``) is the file type, lower case the tensor type."""
    raw = text.strip()
    if raw.isdigit():
        try:
            return _mix(raw, gt.file_type(int(raw)))
        except KeyError:
            raise GGUFError(f"unknown llama.cpp file type id {raw}", field="type") from None
    if raw in gt.FILE_TYPES or raw in gt.FILE_TYPE_ALIASES:
        return _mix(raw, gt.file_type(raw))
    try:
        t = gt.ggml_type(raw)
    except KeyError:
        t = None
    if t is not None:
        if t.name in gt.ACTIVATION_ONLY or not (t.is_quantized or t.name in ("f32", "f16", "bf16")):
            raise GGUFError(f"{raw}: tensors are not stored as {t.name}; expected a weight type such as "
                            f"{', '.join(gt.storable_formats())}", field="type")
        return Target(raw, gt.file_type_for_tensor_type(t.name), t.name, single_type=True)
    try:
        return _mix(raw, gt.file_type(raw))
    except KeyError:
        pass
    raise GGUFError(f"unknown type {text!r}: expected a llama.cpp file type ({', '.join(gt.FILE_TYPES)}) or a "
                    f"tensor type ({', '.join(gt.storable_formats())})", field="type")


def _mix(text: str, ftype: gt.FileType) -> Target:
    if ftype.default_type is None:
        raise GGUFError(f"{text}: llama.cpp has no default tensor type for file type {ftype.name} "
                        f"(llama_model_quantize refuses it)", field="type")
    return Target(text, ftype, ftype.default_type, single_type=False)


def parse_tensor_type_option(text: str) -> tuple[str, str]:
    """``PATTERN=TYPE`` (``--tensor-type``): the pattern as given, the type a
    ggml type name in any case."""
    pattern, sep, type_text = text.partition("=")
    if not sep or not pattern or not type_text:
        raise GGUFError(f"--tensor-type {text!r}: expected PATTERN=TYPE, e.g. attn_v=q8_0", field="tensor_type")
    return pattern, _tensor_type(type_text, "--tensor-type")


def _tensor_type(text: str, option: str) -> str:
    try:
        return gt.ggml_type(text).name
    except KeyError:
        raise GGUFError(f"{option}: unknown tensor type {text!r}; ggml's types are {', '.join(gt.type_names())}",
                        field=option) from None


@dataclass
class TensorResult:
    """What happened to one tensor."""

    name: str
    shape: tuple[int, ...]
    source_type: str
    target_type: str
    reason: str
    bytes_in: int
    bytes_out: int
    imatrix: bool = False

    @property
    def converted(self) -> bool:
        return self.source_type != self.target_type


@dataclass
class Report:
    """The result of ``quantize_file`` / ``dequantize_file``."""

    src: str
    dst: str
    target: str
    tensors: list[TensorResult] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def bytes_in(self) -> int:
        return sum(t.bytes_in for t in self.tensors)

    @property
    def bytes_out(self) -> int:
        return sum(t.bytes_out for t in self.tensors)

    @property
    def n_elements(self) -> int:
        return sum(math.prod(t.shape) for t in self.tensors)

    def summary(self) -> str:
        n = max(self.n_elements, 1)
        converted = sum(t.converted for t in self.tensors)
        return (f"{self.dst}: {len(self.tensors)} tensors ({converted} converted), "
                f"{self.bytes_in / 2**20:.2f} MiB ({8 * self.bytes_in / n:.2f} bpw) -> "
                f"{self.bytes_out / 2**20:.2f} MiB ({8 * self.bytes_out / n:.2f} bpw) in {self.seconds:.2f} s")


def _threads(threads) -> int:
    if threads is None or threads == 0:
        return os.cpu_count() or 1
    if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
        raise ValueError(f"threads must be a positive integer, got {threads!r}")
    return threads


def _format_for(t: Tensor, what: str) -> str:
    fmt = t.format
    if fmt is None:
        raise GGUFError(f"{t.name}: cannot {what} a {t.type_name} tensor: quantspec has no spec for {t.type_name} "
                        f"(it has {', '.join(gt.storable_formats())})", tensor=t.name, field="type")
    return fmt


def _target_format(name: str, target: str) -> str:
    t = gt.ggml_type(target)
    fmt = gt.quantspec_format(t)
    if fmt is None or fmt in gt.ACTIVATION_ONLY:
        raise GGUFError(f"{name}: the plan puts this tensor in {target}, which quantspec cannot write yet "
                        f"(it has {', '.join(gt.storable_formats())}); choose another type, or force this "
                        f"tensor's type with --tensor-type / --output-tensor-type / --token-embedding-type",
                        tensor=name, field="type")
    return fmt


def _progress(total: int, desc: str, enabled: bool):
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, unit="tensor", disable=not enabled, leave=False, dynamic_ncols=True)


def _copy_chunks(src: GGUFFile, t: Tensor) -> Iterator[np.ndarray]:
    for start in range(0, t.nbytes, COPY_BYTES):
        yield src.raw(t, start, min(t.nbytes, start + COPY_BYTES))


def _convert_chunks(src: GGUFFile, t: Tensor, target_fmt: str, weights: np.ndarray | None,
                    threads: int) -> Iterator[np.ndarray]:
    """The tensor's rows decoded to float32 and encoded in ``target_fmt``, slab
    by slab; with ``weights``, expert ``e`` (rows ``e*ne1 .. (e+1)*ne1``) uses
    ``weights[e*ne0 .. (e+1)*ne0]`` (``llama_tensor_quantize_impl``)."""
    import quantspec as qs

    source_fmt = _format_for(t, "convert")
    n, nrows = t.row_length, t.nrows
    if nrows == 0:
        return
    info = qs.format_info(target_fmt)
    use_weights = weights is not None and info.imatrix != "ignored"
    rows_per_group = t.shape[1] if (use_weights and len(t.shape) > 1) else nrows
    slab = max(1, SLAB_ELEMENTS // n)
    for group_start in range(0, nrows, rows_per_group):
        group_stop = min(nrows, group_start + rows_per_group)
        w = None
        if use_weights:
            e = group_start // rows_per_group
            w = np.ascontiguousarray(weights[e * n:(e + 1) * n])
        for r0 in range(group_start, group_stop, slab):
            r1 = min(group_stop, r0 + slab)
            q_in = src.rows(t, r0, r1)
            try:
                if source_fmt == "f32":
                    x = q_in.view("<f4")
                else:
                    x = qs.dequantize(source_fmt, q_in, threads=threads)
                out = qs.quantize(target_fmt, x, imatrix=w, threads=threads)
            except QuantspecError as exc:
                raise GGUFError(f"{src.path}: tensor {t.name!r} rows {r0}..{r1}: {exc}", path=src.path,
                                tensor=t.name) from None
            bad = qs.validate(target_fmt, out)
            if bad:
                first = bad[0]
                raise GGUFError(f"{src.path}: tensor {t.name!r}: the {target_fmt} encoding is invalid at row "
                                f"{r0 + first.row} block {first.block}: {first.field} = 0x{first.bits:x} "
                                f"({first.reason}); {len(bad)} bad blocks in rows {r0}..{r1} "
                                f"(ggml_validate_row_data would refuse them too)", path=src.path, tensor=t.name,
                                field=first.field)
            yield out


def _output_kvs(src: GGUFFile, ftype: gt.FileType | None, extra: Sequence[KV] = (),
                quantization_version: bool = True) -> list[KV]:
    """As ``llama_model_quantize_impl``: the source's keys in order (split keys
    removed), then ``general.quantization_version`` and ``general.file_type``
    set anew (gguf_set_val_* removes a key and appends it), then ``extra``
    (llama-quantize's KV overrides) the same way. Without
    ``quantization_version`` that key is left as the source has it."""
    replaced = {KEY_FILE_TYPE, *SPLIT_KEYS, *(kv.key for kv in extra)}
    if quantization_version:
        replaced.add(KEY_QUANTIZATION_VERSION)
    kvs = copy_kvs(src, drop=replaced)
    if quantization_version:
        kvs.append(uint32(KEY_QUANTIZATION_VERSION, gt.QUANTIZATION_VERSION))
    if ftype is not None:
        kvs.append(uint32(KEY_FILE_TYPE, ftype.ftype))
    kvs.extend(extra)
    return kvs


def _imatrix_kvs(im: Imatrix) -> list[KV]:
    """llama-quantize's overrides (tools/quantize/quantize.cpp): the file name
    and first dataset, cut to 127 bytes as its ``val_str[128]``; the counts."""
    kvs = [string(KEY_IMATRIX_FILE, im.path.encode("utf-8")[:127])]
    if im.datasets:
        kvs.append(string(KEY_IMATRIX_DATASET, im.datasets[0].encode("utf-8")[:127]))
    kvs.append(uint32(KEY_IMATRIX_N_ENTRIES, len(im.entries)))
    if im.chunk_count > 0:
        kvs.append(uint32(KEY_IMATRIX_N_CHUNKS, im.chunk_count))
    return kvs


def _write(src: GGUFFile, dst, kvs: list[KV], plan: list[tuple[Tensor, str, np.ndarray | None]], threads: int,
           force: bool, progress: bool, desc: str) -> None:
    alignment = src.alignment if KEY_ALIGNMENT in src.kv else 32
    outs = []
    for t, target, _ in plan:
        tt = gt.ggml_type(target)
        outs.append(OutputTensor(t.name, t.shape, tt, t.nrows * (t.row_length // tt.block_size * tt.type_size)))
    with atomic_output(dst, force=force) as tmp:
        out = GGUFOutput(tmp, kvs, outs, alignment=alignment)
        try:
            with _progress(len(plan), desc, progress) as bar:
                for t, target, weights in plan:
                    bar.set_postfix_str(t.name, refresh=False)
                    if target == t.type_name:
                        out.write_tensor(t.name, _copy_chunks(src, t))
                    else:
                        out.write_tensor(t.name, _convert_chunks(src, t, _target_format(t.name, target), weights,
                                                                 threads))
                    bar.update(1)
            out.close()
        except BaseException:
            out.abort()
            raise


def quantize_file(src, dst, target: str | Target, *, allow_requantize: bool = False,
                  leave_output_tensor: bool = False, pure: bool = False, output_tensor_type: str | None = None,
                  token_embedding_type: str | None = None,
                  tensor_types: Iterable[tuple[str, str] | str] = (), imatrix=None, threads: int | None = None,
                  force: bool = False, progress: bool = False,
                  log: Callable[[str], None] | None = None) -> Report:
    """Quantize (or requantize) the GGUF file ``src`` into ``dst`` as
    ``llama_model_quantize`` with the same options would.

    ``target``: a file type (``"Q4_K_M"``) or tensor type (``"q4_0"``), see
    ``parse_target``. ``tensor_types``: ``(pattern, type)`` pairs or
    ``"PATTERN=TYPE"`` strings, first match wins (patterns as given; the
    command line lower-cases them as llama-quantize does). ``imatrix``: a
    path or an ``Imatrix``. ``threads``: default all CPUs.
    """
    t0 = time.perf_counter()
    log = log or (lambda msg: None)
    tgt = target if isinstance(target, Target) else parse_target(target)
    threads = _threads(threads)
    overrides = tuple(parse_tensor_type_option(o) if isinstance(o, str) else (o[0], _tensor_type(o[1], "--tensor-type"))
                      for o in tensor_types)
    ott = None if output_tensor_type is None else _tensor_type(output_tensor_type, "--output-tensor-type")
    tet = None if token_embedding_type is None else _tensor_type(token_embedding_type, "--token-embedding-type")
    im = imatrix if (imatrix is None or isinstance(imatrix, Imatrix)) else load_imatrix(imatrix)

    with open_gguf(src) as f:
        order = llama_order([t.name for t in f.tensors])
        tensors = [f.tensors[i] for i in order]
        model = ModelInfo.from_metadata(f.get)
        params = MixParams(tgt.ftype, tgt.default_type, pure=pure or tgt.single_type,
                           quantize_output_tensor=not leave_output_tensor, output_tensor_type=ott,
                           token_embedding_type=tet, tensor_types=overrides, has_imatrix=im is not None)
        try:
            choices = choose_types([(t.name, t.shape, t.type_name) for t in tensors], model, params)
        except GGUFError as exc:
            raise GGUFError(f"{f.path}: {exc}", path=f.path, tensor=exc.tensor, field=exc.field) from None
        report = Report(str(src), str(dst), tgt.describe())
        plan = [(t, c.target_type, _plan_weights(f, t, c, im, allow_requantize, report))
                for t, c in zip(tensors, choices)]
        for note in report.notes:
            log(note)
        extra = _imatrix_kvs(im) if im is not None else []
        kvs = _output_kvs(f, tgt.ftype, extra)
        _write(f, dst, kvs, plan, threads, force, progress, "quantize")
    report.seconds = time.perf_counter() - t0
    return report


def _plan_weights(f: GGUFFile, t: Tensor, c: TensorChoice, im: Imatrix | None, allow_requantize: bool,
                  report: Report) -> np.ndarray | None:
    """Check that ``t`` can become ``c.target_type`` (llama_model_quantize's
    checks, made before anything is written) and pick its importance weights."""
    out_type = gt.ggml_type(c.target_type)
    bytes_out = t.nrows * (t.row_length // out_type.block_size * out_type.type_size)
    result = TensorResult(t.name, t.shape, t.type_name, c.target_type, c.reason, t.nbytes, bytes_out)
    report.tensors.append(result)
    where = f"{f.path}: tensor {t.name!r}"
    if im is None and c.allows_quantization and c.requires_imatrix:
        raise GGUFError(f"{where}: {c.target_type} needs an importance matrix (--imatrix); without one the "
                        f"result is garbage (llama.cpp refuses this too)", path=f.path, tensor=t.name, field="imatrix")
    if t.type_name == c.target_type:
        return None
    if t.type.is_quantized and not allow_requantize:
        raise GGUFError(f"{where} is already quantized ({t.type_name}); requantizing to {c.target_type} decodes it "
                        f"to float32 and encodes it again, adding both errors: pass --allow-requantize "
                        f"(allow_requantize=True) to do it anyway", path=f.path, tensor=t.name, field="type")
    _format_for(t, "convert")
    target_fmt = _target_format(t.name, c.target_type)
    weights = None
    if im is not None:
        w = im.weights_for(t.name)
        ne2 = t.shape[2] if len(t.shape) > 2 else 1
        if w is None:
            report.notes.append(f"{t.name}: no importance weights in {im.path}")
        elif w.size != t.row_length * ne2:
            if t.name not in ("token_embd.weight", "per_layer_token_embd.weight"):
                raise GGUFError(f"{where}: the importance matrix has {w.size} weights for it, expected "
                                f"{t.row_length * ne2} (ne[0] x ne[2])", path=f.path, tensor=t.name, field="imatrix")
            report.notes.append(f"{t.name}: importance matrix size {w.size} != {t.row_length * ne2}: not used")
        else:
            if len(t.shape) > 3 and t.shape[3] > 1:
                raise GGUFError(f"{where}: 4-D tensors cannot take importance weights", path=f.path, tensor=t.name)
            weights = w
    if weights is None and c.requires_imatrix:
        raise GGUFError(f"{where}: no importance weights for a very low-bit type ({c.target_type}); the result "
                        f"would be garbage", path=f.path, tensor=t.name, field="imatrix")
    import quantspec as qs

    if weights is None and qs.format_info(target_fmt).imatrix == "required":
        raise GGUFError(f"{where}: {target_fmt} needs importance weights and the importance matrix has none for "
                        f"this tensor", path=f.path, tensor=t.name, field="imatrix")
    result.imatrix = weights is not None and qs.format_info(target_fmt).imatrix != "ignored"
    return weights


DEQUANTIZE_TARGETS = {"f32": "F32", "f16": "F16", "bf16": "BF16"}


def dequantize_file(src, dst, to: str = "f16", *, threads: int | None = None, force: bool = False,
                    progress: bool = False) -> Report:
    """Write ``src`` with every block-quantized tensor decoded to ``to``
    (``f32``, ``f16`` or ``bf16``): values exactly as the format's spec decodes
    them, rounded to f16/bf16 as ggml rounds (nearest even). Tensors that
    are not block-quantized (f32 norms, f16/bf16 weights, integer tensors)
    are copied as they are; tensor order and metadata stay, with
    ``general.file_type`` set to ALL_F32 / MOSTLY_F16 / MOSTLY_BF16 (and
    moved to the end, as llama.cpp sets keys)."""
    t0 = time.perf_counter()
    to = to.lower()
    if to not in DEQUANTIZE_TARGETS:
        raise GGUFError(f"--to {to!r}: expected one of {', '.join(DEQUANTIZE_TARGETS)}", field="to")
    threads = _threads(threads)
    ftype = gt.file_type(DEQUANTIZE_TARGETS[to])
    report = Report(str(src), str(dst), f"dequantize to {to}")
    with open_gguf(src) as f:
        plan = []
        for t in f.tensors:
            target = to if t.type.is_quantized else t.type_name
            if target != t.type_name:
                _format_for(t, "dequantize")
            out_type = gt.ggml_type(target)
            report.tensors.append(TensorResult(t.name, t.shape, t.type_name, target,
                                               "dequantized" if target != t.type_name else "kept",
                                               t.nbytes, t.nrows * (t.row_length * out_type.type_size)))
            plan.append((t, target, None))
        kvs = _output_kvs(f, ftype, quantization_version=False)  # no quantized tensors remain
        _write(f, dst, kvs, plan, threads, force, progress, "dequantize")
    report.seconds = time.perf_counter() - t0
    return report


__all__ = ["quantize_file", "dequantize_file", "parse_target", "Target", "Report", "TensorResult",
           "SLAB_ELEMENTS"]
