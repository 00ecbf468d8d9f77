"""The one registry of generated kernels.

Every generated file, the build's extension list (through
generated/MANIFEST.json), the kernel tests' parametrization and the asv
parameters derive from ``KERNELS``. Adding a format's kernels is one line in
``FORMATS``: its template and the facts the template needs beyond the spec
module's ``FORMAT`` (which ``codegen.model`` reads for sizes and offsets).
A format gets kernels for every ISA whose architecture its template has
sections for (``TEMPLATE_ARCHS``); each build compiles the ISAs of its own
architecture (setup.py reads the arch from generated/MANIFEST.json).
"""

from __future__ import annotations

from dataclasses import dataclass

from codegen.isa import ISAS

OPS = ("quantize", "dequantize", "vec_dot")

# Legacy-format facts, each read from the format's spec module docstring:
#   kind     sym: d = max/divisor, offset codes; min: d = (max-min)/levels + m; absmax: Q8
#   clamp    how the truncated code is limited (min(qmax, c), c & qmax, or not at all)
#   imatrix  which weighted search the importance-matrix path runs (None: ignored)
#   contrib  the block's dot-product contribution in float32, in the spec's association
#            (Python syntax over sumi, dw, da, mw, sa; codegen.model renders it as C and as intrinsics)
FORMATS = (
    ("f32", "float.c.j2", OPS, dict(elem_size=4)),
    ("f16", "float.c.j2", OPS, dict(elem_size=2)),
    ("bf16", "float.c.j2", OPS, dict(elem_size=2)),
    ("q4_0", "legacy.c.j2", OPS, dict(kind="sym", bits=4, offset=8, divisor="-8", clamp="min", qmax=15,
                                      imatrix="qx", nmax=8, contrib="(sumi * dw) * da")),
    ("q4_1", "legacy.c.j2", OPS, dict(kind="min", bits=4, offset=0, levels=15, clamp="min", qmax=15,
                                      imatrix="qkx3", nmax=15, contrib="(dw * da) * sumi + mw * sa")),
    ("q5_0", "legacy.c.j2", OPS, dict(kind="sym", bits=5, offset=16, divisor="-16", clamp="min", qmax=31,
                                      imatrix="qx", nmax=16, contrib="(dw * da) * sumi")),
    ("q5_1", "legacy.c.j2", OPS, dict(kind="min", bits=5, offset=0, levels=31, clamp="and", qmax=31,
                                      imatrix="qkx3", nmax=31, contrib="(dw * da) * sumi + mw * sa")),
    ("q8_0", "legacy.c.j2", OPS, dict(kind="absmax", bits=8, offset=0, levels=127, clamp=None, qmax=127,
                                      imatrix=None, nmax=0, contrib="sumi * (dw * da)")),
    ("q8_1", "legacy.c.j2", ("quantize", "dequantize"), dict(kind="absmax", bits=8, offset=0, levels=127,
                                                             clamp=None, qmax=127, imatrix=None, nmax=0,
                                                             contrib=None)),
)


@dataclass(frozen=True)
class Kernel:
    fmt: str
    op: str
    isa: str
    template: str

    @property
    def symbol(self) -> str:
        return f"qs_{self.fmt}_{self.op}__{self.isa}"

    @property
    def path(self) -> str:
        return f"generated/{self.isa}/{self.fmt}.c"


# The architectures whose SIMD sections a template has (the portable scalar
# kernels come from every template); a template not listed has x86 ones only.
TEMPLATE_ARCHS = {"float.c.j2": ("x86_64", "aarch64"), "legacy.c.j2": ("x86_64", "aarch64")}


def isas_for(template: str) -> tuple[str, ...]:
    archs = TEMPLATE_ARCHS.get(template, ("x86_64",))
    return tuple(isa.name for isa in ISAS if isa.arch == "any" or isa.arch in archs)


KERNELS = tuple(Kernel(fmt, op, isa, template)
                for fmt, template, ops, _ in FORMATS for op in ops for isa in isas_for(template))

CONTEXT = {fmt: ctx for fmt, _, _, ctx in FORMATS}
TEMPLATE = {fmt: template for fmt, template, _, _ in FORMATS}
