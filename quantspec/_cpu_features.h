/* CPU feature detection for run-time dispatch: cpuid + xgetbv on x86-64
 * (the OS must have enabled the register state, not only the CPU have the
 * instructions), hwcaps on aarch64. Compiled with baseline flags only. */
#ifndef QS_CPU_FEATURES_H
#define QS_CPU_FEATURES_H

#include <stdint.h>

enum {
    QS_CPU_AVX2 = 1 << 0,       /* AVX2 + FMA + F16C, YMM state enabled */
    QS_CPU_AVX512 = 1 << 1,     /* AVX-512 F/BW/VL/DQ, ZMM state enabled */
    QS_CPU_AVX512VNNI = 1 << 2, /* AVX-512 VNNI */
    QS_CPU_NEON = 1 << 3,
    QS_CPU_NEONDOT = 1 << 4,
};

#if defined(__x86_64__) || defined(_M_X64) || defined(__i386__)
#include <cpuid.h>

static uint64_t qs_xgetbv0(void) {
    uint32_t lo, hi;
    __asm__ volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
    return ((uint64_t)hi << 32) | lo;
}

static int qs_cpu_features(void) {
    unsigned a, b, c, d;
    int out = 0;
    if (!__get_cpuid(1, &a, &b, &c, &d)) return 0;
    const int osxsave = (c >> 27) & 1, avx = (c >> 28) & 1, f16c = (c >> 29) & 1, fma = (c >> 12) & 1;
    if (!osxsave || !avx) return 0;
    const uint64_t xcr0 = qs_xgetbv0();
    const int ymm = (xcr0 & 0x6) == 0x6;
    const int zmm = (xcr0 & 0xE6) == 0xE6;
    if (!__get_cpuid_count(7, 0, &a, &b, &c, &d)) return 0;
    const int avx2 = (b >> 5) & 1;
    const int avx512 = ((b >> 16) & 1) && ((b >> 17) & 1) && ((b >> 30) & 1) && ((b >> 31) & 1);
    const int vnni = (c >> 11) & 1;
    if (ymm && avx2 && fma && f16c) out |= QS_CPU_AVX2;
    if ((out & QS_CPU_AVX2) && zmm && avx512) out |= QS_CPU_AVX512;
    if ((out & QS_CPU_AVX512) && vnni) out |= QS_CPU_AVX512VNNI;
    return out;
}

#elif defined(__aarch64__)
#include <sys/auxv.h>
#ifndef HWCAP_ASIMD
#define HWCAP_ASIMD (1 << 1)
#endif
#ifndef HWCAP_ASIMDDP
#define HWCAP_ASIMDDP (1 << 20)
#endif
static int qs_cpu_features(void) {
    const unsigned long hw = getauxval(AT_HWCAP);
    int out = 0;
    if (hw & HWCAP_ASIMD) out |= QS_CPU_NEON;
    if ((out & QS_CPU_NEON) && (hw & HWCAP_ASIMDDP)) out |= QS_CPU_NEONDOT;
    return out;
}

#else
static int qs_cpu_features(void) { return 0; }
#endif

#endif
