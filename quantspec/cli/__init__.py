"""The ``quantspec`` command line.

Each subcommand is a module of this package, listed in ``SUBCOMMANDS``, with
``HELP`` (one line), ``add_arguments(parser)`` and ``run(args) -> int``.
Adding a subcommand is one line here plus its module; the modules import
their heavy dependencies inside ``run`` so that ``--help`` stays fast.
"""

from __future__ import annotations

import argparse
import importlib
import sys

#: subcommand name -> module
SUBCOMMANDS = {
    "bench": "quantspec.cli.bench",
    "quantize": "quantspec.cli.quantize",
    "dequantize": "quantspec.cli.dequantize",
    "inspect": "quantspec.cli.inspect",
    "explain": "quantspec.cli.explain",
    "verify": "quantspec.cli.verify",
    "vectors": "quantspec.cli.vectors",
    "stats": "quantspec.cli.stats",
}


def build_parser() -> argparse.ArgumentParser:
    from quantspec import __version__

    parser = argparse.ArgumentParser(prog="quantspec", description="Executable specification of LLM block "
                                     "quantization formats, with bit-exact SIMD kernels.")
    parser.add_argument("--version", action="version", version=f"quantspec {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, modname in SUBCOMMANDS.items():
        mod = importlib.import_module(modname)
        p = sub.add_parser(name, help=mod.HELP, description=mod.__doc__)
        mod.add_arguments(p)
        p.set_defaults(_run=mod.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args._run(args) or 0)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
