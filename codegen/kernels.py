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
    # Grid IQ formats (codegen/iqgrid.py), facts read from reference/iq*.py docstrings; bit
    # positions count from the start of the named field:
    #   grid     the table module.NAME in reference/tables (u64 points: groups of 8, u32: groups of 4)
    #   index    the grid index of group g: (field, bit of its part, width) parts, low bits first
    #   signs    ("ksigns", field, bit of the 7-bit sign index of 8 elements t) or ("bytes", field,
    #            bit of sign byte t); None: the grid values are signed (IQ1)
    #   scale    (field, bit of the code ls_b of block b, width); block = elements per code
    #   db       the block scale: "half" (d * (0.5f + ls)) * db_post, "odd" d * (float)(2*ls + 1)
    #   delta    IQ1: (per "block" or "group", field, bit of the sign, the dot product's sums of
    #            activation quants: "bsums" as stored or "qs" summed per group)
    #   contrib  a super-block's dot term over dw, da, isum = sum_b (2*ls_b + 1) * sumi_b,
    #            dsum (IQ1's delta sum) and the constant post
    ("iq2_xxs", "iqgrid.c.j2", ("dequantize", "vec_dot"), dict(
        iqgrid=True, grid="ggml_iq2.IQ2XXS_GRID", block=32, index=(("qs", lambda g: 64 * (g // 4) + 8 * (g % 4), 8),),
        signs=("ksigns", "qs", lambda t: 64 * (t // 4) + 32 + 7 * (t % 4)), scale=("qs", lambda b: 64 * b + 60, 4),
        db="half", db_post=0.25, contrib="((dw * da) * isum) * post", dot_post=0.125)),
    ("iq2_xs", "iqgrid.c.j2", ("dequantize", "vec_dot"), dict(
        iqgrid=True, grid="ggml_iq2.IQ2XS_GRID", block=16, index=(("qs", lambda g: 16 * g, 9),),
        signs=("ksigns", "qs", lambda t: 16 * t + 9), scale=("scales", lambda b: 4 * b, 4),
        db="half", db_post=0.25, contrib="((dw * da) * isum) * post", dot_post=0.125)),
    ("iq2_s", "iqgrid.c.j2", ("dequantize", "vec_dot"), dict(
        iqgrid=True, grid="ggml_iq2.IQ2S_GRID", block=16, index=(("qs", lambda g: 8 * g, 8), ("qh", lambda g: 2 * g, 2)),
        signs=("bytes", "qs", lambda t: 8 * (32 + t)), scale=("scales", lambda b: 4 * b, 4),
        db="half", db_post=0.25, contrib="((dw * da) * isum) * post", dot_post=0.125)),
    ("iq3_xxs", "iqgrid.c.j2", ("dequantize", "vec_dot"), dict(
        iqgrid=True, grid="ggml_iq3.IQ3XXS_GRID", block=32, index=(("qs", lambda g: 8 * g, 8),),
        signs=("ksigns", "scales_and_signs", lambda t: 32 * (t // 4) + 7 * (t % 4)),
        scale=("scales_and_signs", lambda b: 32 * b + 28, 4),
        db="half", db_post=0.5, contrib="((dw * da) * isum) * post", dot_post=0.25)),
    ("iq3_s", "iqgrid.c.j2", ("dequantize", "vec_dot"), dict(
        iqgrid=True, grid="ggml_iq3.IQ3S_GRID", block=32, index=(("qs", lambda g: 8 * g, 8), ("qh", lambda g: g, 1)),
        signs=("bytes", "signs", lambda t: 8 * t), scale=("scales", lambda b: 4 * b, 4),
        db="odd", contrib="(dw * da) * isum")),
    ("iq1_s", "iqgrid.c.j2", ("dequantize", "vec_dot"), dict(
        iqgrid=True, grid="ggml_iq1.IQ1S_GRID", signed_grid=True, block=32,
        index=(("qs", lambda g: 8 * g, 8), ("qh", lambda g: 16 * (g // 4) + 3 * (g % 4), 3)),
        scale=("qh", lambda b: 16 * b + 12, 3), db="odd", delta=("block", "qh", lambda b: 16 * b + 15, "bsums"),
        contrib="(dw * da) * (isum + post * dsum)", dot_post=0.125)),
    ("iq1_m", "iqgrid.c.j2", ("dequantize", "vec_dot"), dict(
        iqgrid=True, grid="ggml_iq1.IQ1S_GRID", signed_grid=True, block=16,
        index=(("qs", lambda g: 8 * g, 8), ("qh", lambda g: 4 * g, 3)),
        scale=("scales", lambda b: 16 * (b // 4) + 3 * (b % 4), 3), db="odd",
        delta=("group", "qh", lambda g: 4 * g + 3, "qs"), super_scale="nibbles",
        contrib="(dw * da) * (isum + post * dsum)", dot_post=0.125)),
    # codebook formats (codegen/lowbit.py): 4-bit indices into a 16-entry table of reference/tables/ggml.py
    #   group    elements per scale; scale  how a group's float scale is decoded
    #   imatrix  the IQ4 weighted scale search (reference/_iq4.py) quantizes them
    ("iq4_nl", "codebook.c.j2", OPS, dict(family="codebook", table="KVALUES_IQ4NL", group=32, scale="fp16",
                                          imatrix=True)),
    ("iq4_xs", "codebook.c.j2", OPS, dict(family="codebook", table="KVALUES_IQ4NL", group=32, scale="iq4_xs",
                                          imatrix=True)),
    ("mxfp4", "codebook.c.j2", ("dequantize", "vec_dot"), dict(family="codebook", table="KVALUES_MXFP4", group=32,
                                                               scale="e8m0_half")),
    ("nvfp4", "codebook.c.j2", ("dequantize", "vec_dot"), dict(family="codebook", table="KVALUES_MXFP4", group=16,
                                                               scale="ue4m3_half")),
    # ternary and 1-2-bit formats (codegen/lowbit.py): unsigned codes c, element = (mul*c - 1) * d;
    #   codes  how the codes are stored: "bits" (a bit field per element, found by probing the spec), "base3"
    #          (five trits per byte, reference/tq1_0.py TRIT_BYTE / TRIT_POW3)
    ("tq1_0", "ternary.c.j2", ("dequantize", "vec_dot"), dict(family="ternary", codes="base3", mul=1)),
    ("tq2_0", "ternary.c.j2", ("dequantize", "vec_dot"), dict(family="ternary", codes="bits", code_bits=2, mul=1)),
    ("q1_0", "ternary.c.j2", ("dequantize", "vec_dot"), dict(family="ternary", codes="bits", code_bits=1, mul=2)),
    ("q2_0", "ternary.c.j2", ("dequantize", "vec_dot"), dict(family="ternary", codes="bits", code_bits=2, mul=1)),
    # ik_llama.cpp's Q6_0: 32-blocks, 6-bit codes offset by nmax = 32, ik's make_qx_quants (reference/q6_0.py)
    ("q6_0", "q6_0.c.j2", OPS, dict(nmax=32)),
    # ik_llama.cpp's IQK super-blocks (256 = 16 sub-blocks of 16, codebook values, a shift bit per
    # sub-block); codegen/iqk.py reads the grid, bit planes and constants from reference/iq*_k.py:
    #   grid        the reference/_iqk.py Grid of the format
    #   scales      how the sub-block scale bytes are coded (nibbles - bias; 4+2 bits - bias;
    #               +-(2m+1) with sign bits; int8)
    #   quantizer   search: "sweep" (shift_sweep) or "partition" (partition_search); sigma2 and
    #               the weights without an imatrix as the module writes them; how the scales
    #               are quantized ("superblock": quantize_superblocks); sub-blocks with d*ls == 0
    #               keep index 0 (skip_unused)
    ("iq2_k", "iqk.c.j2", OPS, dict(iqk=True, grid="IQ2NL", scales="nibbles", scale_bias=8, quantizer=dict(
        search="partition", sigma2="(1.5f * sum_x2) / 256.f", quarter_sigma=True, scales="qx", nmax=8,
        skip_unused=True))),
    ("iq3_k", "iqk.c.j2", OPS, dict(iqk=True, grid="IQ3NL", scales="odd_signed", scale_bias=0, quantizer=dict(
        search="sweep", step=2, refit=True, guard_first=True, sigma2="(1.5f * sum_x2) / 256.f",
        quarter_sigma=True, scales="odd_signed", skip_unused=True))),
    ("iq4_k", "iqk.c.j2", OPS, dict(iqk=True, grid="IQ4K", scales="nibbles_h2", scale_bias=32, quantizer=dict(
        search="sweep", step=1, refit=False, guard_first=False, sigma2="sum_x2 * (2.f / 256.f)",
        quarter_sigma=False, scales="superblock", divisor=32, code_lo=-32, code_hi=31, skip_empty=False,
        skip_unused=False))),
    ("iq5_k", "iqk.c.j2", OPS, dict(iqk=True, grid="IQ5NL", scales="nibbles_h2", scale_bias=32, quantizer=dict(
        search="sweep", step=1, refit=True, guard_first=False, sigma2="(2.f * sum_x2) / 256.f",
        quarter_sigma=True, scales="superblock", divisor=32, code_lo=-32, code_hi=31, skip_empty=True,
        skip_unused=True))),
    ("iq6_k", "iqk.c.j2", OPS, dict(iqk=True, grid="IQ6NL", scales="int8", scale_bias=0, quantizer=dict(
        search="sweep", step=1, refit=True, guard_first=False, sigma2="(2.f * sum_x2) / 256.f",
        quarter_sigma=True, scales="superblock", divisor=127, code_lo=-127, code_hi=127, skip_empty=True,
        skip_unused=True))),
    # ik_llama.cpp's trellis, ternary and binary formats (codegen/iklowbit.py reads the rest from the spec modules):
    #   layout   how a trellis super-block stores its sub-block scales and seeds (kt.c.j2 decoders)
    #   group    values per seed
    ("iq1_kt", "kt.c.j2", ("dequantize", "vec_dot"), dict(ik_family="kt", layout="iq1", group=8)),
    ("iq2_kt", "kt.c.j2", ("dequantize", "vec_dot"), dict(ik_family="kt", layout="iq2", group=8)),
    ("iq3_kt", "kt.c.j2", ("dequantize", "vec_dot"), dict(ik_family="kt", layout="iq3", group=8)),
    ("iq4_kt", "kt.c.j2", ("dequantize", "vec_dot"), dict(ik_family="kt", layout="iq4", group=4, two_codebooks=True)),
    ("iq1_bn", "bn.c.j2", ("dequantize", "vec_dot"), dict(ik_family="bn")),
    ("iq2_bn", "bn.c.j2", ("dequantize", "vec_dot"), dict(ik_family="bn")),
    ("q1_0_g128", "binary.c.j2", ("dequantize", "vec_dot"), dict(ik_family="binary")),
    # grid IQ quantizers (codegen/iqgrid_quantize.py: the spec's lattice maps and neighbour lists);
    #   trials   the trial scales' steps is (first, last): id = (15 + 0.2*is)/max
    ("iq3_s", "iqgrid_quantize.c.j2", ("quantize",), dict(iqgrid_search="iq3", trials=(-9, 9))),
    ("iq3_xxs", "iqgrid_quantize.c.j2", ("quantize",), dict(iqgrid_search="iq3", trials=(-15, 15))),
    #   IQ2 (iq2grid_quantize.c.j2): groups of 8, trials id = (5 + 0.1*is)/max (IQ2_XXS: /(3*make_qp_quants scale))
    ("iq2_xxs", "iq2grid_quantize.c.j2", ("quantize",), dict(iqgrid_search="iq2", trials=(-6, 6))),
    ("iq2_xs", "iq2grid_quantize.c.j2", ("quantize",), dict(iqgrid_search="iq2", trials=(-9, 9))),
    ("iq2_s", "iq2grid_quantize.c.j2", ("quantize",), dict(iqgrid_search="iq2", trials=(-9, 9))),
    # IQ1 quantizers (codegen/iq1_quantize.py: the spec's lattice map and neighbour lists); iq1_search: "s" or "m"
    ("iq1_s", "iq1_quantize.c.j2", ("quantize",), dict(iq1_search="s")),
    ("iq1_m", "iq1_quantize.c.j2", ("quantize",), dict(iq1_search="m")),
    # ik_llama.cpp formats with a row scale before the blocks (reference/iq4_ks.py ...): 256-element blocks of
    # 8 sub-blocks of 32, element = (d_row * scale_b) * grid value. Facts read from each spec module:
    #   grid, half   the value table (reference/tables/ik_llama.py) and its values per half (shift_b picks one)
    #   scale, shift C expressions of sub-block b's integer scale and grid half over the block's fields
    #   index        C expression of element j's index in the half (IQ2_KL: pair j's grid point)
    #   codes        the SIMD unpacker of the index bits (a layout named in codegen/templates/iqks.c.j2)
    #   quantize     the quantizer: kind (ks: odd 7-bit codes against d = max|scale|/127; kss: the same with
    #                IQ4_KSS's parity pruning; iq3_ks: signed 5-bit codes against -max_scale/16; iq2_ks: IQ2_K's
    #                partition search, then make_qx_quants over the row's scales), the sweep's ntry, sigma2 factor
    #                (iq2_ks: sigma2 as a C expression over sumx2, and weights 0.25*sigma2 + x^2 without an
    #                imatrix), first-candidate guard and the order of the final sums
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
    ("iq2_ks", "iqks.c.j2", OPS, dict(
        iqks=True, grid="IQ2NL_VALUES", half=4, codes="crumbs32",
        scale="(int)(((scales[b / 2] >> 4 * (b % 2)) & 15) | (((extra >> (8 + b)) & 1) << 4)) - 16",
        shift="(extra >> b) & 1", index="(qs[32 * (b / 4) + j] >> 2 * (b % 4)) & 3",
        quantize=dict(kind="iq2_ks", nearest="IQ2NL", sigma2="(1.5f * sumx2) / 256.f", quarter_sigma=True,
                      nmax=16, pair_sums=False))),
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
        return kernel_file(self.isa, self.fmt, self.template)


# The architectures whose SIMD sections a template has (the portable scalar
# kernels come from every template); a template not listed has x86 ones only.
TEMPLATE_ARCHS = {"float.c.j2": ("x86_64", "aarch64"), "legacy.c.j2": ("x86_64", "aarch64")}


def isas_for(template: str) -> tuple[str, ...]:
    archs = TEMPLATE_ARCHS.get(template, ("x86_64",))
    return tuple(isa.name for isa in ISAS if isa.arch == "any" or isa.arch in archs)


KERNELS = tuple(Kernel(fmt, op, isa, template)
                for fmt, template, ops, _ in FORMATS for op in ops for isa in isas_for(template))

# A format may have several entries with disjoint ops (e.g. its quantizer from a
# search template, its decoders from another): each entry renders its own file.
CONTEXT = {(fmt, template): ctx for fmt, template, _, ctx in FORMATS}
FIRST_TEMPLATE = {}
for _fmt, _template, _, _ in FORMATS:
    FIRST_TEMPLATE.setdefault(_fmt, _template)


def kernel_file(isa: str, fmt: str, template: str) -> str:
    """generated/<isa>/<fmt>.c; a format's further templates add their stem."""
    if FIRST_TEMPLATE[fmt] == template:
        return f"generated/{isa}/{fmt}.c"
    return f"generated/{isa}/{fmt}.{template.split('.')[0]}.c"


def _check_disjoint_ops():
    seen = {}
    for fmt, template, ops, _ in FORMATS:
        for op in ops:
            if (fmt, op) in seen:
                raise ValueError(f"codegen.kernels: {fmt} {op} comes from both {seen[fmt, op]} and {template}")
            seen[fmt, op] = template


_check_disjoint_ops()
