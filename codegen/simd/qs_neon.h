/* AArch64 Advanced SIMD shims used by the generated neon and neondot kernels.
 * Only exact operations: integer arithmetic, float mul/add/sub in IEEE
 * binary32 and conversions. AArch64 compilers contract a*b+c into FMLA/FMADD
 * by default; the kernel files are built with -ffp-contract=off, and no shim
 * calls a fused intrinsic (vfmaq_f32, vmlaq_f32). */
#ifndef QS_NEON_H
#define QS_NEON_H

#include <arm_neon.h>
#include "qs_common.h"

/* binary16 -> binary32 by FCVT (exact; FPCR.AHP = 0 on Linux: IEEE halves). */
static inline float qs_f16_to_f32_hw(uint16_t h) {
    return vgetq_lane_f32(vcvt_f32_f16(vreinterpret_f16_u16(vdup_n_u16(h))), 0);
}

/* Four fp16 fields at a byte stride -> four floats. */
static inline float32x4_t qs_neon_halves4(const uint8_t *p, int stride) {
    uint16x4_t h = vdup_n_u16(qs_load_u16(p));
    h = vset_lane_u16(qs_load_u16(p + stride), h, 1);
    h = vset_lane_u16(qs_load_u16(p + 2 * stride), h, 2);
    h = vset_lane_u16(qs_load_u16(p + 3 * stride), h, 3);
    return vcvt_f32_f16(vreinterpret_f16_u16(h));
}

/* 16 bytes of packed nibbles -> the codes of elements 0..15 (low nibbles)
 * and 16..31 (high nibbles). */
static inline void qs_neon_nibbles(const uint8_t *qs, uint8x16_t *lo, uint8x16_t *hi) {
    const uint8x16_t raw = vld1q_u8(qs);
    *lo = vandq_u8(raw, vdupq_n_u8(0x0F));
    *hi = vshrq_n_u8(raw, 4);
}

/* bit j of a 32-bit word -> byte j = 0xFF or 0x00 (bytes 0..15 in lo, 16..31 in hi). */
static inline void qs_neon_bits_to_bytes(uint32_t bits, uint8x16_t *lo, uint8x16_t *hi) {
    static const uint8_t spread[32] = {0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1,
                                       2, 2, 2, 2, 2, 2, 2, 2, 3, 3, 3, 3, 3, 3, 3, 3};
    static const uint8_t weight[16] = {1, 2, 4, 8, 16, 32, 64, 128, 1, 2, 4, 8, 16, 32, 64, 128};
    const uint8x16_t word = vreinterpretq_u8_u32(vdupq_n_u32(bits)), bit = vld1q_u8(weight);
    *lo = vtstq_u8(vqtbl1q_u8(word, vld1q_u8(spread)), bit);
    *hi = vtstq_u8(vqtbl1q_u8(word, vld1q_u8(spread + 16)), bit);
}

/* The inverse: bit j = whether byte j (0..15 in lo, 16..31 in hi) is non-zero. */
static inline uint32_t qs_neon_bytes_to_bits(uint8x16_t lo, uint8x16_t hi) {
    static const uint8_t weight[16] = {1, 2, 4, 8, 16, 32, 64, 128, 1, 2, 4, 8, 16, 32, 64, 128};
    const uint8x16_t bit = vld1q_u8(weight);
    const uint8x16_t a = vandq_u8(vtstq_u8(lo, lo), bit), b = vandq_u8(vtstq_u8(hi, hi), bit);
    return (uint32_t)vaddv_u8(vget_low_u8(a)) | (uint32_t)vaddv_u8(vget_high_u8(a)) << 8 |
           (uint32_t)vaddv_u8(vget_low_u8(b)) << 16 | (uint32_t)vaddv_u8(vget_high_u8(b)) << 24;
}

/* Four int32 lanes whose total is sum_j a[j]*b[j] over 16 signed bytes, exactly
 * for any bytes (-128 included): products in int16, pairs added in int32.
 * The ARMv8.0 form of SDOT (neondot kernels call vdotq_s32 instead). */
static inline int32x4_t qs_neon_dot_i8(int8x16_t a, int8x16_t b) {
    const int16x8_t lo = vmull_s8(vget_low_s8(a), vget_low_s8(b));
    const int16x8_t hi = vmull_high_s8(a, b);
    return vaddq_s32(vpaddlq_s16(lo), vpaddlq_s16(hi));
}

/* [sum(p0), sum(p1), sum(p2), sum(p3)]: the totals of four int32x4 vectors. */
static inline int32x4_t qs_neon_hsum4(int32x4_t p0, int32x4_t p1, int32x4_t p2, int32x4_t p3) {
    return vpaddq_s32(vpaddq_s32(p0, p1), vpaddq_s32(p2, p3));
}

/* 16 codes as bytes -> four int32x4 (elements 0..3, 4..7, 8..11, 12..15). */
static inline void qs_neon_widen_u8(uint8x16_t c, int32x4_t out[4]) {
    const uint16x8_t lo = vmovl_u8(vget_low_u8(c)), hi = vmovl_high_u8(c);
    out[0] = vreinterpretq_s32_u32(vmovl_u16(vget_low_u16(lo)));
    out[1] = vreinterpretq_s32_u32(vmovl_high_u16(lo));
    out[2] = vreinterpretq_s32_u32(vmovl_u16(vget_low_u16(hi)));
    out[3] = vreinterpretq_s32_u32(vmovl_high_u16(hi));
}

static inline void qs_neon_widen_s8(int8x16_t c, int32x4_t out[4]) {
    const int16x8_t lo = vmovl_s8(vget_low_s8(c)), hi = vmovl_high_s8(c);
    out[0] = vmovl_s16(vget_low_s16(lo));
    out[1] = vmovl_high_s16(lo);
    out[2] = vmovl_s16(vget_low_s16(hi));
    out[3] = vmovl_high_s16(hi);
}

/* Four int32x4 -> their low bytes, in order (C's int -> int8_t conversion). */
static inline int8x16_t qs_neon_low_bytes(const int32x4_t c[4]) {
    const int16x8_t lo = vcombine_s16(vmovn_s32(c[0]), vmovn_s32(c[1]));
    const int16x8_t hi = vcombine_s16(vmovn_s32(c[2]), vmovn_s32(c[3]));
    return vcombine_s8(vmovn_s16(lo), vmovn_s16(hi));
}

/* qs_trunc_to_int on four lanes: truncation toward zero, and INT_MIN for NaN
 * or out-of-range values, as x86-64 converts (FCVTZS alone saturates). */
static inline int32x4_t qs_neon_trunc_to_int(float32x4_t v) {
    const uint32x4_t in_range = vcaltq_f32(v, vdupq_n_f32(2147483648.0f));
    return vbslq_s32(in_range, vcvtq_s32_f32(v), vdupq_n_s32(INT32_MIN));
}

/* Index of the first of 32 lanes (eight vectors) equal to v; v must occur. */
static inline int qs_neon_first_equal(const float32x4_t x[8], float v) {
    const float32x4_t vv = vdupq_n_f32(v);
    for (int k = 0; k < 8; k += 2) {
        const uint16x8_t m = vcombine_u16(vmovn_u32(vceqq_f32(x[k], vv)), vmovn_u32(vceqq_f32(x[k + 1], vv)));
        const uint64_t bits = vget_lane_u64(vreinterpret_u64_u8(vmovn_u16(m)), 0);
        if (bits) return 4 * k + __builtin_ctzll(bits) / 8;
    }
    return 0;
}

#endif
