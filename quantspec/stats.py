"""Error statistics of the formats: bits per weight against the error that
quantizing and dequantizing leaves, on random data or on a GGUF model's
tensors, as a table and as a plot.

Metrics of a format over a set of tensors (all sums in float64 over every
element, so tensors weigh by their size):

* bits per weight: ``8 * bytes / elements``, every byte of the quantized
  rows counted (block scales and per-row metadata included);
* relative RMSE: ``sqrt(sum (y - x)^2 / sum x^2)``, the RMS error as a
  fraction of the RMS of the data (ik_llama.cpp's ``quantize-stats`` "as a
  fraction of <x>");
* max abs error: ``max |y - x|``, and as a fraction of ``rms(x)``;
* with an importance matrix ``w`` (per column): the weighted relative RMSE
  ``sqrt(sum w (y - x)^2 / sum w x^2)``, which is what the imatrix
  quantizers minimize.

``x`` is the reference: the random data, or a GGUF tensor as floats (a
quantized tensor is first dequantized by the spec, so the errors are then
measured against the quantized original, not the float model it came
from). ``y = dequantize(quantize(x))`` through ``qs.quantize`` and
``qs.dequantize`` (the kernels where they exist, bit-exact with the spec).

The table code (``ErrorStats``, ``COLUMNS``, ``table``, ``render``) is
format-agnostic: any format ``qs.formats()`` lists takes part.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, replace
from typing import Callable, Iterable

import numpy as np

import quantspec as qs
from quantspec import registry

DISTRIBUTIONS = ("normal", "student-t", "laplace", "uniform")
#: elements per quantize/dequantize call: bounds the float64 temporaries
CHUNK = 1 << 22


@dataclass(frozen=True)
class ErrorStats:
    """Error sums of one format over one group of tensors (or random rows)."""

    fmt: str
    group: str
    tensors: int = 0
    elements: int = 0
    nbytes: int = 0
    sq_err: float = 0.0
    sq_ref: float = 0.0
    max_abs: float = 0.0
    w_sq_err: float = 0.0  # imatrix-weighted sums (0 without an imatrix)
    w_sq_ref: float = 0.0

    @property
    def bpw(self) -> float:
        return 8.0 * self.nbytes / self.elements if self.elements else math.nan

    @property
    def rel_rmse(self) -> float:
        return math.sqrt(self.sq_err / self.sq_ref) if self.sq_ref > 0 else math.nan

    @property
    def rms(self) -> float:
        return math.sqrt(self.sq_ref / self.elements) if self.elements else math.nan

    @property
    def max_rel(self) -> float:
        return self.max_abs / self.rms if self.rms > 0 else math.nan

    @property
    def weighted_rel_rmse(self) -> float:
        return math.sqrt(self.w_sq_err / self.w_sq_ref) if self.w_sq_ref > 0 else math.nan

    def __add__(self, other: "ErrorStats") -> "ErrorStats":
        return replace(self, tensors=self.tensors + other.tensors, elements=self.elements + other.elements,
                       nbytes=self.nbytes + other.nbytes, sq_err=self.sq_err + other.sq_err,
                       sq_ref=self.sq_ref + other.sq_ref, max_abs=max(self.max_abs, other.max_abs),
                       w_sq_err=self.w_sq_err + other.w_sq_err, w_sq_ref=self.w_sq_ref + other.w_sq_ref)


def measure(fmt: str, x: np.ndarray, group: str = "", imatrix: np.ndarray | None = None,
            threads: int | None = None) -> ErrorStats:
    """Quantize and dequantize float32 rows ``x`` (nrows, n) in ``fmt``; the sums.
    ``imatrix`` goes to the quantizer where the format uses one, and weighs
    the weighted sums of every format."""
    name = registry.resolve(fmt)
    q_imatrix = imatrix if registry.spec(name).imatrix != "ignored" else None
    x = np.ascontiguousarray(x, dtype=np.float32)
    nrows, n = x.shape
    step = max(1, CHUNK // n)
    total = ErrorStats(name, group, tensors=1)
    for start in range(0, nrows, step):
        xs = x[start:start + step]
        with np.errstate(all="ignore"):
            q = qs.quantize(name, xs, imatrix=q_imatrix, threads=threads)
            y = qs.dequantize(name, q, threads=threads)
            err = y.astype(np.float64) - xs
            ref = xs.astype(np.float64)
            sq_err, sq_ref = err * err, ref * ref
            part = ErrorStats(name, group, 0, xs.size, q.nbytes, float(sq_err.sum()), float(sq_ref.sum()),
                              float(np.abs(err).max()))
            if imatrix is not None:
                w = imatrix.astype(np.float64)[None, :]
                part = replace(part, w_sq_err=float((w * sq_err).sum()), w_sq_ref=float((w * sq_ref).sum()))
        total = total + part
    return total


# ------------------------------------------------------------------- table

def _num(v: float, fmt: str) -> str:
    return "-" if math.isnan(v) else format(v, fmt)


#: (header, cell) pairs of the table; extend or replace to add columns.
COLUMNS: list[tuple[str, Callable[[ErrorStats], str]]] = [
    ("format", lambda s: s.fmt),
    ("group", lambda s: s.group),
    ("tensors", lambda s: str(s.tensors)),
    ("elements", lambda s: str(s.elements)),
    ("bpw", lambda s: _num(s.bpw, ".4f")),
    ("rel RMSE", lambda s: _num(s.rel_rmse, ".5g")),
    ("max abs err", lambda s: _num(s.max_abs, ".5g")),
    ("max err/rms", lambda s: _num(s.max_rel, ".4g")),
]
WEIGHTED = ("imatrix-weighted rel RMSE", lambda s: _num(s.weighted_rel_rmse, ".5g"))


def table(stats: Iterable[ErrorStats], columns=None) -> tuple[list[str], list[list[str]]]:
    """Header and rows of the table (columns default to ``COLUMNS``, plus the
    weighted RMSE when some row has an importance matrix)."""
    stats = list(stats)
    if columns is None:
        columns = list(COLUMNS) + ([WEIGHTED] if any(s.w_sq_ref > 0 for s in stats) else [])
    return [h for h, _ in columns], [[cell(s) for _, cell in columns] for s in stats]


def render(header: list[str], rows: list[list[str]], markdown: bool = False) -> str:
    """Plain text with aligned columns, or a Markdown table."""
    if markdown:
        lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
        return "\n".join(lines + ["| " + " | ".join(r) + " |" for r in rows])
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(header)]
    numeric = [bool(rows) and all(re.fullmatch(r"[-+0-9.e]+|-|nan|inf", r[i]) for r in rows)
               for i in range(len(header))]

    def line(cells):
        return "  ".join(c.rjust(w) if num else c.ljust(w) for c, w, num in zip(cells, widths, numeric)).rstrip()

    return "\n".join([line(header), line(["-" * w for w in widths])] + [line(r) for r in rows])


# ------------------------------------------------------------- random data

def random_data(dist: str, rows: int, cols: int, seed: int = 0, df: int = 4) -> np.ndarray:
    """float32 rows of ``dist`` (normal, student-t with ``df`` degrees of
    freedom, laplace, uniform on [-1, 1]) from a fixed seed."""
    rng = np.random.default_rng(seed)
    if dist == "normal":
        x = rng.standard_normal((rows, cols))
    elif dist == "student-t":
        x = rng.standard_t(df, (rows, cols))
    elif dist == "laplace":
        x = rng.laplace(size=(rows, cols))
    elif dist == "uniform":
        x = rng.uniform(-1.0, 1.0, (rows, cols))
    else:
        raise ValueError(f"unknown distribution {dist!r}: expected one of {', '.join(DISTRIBUTIONS)}")
    return x.astype(np.float32)


def random_imatrix(cols: int, seed: int = 0) -> np.ndarray:
    """Synthetic column weights shaped like activation statistics: log-normal
    (``exp(N(0, 1.5))``), so a few columns weigh 100x the typical one."""
    return np.exp(np.random.default_rng([seed, 1]).normal(0.0, 1.5, cols)).astype(np.float32)


def usable(fmt: str, n: int, has_imatrix: bool) -> str | None:
    """Why ``fmt`` cannot quantize rows of ``n`` (None when it can)."""
    spec = registry.spec(fmt)
    if n % spec.block_size:
        return f"rows of {n} are not a multiple of its block size {spec.block_size}"
    if spec.imatrix == "required" and not has_imatrix:
        return "needs an importance matrix (--imatrix)"
    return None


def random_stats(formats, dist: str, rows: int, cols: int, seed: int = 0, df: int = 4,
                 imatrix: np.ndarray | None = None, threads=None, skipped: list | None = None) -> list[ErrorStats]:
    x = random_data(dist, rows, cols, seed, df)
    label = f"{dist} df={df}" if dist == "student-t" else dist
    out = []
    for fmt in formats:
        why = usable(fmt, cols, imatrix is not None)
        if why:
            if skipped is not None:
                skipped.append(f"{fmt}: {why}")
            continue
        out.append(measure(fmt, x, label, imatrix, threads))
    return out


# ------------------------------------------------------------------- GGUF

_LAYER = re.compile(r"^(?:blk|layers?)\.\d+\.")


def tensor_kind(name: str) -> str:
    """The tensor's role: its name without the layer prefix and ``.weight``
    (``blk.3.attn_q.weight`` -> ``attn_q``)."""
    return re.sub(r"\.(weight|bias)$", "", _LAYER.sub("", name))


def tensor_class(name: str) -> str:
    """attn, ffn, embd, output or other."""
    kind = tensor_kind(name)
    if kind.endswith("token_embd") or kind.endswith("embd"):
        return "embd"
    if kind == "output":
        return "output"
    for prefix in ("attn", "ffn"):
        if kind.startswith(prefix):
            return prefix
    return "other"


GROUPINGS = {"class": tensor_class, "kind": tensor_kind, "tensor": lambda name: name}


@dataclass
class GgufStats:
    stats: list[ErrorStats]  # per (format, group), then per format "all"
    source_types: dict[str, int]  # the file's tensor types of the measured tensors -> count
    notes: list[str]


def _reference_rows(t) -> tuple[np.ndarray | None, str]:
    """A GGUF tensor as float32 rows (ne0 columns), or None and why not."""
    from quantspec.errors import UnknownFormatError

    ne0 = int(t.shape[0])
    if int(t.n_elements) == ne0:
        return None, "1-D"
    rows = int(t.n_elements) // ne0
    type_name = t.tensor_type.name.lower()
    if type_name == "f32":
        return np.asarray(t.data, dtype=np.float32).reshape(rows, ne0), "f32"
    try:
        fmt = registry.resolve(("ggml", int(t.tensor_type)))
    except UnknownFormatError:
        return None, f"type {t.tensor_type.name} is not a quantspec format"
    raw = np.ascontiguousarray(np.asarray(t.data)).view(np.uint8).reshape(rows, -1)
    return qs.dequantize(fmt, raw), fmt


def gguf_stats(path, formats, group: str = "class", imatrix=None, tensors: str | None = None,
               threads=None, progress=None) -> GgufStats:
    """Per format and tensor group of a GGUF file's 2-D+ tensors. ``imatrix``:
    an object with ``weights_for(name)`` (``quantspec.gguf.imatrix``) or None."""
    import gguf

    reader = gguf.GGUFReader(str(path))
    key = GROUPINGS[group]
    pattern = re.compile(tensors) if tensors else None
    sums: dict[tuple[str, str], ErrorStats] = {}
    source: dict[str, int] = {}
    notes: list[str] = []
    skipped: dict[str, list[str]] = {}  # reason -> tensor names
    skipped_1d = 0
    for t in reader.tensors:
        if pattern and not pattern.search(t.name):
            continue
        x, source_type = _reference_rows(t)
        if x is None:
            if source_type == "1-D":
                skipped_1d += 1
            else:
                notes.append(f"{t.name}: skipped ({source_type})")
            continue
        if progress:
            progress(t.name)
        source[source_type] = source.get(source_type, 0) + 1
        n = x.shape[1]
        w = imatrix.weights_for(t.name) if imatrix is not None else None
        if w is not None and w.shape[0] != n:
            notes.append(f"{t.name}: importance matrix has {w.shape[0]} weights for {n} columns; not used")
            w = None
        g = key(t.name)
        for fmt in formats:
            why = usable(fmt, n, w is not None)
            if why:
                skipped.setdefault(f"{fmt} not measured on {{count}} tensors: {why}", []).append(t.name)
                continue
            s = measure(fmt, x, g, w, threads)
            sums[(fmt, g)] = sums[(fmt, g)] + s if (fmt, g) in sums else s
    for why, names in skipped.items():
        notes.append(why.format(count=len(names)) + f" ({', '.join(names[:3])}{', ...' if len(names) > 3 else ''})")
    if skipped_1d:
        notes.append(f"{skipped_1d} 1-D tensors (norms, biases) not measured: llama.cpp keeps them in float")
    out = []
    for fmt in formats:
        groups = sorted(g for f, g in sums if f == fmt)
        parts = [sums[(fmt, g)] for g in groups]
        out += parts
        if len(parts) > 1:
            total = parts[0]
            for p in parts[1:]:
                total = total + p
            out.append(replace(total, group="all"))
    return GgufStats(out, source, notes)


# -------------------------------------------------------------------- plot

def plot(stats: list[ErrorStats], path, title: str = "") -> None:
    """Relative RMSE (log scale) against bits per weight, one point per
    format; with several groups, one series per group (matplotlib, Agg)."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    groups = list(dict.fromkeys(s.group for s in stats))
    if "all" in groups and len(groups) > 1:
        groups.remove("all")
        groups.insert(0, "all")
    fig, ax = plt.subplots(figsize=(8, 5.5))
    labelled = set()  # each format named once: in the first series that has it
    for g in groups:
        points = sorted((s for s in stats if s.group == g and s.rel_rmse > 0 and math.isfinite(s.rel_rmse)),
                        key=lambda s: s.bpw)
        if not points:
            continue
        main = g == groups[0]
        ax.plot([s.bpw for s in points], [s.rel_rmse for s in points], marker="o" if main else "x",
                linestyle="none", label=g, zorder=3 if main else 2)
        for s in points:
            if s.fmt not in labelled:
                labelled.add(s.fmt)
                ax.annotate(s.fmt, (s.bpw, s.rel_rmse), textcoords="offset points", xytext=(4, 4), fontsize=8)
    ax.set_yscale("log")
    ax.set_xlabel("bits per weight")
    ax.set_ylabel("relative RMSE  sqrt(sum (y-x)^2 / sum x^2)")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    if title:
        ax.set_title(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
