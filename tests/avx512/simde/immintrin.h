/* <immintrin.h> for the AVX-512 emulation build (tests/avx512/test_avx512_simde.py).
 *
 * This directory comes first on the include path, so the generated avx512
 * kernels include this file in place of the compiler's <immintrin.h>. It
 * declares the compiler's own intrinsics (AVX2, FMA, F16C: the build has
 * -mavx2 -mfma -mf16c, so these run as the CPU's instructions), then SIMDe's
 * portable definitions of AVX-512 (SIMDE_ENABLE_NATIVE_ALIASES maps every
 * _mm512_* name SIMDe knows onto its simde_mm512_* code), then the few
 * AVX-512 intrinsics SIMDe 0.7.4 lacks, written below from the Intel
 * Intrinsics Guide's operation pseudocode.
 *
 * What this proves: the kernels' logic under these definitions of the
 * intrinsics, not their behaviour on AVX-512 hardware. An AVX-512 intrinsic
 * defined neither by SIMDe nor here fails to compile (the compiler's version
 * needs -mavx512f, which this build does not pass), so nothing runs as a
 * native AVX-512 instruction; the test checks the objects for zmm and mask
 * registers as well. */
#ifndef QS_SIMDE_IMMINTRIN_H
#define QS_SIMDE_IMMINTRIN_H

#if defined(__AVX512F__)
#error "the AVX-512 emulation build must not enable AVX-512 (no -mavx512*)"
#endif

#include_next <immintrin.h>

#define SIMDE_ENABLE_NATIVE_ALIASES
#include <simde/x86/avx512.h>

#include <stdint.h>
#include <stdlib.h>

/* VCVTDQ2PS zmm: 16 int32 to float32, rounded as MXCSR.RC says (round to
 * nearest even by default), which is C's int-to-float conversion. */
static inline simde__m512 qs_emu_mm512_cvtepi32_ps(simde__m512i a) {
    simde__m512i_private a_ = simde__m512i_to_private(a);
    simde__m512_private r_;
    for (int i = 0; i < 16; ++i) r_.f32[i] = (float)a_.i32[i];
    return simde__m512_from_private(r_);
}
#define _mm512_cvtepi32_ps(a) qs_emu_mm512_cvtepi32_ps(a)

/* VPMOVSXBD zmm, xmm: the 16 bytes of a, sign-extended to int32. */
static inline simde__m512i qs_emu_mm512_cvtepi8_epi32(simde__m128i a) {
    simde__m128i_private a_ = simde__m128i_to_private(a);
    simde__m512i_private r_;
    for (int i = 0; i < 16; ++i) r_.i32[i] = a_.i8[i];
    return simde__m512i_from_private(r_);
}
#define _mm512_cvtepi8_epi32(a) qs_emu_mm512_cvtepi8_epi32(a)

/* VPMOVZXBD zmm, xmm: the 16 bytes of a, zero-extended to int32. */
static inline simde__m512i qs_emu_mm512_cvtepu8_epi32(simde__m128i a) {
    simde__m128i_private a_ = simde__m128i_to_private(a);
    simde__m512i_private r_;
    for (int i = 0; i < 16; ++i) r_.i32[i] = a_.u8[i];
    return simde__m512i_from_private(r_);
}
#define _mm512_cvtepu8_epi32(a) qs_emu_mm512_cvtepu8_epi32(a)

/* VPMOVZXWD zmm, ymm: the 16 uint16 of a, zero-extended to int32. */
static inline simde__m512i qs_emu_mm512_cvtepu16_epi32(simde__m256i a) {
    simde__m256i_private a_ = simde__m256i_to_private(a);
    simde__m512i_private r_;
    for (int i = 0; i < 16; ++i) r_.i32[i] = a_.u16[i];
    return simde__m512i_from_private(r_);
}
#define _mm512_cvtepu16_epi32(a) qs_emu_mm512_cvtepu16_epi32(a)

/* VCVTPH2PS zmm, ymm: 16 binary16 values to float32. The conversion is the
 * one the 256-bit instruction does on 8 lanes, so each half runs on this
 * CPU's F16C unit (exact, signalling NaNs quieted as the hardware does;
 * SIMDe's portable conversion does not quiet them). */
static inline simde__m512 qs_emu_mm512_cvtph_ps(simde__m256i a) {
    simde__m512_private r_;
    r_.m256[0] = _mm256_cvtph_ps(_mm256_castsi256_si128(a));
    r_.m256[1] = _mm256_cvtph_ps(_mm256_extracti128_si256(a, 1));
    return simde__m512_from_private(r_);
}
#define _mm512_cvtph_ps(a) qs_emu_mm512_cvtph_ps(a)

/* VMOVNTPS m512, zmm: a store with a non-temporal hint, to an address that
 * must be 64-byte aligned (else #GP): a misaligned one traps here too. */
static inline void qs_emu_mm512_stream_ps(void *mem_addr, simde__m512 a) {
    if ((uintptr_t)mem_addr % 64) abort();
    simde_mm512_store_ps(mem_addr, a);
}
#define _mm512_stream_ps(mem_addr, a) qs_emu_mm512_stream_ps(mem_addr, a)

#endif
