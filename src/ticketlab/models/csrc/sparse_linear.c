/* Kernels for a Linear layer under an unstructured mask, its kept weights in CSR (models/sparse_linear.py).

   Every matrix of activations or gradients is held transposed, features x batch, with the batch
   padded to `ld`, a multiple of 8 (zeros beyond the batch): a row of the batch is then whole
   vectors of 8 floats, and each kept weight costs a few vector operations whatever the batch.
   Plain C with GCC/Clang vector extensions (8 floats; AVX on x86, two NEON registers on ARM),
   built by models/native.py for the machine it runs on. One thread; the same inputs give the same
   bits on the same machine. */
#include <stdint.h>
#include <string.h>

typedef float v8 __attribute__((vector_size(32)));
typedef float v8u __attribute__((vector_size(32), aligned(4))); /* the same, at any float's address */
#define LOAD(p) (*(const v8u *)(p))
#define STORE(p, v) (*(v8u *)(p) = (v))
#define MAX_VECTORS 8 /* accumulators a row of the forward product holds in registers: 64 columns */
#define TILE 16

#if defined(__clang__) || __GNUC__ >= 12
#define SHUFFLE(a, b, ...) __builtin_shufflevector(a, b, __VA_ARGS__)
/* out rows 0..7 (stride ld) = the 8 x 8 block of a at rows 0..rows-1 (stride sn; zeros past rows), transposed */
static void transpose_block(const float *restrict a, int64_t sn, int64_t rows, float *restrict out, int64_t ld) {
    v8 r[8];
    for (int q = 0; q < 8; q++) r[q] = q < rows ? LOAD(a + q * sn) : (v8){0};
    v8 t[8], u[8];
    for (int q = 0; q < 8; q += 2) {
        t[q] = SHUFFLE(r[q], r[q + 1], 0, 8, 1, 9, 4, 12, 5, 13);
        t[q + 1] = SHUFFLE(r[q], r[q + 1], 2, 10, 3, 11, 6, 14, 7, 15);
    }
    for (int q = 0; q < 8; q += 4) {
        u[q] = SHUFFLE(t[q], t[q + 2], 0, 1, 8, 9, 4, 5, 12, 13);
        u[q + 1] = SHUFFLE(t[q], t[q + 2], 2, 3, 10, 11, 6, 7, 14, 15);
        u[q + 2] = SHUFFLE(t[q + 1], t[q + 3], 0, 1, 8, 9, 4, 5, 12, 13);
        u[q + 3] = SHUFFLE(t[q + 1], t[q + 3], 2, 3, 10, 11, 6, 7, 14, 15);
    }
    for (int p = 0; p < 4; p++) {
        STORE(out + p * ld, SHUFFLE(u[p], u[p + 4], 0, 1, 2, 3, 8, 9, 10, 11));
        STORE(out + (p + 4) * ld, SHUFFLE(u[p], u[p + 4], 4, 5, 6, 7, 12, 13, 14, 15));
    }
}
#endif

/* out (m x ld) = a transposed, a (n x m) with strides (sn, sm); columns n..ld of out are zeroed. */
void transpose_pad(int64_t n, int64_t m, const float *restrict a, int64_t sn, int64_t sm,
                   float *restrict out, int64_t ld) {
    int64_t i0 = 0;
#ifdef SHUFFLE
    if (sm == 1) { /* rows of a contiguous (a batch of data, or an activation): 8 x 8 blocks in registers */
        for (; i0 + 8 <= m; i0 += 8)
            for (int64_t j = 0; j < ld; j += 8)
                transpose_block(a + j * sn + i0, sn, n - j < 8 ? n - j : 8, out + i0 * ld + j, ld);
    }
#endif
    const int64_t blocked = i0; /* rows of out written whole, padding included */
    for (; i0 < m; i0 += TILE) /* any strides, and the features past the last whole block */
        for (int64_t j0 = 0; j0 < n; j0 += TILE) {
            const int64_t i1 = i0 + TILE < m ? i0 + TILE : m, j1 = j0 + TILE < n ? j0 + TILE : n;
            for (int64_t i = i0; i < i1; i++)
                for (int64_t j = j0; j < j1; j++) out[i * ld + j] = a[j * sn + i * sm];
        }
    if (ld > n)
        for (int64_t i = blocked; i < m; i++) memset(out + i * ld + n, 0, sizeof(float) * (size_t)(ld - n));
}

/* One row's product over `vectors` vectors of columns, accumulated in registers. */
static inline __attribute__((always_inline)) void row_product(
        int vectors, int32_t lo, int32_t hi, const int32_t *restrict col, const float *restrict values,
        float start, const float *restrict x, int64_t ld, float *restrict y) {
    v8 acc[MAX_VECTORS];
    for (int i = 0; i < vectors; i++) acc[i] = (v8){0} + start;
    for (int32_t k = lo; k < hi; k++) {
        const float v = values[k];
        const float *xk = x + (int64_t)col[k] * ld;
        for (int i = 0; i < vectors; i++) acc[i] += v * LOAD(xk + 8 * i);
    }
    for (int i = 0; i < vectors; i++) STORE(y + 8 * i, acc[i]);
}

/* One vector of columns (a batch of at most 8): four accumulators over alternate kept weights,
   so that additions need not wait on each other. */
static void row_product_narrow(int32_t lo, int32_t hi, const int32_t *restrict col, const float *restrict values,
                               float start, const float *restrict x, int64_t ld, float *restrict y) {
    v8 a0 = (v8){0} + start, a1 = {0}, a2 = {0}, a3 = {0};
    int32_t k = lo;
    for (; k + 4 <= hi; k += 4) {
        a0 += values[k] * LOAD(x + (int64_t)col[k] * ld);
        a1 += values[k + 1] * LOAD(x + (int64_t)col[k + 1] * ld);
        a2 += values[k + 2] * LOAD(x + (int64_t)col[k + 2] * ld);
        a3 += values[k + 3] * LOAD(x + (int64_t)col[k + 3] * ld);
    }
    for (; k < hi; k++) a0 += values[k] * LOAD(x + (int64_t)col[k] * ld);
    STORE(y, (a0 + a1) + (a2 + a3));
}

/* y (rows x ld) = bias + W x, W the CSR matrix (crow, col, values), x (cols x ld); bias may be NULL. */
void csr_forward(int64_t rows, int64_t ld, const int32_t *restrict crow, const int32_t *restrict col,
                 const float *restrict values, const float *restrict bias, const float *restrict x,
                 float *restrict y) {
    for (int64_t r = 0; r < rows; r++) {
        const float start = bias ? bias[r] : 0.0f;
        const int32_t lo = crow[r], hi = crow[r + 1];
        float *yr = y + r * ld;
        int64_t j = 0;
        for (; j + 8 * MAX_VECTORS <= ld; j += 8 * MAX_VECTORS)
            row_product(MAX_VECTORS, lo, hi, col, values, start, x + j, ld, yr + j);
        /* the rest: a constant vector count in each case, so that the accumulators stay in registers */
        switch ((ld - j) / 8) {
            case 1: row_product_narrow(lo, hi, col, values, start, x + j, ld, yr + j); break;
            case 2: row_product(2, lo, hi, col, values, start, x + j, ld, yr + j); break;
            case 3: row_product(3, lo, hi, col, values, start, x + j, ld, yr + j); break;
            case 4: row_product(4, lo, hi, col, values, start, x + j, ld, yr + j); break;
            case 5: row_product(5, lo, hi, col, values, start, x + j, ld, yr + j); break;
            case 6: row_product(6, lo, hi, col, values, start, x + j, ld, yr + j); break;
            case 7: row_product(7, lo, hi, col, values, start, x + j, ld, yr + j); break;
            default: break;
        }
    }
}

static inline __attribute__((always_inline)) float sum8(v8 a) {
    return ((a[0] + a[4]) + (a[1] + a[5])) + ((a[2] + a[6]) + (a[3] + a[7]));
}

/* One row's kept entries of the weight gradient over `vectors` vectors of columns: the row of g
   held in registers, each kept entry a dot product with its input row. */
static inline __attribute__((always_inline)) void row_dots(
        int vectors, int32_t lo, int32_t hi, const int32_t *restrict col, const float *restrict gr,
        const float *restrict x, int64_t ld, float *restrict grad_values) {
    v8 g[MAX_VECTORS];
    for (int i = 0; i < vectors; i++) g[i] = LOAD(gr + 8 * i);
    for (int32_t k = lo; k < hi; k++) {
        const float *xk = x + (int64_t)col[k] * ld;
        v8 a0 = g[0] * LOAD(xk), a1 = {0};
        for (int i = 1; i < vectors; i++) {
            if (i % 2) a1 += g[i] * LOAD(xk + 8 * i);
            else a0 += g[i] * LOAD(xk + 8 * i);
        }
        grad_values[k] = sum8(a0 + a1);
    }
}

/* grad_values[k] = <g row r, x row col[k]> for each kept entry k of row r: the weight gradient
   (g x^T) at the kept entries only. g (rows x ld), x (cols x ld). */
void csr_weight_grad(int64_t rows, int64_t ld, const int32_t *restrict crow, const int32_t *restrict col,
                     const float *restrict g, const float *restrict x, float *restrict grad_values) {
    for (int64_t r = 0; r < rows; r++) {
        const float *gr = g + r * ld;
        const int32_t lo = crow[r], hi = crow[r + 1];
        switch (ld / 8) { /* a batch of up to 64: the row of g in registers */
            case 0: break;
            case 1: row_dots(1, lo, hi, col, gr, x, ld, grad_values); break;
            case 2: row_dots(2, lo, hi, col, gr, x, ld, grad_values); break;
            case 3: row_dots(3, lo, hi, col, gr, x, ld, grad_values); break;
            case 4: row_dots(4, lo, hi, col, gr, x, ld, grad_values); break;
            case 5: row_dots(5, lo, hi, col, gr, x, ld, grad_values); break;
            case 6: row_dots(6, lo, hi, col, gr, x, ld, grad_values); break;
            case 7: row_dots(7, lo, hi, col, gr, x, ld, grad_values); break;
            case 8: row_dots(8, lo, hi, col, gr, x, ld, grad_values); break;
            default:
                for (int32_t k = lo; k < hi; k++) {
                    const float *xk = x + (int64_t)col[k] * ld;
                    v8 a0 = {0}, a1 = {0};
                    int64_t j = 0;
                    for (; j + 16 <= ld; j += 16) {
                        a0 += LOAD(gr + j) * LOAD(xk + j);
                        a1 += LOAD(gr + j + 8) * LOAD(xk + j + 8);
                    }
                    if (j < ld) a0 += LOAD(gr + j) * LOAD(xk + j);
                    grad_values[k] = sum8(a0 + a1);
                }
        }
    }
}

/* gx (cols x ld) = W^T g, g (rows x ld): the input gradient. */
void csr_input_grad(int64_t rows, int64_t cols, int64_t ld, const int32_t *restrict crow,
                    const int32_t *restrict col, const float *restrict values, const float *restrict g,
                    float *restrict gx) {
    memset(gx, 0, sizeof(float) * (size_t)(cols * ld));
    for (int64_t r = 0; r < rows; r++) {
        const float *gr = g + r * ld;
        for (int32_t k = crow[r]; k < crow[r + 1]; k++) {
            const float v = values[k];
            float *o = gx + (int64_t)col[k] * ld;
            for (int64_t j = 0; j < ld; j += 8) STORE(o + j, LOAD(o + j) + v * LOAD(gr + j));
        }
    }
}

/* grad_bias[r] = sum over the batch of g row r (padding is zero). */
void row_sums(int64_t rows, int64_t ld, const float *restrict g, float *restrict out) {
    for (int64_t r = 0; r < rows; r++) {
        v8 acc = {0};
        for (int64_t j = 0; j < ld; j += 8) acc += LOAD(g + r * ld + j);
        out[r] = sum8(acc);
    }
}

/* y (rows x ld) = max(y, 0) in place over the first n columns, zeros past them: a hidden layer's
   activation in a chain (models/sparse_chain.py), its padding kept zero for the next layer. */
void relu_pad(int64_t rows, int64_t n, int64_t ld, float *restrict y) {
    for (int64_t r = 0; r < rows; r++) {
        float *yr = y + r * ld;
        for (int64_t j = 0; j < n; j++) yr[j] = yr[j] > 0.0f ? yr[j] : 0.0f;
        for (int64_t j = n; j < ld; j++) yr[j] = 0.0f;
    }
}

/* g = g where y > 0, else 0, in place: the gradient through that activation (y its output). */
void relu_grad(int64_t count, const float *restrict y, float *restrict g) {
    for (int64_t i = 0; i < count; i++) g[i] = y[i] > 0.0f ? g[i] : 0.0f;
}
