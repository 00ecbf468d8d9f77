# cython: language_level=3
"""A C loop over rows that calls a ggml ``vec_dot`` function pointer, so that
benchmarks time ggml's dot product without Python per row."""

from libc.stdint cimport int64_t, uintptr_t

ctypedef void (*ggml_vec_dot_t)(int n, float *s, size_t bs, const void *x, size_t bx,
                                const void *y, size_t by, int nrc) noexcept nogil


def vec_dot_rows(uintptr_t fn, int n, int64_t nrows, uintptr_t w, int64_t row_stride, uintptr_t a, uintptr_t out):
    """``out[r] = fn(n, w + r*row_stride, a)`` for every row, GIL released."""
    cdef ggml_vec_dot_t f = <ggml_vec_dot_t>fn
    cdef int64_t r
    with nogil:
        for r in range(nrows):
            f(n, <float *>out + r, 0, <const void *>(w + r * row_stride), 0, <const void *>a, 0, 1)
