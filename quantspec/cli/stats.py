"""Bits per weight against quantization error, per format (and per tensor
class of a GGUF model), as a table and optionally as a plot.

  quantspec stats --random student-t --formats q4_0,q4_1,q5_0,q8_0 --plot err.png
  quantspec stats model.gguf --formats q4_0,q8_0 [--group class|kind|tensor]

Each format quantizes and dequantizes the same data; the table gives bits
per weight (every byte counted), the relative RMSE sqrt(sum (y-x)^2 / sum
x^2), the largest absolute error and that error as a fraction of rms(x)
(and, with --imatrix, the importance-weighted relative RMSE). For a GGUF
input, tensors with two or more dimensions are measured; a quantized
tensor is dequantized by the spec first and is then the reference (the
errors are relative to the quantized original, not to the float model).
"""

from __future__ import annotations

import argparse
import sys

HELP = "bits per weight and quantization error per format (random data or a GGUF model), table and plot"


def _csv(value: str) -> list[str]:
    return [v.strip().lower() for v in value.split(",") if v.strip()]


def add_arguments(p: argparse.ArgumentParser) -> None:
    from quantspec.stats import DISTRIBUTIONS, GROUPINGS

    p.formatter_class = argparse.RawDescriptionHelpFormatter
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("model", nargs="?", metavar="MODEL.gguf", help="a GGUF file whose tensors are the data")
    src.add_argument("--random", choices=DISTRIBUTIONS, metavar="DIST",
                     help=f"random data instead of a model: {', '.join(DISTRIBUTIONS)} (fixed seed)")
    p.add_argument("--formats", type=_csv, default=None, metavar="F1,F2",
                   help="formats to measure (default: every format)")
    p.add_argument("--rows", type=int, default=64, metavar="R", help="random data: rows (default: 64)")
    p.add_argument("--cols", type=int, default=4096, metavar="C", help="random data: columns (default: 4096)")
    p.add_argument("--df", type=int, default=4, choices=(3, 4, 5),
                   help="degrees of freedom of student-t (default: 4)")
    p.add_argument("--seed", type=int, default=0, help="seed of the random data (default: 0)")
    p.add_argument("--imatrix", default=None, metavar="FILE|random",
                   help="importance matrix: a llama.cpp imatrix file (GGUF or .dat) for a model, or 'random' "
                        "(log-normal column weights) for random data")
    p.add_argument("--group", choices=tuple(GROUPINGS), default="class",
                   help="GGUF: rows per tensor class (attn, ffn, embd, output, other), per kind "
                        "(attn_q, ffn_down, ...) or per tensor (default: class)")
    p.add_argument("--tensors", default=None, metavar="REGEX", help="GGUF: only tensors whose name matches")
    p.add_argument("--threads", type=int, default=None, metavar="N", help="threads of quantize/dequantize")
    p.add_argument("--plot", default=None, metavar="FILE.png", help="draw relative RMSE against bpw (matplotlib)")
    p.add_argument("--sort", choices=("given", "bpw"), default="given",
                   help="order of the formats: as given, or by bits per weight (default: given)")
    p.add_argument("--markdown", action="store_true", help="print a Markdown table")


def _fail(msg: str) -> int:
    print(f"quantspec stats: {msg}", file=sys.stderr)
    return 2


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from quantspec import registry, stats
    from quantspec.errors import QuantspecError, UnknownFormatError

    try:
        formats = [registry.resolve(f) for f in args.formats] if args.formats else registry.formats()
    except UnknownFormatError as exc:
        return _fail(str(exc))
    if args.sort == "bpw":
        formats.sort(key=lambda f: registry.spec(f).bits_per_weight)
    if args.plot:
        try:
            import matplotlib  # noqa: F401
        except ImportError:
            return _fail("--plot needs matplotlib: pip install 'quantspec[plot]'")
    if args.threads is not None and args.threads < 1:
        return _fail("--threads must be at least 1")
    notes = []
    if args.random:
        if args.rows < 1 or args.cols < 1:
            return _fail("--rows and --cols must be positive")
        imatrix = None
        if args.imatrix == "random":
            imatrix = stats.random_imatrix(args.cols, args.seed)
        elif args.imatrix is not None:
            return _fail("with --random, --imatrix takes 'random' (an imatrix file belongs to a model)")
        results = stats.random_stats(formats, args.random, args.rows, args.cols, args.seed, args.df, imatrix,
                                     args.threads, notes)
        title = f"{results[0].group if results else args.random}, {args.rows} x {args.cols}, seed {args.seed}"
        print(f"data: {title}" + ("; random importance matrix" if imatrix is not None else ""))
    else:
        path = Path(args.model)
        if not path.is_file():
            return _fail(f"{path}: no such file")
        imatrix = None
        if args.imatrix == "random":
            return _fail("with a model, --imatrix takes a llama.cpp imatrix file")
        if args.imatrix:
            try:
                from quantspec.gguf.imatrix import load_imatrix
            except ImportError as exc:
                return _fail(f"reading imatrix files needs quantspec.gguf: {exc}")
            try:
                imatrix = load_imatrix(args.imatrix)
            except (QuantspecError, OSError, ValueError) as exc:
                return _fail(str(exc))
        progress = (lambda name: print(f"  {name} ...", file=sys.stderr, flush=True)) if sys.stderr.isatty() \
            else None
        try:
            found = stats.gguf_stats(path, formats, args.group, imatrix, args.tensors, args.threads, progress)
        except (ValueError, OSError) as exc:  # GGUFReader's errors on a malformed file
            return _fail(f"{path}: cannot read as GGUF: {exc}")
        results, notes = found.stats, found.notes
        kinds = ", ".join(f"{n} {t}" for t, n in sorted(found.source_types.items()))
        title = f"{path.name} ({kinds} tensors)"
        print(f"data: {path}: {kinds or 'no'} tensors measured")
        quantized = [t for t in found.source_types if t not in ("f32", "f16", "bf16")]
        if quantized:
            print(f"reference: the file's {', '.join(sorted(quantized))} tensors dequantized by the spec; errors "
                  f"are relative to the quantized original, not to the float model it came from")
    if not results:
        for note in notes:
            print(f"note: {note}", file=sys.stderr)
        return _fail("nothing measured")
    header, rows = stats.table(results)
    if args.random:  # one group: the data line says it
        header, rows = header[:1] + header[4:], [r[:1] + r[4:] for r in rows]
    print(stats.render(header, rows, markdown=args.markdown))
    for note in notes:
        print(f"note: {note}")
    if args.plot:
        stats.plot(results, args.plot, title)
        print(f"plot: {args.plot}")
    return 0
