"""Time quantspec's best kernels against ggml's own functions on the same
data in one run (one thread), with bit-exactness checks, plus the NumPy spec
against gguf-py, the thread speedup and (without --quick) out-of-cache
dequantize against copy bandwidth."""

from __future__ import annotations

import argparse
import sys

HELP = "benchmark the kernels against ggml"


def _csv(value: str) -> list[str]:
    return [v.strip().lower() for v in value.split(",") if v.strip()]


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--formats", type=_csv, default=None, metavar="F1,F2",
                   help="formats to time (default: every format with a kernel here)")
    p.add_argument("--ops", type=_csv, default=None, metavar="OP,...",
                   help="quantize,dequantize,vec_dot (default: all three)")
    p.add_argument("--quick", action="store_true",
                   help="1M elements, fewer repeats, no out-of-cache row (well under a minute)")
    p.add_argument("--threads", type=int, default=2, metavar="N",
                   help="thread count of the 'N threads vs 1' rows (1: skip them); the ggml comparison "
                        "always runs one thread (default: 2)")
    p.add_argument("--n", type=int, default=None, metavar="ELEMS",
                   help="elements per measurement, whole rows of 1024 (default: 4M, 1M with --quick)")
    p.add_argument("--repeats", type=int, default=None, metavar="K",
                   help="best of K timed calls (default: 10, 5 with --quick)")
    p.add_argument("--markdown", action="store_true", help="print Markdown tables")
    p.add_argument("--update-readme", metavar="FILE", default=None,
                   help="replace the text between <!-- bench:begin --> and <!-- bench:end --> in FILE "
                        "with the Markdown tables")


def run(args: argparse.Namespace) -> int:
    from quantspec import bench, dispatch, registry
    from quantspec.errors import UnknownFormatError

    try:
        formats = [registry.resolve(f) for f in args.formats] if args.formats else None
    except UnknownFormatError as exc:
        print(f"quantspec bench: {exc}", file=sys.stderr)
        return 2
    bad = [op for op in args.ops or () if op not in dispatch.OPS]
    if bad:
        print(f"quantspec bench: unknown op {bad[0]!r}: expected one of {', '.join(dispatch.OPS)}", file=sys.stderr)
        return 2
    n = args.n or (bench.QUICK_N if args.quick else bench.DEFAULT_N)
    if n < bench.ROW or args.threads < 1:
        print(f"quantspec bench: --n must be at least {bench.ROW} and --threads at least 1", file=sys.stderr)
        return 2
    n = n // bench.ROW * bench.ROW
    repeats = args.repeats or (5 if args.quick else 10)
    progress = (lambda msg: print(f"  {msg} ...", file=sys.stderr, flush=True)) if sys.stderr.isatty() else None
    results = bench.run(formats, args.ops, n=n, repeats=repeats, threads=args.threads,
                        out_of_cache=not args.quick, progress=progress)
    print(bench.render(results, markdown=args.markdown, n=n, repeats=repeats))
    if args.update_readme:
        try:
            bench.update_readme(args.update_readme, bench.render(results, markdown=True, n=n, repeats=repeats))
        except (OSError, ValueError) as exc:
            print(f"quantspec bench: {exc}", file=sys.stderr)
            return 1
    return 0
