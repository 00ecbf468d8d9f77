/* Test driver: runs generated kernels on inputs read from stdin and writes
 * their outputs to stdout, so that a test can run kernels this machine cannot
 * execute directly and compare them with the spec: the AArch64 ones under
 * qemu-user (tests/arm), the AVX-512 ones built against SIMDe (tests/avx512).
 * The jobs come from tests/kernel_jobs.py.
 *
 * Jobs follow each other on stdin until EOF. A job is one header line
 *
 *     <isa> <format> <op> <nrows> <n> <row_bytes> <act_bytes> <has_imatrix>\n
 *
 * (n: elements per row; row_bytes: bytes of one quantized row; act_bytes:
 * bytes of the dot product's activation row) and then, in native byte order:
 *
 *     quantize    float32 x[nrows * n], float32 imatrix[n] if has_imatrix
 *     dequantize  uint8 q[nrows * row_bytes]
 *     vec_dot     uint8 w[nrows * row_bytes], uint8 a[act_bytes]
 *
 * The answer to each job is an int64 (quantize: the first block holding NaN
 * or inf, or -1; vec_dot: the kernel's status; dequantize: 0) and then the
 * output: q[nrows * row_bytes], float32 y[nrows * n] or float32 out[nrows].
 *
 * Every buffer handed to a kernel ends where an inaccessible page begins, so
 * a kernel that reads or writes one byte past a buffer stops the driver with
 * SIGSEGV; outputs are filled with 0xA5 first, so a value never written
 * differs from the spec. Exit status 2: a malformed job or unknown kernel. */
#define _DEFAULT_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "driver.h"

typedef struct {
    void *map;
    size_t map_size;
    uint8_t *data; /* data + size is the first byte of a PROT_NONE page */
} guarded_buffer;

static void die(const char *what) {
    fprintf(stderr, "driver: %s\n", what);
    exit(2);
}

static guarded_buffer guarded_alloc(size_t size) {
    const size_t page = (size_t)sysconf(_SC_PAGESIZE);
    const size_t body = (size + page - 1) / page * page;
    guarded_buffer b;
    b.map_size = body + page;
    b.map = mmap(NULL, b.map_size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (b.map == MAP_FAILED) die("mmap failed");
    if (mprotect((uint8_t *)b.map + body, page, PROT_NONE)) die("mprotect failed");
    b.data = (uint8_t *)b.map + body - size;
    memset(b.map, 0xA5, body);
    return b;
}

static void guarded_free(guarded_buffer *b) { munmap(b->map, b->map_size); }

static guarded_buffer read_buffer(size_t size) {
    guarded_buffer b = guarded_alloc(size);
    if (size && fread(b.data, 1, size, stdin) != size) die("short input");
    return b;
}

static const struct qs_driver_kernel *find_kernel(const char *isa, const char *fmt, const char *op) {
    for (int i = 0; i < QS_DRIVER_NKERNELS; ++i) {
        const struct qs_driver_kernel *k = &QS_DRIVER_KERNELS[i];
        if (!strcmp(k->isa, isa) && !strcmp(k->fmt, fmt) && !strcmp(k->op, op)) return k;
    }
    return NULL;
}

static void write_all(const void *p, size_t size) {
    if (size && fwrite(p, 1, size, stdout) != size) die("write failed");
}

int main(void) {
    char isa[32], fmt[32], op[32];
    long long nrows, n, row_bytes, act_bytes;
    int has_imatrix;
    for (;;) {
        const int got = scanf("%31s %31s %31s %lld %lld %lld %lld %d", isa, fmt, op, &nrows, &n, &row_bytes,
                              &act_bytes, &has_imatrix);
        if (got == EOF) break;
        if (got != 8 || getchar() != '\n' || nrows < 0 || n < 0 || row_bytes < 0 || act_bytes < 0)
            die("malformed job header");
        const struct qs_driver_kernel *k = find_kernel(isa, fmt, op);
        if (!k) die("no such kernel");
        int64_t result = 0;
        const size_t qbytes = (size_t)(nrows * row_bytes), nelem = (size_t)(nrows * n);
        if (k->quantize) {
            guarded_buffer x = read_buffer(nelem * sizeof(float));
            guarded_buffer im = read_buffer(has_imatrix ? (size_t)n * sizeof(float) : 0);
            guarded_buffer q = guarded_alloc(qbytes);
            result = k->quantize((const float *)x.data, q.data, nrows, n,
                                 has_imatrix ? (const float *)im.data : NULL);
            write_all(&result, sizeof result);
            write_all(q.data, qbytes);
            guarded_free(&x);
            guarded_free(&im);
            guarded_free(&q);
        } else if (k->dequantize) {
            guarded_buffer q = read_buffer(qbytes);
            guarded_buffer y = guarded_alloc(nelem * sizeof(float));
            k->dequantize(q.data, (float *)y.data, (int64_t)nelem);
            write_all(&result, sizeof result);
            write_all(y.data, nelem * sizeof(float));
            guarded_free(&q);
            guarded_free(&y);
        } else {
            guarded_buffer w = read_buffer(qbytes);
            guarded_buffer a = read_buffer((size_t)act_bytes);
            guarded_buffer out = guarded_alloc((size_t)nrows * sizeof(float));
            result = nrows ? k->vec_dot(n, nrows, w.data, row_bytes, a.data, (float *)out.data) : 0;
            write_all(&result, sizeof result);
            write_all(out.data, (size_t)nrows * sizeof(float));
            guarded_free(&w);
            guarded_free(&a);
            guarded_free(&out);
        }
    }
    return fflush(stdout) ? 1 : 0;
}
