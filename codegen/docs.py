"""The format pages: docs/formats/<format>.md, <format>.svg and index.md.

Rendered from each spec module's ``FORMAT`` and docstring and from the bit
maps of ``quantspec/explain.py`` (the same facts ``quantspec explain``
prints); the worked example runs the NumPy spec, so a page cannot disagree
with the code. Python decides (geometry, numbers, text); the templates in
``templates/docs/`` only format. Output is byte-stable: fixed input, shortest
round-trip float32 decimals, integer coordinates, sorted formats.
"""

from __future__ import annotations

import importlib
import importlib.util
import re
import sys
from functools import cache
from pathlib import Path

import jinja2

from codegen.model import ROOT, spec_format

TEMPLATES = Path(__file__).resolve().parent / "templates" / "docs"
OUT = "docs/formats"

# SVG geometry (px)
WIDTH = 960
MARGIN = 20
CELL = 14               # one bit
MAX_CELLS = 64          # bits on one line of a bit diagram
MIN_FIELD = 64          # narrowest field box of the block bar
CHAR = 0.6               # width of a monospace character, in units of the font size
PALETTE = ("#8ecae6", "#ffb703", "#90be6d", "#f28482", "#b8a1e3", "#f4a261", "#84dcc6", "#e9c46a")
DARK = ("#219ebc", "#fb8500", "#43aa8b", "#e5383b", "#7b5ea7", "#e76f51", "#2a9d8f", "#c9a227")


@cache
def explain_module():
    """``quantspec/explain.py``, loaded by path: codegen runs from the source
    tree, where the quantspec package need not be installed."""
    name = "_quantspec_explain_for_docs"
    spec = importlib.util.spec_from_file_location(name, ROOT / "quantspec" / "explain.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up while the file executes
    spec.loader.exec_module(module)
    return module


def spec_module(fmt: str):
    spec_format(fmt)  # puts the source tree on sys.path
    return importlib.import_module(f"reference.{fmt}")


def format_names() -> list[str]:
    spec_format("f32")
    return list(importlib.import_module("reference").MODULES)


def _env() -> jinja2.Environment:
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(str(TEMPLATES)), undefined=jinja2.StrictUndefined,
                             trim_blocks=True, lstrip_blocks=True, keep_trailing_newline=True,
                             autoescape=jinja2.select_autoescape(enabled_extensions=("svg.j2",),
                                                                 default_for_string=False))
    env.filters["cell"] = lambda text: str(text).replace("|", "\\|")  # a Markdown table cell
    return env


# --------------------------------------------------------------------------- docstrings

def rst_to_markdown(text: str) -> str:
    """The spec's docstrings as Markdown: ``::`` literal blocks become fenced
    code, ````code```` becomes `code`; everything else is kept."""
    lines = text.splitlines()
    out: list[str] = []
    i = 0
    while i < len(lines):
        line = lines[i]
        if line.rstrip().endswith("::"):
            stripped = line.rstrip()[:-2].rstrip()
            if stripped:
                out.append(_inline(stripped) + ":")
            i += 1
            while i < len(lines) and not lines[i].strip():
                i += 1
            block = []
            while i < len(lines) and (not lines[i].strip() or lines[i].startswith(" ")):
                block.append(lines[i])
                i += 1
            while block and not block[-1].strip():
                block.pop()
            indent = min(len(b) - len(b.lstrip()) for b in block if b.strip()) if block else 0
            out += ["", "```text"] + [b[indent:].rstrip() for b in block] + ["```", ""]
            continue
        out.append(_inline(line))
        i += 1
    text = "\n".join(out)
    return re.sub(r"\n{3,}", "\n\n", text).strip() + "\n"


def _inline(line: str) -> str:
    return re.sub(r"``(.+?)``", r"`\1`", line)


# --------------------------------------------------------------------------- pages

def _value_rows(values: list[str], per_row: int = 8) -> list[list[str]]:
    """``[[first index, v, v, ...], ...]`` for a Markdown table of floats."""
    return [[str(at)] + values[at:at + per_row] for at in range(0, len(values), per_row)]


def _description(ex, module) -> str:
    """The docstring summary without its leading ``NAME (origin type N):``."""
    text = ex.summary(module)
    head, sep, rest = text.partition(": ")
    return rest if sep and head.upper().startswith(module.FORMAT.name.upper()) else text


def page_context(fmt: str, all_formats: list[str]) -> dict:
    ex = explain_module()
    module = spec_module(fmt)
    spec = module.FORMAT
    layout = ex.LAYOUTS.get(fmt, ex.Layout())
    example = ex.worked_example(module)
    decoded = example.decoded
    offsets = spec.offsets()
    users = [f for f in all_formats if f != fmt and spec_module(f).FORMAT.vec_dot_format == fmt]
    facts = []
    for label, text in ex.facts(module):
        if label == "dot product with" and spec.vec_dot_format:
            text = f"[{spec.vec_dot_format.upper()}]({spec.vec_dot_format}.md)"
        facts.append((label, text))
    if users:
        facts.append(("activation format of", ", ".join(f"[{u.upper()}]({u}.md)" for u in users)))
    facts.append(("spec", f"[`reference/{fmt}.py`](../../reference/{fmt}.py)"))
    symbols = [dict(name=s.name, bits=s.bits, signed=s.signed, meaning=s.meaning,
                    count=ex.resolve_layout(spec).counts.get(s.name, 0)) for s in layout.symbols]
    return dict(
        name=fmt, title=fmt.upper(), summary=ex.summary(module), facts=facts,
        fields=[dict(name=f.name, ctype=f.ctype, count=f.count, offset=offsets[f.name], nbytes=f.nbytes,
                     meaning=f.meaning) for f in spec.fields],
        type_size=spec.type_size, block_size=spec.block_size, row_meta_size=spec.row_meta_size,
        bitmap=ex.bitmap_rows(spec), symbols=symbols, value=layout.value,
        details=rst_to_markdown(ex.details(module)),
        example=dict(
            input=ex.EXAMPLE_INPUT, imatrix=example.imatrix is not None,
            x=_value_rows([ex.format_float(v) for v in example.x]),
            hex=ex.hex_lines(decoded.data), nbytes=len(decoded.data),
            fields=[ex.field_text(fv) for fv in decoded.fields],
            symbols=[(name, [str(v) for v in vals]) for name, vals in decoded.symbols.items()],
            steps=decoded.steps,
            y=_value_rows([ex.format_float(v) for v in decoded.values]),
        ),
        columns=list(range(min(8, spec.block_size))),
        dot=_dot_context(spec.vec_dot_format), users=[f"[{u.upper()}]({u}.md)" for u in users],
        svg_title=_svg_title(spec),
    )


def _dot_context(fmt: str | None) -> dict | None:
    if fmt is None:
        return None
    spec = spec_module(fmt).FORMAT
    return dict(name=fmt, title=fmt.upper(), block_size=spec.block_size, type_size=spec.type_size)


def _svg_title(spec) -> str:
    return (f"{spec.name.upper()} block: {spec.block_size} element{'s' if spec.block_size > 1 else ''} "
            f"in {spec.type_size} bytes ({spec.bits_per_weight:g} bits per weight)")


def index_context(all_formats: list[str]) -> dict:
    ex = explain_module()
    rows = []
    for fmt in all_formats:
        module = spec_module(fmt)
        spec = module.FORMAT
        rows.append(dict(name=fmt, title=fmt.upper(), origin=spec.origin, type_id=spec.type_id,
                         block_size=spec.block_size, type_size=spec.type_size, bpw=f"{spec.bits_per_weight:g}",
                         dot=spec.vec_dot_format, imatrix=spec.imatrix,
                         description=_inline(_description(ex, module))))
    origins = sorted({r["origin"] for r in rows}, key=lambda o: (o != "ggml", o))
    return dict(groups=[(o, sorted((r for r in rows if r["origin"] == o), key=lambda r: r["type_id"]))
                        for o in origins])


# --------------------------------------------------------------------------- the SVG

def _allot(total: int, sizes: list[int], minimum: int) -> list[int]:
    """Integer widths summing to ``total``: each at least ``minimum``, the
    rest in proportion to ``sizes``."""
    minimum = min(minimum, total // max(len(sizes), 1))
    fixed = [False] * len(sizes)
    while True:
        free = total - minimum * sum(fixed)
        weight = sum(s for s, f in zip(sizes, fixed) if not f)
        widths = [minimum if f else free * s / weight for s, f in zip(sizes, fixed)]
        small = [i for i, w in enumerate(widths) if not fixed[i] and w < minimum]
        if not small:
            break
        for i in small:
            fixed[i] = True
    edges, at = [0], 0.0
    for w in widths:
        at += w
        edges.append(round(at))
    edges[-1] = total
    return [b - a for a, b in zip(edges, edges[1:])]


def _label(width: int, candidates: list[str], sizes: tuple[int, ...] = (9,)) -> tuple[str, int]:
    """The first candidate text that fits ``width`` px at one of ``sizes``."""
    for text in candidates:
        for size in sizes:
            if len(text) * CHAR * size <= width - 3:
                return text, size
    return "", sizes[-1]


def _units_to_draw(seg_ranges: list[tuple[int, int]]) -> list[int]:
    """The first unit of each range the bit map states, the second unit of
    the first range (to show how k advances) and the last unit."""
    picks = {start for start, _ in seg_ranges}
    first_start, first_stop = seg_ranges[0]
    if first_stop - first_start > 1:
        picks.add(first_start + 1)
    picks.add(max(stop for _, stop in seg_ranges) - 1)
    return sorted(picks)


def svg_context(fmt: str) -> dict:
    ex = explain_module()
    spec = spec_module(fmt).FORMAT
    layout = ex.LAYOUTS.get(fmt, ex.Layout())
    bitmap = ex.resolve_layout(spec)
    fields = {f.name: f for f in spec.fields}
    offsets = spec.offsets()
    colour = {s.name: i % len(PALETTE) for i, s in enumerate(layout.symbols)}
    rects, texts, lines = [], [], []
    y = 28
    texts.append(dict(x=MARGIN, y=y, text=_svg_title(spec), size=15, weight="bold", anchor="start"))

    # the block bar: one box per field, byte offsets below
    y += 14
    inner = WIDTH - 2 * MARGIN
    widths = _allot(inner, [f.nbytes for f in spec.fields], MIN_FIELD)
    x = MARGIN
    bar_h = 40
    for f, w in zip(spec.fields, widths):
        packed = any(seg.field == f.name for seg in layout.segments)
        rects.append(dict(x=x, y=y, w=w, h=bar_h, fill="#e8eef7" if packed else "#f4f4f4", stroke="#333"))
        decl = f"{f.name}[{f.count}]" if f.count > 1 else f.name
        text, size = _label(w, [decl, f.name], (11, 9))
        texts.append(dict(x=x + w // 2, y=y + 17, text=text, size=size, weight="bold", anchor="middle"))
        text, size = _label(w, [f"{f.ctype}, {f.nbytes} B", f.ctype], (10, 8))
        texts.append(dict(x=x + w // 2, y=y + 32, text=text, size=size, weight="normal", anchor="middle"))
        texts.append(dict(x=x, y=y + bar_h + 13, text=str(offsets[f.name]), size=10, weight="normal",
                          anchor="start" if x == MARGIN else "middle"))
        x += w
    texts.append(dict(x=MARGIN + inner, y=y + bar_h + 13, text=str(spec.type_size), size=10, weight="normal",
                      anchor="end"))
    y += bar_h + 30
    if layout.segments:
        y += 6
        texts.append(dict(x=MARGIN, y=y - 6, text="Bit diagrams: light = a quantity's bits from its bit 0 up, "
                          "dark = its higher bits, name[h:l] = which of its bits", size=10, weight="normal",
                          anchor="start"))
        y += 22

    # one bit diagram per packed field
    rows = ex.bitmap_rows(spec)
    for fname in [f.name for f in spec.fields]:
        segs = [s for s in layout.segments if s.field == fname]
        if not segs:
            continue
        f = fields[fname]
        unit = segs[0].unit
        n_units = f.nbytes * 8 // unit
        texts.append(dict(x=MARGIN, y=y, text=f"{fname}: bytes {offsets[fname]}..{offsets[fname] + f.nbytes - 1}, "
                          f"drawn as {unit}-bit little-endian units, most significant bit on the left",
                          size=12, weight="bold", anchor="start"))
        y += 6
        for r in rows:
            if r.field == fname:
                y += 14
                texts.append(dict(x=MARGIN + 8, y=y, text=f"{r.where}: {r.bits} = {r.holds}", size=11,
                                  weight="normal", anchor="start"))
        y += 12
        units = _units_to_draw([s.units or (0, n_units) for s in segs])
        per_line = max(1, MAX_CELLS // unit)
        gap = 26
        x, previous, col = MARGIN, None, 0
        for k in units:
            if col == per_line:
                x, col = MARGIN, 0
                y += 64
            if previous is not None and k != previous + 1:
                texts.append(dict(x=x + 4, y=y + 38, text="…", size=14, weight="normal", anchor="start"))
                x += 16
            at_byte = offsets[fname] + k * unit // 8
            texts.append(dict(x=x, y=y + 12, text=f"{ex.unit_name(fname, unit, k, fields)} @{at_byte}", size=10,
                              weight="bold", anchor="start"))
            top = y + 18
            for bit in range(unit):  # empty cells first: bits no segment claims stay grey
                cx = x + (unit - 1 - bit) * CELL
                rects.append(dict(x=cx, y=top, w=CELL, h=26, fill="#eeeeee", stroke="#999"))
                if unit <= 16 or bit % 8 in (0, 7):
                    texts.append(dict(x=cx + CELL // 2, y=top + 36, text=str(bit), size=7, weight="normal",
                                      anchor="middle"))
            for name, per_element in bitmap.sources.items():
                for index, sources in enumerate(per_element):
                    for s in sources:
                        if s.field != fname or s.k != k:
                            continue
                        left = x + (unit - 1 - (s.bit + s.width - 1)) * CELL
                        w = s.width * CELL
                        fill = (DARK if s.at else PALETTE)[colour[name]]
                        rects.append(dict(x=left, y=top, w=w, h=26, fill=fill, stroke="#333"))
                        whole = s.width == next(sym.bits for sym in layout.symbols if sym.name == name)
                        bits = "" if whole else (f"[{s.at}]" if s.width == 1 else f"[{s.at + s.width - 1}:{s.at}]")
                        if bitmap.counts[name] == 1:
                            text, size = _label(w, [name + bits, name, name[0]], (9, 8))
                        else:  # named while legible, else the bare index, down to 6 px
                            text, size = _label(w, [f"{name}{index}{bits}", f"{name}{index}"], (9, 8))
                            text, size = (text, size) if text else _label(w, [str(index)], (9, 8, 7, 6))
                        texts.append(dict(x=left + w // 2, y=top + 17, text=text, size=size, weight="normal",
                                          anchor="middle"))
            for byte in range(1, unit // 8):  # byte boundaries inside a wide unit
                bx = x + (unit - 8 * byte) * CELL
                lines.append(dict(x1=bx, y1=top - 4, x2=bx, y2=top + 30))
            x += unit * CELL + gap
            previous, col = k, col + 1
        y += 76
    return dict(width=WIDTH, height=y - 10, rects=rects, texts=texts, lines=lines, title=_svg_title(spec))


# --------------------------------------------------------------------------- all files

def _banner_md(template: str, fmt: str | None) -> str:
    sources = f"codegen/templates/docs/{template}" + (f", reference/{fmt}.py" if fmt else "")
    return (f"<!-- Generated by `python -m codegen` from {sources} and quantspec/explain.py. "
            f"DO NOT EDIT. -->\n")


def render_docs() -> dict[str, str]:
    """Every file under docs/formats/, path -> text."""
    env = _env()
    formats = format_names()
    out = {}
    for fmt in sorted(formats):
        out[f"{OUT}/{fmt}.md"] = _banner_md("format.md.j2", fmt) + env.get_template("format.md.j2").render(
            **page_context(fmt, formats))
        out[f"{OUT}/{fmt}.svg"] = env.get_template("format.svg.j2").render(
            banner=f"Generated by `python -m codegen` from codegen/templates/docs/format.svg.j2, "
                   f"reference/{fmt}.py and quantspec/explain.py. DO NOT EDIT.", **svg_context(fmt))
    out[f"{OUT}/index.md"] = _banner_md("index.md.j2", None) + env.get_template("index.md.j2").render(
        **index_context(formats))
    return out
