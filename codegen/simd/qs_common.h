/* Scalar building blocks shared by every generated kernel, on every ISA.
 * Each is the C form of a helper in reference/_numerics.py. */
#ifndef QS_COMMON_H
#define QS_COMMON_H

#include <float.h>
#include <math.h>
#include <stdint.h>
#include <string.h>

#define QS_LANES 16 /* the canonical dot product's float32 lanes */

static inline uint16_t qs_load_u16(const uint8_t *p) { uint16_t v; memcpy(&v, p, 2); return v; }
static inline uint32_t qs_load_u32(const uint8_t *p) { uint32_t v; memcpy(&v, p, 4); return v; }
static inline float qs_load_f32(const uint8_t *p) { float v; memcpy(&v, p, 4); return v; }
static inline void qs_store_u16(uint8_t *p, uint16_t v) { memcpy(p, &v, 2); }
static inline void qs_store_u32(uint8_t *p, uint32_t v) { memcpy(p, &v, 4); }

static inline uint32_t qs_f32_bits(float f) { uint32_t u; memcpy(&u, &f, 4); return u; }
static inline float qs_bits_f32(uint32_t u) { float f; memcpy(&f, &u, 4); return f; }

/* binary16 -> binary32, exact. */
static inline float qs_fp16_to_fp32(uint16_t h) {
    const uint32_t sign = (uint32_t)(h & 0x8000) << 16;
    const uint32_t exp = (h >> 10) & 0x1F;
    const uint32_t man = h & 0x3FF;
    if (exp == 0x1F) return qs_bits_f32(sign | 0x7F800000u | (man << 13));
    if (exp != 0) return qs_bits_f32(sign | ((exp + 112) << 23) | (man << 13));
    /* zero or subnormal: man * 2^-24, exact in binary32 */
    const float mag = (float)man * 0x1p-24f;
    return sign ? -mag : mag;
}

/* binary32 -> binary16, round to nearest even, overflow -> inf,
 * NaN -> 0x7E00 with the sign (ggml_compute_fp32_to_fp16). */
static inline uint16_t qs_fp32_to_fp16(float f) {
    const uint32_t x = qs_f32_bits(f);
    const uint16_t sign = (uint16_t)((x >> 16) & 0x8000);
    const uint32_t ax = x & 0x7FFFFFFFu;
    if (ax > 0x7F800000u) return sign | 0x7E00;
    if (ax >= 0x477FF000u) return sign | 0x7C00; /* rounds to >= 65520: inf */
    if (ax < 0x38800000u) {                      /* below 2^-14: subnormal or zero */
        if (ax < 0x33000000u) return sign;       /* below 2^-25: rounds to zero */
        const uint32_t e = ax >> 23, m = (ax & 0x7FFFFFu) | 0x800000u;
        const uint32_t shift = 126 - e;          /* m * 2^(e-150) / 2^-24 */
        uint32_t q = m >> shift;
        const uint32_t rem = m & ((1u << shift) - 1), half = 1u << (shift - 1);
        if (rem > half || (rem == half && (q & 1))) q++;
        return sign | (uint16_t)q;
    }
    uint32_t r = ax - 0x38000000u;               /* rebias exponent 127 -> 15 */
    r += 0xFFFu + ((r >> 13) & 1);                /* round half even on 13 dropped bits */
    return sign | (uint16_t)(r >> 13);
}

/* ggml's nearest_int: ties to even through the 1.5*2^23 magic number. */
static inline int qs_nearest_int(float f) {
    const float v = f + 12582912.f;
    int32_t i; memcpy(&i, &v, 4);
    return (i & 0x007FFFFF) - 0x00400000;
}

/* The canonical dot product's final fold: lane[j] += lane[j + w], w = 8..1. */
static inline float qs_fold_lanes(float lanes[QS_LANES]) {
    for (int w = QS_LANES / 2; w >= 1; w /= 2)
        for (int j = 0; j < w; ++j) lanes[j] = lanes[j] + lanes[j + w];
    return lanes[0];
}

/* C float -> int conversion as x86-64 performs it: truncation, and INT_MIN
 * for NaN or out-of-range values (reference/_numerics.py trunc_to_int). */
static inline int32_t qs_trunc_to_int(float f) {
    if (!(fabsf(f) < 2147483648.0f)) return INT32_MIN;
    return (int32_t)f;
}

static inline int qs_nonfinite(float v) { return !(fabsf(v) <= FLT_MAX); }

#endif
