/* The kernel table of the test driver: one entry per generated kernel linked
 * in (written from generated/MANIFEST.json by tests/arm/test_neon_qemu.py and
 * tests/avx512/test_avx512_simde.py). */
#ifndef QS_ARM_DRIVER_H
#define QS_ARM_DRIVER_H

#include <stdint.h>

typedef int64_t (*qs_quantize_fn)(const float *x, uint8_t *q, int64_t nrows, int64_t n_per_row,
                                  const float *imatrix);
typedef void (*qs_dequantize_fn)(const uint8_t *q, float *y, int64_t n);
typedef int (*qs_vec_dot_fn)(int64_t n, int64_t nrows, const uint8_t *w, int64_t row_stride, const uint8_t *a,
                             float *out);

struct qs_driver_kernel {
    const char *isa, *fmt, *op;
    qs_quantize_fn quantize;
    qs_dequantize_fn dequantize;
    qs_vec_dot_fn vec_dot;
};

extern const struct qs_driver_kernel QS_DRIVER_KERNELS[];
extern const int QS_DRIVER_NKERNELS;

#endif
