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
    # K-quants (256-element super-blocks), facts read from reference/q*_k.py:
    #   sub      elements per sub-block
    #   planes   the code's bit planes: (field, reference/_kquants.py plane, lowest code bit it holds)
    #   scales   the spec's decoder of the scale bytes (codegen.model probes it into bit fields)
    #   code_offset / scale_bias   element = (d * (s_j - scale_bias)) * (q - code_offset) [- dmin * m_j]
    #   ref, imatrix   the quantizer without / with an importance matrix: the sub-block search
    #            (qkx2: make_qkx2_quants/make_qkx3_quants, q3: make_q3_quants, qx: make_qx_quants) with
    #            its weights and parameters, and how the sub-block scales are quantized
    ("q2_k", "kquant.c.j2", OPS, dict(
        kquant=True, sub=16, planes=(("qs", "TWO_BIT", 0),), scales="nibbles", code_offset=0, scale_bias=0,
        ref=dict(search="qkx2", nmax=3, weights="abs", rmin=-0.5, rdelta=0.1, nstep=15, mad=1,
                 scale_quant="max", levels=15, clamp63=False),
        imatrix=dict(search="qkx2", nmax=3, sigma2_factor=1, rmin=-0.9, rdelta=0.05, nstep=36, mad=0,
                     scale_quant="qp", levels=15, clamp63=False))),
    ("q3_k", "kquant.c.j2", OPS, dict(
        kquant=True, sub=16, planes=(("qs", "TWO_BIT", 0), ("hmask", "ONE_BIT", 2)), scales="unpack_scales_q3k",
        code_offset=4, scale_bias=32,
        ref=dict(search="q3", nmax=4, scale_quant="signed_max", levels=32),
        imatrix=dict(search="qx", nmax=4, sigma2_factor=2, scale_quant="qx", levels=32))),
    ("q4_k", "kquant.c.j2", OPS, dict(
        kquant=True, sub=32, planes=(("qs", "FOUR_BIT", 0),), scales="unpack_scale_min_k4", code_offset=0,
        scale_bias=0,
        ref=dict(search="qkx2", nmax=15, weights="rms_abs", rmin=-1.0, rdelta=0.1, nstep=20, mad=0,
                 scale_quant="max", levels=63, clamp63=True),
        imatrix=dict(search="qkx2", nmax=15, sigma2_factor=2, rmin=-0.9, rdelta=0.05, nstep=36, mad=0,
                     scale_quant="qp", levels=63, clamp63=False))),
    ("q5_k", "kquant.c.j2", OPS, dict(
        kquant=True, sub=32, planes=(("qs", "FOUR_BIT", 0), ("qh", "ONE_BIT", 4)), scales="unpack_scale_min_k4",
        code_offset=0, scale_bias=0,
        ref=dict(search="qkx2", nmax=31, weights="rms_abs", rmin=-0.5, rdelta=0.1, nstep=15, mad=0,
                 scale_quant="max", levels=63, clamp63=True),
        imatrix=dict(search="qkx2", nmax=31, sigma2_factor=2, rmin=-0.9, rdelta=0.05, nstep=36, mad=0,
                     scale_quant="qp", levels=63, clamp63=True))),
    ("q6_k", "kquant.c.j2", OPS, dict(
        kquant=True, sub=16, planes=(("ql", "Q6_LOW", 0), ("qh", "Q6_HIGH", 4)), scales="bytes", code_offset=32,
        scale_bias=0, scales_signed=True,
        ref=dict(search="qx", nmax=32, weights="square", scale_quant="signed_max_zero", levels=128),
        imatrix=dict(search="qx", nmax=32, sigma2_factor=None, scale_quant="signed_max_zero", levels=128))),
    ("q8_k", "kquant_q8.c.j2", ("quantize", "dequantize"), dict(kquant=True)),
    # ik_llama.cpp formats with a row scale before the blocks (reference/iq4_ks.py ...): 256-element blocks of
    # 8 sub-blocks of 32, element = (d_row * scale_b) * grid value. Facts read from each spec module:
    #   grid, half   the value table (reference/tables/ik_llama.py) and its values per half (shift_b picks one)
    #   scale, shift C expressions of sub-block b's integer scale and grid half over the block's fields
    #   index        C expression of element j's index in the half (IQ2_KL: pair j's grid point)
    #   codes        the SIMD unpacker of the index bits (a layout named in codegen/templates/iqks.c.j2)
    #   quantize     the quantizer: kind (ks: odd 7-bit codes against d = max|scale|/127; kss: the same with
    #                IQ4_KSS's parity pruning; iq3_ks: signed 5-bit codes against -max_scale/16), the sweep's
    #                ntry, sigma2 factor, first-candidate guard and the order of the final sums
    ("iq4_ks", "iqks.c.j2", OPS, dict(
        iqks=True, grid="IQ4K_VALUES", half=16, codes="nibbles16",
        scale="(scales[b] & 254) - 127", shift="scales[b] & 1", index="(qs[16 * b + j % 16] >> 4 * (j / 16)) & 15",
        quantize=dict(kind="ks", nearest="IQ4K", ntry=7, sigma_factor=2.0, guard_first=False, pair_sums=True))),
    ("iq4_kss", "iqks.c.j2", OPS, dict(
        iqks=True, grid="IQ4K_VALUES", half=16, codes="kss",
        scale="(kss_byte(qs, b) & 254) - 127", shift="kss_byte(qs, b) & 1",
        index="(kss_nibbles(qs, 8 * b + j % 16 / 2) >> (8 * (j % 2) + 4 * (j / 16))) & 15",
        quantize=dict(kind="kss", nearest="IQ4K", ntry=7, sigma_factor=2.0, guard_first=False, pair_sums=False))),
    ("iq5_ks", "iqks.c.j2", OPS, dict(
        iqks=True, grid="IQ5NL_VALUES", half=32, codes="nibbles32_qh",
        scale="(scales[b] & 254) - 127", shift="scales[b] & 1",
        index="((qs[32 * (b / 2) + j] >> 4 * (b % 2)) & 15) | (((qh[j] >> b) & 1) << 4)",
        quantize=dict(kind="ks", nearest="IQ5NL", ntry=5, sigma_factor=2.0, guard_first=False, pair_sums=False))),
    ("iq3_ks", "iqks.c.j2", OPS, dict(
        iqks=True, grid="IQ3NL_VALUES", half=8, codes="crumbs32_qh",
        scale="(int)(((scales[b % 4] >> 4 * (b / 4)) & 15) | (((extra >> b) & 1) << 4)) - 16",
        shift="(extra >> (8 + b)) & 1",
        index="((qs[32 * (b / 4) + j] >> 2 * (b % 4)) & 3) | (((qh[j] >> b) & 1) << 2)",
        quantize=dict(kind="iq3_ks", nearest="IQ3NL", ntry=5, sigma_factor=2.0, guard_first=True, pair_sums=False))),
    ("iq2_ks", "iqks.c.j2", ("dequantize", "vec_dot"), dict(
        iqks=True, grid="IQ2NL_VALUES", half=4, codes="crumbs32",
        scale="(int)(((scales[b / 2] >> 4 * (b % 2)) & 15) | (((extra >> (8 + b)) & 1) << 4)) - 16",
        shift="(extra >> b) & 1", index="(qs[32 * (b / 4) + j] >> 2 * (b % 4)) & 3")),
    ("iq2_kl", "iqks.c.j2", ("dequantize", "vec_dot"), dict(
        iqks=True, grid="IQ2KL_VALUES", half=32, codes="pairs",
        scale="(int)(((scales_l[b % 4] >> 4 * (b / 4)) & 15) | (((scales_h >> 2 * b) & 3) << 4)) - 32",
        shift="0", index="((qs[16 * (b / 2) + j] >> 4 * (b % 2)) & 15) | (((qh[j] >> b) & 1) << 4)")),
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
