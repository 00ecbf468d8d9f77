"""The ISA table: names, compiler flags and the CPU feature each needs.

ISA names have no underscores, so a generated file stem ``<fmt>__<isa>`` or a
test id ``q4_0-avx2`` splits unambiguously. Flags go per extension, never
globally; every kernel is built with ``-O3 -ffp-contract=off`` so that no
multiply-add is contracted into an FMA (the spec's arithmetic model).
"""

from __future__ import annotations

from dataclasses import dataclass

COMMON_CFLAGS = ("-O3", "-ffp-contract=off", "-fno-strict-aliasing")


@dataclass(frozen=True)
class Isa:
    name: str
    arch: str  # "any", "x86_64" or "aarch64": the machines whose build compiles it
    cflags: tuple[str, ...]
    feature: str | None  # the name quantspec._cpu.features() reports; None = always
    doc: str


ISAS = (
    Isa("scalar", "any", (), None, "portable C, no intrinsics"),
    Isa("avx2", "x86_64", ("-mavx2", "-mfma", "-mf16c"), "avx2", "AVX2 + F16C (FMA enabled, never contracted)"),
    Isa("avx512", "x86_64", ("-mavx2", "-mfma", "-mf16c", "-mavx512f", "-mavx512bw", "-mavx512vl", "-mavx512dq"),
        "avx512", "AVX-512 F/BW/VL/DQ"),
    # AArch64 contracts a*b+c into FMA by default: -ffp-contract=off (COMMON_CFLAGS) matters most here
    Isa("neon", "aarch64", ("-march=armv8-a",), "neon", "AArch64 Advanced SIMD (ARMv8.0: fp16 conversions, no SDOT)"),
    Isa("neondot", "aarch64", ("-march=armv8.2-a+dotprod",), "neondot",
        "Advanced SIMD + the dot-product extension (SDOT, ARMv8.2-A)"),
)

BY_NAME = {isa.name: isa for isa in ISAS}


def cflags(isa: str) -> list[str]:
    return [*COMMON_CFLAGS, *BY_NAME[isa].cflags]
