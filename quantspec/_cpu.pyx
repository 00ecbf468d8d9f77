# cython: language_level=3
"""CPU features for run-time dispatch (cpuid/xgetbv, or aarch64 hwcaps)."""

cdef extern from "_cpu_features.h":
    int qs_cpu_features()
    int QS_CPU_AVX2, QS_CPU_AVX512, QS_CPU_AVX512VNNI, QS_CPU_NEON, QS_CPU_NEONDOT


def features():
    """The ISA names this CPU and OS can run, besides ``scalar``."""
    cdef int f = qs_cpu_features()
    names = {"avx2": QS_CPU_AVX2, "avx512": QS_CPU_AVX512, "avx512vnni": QS_CPU_AVX512VNNI,
             "neon": QS_CPU_NEON, "neondot": QS_CPU_NEONDOT}
    return frozenset(name for name, bit in names.items() if f & bit)
