"""Explain a format: its facts, its fields, where every bit of a block goes
and the dequantize formula; then one block decoded field by field down to its
floats. Without --hex or --from, the block is the worked example of the
format's page (docs/formats/<format>.md): a fixed input quantized by the spec.
"""

from __future__ import annotations

import argparse
import sys

HELP = "explain a format's layout and decode a block field by field"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("format", metavar="FORMAT", help="format name, e.g. q4_0 (any case)")
    source = p.add_mutually_exclusive_group()
    source.add_argument("--hex", metavar="BYTES", default=None,
                        help="one block as hex digits (spaces, colons and 0x prefixes allowed), its row's "
                             "metadata first for formats that have any")
    source.add_argument("--from", dest="gguf", metavar="FILE.gguf", default=None,
                        help="read the block from a tensor of a GGUF file (needs --tensor)")
    p.add_argument("--tensor", metavar="NAME", default=None, help="tensor name in the GGUF file")
    p.add_argument("--block", metavar="N", type=int, default=0,
                   help="block index within the tensor, row-major over all rows (default: 0)")


def run(args: argparse.Namespace) -> int:
    from quantspec import explain, registry
    from quantspec.errors import QuantspecError

    prog = "quantspec explain"
    if args.gguf is None and (args.tensor is not None or args.block != 0):
        print(f"{prog}: --tensor and --block need --from FILE.gguf", file=sys.stderr)
        return 2
    if args.gguf is not None and args.tensor is None:
        print(f"{prog}: --from needs --tensor NAME", file=sys.stderr)
        return 2
    try:
        module = registry.module(args.format)
        fmt = module.FORMAT
        if args.hex is not None:
            text = explain.render_text(module, explain.decode(module, explain.parse_hex(fmt, args.hex)))
        elif args.gguf is not None:
            data, where = explain.block_from_gguf(fmt, args.gguf, args.tensor, args.block)
            text = explain.render_text(module, explain.decode(module, data), where=where)
        else:
            text = explain.render_text(module)
    except QuantspecError as exc:
        print(f"{prog}: {exc}", file=sys.stderr)
        return 2
    sys.stdout.write(text)
    return 0
